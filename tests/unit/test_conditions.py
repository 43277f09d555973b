"""Every condition path of the pure status core."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from voicefleet_operator import conditions
from voicefleet_operator.conditions import Problem, Rollout

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def rollout(**changes: Any) -> Rollout:
    base = dict(
        generation=2, observed_generation=2, replicas=2, updated_replicas=2, ready_replicas=2, available_replicas=2
    )
    return Rollout(**{**base, **changes})


def as_map(result: list[tuple[str, str, str, str]]) -> dict[str, tuple[str, str]]:
    return {t: (s, r) for t, s, r, _ in result}


def test_complete_rollout_is_ready() -> None:
    assert as_map(conditions.evaluate(None, rollout(), 2)) == {
        "Ready": ("True", "Available"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }


def test_no_deployment_yet_is_creating() -> None:
    assert as_map(conditions.evaluate(None, None, 1))["Ready"] == ("False", "Creating")
    assert as_map(conditions.evaluate(None, None, 1))["Progressing"] == ("True", "Creating")


def test_rolling_out_is_progressing_not_ready_but_not_degraded_while_serving() -> None:
    result = as_map(conditions.evaluate(None, rollout(updated_replicas=1, replicas=3, ready_replicas=2), 2))
    assert result == {
        "Ready": ("False", "RollingOut"),
        "Progressing": ("True", "RollingOut"),
        "Degraded": ("False", "AsExpected"),
    }


def test_unobserved_generation_is_not_ready() -> None:
    assert as_map(conditions.evaluate(None, rollout(observed_generation=1), 2))["Ready"] == ("False", "RollingOut")


def test_no_ready_pods_is_degraded() -> None:
    result = as_map(conditions.evaluate(None, rollout(ready_replicas=0, available_replicas=0), 2))
    assert result["Degraded"] == ("True", "NoReadyReplicas")


def test_fewer_ready_than_min_replicas_is_scaling_up_not_ready() -> None:
    result = as_map(conditions.evaluate(None, rollout(replicas=3, updated_replicas=3, ready_replicas=1), 3))
    assert result == {
        "Ready": ("False", "InsufficientReplicas"),
        "Progressing": ("True", "ScalingUp"),
        "Degraded": ("False", "AsExpected"),
    }
    # An HPA scale-up above minReplicas keeps the fleet Ready while new pods start.
    scaled = as_map(conditions.evaluate(None, rollout(replicas=6, updated_replicas=6, ready_replicas=3), 2))
    assert scaled["Ready"] == ("True", "Available")


def test_progress_deadline_is_degraded() -> None:
    dep = {
        "metadata": {"generation": 3},
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet x has timed out progressing.",
                }
            ],
        },
    }
    result = conditions.evaluate(None, Rollout.from_deployment(dep), 2)
    assert ("Degraded", "True", "RolloutFailed", "ReplicaSet x has timed out progressing.") in result


def test_problems_set_ready_false_with_their_reason_and_say_the_fleet_is_kept() -> None:
    for reason in ("InvalidSpec", "PolicyNotFound", "SecretNotFound", "ConfigMapNotFound"):
        result = conditions.evaluate(Problem(reason, "details"), rollout(), 2)
        assert as_map(result) == {
            "Ready": ("False", reason),
            "Progressing": ("False", reason),
            "Degraded": ("True", reason),
        }
        assert "running fleet is kept (2 ready)" in result[0][3]


def test_last_transition_time_moves_only_when_status_flips() -> None:
    first = conditions.merge([], conditions.evaluate(None, rollout(), 2), 2, T0)
    later = T0 + timedelta(minutes=5)
    same = conditions.merge(first, conditions.evaluate(None, rollout(), 2), 3, later)
    assert all(c.last_transition_time == T0 for c in same)
    assert all(c.observed_generation == 3 for c in same)
    flipped = conditions.merge(same, conditions.evaluate(Problem("InvalidSpec", "x"), rollout(), 2), 4, later)
    times = {c.type: c.last_transition_time for c in flipped}
    assert times == {"Ready": later, "Progressing": T0, "Degraded": later}


def test_unrelated_conditions_are_kept_and_transitions_report_changes() -> None:
    first = conditions.merge([], [("PhoneReady", "True", "Configured", "")], 1, T0)
    merged = conditions.merge(first, conditions.evaluate(None, rollout(), 2), 1, T0)
    assert {c.type for c in merged} == {"PhoneReady", "Ready", "Progressing", "Degraded"}
    changed = conditions.transitions(first, merged)
    assert {c.type for c in changed} == {"Ready", "Progressing", "Degraded"}
    assert conditions.transitions(merged, merged) == []


def test_messages_longer_than_the_limit_are_cut_so_the_status_patch_is_never_refused() -> None:
    merged = conditions.merge([], [("Ready", "False", "ApplyFailed", "x" * 100_000)], 1, datetime.now(UTC))
    assert len(merged[0].message) == conditions.MESSAGE_MAX
    assert merged[0].message.endswith("…")
