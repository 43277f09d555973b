"""The service layer: gather inputs, decide with the pure core, write through the storage layer."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from voicefleet_operator import conditions, desired, fleetcheck, installkey
from voicefleet_operator.applied import Applied, key_of, status_unchanged
from voicefleet_operator.failover import Failover
from voicefleet_operator.followers import Change, Followers, follows, view
from voicefleet_operator.kube import VoiceAgentResource, WriteRejected
from voicefleet_operator.models import (
    ActiveProviders,
    BrowserStatus,
    Condition,
    ProviderPolicy,
    VoiceAgent,
    VoiceAgentStatus,
    conditions_of,
)
from voicefleet_operator.telephony import PhoneResult, Telephony

RECONCILES = Counter("voicefleet_operator_reconciles_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram("voicefleet_operator_reconcile_seconds", "Reconcile duration", ["kind"])
SKIPPED_WRITES = Counter("voicefleet_operator_skipped_writes_total", "Writes left out: already in place", ["kind"])
NOT_POLLING = Gauge("voicefleet_operator_fleet_pods_not_polling",
                    "Ready agent pods that do not follow the fleet channel (condition FleetConnected)",
                    ["namespace", "voiceagent"])  # fmt: skip
# A periodic resync of an agent with nothing to do costs no API call; every this many resync periods it is a full
# reconcile anyway (a safety net for watch events lost in a gap).
FULL_RESYNC_PERIODS = 10
FANOUT_CONCURRENCY = 32  # agents of one policy reconciled at once after the policy changed

Emit = Callable[[dict[str, Any], str, str, str], None]  # body, type, reason, message
Clock = Callable[[], datetime]


class Store(Protocol):
    async def voice_agent(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def voice_agents(self, namespace: str) -> list[dict[str, Any]]: ...
    async def provider_policy(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def secret_version(self, namespace: str, name: str) -> str | None: ...
    async def config_map_key(self, namespace: str, name: str, key: str) -> str | None: ...
    async def deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    async def child(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any] | None: ...
    async def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool: ...
    async def patch_status(self, res: Any, namespace: str, name: str, status: dict[str, Any]) -> Any: ...


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Outcome:
    """What a reconcile found: `problem` is None when the fleet matches its spec; `retry` says why to try again soon
    (references that may appear, LiveKit that may come back), None when only an edit can help."""

    problem: conditions.Problem | None
    ready: bool
    retry: str | None = None


class Reconciler:
    """Reconciles VoiceAgents and ProviderPolicies. One lock per object keeps concurrent triggers in order."""

    def __init__(
        self,
        store: Store,
        emit: Emit,
        telephony: Telephony,
        failover: Failover,
        clock: Clock = utcnow,
        fleet_url: str | None = None,
        applied: Applied | None = None,
        resync_seconds: float = 60.0,
        pods: fleetcheck.AgentPods | None = None,
        fleet_grace: float = fleetcheck.DEFAULT_GRACE_S,
    ) -> None:
        self.store = store
        self.install_key = installkey.load()
        self.applied = applied or Applied()
        self.followers = Followers()
        self.resync_seconds = resync_seconds
        self._waiting: set[tuple[str, str]] = set()
        self.telephony = telephony
        self.failover = failover
        self.fleet_url = fleet_url
        self.pods = pods or fleetcheck.AgentPods()
        self.fleet_grace = fleet_grace
        # per VoiceAgent, FleetConnected as its status shows it: (status, reason, pods that do not poll)
        self.fleet_shown: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {}
        self.emit = emit
        self.clock = clock
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks[("VoiceAgent", f"{namespace}/{name}")]

    async def agent(self, namespace: str, name: str) -> Outcome | None:
        key = (namespace, name)
        if key in self._waiting:  # joins the reconcile already waiting for the lock: it reads everything afresh
            return None
        lock = self._lock(namespace, name)
        self._waiting.add(key)
        try:
            await lock.acquire()
        finally:
            self._waiting.discard(key)
        try:
            started = time.perf_counter()
            try:
                outcome = await self._agent(namespace, name)
            except Exception:
                RECONCILES.labels("VoiceAgent", "error").inc()
                raise
            finally:
                RECONCILE_SECONDS.labels("VoiceAgent").observe(time.perf_counter() - started)
            RECONCILES.labels("VoiceAgent", "ok" if outcome is None or outcome.problem is None else "problem").inc()
            return outcome
        finally:
            lock.release()

    async def resync(self, namespace: str, name: str) -> Outcome | None:
        """The periodic resync: a full reconcile only when something may be off, LiveKit is due a comparison, or
        the safety-net period passed; else no API call at all (drift of a child shows in its watch events)."""
        full_every = self.resync_seconds * FULL_RESYNC_PERIODS
        if self.applied.quiet(namespace, name, time.monotonic(), self.resync_seconds, full_every):
            return None
        return await self.agent(namespace, name)

    async def _gather(self, agent: VoiceAgent) -> desired.Inputs:
        """Read what the spec references. Raises _Missing for a reference that does not exist."""
        namespace = agent.metadata["namespace"]
        policy = None
        policy_active = None
        if ref := agent.spec.provider_policy_ref:
            body = await self.store.provider_policy(namespace, ref.name)
            if body is None:
                raise _Missing("PolicyNotFound", f"ProviderPolicy {ref.name} not found in {namespace}")
            policy = ProviderPolicy.from_body(body)
            if active := (body.get("status") or {}).get("active"):
                policy_active = ActiveProviders.model_validate(active)
        instructions = None
        if cm := agent.spec.pipeline.instructions_config_map_ref:
            instructions = await self.store.config_map_key(namespace, cm.name, cm.key)
            if instructions is None:
                raise _Missing("ConfigMapNotFound", f"ConfigMap {cm.name} with key {cm.key} not found in {namespace}")
        versions = {}
        for secret in sorted(desired.referenced_secrets(agent, policy)):
            version = await self.store.secret_version(namespace, secret)
            if version is None:
                raise _Missing("SecretNotFound", f"Secret {secret} not found in {namespace}")
            versions[secret] = version
        fleet_token = None
        if (ref := agent.spec.provider_policy_ref) is not None and self.fleet_url:
            fleet_token = installkey.fleet_token(self.install_key, namespace, agent.metadata["name"],
                                                 agent.metadata.get("uid", ""))  # fmt: skip
            self.failover.fleet.admit(namespace, agent.metadata["name"], ref.name, fleet_token)
        return desired.Inputs(
            agent=agent,
            policy=policy,
            instructions=instructions,
            secret_versions=versions,
            policy_active=policy_active,
            fleet_url=self.fleet_url,
            fleet_token=fleet_token,
        )

    async def _agent(self, namespace: str, name: str) -> Outcome | None:
        body = await self.store.voice_agent(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.applied.forget_agent(namespace, name)
            self.failover.fleet.expel(namespace, name)
            self._forget_fleet(namespace, name)
            return None
        agent: VoiceAgent = VoiceAgent.from_body(body)
        previous = conditions_of(body)
        problem: conditions.Problem | None = None
        plan: desired.Desired | None = None
        old_status = body.get("status") or {}
        try:
            inputs = dataclasses.replace(await self._gather(agent), had_browser=bool(old_status.get("browser")))
            plan = desired.render(inputs)
        except _Missing as missing:
            problem = conditions.Problem(missing.reason, str(missing))
        except desired.InvalidSpec as invalid:
            problem = conditions.Problem("InvalidSpec", str(invalid))
        phone_result: PhoneResult | None = None
        if plan is not None:
            problem = await self._write(agent, plan)
            if problem is not None:
                plan = None  # nothing was written: status keeps describing what runs
        if plan is not None:
            for api_version, kind, child in plan.absent:
                await self.store.delete_owned(api_version, kind, namespace, child, agent.metadata["uid"])
            phone_result = await self.telephony.reconcile(agent, had_phone=bool(old_status.get("phone")))
        deployment = await self.store.deployment(namespace, desired.names(name)["Deployment"])
        rollout = conditions.Rollout.from_deployment(deployment) if deployment else None
        generation = body["metadata"].get("generation", 0)
        evaluated = conditions.evaluate(problem, rollout, agent.spec.scaling.min_replicas)
        if phone_result is not None:
            evaluated.append(phone_result.condition)  # type: ignore[arg-type]
        follows = agent.spec.provider_policy_ref is not None
        fleet = self._fleet_verdict(namespace, name, rollout.ready_replicas if rollout else 0) if follows else None
        if fleet is not None:
            evaluated.append((fleetcheck.CONDITION, fleet.status, fleet.reason, fleet.message))
        current = conditions.merge(previous, evaluated, generation, self.clock())
        if plan is not None and phone_result is None:
            current = [c for c in current if c.type != "PhoneReady"]
        if not follows:
            current = [c for c in current if c.type != fleetcheck.CONDITION]
        status = VoiceAgentStatus(
            observed_generation=generation,
            conditions=current,
            replicas=rollout.replicas if rollout else 0,
            ready_replicas=rollout.ready_replicas if rollout else 0,
            sessions=old_status.get("sessions"),
            providers=plan.active if plan else old_status.get("providers"),
            config_hash=plan.config_hash if plan else old_status.get("configHash"),
        ).model_dump(mode="json", by_alias=True, exclude_none=True)
        if plan is not None and phone_result is None:
            status["phone"] = None  # merge patch: remove
        elif phone_result is not None and phone_result.phone is not None:
            status["phone"] = phone_result.phone.model_dump(mode="json", by_alias=True)
        if plan is not None:
            browser = BrowserStatus(url=plan.browser_url) if plan.browser_url else None
            status["browser"] = browser.model_dump(mode="json", by_alias=True) if browser else None  # None: remove
        if status_unchanged(old_status, status):
            SKIPPED_WRITES.labels("VoiceAgentStatus").inc()
        else:
            await self.store.patch_status(VoiceAgentResource, namespace, name, status)
        self._shown(namespace, name, current, fleet)
        self._announce(body, previous, current)
        ready = any(c.type == "Ready" and c.status == "True" for c in current)
        if problem is not None and problem.reason not in PERMANENT:
            retry: str | None = problem.message
        elif phone_result is not None and phone_result.retry:
            retry = phone_result.message
        else:
            retry = None
        settled = plan is not None and problem is None and retry is None
        children = [key_of(m) for m in plan.objects] if plan is not None and settled else None
        self.applied.reconciled(namespace, name, children, time.monotonic(), phone=phone_result is not None)
        return Outcome(problem=problem, ready=ready, retry=retry)

    async def _write(self, agent: VoiceAgent, plan: desired.Desired) -> conditions.Problem | None:
        """Apply the plan's objects that changed, all or none: a name held by an object we did not create, or any
        object the API server refuses (a dry run of each goes first), becomes the Problem and nothing is written.

        The dry run also says whether the object exists (its answer has a resourceVersion only then), so a child
        this process has not applied yet is read (is it ours?) only when it exists: none of a new agent's is."""
        uid = agent.metadata["uid"]
        changed = []
        for manifest in plan.objects:
            if self.applied.fresh(manifest):  # written by us and unchanged since: nothing to do
                SKIPPED_WRITES.labels(manifest["kind"]).inc()
            else:
                changed.append(manifest)
        try:
            # every dry run at once (each under the gate): an agent's latency is then one round trip, not seven
            answers = await asyncio.gather(*(self._apply(m, dry_run=True) for m in changed), return_exceptions=True)
            for manifest, answer in zip(changed, answers, strict=True):
                # a refusal of an object whose name another object holds: the conflict is the clearer answer
                if isinstance(answer, WriteRejected) and (conflict := await self._conflict(manifest, uid)) is not None:
                    return conflict
                if isinstance(answer, BaseException):
                    raise answer
                exists = answer is None or bool((answer.get("metadata") or {}).get("resourceVersion"))
                if exists and (conflict := await self._conflict(manifest, uid)) is not None:
                    return conflict
            for wave in _waves(changed):
                results = await asyncio.gather(*(self._apply(m) for m in wave), return_exceptions=True)
                for manifest, result in zip(wave, results, strict=True):
                    if not isinstance(result, BaseException):
                        self.applied.record(manifest, result)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
        except WriteRejected as rejected:
            return conditions.Problem("ApplyFailed", f"{rejected} Nothing was changed.")
        return None

    async def _apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any] | None:
        async with self.applied.gate:
            return await self.store.apply(manifest, dry_run=dry_run)

    async def _conflict(self, manifest: dict[str, Any], uid: str) -> conditions.Problem | None:
        """NameConflict when the child's name is held by an object not created for this VoiceAgent."""
        if key_of(manifest) in self.applied.entries:  # this process applied it: ours (a deletion forgets it)
            return None
        kind, name, namespace = manifest["kind"], manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        found = await self.store.child(manifest["apiVersion"], kind, namespace, name)
        if found is not None and not desired.controlled_by(found, uid):
            return conditions.Problem(
                "NameConflict",
                f"{kind} {namespace}/{name} already exists and was not created for this VoiceAgent; "
                "rename the VoiceAgent or remove that object. Nothing was written.",
            )
        return None

    async def remove_phone(self, body: dict[str, Any]) -> None:
        """Finalizer: delete the agent's LiveKit SIP objects. Raises to be retried.

        Holds the agent's lock, so a reconcile in flight finishes first and none that follows recreates them."""
        agent: VoiceAgent = VoiceAgent.from_body(body)
        async with self._lock(agent.metadata["namespace"], agent.metadata["name"]):
            await self.telephony.remove(agent)

    async def policy(self, namespace: str, name: str, listing: bool = False) -> Outcome | None:
        """Validate a ProviderPolicy, report the providers in use, and bring its agents in line with what changed
        for them: nothing (probe bookkeeping, our own status writes), their status.providers, or a re-render."""
        active: dict[str, str] = {}
        async with self._locks[("ProviderPolicy", f"{namespace}/{name}")]:
            body = await self.store.provider_policy(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self.failover.forget(namespace, name)
                outcome, seen = None, None
            else:
                active = await self.failover.decide(body)
                outcome, seen = Outcome(problem=None, ready=True), view(body, active)
            change = self.followers.change(namespace, name, seen, listing)
        if change is Change.NONE:
            return outcome
        agents = [a for a in await self.store.voice_agents(namespace) if follows(a, name)]
        if change is Change.PROVIDERS and body is not None:
            await _bounded([self._providers(a, body, active) for a in agents])
        else:
            await _bounded([self.agent(namespace, a["metadata"]["name"]) for a in agents])
        return outcome

    async def _providers(self, agent_body: dict[str, Any], policy: dict[str, Any], active: dict[str, str]) -> None:
        """Only the providers in use moved: show them in the agent's status, nothing else to render."""
        namespace, name = agent_body["metadata"]["namespace"], agent_body["metadata"]["name"]
        async with self._locks[("VoiceAgent", f"{namespace}/{name}")]:
            inputs = desired.Inputs(
                agent=VoiceAgent.from_body(agent_body),
                policy=ProviderPolicy.from_body(policy),
                policy_active=ActiveProviders.model_validate(active),
            )
            providers = desired.active_providers(inputs).model_dump(mode="json", by_alias=True, exclude_none=True)
            if (agent_body.get("status") or {}).get("providers") != providers:
                await self.store.patch_status(VoiceAgentResource, namespace, name, {"providers": providers})

    async def reference_changed(self, namespace: str, kind: str, name: str) -> None:
        """A Secret or ConfigMap changed: re-render the agents that read it."""
        policies: dict[str, dict[str, Any] | None] = {}
        for body in await self.store.voice_agents(namespace):
            agent: VoiceAgent = VoiceAgent.from_body(body)
            if kind == "ConfigMap":
                ref = agent.spec.pipeline.instructions_config_map_ref
                uses = ref is not None and ref.name == name
            else:
                policy = None
                if follows := agent.spec.provider_policy_ref:
                    if follows.name not in policies:  # one read per policy, not per agent
                        policies[follows.name] = await self.store.provider_policy(namespace, follows.name)
                    found = policies[follows.name]
                    policy = ProviderPolicy.from_body(found) if found else None
                uses = name in desired.referenced_secrets(agent, policy)
            if uses:
                await self.agent(namespace, agent.metadata["name"])

    def _fleet_verdict(self, namespace: str, name: str, deployment_ready: int | None) -> fleetcheck.Verdict | None:
        now = time.monotonic()
        fleet = self.failover.fleet
        return fleetcheck.decide(
            name=name,
            fleet_url=self.fleet_url,
            ready=self.pods.of(namespace, name),
            polled=fleet.polled(namespace, name, now),
            refused=fleet.refusal_of(namespace, name, now),
            now=now,
            grace=self.fleet_grace,
            deployment_ready=deployment_ready,
        )

    def _shown(self, namespace: str, name: str, current: list[Condition], verdict: fleetcheck.Verdict | None) -> None:
        """Remember FleetConnected as the status now shows it, and export its count of pods that do not poll."""
        cond = next((c for c in current if c.type == fleetcheck.CONDITION), None)
        if cond is None:
            self._forget_fleet(namespace, name)
            return
        before = self.fleet_shown.get((namespace, name), ("", "", ()))
        silent = verdict.silent if verdict is not None else before[2]
        self.fleet_shown[(namespace, name)] = (cond.status, cond.reason, silent)
        NOT_POLLING.labels(namespace, name).set(len(silent) if cond.status == "False" else 0)

    def _forget_fleet(self, namespace: str, name: str) -> None:
        if self.fleet_shown.pop((namespace, name), None) is not None:
            NOT_POLLING.remove(namespace, name)

    async def fleet_check(self, namespace: str, policy: str) -> None:
        """Reconcile the followers of `policy` whose FleetConnected moved: a pod ready past the grace period that
        does not poll, or that started or stopped polling. In-memory only (the pod watch and the fleet channel);
        the policy's daemon calls it every second, and at rest it finds nothing to do."""
        moved = []
        for name in self.failover.fleet.members_of(namespace, policy):
            verdict = self._fleet_verdict(namespace, name, None)
            if verdict is not None and (verdict.status, verdict.reason, verdict.silent) != self.fleet_shown.get(
                (namespace, name)
            ):
                moved.append(self.agent(namespace, name))
        await _bounded(moved)

    def _announce(self, body: dict[str, Any], previous: list[Condition], current: list[Condition]) -> None:
        before = {c.type for c in previous}
        for cond in conditions.transitions(previous, current):
            if cond.type == fleetcheck.CONDITION:
                if cond.status == "False" or cond.type in before:  # a fleet that always followed needs no Event
                    kind = "Warning" if cond.status == "False" else "Normal"
                    self.emit(body, kind, cond.reason, f"{cond.type}={cond.status}: {cond.message}")
                continue
            if cond.type != "Ready" and cond.status != "True":
                continue  # Ready flips, and Degraded/Progressing turning on, are worth an Event
            warning = (cond.type == "Ready" and cond.status == "False") or cond.type == "Degraded"
            self.emit(body, "Warning" if warning else "Normal", cond.reason, f"{cond.type}: {cond.message}")


# Problems only an edit can fix: not retried on a timer (an edit, or a watched object changing, triggers again).
PERMANENT = frozenset({"InvalidSpec", "ApplyFailed"})


def _waves(manifests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The objects a Deployment's pods use (ServiceAccount, ConfigMap, Secret: `desired.render` puts them first),
    then the rest together: a pod created before its ServiceAccount is refused, and its ReplicaSet backs off."""
    first = next((i for i, m in enumerate(manifests) if m["kind"] == "Deployment"), len(manifests))
    return [wave for wave in (manifests[:first], manifests[first:]) if wave]


async def _bounded(work: list[Coroutine[Any, Any, Any]], limit: int = FANOUT_CONCURRENCY) -> None:
    """Run `work` at most `limit` at a time; every one runs, then the first error is raised."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Coroutine[Any, Any, Any]) -> None:
        async with gate:
            await job

    for result in await asyncio.gather(*(one(job) for job in work), return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


class _Missing(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
