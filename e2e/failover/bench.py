"""`make bench-failover`: detection of a faulty provider at the example policy's settings, fleet-wide propagation
of the flip, calls in real rooms through it, and the in-session alternative.

On a private test ground (real control plane, livekit-server, the real operator process, the offline providers as a
process): a ProviderPolicy deepgram → whisper with the healthCheck of examples/10-providerpolicy.yaml (failback
hold 2 s, so a run takes minutes), followed by 10, 50 and 200 follower processes (``failover.follower``: the agent's
real fleet client). Each Deepgram fault (down, error5xx, slow, hang) is injected in turn, the fleet size cycling;
each process logs the wall-clock time it switched. The fleet channel wakes every waiting poll at one instant, so
the decision is timed by the earliest switch (an upper bound on the decision by one loopback response);
detection = fault → decision, propagation = decision → each follower's switch. The followers carry no calls, so
there detection rests on the probes alone. Then ``--room-calls`` callers talk to a real agent worker in real rooms
through Deepgram hang → flip → recovery → failback (``failover.rooms``). Prints a table; the last line is one JSON
object, also written to bench-results/failover.json, also when a part fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from failover.harness import (
    POLICY,
    FollowerFleet,
    OfflineProcess,
    example_health_check,
    join_fleet,
    keys_doc,
    policy_doc,
    wait_until,
)
from failover.rooms import GIVE_UP_S, REPEAT_S
from testground.ground import down, up
from testground.operator import Namespace, OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
MODES = ("down", "error5xx", "slow", "hang")
SLOW_MS = 10000  # above any probe timeout the example could set


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _status(ns: Namespace) -> dict[str, Any]:
    return dict((ns.get("providerpolicy", POLICY) or {}).get("status") or {})


def _fault_options(mode: str) -> dict[str, Any]:
    return {"latency_ms": SLOW_MS} if mode == "slow" else {"status": 503} if mode == "error5xx" else {}


def healthy(operator: OperatorProcess, namespace: str, provider: str) -> bool | None:
    """The operator's verdict on a provider (its ``voicefleet_operator_provider_healthy`` gauge), None before any."""
    labels = f'namespace="{namespace}",policy="{POLICY}",provider="{provider}"'
    for line in operator.metrics().splitlines():
        if line.startswith(f"voicefleet_operator_provider_healthy{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1]) == 1.0
    return None


def flip(
    ns: Namespace, operator: OperatorProcess, offline: OfflineProcess, fleet: FollowerFleet, mode: str
) -> dict[str, Any]:
    """One fault → detection → flip → acknowledged → recovery → failback, with timings. Detection is the operator's
    verdict (its health gauge, polled); the flip follows only when the fallback is healthy at that moment."""
    fleet.start()
    spawned = time.monotonic()
    fleet.wait_all_on("deepgram", timeout=180)
    started_s = time.monotonic() - spawned
    wait_until("deepgram healthy", lambda: healthy(operator, ns.name, "deepgram"), timeout=120, every=0.2)
    rss = fleet.rss_mib()
    load = os.getloadavg()[0]
    row: dict[str, Any] = {"followers": fleet.size, "fault": mode, "load_average_1m": round(load, 1)}
    t_fault = time.time()
    offline.fault("deepgram", mode, **_fault_options(mode))
    wait_until("deepgram unhealthy", lambda: healthy(operator, ns.name, "deepgram") is False, timeout=60, every=0.05)
    row["detection_ms"] = round((time.time() - t_fault) * 1000)
    row["whisper_healthy_at_detection"] = healthy(operator, ns.name, "whisper")
    try:
        switched = fleet.wait_all_on("whisper", timeout=60)
    except TimeoutError:  # the fallback was not healthy either: the operator rightly keeps the fleet where it is
        row["flip_ms"] = None
        offline.fault("deepgram", "ok")
        fleet.stop()
        return row
    times = sorted(s.at for s in switched.values())
    decision = times[0]
    generation = next(iter(switched.values())).generation
    delays_ms = [(t - decision) * 1000 for t in times]

    def acknowledged() -> dict[str, Any] | None:
        rollout = _status(ns).get("rollout") or {}
        done = rollout.get("generation") == generation and rollout.get("acknowledged") == fleet.size
        return rollout if done else None

    rollout = wait_until("status.rollout acknowledged by every follower", acknowledged, timeout=60, every=0.2)
    status_ack_s = time.time() - decision
    t_recover = time.time()
    offline.fault("deepgram", "ok")
    back = fleet.wait_all_on("deepgram", timeout=120)
    back_times = sorted(s.at for s in back.values())
    fleet.stop()
    return {
        **row,
        "flip_ms": round((decision - t_fault) * 1000),
        "propagation_p50_ms": round(percentile(delays_ms, 0.5), 1),
        "propagation_p99_ms": round(percentile(delays_ms, 0.99), 1),
        "propagation_max_ms": round(delays_ms[-1], 1),
        "status_acknowledged_after_s": round(status_ack_s, 2),
        "rollout_summary": rollout.get("summary"),
        "failback_after_recovery_s": round(back_times[0] - t_recover, 2),
        "failback_propagation_max_ms": round((back_times[-1] - back_times[0]) * 1000, 1),
        "followers_rss_mib": round(rss),
        "followers_started_s": round(started_s, 1),
    }


def run(sizes: list[int], repeats: int, inline: bool, room_calls: int, overrides: dict[str, int]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="voicefleet-bench-failover-"))
    ground = up(work, livekit=room_calls > 0, nodes=1)
    assert ground.cluster is not None
    cluster = ground.cluster
    offline = OfflineProcess(work)
    operator = OperatorProcess(cluster.kubeconfig, cluster.logs_dir)
    check = {**example_health_check(), **overrides}
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"health_check": check, "load_average_start": round(os.getloadavg()[0], 1)}
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        operator.start()
        offline.start()
        ns = Namespace(cluster, "bench-failover")
        cluster.kubectl("create", "namespace", ns.name)
        doc = policy_doc(offline.deepgram_url, offline.openai_url, hold_s=2, **check)
        assert ns.apply(keys_doc(), doc).returncode == 0
        wait_until("the policy on deepgram", lambda: (_status(ns).get("active") or {}).get("stt") == "deepgram", 60)
        fleet_pass = join_fleet(ns, work / "fleet-token")
        for i in range(repeats * len(MODES)):
            size = sizes[i % len(sizes)]
            log = work / f"switches-{i}-{size}.log"
            fleet = FollowerFleet(operator.fleet_url, ns.name, POLICY, size, log, fleet_pass)
            try:
                rows.append(flip(ns, operator, offline, fleet, MODES[i % len(MODES)]))
            except Exception as error:  # one failed flip is a row that says so; the others still run
                rows.append({"followers": size, "fault": MODES[i % len(MODES)], "error": repr(error)})
                offline.fault("deepgram", "ok")
            finally:
                fleet.stop()
            print(json.dumps(rows[-1]), flush=True)
        events = ns.kubectl("get", "events", "-o", "json").stdout
        extra["events"] = sorted(
            {f"{e['reason']}: {e['message']}" for e in json.loads(events)["items"] if "→" in e.get("message", "")}
        )
        offline.stop()  # the rooms bring their own offline stack; two Whispers would share two cores
        if room_calls:
            from failover.rooms import calls_through_flip

            try:
                assert ground.livekit is not None
                extra["rooms"] = calls_through_flip(ns, operator.fleet_url, ground.livekit, work, check, room_calls)
            except Exception as error:  # reported, not hidden: the JSON then says the calls were not measured
                traceback.print_exc()
                extra["rooms"] = {"calls": room_calls, "error": repr(error)}
        if inline:
            from failover.inline import measure

            offline.start()
            extra.update(
                asyncio.run(measure(offline.deepgram_url, offline.openai_url, lambda m: offline.fault("deepgram", m)))
            )
    finally:
        operator.stop()
        offline.stop()
        down(work)
    extra["load_average_end"] = round(os.getloadavg()[0], 1)
    return {"rows": rows, **extra}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,50,200", help="follower process counts, cycled over the faults")
    parser.add_argument("--repeats", type=int, default=1, help="times each fault is injected")
    parser.add_argument("--no-inline", action="store_true", help="skip the in-session fallback measurement")
    parser.add_argument("--room-calls", type=int, default=2, help="real-room calls through a flip (0: skip)")
    parser.add_argument(
        "--check",
        default="",
        help="healthCheck overrides of the example's, e.g. interval_s=1,latency_threshold_ms=6000",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    overrides = {k: int(v) for k, _, v in (p.partition("=") for p in args.check.split(",") if p)}
    try:
        report(run(sizes, args.repeats, inline=not args.no_inline, room_calls=args.room_calls, overrides=overrides))
    except (Exception, KeyboardInterrupt) as error:  # the last line is JSON even when the run fails or is stopped
        traceback.print_exc()
        sys.stderr.flush()
        print(json.dumps({"error": repr(error), "sizes": sizes}), flush=True)
        return 130 if isinstance(error, KeyboardInterrupt) else 1
    return 0


def report(result: dict[str, Any]) -> None:
    rows = [r for r in result["rows"] if "error" not in r]
    flips = [r for r in rows if r.get("flip_ms") is not None]
    print(f"{'followers':>9} {'fault':>9} {'detect ms':>10} {'flip ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'status ack s':>12} {'failback s':>10} {'load':>5}")  # fmt: skip
    for r in rows:
        flipped = r.get("flip_ms") is not None
        print(f"{r['followers']:>9} {r['fault']:>9} {r['detection_ms']:>10} {r['flip_ms'] if flipped else '-':>8} "
              f"{r.get('propagation_p50_ms', '-'):>8} {r.get('propagation_p99_ms', '-'):>8} "
              f"{r.get('propagation_max_ms', '-'):>8} {r.get('status_acknowledged_after_s', '-'):>12} "
              f"{r.get('failback_after_recovery_s', '-'):>10} {r['load_average_1m']:>5}")  # fmt: skip
    for r in result["rows"]:
        if "error" in r:
            print(f"{r['followers']:>9} {r['fault']:>9} failed: {r['error']}")
    if "inline_fallback_penalty_ms" in result:
        print(f"new session, dead (hanging) primary, in-session fallback alone: first transcript after "
              f"{result['first_transcript_ms_with_dead_primary']} ms vs {result['first_transcript_ms_fleet_flipped']}"
              f" ms with the fleet flipped → penalty {result['inline_fallback_penalty_ms']} ms")  # fmt: skip
    by_mode: dict[str, list[int]] = {}
    for r in rows:
        by_mode.setdefault(r["fault"], []).append(r["detection_ms"])
    rooms: dict[str, Any] = result.get("rooms") or {}
    if rooms:
        print(f"real-room calls through Deepgram {rooms.get('fault')} → flip → recovery → failback: "
              f"{rooms.get('calls')} calls, dropped {rooms.get('dropped', '?')}, unanswered utterances "
              f"{rooms.get('unanswered_utterances', '?')}, detection {rooms.get('detection_ms', '?')} ms"
              + (f", failed: {rooms['error']}" if "error" in rooms else ""))  # fmt: skip
    summary = {
        "health_check": result.get("health_check"),
        "detection_ms": max((max(v) for v in by_mode.values()), default=None),
        "detection_ms_by_fault": by_mode,
        "detection_means": "fault injected → the operator's verdict unhealthy (its health gauge, polled every 50 ms)",
        "flip_ms_by_fault": {m: [r["flip_ms"] for r in rows if r["fault"] == m] for m in by_mode},
        "propagation_p50_ms": {str(r["followers"]): r["propagation_p50_ms"] for r in flips},
        "propagation_p99_ms": {str(r["followers"]): r["propagation_p99_ms"] for r in flips},
        "propagation_max_ms": {str(r["followers"]): r["propagation_max_ms"] for r in flips},
        "dropped_calls": rooms.get("dropped"),
        "dropped_calls_note": (
            f"{rooms.get('calls', 0)} real-room calls (voiceroom callers, a real agent worker following the policy, "
            "livekit-server) through Deepgram fault → flip → recovery → failback; a call is dropped when the agent "
            f"leaves the room or it gets no answer for {GIVE_UP_S:g} s however often the caller asks (a caller asks "
            f"again after {REPEAT_S:g} s of silence: unanswered_utterances)."
            + (f" Measurement failed: {rooms['error']}" if "error" in rooms else "")
        ),
        "unanswered_utterances": rooms.get("unanswered_utterances"),
        "rooms": rooms,
        "inline_fallback_penalty_ms": result.get("inline_fallback_penalty_ms"),
        "inline": {k: v for k, v in result.items() if k.startswith(("inline", "first_transcript", "utterances"))},
        "events": result.get("events", []),
        "rows": result["rows"],
        "load_average": [result.get("load_average_start"), result.get("load_average_end")],
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "flip_timed_by": "earliest follower switch (the channel wakes every waiting poll at once)",
    }
    out = ROOT / "bench-results" / "failover.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    sys.stderr.flush()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
