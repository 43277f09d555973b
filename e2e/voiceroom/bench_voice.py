"""``python -m voiceroom.bench_voice [--turns N]``: spoken turns through a real LiveKit room, timed at the caller.

Starts its own livekit-server (test ground), the offline providers, the tasks MCP server and a real agent worker;
a Python caller speaks espeak-ng requests and listens. Per turn:

* voice-to-voice (v2v): the caller's last voiced frame → the agent's first non-silent frame, both at the caller
  (the caller's frames timed as they leave its mic's queue for the track, as a real microphone would send them);
* from the agent's own Prometheus histograms (deltas around each turn): end-of-turn delay (endpointing, includes
  waiting for the STT final), STT final delay, LLM TTFT, TTS TTFB, and the agent's voice-to-voice (e2e);
* LLM tool calls: on a tool turn, the LLM requests that ended in tool calls, start to end of their streams (the
  agent's ``llm_tool_calls`` stage): provider time before the tools run;
* pipeline overhead = agent e2e - (end of turn + LLM tool calls + LLM TTFT + TTS TTFB): the agent's own time between
  the providers' answers (on tool turns it includes the tool's run: the MCP round trip);
* tool: the agent's ``tool`` stage, from the LLM emitting a call to its output; overhead without tools = pipeline
  overhead - tool;
* transport = v2v - agent e2e: WebRTC both ways, jitter buffers, and the agent VAD's view of "stopped speaking".

Then barge-ins and backchannels, each while the agent reads a five-task list, 1 to 2 s into it (a different point
for each, ONSET_STEP_S apart, so that some land mid-word): barge-in = the caller's first voiced
frame of "Wait, stop please" → the agent's last voiced frame before it goes quiet, at the caller (0 when the caller
spoke into a pause between two words and heard nothing more); a backchannel
("uh-huh") is a false interruption when the agent's reply ends interrupted (its interruptions counter moved) instead
of resuming.

Prints a table, writes bench-results/voice.json; the last line printed is one JSON object. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testground.livekit import LiveKitStack
from voicefleet_agent import contract
from voicefleet_agent.contract import AgentConfig

from .caller import Caller
from .stack import LiveKitCredentials, Memory, VoiceStack, wait_until

UTTERANCES = ("Add buy milk to my tasks", "Show me my list", "Thank you", "Hello")
METRIC_WAIT = 5.0
TURN_TIMEOUT = 30.0
LIST = ("call the dentist", "pay the rent", "water the plants", "book the flights", "renew the passport")
BARGE_IN = "Wait, stop please"
BACKCHANNEL = "uh-huh"
MID_REPLY_S = 1.0  # how far into its reply the agent is when the caller speaks up, at the least
# ... plus a step of this per barge-in (cycling over a second): the caller speaks up at different points of the words
# and of the gaps between them, not always at the same moment of the reply (where espeak may leave a gap)
ONSET_STEP_S = 0.137


@dataclass
class TurnResult:
    said: str
    heard: str | None
    answer: str | None
    v2v_ms: float
    agent_e2e_ms: float | None
    end_of_turn_ms: float | None
    stt_ms: float | None
    llm_ttft_ms: float | None
    llm_tool_calls_ms: float | None  # the requests that ended in tool calls, whole (0: no tool call)
    tts_ttfb_ms: float | None
    overhead_ms: float | None
    tool_ms: float | None
    own_overhead_ms: float | None  # overhead less the tool runs
    transport_ms: float | None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: with 20 turns p95 is the 19th value)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _series(agent: str) -> dict[str, tuple[str, str]]:
    label = f'agent="{agent}"'
    return {
        "agent_e2e": (f"{contract.TURN_LATENCY}_sum{{{label}}}", f"{contract.TURN_LATENCY}_count{{{label}}}"),
        "end_of_turn": (
            f"{contract.END_OF_TURN_DELAY}_sum{{{label}}}",
            f"{contract.END_OF_TURN_DELAY}_count{{{label}}}",
        ),
        **{
            name: (
                f'{contract.STAGE_LATENCY}_sum{{{label},stage="{stage}"}}',
                f'{contract.STAGE_LATENCY}_count{{{label},stage="{stage}"}}',
            )
            for name, stage in (
                ("stt", "stt"),
                ("llm_ttft", "llm"),
                ("tts_ttfb", "tts"),
                ("llm_tool_calls", "llm_tool_calls"),
                ("tool", "tool"),
            )
        },
    }


SUMMED = ("tool", "llm_tool_calls")


def _delta_means(before: dict[str, float], after: dict[str, float], agent: str) -> dict[str, float | None]:
    """Mean of each histogram's new observations (ms); None when the turn added none. ``tool`` and
    ``llm_tool_calls`` are sums: a turn's tool calls, and the requests that made them, run one after another."""
    means: dict[str, float | None] = {}
    for name, (total, count) in _series(agent).items():
        n = after.get(count, 0.0) - before.get(count, 0.0)
        spent = (after.get(total, 0.0) - before.get(total, 0.0)) * 1000
        means[name] = (spent if name in SUMMED else spent / n) if n > 0 else None
    return means


async def _sample_memory(stack: VoiceStack, peak: list[Memory], stop: asyncio.Event) -> None:
    while not stop.is_set():
        memory = await asyncio.to_thread(stack.worker_memory)
        if not peak or memory.rss_mb > peak[0].rss_mb:
            peak[:] = [memory]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


@dataclass
class Overlap:
    """The caller speaking while the agent reads the list: how fast its audio stopped, whether the reply was cut."""

    said: str
    stop_ms: float | None  # caller's first voiced frame -> agent's last voiced frame before going quiet
    interrupted: bool  # the agent's reply ended interrupted


def _interruptions(stack: VoiceStack) -> float:
    return stack.metric_samples().get(f'{contract.INTERRUPTIONS}{{agent="{stack.agent_name}"}}', 0.0)


async def _agent_reading_the_list(stack: VoiceStack, caller: Caller, into: float) -> float:
    """Ask for the five-task list and return (when it was asked) once the agent has been reading it ``into`` s."""
    stack.store.clear()
    for title in LIST:
        stack.store.add(title)
    request = await caller.say("Show me my list")
    started = await caller.wait_agent_speech(request.ended_at, timeout=30)
    await asyncio.sleep(max(0.0, started + into - time.monotonic()))
    return request.ended_at


async def overlap(stack: VoiceStack, caller: Caller, text: str, into: float) -> Overlap:
    """Speak ``text`` over the agent's reply, ``into`` s after it began; time the stop; wait for the reply (or the
    answer) to end."""
    asked = await _agent_reading_the_list(stack, caller, into)
    before = await asyncio.to_thread(_interruptions, stack)
    await caller.say(text, wait=False)
    spoken = await caller.utterance_done(text)
    stop = await caller.wait_agent_quiet(spoken.started_at, timeout=30, running=True)
    # 0: the caller spoke into a pause between two words and heard nothing more of the reply
    stop_ms = round(max(0.0, stop - spoken.started_at) * 1000, 1)
    # the reply resumes (a false alarm) or the agent answers: either way wait until it has said everything
    with contextlib.suppress(TimeoutError):
        last = await caller.wait_agent_speech(spoken.ended_at, timeout=8)
        await caller.wait_agent_quiet(last, timeout=30)
    with contextlib.suppress(TimeoutError):
        await asyncio.to_thread(
            wait_until, lambda: _interruptions(stack) > before, timeout=METRIC_WAIT, what="interruption counted"
        )
    counted = await asyncio.to_thread(_interruptions, stack) > before
    # read to its end: the agent's transcript of the reply names the last task
    finished = any(t.speaker == "agent" and t.at >= asked and LIST[-1] in t.text.lower() for t in caller.transcripts)
    return Overlap(said=text, stop_ms=stop_ms, interrupted=counted or not finished)


@dataclass
class Run:
    turns: list[TurnResult]
    overlaps: list[Overlap]
    missed: list[str]  # what the caller said that got no answer in time
    busy: Memory | None


async def _quiet(caller: Caller) -> None:
    """Until the agent has been quiet for a while (after a missed turn, so the next starts clean)."""
    with contextlib.suppress(TimeoutError):
        await caller.wait_agent_quiet(time.monotonic() - 1, timeout=TURN_TIMEOUT)


async def run_turns(stack: VoiceStack, turns: int, warmup: int, bargeins: int = 0, backchannels: int = 0) -> Run:
    key = f'{contract.TURN_LATENCY}_count{{agent="{stack.agent_name}"}}'
    results: list[TurnResult] = []
    overlaps: list[Overlap] = []
    missed: list[str] = []
    peak: list[Memory] = []
    stop = asyncio.Event()
    async with Caller(stack.livekit, f"bench-{secrets.token_hex(4)}") as caller:
        await caller.dispatch(stack.agent_name)
        await caller.greeting()
        sampler = asyncio.create_task(_sample_memory(stack, peak, stop))
        try:
            for i in range(warmup + turns):
                text = UTTERANCES[i % len(UTTERANCES)]
                if text.startswith("Add"):
                    stack.store.clear()  # keeps "Show me my list" answers the same length
                before = stack.metric_samples()
                try:
                    turn = await caller.turn(text, timeout=TURN_TIMEOUT)
                except TimeoutError:  # counted as missed, and the run goes on: the next turn starts clean
                    missed.append(text)
                    print(f"turn {i + 1 - warmup:>3}: {text!r} got no answer within {TURN_TIMEOUT:.0f} s",
                          file=sys.stderr, flush=True)  # fmt: skip
                    await _quiet(caller)
                    continue
                # a turn the agent did not time (e.g. interrupted) keeps the caller's figures only
                with contextlib.suppress(TimeoutError):
                    await asyncio.to_thread(_wait_counted, stack, key, before.get(key, 0))
                m = _delta_means(before, stack.metric_samples(), stack.agent_name)
                heard = next((t.text for t in caller.transcripts
                              if t.speaker == "user" and t.at >= turn.utterance.started_at), None)  # fmt: skip
                answer = next((t.text for t in caller.transcripts
                               if t.speaker == "agent" and t.at >= turn.utterance.ended_at), None)  # fmt: skip
                v2v = turn.voice_to_voice * 1000
                e2e, eot, llm, tts = m["agent_e2e"], m["end_of_turn"], m["llm_ttft"], m["tts_ttfb"]
                asked = m["llm_tool_calls"] or 0.0  # provider time before the tools ran
                overhead = e2e - eot - asked - llm - tts if None not in (e2e, eot, llm, tts) else None  # type: ignore[operator]
                tool = m["tool"] or 0.0
                result = TurnResult(
                    said=text, heard=heard, answer=answer, v2v_ms=round(v2v, 1),
                    agent_e2e_ms=_r(e2e), end_of_turn_ms=_r(eot), stt_ms=_r(m["stt"]), llm_ttft_ms=_r(llm),
                    tts_ttfb_ms=_r(tts), llm_tool_calls_ms=_r(asked), overhead_ms=_r(overhead), tool_ms=_r(tool),
                    own_overhead_ms=_r(None if overhead is None else overhead - tool),
                    transport_ms=_r(v2v - e2e if e2e else None),
                )  # fmt: skip
                if i >= warmup:
                    results.append(result)
                print(f"turn {i + 1 - warmup:>3}{' (warm-up)' if i < warmup else ''}: {text!r} heard {heard!r} "
                      f"v2v {v2v:.0f} ms", file=sys.stderr, flush=True)  # fmt: skip
            for n, text in enumerate([BARGE_IN] * bargeins + [BACKCHANNEL] * backchannels):
                into = MID_REPLY_S + (n * ONSET_STEP_S) % 1.0
                try:
                    overlaps.append(await overlap(stack, caller, text, into))
                except TimeoutError:
                    missed.append(text)
                    print(f"over the agent: {text!r} missed (the agent never read the list)", file=sys.stderr)
                    await _quiet(caller)
                    continue
                last = overlaps[-1]
                outcome = "interrupted" if last.interrupted else "resumed"
                print(f"over the agent, {into:.2f} s into its reply: {text!r} stopped its audio after "
                      f"{last.stop_ms} ms, reply {outcome}", file=sys.stderr, flush=True)  # fmt: skip
        finally:
            stop.set()
            await sampler
    return Run(results, overlaps, missed, peak[0] if peak else None)


def _wait_counted(stack: VoiceStack, key: str, count: float) -> None:
    wait_until(lambda: stack.metric_samples().get(key, 0) > count, timeout=METRIC_WAIT, what="turn metrics")


def _configure(config: AgentConfig, turn_detection: str, baseline: bool) -> AgentConfig:
    update: dict[str, Any] = {"turn_detection": turn_detection}
    if baseline:
        update["min_interruption_ms"], update["false_interruption_timeout_ms"] = 500, 2000
        update["stt"] = tuple(
            p.model_copy(update={"options": {**p.options, "filler_words": "true"}}) if p.provider == "deepgram" else p
            for p in config.stt
        )
    return config.model_copy(update=update)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def summarise(results: list[TurnResult]) -> dict[str, dict[str, float | None]]:
    rows: dict[str, dict[str, float | None]] = {}
    for name in LABELS:
        values = [v for r in results if (v := getattr(r, name)) is not None]
        rows[name] = {
            "p50": _r(percentile(values, 50)),
            "p95": _r(percentile(values, 95)),
            "mean": _r(statistics.fmean(values)) if values else None,
            "n": len(values),
        }
    return rows


LABELS = {
    "v2v_ms": "voice-to-voice (caller: end of speech → first agent audio)",
    "end_of_turn_ms": "  end of turn (endpointing, incl. waiting for the STT final)",
    "stt_ms": "    of which STT final after end of speech",
    "llm_ttft_ms": "  LLM time to first token",
    "llm_tool_calls_ms": "  LLM requests that ended in tool calls (whole)",
    "tts_ttfb_ms": "  TTS time to first byte",
    "overhead_ms": "  pipeline overhead (agent e2e - providers)",
    "tool_ms": "    of which tool runs (LLM's call → its output; MCP)",
    "own_overhead_ms": "    without the tool runs",
    "transport_ms": "  transport (v2v - agent e2e)",
    "agent_e2e_ms": "agent-side voice-to-voice (e2e_latency)",
}


def table(rows: dict[str, dict[str, float | None]]) -> str:
    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.0f}"

    lines = [f"| {'stage':<62} | p50 ms | p95 ms | mean ms | n |", f"|{'-' * 64}|-------:|-------:|--------:|--:|"]
    for name, label in LABELS.items():
        r = rows[name]
        lines.append(f"| {label:<62} | {fmt(r['p50']):>6} | {fmt(r['p95']):>6} | {fmt(r['mean']):>7} | {r['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The benchmark; its last line is JSON even when it fails (then it names the error)."""
    try:
        return bench(argv)
    except Exception as error:
        traceback.print_exc()
        sys.stderr.flush()
        print(json.dumps({"error": repr(error), "load_average": list(_loadavg())}), flush=True)
        return 1


def bench(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voiceroom.bench_voice", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1, help="turns spoken first and not counted")
    parser.add_argument("--out", default="bench-results/voice.json")
    parser.add_argument("--turn-detection", choices=("vad", "semantic", "stt"), default="vad")
    parser.add_argument("--bargeins", type=int, default=6, help="barge-ins timed while the agent reads a list")
    parser.add_argument("--backchannels", type=int, default=4, help="'uh-huh' said while the agent reads a list")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="barge-in as before this agent tuned it: the framework's 0.5 s / 2 s, Deepgram filler words on",
    )
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="voicefleet-bench-voice-"))
    livekit = LiveKitStack(root / "livekit")
    ok = False
    try:
        creds = LiveKitCredentials.of(livekit.start())
        stack = VoiceStack(root / "voice", creds, configure=lambda c: _configure(c, args.turn_detection, args.baseline))
        with stack:
            # idle: the worker registered and its warm job process ready (main + forkserver + job process)
            wait_until(lambda: stack.worker_memory().processes >= 3, timeout=30, what="warm job process")
            idle = stack.worker_memory()
            run = asyncio.run(run_turns(stack, args.turns, args.warmup, args.bargeins, args.backchannels))
            results, overlaps, busy = run.turns, run.overlaps, run.busy
        ok = True
    finally:
        livekit.stop()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs kept in {root}", file=sys.stderr)

    rows = summarise(results)
    print(f"\n{len(results)} spoken turns through a real room ({args.turn_detection} turn detection, offline "
          f"providers), {platform.node()}, load average {' '.join(f'{x:.1f}' for x in _loadavg())}\n")  # fmt: skip
    print(table(rows))
    peak = f"{busy.rss_mb:.0f} MiB RSS / {busy.pss_mb:.0f} MiB PSS ({busy.processes} processes)" if busy else "-"
    bargein = [o.stop_ms for o in overlaps if o.said == BARGE_IN and o.stop_ms is not None]
    backchannel = [o for o in overlaps if o.said == BACKCHANNEL]
    false_interruptions = sum(o.interrupted for o in backchannel)
    cut = sum(o.interrupted for o in overlaps if o.said == BARGE_IN)
    paused = _fmt(percentile([o.stop_ms for o in backchannel if o.stop_ms is not None], 50))
    print(f"\nbarge-in (caller's speech onset → agent audio stop): p50 {_fmt(percentile(bargein, 50))} ms, p95 "
          f"{_fmt(percentile(bargein, 95))} ms over {len(bargein)}, {cut} replies interrupted. Backchannels "
          f"({BACKCHANNEL!r}): {false_interruptions} of {len(backchannel)} cut the reply (false interruptions); "
          f"the agent's audio paused after {paused} ms (p50)")  # fmt: skip
    print(f"\nworker memory (process tree): idle {idle.rss_mb:.0f} MiB RSS / {idle.pss_mb:.0f} MiB PSS "
          f"({idle.processes} processes); busy peak {peak}")  # fmt: skip
    summary: dict[str, Any] = {
        "turns": len(results),
        "v2v_p50_ms": rows["v2v_ms"]["p50"],
        "v2v_p95_ms": rows["v2v_ms"]["p95"],
        "overhead_p50_ms": rows["overhead_ms"]["p50"],
        "overhead_p95_ms": rows["overhead_ms"]["p95"],
        "overhead_without_tools_p50_ms": rows["own_overhead_ms"]["p50"],
        "overhead_without_tools_p95_ms": rows["own_overhead_ms"]["p95"],
        "tool_p95_ms": rows["tool_ms"]["p95"],
        "end_of_turn_p95_ms": rows["end_of_turn_ms"]["p95"],
        "stt_p95_ms": rows["stt_ms"]["p95"],
        "llm_ttft_p95_ms": rows["llm_ttft_ms"]["p95"],
        "llm_tool_calls_p95_ms": rows["llm_tool_calls_ms"]["p95"],
        "tts_ttfb_p95_ms": rows["tts_ttfb_ms"]["p95"],
        "transport_p95_ms": rows["transport_ms"]["p95"],
        "idle_worker_rss_mb": idle.rss_mb,
        "idle_worker_pss_mb": idle.pss_mb,
        "busy_worker_rss_mb": busy.rss_mb if busy else None,
        "busy_worker_pss_mb": busy.pss_mb if busy else None,
        "bargein_p50_ms": percentile(bargein, 50),
        "bargein_p95_ms": percentile(bargein, 95),
        "bargeins": len(bargein),
        "backchannels": len(backchannel),
        "backchannel_false_interruptions": false_interruptions,
        "missed": run.missed,
        "baseline": args.baseline,
        "turn_detection": args.turn_detection,
        "load_average": list(_loadavg()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"summary": summary, "stages": rows, "turns": [asdict(r) for r in results],
             "overlaps": [asdict(o) for o in overlaps]},
            indent=2,
        )
    )  # fmt: skip
    print(f"wrote {out}")
    sys.stderr.flush()
    print(json.dumps(summary), flush=True)
    return 0


def _loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as f:
        a, b, c = (float(x) for x in f.read().split()[:3])
    return a, b, c


if __name__ == "__main__":
    sys.exit(main())
