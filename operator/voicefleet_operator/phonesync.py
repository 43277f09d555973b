"""LiveKit read on a resync period, not on every event.

A VoiceAgent is reconciled on many triggers (its Deployment rolling out, its policy's providers moving); none of
them changes its SIP trunk or dispatch rule. A phone reconcile whose inputs — the phone channel, the LiveKit
address and credentials reference, the agent name, the object's uid — are unchanged since the last one that left
LiveKit configured returns that result for `period` seconds without calling LiveKit. After that, or on any failure,
LiveKit is read and compared again, so drift made in LiveKit is repaired within one period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voicefleet_operator import phone
from voicefleet_operator.applied import digest
from voicefleet_operator.models import VoiceAgent
from voicefleet_operator.telephony import PhoneResult, Telephony


@dataclass(frozen=True)
class _Synced:
    inputs: str
    at: float
    result: PhoneResult


def phone_inputs(agent: VoiceAgent) -> str:
    spec = agent.spec
    return digest([
        agent.metadata.get("uid"),
        spec.agent_name,
        spec.livekit.model_dump(mode="json"),
        spec.channels.phone.model_dump(mode="json") if spec.channels.phone else None,
    ])  # fmt: skip


class PeriodicTelephony(Telephony):
    """Telephony that reads LiveKit at most once per `period` for an agent whose phone inputs did not change."""

    def __init__(self, *args: Any, period: float, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.period = period
        self.clock = clock
        self._synced: dict[str, _Synced] = {}
        self.livekit_reads = 0  # phone reconciles that went to LiveKit, for tests and the benchmark

    def due(self, agent_key: str) -> bool:
        """True when the agent's phone channel should be compared with LiveKit again."""
        synced = self._synced.get(agent_key)
        return synced is None or self.clock() - synced.at >= self.period

    async def reconcile(self, agent: VoiceAgent, had_phone: bool) -> PhoneResult | None:
        key, inputs = phone.owner(agent), phone_inputs(agent)
        synced = self._synced.get(key)
        if synced is not None and synced.inputs == inputs and not self.due(key):
            return synced.result
        if agent.spec.channels.phone is not None or had_phone:
            self.livekit_reads += 1
        result = await super().reconcile(agent, had_phone)
        if result is not None and result.status == "True" and not result.retry:
            self._synced[key] = _Synced(inputs, self.clock(), result)
        else:
            self._synced.pop(key, None)
        return result

    async def remove(self, agent: VoiceAgent) -> None:
        self._synced.pop(phone.owner(agent), None)
        await super().remove(agent)
