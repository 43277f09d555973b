"""Service layer of live sessions: `status.sessions`, full and draining pods, and session-aware scale-in.

Each VoiceAgent's timer takes its pods' `voicefleet_agent_active_sessions` from the custom metrics API, the source
its HPA scales on, decides with the pure core (`sessions.py`) and writes only what changed: the VoiceAgent's status
and the `controller.kubernetes.io/pod-deletion-cost` of its pods, so that the HPA's scale-in removes idle pods
first. At rest (no call starting or ending, no pod coming or going) it writes nothing. The read is one per namespace,
not one per VoiceAgent: a read of every agent pod in the namespace serves all the timers that tick within
SHARED_READ_S of it (each keeps the pods the pod watch shows as its own), so a namespace of 1,000 VoiceAgents costs
about one read every SHARED_READ_S, not 100 per second. Without the metrics API (no adapter installed, or it is down)
it logs once and backs off for the whole operator: every agent's timer waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from voicefleet_agent import contract
from voicefleet_operator.applied import status_unchanged
from voicefleet_operator.desired import AGENT_POD_NAME
from voicefleet_operator.kube import MetricsUnavailable, VoiceAgentResource
from voicefleet_operator.sessions import (
    DEFAULT_COST_INTERVAL_S,
    DELETION_COST,
    AgentPodIndex,
    Tally,
    deletion_costs,
    tally,
)

log = logging.getLogger(__name__)

METRICS_API_UP = Gauge(
    "voicefleet_operator_custom_metrics_up", "Whether the custom metrics API answered the last read of sessions"
)
COST_WRITES = Counter("voicefleet_operator_deletion_cost_writes_total", "pod-deletion-cost annotations written")
BACKOFF_MIN_S = 15.0
BACKOFF_MAX_S = 60.0  # an adapter installed later is found within a minute
# One read of a namespace's sessions serves every timer that ticks this soon after it (timers tick every 10 s by
# default: a figure at most this old, beside the metrics pipeline's own scrape delay, is what the HPA sees too).
SHARED_READ_S = 5.0
# every agent pod of a namespace, whatever its VoiceAgent
FLEET_SELECTOR = f"app.kubernetes.io/name={AGENT_POD_NAME}"


class SessionsStore(Protocol):
    async def pod_metric(self, namespace: str, metric: str, selector: str) -> dict[str, Any]: ...
    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None: ...
    async def patch_status(
        self, res: Any, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...


class FleetSessions:
    """Live sessions of every VoiceAgent, and the deletion costs of their pods. Fed the agent pods by the pod watch."""

    def __init__(
        self,
        store: SessionsStore,
        clock: Callable[[], float] = time.monotonic,
        cost_interval: float = DEFAULT_COST_INTERVAL_S,
        shared_for: float = SHARED_READ_S,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cost_interval = cost_interval
        self.shared_for = shared_for
        self._reads: dict[str, tuple[float, asyncio.Future[dict[str, Any]]]] = {}  # namespace → (started, read)
        self.pods = AgentPodIndex()
        self._cost_written: dict[str, dict[str, float]] = {}  # namespace → pod → when its cost was last written
        self._down_until = 0.0
        self._backoff = 0.0
        self._down: str | None = None  # why the metrics API does not answer; None while it does

    def saw_pod(self, pod: Mapping[str, Any], deleted: bool) -> None:
        self.pods.saw(pod, deleted)
        if deleted:
            meta = pod.get("metadata") or {}
            written = self._cost_written.get(str(meta.get("namespace", "")), {})
            written.pop(str(meta.get("name", "")), None)

    async def tick(
        self, namespace: str, name: str, max_sessions: int | None, status: Mapping[str, Any]
    ) -> Tally | None:
        """Read the VoiceAgent's sessions; write its status and its pods' deletion costs where they changed.
        None: the metrics API is unavailable (and backed off)."""
        now = self.clock()
        if now < self._down_until:
            return None
        try:
            metric_list = await self._namespace_sessions(namespace, now)
        except MetricsUnavailable as error:
            self._unavailable(now, str(error))
            return None
        if self._down is not None:
            log.info("The custom metrics API answers again: status.sessions and pod deletion costs are kept")
        self._down, self._backoff = None, 0.0
        METRICS_API_UP.set(1)
        mine = self.pods.of(namespace, name)
        items = [i for i in metric_list.get("items") or [] if (i.get("describedObject") or {}).get("name") in mine]
        counted = tally({"items": items}, max_sessions)
        shown: dict[str, Any] = {**counted.status(), "draining": self.pods.draining(namespace, name)}
        if not status_unchanged(dict(status), shown):
            await self.store.patch_status(VoiceAgentResource, namespace, name, shown)
        written = self._cost_written.setdefault(namespace, {})
        pods = self.pods.of(namespace, name)
        for pod, cost in deletion_costs(counted.per_pod, pods, written, now, self.cost_interval).items():
            await self.store.annotate_pod(namespace, pod, {DELETION_COST: str(cost)})
            written[pod] = now
            COST_WRITES.inc()
        return counted

    async def _namespace_sessions(self, namespace: str, now: float) -> dict[str, Any]:
        """Every agent pod's sessions in the namespace: the read started within `shared_for`, or a new one. The
        timers that tick while it runs wait for that one read; a failed read is not kept."""
        held = self._reads.get(namespace)
        if held is None or now - held[0] >= self.shared_for:
            read = asyncio.ensure_future(self.store.pod_metric(namespace, contract.ACTIVE_SESSIONS, FLEET_SELECTOR))
            held = self._reads[namespace] = (now, read)
        try:
            # shielded: one timer cancelled (its VoiceAgent deleted, the operator stopping) cancels no other's wait
            return await asyncio.shield(held[1])
        except Exception:
            if self._reads.get(namespace) is held:
                del self._reads[namespace]
            raise

    def _unavailable(self, now: float, why: str) -> None:
        if now < self._down_until:
            return  # another agent's read in the same window failed too: one backoff step per window
        self._backoff = min(max(2 * self._backoff, BACKOFF_MIN_S), BACKOFF_MAX_S)
        self._down_until = now + self._backoff
        if self._down is None:
            log.warning(
                "The custom metrics API (custom.metrics.k8s.io, e.g. prometheus-adapter) does not answer: %s. "
                "status.sessions and the agent pods' deletion costs are not kept until it does (retried with "
                "backoff up to %.0f s); the HPA cannot scale on sessions either.",
                why,
                BACKOFF_MAX_S,
            )
        self._down = why
        METRICS_API_UP.set(0)
