"""Pure: live sessions per VoiceAgent and session-aware scale-in, from the metric the HPA reads.

The custom metrics API (`custom.metrics.k8s.io`, served by prometheus-adapter from the agents' own gauge) answers a
MetricValueList: one item per agent pod with its active sessions. From it come the VoiceAgent's `status.sessions`
and its count of full pods, and each pod's `controller.kubernetes.io/pod-deletion-cost`: the ReplicaSet controller
deletes the pods of lowest cost first when the HPA scales in, so idle pods go before busy ones. No clock and no
I/O here: `now` is monotonic seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from voicefleet_operator.desired import INSTANCE_LABEL

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# A pod's cost is written at most this often (Karpenter rate-limits the same annotation to once a minute): session
# counts move with every call, and each write is an API request and a pod watch event for every watcher.
DEFAULT_COST_INTERVAL_S = 15.0

_SUFFIXES = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(1000), "M": Decimal(10**6)}


def quantity(value: str) -> int:
    """A Kubernetes quantity as the metrics API writes a gauge ("3", "1500m") → the nearest whole number."""
    text = value.strip()
    suffix = text[-1] if text and text[-1] in "mkM" else ""
    try:
        number = Decimal(text[: len(text) - len(suffix)]) * _SUFFIXES[suffix]
    except InvalidOperation as error:
        raise ValueError(f"not a quantity: {value!r}") from error
    return max(0, int(number.to_integral_value()))


@dataclass(frozen=True)
class Tally:
    """A VoiceAgent's live sessions: in all, per pod, and how many pods are at maxSessionsPerPod (None: unset)."""

    sessions: int
    per_pod: Mapping[str, int]
    full: int | None

    def status(self) -> dict[str, int]:
        """The VoiceAgent status fields this tally fills (camelCase, as the CRD has them)."""
        shown = {"sessions": self.sessions}
        if self.full is not None:
            shown["fullPods"] = self.full
        return shown


def tally(metric_list: Mapping[str, Any], max_sessions: int | None) -> Tally:
    """The custom metrics API's MetricValueList for a VoiceAgent's pods → its Tally."""
    per_pod: dict[str, int] = {}
    for item in metric_list.get("items") or []:
        described = item.get("describedObject") or {}
        if described.get("kind", "Pod") != "Pod" or not described.get("name"):
            continue
        per_pod[str(described["name"])] = quantity(str(item.get("value", "0")))
    full = None if max_sessions is None else sum(1 for n in per_pod.values() if n >= max_sessions)
    return Tally(sessions=sum(per_pod.values()), per_pod=per_pod, full=full)


@dataclass(frozen=True)
class PodSeen:
    """An agent pod as the pod watch last showed it."""

    voiceagent: str
    cost: str | None  # the deletion-cost annotation, None when absent (the ReplicaSet controller reads it as 0)
    terminating: bool


@dataclass
class AgentPodIndex:
    """Every agent pod from the pod watch, by namespace: its VoiceAgent, deletion cost and whether it terminates."""

    pods: dict[str, dict[str, PodSeen]] = field(default_factory=dict)

    def saw(self, pod: Mapping[str, Any], deleted: bool) -> None:
        meta = pod.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        voiceagent = (meta.get("labels") or {}).get(INSTANCE_LABEL)
        in_ns = self.pods.setdefault(namespace, {})
        if deleted or not voiceagent:
            in_ns.pop(name, None)
        else:
            cost = (meta.get("annotations") or {}).get(DELETION_COST)
            in_ns[name] = PodSeen(str(voiceagent), cost, bool(meta.get("deletionTimestamp")))
        if not in_ns:
            del self.pods[namespace]

    def of(self, namespace: str, voiceagent: str) -> dict[str, PodSeen]:
        return {n: p for n, p in self.pods.get(namespace, {}).items() if p.voiceagent == voiceagent}

    def draining(self, namespace: str, voiceagent: str) -> int:
        """Pods of the VoiceAgent that are terminating: finishing their calls, taking no new one."""
        return sum(1 for p in self.of(namespace, voiceagent).values() if p.terminating)


def deletion_costs(
    per_pod: Mapping[str, int],
    pods: Mapping[str, PodSeen],
    last_written: Mapping[str, float],
    now: float,
    interval: float = DEFAULT_COST_INTERVAL_S,
) -> dict[str, int]:
    """The pods whose deletion cost to write now, and the cost: its live sessions. Only pods the watch shows running
    (a terminating pod's cost no longer matters), only when the cost differs from the annotation (absent reads as 0,
    so an idle pod needs no write), and at most once per `interval` per pod."""
    writes = {}
    for name, sessions in per_pod.items():
        seen = pods.get(name)
        if seen is None or seen.terminating:
            continue
        if _cost(seen.cost) == sessions:
            continue
        if now - last_written.get(name, -math.inf) < interval:
            continue
        writes[name] = sessions
    return writes


def _cost(annotation: str | None) -> int | None:
    if annotation is None:
        return 0
    try:
        return int(annotation)
    except ValueError:
        return None  # someone wrote a non-number: ours replaces it
