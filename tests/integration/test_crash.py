"""Crash safety at scale: the operator SIGKILLed at random moments while a fleet is created, edited and deleted.

200 VoiceAgents, a quarter of them with a phone channel on the real livekit-server; the operator is killed at least
20 times, at a random moment each, while edits and deletions keep coming (some while it is down). After it settles:
every VoiceAgent left is Ready (and PhoneReady), LiveKit holds exactly one trunk and one dispatch rule per phone
agent and nothing of deleted ones, and no child object outlives its VoiceAgent. The seed is printed for a rerun
(VOICEFLEET_CRASH_SEED).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from typing import Any

import pytest
from livekit import api
from livekit.protocol.sip import ListSIPDispatchRuleRequest, ListSIPInboundTrunkRequest

from testground.livekit import LiveKit
from testground.operator import Namespace, OperatorProcess, wait_for
from voicefleet_operator.phone import owner_of

pytestmark = pytest.mark.integration

AGENTS = 200
KILLS = 20
CHILD_KINDS = ("deployments", "configmaps", "services", "serviceaccounts", "hpa", "pdb", "secrets")


def _secrets(lk: LiveKit) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lk"},
         "stringData": {"apiKey": lk.api_key, "apiSecret": lk.api_secret}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sip-auth"},
         "stringData": {"username": "crash-user", "password": "crash-pass-word-7"}},
    ]  # fmt: skip


def _doc(ns: Namespace, livekit: LiveKit, i: int, max_replicas: int = 2, krisp: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": "agent:dev",
        "agentName": f"agent-{i:03d}",
        "livekit": {"url": livekit.url, "secretRef": {"name": "lk"}},
        "pipeline": {
            "stt": {"provider": "deepgram", "model": "nova-3"},
            "llm": {"provider": "openai", "model": "gpt-4o-mini"},
            "tts": {"provider": "cartesia", "model": "sonic-3"},
        },
        "scaling": {"minReplicas": 1, "maxReplicas": max_replicas},
    }
    if i % 4 == 0:  # a quarter answer the phone, each on a number of its own
        number = f"+1555{int(ns.name[2:], 16) % 10**6:06d}{i:03d}"
        spec["channels"] = {"phone": {"numbers": [number], "allowedAddresses": ["203.0.113.0/24"],
                                      "authSecretRef": {"name": "sip-auth"}, "krispEnabled": krisp}}  # fmt: skip
    return {"apiVersion": "voicefleet.io/v1alpha1", "kind": "VoiceAgent", "metadata": {"name": f"va-{i:03d}"},
            "spec": spec}  # fmt: skip


def _agents(ns: Namespace) -> dict[str, dict[str, Any]]:
    items = json.loads(ns.kubectl("get", "voiceagents", "-o", "json").stdout)["items"]
    return {a["metadata"]["name"]: a for a in items}


def _ready(body: dict[str, Any]) -> bool:
    conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}
    ok = conds.get("Ready", {}).get("status") == "True"
    if (body["spec"].get("channels") or {}).get("phone"):
        ok = ok and conds.get("PhoneReady", {}).get("status") == "True"
    generation = body["metadata"].get("generation")
    return ok and (body.get("status") or {}).get("observedGeneration") == generation


async def _listings(lk: LiveKit) -> tuple[list[Any], list[Any]]:
    async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret, failover=False) as client:
        trunks = await client.sip.list_inbound_trunk(ListSIPInboundTrunkRequest())
        rules = await client.sip.list_dispatch_rule(ListSIPDispatchRuleRequest())
    return list(trunks.items), list(rules.items)


def _sip_owners(lk: LiveKit, namespace: str) -> tuple[dict[str, int], dict[str, int]]:
    """Per VoiceAgent name of `namespace`: how many trunks and how many dispatch rules LiveKit holds."""
    trunks: dict[str, int] = {}
    rules: dict[str, int] = {}
    listed_trunks, listed_rules = asyncio.run(_listings(lk))
    for items, counts in ((listed_trunks, trunks), (listed_rules, rules)):
        for item in items:
            who = owner_of(item.metadata) or ""
            if who.startswith(f"{namespace}/"):
                counts[who.split("/", 1)[1]] = counts.get(who.split("/", 1)[1], 0) + 1
    return trunks, rules


def _orphans(ns: Namespace, alive: set[str]) -> list[str]:
    found = []
    selector = "app.kubernetes.io/managed-by=voicefleet-operator"
    for kind in CHILD_KINDS:
        items = json.loads(ns.kubectl("get", kind, "-l", selector, "-o", "json").stdout)["items"]
        for item in items:
            refs = [r["name"] for r in item["metadata"].get("ownerReferences") or [] if r["kind"] == "VoiceAgent"]
            if not refs or refs[0] not in alive:
                found.append(f"{kind}/{item['metadata']['name']}")
    return found


@pytest.mark.timeout(1500)  # 20 restarts of the operator and a fleet of 200 settling, on 2 shared cores
def test_sigkilled_at_random_moments_the_operator_converges_with_no_orphans_or_duplicates(
    ns: Namespace, livekit: LiveKit, operator: OperatorProcess
) -> None:
    assert ns.apply(*_secrets(livekit)).returncode == 0
    seed = int(os.environ.get("VOICEFLEET_CRASH_SEED") or time.time_ns() % 10**6)
    print(f"VOICEFLEET_CRASH_SEED={seed}")
    rng = random.Random(seed)
    alive = set(range(AGENTS))
    next_index = AGENTS
    for first in range(0, AGENTS, 25):  # in batches: one kubectl apply of 200 can take minutes on a busy machine
        assert ns.apply(*(_doc(ns, livekit, i) for i in range(first, min(first + 25, AGENTS)))).returncode == 0
    for kill in range(KILLS):
        # a random moment in the operator's work: creating, rolling out, deleting, talking to LiveKit
        time.sleep(rng.uniform(0.2, 3.0))  # the moment to kill, not a wait for a condition
        operator.stop(signal.SIGKILL)
        edited = rng.sample(sorted(alive), 6)
        docs = [_doc(ns, livekit, i, max_replicas=rng.randint(2, 5), krisp=bool(rng.getrandbits(1))) for i in edited]
        assert ns.apply(*docs).returncode == 0  # edits made while the operator is down
        operator.start()
        gone = rng.sample(sorted(alive), 2)
        alive -= set(gone)
        ns.kubectl("delete", "voiceagent", *(f"va-{i:03d}" for i in gone), "--wait=false")
        if kill % 5 == 4:  # and a few new ones
            new = [next_index, next_index + 1]
            next_index += 2
            assert ns.apply(*(_doc(ns, livekit, i) for i in new)).returncode == 0
            alive |= set(new)
    names = {f"va-{i:03d}" for i in alive}

    def settled() -> bool:
        agents = _agents(ns)
        return set(agents) == names and all(_ready(a) for a in agents.values())

    wait_for(f"{len(names)} VoiceAgents Ready after {KILLS} kills (seed {seed})", settled, timeout=900, every=2)
    phones = {f"va-{i:03d}" for i in alive if i % 4 == 0}

    def livekit_matches() -> bool:
        trunks, rules = _sip_owners(livekit, ns.name)
        return trunks == dict.fromkeys(phones, 1) and rules == dict.fromkeys(phones, 1)

    wait_for(f"one trunk and one rule per phone agent, none else (seed {seed})", livekit_matches, timeout=120)
    wait_for(f"no child without its VoiceAgent (seed {seed})", lambda: not _orphans(ns, names), timeout=180, every=2)
