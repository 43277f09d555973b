"""`make demo`: a scripted tour of voicefleet running as pods on a real local Kubernetes node.

Brings up the test ground in a private folder with a real kubelet node (containerd, runc, kube-proxy, CoreDNS) next
to the control plane and livekit-server; installs voicefleet the way docs/install.md says (its own commands: `make
images`, `helm install` of both charts with the offline providers and the tasks server, `examples/` unmodified);
shows the agent pods on the node; talks to the fleet through a real room and shows which pod answered; edits the
fleet's autoscaling and flips its STT with the on-call override; calls it on the phone (livekit-sip on a veth, a
pjsua2 caller in its own network namespace, the trunk made by the operator's pod); then stops everything it started.
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

from phonecall import Phone, transcribe
from testground import docrun, install
from testground.ground import down, up
from testground.kube import Cluster
from testground.livekit import LiveKit
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from testground.sip import SipStack
from voicefleet_agent.session import caller_token
from voicefleet_agent.tasks_client import TasksClient
from voiceroom import Caller, LiveKitCredentials

NS = install.FLEET_NS
AGENT_NAME = "task-manager"  # examples/20-voiceagent.yaml
REQUEST = "Add buy milk to my tasks"
NUMBER, USERNAME, PASSWORD = "+15550100300", "demo-trunk", "demo-pass-word"
SLOW = 240.0  # a first turn on a loaded 2-core machine gets a long wait, not a failure


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster: Cluster, *args: str) -> None:
    print(f"$ kubectl -n {NS} {' '.join(args)}", flush=True)
    print(cluster.kubectl("-n", NS, *args).stdout.rstrip(), flush=True)


def field(cluster: Cluster, kind: str, name: str, path: str) -> str:
    return str(cluster.kubectl("-n", NS, "get", kind, name, "-o", f"jsonpath={path}").stdout)


def show_step(doc_step: docrun.Step) -> None:
    if doc_step.script.strip():
        first = doc_step.script.strip().splitlines()
        more = f"   (+{len(first) - 3} more lines)" if len(first) > 3 else ""
        print(f"# docs/install.md, {doc_step.heading}\n" + "\n".join(f"$ {line}" for line in first[:3]) + more,
              flush=True)  # fmt: skip


def run(root: Path) -> None:
    step("Starting the local components: etcd, kube-apiserver, controller-manager, scheduler, kwok, redis, livekit,"
         " and a real kubelet node (containerd, runc, kube-proxy, CoreDNS)")  # fmt: skip
    started = time.monotonic()
    ground = up(root, real_node=True)
    assert ground.cluster is not None and ground.livekit is not None and ground.node is not None
    cluster = ground.cluster
    on_node = NodeGround(ground.cluster, ground.livekit, ground.node)
    print(f"ready in {time.monotonic() - started:.1f}s: kubernetes {cluster.server}, livekit {ground.livekit.url}")
    print(cluster.kubectl("get", "nodes", "-L", "type").stdout.rstrip())

    step("Installing voicefleet as docs/install.md says (its own commands, run in order)")
    started = time.monotonic()
    install.install_as_documented(on_node, show=show_step)
    print(f"installed and va/tasks Ready in {time.monotonic() - started:.1f}s")
    print(cluster.kubectl("-n", install.OPERATOR_NS, "get", "pods", "-o", "wide").stdout.rstrip())
    show(cluster, "get", "voiceagents,providerpolicies")
    show(cluster, "get", "pods", "-o", "wide")

    talk(ground.livekit, cluster)
    tour(cluster)
    phone(root, ground.livekit, cluster)


def tour(cluster: Cluster) -> None:
    # (the real node has 2 CPUs: a third agent pod's 500m request would not fit beside the offline stack)
    step("Editing the fleet: maxReplicas 20 → 4, targetSessionsPerPod 4 → 2 (the HPA follows)")
    patch = {"spec": {"scaling": {"maxReplicas": 4, "targetSessionsPerPod": 2}}}
    show(cluster, "patch", "voiceagent", "tasks", "--type=merge", "-p", json.dumps(patch))
    wait_for("the HPA to take the new bounds", lambda: field(cluster, "hpa", "tasks", "{.spec.maxReplicas}") == "4")
    cluster.kubectl("-n", NS, "wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=180s", timeout=200)
    show(cluster, "get", "hpa", "tasks")

    step("On-call override: pin STT to self-hosted Whisper in the ProviderPolicy (pods follow, no restart)")
    override = {"spec": {"override": {"stt": "whisper", "reason": "demo: Deepgram incident"}}}
    show(cluster, "patch", "providerpolicy", "default", "--type=merge", "-p", json.dumps(override))
    wait_for("the fleet to report whisper",
             lambda: field(cluster, "voiceagent", "tasks", "{.status.providers.stt}") == "whisper")  # fmt: skip
    show(cluster, "get", "providerpolicies,voiceagents")

    step("Deleting a child by hand: the operator restores it")
    show(cluster, "delete", "hpa", "tasks")
    wait_for("the HPA to come back",
             lambda: cluster.kubectl("-n", NS, "get", "hpa", "tasks", check=False).returncode == 0)  # fmt: skip
    show(cluster, "get", "hpa", "tasks")

    step("Status conditions")
    show(cluster, "get", "voiceagent", "tasks", "-o",
         'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\\n"}{end}')  # fmt: skip


def answering_pod(cluster: Cluster, room: str) -> str:
    """The agent pod whose log shows a job for `room` (a name and its closing quote, or a prefix)."""
    return next((pod for pod, jobs in install.jobs_by_pod(cluster, room).items() if jobs), "?")


def talk(livekit: LiveKit, cluster: Cluster) -> None:
    step("Talking to the fleet through a real room: the host dispatches task-manager, an agent pod answers")
    identity = f"demo-{secrets.token_hex(3)}"
    room = f"demo-{secrets.token_hex(3)}"
    heard, answer, v2v = asyncio.run(converse(LiveKitCredentials.of(livekit), room, identity))
    print(f'caller said:       "{REQUEST}" (espeak-ng, on a microphone track)')
    print(f'agent heard:       "{heard}" (the offline Deepgram: Whisper tiny.en, in the voicefleet-offline pod)')
    print(f'agent answered:    "{answer}" ({v2v * 1000:.0f} ms after the caller stopped talking)')
    print(f"answered by pod:   {answering_pod(cluster, room + chr(34))}")
    print(f"caller's tasks:    {asyncio.run(tasks_of(cluster, f'participant:{identity}'))} "
          "(the voicefleet-tasks pod, read over MCP with a token for the caller)")  # fmt: skip


async def converse(livekit: LiveKitCredentials, room: str, identity: str) -> tuple[str, str, float]:
    async with Caller(livekit, room, identity) as caller:
        await caller.dispatch(AGENT_NAME)
        await caller.greeting(timeout=SLOW)
        turn = await caller.turn(REQUEST, timeout=SLOW)
        heard = await caller.wait_transcript("user", after=turn.utterance.started_at, timeout=SLOW)
        answer = await caller.wait_transcript("agent", after=turn.utterance.ended_at, timeout=SLOW)
        return heard.text, answer.text, turn.voice_to_voice


async def tasks_of(cluster: Cluster, owner: str) -> list[str]:
    key = install.tasks_token_key(cluster).encode()
    url = f"http://{install.component_pod_ip(cluster, 'tasks')}:8800/mcp"
    client = TasksClient(url, token=caller_token(owner, key, session_id="demo", now=time.time()))
    try:
        return [t.title for t in await client.list_tasks()]
    finally:
        await client.aclose()


def phone(root: Path, livekit: LiveKit, cluster: Cluster) -> None:
    step("Calling the fleet on the phone: pjsua2 → livekit-sip → the trunk the operator's pod made → an agent pod")
    sip_stack = SipStack(root / "sip", livekit=livekit)
    sip = sip_stack.start()
    try:
        print(f"livekit-sip v1.8.0 on {sip.address} (veth); the caller dials from {sip.caller_ip} "
              f"(network namespace {sip.netns})")  # fmt: skip
        cluster.kubectl("-n", NS, "create", "secret", "generic", "sip-auth",
                        f"--from-literal=username={USERNAME}", f"--from-literal=password={PASSWORD}")  # fmt: skip
        channel = {"numbers": [NUMBER], "allowedAddresses": [f"{sip.caller_ip}/32"], "roomPrefix": "call-",
                   "authSecretRef": {"name": "sip-auth"}, "ringingTimeoutSeconds": 120}  # fmt: skip
        show(cluster, "patch", "voiceagent", "tasks", "--type=merge", "-p",
             json.dumps({"spec": {"channels": {"phone": channel}}}))  # fmt: skip
        cluster.kubectl("-n", NS, "wait", "--for=condition=PhoneReady", "voiceagent/tasks", "--timeout=120s",
                        timeout=130)  # fmt: skip
        print(f"PhoneReady: {field(cluster, 'voiceagent', 'tasks', '{.status.phone}')}")
        call = Phone(sip, root / "calls").call(NUMBER, username=USERNAME, password=PASSWORD, say=REQUEST,
                                                timeout=SLOW)  # fmt: skip
        print(f"SIP status:        {call.status} {call.reason} (codec {call.codec})")
        if not call.answered or call.recording is None or call.first_audio is None:
            raise RuntimeError(f"the phone call was not answered: {call.describe()}")
        greeting = transcribe(call.recording, call.segment(call.first_audio, call.greeting_end))
        print(f'caller heard:      "{greeting}" ({call.first_audio * 1000:.0f} ms after the INVITE; Whisper)')
        print(f'caller said:       "{REQUEST}" (espeak-ng, as RTP from pjsua2)')
        if call.reply_start is not None:
            reply = transcribe(call.recording, call.segment(call.reply_start, call.reply_end))
            print(f'agent answered:    "{reply}"')
        print(f"answered by pod:   {answering_pod(cluster, 'call-')}")
    finally:
        sip_stack.stop()


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="voicefleet-demo-"))
    started = time.monotonic()
    try:
        run(root)
    except BaseException as error:
        print(f"\ndemo failed: {error}\nlogs kept in {root}", file=sys.stderr)
        down(root)
        return 1
    step("Stopping everything the demo started (pods, node, control plane; the machine as it was)")
    stopped = down(root)
    print(f"stopped: {', '.join(stopped) or 'nothing'}")
    shutil.rmtree(root, ignore_errors=True)
    print(f"\ndemo complete in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
