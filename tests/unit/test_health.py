"""Provider health hysteresis and the choice of provider: the decisions behind a fleet-wide flip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from voicefleet_operator.health import (
    CONFIRM_INTERVAL_S,
    LATE_SHARE,
    Choice,
    Observation,
    ProviderHealth,
    choose,
    combine,
    fleet_observation,
    observe,
    probe_deadline,
    probe_wait,
)
from voicefleet_operator.models import FailbackSpec, HealthCheckSpec

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CHECK = HealthCheckSpec(failure_threshold=3, recovery_threshold=2, latency_threshold_ms=1000)
CHAIN = ["deepgram", "whisper"]
EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "examples" / "10-providerpolicy.yaml"


def example_check() -> HealthCheckSpec:
    """The healthCheck of the example ProviderPolicy, as users apply it."""
    return HealthCheckSpec.model_validate(yaml.safe_load(EXAMPLE_POLICY.read_text())["spec"]["healthCheck"])


def run(health: ProviderHealth, oks: str, start: int = 0) -> ProviderHealth:
    for i, c in enumerate(oks):
        health = observe(health, Observation(c == "+", T0 + timedelta(seconds=start + i), latency_ms=50), CHECK)
    return health


def test_unhealthy_only_after_failure_threshold_failures_in_a_row() -> None:
    assert run(ProviderHealth(), "--").healthy
    down = run(ProviderHealth(), "---")
    assert not down.healthy and down.consecutive_failures == 3 and down.since == T0 + timedelta(seconds=2)


def test_recovery_needs_recovery_threshold_successes_in_a_row() -> None:
    down = run(ProviderHealth(), "---")
    assert not run(down, "+-+", 3).healthy
    back = run(down, "++", 3)
    assert back.healthy and back.since == T0 + timedelta(seconds=4)


def test_a_flapping_provider_never_changes_verdict() -> None:
    health = ProviderHealth()
    for i in range(20):
        health = run(health, "-+", 2 * i)
        assert health.healthy


def test_slow_probe_counts_as_failure() -> None:
    slow = ProviderHealth()
    for i in range(3):
        slow = observe(slow, Observation(True, T0 + timedelta(seconds=i), latency_ms=1500), CHECK)
    assert not slow.healthy and "over the threshold" in slow.last_error


def test_fleet_signal_needs_a_fifth_of_the_agents() -> None:
    assert fleet_observation(0, 0, T0, "deepgram") is None
    assert fleet_observation(200, 39, T0, "deepgram").ok  # type: ignore[union-attr]
    bad = fleet_observation(200, 40, T0, "deepgram")
    assert bad is not None and not bad.ok and "40/200 agents" in bad.error


AUTO = FailbackSpec(mode="Automatic", hold_seconds=60)
MANUAL = FailbackSpec(mode="Manual", hold_seconds=60)


def test_choose_fails_over_to_the_next_healthy_provider() -> None:
    health = {"deepgram": ProviderHealth(healthy=False)}
    choice = choose(CHAIN, health, "deepgram", None, AUTO, T0)
    assert (choice.provider, choice.reason) == ("whisper", "FailedOver")


def test_override_wins_over_health() -> None:
    health = {"whisper": ProviderHealth(healthy=False)}
    assert choose(CHAIN, health, "deepgram", "whisper", AUTO, T0).provider == "whisper"


def test_automatic_failback_waits_for_the_hold_time() -> None:
    health = {"deepgram": ProviderHealth(healthy=True, since=T0)}
    assert choose(CHAIN, health, "whisper", None, AUTO, T0 + timedelta(seconds=30)).reason == "Holding"
    back = choose(CHAIN, health, "whisper", None, AUTO, T0 + timedelta(seconds=60))
    assert (back.provider, back.reason) == ("deepgram", "FailedBack")


def test_manual_failback_stays_on_the_fallback() -> None:
    health = {"deepgram": ProviderHealth(healthy=True, since=T0)}
    assert choose(CHAIN, health, "whisper", None, MANUAL, T0 + timedelta(hours=1)).provider == "whisper"


def test_nothing_healthy_goes_to_the_declared_preference() -> None:
    health = {name: ProviderHealth(healthy=False) for name in CHAIN}
    assert choose(CHAIN, health, "whisper", None, AUTO, T0) == choose(CHAIN, health, "whisper", None, MANUAL, T0)
    assert choose(CHAIN, health, "whisper", None, AUTO, T0).provider == "deepgram"
    assert choose(CHAIN, health, None, None, AUTO, T0).reason == "NoHealthyProvider"


def test_fleet_errors_are_not_erased_by_passing_probes() -> None:
    probes, fleet = ProviderHealth(), ProviderHealth()
    for i in range(3):
        at = T0 + timedelta(seconds=i)
        probes = observe(probes, Observation(True, at, latency_ms=50), CHECK)
        bad = fleet_observation(10, 5, at, "deepgram")
        assert bad is not None
        fleet = observe(fleet, bad, CHECK)
    verdict = combine(probes, fleet)
    assert probes.healthy and not verdict.healthy
    assert "5/10 agents report deepgram errors" in verdict.last_error
    for i in range(3, 5):
        good = fleet_observation(10, 0, T0 + timedelta(seconds=i), "deepgram")
        assert good is not None
        fleet = observe(fleet, good, CHECK)
    assert combine(probes, fleet).healthy


def test_a_failing_probe_is_not_erased_by_a_quiet_fleet() -> None:
    probes = run(ProviderHealth(), "---")
    assert not combine(probes, ProviderHealth()).healthy


def test_a_probe_may_run_no_longer_than_the_latency_threshold() -> None:
    assert probe_deadline(HealthCheckSpec(timeout_seconds=6, latency_threshold_ms=1500)) == 1.5
    assert probe_deadline(HealthCheckSpec(timeout_seconds=1, latency_threshold_ms=1500)) == 1.0


def test_a_suspect_provider_is_probed_again_at_once_a_settled_one_each_interval() -> None:
    check = HealthCheckSpec(interval_seconds=5, failure_threshold=3)
    assert probe_wait(check, ProviderHealth(), None, [], 100.0) == 0  # never probed
    assert probe_wait(check, ProviderHealth(), 100.0, [], 101.0) == 4
    suspect = run(ProviderHealth(), "-")
    assert probe_wait(check, suspect, 100.0, [], 100.2) == pytest.approx(CONFIRM_INTERVAL_S - 0.2)
    # a slow probe still running does not hold the confirmation back: two more may run, not a third
    assert probe_wait(check, suspect, 100.0, [100.0], 100.5) == 0
    assert probe_wait(check, suspect, 100.0, [100.0, 100.0], 100.5) is None
    assert probe_wait(check, run(ProviderHealth(), "---"), 100.0, [], 101.0) == 4  # unhealthy: nothing to confirm


def test_a_settled_provider_is_probed_an_interval_after_its_last_probe_ended_not_back_to_back() -> None:
    check = HealthCheckSpec(interval_seconds=1)
    assert probe_wait(check, ProviderHealth(), 100.0, [], 103.0, last_ended=102.5) == pytest.approx(0.5)


def test_errors_reported_by_agents_bring_the_next_probe_forward() -> None:
    check = HealthCheckSpec(interval_seconds=5)
    assert probe_wait(check, ProviderHealth(), 100.0, [], 100.6, reported=True) == 0
    assert probe_wait(check, ProviderHealth(), 100.0, [], 100.1, reported=True) == pytest.approx(
        CONFIRM_INTERVAL_S - 0.1
    )
    assert probe_wait(check, ProviderHealth(), 100.0, [100.0], 100.6, reported=True) != 0  # one is on its way


def time_to_unhealthy(check: HealthCheckSpec, probe_takes: float) -> float:
    """Seconds from the start of the first probe that meets the fault until the provider is unhealthy, with the
    operator's schedule (probe_wait) and every probe failing after ``probe_takes`` (cut at the deadline)."""
    takes = min(probe_takes, probe_deadline(check))
    health, now, starts = ProviderHealth(), 0.0, []
    last: float | None = None
    while True:
        while (wait := probe_wait(check, health, last, starts, now)) == 0:
            starts.append(now)
            last = now
        ends = min(starts, default=float("inf")) + takes
        if wait is None or ends <= now + wait:
            now = ends
            starts.remove(min(starts))
            health = observe(health, Observation(False, T0, latency_ms=takes * 1000), check)
            if not health.healthy:
                return now
        else:
            now += wait


def test_at_the_example_policys_settings_any_fault_is_confirmed_within_3_s_of_the_fault() -> None:
    check = example_check()
    assert (check.interval_seconds, check.latency_threshold_ms, check.failure_threshold) == (1, 1000, 3)
    # the phase: a fault that begins just after a probe passed is met by the next one an interval later (plus
    # that probe's own answer, a few ms), then the confirmation
    phase = check.interval_seconds + 0.05
    # refused or HTTP 5xx: the probes fail at once, confirmed one after the other
    assert time_to_unhealthy(check, 0.01) <= 2 * CONFIRM_INTERVAL_S + 0.01
    assert phase + time_to_unhealthy(check, 0.01) <= 3.0
    # slow or hanging: each probe is cut at the latency threshold, and the missing confirmations start together
    # beside the first probe once it is late (half its deadline): 0.5 + 1.0 s (1.5 + 1.5 + 0.5 = 3.5 s when
    # confirming after the failure, 19 s before the cut; 2.75 s with the confirmations half a second apart)
    assert time_to_unhealthy(check, 10) == LATE_SHARE * 1.0 + 1.0 == 1.5
    assert phase + time_to_unhealthy(check, 10) <= 3.0
    # the same schedule at the former example's 1.5 s threshold, and at other failure thresholds
    former = check.model_copy(update={"latency_threshold_ms": 1500, "timeout_seconds": 3})
    assert time_to_unhealthy(former, 10) == 0.75 + 1.5
    assert time_to_unhealthy(former.model_copy(update={"failure_threshold": 2}), 10) == 0.75 + 1.5
    assert time_to_unhealthy(former.model_copy(update={"failure_threshold": 1}), 10) == 1.5


def test_a_late_probe_brings_its_confirmations_forward_and_a_prompt_one_adds_no_probe() -> None:
    check = HealthCheckSpec(interval_seconds=5, failure_threshold=3, timeout_seconds=3, latency_threshold_ms=1500)
    healthy = ProviderHealth()
    # in flight and not late yet: no second probe, only a look again when it would turn late
    assert probe_wait(check, healthy, 100.0, [100.0], 100.2) == pytest.approx(0.55)
    # late: the two missing confirmations start now, together, never a fourth at once
    assert probe_wait(check, healthy, 100.0, [100.0], 100.75) == 0
    assert probe_wait(check, healthy, 100.75, [100.0, 100.75], 100.75) == 0
    assert probe_wait(check, healthy, 100.75, [100.0, 100.75, 100.75], 100.8) is None
    # a probe answered in time: the next one an interval after it ended, alone
    assert probe_wait(check, observe(healthy, Observation(True, T0, latency_ms=300), check), 100.0, [], 100.3,
                      last_ended=100.3) == pytest.approx(5.0)  # fmt: skip
    # a suspect provider with no late probe: confirmations a confirm interval apart, not back to back
    assert probe_wait(check, run(healthy, "-"), 100.0, [], 100.1) == pytest.approx(CONFIRM_INTERVAL_S - 0.1)
    # an unhealthy provider is not hurried: its late probe waits for its answer
    assert probe_wait(check, run(healthy, "---"), 100.0, [100.0], 101.0) is None


def test_one_slow_probe_is_not_a_failover_when_two_are_needed() -> None:
    check = HealthCheckSpec(failure_threshold=2, latency_threshold_ms=1500)
    slow = observe(ProviderHealth(), Observation(True, T0, latency_ms=1500.1), check)
    assert slow.healthy and slow.consecutive_failures == 1
    again = observe(slow, Observation(True, T0 + timedelta(seconds=1), latency_ms=300), check)
    assert again.healthy and again.consecutive_failures == 0


def test_no_failover_for_slowness_to_a_provider_that_is_slow_too() -> None:
    """A loaded machine slows every provider: the fleet stays where it is instead of moving to another slow one."""
    check = HealthCheckSpec(failure_threshold=3, latency_threshold_ms=1500)

    def slow(health: ProviderHealth, n: int) -> ProviderHealth:
        for i in range(n):
            health = observe(health, Observation(True, T0 + timedelta(seconds=i), latency_ms=2500), check)
        return health

    health = {"deepgram": slow(ProviderHealth(), 3), "whisper": slow(ProviderHealth(), 1)}
    assert not health["deepgram"].healthy and health["deepgram"].slow and health["whisper"].slow
    assert choose(CHAIN, health, "deepgram", None, AUTO, T0) == Choice("deepgram", "Preferred")
    health["whisper"] = observe(health["whisper"], Observation(True, T0, latency_ms=300), check)
    assert choose(CHAIN, health, "deepgram", None, AUTO, T0) == Choice("whisper", "FailedOver")


def test_a_provider_that_fails_outright_goes_even_to_a_slow_fallback_but_not_to_an_erroring_one() -> None:
    check = HealthCheckSpec(failure_threshold=3, latency_threshold_ms=1500)
    down = run(ProviderHealth(), "---")
    assert not down.healthy and not down.slow
    timed_out = observe(ProviderHealth(), Observation(False, T0, latency_ms=1500, slow=True), check)
    assert choose(CHAIN, {"deepgram": down, "whisper": timed_out}, "deepgram", None, AUTO, T0).provider == "whisper"
    erroring = run(ProviderHealth(), "-")
    assert choose(CHAIN, {"deepgram": down, "whisper": erroring}, "deepgram", None, AUTO, T0).provider == "deepgram"
