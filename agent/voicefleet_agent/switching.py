"""Switch a live session's providers to the ones the fleet runs, at the next utterance boundary, without a restart.

Each modality (``SwitchingSTT``, ``SwitchingLLM``, ``SwitchingTTS``) delegates to an in-session ``FallbackAdapter``
ordered active-first (then the rest of the chain in config order), so the operator's decision and the framework's
own per-request fallback compose: the fleet says which provider leads, the adapter still covers a failure the
operator has not seen yet. ``Switch`` is what they share: the members, one adapter per leading provider, which one
leads now, and the events the adapters forward. A switch never cuts an utterance: an LLM request or a TTS utterance
keeps the adapter it started with and the next one takes the new leader; an open STT stream keeps its provider until
the speaker stops (or ``max_hold_s`` passes), then new audio goes to a stream of the new provider while the old one
drains the words it already heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from livekit import rtc
from livekit.agents import APIConnectOptions, llm, stt, tts, utils
from livekit.agents.llm import ChatContext, Tool, ToolChoice
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.vad import VAD

log = logging.getLogger(__name__)

AnySTT = stt.STT[Any]
AnyLLM = llm.LLM[Any]
AnyTTS = tts.TTS[Any]
_M = TypeVar("_M", AnySTT, AnyLLM, AnyTTS)
MAX_HOLD_S = 5.0  # switch even mid-utterance after this long (a hanging provider never ends its utterance)
DRAIN_S = 10.0  # how long the old stream may take to deliver what it already heard


def active_first(names: Sequence[str], active: str | None) -> list[str]:
    """The chain with ``active`` moved to the front (unknown or None keeps config order)."""
    if active is None or active not in names:
        return list(names)
    return [active, *(n for n in names if n != active)]


class Switch(Generic[_M]):
    """One modality's providers: the adapter per leading provider (built on first use), and which one leads.

    Events named in ``forward`` are re-emitted by ``owner`` (the switching model the session sees) from every adapter.
    """

    def __init__(
        self,
        modality: str,
        owner: Any,
        members: Sequence[tuple[str, _M]],
        *,
        active: str | None,
        adapter: Callable[[list[_M]], _M],
        forward: Sequence[str] = ("metrics_collected",),
    ) -> None:
        if not members:
            raise ValueError(f"a switching {modality} needs at least one provider")
        self.modality = modality
        self.members: dict[str, _M] = dict(members)
        self.names: list[str] = [name for name, _ in members]
        self.active: str = active if active is not None and active in self.members else self.names[0]
        self._owner = owner
        self._factory: Callable[[list[_M]], _M] = adapter
        self._forward: tuple[str, ...] = tuple(forward)
        self._adapters: dict[str, _M] = {}
        self._forwarders: list[tuple[_M, str, Callable[..., None]]] = []

    def adapter(self, name: str) -> _M:
        adapter = self._adapters.get(name)
        if adapter is None:
            adapter = self._factory([self.members[n] for n in active_first(self.names, name)])
            for event in self._forward:
                forward = self._forwarder(event)
                adapter.on(event, forward)
                self._forwarders.append((adapter, event, forward))
            self._adapters[name] = adapter
        return adapter

    def _forwarder(self, event: str) -> Callable[..., None]:
        def forward(*args: Any, **kwargs: Any) -> None:
            self._owner.emit(event, *args, **kwargs)

        return forward

    @property
    def current(self) -> _M:
        """The adapter new requests go to (active provider first)."""
        return self.adapter(self.active)

    def switch(self, name: str) -> bool:
        """Lead with ``name`` from now on; False when it is unknown or already leads."""
        if name not in self.members:
            log.warning("switching %s: %r is not in this chain (%s); keeping %s", self.modality.upper(), name,
                        self.names, self.active)  # fmt: skip
            return False
        if name == self.active:
            return False
        log.info("switching %s: %s → %s", self.modality.upper(), self.active, name)
        self.active = name
        self.adapter(name)
        return True

    async def aclose(self) -> None:
        for adapter, event, forward in self._forwarders:
            adapter.off(event, forward)
        self._forwarders.clear()
        for adapter in self._adapters.values():
            if adapter not in self.members.values():
                await adapter.aclose()


class Switching(Generic[_M]):
    """What every switching model offers the session and the fleet follower (mixed in before the framework base)."""

    _switch: Switch[_M]

    @property
    def active(self) -> str:
        return self._switch.active

    @property
    def current(self) -> _M:
        return self._switch.current

    @property
    def model(self) -> str:
        return str(self._switch.members[self._switch.active].model)

    @property
    def provider(self) -> str:
        return str(self._switch.members[self._switch.active].provider)

    def switch(self, name: str) -> bool:
        """Lead with ``name`` from the next utterance (STT, TTS) or request (LLM) on."""
        return self._switch.switch(name)

    async def aclose(self) -> None:
        await self._switch.aclose()


class SwitchingSTT(Switching[AnySTT], stt.STT[Any]):
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
        self._vad = vad
        self._switch = Switch("stt", self, members, active=active, adapter=adapter or self._fallback)
        self._streams: set[SwitchingRecognizeStream] = set()
        self.max_hold_s = max_hold_s
        super().__init__(capabilities=self._switch.current.capabilities)
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

    def _adapter(self, name: str) -> AnySTT:
        return self._switch.adapter(name)

    def switch(self, name: str) -> bool:
        """Lead with ``name`` from now on; open streams move at their next utterance boundary."""
        if not self._switch.switch(name):
            return False
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
                if self._event_ch.closed:
                    return  # our reader closed this stream: nobody is left to hear the rest
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
        pump: asyncio.Task[None] | None = None
        try:
            while True:
                current = self._current
                assert current is not None
                pump = asyncio.create_task(self._pump(current), name="SwitchingSTT.pump")
                self._swapped.clear()
                swapped = asyncio.create_task(self._swapped.wait())
                try:
                    await asyncio.wait({pump, swapped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    swapped.cancel()
                if self._current is not current:
                    task = asyncio.create_task(self._drain(pump))
                    self._draining.add(task)
                    task.add_done_callback(self._draining.discard)
                    pump = None
                    continue
                finished, pump = pump, None
                await finished  # raises the provider's error to the framework's retry
                return
        except BaseException:
            # closed or failed: nothing of ours may outlive the stream (or fail later with nobody to hear it)
            await _cancel_all([t for t in (pump, *self._draining) if t is not None])
            raise
        finally:
            if self._hold_timer is not None:
                self._hold_timer.cancel()
            await _cancel_all([forward])
            if self._draining:
                await asyncio.gather(*self._draining, return_exceptions=True)
            self._switcher._streams.discard(self)

    async def _metrics_monitor_task(self, event_aiter: Any) -> None:
        async for _ in event_aiter:
            pass


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel and wait, and consume each outcome so no exception is left unretrieved."""
    if not tasks:
        return
    await utils.aio.cancel_and_wait(*tasks)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("switching STT: %s ended with %r", task.get_name(), task.exception())


class SwitchingLLM(Switching[AnyLLM], llm.LLM[Any]):
    """An LLM whose leading provider can change between turns (each ``chat`` picks the adapter then active)."""

    def __init__(
        self,
        members: Sequence[tuple[str, AnyLLM]],
        *,
        active: str | None = None,
        adapter: Callable[[list[AnyLLM]], AnyLLM] | None = None,
    ) -> None:
        super().__init__()
        self._switch = Switch(
            "llm",
            self,
            members,
            active=active,
            adapter=adapter or (lambda ordered: ordered[0] if len(ordered) == 1 else llm.FallbackAdapter(ordered)),
            forward=("metrics_collected", "error"),
        )
        self._label = f"{__name__}.SwitchingLLM"

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


class SwitchingTTS(Switching[AnyTTS], tts.TTS[Any]):
    """A TTS whose leading provider can change between utterances: each ``synthesize``/``stream`` (one per agent
    utterance) goes to the adapter then active, and an utterance already speaking finishes on its own."""

    def __init__(
        self,
        members: Sequence[tuple[str, AnyTTS]],
        *,
        active: str | None = None,
        adapter: Callable[[list[AnyTTS]], AnyTTS] | None = None,
    ) -> None:
        self._switch = Switch(
            "tts",
            self,
            members,
            active=active,
            adapter=adapter or (lambda ordered: ordered[0] if len(ordered) == 1 else tts.FallbackAdapter(ordered)),
            forward=("metrics_collected", "error"),
        )
        first = self._switch.current
        super().__init__(
            capabilities=first.capabilities, sample_rate=first.sample_rate, num_channels=first.num_channels
        )
        self._label = f"{__name__}.SwitchingTTS"

    def _adapter(self, name: str) -> AnyTTS:
        adapter = self._switch.adapter(name)
        if (adapter.sample_rate, adapter.num_channels) != (self.sample_rate, self.num_channels):
            raise ValueError(f"switching TTS: {name} would change the audio format mid-session")
        return adapter

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return self._adapter(self.active).synthesize(text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.SynthesizeStream:
        return self._adapter(self.active).stream(conn_options=conn_options)

    def prewarm(self) -> None:
        self.current.prewarm()
