"""A phone call into the fleet's pods: a pjsua2 caller in its own network namespace dials livekit-sip, whose trunk and
dispatch rule the operator (in its pod) made in LiveKit for the example VoiceAgent's phone channel, and an agent pod
on the real node answers. The VoiceAgent and everything it runs on were installed by docs/install.md
(tests/e2e/conftest.py); this module adds the phone channel as a user would, with `kubectl patch`."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from phonecall import Phone, transcribe
from testground.install import FLEET_NS, agent_pods, jobs_by_pod
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from testground.sip import SipGround, SipStack
from voicefleet_agent import contract
from voicefleet_offline import espeak

# the first test may pay for the ground and the install (package-scoped)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

AGENT_NAME = "task-manager"  # examples/20-voiceagent.yaml
NUMBER, USERNAME, PASSWORD = "+15550100400", "e2e-trunk", "e2e-pass-word"
GREETING_WORDS = ("task", "keep track", "like to do")
ROOM_PREFIX = "call-"


def agent_metrics(ground: NodeGround) -> dict[str, float]:
    """`<pod>/<sample name>{labels}` → value of every agent pod's /metrics, read from the host at the pod IP."""
    samples: dict[str, float] = {}
    for pod in agent_pods(ground.cluster):
        ip = pod["status"].get("podIP")
        if not ip:
            continue
        with urllib.request.urlopen(f"http://{ip}:{contract.METRICS_PORT}/metrics", timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{pod['metadata']['name']}/{s.name}{{{labels}}}"] = s.value
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v for k, v in samples.items() if k.split("/", 1)[1].startswith(name + "{") and all(w in k for w in wanted)
    )


def job_pods(ground: NodeGround) -> dict[str, int]:
    """Agent pod → jobs its log shows for phone rooms."""
    return jobs_by_pod(ground.cluster, ROOM_PREFIX)


@pytest.fixture(scope="module")
def line(installed: NodeGround, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SipGround, Phone]]:
    """livekit-sip for the ground's livekit-server, and the example VoiceAgent with a phone channel for its caller."""
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")
    root: Path = tmp_path_factory.mktemp("phone")
    stack = SipStack(root / "sip", livekit=installed.livekit)
    sip = stack.start()
    cluster = installed.cluster
    try:
        cluster.kubectl("-n", FLEET_NS, "create", "secret", "generic", "sip-auth",
                        f"--from-literal=username={USERNAME}", f"--from-literal=password={PASSWORD}")  # fmt: skip
        channel = {"numbers": [NUMBER], "allowedAddresses": [f"{sip.caller_ip}/32"], "roomPrefix": ROOM_PREFIX,
                   "authSecretRef": {"name": "sip-auth"}, "ringingTimeoutSeconds": 120}  # fmt: skip
        cluster.kubectl("-n", FLEET_NS, "patch", "voiceagent", "tasks", "--type=merge", "-p",
                        json.dumps({"spec": {"channels": {"phone": channel}}}))  # fmt: skip
        cluster.kubectl("-n", FLEET_NS, "wait", "--for=condition=PhoneReady", "voiceagent/tasks", "--timeout=120s",
                        timeout=130)  # fmt: skip
        yield sip, Phone(sip, root / "calls")
    finally:
        cluster.kubectl("-n", FLEET_NS, "patch", "voiceagent", "tasks", "--type=json",
                        "-p", '[{"op": "remove", "path": "/spec/channels/phone"}]', check=False)  # fmt: skip
        stack.stop()


def test_a_phone_call_is_answered_by_an_agent_pod_through_the_trunk_the_operator_pod_made(
    installed: NodeGround, line: tuple[SipGround, Phone]
) -> None:
    _, phone = line
    jobs_before = job_pods(installed)
    hung_up = total(agent_metrics(installed), contract.PHONE_CALLS, agent=AGENT_NAME, outcome="caller_hung_up")

    call = phone.call(NUMBER, username=USERNAME, password=PASSWORD, say="Add buy milk to my tasks", timeout=240)

    assert call.answered, call.describe()
    assert call.recording is not None and call.first_audio is not None, call.describe()
    greeting = transcribe(call.recording, call.segment(call.first_audio, call.greeting_end)).lower()
    assert any(words in greeting for words in GREETING_WORDS), f"greeting heard as {greeting!r}"
    assert call.reply_start is not None, call.describe()
    reply = transcribe(call.recording, call.segment(call.reply_start, call.reply_end)).lower()
    assert "add" in reply or "milk" in reply, f"reply heard as {reply!r}"
    # one agent pod took the call's job (its log), and counts the call as ended by the caller's hang-up
    jobs_after = job_pods(installed)
    took = [pod for pod, n in jobs_after.items() if n > jobs_before.get(pod, 0)]
    assert len(took) == 1, (jobs_before, jobs_after)
    wait_for("the pod counting the call as hung up by the caller",
             lambda: total(agent_metrics(installed), contract.PHONE_CALLS, agent=AGENT_NAME,
                           outcome="caller_hung_up") == hung_up + 1, timeout=60)  # fmt: skip


def test_a_wrong_password_is_refused_with_401_before_any_agent_pod(
    installed: NodeGround, line: tuple[SipGround, Phone]
) -> None:
    _, phone = line
    jobs_before = job_pods(installed)
    sessions = total(agent_metrics(installed), contract.SESSIONS_TOTAL, agent=AGENT_NAME)
    call = phone.call(NUMBER, username=USERNAME, password="not-the-password")
    assert call.status == 401 and not call.answered, call.describe()
    assert job_pods(installed) == jobs_before
    assert total(agent_metrics(installed), contract.SESSIONS_TOTAL, agent=AGENT_NAME) == sessions
