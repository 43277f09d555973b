"""FleetConnected against the real control plane: kwok agent pods are Ready and never poll the fleet channel, real
follower processes poll it for them (with the VoiceAgent's token, or a wrong one).

The session's operator runs with a short grace period (FLEET_GRACE_SECONDS, tests/conftest.py)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testground import secret_scan
from testground.operator import Namespace, OperatorProcess, load_examples, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
POLICY = "default"  # examples/: VoiceAgent tasks follows ProviderPolicy default


def _ready_pods(ns: Namespace) -> list[str]:
    found = json.loads(ns.kubectl("get", "pods", "-l", "app.kubernetes.io/instance=tasks", "-o", "json").stdout)
    return sorted(
        p["metadata"]["name"]
        for p in found["items"]
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    )


def _events(ns: Namespace, reason: str) -> list[dict[str, str]]:
    found = ns.kubectl("get", "events", "--field-selector", f"involvedObject.name=tasks,reason={reason}", "-o", "json")
    return list(json.loads(found.stdout)["items"])


def _gauge(operator: OperatorProcess, ns: Namespace) -> float | None:
    series = f'voicefleet_operator_fleet_pods_not_polling{{namespace="{ns.name}",voiceagent="tasks"}}'
    lines = [line for line in operator.metrics().splitlines() if line.startswith(series)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else None


@pytest.fixture
def fleet(ns: Namespace) -> Namespace:
    """The example fleet, Ready, with its pods (two on kwok)."""
    assert ns.apply(*load_examples(ROOT / "examples")).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    return ns


@pytest.fixture
def followers(operator: OperatorProcess, tmp_path: Path) -> Iterator[Callable[[Namespace, str, str], None]]:
    """Start one follower process (voicefleet_agent's FleetFollower) per pod, speaking for it with `token`."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(ns: Namespace, pod: str, token: str) -> None:
        token_file = tmp_path / f"token-{pod}"
        token_file.write_text(token)
        log = (tmp_path / f"follower-{pod}.log").open("ab")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "failover.follower", operator.fleet_url, ns.name, POLICY, f"{pod}-1",
             str(tmp_path / "switches.log"), "tasks", str(token_file), pod],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=15)


def _at_rest(ns: Namespace, operator: OperatorProcess) -> None:
    """No write to the VoiceAgent while nothing changes: the operator checks every second, in memory, and writes only
    when the verdict moves. (A sleep: what is asserted is that nothing happens.)"""
    version = (ns.get("voiceagent", "tasks") or {})["metadata"]["resourceVersion"]
    time.sleep(2 * float(operator.env["VOICEFLEET_FLEET_GRACE_SECONDS"]) + 2)
    assert (ns.get("voiceagent", "tasks") or {})["metadata"]["resourceVersion"] == version


def _fleet_token(ns: Namespace) -> str:
    encoded = ns.kubectl("get", "secret", "tasks-fleet", "-o", "jsonpath={.data.token}").stdout
    token = base64.b64decode(encoded).decode()
    secret_scan.remember(token)
    return token


def test_ready_pods_that_never_poll_turn_fleet_connected_false_and_polling_them_turns_it_true(
    fleet: Namespace, operator: OperatorProcess, followers: Callable[[Namespace, str, str], None]
) -> None:
    ns = fleet

    def both_silent() -> dict[str, Any]:
        cond = ns.condition("voiceagent", "tasks", "FleetConnected") or {}
        return cond if cond.get("reason") == "PodsNotPolling" and cond["message"].startswith("2 of 2") else {}

    # each pod's grace period runs from when it became ready: the message grows to name the second one
    cond = wait_for("FleetConnected=False naming both pods", both_silent)
    assert cond["status"] == "False"
    pods = _ready_pods(ns)
    assert len(pods) == 2
    assert f"do not poll the fleet channel at {operator.fleet_url} " in cond["message"]
    assert all(pod in cond["message"] for pod in pods), cond["message"]
    assert "--fleet-url" in cond["message"] and "NetworkPolicy" in cond["message"]
    assert ns.condition("voiceagent", "tasks", "Ready")["status"] == "True"  # type: ignore[index]  # serving anyway
    warning = wait_for("a Warning Event PodsNotPolling", lambda: _events(ns, "PodsNotPolling"), timeout=30)
    assert warning[0]["type"] == "Warning" and "FleetConnected=False" in warning[0]["message"]
    assert _gauge(operator, ns) == 2.0
    _at_rest(ns, operator)

    token = _fleet_token(ns)
    for pod in pods:
        followers(ns, pod, token)
    cond = ns.wait_condition("voiceagent", "tasks", "FleetConnected", "True", "PodsPolling")
    assert operator.fleet_url in cond["message"]
    assert wait_for("a Normal Event PodsPolling", lambda: _events(ns, "PodsPolling"), timeout=30)[0]["type"] == "Normal"
    assert _gauge(operator, ns) == 0.0
    assert ns.condition("voiceagent", "tasks", "Ready")["status"] == "True"  # type: ignore[index]
    _at_rest(ns, operator)


def test_polls_with_a_wrong_token_turn_fleet_connected_false_naming_the_token(
    fleet: Namespace, followers: Callable[[Namespace, str, str], None]
) -> None:
    ns = fleet
    for pod in _ready_pods(ns):
        followers(ns, pod, "not-the-fleet-token")
    cond = ns.wait_condition("voiceagent", "tasks", "FleetConnected", "False", "PollsRefused")
    assert "wrong fleet token" in cond["message"] and "tasks-fleet" in cond["message"]
