"""``python -m phonecall.bench [--calls N]``: phone calls through livekit-sip into a real agent worker, timed at the
caller: INVITE sent → first voiced audio of the agent's greeting heard, plus the refusal cases.

Starts its own livekit-server + Redis, livekit-sip on a veth pair with the caller's network namespace, the offline
providers, the tasks MCP server and a real agent worker. The trunk and dispatch rule are made by the operator's own
phone-channel service (`voicefleet_operator.telephony`) from a VoiceAgent body, as in the cluster. Each answered
call waits for the greeting, hangs up after it, and waits for the agent's session to end before the next call.

Prints a table, writes bench-results/phone.json; the last line printed is one JSON object. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testground.livekit import LiveKit, LiveKitStack
from testground.sip import SipGround, SipStack
from voicefleet_operator.models import VoiceAgent
from voicefleet_operator.telephony import Telephony
from voiceroom.bench_voice import percentile
from voiceroom.stack import LiveKitCredentials, VoiceStack, wait_until

from . import CallResult, Phone, sip_outcomes

AGENT_NAME = "phone-bench"
NUMBER = "+15550100200"
USERNAME, PASSWORD = "bench-trunk", "bench-pass-word"
DROP_WAIT = 6.0


class Secrets:
    """The two Secrets the VoiceAgent names, as the operator would read them from the API server."""

    def __init__(self, data: dict[str, dict[str, str]]) -> None:
        self.data = data

    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.data.get(name)

    async def voice_agents(self, namespace: str) -> list[dict[str, Any]]:
        """The one VoiceAgent there is, with its phone channel: the orphan sweep must keep its trunk and rule."""
        return [
            {
                "metadata": {"name": "tasks", "namespace": namespace},
                "spec": {"channels": {"phone": {"numbers": [NUMBER]}}},
            }
        ]

    async def cluster_id(self) -> str:
        return "bench"


def voice_agent(livekit_url: str, caller_ip: str, agent_name: str = AGENT_NAME, number: str = NUMBER) -> VoiceAgent:
    return VoiceAgent.from_body({
        "apiVersion": "voicefleet.io/v1alpha1", "kind": "VoiceAgent",
        "metadata": {"name": "tasks", "namespace": "bench", "uid": str(uuid.uuid4())},
        "spec": {
            "image": "agent:dev", "agentName": agent_name,
            "livekit": {"url": livekit_url, "secretRef": {"name": "lk"}},
            "pipeline": {"stt": {"provider": "deepgram", "model": "nova-3"},
                         "llm": {"provider": "openai", "model": "gpt-4o-mini"},
                         "tts": {"provider": "cartesia", "model": "sonic-3"}},
            "channels": {"phone": {"numbers": [number], "allowedAddresses": [f"{caller_ip}/32"],
                                   "authSecretRef": {"name": "sip-auth"}, "roomPrefix": "call-",
                                   "ringingTimeoutSeconds": 120}},
        },
    })  # fmt: skip


def configure_phone(livekit: LiveKit, agent: VoiceAgent) -> str:
    """The operator's phone-channel service makes the trunk and dispatch rule; returns its PhoneReady message."""
    telephony = Telephony(Secrets({
        "lk": {"apiKey": livekit.api_key, "apiSecret": livekit.api_secret},
        "sip-auth": {"username": USERNAME, "password": PASSWORD},
    }))  # fmt: skip
    result = asyncio.run(telephony.reconcile(agent, had_phone=False))
    if result is None or result.status != "True":
        raise RuntimeError(f"phone channel not configured: {result}")
    return result.message


@dataclass(frozen=True)
class Refusal:
    case: str
    expected: int  # 0: dropped without a final answer
    status: int
    as_expected: bool


def refusals(phone: Phone, sip: SipGround) -> list[Refusal]:
    cases: list[tuple[str, int, dict[str, Any]]] = [
        ("wrong password", 401, {"number": NUMBER, "username": USERNAME, "password": "wrong"}),
        ("no credentials", 407, {"number": NUMBER}),
        ("address outside allowedAddresses", 0,
         {"number": NUMBER, "username": USERNAME, "password": PASSWORD, "from_ip": sip.stranger_ip,
          "answer_timeout": DROP_WAIT}),
        ("number no trunk owns", 0,
         {"number": NUMBER[:-1] + "9", "username": USERNAME, "password": PASSWORD, "answer_timeout": DROP_WAIT}),
    ]  # fmt: skip
    found = []
    for case, expected, kwargs in cases:
        call = phone.call(**kwargs)
        found.append(Refusal(case, expected, call.status, call.status == expected and call.media is None))
        print(f"refusal {case!r}: status {call.status or 'none (dropped)'}", flush=True)
    return found


def run(stack: VoiceStack, phone: Phone, calls: int, warmup: int) -> list[CallResult]:
    """`warmup` + `calls` sequential calls; returns the counted ones. The first job of a fresh worker pays imports."""
    active = f'voicefleet_agent_active_sessions{{agent="{AGENT_NAME}"}}'
    results = []
    for i in range(warmup + calls):
        call = phone.call(NUMBER, username=USERNAME, password=PASSWORD, greeting_timeout=30.0, quiet_s=0.6)
        if i >= warmup:
            results.append(call)
        first = f"{call.first_audio * 1000:.0f} ms" if call.first_audio is not None else "-"
        label = f"call {i + 1 - warmup:>3}" if i >= warmup else "warm-up "
        print(f"{label}: status {call.status} first agent audio {first} codec {call.codec}", flush=True)
        wait_until(lambda: stack.metric_samples().get(active, 0.0) == 0.0, timeout=60, what="agent session ended")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phonecall.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1, help="calls placed first and not counted")
    parser.add_argument("--out", default="bench-results/phone.json")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="voicefleet-bench-phone-"))
    livekit_stack = LiveKitStack(root / "livekit")
    sip_stack: SipStack | None = None
    ok = False
    try:
        livekit = livekit_stack.start()
        sip_stack = SipStack(root / "sip", livekit=livekit)
        sip = sip_stack.start()
        configure_phone(livekit, voice_agent(livekit.url, sip.caller_ip))
        with VoiceStack(root / "voice", LiveKitCredentials.of(livekit), AGENT_NAME) as stack:
            wait_until(lambda: stack.worker_memory().processes >= 3, timeout=120, what="the agent's warm job process")
            phone = Phone(sip, root / "calls")
            started = time.monotonic()
            answered = run(stack, phone, args.calls, args.warmup)
            refused = refusals(phone, sip)
            elapsed = time.monotonic() - started
            outcomes = sip_outcomes(sip.prometheus_url)
        ok = True
    finally:
        if sip_stack is not None:
            sip_stack.stop()
        livekit_stack.stop()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs kept in {root}", file=sys.stderr)

    first = [c.first_audio * 1000 for c in answered if c.answered and c.first_audio is not None]
    confirmed = [c.confirmed * 1000 for c in answered if c.confirmed is not None]
    rows = {
        "INVITE → 200 OK (ms)": confirmed,
        "INVITE → first agent audio (ms)": first,
    }
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\n{len(answered)} sequential calls (pjsua2 → livekit-sip v1.8.0 → livekit-server → agent worker, "
          f"offline providers), {platform.node()}, load average {load}, {elapsed:.0f} s\n")  # fmt: skip
    print(f"{'':<34}{'n':>4}{'p50':>8}{'p95':>8}{'max':>8}")
    for name, values in rows.items():
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(f"{name:<34}{len(values):>4}{p50 or 0:>8.0f}{p95 or 0:>8.0f}{max(values, default=0):>8.0f}")
    print()
    for r in refused:
        want = "dropped (no answer)" if r.expected == 0 else str(r.expected)
        got = "dropped (no answer)" if r.status == 0 else str(r.status)
        print(f"refusal {r.case:<36} expected {want:<20} got {got:<20} {'ok' if r.as_expected else 'UNEXPECTED'}")
    print("\nlivekit-sip's own count (Prometheus, inbound): " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                                     sorted(outcomes.items())))  # fmt: skip
    p50, p95 = percentile(first, 50), percentile(first, 95)
    summary = {
        "calls": len(answered),
        "answered": sum(1 for c in answered if c.answered),
        "refusals": len(refused),
        "refused_as_expected": sum(1 for r in refused if r.as_expected),
        "first_audio_p50_ms": round(p50) if p50 is not None else None,
        "first_audio_p95_ms": round(p95) if p95 is not None else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "summary": summary, "load_average": load,
        "calls": [{k: v for k, v in asdict(c).items() if k not in ("recording", "log")} for c in answered],
        "refusals": [asdict(r) for r in refused],
        "livekit_sip_outcomes": outcomes,
    }, indent=2, default=str))  # fmt: skip
    print(f"wrote {out}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
