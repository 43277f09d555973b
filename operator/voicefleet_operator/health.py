"""Pure: provider health with hysteresis, and the choice of the provider each modality uses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from voicefleet_operator.models import FailbackSpec, HealthCheckSpec


@dataclass(frozen=True)
class Observation:
    """One synthetic probe, or one interval of passive fleet signals."""

    ok: bool
    at: datetime
    latency_ms: float | None = None
    error: str = ""
    source: str = "probe"  # probe | fleet
    slow: bool = False  # no answer before the deadline (a latency failure, not an error)


@dataclass(frozen=True)
class ProviderHealth:
    """Health of one provider. Unknown providers start healthy: a fresh policy must not fail over at once."""

    healthy: bool = True
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    since: datetime | None = None
    last_latency_ms: float | None = None
    last_error: str = ""
    last_probe: datetime | None = None
    slow: bool = False  # the latest failure was latency alone: an answer over the threshold, or none in time


# while a provider is suspect (failed, not yet unhealthy), or agents report errors from it, probe again this soon
# instead of a whole interval later
CONFIRM_INTERVAL_S = 0.5
# a probe still unanswered after this share of its deadline is late: a slow or hanging provider shows itself here,
# and the confirming probes start beside it instead of after it has failed
LATE_SHARE = 0.5


def probe_deadline(check: HealthCheckSpec) -> float:
    """Seconds a probe may run: the timeout, or the latency threshold when that is shorter (an answer slower than
    the threshold fails anyway, so waiting for it only delays detection)."""
    return min(float(check.timeout_seconds), check.latency_threshold_ms / 1000)


def suspect(health: ProviderHealth) -> bool:
    """Failed lately but not (yet) unhealthy: the hysteresis is gathering its failures in a row."""
    return health.healthy and health.consecutive_failures > 0


def probe_wait(
    check: HealthCheckSpec,
    health: ProviderHealth,
    last_started: float | None,
    running: Sequence[float],
    now: float,
    reported: bool = False,
    last_ended: float | None = None,
) -> float | None:
    """Seconds until the provider's next probe should start (0: now), None while no further probe may start;
    ``running``: when the probes still running started, ``last_ended``: when the latest one ended.

    A settled provider is probed ``intervalSeconds`` after its last probe ended, one probe at a time (a slow backend
    is never probed back to back). A suspect one, or one whose probe is late (unanswered after LATE_SHARE of the
    deadline), is probed every CONFIRM_INTERVAL_S without waiting for a slow probe to end (beside a late probe, at
    once), at most as many at once as failures are still missing: ``failureThreshold`` failures in a row still
    decide (each probe slower than ``latencyThresholdMs`` is one failure), they are only gathered sooner. Errors
    reported by the fleet's agents bring the next probe forward the same way (a hint: only the probes count)."""
    late_at = min(running, default=math.inf) + LATE_SHARE * probe_deadline(check)
    late = health.healthy and now >= late_at
    hurried = suspect(health) or late
    room = max(1, check.failure_threshold - health.consecutive_failures) if hurried else 1
    if len(running) >= room:
        # a settled provider's probe in flight: look again when it turns late (if it has not answered by then)
        return max(0.0, late_at - now) if health.healthy and not hurried else None
    if last_started is None or late:
        # beside a late probe the missing confirmations start together: each must itself run past the deadline
        # to count, so spacing them out would only add to the time a slow provider takes to be confirmed
        return 0.0
    if hurried or reported:
        return max(0.0, last_started + CONFIRM_INTERVAL_S - now)
    since = max(last_started, last_ended or last_started)
    return max(0.0, since + check.interval_seconds - now)


def failed(observation: Observation, check: HealthCheckSpec) -> bool:
    return not observation.ok or too_slow(observation, check)


def too_slow(observation: Observation, check: HealthCheckSpec) -> bool:
    """Failed on latency alone: answered over the threshold, or not before the deadline."""
    late = observation.latency_ms is not None and observation.latency_ms > check.latency_threshold_ms
    return observation.slow or (observation.ok and late)


def observe(health: ProviderHealth, observation: Observation, check: HealthCheckSpec) -> ProviderHealth:
    """Fold one observation in: `failureThreshold` failures in a row mark it unhealthy, `recoveryThreshold`
    successes in a row mark it healthy again; anything in between keeps the current verdict (no flapping)."""
    bad = failed(observation, check)
    failures = health.consecutive_failures + 1 if bad else 0
    successes = 0 if bad else health.consecutive_successes + 1
    healthy = failures < check.failure_threshold if health.healthy else successes >= check.recovery_threshold
    error = observation.error or (f"{observation.latency_ms:.0f} ms is over the threshold" if bad else "")
    return replace(
        health,
        healthy=healthy,
        consecutive_failures=failures,
        consecutive_successes=successes,
        since=observation.at if healthy != health.healthy or health.since is None else health.since,
        last_latency_ms=observation.latency_ms if observation.source == "probe" else health.last_latency_ms,
        last_error=error if bad else health.last_error if not healthy else "",
        last_probe=observation.at if observation.source == "probe" else health.last_probe,
        slow=bad and too_slow(observation, check),
    )


def combine(probes: ProviderHealth, fleet: ProviderHealth) -> ProviderHealth:
    """The verdict from both signals, each with its own hysteresis: unhealthy when either says so. Kept apart so
    that a passing probe does not erase the errors the fleet keeps seeing, nor a quiet fleet a failing probe."""
    if probes.healthy and fleet.healthy:
        changes = [s for s in (probes.since, fleet.since) if s is not None]
        return replace(probes, since=max(changes) if changes else None)
    failing = [h for h in (probes, fleet) if not h.healthy]
    return replace(
        probes,
        healthy=False,
        consecutive_failures=max(probes.consecutive_failures, fleet.consecutive_failures),
        consecutive_successes=min(probes.consecutive_successes, fleet.consecutive_successes),
        since=min((h.since for h in failing if h.since is not None), default=None),
        last_error="; ".join(h.last_error for h in failing if h.last_error),
        slow=all(h.slow for h in failing),
    )


def fleet_observation(agents: int, agents_with_errors: int, at: datetime, provider: str) -> Observation | None:
    """Passive signal: the provider failed this interval when at least a fifth of the reporting agents saw errors
    from it. None when no agent reported."""
    if agents == 0:
        return None
    if agents_with_errors >= max(1, math.ceil(agents / 5)):
        return Observation(False, at, error=f"{agents_with_errors}/{agents} agents report {provider} errors",
                           source="fleet")  # fmt: skip
    return Observation(True, at, source="fleet")


@dataclass(frozen=True)
class Choice:
    provider: str
    reason: str  # Override | Preferred | FailedOver | FailedBack | Holding | NoHealthyProvider


def choose(
    chain: list[str],
    health: dict[str, ProviderHealth],
    current: str | None,
    override: str | None,
    failback: FailbackSpec,
    now: datetime,
) -> Choice:
    """The provider a modality should use now."""
    if override:
        return Choice(override, "Override")
    states = {name: health.get(name, ProviderHealth()) for name in chain}
    healthy = [name for name in chain if states[name].healthy]
    if current not in chain:
        current = None
    if not healthy:
        # Nothing to gain from any choice: fall back to the declared preference, so handing back is predictable.
        return Choice(chain[0], "NoHealthyProvider")
    best = healthy[0]
    if current is None:
        return Choice(best, "Preferred" if best == chain[0] else "FailedOver")
    if current not in healthy:
        # Move only to a provider whose latest check passed: when the others are slow too (a loaded machine, the
        # operator's own network), moving the fleet gains nothing and would flap. Only when the provider in use
        # fails outright (refused, 5xx, agents' errors) is a fallback that is merely slow better than it.
        outright = not states[current].slow
        target = next((n for n in healthy if not suspect(states[n]) or (outright and states[n].slow)), None)
        if target is None:
            return Choice(current, "Preferred" if current == chain[0] else "FailedOver")
        return Choice(target, "FailedOver")
    if chain.index(best) < chain.index(current):
        since = states[best].since
        held = since is None or now - since >= timedelta(seconds=failback.hold_seconds)
        if failback.mode == "Automatic" and held:
            return Choice(best, "FailedBack")
        return Choice(current, "Holding")
    return Choice(current, "Preferred" if current == chain[0] else "FailedOver")
