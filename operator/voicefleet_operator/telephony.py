"""The phone channel's service layer: read credentials, plan with phone.py, carry out through livekit.py."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from voicefleet_operator import installkey, phone
from voicefleet_operator.livekit import LiveKitUnavailable, Sip, connect
from voicefleet_operator.models import PhoneStatus, VoiceAgent

log = logging.getLogger(__name__)

# The operator's own LiveKit credentials, used only to clean up after a VoiceAgent whose Secret is gone.
ENV_FALLBACK_KEY = "VOICEFLEET_LIVEKIT_API_KEY"
ENV_FALLBACK_SECRET = "VOICEFLEET_LIVEKIT_API_SECRET"

Connect = Callable[[str, str, str], AbstractAsyncContextManager[Sip]]
# How often a reconcile also sweeps its LiveKit for SIP objects of VoiceAgents that no longer exist.
SWEEP_SECONDS = float(os.environ.get("VOICEFLEET_SIP_SWEEP_SECONDS", "300"))


class Reader(Protocol):
    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    async def voice_agents(self, namespace: str) -> list[dict[str, Any]]: ...
    async def cluster_id(self) -> str: ...


@dataclass(frozen=True)
class PhoneResult:
    """PhoneReady as (status, reason, message), what to put in status.phone, and whether to retry soon."""

    status: str
    reason: str
    message: str
    phone: PhoneStatus | None
    retry: bool = False

    @property
    def condition(self) -> tuple[str, str, str, str]:
        return ("PhoneReady", self.status, self.reason, self.message)


class Telephony:
    def __init__(
        self, secrets: Reader, connector: Connect = connect, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.secrets = secrets
        self.connect = connector
        self.clock = clock
        self.install_key = installkey.load()
        # Credentials last seen per LiveKit URL: deleting a namespace deletes the Secret before our finalizer runs.
        self._seen: dict[str, tuple[str, str]] = {}
        self._swept: dict[str, float] = {}  # LiveKit URL → when it was last swept

    async def _livekit_credentials(self, agent: VoiceAgent) -> tuple[str, str] | str:
        ref = agent.spec.livekit.secret_ref
        data = await self.secrets.secret_data(agent.metadata["namespace"], ref.name)
        if data is None or ref.api_key_key not in data or ref.api_secret_key not in data:
            return f"Secret {ref.name} with keys {ref.api_key_key}/{ref.api_secret_key} not found"
        creds = data[ref.api_key_key], data[ref.api_secret_key]
        self._seen[agent.spec.livekit.url] = creds
        return creds

    async def _cleanup_credentials(self, agent: VoiceAgent) -> tuple[str, str] | str:
        """The agent's Secret if it still exists, else the last seen for its LiveKit, else the operator's own."""
        creds = await self._livekit_credentials(agent)
        if not isinstance(creds, str):
            return creds
        if seen := self._seen.get(agent.spec.livekit.url):
            return seen
        key, secret = os.environ.get(ENV_FALLBACK_KEY), os.environ.get(ENV_FALLBACK_SECRET)
        if key and secret:
            return key, secret
        return f"{creds}, and the operator has no {ENV_FALLBACK_KEY}/{ENV_FALLBACK_SECRET} to fall back on"

    async def _auth(self, agent: VoiceAgent) -> phone.Credentials | str | None:
        channel = agent.spec.channels.phone
        if channel is None or channel.auth_secret_ref is None:
            return None
        ref = channel.auth_secret_ref
        data = await self.secrets.secret_data(agent.metadata["namespace"], ref.name)
        if data is None or ref.username_key not in data or ref.password_key not in data:
            return f"Secret {ref.name} with keys {ref.username_key}/{ref.password_key} not found"
        return phone.Credentials(data[ref.username_key], data[ref.password_key], self.install_key)

    @staticmethod
    def _unusable(auth: phone.Credentials, ref: Any) -> str | None:
        """Why digest credentials would leave the trunk open, if they would."""
        if not auth.username.strip():
            return f"Secret {ref.name} key {ref.username_key}: the SIP username is empty"
        if not auth.password:
            return f"Secret {ref.name} key {ref.password_key}: the SIP password is empty, which would open the trunk"
        return None

    async def reconcile(self, agent: VoiceAgent, had_phone: bool) -> PhoneResult | None:
        """Make LiveKit match spec.channels.phone. None when the agent has no phone channel and nothing to clean."""
        channel = agent.spec.channels.phone
        if channel is None and not had_phone:
            return None
        creds = await self._livekit_credentials(agent)
        if isinstance(creds, str):
            return PhoneResult("False", "SecretNotFound", creds, None, retry=True)
        auth = await self._auth(agent)
        if isinstance(auth, str):
            return PhoneResult("False", "SecretNotFound", auth, None, retry=True)
        if auth is not None and channel is not None and (why := self._unusable(auth, channel.auth_secret_ref)):
            return PhoneResult("False", "InvalidCredentials", f"{why}; nothing changed in LiveKit", None)
        try:
            async with self.connect(agent.spec.livekit.url, *creds) as sip:
                result = await self._sync(agent, sip, auth)
                await self._sweep_if_due(agent.spec.livekit.url, sip)
                return result
        except LiveKitUnavailable as error:
            return PhoneResult("False", "LiveKitUnavailable", str(error), None, retry=True)

    async def _sweep_if_due(self, url: str, sip: Sip) -> None:
        """Sweep each LiveKit at most every SWEEP_SECONDS: a burst of deletes must not list it once per delete."""
        if self.clock() - self._swept.get(url, float("-inf")) >= SWEEP_SECONDS:
            await self.sweep(url, sip)

    async def sweep(self, url: str, sip: Sip) -> int:
        """Delete the dispatch rules and trunks this cluster made for VoiceAgents that no longer exist (or have no
        phone channel): leftovers of crashes and of deletes that gave up. Returns how many were deleted."""
        cluster = await self.secrets.cluster_id()
        trunks, rules = await sip.trunks(), await sip.rules()  # before the VoiceAgents: a newer trunk has its agent
        marked: list[phone.Trunk | phone.Rule] = [*trunks, *rules]
        owners = {o for o in (phone.made_here(x.metadata, cluster) for x in marked) if o}
        alive: set[str] = set()
        for namespace in sorted({o.split("/", 1)[0] for o in owners}):
            for body in await self.secrets.voice_agents(namespace):
                if ((body.get("spec") or {}).get("channels") or {}).get("phone"):
                    alive.add(f"{namespace}/{body['metadata']['name']}")
        self._swept[url] = self.clock()
        removed = 0
        for rule_id in phone.orphans(rules, cluster, alive):
            await sip.apply_rule(phone.Step("delete", rule_id))
            removed += 1
        for trunk_id in phone.orphans(trunks, cluster, alive):
            await sip.apply_trunk(phone.Step("delete", trunk_id))
            removed += 1
        if removed:
            log.warning("removed %d SIP objects of VoiceAgents that no longer exist from %s", removed, url)
        return removed

    async def _sync(self, agent: VoiceAgent, sip: Sip, auth: phone.Credentials | None) -> PhoneResult | None:
        me = phone.owner(agent)
        cluster = await self.secrets.cluster_id()
        trunks = await sip.trunks()
        if agent.spec.channels.phone is None:
            for step in phone.plan_rule(None, await sip.rules(), me):
                await sip.apply_rule(step)
            for step in phone.plan_trunk(None, trunks, me)[0]:
                await sip.apply_trunk(step)
            return None
        if clash := phone.conflicts(agent, trunks):
            claimed = ", ".join(f"{number} by {by}" for number, by in clash.items())
            return PhoneResult("False", "NumberConflict", f"Numbers already claimed: {claimed}; nothing changed",
                               None)  # fmt: skip
        want = phone.desired_trunk(agent, auth, cluster)
        steps, trunk_id = phone.plan_trunk(want, trunks, me)
        for step in steps:
            done = await sip.apply_trunk(step)
            if step.action != "delete":
                trunk_id = done
            log.info("SIP trunk %s %s for %s", step.action, done, me)
        rules = await sip.rules()
        rule_id = min((r.id for r in rules if phone.owner_of(r.metadata) == me), default="")
        for step in phone.plan_rule(phone.desired_rule(agent, trunk_id, cluster), rules, me):
            done = await sip.apply_rule(step)
            if step.action != "delete":
                rule_id = done
            log.info("SIP dispatch rule %s %s for %s", step.action, done, me)
        status = PhoneStatus(trunk_id=trunk_id, dispatch_rule_id=rule_id, numbers=list(want.numbers))
        message = (
            f"Trunk {trunk_id} serves {', '.join(want.numbers)}; rule {rule_id} dispatches {agent.spec.agent_name}"
        )
        return PhoneResult("True", "Configured", message, status)

    async def remove(self, agent: VoiceAgent) -> None:
        """Delete the agent's trunk and rule (the finalizer). Raises LiveKitUnavailable or LookupError to retry."""
        creds = await self._cleanup_credentials(agent)
        if isinstance(creds, str):
            raise LookupError(f"cannot remove the SIP trunk and rule: {creds}")
        me = phone.owner(agent)
        async with self.connect(agent.spec.livekit.url, *creds) as sip:
            for step in phone.plan_rule(None, await sip.rules(), me):
                await sip.apply_rule(step)
            for step in phone.plan_trunk(None, await sip.trunks(), me)[0]:
                await sip.apply_trunk(step)
            await self._sweep_if_due(agent.spec.livekit.url, sip)
