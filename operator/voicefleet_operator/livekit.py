"""The LiveKit storage layer: SIP inbound trunks and dispatch rules through livekit-api (Twirp)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from google.protobuf.duration_pb2 import Duration
from livekit import api
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration
from livekit.protocol.sip import (
    CreateSIPDispatchRuleRequest,
    CreateSIPInboundTrunkRequest,
    DeleteSIPDispatchRuleRequest,
    DeleteSIPTrunkRequest,
    ListSIPDispatchRuleRequest,
    ListSIPInboundTrunkRequest,
    SIPDispatchRule,
    SIPDispatchRuleIndividual,
    SIPDispatchRuleInfo,
    SIPInboundTrunkInfo,
)

from voicefleet_operator.phone import Rule, Step, Trunk

TIMEOUT = aiohttp.ClientTimeout(total=10)


class LiveKitUnavailable(Exception):
    """LiveKit could not be reached or answered with an error; the message says which."""


def _trunk_info(trunk: Trunk) -> SIPInboundTrunkInfo:
    creds = trunk.credentials
    return SIPInboundTrunkInfo(
        name=trunk.name,
        metadata=trunk.metadata,
        numbers=list(trunk.numbers),
        allowed_addresses=list(trunk.allowed_addresses),
        auth_username=creds.username if creds else "",
        auth_password=creds.password if creds else "",
        krisp_enabled=trunk.krisp_enabled,
        ringing_timeout=Duration(seconds=trunk.ringing_timeout_seconds),
        max_call_duration=Duration(seconds=trunk.max_call_duration_seconds),
    )


def _trunk(info: SIPInboundTrunkInfo) -> Trunk:
    return Trunk(
        id=info.sip_trunk_id,
        name=info.name,
        metadata=info.metadata,
        numbers=tuple(info.numbers),
        allowed_addresses=tuple(info.allowed_addresses),
        auth_username=info.auth_username,
        krisp_enabled=info.krisp_enabled,
        ringing_timeout_seconds=info.ringing_timeout.seconds,
        max_call_duration_seconds=info.max_call_duration.seconds,
    )


def _rule_info(rule: Rule) -> SIPDispatchRuleInfo:
    return SIPDispatchRuleInfo(
        name=rule.name,
        metadata=rule.metadata,
        trunk_ids=list(rule.trunk_ids),
        rule=SIPDispatchRule(dispatch_rule_individual=SIPDispatchRuleIndividual(room_prefix=rule.room_prefix)),
        room_config=RoomConfiguration(
            agents=[RoomAgentDispatch(agent_name=rule.agent_name, metadata=rule.agent_metadata)]
        ),
    )


def _rule(info: SIPDispatchRuleInfo) -> Rule:
    agents = list(info.room_config.agents)
    return Rule(
        id=info.sip_dispatch_rule_id,
        name=info.name,
        metadata=info.metadata,
        trunk_ids=tuple(info.trunk_ids),
        room_prefix=info.rule.dispatch_rule_individual.room_prefix,
        agent_name=agents[0].agent_name if len(agents) == 1 else "",
        agent_metadata=agents[0].metadata if len(agents) == 1 else "",
    )


class Sip:
    """SIP objects of one LiveKit server."""

    def __init__(self, client: api.LiveKitAPI) -> None:
        self.sip = client.sip

    async def trunks(self) -> list[Trunk]:
        return [_trunk(t) for t in (await self.sip.list_inbound_trunk(ListSIPInboundTrunkRequest())).items]

    async def rules(self) -> list[Rule]:
        return [_rule(r) for r in (await self.sip.list_dispatch_rule(ListSIPDispatchRuleRequest())).items]

    async def apply_trunk(self, step: Step) -> str:
        """Carry out a trunk step; returns the trunk id."""
        if step.action == "delete":
            await self.sip.delete_trunk(DeleteSIPTrunkRequest(sip_trunk_id=step.id))
            return step.id
        assert step.trunk is not None
        if step.action == "create":
            created = await self.sip.create_inbound_trunk(CreateSIPInboundTrunkRequest(trunk=_trunk_info(step.trunk)))
            return str(created.sip_trunk_id)
        await self.sip.update_inbound_trunk(step.id, _trunk_info(step.trunk))
        return step.id

    async def apply_rule(self, step: Step) -> str:
        if step.action == "delete":
            await self.sip.delete_dispatch_rule(DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=step.id))
            return step.id
        assert step.rule is not None
        if step.action == "create":
            created = await self.sip.create_dispatch_rule(
                CreateSIPDispatchRuleRequest(dispatch_rule=_rule_info(step.rule))
            )
            return str(created.sip_dispatch_rule_id)
        await self.sip.update_dispatch_rule(step.id, _rule_info(step.rule))
        return step.id


@asynccontextmanager
async def connect(url: str, api_key: str, api_secret: str) -> AsyncIterator[Sip]:
    """A SIP client; errors of the transport or the server surface as LiveKitUnavailable."""
    try:
        async with api.LiveKitAPI(url, api_key, api_secret, timeout=TIMEOUT, failover=False) as client:
            yield Sip(client)
    except api.TwirpError as error:
        raise LiveKitUnavailable(f"LiveKit {url} answered {error.code}: {error.message}") from error
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise LiveKitUnavailable(f"LiveKit {url} unreachable: {error.__class__.__name__} {error}") from error
