"""Switch a live session's STT to the provider the fleet runs, at the next utterance boundary, without a restart.

``SwitchingSTT`` delegates to an in-session ``FallbackAdapter`` ordered active-first (then the rest of the chain in
config order), so the operator's decision and the framework's own per-request fallback compose: the fleet says
which provider leads, the adapter still covers a failure the operator has not seen yet. A switch never cuts an
utterance: the open stream keeps its provider until the speaker stops (or ``max_hold_s`` passes), then new audio
goes to a stream of the new provider while the old one drains the words it already heard. ``SwitchingLLM`` is the
same idea per request: every turn's ``chat`` goes to the adapter led by the active provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from livekit import rtc
from livekit.agents import APIConnectOptions, llm, stt, utils
from livekit.agents.llm import ChatContext, Tool, ToolChoice
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.vad import VAD

log = logging.getLogger(__name__)

AnySTT = stt.STT[Any]
AnyLLM = llm.LLM[Any]
MAX_HOLD_S = 5.0  # switch even mid-utterance after this long (a hanging provider never ends its utterance)
DRAIN_S = 10.0  # how long the old stream may take to deliver what it already heard


def active_first(names: Sequence[str], active: str | None) -> list[str]:
    """The chain with ``active`` moved to the front (unknown or None keeps config order)."""
    if active is None or active not in names:
        return list(names)
    return [active, *(n for n in names if n != active)]


class SwitchingSTT(stt.STT[Any]):
    """An STT whose leading provider can change while sessions run; see the module docstring."""

    def __init__(
        self,
        members: Sequence[tuple[str, AnySTT]],
        *,
        vad: VAD | None = None,
        active: str | None = None,
        adapter: Callable[[list[AnySTT]], AnySTT] | None = None,
        max_hold_s: float = MAX_HOLD_S,
    ) -> None:
        if not members:
            raise ValueError("SwitchingSTT needs at least one provider")
        self._members = dict(members)
        self._names = [name for name, _ in members]
        self._vad = vad
        self._adapter_factory = adapter or self._fallback
        self._adapters: dict[str, AnySTT] = {}
        self._active = active if active in self._members else self._names[0]
        self._streams: set[SwitchingRecognizeStream] = set()
        self.max_hold_s = max_hold_s
        first = self._adapter(self._active)
        super().__init__(capabilities=first.capabilities)
        self._label = f"{__name__}.SwitchingSTT"

    def _fallback(self, ordered: list[AnySTT]) -> AnySTT:
        if len(ordered) == 1:
            only = ordered[0]
            if only.capabilities.streaming:
                return only
            if self._vad is None:
                raise ValueError("a non-streaming STT needs a VAD")
            return stt.StreamAdapter(stt=only, vad=self._vad)
        return stt.FallbackAdapter(ordered, vad=self._vad)

    def _adapter(self, active: str) -> AnySTT:
        adapter = self._adapters.get(active)
        if adapter is None:
            ordered = [self._members[n] for n in active_first(self._names, active)]
            adapter = self._adapter_factory(ordered)
            adapter.on("metrics_collected", self._forward_metrics)
            self._adapters[active] = adapter
        return adapter

    def _forward_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.emit("metrics_collected", *args, **kwargs)

    @property
    def active(self) -> str:
        return self._active

    @property
    def current(self) -> AnySTT:
        """The adapter new requests go to (active provider first)."""
        return self._adapter(self._active)

    @property
    def model(self) -> str:
        return self._members[self._active].model

    @property
    def provider(self) -> str:
        return self._members[self._active].provider

    def switch(self, name: str) -> bool:
        """Lead with ``name`` from now on; open streams move at their next utterance boundary."""
        if name not in self._members:
            log.warning("switching STT: %r is not in this chain (%s); keeping %s", name, self._names, self._active)
            return False
        if name == self._active:
            return False
        log.info("switching STT: %s → %s", self._active, name)
        self._active = name
        self._adapter(name)
        for stream in list(self._streams):
            stream.request_switch()
        return True

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        return await self.current.recognize(buffer, language=language, conn_options=conn_options)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return SwitchingRecognizeStream(switcher=self, language=language, conn_options=conn_options)

    def prewarm(self) -> None:
        self.current.prewarm()

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            adapter.off("metrics_collected", self._forward_metrics)
            if adapter not in self._members.values():
                await adapter.aclose()


class SwitchingRecognizeStream(stt.RecognizeStream):
    """Feeds audio to the current provider's stream; moves to a new one between utterances."""

    def __init__(self, *, switcher: SwitchingSTT, language: NotGivenOr[str], conn_options: APIConnectOptions) -> None:
        super().__init__(stt=switcher, conn_options=conn_options, sample_rate=NOT_GIVEN)
        self._switcher = switcher
        self._language = language
        self._current: stt.RecognizeStream | None = None
        self._current_name = switcher.active
        self._in_speech = False
        self._pending_since: float | None = None
        self._swapped = asyncio.Event()
        self._draining: set[asyncio.Task[None]] = set()
        self._hold_timer: asyncio.TimerHandle | None = None
        self.switches = 0
        switcher._streams.add(self)

    def request_switch(self) -> None:
        if self._switcher.active == self._current_name:
            self._pending_since = None
            return
        if self._pending_since is None:
            self._pending_since = time.monotonic()
            if self._hold_timer is not None:
                self._hold_timer.cancel()
            self._hold_timer = asyncio.get_running_loop().call_later(self._switcher.max_hold_s, self._swap)
        if not self._in_speech:
            self._swap()

    def _open(self, name: str) -> stt.RecognizeStream:
        stream = self._switcher._adapter(name).stream(language=self._language, conn_options=self._conn_options)
        stream.start_time_offset = self.start_time_offset + (time.time() - self._start_time)
        self._current, self._current_name = stream, name
        return stream

    def _swap(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._pending_since = None
        old = self._current
        if old is None or self._switcher.active == self._current_name or self._input_ch.closed:
            return
        self._open(self._switcher.active)
        self._in_speech = False
        self.switches += 1
        with contextlib.suppress(RuntimeError):
            old.end_input()  # the old stream drains what it heard; new audio goes to the new one
        self._swapped.set()

    async def _pump(self, stream: stt.RecognizeStream) -> None:
        async with stream:
            async for event in stream:
                if stream is self._current:
                    if event.type == stt.SpeechEventType.START_OF_SPEECH:
                        self._in_speech = True
                    elif event.type == stt.SpeechEventType.END_OF_SPEECH:
                        self._in_speech = False
                self._event_ch.send_nowait(event)
                if stream is self._current and not self._in_speech and self._pending_since is not None:
                    self._swap()

    async def _drain(self, pump: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(pump, DRAIN_S)
        except Exception as error:  # the old provider failing after the switch costs nothing now
            log.info("switching STT: the previous stream ended with %r", error)

    async def _forward_input(self) -> None:
        async for data in self._input_ch:
            stream = self._current
            if stream is None:
                continue
            try:
                if isinstance(data, rtc.AudioFrame):
                    stream.push_frame(data)
                else:
                    stream.flush()
            except RuntimeError:  # that stream was closed under us (it failed); the pump reports why
                pass
        if self._current is not None:
            with contextlib.suppress(RuntimeError):
                self._current.end_input()

    async def _run(self) -> None:
        self._open(self._switcher.active)
        forward = asyncio.create_task(self._forward_input(), name="SwitchingSTT.forward")
        try:
            while True:
                current = self._current
                assert current is not None
                pump = asyncio.create_task(self._pump(current), name="SwitchingSTT.pump")
                self._swapped.clear()
                swapped = asyncio.create_task(self._swapped.wait())
                await asyncio.wait({pump, swapped}, return_when=asyncio.FIRST_COMPLETED)
                swapped.cancel()
                if self._current is not current:
                    task = asyncio.create_task(self._drain(pump))
                    self._draining.add(task)
                    task.add_done_callback(self._draining.discard)
                    continue
                await pump  # raises the provider's error to the framework's retry
                return
        finally:
            if self._hold_timer is not None:
                self._hold_timer.cancel()
            await utils.aio.cancel_and_wait(forward)
            if self._draining:
                await asyncio.gather(*self._draining, return_exceptions=True)
            self._switcher._streams.discard(self)

    async def _metrics_monitor_task(self, event_aiter: Any) -> None:
        async for _ in event_aiter:
            pass


class SwitchingLLM(llm.LLM[Any]):
    """An LLM whose leading provider can change between turns (each ``chat`` picks the adapter then active)."""

    def __init__(
        self,
        members: Sequence[tuple[str, AnyLLM]],
        *,
        active: str | None = None,
        adapter: Callable[[list[AnyLLM]], AnyLLM] | None = None,
    ) -> None:
        if not members:
            raise ValueError("SwitchingLLM needs at least one provider")
        super().__init__()
        self._members = dict(members)
        self._names = [name for name, _ in members]
        self._adapter_factory = adapter or (
            lambda ordered: ordered[0] if len(ordered) == 1 else llm.FallbackAdapter(ordered)
        )
        self._adapters: dict[str, AnyLLM] = {}
        self._active = active if active in self._members else self._names[0]
        self._label = f"{__name__}.SwitchingLLM"

    def _adapter(self, active: str) -> AnyLLM:
        adapter = self._adapters.get(active)
        if adapter is None:
            adapter = self._adapter_factory([self._members[n] for n in active_first(self._names, active)])
            adapter.on("metrics_collected", self._forward_metrics)
            adapter.on("error", self._forward_error)
            self._adapters[active] = adapter
        return adapter

    def _forward_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.emit("metrics_collected", *args, **kwargs)

    def _forward_error(self, *args: Any, **kwargs: Any) -> None:
        self.emit("error", *args, **kwargs)

    @property
    def active(self) -> str:
        return self._active

    @property
    def current(self) -> AnyLLM:
        return self._adapter(self._active)

    @property
    def model(self) -> str:
        return self._members[self._active].model

    @property
    def provider(self) -> str:
        return self._members[self._active].provider

    def switch(self, name: str) -> bool:
        """Lead with ``name`` from the next turn on."""
        if name not in self._members or name == self._active:
            return False
        log.info("switching LLM: %s → %s", self._active, name)
        self._active = name
        return True

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return self.current.chat(
            chat_ctx=chat_ctx,
            tools=tools,
            conn_options=conn_options,
            parallel_tool_calls=parallel_tool_calls,
            tool_choice=tool_choice,
            extra_kwargs=extra_kwargs,
        )

    def prewarm(self, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.current.prewarm(loop=loop)

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            adapter.off("metrics_collected", self._forward_metrics)
            adapter.off("error", self._forward_error)
            if adapter not in self._members.values():
                await adapter.aclose()
