"""FleetConnected, decided from plain data: ready pods, the pods the fleet channel heard from, refused polls."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.fleetcheck import SHOWN_PODS, AgentPods, Verdict, decide

URL = "http://10.247.0.1:8090"
GRACE = 30.0
NOW = 1000.0


def _decide(ready: dict[str, float], polled: dict[str, float], **kw: Any) -> Verdict | None:
    args: dict[str, Any] = {"name": "tasks", "fleet_url": URL, "refused": None, "now": NOW, "grace": GRACE, **kw}
    return decide(ready=ready, polled=polled, **args)


def test_every_ready_pod_polling_is_true() -> None:
    verdict = _decide({"a": 0.0, "b": 0.0}, {"a": NOW - 5, "b": NOW - 60, "gone": NOW - 1})
    assert verdict is not None and (verdict.status, verdict.reason) == ("True", "PodsPolling")
    assert URL in verdict.message


def test_a_pod_ready_past_the_grace_period_that_never_polled_is_false_naming_it_the_url_and_the_cause() -> None:
    verdict = _decide({"a": 0.0, "b": NOW - GRACE - 1}, {"a": NOW - 5})
    assert verdict is not None and (verdict.status, verdict.reason) == ("False", "PodsNotPolling")
    assert verdict.silent == ("b",)
    assert verdict.message.startswith(f"1 of 2 ready agent pods do not poll the fleet channel at {URL} (b)")
    assert "--fleet-url" in verdict.message and "NetworkPolicy" in verdict.message


def test_a_pod_ready_within_the_grace_period_leaves_the_condition_as_it_is() -> None:
    assert _decide({"a": 0.0, "b": NOW - GRACE + 1}, {"a": NOW - 5}) is None


def test_refused_polls_name_the_token_as_the_cause() -> None:
    verdict = _decide({"a": 0.0}, {}, refused="token")
    assert verdict is not None and (verdict.status, verdict.reason) == ("False", "PollsRefused")
    assert "fleet token" in verdict.message and "tasks-fleet" in verdict.message


def test_no_fleet_url_is_false_whatever_the_pods_do() -> None:
    verdict = _decide({"a": NOW}, {"a": NOW}, fleet_url=None)
    assert verdict is not None and (verdict.status, verdict.reason) == ("False", "NoFleetURL")
    assert "--fleet-url" in verdict.message and verdict.silent == ("a",)


def test_no_ready_pod_is_true_only_when_the_deployment_agrees() -> None:
    verdict = _decide({}, {}, deployment_ready=0)
    assert verdict is not None and verdict.status == "True"
    assert _decide({}, {}, deployment_ready=2) is None  # pods this process has not seen yet (just started)
    assert _decide({}, {}, deployment_ready=None) is None


def test_the_true_message_does_not_change_with_the_pod_count() -> None:
    # a status write is not worth a pod more or less
    one, three = _decide({"a": 0.0}, {"a": NOW}), _decide(dict.fromkeys("abc", 0.0), dict.fromkeys("abc", NOW))
    assert one is not None and three is not None and one.message == three.message


def test_many_silent_pods_are_counted_beyond_the_first_few() -> None:
    ready = {f"p{i:02d}": 0.0 for i in range(SHOWN_PODS + 3)}
    verdict = _decide(ready, {})
    assert verdict is not None and len(verdict.silent) == SHOWN_PODS + 3
    assert "and 3 more" in verdict.message and "p05" not in verdict.message


def _pod(name: str, ready: bool, instance: str | None = "tasks", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "labels": {"app.kubernetes.io/instance": instance}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_agent_pods_keep_when_each_pod_was_first_seen_ready() -> None:
    pods = AgentPods()
    pods.saw(_pod("a", True), deleted=False, now=1.0)
    pods.saw(_pod("a", True), deleted=False, now=5.0)  # still ready: the time it became so stays
    pods.saw(_pod("b", False), deleted=False, now=2.0)
    pods.saw(_pod("x", True, instance=None), deleted=False, now=2.0)
    assert pods.of("ns", "tasks") == {"a": 1.0}
    pods.saw(_pod("a", False), deleted=False, now=6.0)
    pods.saw(_pod("a", True), deleted=False, now=7.0)  # ready again: a new grace period
    assert pods.of("ns", "tasks") == {"a": 7.0}
    pods.saw(_pod("a", True, deleting=True), deleted=False, now=8.0)  # draining pods leave the fleet
    assert pods.of("ns", "tasks") == {}
    pods.saw(_pod("c", True), deleted=False, now=9.0)
    pods.saw(_pod("c", True), deleted=True, now=10.0)
    assert pods.ready == {}
