"""The browser channel on the fleet's pods: docs/install.md enabled it on the example VoiceAgent (its browser section,
with `livekitUrl` set to LiveKit as the host's browser reaches it), the operator rendered the token service's
Deployment and Service, and chromium on the host opens the talk page that pod serves, through the Service's
ClusterIP (kube-proxy). The page connects, an agent POD greets it, the spoken request adds a task that shows on the
page and lands in the tasks server pod, and the agent pod receives the page's screen share.

UPDATE_SCREENSHOT=1 copies the screenshot to docs/talk-page.png (the README shows it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc
from playwright.async_api import Browser

from testground.install import FLEET_NS, component_pod_ip, jobs_by_pod, pods, public_livekit_url, tasks_token_key
from testground.pytest_plugin import NodeGround
from voicefleet_agent import contract
from voicefleet_agent.session import caller_identity, caller_token
from voicefleet_agent.tasks_client import TasksClient
from voicefleet_operator.models import BROWSER_SUFFIX
from voiceroom.talkpage import chromium, visit

# the first test may pay for the ground and the install (package-scoped)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
VOICEAGENT = "tasks"  # examples/20-voiceagent.yaml
TOKEN_PODS = f"app.kubernetes.io/name=voicefleet-browser,app.kubernetes.io/instance={VOICEAGENT}"
TASKS_PORT = 8800  # the chart's offline.ports.tasks


def report(what: str, value: str) -> None:
    print(f"\n[e2e figure] {what}: {value}", flush=True)


@pytest.fixture(scope="module")
def talk_page(installed: NodeGround) -> str:
    """The talk page as the host reaches it: the token service's Service by its ClusterIP."""
    cluster = installed.cluster
    agent = json.loads(cluster.kubectl("-n", FLEET_NS, "get", "voiceagent", VOICEAGENT, "-o", "json").stdout)
    service = VOICEAGENT + BROWSER_SUFFIX
    assert agent["status"]["browser"]["url"] == f"http://{service}.{FLEET_NS}.svc:{contract.BROWSER_PORT}/"
    cluster_ip = cluster.kubectl("-n", FLEET_NS, "get", "service", service, "-o", "jsonpath={.spec.clusterIP}").stdout
    return f"http://{cluster_ip.strip()}:{contract.BROWSER_PORT}/"


def token_pods(ground: NodeGround) -> list[dict[str, Any]]:
    return [p for p in pods(ground.cluster, FLEET_NS, TOKEN_PODS) if not p["metadata"].get("deletionTimestamp")]


@pytest.fixture
async def browser(talk_page: str, tmp_path: Path) -> AsyncIterator[Browser]:
    async with chromium(tmp_path, secure_origins=[talk_page.rstrip("/")]) as launched:
        yield launched


def test_the_token_service_runs_in_a_pod_and_hands_out_the_public_livekit_url(
    installed: NodeGround, talk_page: str
) -> None:
    (pod,) = token_pods(installed)
    assert pod["spec"]["nodeName"] == installed.node.name and not pod["spec"].get("hostNetwork")
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    request = urllib.request.Request(talk_page + "api/token", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    # the documented livekitUrl, not the example's in-cluster ws://livekit.voicefleet.svc:7880
    assert body["server_url"] == public_livekit_url(installed.livekit)
    assert body["participant_token"].count(".") == 2


async def tasks_in_the_tasks_pod(ground: NodeGround, identity: str) -> list[str]:
    """The page caller's own list, read from the tasks server pod as the agent does (MCP, a token for the caller)."""
    caller = caller_identity(rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, identity, {})
    token = caller_token(caller, tasks_token_key(ground.cluster).encode(), session_id="e2e-check", now=time.time())
    client = TasksClient(f"http://{component_pod_ip(ground.cluster, 'tasks')}:{TASKS_PORT}/mcp", token=token)
    try:
        return [t.title for t in await client.list_tasks()]
    finally:
        await client.aclose()


async def test_the_page_from_the_pod_hears_an_agent_pods_greeting_adds_a_task_and_shares_the_screen_with_it(
    installed: NodeGround, talk_page: str, browser: Browser, tmp_path: Path
) -> None:
    cluster = installed.cluster
    load = os.getloadavg()
    seen = await visit(browser, talk_page, screenshot=tmp_path / "talk-page.png")

    # one agent pod took the page's room (its log), on the real node
    jobs = jobs_by_pod(cluster, seen.room)
    took = [pod for pod, n in jobs.items() if n]
    assert len(took) == 1 and jobs[took[0]] == 1, jobs
    stored = await tasks_in_the_tasks_pod(installed, seen.identity)
    assert len(stored) == 1 and seen.tasks == stored, (stored, seen.tasks)
    assert len(seen.heard) == 1 and stored[0].lower() in seen.heard[0].lower(), (seen.heard, stored)
    # that pod decoded frames of the page's screen-share track
    assert seen.screen["frames"] > 1 and seen.screen["width"] > 0, seen.screen
    log = cluster.kubectl("-n", FLEET_NS, "logs", took[0]).stdout
    assert f"screen share: first video frame from {seen.identity} (" in log, log[-3000:]

    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copyfile(tmp_path / "talk-page.png", ROOT / "docs" / "talk-page.png")
    report("talk page from the token service pod, answered by", took[0])
    report("heard / task", f"{seen.heard[0]!r} / {stored[0]!r}; screen {seen.screen}")
    report("browser on pods", f"{seen.summary()}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
