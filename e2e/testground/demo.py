"""`make demo`: a scripted tour of voicefleet on a real local control plane and livekit-server.

Brings up the test ground in a private folder, installs the CRDs, starts the operator, applies examples/, waits for
Ready, shows the fleet, edits it and shows the fleet follow; then runs the real agent worker locally against the
offline providers (no API keys) on the same livekit-server and talks to it, then calls it on the phone (livekit-sip
on a veth, a pjsua2 caller in its own network namespace); then stops everything it started.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from phonecall.demo import call_once
from testground.ground import down, up
from testground.kube import Cluster
from testground.livekit import LiveKit
from testground.operator import OperatorProcess, wait_for
from voiceroom import Caller, LiveKitCredentials, VoiceStack

ROOT = Path(__file__).resolve().parents[2]
NS = "demo"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster: Cluster, *args: str) -> None:
    print(f"$ kubectl -n {NS} {' '.join(args)}", flush=True)
    print(cluster.kubectl("-n", NS, *args).stdout.rstrip(), flush=True)


def field(cluster: Cluster, kind: str, name: str, path: str) -> str:
    return str(cluster.kubectl("-n", NS, "get", kind, name, "-o", f"jsonpath={path}").stdout)


def run(root: Path) -> None:
    step("Starting the local components: etcd, kube-apiserver, controller-manager, scheduler, kwok, redis, livekit")
    started = time.monotonic()
    ground = up(root)
    assert ground.cluster is not None and ground.livekit is not None
    cluster = ground.cluster
    print(f"ready in {time.monotonic() - started:.1f}s: kubernetes {cluster.server}, livekit {ground.livekit.url}")
    print(cluster.kubectl("get", "nodes").stdout.rstrip())

    step("Installing the CRDs generated from the pydantic models (crds/)")
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    print(cluster.kubectl("get", "crd", "-l", "!kubernetes.io/bootstrapping").stdout.rstrip())

    step("Starting the operator: python -m voicefleet_operator")
    operator = OperatorProcess(cluster.kubeconfig, cluster.logs_dir)
    operator.start()
    try:
        print(f"live; log in {operator.log_path}")
        tour(cluster)
    finally:
        operator.stop()
    talk(root, ground.livekit)


def tour(cluster: Cluster) -> None:
    step("Applying examples/: Secrets, a ProviderPolicy and a VoiceAgent")
    cluster.kubectl("create", "namespace", NS)
    print(cluster.kubectl("-n", NS, "apply", "-f", str(ROOT / "examples")).stdout.rstrip())
    applied = time.monotonic()
    cluster.kubectl("-n", NS, "wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=180s")
    print(f"VoiceAgent tasks is Ready {time.monotonic() - applied:.1f}s after kubectl apply")
    show(cluster, "get", "voiceagents,providerpolicies")
    show(cluster, "get", "deployment,hpa,pdb,service,configmap,serviceaccount,pods", "-l",
         "app.kubernetes.io/instance=tasks")  # fmt: skip

    step("Editing the fleet: minReplicas 2 → 3 and new instructions")
    patch = {"spec": {"scaling": {"minReplicas": 3}, "pipeline": {"instructions": "Be brief and cheerful."}}}
    show(cluster, "patch", "voiceagent", "tasks", "--type=merge", "-p", json.dumps(patch))
    wait_for("the HPA to take the new minimum",
             lambda: field(cluster, "hpa", "tasks", "{.spec.minReplicas}") == "3")  # fmt: skip
    cluster.kubectl("-n", NS, "rollout", "status", "deployment/tasks", "--timeout=180s")
    wait_for("3 ready agent pods", lambda: field(cluster, "voiceagent", "tasks", "{.status.readyReplicas}") == "3")
    cluster.kubectl("-n", NS, "wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=180s")
    show(cluster, "get", "deployment,hpa", "-l", "app.kubernetes.io/instance=tasks")
    show(cluster, "get", "voiceagent", "tasks")

    step("On-call override: pin STT to self-hosted Whisper in the ProviderPolicy")
    override = {"spec": {"override": {"stt": "whisper", "reason": "demo: Deepgram incident"}}}
    show(cluster, "patch", "providerpolicy", "default", "--type=merge", "-p", json.dumps(override))
    wait_for("the fleet to report whisper",
             lambda: field(cluster, "voiceagent", "tasks", "{.status.providers.stt}") == "whisper")  # fmt: skip
    show(cluster, "get", "providerpolicies,voiceagents")

    step("Deleting a child by hand: the operator restores it")
    show(cluster, "delete", "hpa", "tasks")
    wait_for(
        "the HPA to come back", lambda: cluster.kubectl("-n", NS, "get", "hpa", "tasks", check=False).returncode == 0
    )
    show(cluster, "get", "hpa", "tasks")

    step("Status conditions")
    show(cluster, "get", "voiceagent", "tasks", "-o",
         'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\\n"}{end}')  # fmt: skip


REQUEST = "Add buy milk to my tasks"


def talk(root: Path, livekit: LiveKit) -> None:
    step("Talking to the agent: the real worker on this livekit-server, offline providers, no API keys")
    started = time.monotonic()
    with VoiceStack(root / "voice", LiveKitCredentials.of(livekit)) as stack:
        print(f"worker registered in {time.monotonic() - started:.1f}s (python -m voicefleet_agent start; "
              f"Deepgram-, OpenAI- and Cartesia-compatible servers on loopback; logs in {stack.logs_dir})")  # fmt: skip
        heard, answer, v2v = asyncio.run(converse(stack))
        print(f'caller said:       "{REQUEST}" (espeak-ng, on a microphone track)')
        print(f'agent heard:       "{heard}" (Whisper tiny.en)')
        print(f'agent answered:    "{answer}" ({v2v * 1000:.0f} ms after the caller stopped talking)')
        print(f"tasks in SQLite:   {[(t.id, t.title, t.due, t.done) for t in stack.store.list_tasks()]}")
        step("Calling the agent on the phone: a SIP caller (pjsua2) → livekit-sip → the same worker")
        call_once(root, livekit, stack)


async def converse(stack: VoiceStack) -> tuple[str, str, float]:
    async with Caller(stack.livekit, f"demo-{secrets.token_hex(3)}") as caller:
        await caller.dispatch(stack.agent_name)
        await caller.greeting()
        turn = await caller.turn(REQUEST)
        heard = await caller.wait_transcript("user", after=turn.utterance.started_at)
        answer = await caller.wait_transcript("agent", after=turn.utterance.ended_at)
        wait_for("the task in SQLite", lambda: bool(stack.store.list_tasks()))
        return heard.text, answer.text, turn.voice_to_voice


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="voicefleet-demo-"))
    try:
        run(root)
    except BaseException as error:
        print(f"\ndemo failed: {error}\nlogs kept in {root / 'logs'}", file=sys.stderr)
        down(root)
        return 1
    step("Stopping everything the demo started")
    stopped = down(root)
    print(f"stopped: {', '.join(stopped) or 'nothing'}")
    shutil.rmtree(root, ignore_errors=True)
    print("\ndemo complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
