"""Injected faults make the real plugins fail the way a failing provider would."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, APIError, APIStatusError, APITimeoutError, stt
from livekit.agents.llm import ChatContext
from livekit.plugins import cartesia, deepgram, openai

from voicefleet_offline import OfflineStack

from .conftest import frames, requires_espeak

pytestmark = pytest.mark.usefixtures("http")

NO_RETRY = APIConnectOptions(max_retry=0, timeout=2.0)


def _llm(stack: OfflineStack) -> openai.LLM:
    return openai.LLM(model="gpt-4o-mini", base_url=stack.openai.provider_url, api_key="offline")


def _ctx(text: str = "list my tasks") -> ChatContext:
    ctx = ChatContext.empty()
    ctx.add_message(role="user", content=text)
    return ctx


async def _complete(model: openai.LLM, conn_options: APIConnectOptions = NO_RETRY) -> str:
    async with model.chat(chat_ctx=_ctx("hello"), conn_options=conn_options) as stream:
        return "".join([c.delta.content async for c in stream if c.delta and c.delta.content])


async def _stt_events(
    stack: OfflineStack, pcm: bytes, conn_options: APIConnectOptions = NO_RETRY
) -> list[stt.SpeechEvent]:
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline")
    stream = dg.stream(conn_options=conn_options)
    for f in frames(pcm):
        stream.push_frame(f)
    stream.end_input()
    try:
        return await asyncio.wait_for(_drain(stream), 30)
    finally:
        await stream.aclose()


async def _drain(stream: deepgram.stt.SpeechStream) -> list[stt.SpeechEvent]:
    return [ev async for ev in stream]


async def _first_final(stream: deepgram.stt.SpeechStream) -> str:
    async for ev in stream:
        if ev.type is stt.SpeechEventType.FINAL_TRANSCRIPT:
            return ev.alternatives[0].text
    raise AssertionError("stream ended without a final transcript")


async def _control(url: str, payload: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        if payload is None:
            async with session.get(url) as resp:
                return resp.status, await resp.json()
        async with session.post(url, json=payload) as resp:
            return resp.status, await resp.json()


# -- error5xx ---------------------------------------------------------------------------------------------


async def test_llm_error5xx_raises_status_error(stack: OfflineStack) -> None:
    await stack.openai.set_fault("error5xx", status=503)
    with pytest.raises(APIStatusError) as info:
        await _complete(_llm(stack))
    assert info.value.status_code == 503
    assert info.value.retryable


async def test_fault_count_lets_the_plugin_retry_succeed(stack: OfflineStack) -> None:
    await stack.openai.set_fault("error5xx", status=500, count=1)
    text = await _complete(_llm(stack), APIConnectOptions(max_retry=1, retry_interval=0.05, timeout=2.0))
    assert text.startswith("Hi")
    state = stack.openai.state()
    assert state["mode"] == "ok"
    assert state["counters"]["by_mode"] == {"error5xx": 1, "ok": 1}


@requires_espeak
async def test_deepgram_error5xx_fails_the_websocket_handshake(stack: OfflineStack, milk_pcm: bytes) -> None:
    await stack.deepgram.set_fault("error5xx", status=502)
    with pytest.raises(APIStatusError) as info:
        await _stt_events(stack, milk_pcm)
    assert info.value.status_code == 502


async def test_cartesia_error5xx_fails_the_websocket_handshake(stack: OfflineStack) -> None:
    await stack.cartesia.set_fault("error5xx", status=500)
    tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline")
    stream = tts.stream(conn_options=NO_RETRY)
    stream.push_text("Hello there.")
    stream.end_input()
    with pytest.raises(APIStatusError) as info:
        await asyncio.wait_for(_drain_tts(stream), 10)
    assert info.value.status_code == 500
    await stream.aclose()
    await tts.aclose()


# -- down -------------------------------------------------------------------------------------------------


async def test_down_refuses_connections_and_a_sibling_brings_it_back(stack: OfflineStack) -> None:
    tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline")
    await stack.cartesia.set_fault("down")
    with pytest.raises(APIConnectionError):
        await tts.synthesize("hello", conn_options=NO_RETRY).collect()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", stack.cartesia.port), 1):
        pass

    # the server that is down can't hear its own /_control; any sibling can, by target
    status, state = await _control(stack.openai.control_url, {"target": "cartesia", "mode": "ok"})
    assert status == 200 and state["service"] == "cartesia" and state["mode"] == "ok"
    frame = await tts.synthesize("hello", conn_options=NO_RETRY).collect()
    assert frame.duration > 0.2


@requires_espeak
async def test_down_drops_open_streams(stack: OfflineStack, milk_pcm: bytes) -> None:
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline")
    stream = dg.stream(conn_options=NO_RETRY)
    for f in frames(milk_pcm):
        stream.push_frame(f)
    first = await asyncio.wait_for(anext(aiter(stream)), 30)
    assert first.type is stt.SpeechEventType.START_OF_SPEECH
    await stack.deepgram.set_fault("down")
    with pytest.raises(APIError):
        await asyncio.wait_for(_drain(stream), 30)
    await stream.aclose()
    assert stack.deepgram.state()["counters"]["aborted_connections"] >= 1


# -- hang ------------------------------------------------------------------------------------------------------


async def test_llm_hang_times_out(stack: OfflineStack) -> None:
    await stack.openai.set_fault("hang")
    started = time.perf_counter()
    with pytest.raises(APITimeoutError):
        await _complete(_llm(stack), APIConnectOptions(max_retry=0, timeout=1.0))
    assert 0.9 < time.perf_counter() - started < 5


async def test_cartesia_websocket_hang_times_out(stack: OfflineStack) -> None:
    await stack.cartesia.set_fault("hang")
    tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline")
    stream = tts.stream(conn_options=APIConnectOptions(max_retry=0, timeout=1.0))
    stream.push_text("Hello there.")
    stream.end_input()
    with pytest.raises(APITimeoutError):
        await asyncio.wait_for(_drain_tts(stream), 10)
    await stream.aclose()
    await tts.aclose()


async def _drain_tts(stream: cartesia.tts.SynthesizeStream) -> int:
    return sum([1 async for _ in stream])


@requires_espeak
async def test_deepgram_hang_fails_to_connect(stack: OfflineStack, milk_pcm: bytes) -> None:
    await stack.deepgram.set_fault("hang")
    with pytest.raises(APIConnectionError, match="failed to connect"):
        await _stt_events(stack, milk_pcm, APIConnectOptions(max_retry=0, timeout=1.0))


# -- disconnect ----------------------------------------------------------------------------------------------


async def test_llm_disconnect_mid_stream(stack: OfflineStack) -> None:
    await stack.openai.set_fault("disconnect", disconnect_after=1)
    with pytest.raises(APIConnectionError):
        await _complete(_llm(stack))
    assert stack.openai.state()["counters"]["aborted_connections"] == 1


async def test_cartesia_bytes_disconnect_mid_audio(stack: OfflineStack) -> None:
    await stack.cartesia.set_fault("disconnect", disconnect_after=1)
    tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline")
    with pytest.raises(APIError):
        await tts.synthesize(
            "This sentence is long enough to need several chunks of audio.", conn_options=NO_RETRY
        ).collect()


@requires_espeak
async def test_deepgram_runtime_disconnect_reaches_an_open_stream(stack: OfflineStack, milk_pcm: bytes) -> None:
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline")
    stream = dg.stream(conn_options=NO_RETRY)
    for f in frames(milk_pcm):
        stream.push_frame(f)
    seen: list[stt.SpeechEventType] = []
    async for ev in stream:
        seen.append(ev.type)
        if ev.type is stt.SpeechEventType.END_OF_SPEECH:
            break
    assert stt.SpeechEventType.FINAL_TRANSCRIPT in seen

    await stack.deepgram.set_fault("disconnect")
    for f in frames(milk_pcm):
        stream.push_frame(f)
    with pytest.raises(APIStatusError, match="closed unexpectedly"):
        await asyncio.wait_for(_drain(stream), 30)
    await stream.aclose()


@requires_espeak
async def test_deepgram_disconnect_then_reconnect_recovers(stack: OfflineStack, milk_pcm: bytes) -> None:
    """Audio in flight when the socket drops is lost (as with the real service); what follows the reconnect isn't."""
    await stack.deepgram.set_fault("disconnect", disconnect_after=0, count=1)
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline")
    stream = dg.stream(conn_options=APIConnectOptions(max_retry=2, retry_interval=0.05, timeout=2.0))
    for f in frames(b"\0" * 3200):
        stream.push_frame(f)
    deadline = time.monotonic() + 10
    while stack.deepgram.state()["counters"]["ws_connections"] < 2:
        assert time.monotonic() < deadline, "the plugin did not reconnect"
        await asyncio.sleep(0.02)
    for f in frames(milk_pcm):
        stream.push_frame(f)
    final = await asyncio.wait_for(_first_final(stream), 30)
    await stream.aclose()
    assert "milk" in final.lower()
    assert stack.deepgram.state()["counters"]["by_mode"] == {"disconnect": 1, "ok": 1}


# -- slow -------------------------------------------------------------------------------------------------------


async def test_slow_adds_latency_to_first_token(stack: OfflineStack) -> None:
    await stack.openai.set_fault("slow", latency_ms=400)
    started = time.perf_counter()
    assert (await _complete(_llm(stack))).startswith("Hi")
    assert time.perf_counter() - started >= 0.4


# -- the HTTP control contract --------------------------------------------------------------------------------


async def test_control_endpoint_contract(stack: OfflineStack) -> None:
    url = stack.openai.control_url
    status, state = await _control(url)
    assert status == 200
    assert state["service"] == "openai" and state["mode"] == "ok"
    assert state["counters"]["requests"] == 0

    status, body = await _control(url, {"mode": "sideways"})
    assert status == 400 and "sideways" in str(body["error"])
    status, body = await _control(url, {"mode": "slow", "latencyMs": 5})
    assert status == 400 and "latencyMs" in str(body["error"])

    status, state = await _control(url, {"mode": "error5xx", "status": 429, "count": 2})
    assert (status, state["mode"], state["status"], state["count"]) == (200, "error5xx", 429, 2)
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": "Bearer offline"}
        statuses = []
        for _ in range(3):
            async with session.get(f"{stack.openai.provider_url}/models", headers=headers) as resp:
                statuses.append(resp.status)
        assert statuses == [429, 429, 200]
        async with session.get(f"{stack.openai.base_url}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["service"] == "openai"

    status, state = await _control(url, {"reset_counters": True})
    assert state["counters"]["requests"] == 0

    status, every = await _control(f"{url}?target=all")
    assert set(every["services"]) == {"deepgram", "openai", "cartesia"}  # type: ignore[arg-type]


async def test_control_for_ms_reverts_to_ok(stack: OfflineStack) -> None:
    _, state = await _control(stack.deepgram.control_url, {"mode": "error5xx", "for_ms": 200})
    assert state["mode"] == "error5xx"
    deadline = time.monotonic() + 5
    while stack.deepgram.state()["mode"] != "ok":
        assert time.monotonic() < deadline, "mode did not revert"
        await asyncio.sleep(0.02)
