"""Helpers of the phone-channel tests: a VoiceAgent with a phone channel, its Secrets, and LiveKit's view."""

from __future__ import annotations

import asyncio
from typing import Any

from livekit import api
from livekit.protocol.sip import ListSIPDispatchRuleRequest, ListSIPInboundTrunkRequest, SIPInboundTrunkInfo

from testground.livekit import LiveKit
from testground.operator import Namespace


def number(ns: Namespace, suffix: int = 0) -> str:
    """A number of this test's own, so tests never conflict through a namespace still being deleted."""
    return f"+1555{int(ns.name[2:], 16) % 10**6:06d}{suffix}"


def agent(ns: Namespace, livekit_url: str, **phone: Any) -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "phone", "namespace": ns.name},
        "spec": {
            "image": "agent:dev",
            "agentName": "phone-agent",
            "livekit": {"url": livekit_url, "secretRef": {"name": "lk"}},
            "pipeline": {
                "stt": {"provider": "deepgram", "model": "nova-3"},
                "llm": {"provider": "openai", "model": "gpt-4o-mini"},
                "tts": {"provider": "cartesia", "model": "sonic-3"},
            },
            "scaling": {"minReplicas": 1, "maxReplicas": 2},
            "channels": {
                "phone": {
                    "numbers": [number(ns)],
                    "allowedAddresses": ["203.0.113.0/24"],
                    "authSecretRef": {"name": "sip-auth"},
                    "roomPrefix": "call-",
                    "metadata": {"tenant": "acme"},
                    **phone,
                }
            },
        },
    }


def secrets(lk: LiveKit) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lk"},
         "stringData": {"apiKey": lk.api_key, "apiSecret": lk.api_secret}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sip-auth"},
         "stringData": {"username": "trunk-user", "password": "s3cret-pass-word"}},
    ]  # fmt: skip


class LiveKitView:
    """What the real server holds, read straight through livekit-api."""

    def __init__(self, lk: LiveKit) -> None:
        self.lk = lk

    async def _call(self, fn: Any) -> Any:
        async with api.LiveKitAPI(self.lk.http_url, self.lk.api_key, self.lk.api_secret, failover=False) as client:
            return await fn(client.sip)

    def run(self, fn: Any) -> Any:
        return asyncio.run(self._call(fn))

    def trunks(self, owner: str) -> list[SIPInboundTrunkInfo]:
        items = self.run(lambda sip: sip.list_inbound_trunk(ListSIPInboundTrunkRequest())).items
        return [t for t in items if owner in t.metadata]

    def rules(self, owner: str) -> list[Any]:
        items = self.run(lambda sip: sip.list_dispatch_rule(ListSIPDispatchRuleRequest())).items
        return [r for r in items if owner in r.metadata]

    def ours(self, namespace: str) -> list[Any]:
        """Every trunk and dispatch rule whose owner marker names a VoiceAgent of `namespace`."""
        marker = f'"{namespace}/'
        return [x for x in [*self.trunks(marker), *self.rules(marker)] if '"voicefleet.io/owner"' in x.metadata]
