"""The fleet channel: agents long-poll the operator for the providers in use, and acknowledge by polling again.

Why a long poll to the operator rather than a watch on the API server or a ConfigMap volume: a volume refresh takes
about a minute, a watch per agent process needs Kubernetes credentials in every pod, and the operator already holds
the decision. A poll answers the moment the generation moves (one asyncio notify for every waiting agent), carries
the generation the agent runs (the acknowledgement) and the provider errors it saw (the passive health signal), and
needs no permission at all. An agent sends errors at once on a short poll (``wait=0``) beside its long one; a report
wakes the policy's daemon, which probes the reported provider right away. When the operator is away, agents keep
their last providers and their in-session fallback.

Every poll names its VoiceAgent and carries that VoiceAgent's fleet token (Authorization: Bearer), which the
operator derived from its per-install key and handed to the pods in a Secret. Polls from a VoiceAgent the operator
does not reconcile onto this policy, or with a wrong token, are refused (403) and counted, so a pod elsewhere in
the cluster cannot report errors and trip a fleet-wide failover. Agents not heard from for ACTIVE_WINDOW_S are
pruned.

Every poll also names its pod, and each pod's worker process keeps a *presence* poll open whether or not it runs a
session: the operator knows per VoiceAgent which pods reach the channel (and which VoiceAgents' polls it refused),
which is what its FleetConnected condition is decided from (fleetcheck.py). Presence polls count neither in the
rollout nor in the share of agents reporting errors: an idle pod saw no provider error because it made no call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import Counter

from voicefleet_agent.contract import FLEET_PATH, FLEET_POD_PARAM, FLEET_PRESENCE_PARAM, FLEET_VOICEAGENT_PARAM

ACTIVE_WINDOW_S = 75.0  # an agent not heard from for this long no longer counts in the rollout
MAX_WAIT_S = 55.0
REFUSED = Counter("voicefleet_operator_fleet_refused_total", "Fleet channel polls refused, by reason", ["reason"])


@dataclass
class Agent:
    generation: int
    seen: float


@dataclass
class Channel:
    """One ProviderPolicy's channel: its generation, the providers in use, and who runs what."""

    generation: int = 0
    active: dict[str, str] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    errors: dict[str, set[str]] = field(default_factory=dict)  # provider → agents that reported errors
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reports: set[str] = field(default_factory=set)  # providers reported since the policy's daemon last looked
    alert: asyncio.Event | None = None  # the daemon's: set on a report, so it probes the provider at once

    def publish(self, generation: int, active: dict[str, str]) -> None:
        if generation == self.generation and active == self.active:
            return
        self.generation, self.active = generation, dict(active)
        self.changed.set()
        self.changed = asyncio.Event()

    def heard(self, agent: str, generation: int, errors: dict[str, int], now: float) -> None:
        self.agents[agent] = Agent(generation, now)
        for provider, count in errors.items():
            if count > 0:
                self.errors.setdefault(provider, set()).add(agent)
                self.reports.add(provider)
        if self.reports and self.alert is not None:
            self.alert.set()

    def take_reports(self) -> set[str]:
        """The providers agents reported errors from since the last call: a hint to probe them now."""
        reports, self.reports = self.reports, set()
        return reports

    def rollout(self, now: float) -> tuple[int, int]:
        """(agents on the current generation, agents heard from recently)."""
        live = [a for a in self.agents.values() if now - a.seen <= ACTIVE_WINDOW_S]
        return sum(a.generation == self.generation for a in live), len(live)

    def take_errors(self, now: float) -> tuple[int, dict[str, int]]:
        """Agents heard from recently, and per provider how many reported errors since the last call. Agents
        silent for longer than ACTIVE_WINDOW_S are pruned."""
        self.agents = {k: a for k, a in self.agents.items() if now - a.seen <= ACTIVE_WINDOW_S}
        live = len(self.agents)
        counts = {provider: len(agents) for provider, agents in self.errors.items()}
        self.errors = {}
        return live, counts


@dataclass(frozen=True)
class Member:
    """A VoiceAgent whose pods may poll: the policy it follows and its token."""

    policy: str
    token: str = field(repr=False)


class Fleet:
    """Channels of every ProviderPolicy, served over HTTP, to the VoiceAgents admitted to them."""

    def __init__(self) -> None:
        self.channels: dict[tuple[str, str], Channel] = {}
        self.members: dict[tuple[str, str], Member] = {}
        self.pods: dict[tuple[str, str], dict[str, float]] = {}  # (namespace, voiceagent) → pod → last poll
        self.refused: dict[tuple[str, str], tuple[str, float]] = {}  # a member's last refused poll: why, when

    def admit(self, namespace: str, voiceagent: str, policy: str, token: str) -> None:
        self.members[(namespace, voiceagent)] = Member(policy, token)

    def expel(self, namespace: str, voiceagent: str) -> None:
        key = (namespace, voiceagent)
        self.members.pop(key, None)
        self.pods.pop(key, None)
        self.refused.pop(key, None)

    def members_of(self, namespace: str, policy: str) -> list[str]:
        """The VoiceAgents admitted to a policy's channel."""
        return [va for (ns, va), m in self.members.items() if ns == namespace and m.policy == policy]

    def polled(self, namespace: str, voiceagent: str, now: float) -> dict[str, float]:
        """The pods of a VoiceAgent heard from within ACTIVE_WINDOW_S, and when last; older ones are pruned."""
        pods = self.pods.get((namespace, voiceagent))
        if not pods:
            return {}
        live = {pod: at for pod, at in pods.items() if now - at <= ACTIVE_WINDOW_S}
        self.pods[(namespace, voiceagent)] = live
        return dict(live)

    def refusal_of(self, namespace: str, voiceagent: str, now: float) -> str | None:
        """Why the VoiceAgent's last poll was refused, if that was within ACTIVE_WINDOW_S."""
        found = self.refused.get((namespace, voiceagent))
        return found[0] if found is not None and now - found[1] <= ACTIVE_WINDOW_S else None

    def refusal(self, namespace: str, policy: str, voiceagent: str, authorization: str) -> str | None:
        """Why a poll is refused, or None when its VoiceAgent follows this policy and the token is its own."""
        member = self.members.get((namespace, voiceagent))
        if member is None:
            return "unknown"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), member.token.encode()):
            return "token"
        return None if member.policy == policy else "policy"

    def channel(self, namespace: str, policy: str) -> Channel:
        return self.channels.setdefault((namespace, policy), Channel())

    def drop(self, namespace: str, policy: str) -> None:
        self.channels.pop((namespace, policy), None)

    async def handle(self, request: web.Request) -> web.Response:
        """GET {FLEET_PATH}/{namespace}/{policy}?agent=ID&generation=N&wait=S&errors=p:n,…"""
        namespace, policy = request.match_info["namespace"], request.match_info["policy"]
        query = request.query
        try:
            agent = query["agent"]
            generation = int(query.get("generation", "-1"))
            wait = min(float(query.get("wait", "25")), MAX_WAIT_S)
            errors = _errors(query.get("errors", ""))
        except (KeyError, ValueError) as error:
            raise web.HTTPBadRequest(text=f"bad query: {error}") from error
        voiceagent = query.get(FLEET_VOICEAGENT_PARAM, "")
        now = time.monotonic()
        if refused := self.refusal(namespace, policy, voiceagent, request.headers.get("Authorization", "")):
            REFUSED.labels(refused).inc()
            if refused != "unknown":  # kept for members only: a stranger cannot grow this map
                self.refused[(namespace, voiceagent)] = (refused, now)
            raise web.HTTPForbidden(text=f"not a VoiceAgent of {namespace}/{policy} with its fleet token")
        channel = self.channels.get((namespace, policy))
        if channel is None:
            self.refused[(namespace, voiceagent)] = ("policy-unknown", now)
            raise web.HTTPNotFound(text=f"no ProviderPolicy {namespace}/{policy} known to the operator")
        if pod := query.get(FLEET_POD_PARAM, ""):
            self.pods.setdefault((namespace, voiceagent), {})[pod] = now
        if query.get(FLEET_PRESENCE_PARAM) != "1":
            channel.heard(agent, generation, errors, now)
        if generation == channel.generation:
            changed = channel.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=wait)
        return web.json_response({"generation": channel.generation, "active": channel.active})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(FLEET_PATH + "/{namespace}/{policy}", self.handle)
        app.router.add_get("/healthz", _ok)
        return app

    async def serve(self, host: str, port: int) -> web.AppRunner:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def _errors(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        name, _, count = part.partition(":")
        out[name] = int(count or "1")
    return out
