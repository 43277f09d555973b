"""The phone channel's service layer: read credentials, plan with phone.py, carry out through livekit.py."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from voicefleet_operator import installkey, phone
from voicefleet_operator.livekit import LiveKitUnavailable, Sip, connect
from voicefleet_operator.models import PhoneStatus, VoiceAgent

log = logging.getLogger(__name__)

# The operator's own LiveKit credentials, used only to clean up after a VoiceAgent whose Secret is gone.
ENV_FALLBACK_KEY = "VOICEFLEET_LIVEKIT_API_KEY"
ENV_FALLBACK_SECRET = "VOICEFLEET_LIVEKIT_API_SECRET"

Connect = Callable[[str, str, str], AbstractAsyncContextManager[Sip]]


class SecretReader(Protocol):
    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...


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
    def __init__(self, secrets: SecretReader, connector: Connect = connect) -> None:
        self.secrets = secrets
        self.connect = connector
        self.install_key = installkey.load()
        # Credentials last seen per LiveKit URL: deleting a namespace deletes the Secret before our finalizer runs.
        self._seen: dict[str, tuple[str, str]] = {}

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
        try:
            async with self.connect(agent.spec.livekit.url, *creds) as sip:
                return await self._sync(agent, sip, auth)
        except LiveKitUnavailable as error:
            return PhoneResult("False", "LiveKitUnavailable", str(error), None, retry=True)

    async def _sync(self, agent: VoiceAgent, sip: Sip, auth: phone.Credentials | None) -> PhoneResult | None:
        me = phone.owner(agent)
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
        want = phone.desired_trunk(agent, auth)
        steps, trunk_id = phone.plan_trunk(want, trunks, me)
        for step in steps:
            done = await sip.apply_trunk(step)
            if step.action != "delete":
                trunk_id = done
            log.info("SIP trunk %s %s for %s", step.action, done, me)
        rules = await sip.rules()
        rule_id = min((r.id for r in rules if phone.owner_of(r.metadata) == me), default="")
        for step in phone.plan_rule(phone.desired_rule(agent, trunk_id), rules, me):
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
