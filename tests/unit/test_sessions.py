"""Live sessions and session-aware scale-in, decided from plain data: the custom metrics API's answer, the pods the
watch shows, the time. The service layer writes only what changed and backs off a missing metrics API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voicefleet_operator.kube import MetricsUnavailable
from voicefleet_operator.scalein import BACKOFF_MAX_S, BACKOFF_MIN_S, FLEET_SELECTOR, SHARED_READ_S, FleetSessions
from voicefleet_operator.sessions import DELETION_COST, AgentPodIndex, PodSeen, deletion_costs, quantity, tally


def _metric(**pods: str) -> dict[str, Any]:
    items = [
        {"describedObject": {"kind": "Pod", "namespace": "voice", "name": name}, "metricName": "x", "value": value}
        for name, value in pods.items()
    ]
    return {"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta1", "items": items}


def _pod(name: str, agent: str = "tasks", cost: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "voice", "labels": {"app.kubernetes.io/instance": agent}}
    if cost is not None:
        meta["annotations"] = {DELETION_COST: cost}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T12:00:00Z"
    return {"metadata": meta}


@pytest.mark.parametrize(
    ("text", "number"), [("0", 0), ("3", 3), ("1500m", 2), ("2500m", 2), ("999m", 1), ("1k", 1000)]
)
def test_quantities_the_metrics_api_writes_become_whole_sessions(text: str, number: int) -> None:
    assert quantity(text) == number


def test_a_tally_sums_sessions_per_pod_and_counts_the_pods_at_max_sessions() -> None:
    counted = tally(_metric(a="2", b="2", c="0", d="1"), max_sessions=2)
    assert (counted.sessions, dict(counted.per_pod), counted.full) == (5, {"a": 2, "b": 2, "c": 0, "d": 1}, 2)
    assert counted.status() == {"sessions": 5, "fullPods": 2}


def test_without_max_sessions_no_pod_is_counted_full_and_an_empty_list_is_zero_sessions() -> None:
    assert tally(_metric(a="3"), max_sessions=None).status() == {"sessions": 3}
    assert tally({"items": []}, max_sessions=2).status() == {"sessions": 0, "fullPods": 0}


def test_deletion_costs_are_written_only_where_they_differ_and_idle_pods_need_no_write() -> None:
    pods = {"busy": PodSeen("tasks", None, False), "idle": PodSeen("tasks", None, False),
            "same": PodSeen("tasks", "1", False), "was": PodSeen("tasks", "2", False)}  # fmt: skip
    writes = deletion_costs({"busy": 2, "idle": 0, "same": 1, "was": 0}, pods, {}, now=100.0)
    assert writes == {"busy": 2, "was": 0}


def test_a_pods_cost_is_written_at_most_once_per_interval() -> None:
    pods = {"a": PodSeen("tasks", "1", False)}
    assert deletion_costs({"a": 2}, pods, {"a": 95.0}, now=100.0, interval=15.0) == {}
    assert deletion_costs({"a": 2}, pods, {"a": 85.0}, now=100.0, interval=15.0) == {"a": 2}


def test_terminating_pods_and_pods_the_watch_has_not_shown_get_no_cost() -> None:
    pods = {"going": PodSeen("tasks", None, True)}
    assert deletion_costs({"going": 3, "unknown": 1}, pods, {}, now=0.0) == {}


def test_the_pod_index_keeps_each_agents_pods_costs_and_draining_count() -> None:
    index = AgentPodIndex()
    index.saw(_pod("a", cost="2"), deleted=False)
    index.saw(_pod("b", deleting=True), deleted=False)
    index.saw(_pod("x", agent="other"), deleted=False)
    assert set(index.of("voice", "tasks")) == {"a", "b"} and index.of("voice", "tasks")["a"].cost == "2"
    assert index.draining("voice", "tasks") == 1
    index.saw(_pod("b", deleting=True), deleted=True)
    assert index.draining("voice", "tasks") == 0


class Recorder:
    """The storage boundary of FleetSessions, recording what it is asked to write."""

    def __init__(self) -> None:
        self.answer: dict[str, Any] | Exception = _metric()
        self.reads: list[tuple[str, str, str]] = []
        self.status: list[dict[str, Any]] = []
        self.annotations: list[tuple[str, dict[str, str]]] = []

    async def pod_metric(self, namespace: str, metric: str, selector: str) -> dict[str, Any]:
        self.reads.append((namespace, metric, selector))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.annotations.append((name, annotations))

    async def patch_status(self, res: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status.append(status)


def test_the_service_writes_status_and_costs_once_and_nothing_at_rest() -> None:
    store, now = Recorder(), [1000.0]
    fleet = FleetSessions(store, clock=lambda: now[0], cost_interval=15.0)
    for name in ("a", "b", "c"):
        fleet.saw_pod(_pod(name), deleted=False)
    store.answer = _metric(a="2", b="1", c="0")
    asyncio.run(fleet.tick("voice", "tasks", 2, {}))
    assert store.reads == [("voice", "voicefleet_agent_active_sessions", FLEET_SELECTOR)]
    assert store.status == [{"sessions": 3, "fullPods": 1, "draining": 0}]
    assert sorted(store.annotations) == [("a", {DELETION_COST: "2"}), ("b", {DELETION_COST: "1"})]
    # the watch echoes the writes; the next ticks at rest write nothing
    fleet.saw_pod(_pod("a", cost="2"), deleted=False)
    fleet.saw_pod(_pod("b", cost="1"), deleted=False)
    for _ in range(3):
        now[0] += 10
        asyncio.run(fleet.tick("voice", "tasks", 2, {"sessions": 3, "fullPods": 1, "draining": 0}))
    assert len(store.status) == 1 and len(store.annotations) == 2


def test_one_read_of_the_namespace_serves_every_agents_tick_in_its_window_each_counting_only_its_pods() -> None:
    store, now = Recorder(), [1000.0]
    fleet = FleetSessions(store, clock=lambda: now[0])
    for pod, agent in (("t1", "tasks"), ("t2", "tasks"), ("s1", "sales"), ("q1", "quiet")):
        fleet.saw_pod(_pod(pod, agent=agent), deleted=False)
    # "x1" belongs to no VoiceAgent the pod watch has shown: nobody counts it
    store.answer = _metric(t1="2", t2="1", s1="4", x1="7")

    async def every_agent_ticks_at_once() -> list[Any]:
        return await asyncio.gather(*(fleet.tick("voice", a, 4, {}) for a in ("tasks", "sales", "quiet")))

    tasks, sales, quiet = asyncio.run(every_agent_ticks_at_once())
    assert len(store.reads) == 1  # the three timers waited for one read
    assert (tasks.sessions, tasks.per_pod) == (3, {"t1": 2, "t2": 1})
    assert (sales.sessions, sales.full) == (4, 1)
    assert quiet.sessions == 0 and quiet.per_pod == {}
    now[0] += SHARED_READ_S - 0.1
    asyncio.run(fleet.tick("voice", "tasks", 4, {}))
    assert len(store.reads) == 1  # still the same window
    now[0] += 0.1
    store.answer = _metric(t1="0", t2="1")
    assert asyncio.run(fleet.tick("voice", "tasks", 4, {})).sessions == 1
    assert len(store.reads) == 2


def test_a_failed_namespace_read_is_not_kept_for_the_next_tick() -> None:
    store, now = Recorder(), [0.0]
    fleet = FleetSessions(store, clock=lambda: now[0], shared_for=60.0)
    fleet.saw_pod(_pod("t1"), deleted=False)
    store.answer = RuntimeError("connection reset")
    with pytest.raises(RuntimeError):
        asyncio.run(fleet.tick("voice", "tasks", None, {}))
    store.answer = _metric(t1="1")
    assert asyncio.run(fleet.tick("voice", "tasks", None, {})).sessions == 1
    assert len(store.reads) == 2


def test_a_missing_metrics_api_is_read_once_per_backoff_window_for_all_agents_and_backs_off_to_the_cap() -> None:
    store, now = Recorder(), [0.0]
    store.answer = MetricsUnavailable("404 page not found")
    fleet = FleetSessions(store, clock=lambda: now[0])
    for agent in ("one", "two", "three"):
        assert asyncio.run(fleet.tick("voice", agent, None, {})) is None
    assert len(store.reads) == 1  # the first failure holds back every agent's timer
    waits = []
    for _ in range(8):
        before = len(store.reads)
        while len(store.reads) == before:
            now[0] += 1
            asyncio.run(fleet.tick("voice", "one", None, {}))
        waits.append(fleet._backoff)
    assert waits[0] == 2 * BACKOFF_MIN_S and waits[-1] == BACKOFF_MAX_S
    assert store.status == [] and store.annotations == []
    store.answer = _metric(a="0")
    now[0] += BACKOFF_MAX_S
    assert asyncio.run(fleet.tick("voice", "one", None, {})) is not None
    assert store.status == [{"sessions": 0, "draining": 0}]
