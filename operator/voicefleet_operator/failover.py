"""Provider failover, the service layer: probe, fold health, choose, publish to the fleet channel, write status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from voicefleet_operator import conditions, health
from voicefleet_operator.desired import MODALITIES
from voicefleet_operator.fleet import Fleet
from voicefleet_operator.kube import ProviderPolicyResource
from voicefleet_operator.models import (
    ActiveProviders,
    Condition,
    HealthCheckSpec,
    NamedProviderSpec,
    ProviderHealthStatus,
    ProviderPolicy,
    ProviderPolicyStatus,
    RolloutStatus,
    conditions_of,
)

ACTIVE = Gauge("voicefleet_operator_active_provider", "1 for the provider in use", ["namespace", "policy", "modality",
               "provider"])  # fmt: skip
HEALTHY = Gauge("voicefleet_operator_provider_healthy", "1 healthy, 0 not", ["namespace", "policy", "provider"])
FLIPS = Counter("voicefleet_operator_provider_flips_total", "Changes of the provider in use",
                ["namespace", "policy", "modality", "reason"])  # fmt: skip
PROBE_SECONDS = Histogram("voicefleet_operator_probe_seconds", "Synthetic probe latency", ["provider"],
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))  # fmt: skip

log = logging.getLogger(__name__)
# what changes with every probe round and nobody acts on: never a reason to write status on its own (the probe
# metric has every latency); written along when something else changed
_BOOKKEEPING = ("lastProbe", "lastProbeLatencyMs")

Probe = Callable[[NamedProviderSpec, str | None, float], Awaitable[health.Observation]]
Emit = Callable[[dict[str, Any], str, str, str], None]


class Store(Protocol):
    async def provider_policy(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    async def secret_version(self, namespace: str, name: str) -> str | None: ...
    async def patch_status(self, res: Any, namespace: str, name: str, status: dict[str, Any]) -> Any: ...


@dataclass
class _Prober:
    """One provider's probes: when the last one started, and those still running."""

    last_started: float | None = None
    last_ended: float | None = None
    in_flight: dict[asyncio.Task[tuple[health.Observation, float]], float] = field(default_factory=dict)  # → start

    def start(
        self,
        target: tuple[str, str],
        probe: Coroutine[Any, Any, tuple[health.Observation, float]],
        now: float,
        wake: asyncio.Event,
    ) -> None:
        task = asyncio.get_running_loop().create_task(probe, name=f"voicefleet.probe.{target[0]}.{target[1]}")
        task.add_done_callback(lambda _: wake.set())
        self.in_flight[task] = now
        self.last_started = now

    def reap(self) -> list[tuple[health.Observation, float]]:
        """The observations of the probes that ended (a probe never raises: ``probes.probe`` returns failures)."""
        done = [t for t in self.in_flight if t.done()]
        for task in done:
            del self.in_flight[task]
        out = []
        for task in done:
            if task.cancelled():
                continue
            if (error := task.exception()) is not None:
                log.error("probe failed unexpectedly", exc_info=error)
                continue
            out.append(task.result())
            self.last_ended = max(self.last_ended or 0.0, asyncio.get_running_loop().time())
        return out

    def cancel(self) -> None:
        for task in self.in_flight:
            task.cancel()


class Failover:
    """Keeps provider health per ProviderPolicy and the fleet channel in step with the decision."""

    def __init__(self, store: Store, fleet: Fleet, emit: Emit, probe: Probe, clock: Callable[[], Any]) -> None:
        self.store = store
        self.fleet = fleet
        self.emit = emit
        self.probe = probe
        self.clock = clock
        # Per policy, per (modality, provider): the probes' verdict and the fleet's, each with its own hysteresis.
        self.health: dict[tuple[str, str], dict[tuple[str, str], health.ProviderHealth]] = defaultdict(dict)
        self.fleet_health: dict[tuple[str, str], dict[tuple[str, str], health.ProviderHealth]] = defaultdict(dict)
        self.locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._rollout: dict[tuple[str, str], tuple[int, int, int]] = {}
        # the provider keys' Secrets as last read, by resourceVersion (from the Secret watch): a probe every second
        # costs no read of its key until the Secret changes
        self._keys: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}

    async def watch(self, namespace: str, name: str, every_second: Callable[[], Awaitable[None]]) -> None:
        """The policy's daemon until the policy is gone: each provider probed on its own schedule
        (``health.probe_wait``), every observation folded and decided on as it comes in, the fleet's error reports
        folded each interval (and bringing the reported providers' next probe forward), ``every_second`` run
        about every second."""
        key = (namespace, name)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        probers: dict[tuple[str, str], _Prober] = {}
        reported: set[str] = set()
        fleet_due = next_tick = loop.time()
        try:
            while True:
                body = await self.store.provider_policy(namespace, name)
                if body is None:
                    return
                policy = ProviderPolicy.from_body(body)
                check = policy.spec.health_check
                channel = self.fleet.channel(namespace, name)
                channel.alert = wake
                targets: dict[tuple[str, str], NamedProviderSpec] = {
                    (m, p.name): p for m in MODALITIES if (chain := getattr(policy.spec, m)) for p in chain.providers
                }
                reported = (reported | channel.take_reports()) & {target[1] for target in targets}
                wake.clear()
                now = loop.time()
                moved = self._fold_probes(key, probers, check)
                if now >= fleet_due:
                    agents, errors = channel.take_errors(time.monotonic())
                    self._fold_fleet(key, targets, agents, errors, check)
                    fleet_due, moved = now + check.interval_seconds, True
                if moved:
                    await self.decide(body)
                waits = [fleet_due - now]
                for index, (target, spec) in enumerate(targets.items()):
                    if target not in probers:
                        # spread the providers' probes over the interval: providers that share a backend (the
                        # offline stack's one Whisper) do not queue behind each other's probes
                        spread = index * check.interval_seconds / len(targets)
                        probers[target] = _Prober(last_started=now - check.interval_seconds + spread)
                    prober = probers[target]
                    while True:
                        state = self.health[key].get(target, health.ProviderHealth())
                        running = list(prober.in_flight.values())
                        wait = health.probe_wait(
                            check, state, prober.last_started, running, now, spec.name in reported, prober.last_ended
                        )
                        if wait != 0:
                            break
                        reported.discard(spec.name)
                        prober.start(target, self._probe_one(namespace, spec, check), now, wake)
                    if wait is not None:
                        waits.append(wait)
                for gone in probers.keys() - targets.keys():
                    probers.pop(gone).cancel()
                if now >= next_tick:
                    await every_second()
                    next_tick = now + 1
                waits.append(next_tick - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.0, min(waits)))
        finally:
            for prober in probers.values():
                prober.cancel()

    async def _probe_one(
        self, namespace: str, spec: NamedProviderSpec, check: HealthCheckSpec
    ) -> tuple[health.Observation, float]:
        key = None
        if spec.secret_ref:
            data = await self._secret(namespace, spec.secret_ref.name) or {}
            key = data.get(spec.secret_ref.key)
        observation = await self.probe(spec, key, health.probe_deadline(check))
        if observation.latency_ms is not None:
            PROBE_SECONDS.labels(spec.name).observe(observation.latency_ms / 1000)
        return observation, time.monotonic()

    async def _secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A provider key's Secret, read again only when its resourceVersion moved."""
        version = await self.store.secret_version(namespace, name)
        if version is None:
            self._keys.pop((namespace, name), None)
            return None
        kept = self._keys.get((namespace, name))
        if kept is not None and kept[0] == version:
            return kept[1]
        data = await self.store.secret_data(namespace, name)
        if data is not None:
            self._keys[(namespace, name)] = (version, data)
        return data

    def _fold_probes(
        self, key: tuple[str, str], probers: dict[tuple[str, str], _Prober], check: HealthCheckSpec
    ) -> bool:
        """Fold the probes that ended, in the order they ended; True when there were any."""
        ended = [(finished, target, observation) for target, prober in probers.items()
                 for observation, finished in prober.reap()]  # fmt: skip
        probed = self.health[key]
        for _, target, observation in sorted(ended, key=lambda e: e[0]):
            probed[target] = health.observe(probed.get(target, health.ProviderHealth()), observation, check)
        return bool(ended)

    def _fold_fleet(
        self,
        key: tuple[str, str],
        targets: dict[tuple[str, str], NamedProviderSpec],
        agents: int,
        errors: dict[str, int],
        check: HealthCheckSpec,
    ) -> None:
        reported = self.fleet_health[key]
        at = self.clock()
        for target in targets:
            passive = health.fleet_observation(agents, errors.get(target[1], 0), at, target[1])
            if passive is not None:
                reported[target] = health.observe(reported.get(target, health.ProviderHealth()), passive, check)

    def _health(self, namespace: str, name: str, modality: str, provider: str) -> health.ProviderHealth:
        key = (modality, provider)
        probed = self.health[(namespace, name)].get(key, health.ProviderHealth())
        reported = self.fleet_health[(namespace, name)].get(key, health.ProviderHealth())
        return health.combine(probed, reported)

    async def decide(self, body: dict[str, Any]) -> dict[str, str]:
        """Choose per modality, publish a new generation when anything moved, and write the policy's status when
        more than probe bookkeeping changed (a policy at rest is never written). Returns the choice."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        policy = ProviderPolicy.from_body(body)
        status = body.get("status") or {}
        async with self.locks[(namespace, name)]:
            channel = self.fleet.channel(namespace, name)
            if channel.generation == 0 and status.get("providerGeneration"):
                # After a restart: carry on from what the fleet was told before.
                channel.publish(status["providerGeneration"], dict(status.get("active") or {}))
            now = self.clock()
            active: dict[str, str] = {}
            reasons: dict[str, str] = {}
            override = policy.spec.override
            for modality in MODALITIES:
                chain = getattr(policy.spec, modality)
                if chain is None:
                    continue
                names = [p.name for p in chain.providers]
                health_of = {n: self._health(namespace, name, modality, n) for n in names}
                pinned = getattr(override, modality) if override else None
                current = channel.active.get(modality)
                choice = health.choose(names, health_of, current, pinned, policy.spec.failback, now)
                active[modality], reasons[modality] = choice.provider, choice.reason
            generation = channel.generation
            if active != channel.active:
                generation = channel.generation + 1
                for moved, provider in active.items():
                    before = channel.active.get(moved)
                    if before is not None and before != provider:
                        reason = reasons[moved]
                        FLIPS.labels(namespace, name, moved, reason).inc()
                        why = f" ({override.reason})" if override and override.reason and reason == "Override" else ""
                        message = f"{moved}: {before} → {provider}{why}, provider generation {generation}"
                        self.emit(body, "Warning" if reason == "FailedOver" else "Normal", reason, message)
                channel.publish(generation, active)
            for used, provider in active.items():
                for p in getattr(policy.spec, used).providers:
                    ACTIVE.labels(namespace, name, used, p.name).set(1 if p.name == provider else 0)
            new_status = self._status(policy, body, active, reasons, generation, now)
            if not worth_writing(status, new_status):
                return active
        await self.store.patch_status(ProviderPolicyResource, namespace, name, new_status)
        return active

    def _status(
        self,
        policy: ProviderPolicy,
        body: dict[str, Any],
        active: dict[str, str],
        reasons: dict[str, str],
        generation: int,
        now: Any,
    ) -> dict[str, Any]:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        providers = []
        unhealthy = []
        for modality in MODALITIES:
            chain = getattr(policy.spec, modality)
            for p in chain.providers if chain else []:
                state = self._health(namespace, name, modality, p.name)
                HEALTHY.labels(namespace, name, p.name).set(1 if state.healthy else 0)
                if not state.healthy:
                    unhealthy.append(f"{p.name} ({state.last_error or 'failing'})")
                providers.append(ProviderHealthStatus(
                    modality=modality, name=p.name, healthy=state.healthy,
                    consecutive_failures=state.consecutive_failures, last_probe_latency_ms=state.last_latency_ms,
                    last_error=state.last_error, since=state.since, last_probe=state.last_probe,
                ))  # fmt: skip
        moved = [m for m in active if reasons[m] in ("FailedOver", "Holding", "NoHealthyProvider")]
        pinned = [m for m in active if reasons[m] == "Override"]
        found: list[tuple[str, conditions.Status, str, str]] = []
        if unhealthy:
            found.append(("ProviderDegraded", "True", "ProbesFailing", "Unhealthy: " + ", ".join(unhealthy)))
        else:
            found.append(("ProviderDegraded", "False", "AllHealthy", "Every provider passes its health checks"))
        if moved:
            found.append(("FailedOver", "True", "FailedOver", ", ".join(f"{m}={active[m]}" for m in moved)))
        else:
            found.append(("FailedOver", "False", "OnPreferred", "Every modality runs its preferred provider"))
        if pinned:
            in_force = ", ".join(f"{m}={active[m]}" for m in pinned)
            found.append(("Ready", "True", "OverrideActive", f"On-call override in force: {in_force}"))
        else:
            found.append(("Ready", "True", "Accepted", "Provider chains are valid"))
        previous = conditions_of(body)
        current = conditions.merge(previous, found, body["metadata"].get("generation", 0), now)
        self._announce(body, previous, current)
        acknowledged, agents = self.fleet.channel(namespace, name).rollout(time.monotonic())
        self._rollout[(namespace, name)] = (generation, acknowledged, agents)
        summary = " ".join(f"{m}={p}" for m, p in active.items())
        return ProviderPolicyStatus(
            observed_generation=body["metadata"].get("generation", 0),
            conditions=current,
            active=ActiveProviders(**active),
            provider_generation=generation,
            providers=providers,
            rollout=RolloutStatus(
                generation=generation,
                acknowledged=acknowledged,
                agents=agents,
                summary=f"{summary}: {acknowledged}/{agents} agents",
            ),
        ).model_dump(mode="json", by_alias=True, exclude_none=True)

    def _announce(self, body: dict[str, Any], previous: list[Condition], current: list[Condition]) -> None:
        for cond in conditions.transitions(previous, current):
            if cond.type in ("ProviderDegraded", "FailedOver") and (cond.status == "True" or previous):
                kind = "Warning" if cond.status == "True" else "Normal"
                self.emit(body, kind, cond.reason, f"{cond.type}={cond.status}: {cond.message}")

    async def refresh_rollout(self, namespace: str, name: str) -> None:
        """Rewrite status when acknowledgements moved since the last write (cheap; called every second)."""
        key = (namespace, name)
        if key not in self._rollout:
            return
        _, acknowledged, agents = self._rollout[key]
        now_acked, now_agents = self.fleet.channel(namespace, name).rollout(time.monotonic())
        if (now_acked, now_agents) == (acknowledged, agents):
            return
        body = await self.store.provider_policy(namespace, name)
        if body is not None:
            await self.decide(body)

    def forget(self, namespace: str, name: str) -> None:
        self.health.pop((namespace, name), None)
        self.fleet_health.pop((namespace, name), None)
        self._rollout.pop((namespace, name), None)
        # no key outlives its policy in memory (another policy of the namespace reads its own again, once)
        self._keys = {k: v for k, v in self._keys.items() if k[0] != namespace}
        self.fleet.drop(namespace, name)


def worth_writing(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the policy's status changed in what its readers act on. Probe latencies and times change every
    round and matter to nobody reading the policy, so a policy at rest costs no write at all; they are written
    along with any other change (and a provider's first probe is written: it tells that probing runs)."""
    return _without_bookkeeping(old) != _without_bookkeeping(new)


def _without_bookkeeping(status: dict[str, Any]) -> dict[str, Any]:
    """What readers act on: whether a provider fails, not for how many rounds it has (the count of a provider
    that stays down grows every probe), and whether it was probed at all, not when last."""
    providers = [
        {
            **{k: v for k, v in p.items() if k not in _BOOKKEEPING},
            "consecutiveFailures": min(1, p.get("consecutiveFailures", 0)),
            "probed": bool(p.get("lastProbe")),
        }
        for p in status.get("providers") or []
    ]
    return {**status, "providers": providers}
