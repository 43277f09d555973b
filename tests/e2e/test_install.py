"""Installed as users install it: the shell commands of docs/install.md, run in order on the test ground's real node
(with kube-proxy and cluster DNS), with `REGISTRY=localhost TAG=dev` (what `make images` tags). `examples/` go in
as the document says, unmodified: the agent pods reach the offline providers, the tasks MCP server and LiveKit by
the cluster DNS names the examples hold."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from testground import docrun
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from voicefleet_agent import contract

from .conftest import EXAMPLE_IMAGE, FLEET_NS, INSTALL_DOC, OPERATOR_NS, REGISTRY, SKIPS, TAG, agent_pods

# the first test also runs the install (images, helm, the offline stack's Whisper, agents Ready): a cold one is long
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

RTC_LOOP = Path(__file__).with_name("rtc_loop.py")


def test_the_install_doc_runs_every_command_but_those_that_need_a_registry_prometheus_or_keys() -> None:
    steps = docrun.plan(INSTALL_DOC.read_text(), SKIPS)
    run = "\n".join(s.script for s in steps)
    for command in ("make images", "testground.images load", "helm install voicefleet-crds", "helm install voicefleet",
                    "offline.enabled=true", "kubectl -n voice apply -f examples/00-secrets.yaml",
                    "kubectl -n voice wait --for=condition=Ready voiceagent/tasks",
                    "kubectl -n voice wait --for=condition=FleetConnected voiceagent/tasks",
                    "kubectl -n voice rollout status deployment/tasks-browser"):  # fmt: skip
        assert command in run
    assert "podman push" not in run and "podman tag" in run
    # only the VoiceAgent's image differs from examples/: the document's own sed, a no-op for what make images tags
    assert f"s|{EXAMPLE_IMAGE}|$REGISTRY/voicefleet-agent:$TAG|" in run


def test_operator_runs_in_a_pod_on_the_real_node_with_the_charts_service_account(installed: NodeGround) -> None:
    out = installed.cluster.kubectl("-n", OPERATOR_NS, "get", "pods", "-l", "app.kubernetes.io/component=operator",
                                    "-o", "json")  # fmt: skip
    (pod,) = json.loads(out.stdout)["items"]
    assert pod["spec"]["nodeName"] == installed.node.name
    assert not pod["spec"].get("hostNetwork")
    assert pod["spec"]["serviceAccountName"] == "voicefleet-operator"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0
    assert status["imageID"] and "voicefleet-operator" in status["image"]


def test_examples_become_ready_with_agent_pods_on_the_real_node(installed: NodeGround) -> None:
    pods = agent_pods(installed)
    assert len(pods) >= 2 and all(p["spec"]["nodeName"] == installed.node.name for p in pods)
    assert all(c["ready"] for p in pods for c in p["status"]["containerStatuses"])
    (agent,) = [c for c in pods[0]["spec"]["containers"] if c["name"] == "agent"]
    assert agent["image"] == f"{REGISTRY}/voicefleet-agent:{TAG}"
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env[contract.ENV_LIVEKIT_URL] == "ws://livekit.voicefleet.svc:7880"  # the example's, unchanged


def test_agent_pods_reach_the_providers_tasks_server_livekit_and_fleet_channel_by_cluster_dns(
    installed: NodeGround,
) -> None:
    pod = agent_pods(installed)[0]["metadata"]["name"]
    script = (
        "import os, urllib.request\n"
        "def get(url):\n"
        "    with urllib.request.urlopen(url, timeout=10) as r: return r.status\n"
        f"fleet = os.environ['{contract.ENV_FLEET_URL}']\n"
        "for url in ('http://voicefleet-offline.voicefleet.svc:8790/healthz',\n"
        "            'http://voicefleet-offline.voicefleet.svc:8791/healthz',\n"
        "            'http://voicefleet-offline.voicefleet.svc:8792/healthz',\n"
        "            'http://voicefleet-tasks.voicefleet.svc:8800/healthz',\n"
        "            'http://livekit.voicefleet.svc:7880/', fleet + '/healthz'):\n"
        "    print(url, get(url))\n"
    )
    out = installed.cluster.kubectl("-n", FLEET_NS, "exec", "-i", pod, "-c", "agent", "--", "python", "-",
                                    input=script).stdout  # fmt: skip
    answers = dict(line.rsplit(" ", 1) for line in out.splitlines())
    assert len(answers) == 6 and set(answers.values()) == {"200"}, out
    fleet = next(url for url in answers if url.endswith("/healthz") and ".svc" in url and "operator" in url)
    assert fleet.startswith("http://voicefleet-operator.voicefleet.svc:")


def test_an_agent_pod_sends_and_receives_audio_through_livekit_named_by_its_service(installed: NodeGround) -> None:
    """Media, not only signalling: two participants in the pod, one publishes a tone, the other receives it, over
    the ICE candidates livekit-server offers pods (the pod bridge's gateway)."""
    pod = agent_pods(installed)[0]["metadata"]["name"]
    out = installed.cluster.kubectl("-n", FLEET_NS, "exec", "-i", pod, "-c", "agent", "--", "python", "-",
                                    input=RTC_LOOP.read_text(), timeout=120)  # fmt: skip
    received = json.loads(out.stdout.strip().splitlines()[-1])
    assert received["frames"] >= 50
    assert received["url"] == "ws://livekit.voicefleet.svc:7880"


def test_the_operator_pod_reaches_every_provider_of_the_example_policy_by_its_cluster_dns_name(
    installed: NodeGround,
) -> None:
    """The operator's synthetic probes (from its pod) of the example policy's four providers, in the policy's status.
    Reached means answered: no DNS, connection or HTTP 4xx error. Healthy is a latency verdict too (1.5 s by
    default): the LLM and TTS probes are; the STT probes run faster-whisper in the offline pod and on a loaded 2-core
    machine may be slower, which the status then says truthfully, so only their reachability is asserted."""

    def status() -> dict[str, Any]:
        out = installed.cluster.kubectl("-n", FLEET_NS, "get", "providerpolicy", "default", "-o", "json").stdout
        return dict(json.loads(out).get("status") or {})

    def all_probed() -> list[dict[str, Any]] | None:
        providers = status().get("providers") or []
        return providers if len(providers) == 4 and all(p.get("lastProbe") for p in providers) else None

    providers = wait_for("a probe of every provider in the policy's status", all_probed, timeout=120)
    by_name = {p["name"]: p for p in providers}
    assert set(by_name) == {"deepgram", "whisper", "openai", "cartesia"}
    print(
        "provider probes:",
        {n: (p["healthy"], p.get("lastProbeLatencyMs"), p.get("lastError")) for n, p in by_name.items()},
    )
    # not resolved or not connected (aiohttp's ClientConnector*Error), or refused by the server (HTTP 4xx)
    wrong = {n: p["lastError"] for n, p in by_name.items() if re.search(r"Connector|^HTTP 4", p.get("lastError", ""))}
    assert not wrong
    assert by_name["openai"]["healthy"] and by_name["cartesia"]["healthy"], providers
