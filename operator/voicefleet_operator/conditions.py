"""Pure: observed state → status conditions, per Kubernetes API conventions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from voicefleet_operator.models import Condition

Status = Literal["True", "False", "Unknown"]
MESSAGE_MAX = 2048


@dataclass(frozen=True)
class Problem:
    """Why the spec cannot be reconciled now: InvalidSpec, PolicyNotFound, SecretNotFound, ConfigMapNotFound."""

    reason: str
    message: str


@dataclass(frozen=True)
class Rollout:
    """What the Deployment reports."""

    generation: int
    observed_generation: int
    replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    failure: str | None = None  # message of ProgressDeadlineExceeded / ReplicaFailure

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any]) -> Rollout:
        status = deployment.get("status") or {}
        failure = None
        for cond in status.get("conditions") or []:
            stuck = cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded"
            if stuck or (cond.get("type") == "ReplicaFailure" and cond.get("status") == "True"):
                failure = cond.get("message") or cond.get("reason")
        return cls(
            generation=deployment["metadata"].get("generation", 0),
            observed_generation=status.get("observedGeneration", 0),
            replicas=status.get("replicas", 0),
            updated_replicas=status.get("updatedReplicas", 0),
            ready_replicas=status.get("readyReplicas", 0),
            available_replicas=status.get("availableReplicas", 0),
            failure=failure,
        )

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the current template."""
        return self.observed_generation >= self.generation and self.updated_replicas == self.replicas


def _cond(type_: str, status: Status, reason: str, message: str) -> tuple[str, Status, str, str]:
    return (type_, status, reason, message)


def evaluate(problem: Problem | None, rollout: Rollout | None, min_ready: int) -> list[tuple[str, Status, str, str]]:
    """Ready, Progressing and Degraded as (type, status, reason, message).

    Ready means every pod runs the current spec and at least `min_ready` (minReplicas) of them are ready.
    """
    if problem is not None:
        serving = rollout is not None and rollout.ready_replicas > 0
        kept = f" The running fleet is kept ({rollout.ready_replicas} ready)." if serving and rollout else ""
        return [
            _cond("Ready", "False", problem.reason, problem.message + kept),
            _cond("Progressing", "False", problem.reason, "Waiting for the spec or its references to be fixed."),
            _cond("Degraded", "True", problem.reason, problem.message),
        ]
    if rollout is None:
        return [
            _cond("Ready", "False", "Creating", "The agent Deployment is being created."),
            _cond("Progressing", "True", "Creating", "The agent Deployment is being created."),
            _cond("Degraded", "False", "AsExpected", ""),
        ]
    summary = f"{rollout.ready_replicas}/{rollout.replicas} agent pods ready"
    if rollout.failure:
        degraded = _cond("Degraded", "True", "RolloutFailed", rollout.failure)
    elif rollout.ready_replicas == 0:
        degraded = _cond("Degraded", "True", "NoReadyReplicas", summary)
    else:
        degraded = _cond("Degraded", "False", "AsExpected", summary)
    if not rollout.rolled_out:
        updated = f"{rollout.updated_replicas}/{rollout.replicas} pods updated"
        return [
            _cond("Ready", "False", "RollingOut", f"Rolling out: {updated}, {summary}"),
            _cond("Progressing", "True", "RollingOut", updated),
            degraded,
        ]
    if rollout.ready_replicas < min_ready:
        short = f"{summary}; minReplicas is {min_ready}"
        return [
            _cond("Ready", "False", "InsufficientReplicas", short),
            _cond("Progressing", "True", "ScalingUp", short),
            degraded,
        ]
    return [
        _cond("Ready", "True", "Available", summary),
        _cond("Progressing", "False", "RolloutComplete", summary),
        degraded,
    ]


def merge(
    previous: Sequence[Condition],
    new: Iterable[tuple[str, Status, str, str]],
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Build conditions, keeping lastTransitionTime unless the status flipped. Unrelated conditions are kept."""
    old = {c.type: c for c in previous}
    result: dict[str, Condition] = dict(old)
    for type_, status, reason, message in new:
        if len(message) > MESSAGE_MAX:  # API server messages can quote whole values
            message = message[: MESSAGE_MAX - 1] + "…"
        before = old.get(type_)
        moved = before is None or before.status != status
        result[type_] = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=now if moved or before is None else before.last_transition_time,
            observed_generation=generation,
        )
    return list(result.values())


def transitions(previous: Sequence[Condition], current: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status or reason changed: the ones worth an Event."""
    old = {c.type: (c.status, c.reason) for c in previous}
    return [c for c in current if old.get(c.type) != (c.status, c.reason)]
