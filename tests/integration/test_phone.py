"""The phone channel against the real livekit-server + Redis: SIP trunks and dispatch rules as code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from livekit.protocol.sip import CreateSIPInboundTrunkRequest, DeleteSIPTrunkRequest, SIPInboundTrunkInfo
from phone_kit import LiveKitView, agent, number

from testground.livekit import LiveKit
from testground.operator import Namespace, OperatorProcess, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def owner(ns: Namespace) -> str:
    return f'"{ns.name}/phone"'


def test_phone_channel_creates_trunk_and_rule_and_follows_edits(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    assert ns.apply(agent(ns, livekit.url)).returncode == 0
    cond = ns.wait_condition("voiceagent", "phone", "PhoneReady", "True", "Configured")
    (trunk,) = lkview.trunks(owner(ns))
    assert list(trunk.numbers) == [number(ns)]
    assert list(trunk.allowed_addresses) == ["203.0.113.0/24"]
    assert trunk.auth_username == "trunk-user"
    (rule,) = lkview.rules(owner(ns))
    assert list(rule.trunk_ids) == [trunk.sip_trunk_id]
    assert rule.rule.dispatch_rule_individual.room_prefix == "call-"
    assert [a.agent_name for a in rule.room_config.agents] == ["phone-agent"]
    assert json.loads(rule.room_config.agents[0].metadata) == {"tenant": "acme"}
    status = (ns.get("voiceagent", "phone") or {})["status"]
    assert status["phone"] == {"trunkId": trunk.sip_trunk_id, "dispatchRuleId": rule.sip_dispatch_rule_id,
                               "numbers": [number(ns)]}  # fmt: skip
    assert trunk.sip_trunk_id in cond["message"]
    # Credentials never reach status or Events.
    everything = json.dumps(ns.get("voiceagent", "phone")) + ns.kubectl("get", "events", "-o", "json").stdout
    assert "s3cret-pass-word" not in everything

    patch = {"spec": {"channels": {"phone": {"numbers": [number(ns), number(ns, 1)]}}}}
    ns.kubectl("patch", "voiceagent", "phone", "--type=merge", "-p", json.dumps(patch))
    wait_for("numbers updated", lambda: [sorted(t.numbers) for t in lkview.trunks(owner(ns))] ==
             [sorted([number(ns), number(ns, 1)])])  # fmt: skip
    (same,) = lkview.trunks(owner(ns))
    assert same.sip_trunk_id == trunk.sip_trunk_id  # updated in place, not recreated


def test_drift_outside_the_operator_is_repaired_and_rule_repointed(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    assert ns.apply(agent(ns, livekit.url)).returncode == 0
    ns.wait_condition("voiceagent", "phone", "PhoneReady", "True", "Configured")
    (trunk,) = lkview.trunks(owner(ns))
    lkview.run(lambda sip: sip.update_inbound_trunk_fields(trunk.sip_trunk_id, allowed_addresses=["0.0.0.0/0"]))
    wait_for(
        "allowed addresses repaired",
        lambda: [list(t.allowed_addresses) for t in lkview.trunks(owner(ns))] == [["203.0.113.0/24"]],
    )
    lkview.run(lambda sip: sip.delete_trunk(DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id)))

    def recreated() -> str | None:
        trunks = lkview.trunks(owner(ns))
        return trunks[0].sip_trunk_id if len(trunks) == 1 and trunks[0].sip_trunk_id != trunk.sip_trunk_id else None

    new_id = wait_for("trunk recreated", recreated)
    wait_for("rule re-pointed", lambda: [list(r.trunk_ids) for r in lkview.rules(owner(ns))] == [[new_id]])


def test_number_claimed_by_a_foreign_trunk_is_a_conflict_and_changes_nothing(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    foreign_number = number(ns, 7)
    foreign = SIPInboundTrunkInfo(name="hand-made", numbers=[foreign_number], allowed_addresses=["198.51.100.1"])
    created = lkview.run(lambda sip: sip.create_inbound_trunk(CreateSIPInboundTrunkRequest(trunk=foreign)))
    try:
        assert ns.apply(agent(ns, livekit.url, numbers=[foreign_number])).returncode == 0
        cond = ns.wait_condition("voiceagent", "phone", "PhoneReady", "False", "NumberConflict")
        assert foreign_number in cond["message"] and "hand-made" in cond["message"]
        assert lkview.trunks(owner(ns)) == [] and lkview.rules(owner(ns)) == []
        ns.wait_condition("voiceagent", "phone", "Ready", "True")  # the browser channel is unaffected
    finally:
        lkview.run(lambda sip: sip.delete_trunk(DeleteSIPTrunkRequest(sip_trunk_id=created.sip_trunk_id)))
    ns.wait_condition("voiceagent", "phone", "PhoneReady", "True", "Configured")


def test_operator_restart_creates_no_duplicates_and_deletion_cleans_up(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView, operator: OperatorProcess
) -> None:
    ns = phone_ns
    assert ns.apply(agent(ns, livekit.url)).returncode == 0
    ns.wait_condition("voiceagent", "phone", "PhoneReady", "True", "Configured")
    (trunk,) = lkview.trunks(owner(ns))
    operator.stop()
    operator.start()
    ns.kubectl(
        "patch", "voiceagent", "phone", "--type=merge", "-p", '{"spec":{"channels":{"phone":{"krispEnabled":true}}}}'
    )
    wait_for("krisp on", lambda: [t.krisp_enabled for t in lkview.trunks(owner(ns))] == [True])
    assert [t.sip_trunk_id for t in lkview.trunks(owner(ns))] == [trunk.sip_trunk_id]
    assert len(lkview.rules(owner(ns))) == 1
    ns.kubectl("delete", "voiceagent", "phone", "--timeout=60s")
    assert lkview.trunks(owner(ns)) == [] and lkview.rules(owner(ns)) == []


def test_removing_the_phone_channel_removes_its_objects(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    assert ns.apply(agent(ns, livekit.url)).returncode == 0
    ns.wait_condition("voiceagent", "phone", "PhoneReady", "True", "Configured")
    ns.kubectl("patch", "voiceagent", "phone", "--type=json", "-p", '[{"op":"remove","path":"/spec/channels/phone"}]')
    wait_for("objects removed", lambda: lkview.trunks(owner(ns)) == [] and lkview.rules(owner(ns)) == [])
    wait_for("PhoneReady gone", lambda: ns.condition("voiceagent", "phone", "PhoneReady") is None)


def test_livekit_unreachable_is_reported_retried_and_blocks_deletion_until_cleanup(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    assert ns.apply(agent(ns, livekit.url)).returncode == 0
    ns.wait_condition("voiceagent", "phone", "PhoneReady", "True", "Configured")
    down = {"spec": {"livekit": {"url": "ws://127.0.0.1:9"}}}
    ns.kubectl("patch", "voiceagent", "phone", "--type=merge", "-p", json.dumps(down))
    cond = ns.wait_condition("voiceagent", "phone", "PhoneReady", "False", "LiveKitUnavailable")
    assert "127.0.0.1:9" in cond["message"]
    ns.wait_condition("voiceagent", "phone", "Ready", "True")  # other channels unaffected
    ns.kubectl("delete", "voiceagent", "phone", "--wait=false")

    def says_why() -> bool:
        events = json.loads(ns.kubectl("get", "events", "-o", "json").stdout)["items"]
        return any(e["reason"] == "PhoneCleanupPending" and "127.0.0.1:9" in e.get("message", "") for e in events)

    wait_for("the finalizer to say why it waits", says_why)
    assert ns.get("voiceagent", "phone") is not None and len(lkview.trunks(owner(ns))) == 1
    ns.kubectl(
        "patch", "voiceagent", "phone", "--type=merge", "-p", json.dumps({"spec": {"livekit": {"url": livekit.url}}})
    )
    wait_for("deletion completes", lambda: ns.get("voiceagent", "phone") is None)
    assert lkview.trunks(owner(ns)) == [] and lkview.rules(owner(ns)) == []


def test_open_trunks_are_rejected_at_admission(phone_ns: Namespace, livekit: LiveKit) -> None:
    ns = phone_ns
    body = agent(ns, livekit.url)
    del body["spec"]["channels"]["phone"]["allowedAddresses"]
    del body["spec"]["channels"]["phone"]["authSecretRef"]
    result = ns.apply(body)
    assert result.returncode != 0 and "toll fraud" in result.stderr
