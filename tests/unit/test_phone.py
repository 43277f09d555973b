"""The phone channel's pure planning: desired trunk and rule, ownership, conflicts, steps."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from voicefleet_operator import phone
from voicefleet_operator.models import VoiceAgent


def agent(name: str = "tasks", **phone_spec: Any) -> VoiceAgent:
    return VoiceAgent.model_validate(
        {
            "metadata": {"name": name, "namespace": "fleet", "uid": f"uid-{name}"},
            "spec": {
                "image": "agent:dev",
                "agentName": "task-manager",
                "livekit": {"url": "ws://lk:7880", "secretRef": {"name": "lk"}},
                "pipeline": {
                    "stt": {"provider": "deepgram", "model": "nova-3"},
                    "llm": {"provider": "openai", "model": "gpt-4o-mini"},
                    "tts": {"provider": "cartesia", "model": "sonic-3"},
                },
                "channels": {"phone": {"numbers": ["+15550100"], "allowedAddresses": ["203.0.113.0/24"],
                                       **phone_spec}},
            },
        }
    )  # fmt: skip


CREDS = phone.Credentials("user", "pass-word", b"install-key")


def test_desired_trunk_and_rule_carry_the_owner_marker_and_no_password_in_metadata() -> None:
    va = agent(metadata={"tenant": "acme"})
    trunk = phone.desired_trunk(va, CREDS)
    assert phone.owner_of(trunk.metadata) == "fleet/tasks"
    assert "pass-word" not in trunk.metadata and "pass-word" not in repr(trunk)
    assert trunk.numbers == ("+15550100",) and trunk.auth_username == "user"
    rule = phone.desired_rule(va, "ST_1")
    assert rule.trunk_ids == ("ST_1",) and rule.agent_name == "task-manager" and rule.room_prefix == "call-"
    assert json.loads(rule.agent_metadata) == {"tenant": "acme"}
    assert phone.owner_of(rule.metadata) == "fleet/tasks"


def test_password_change_changes_the_trunk() -> None:
    va = agent()
    changed = phone.Credentials("user", "new", b"install-key")
    assert not phone.desired_trunk(va, CREDS).same_as(phone.desired_trunk(va, changed))


def test_the_metadata_fingerprint_is_keyed_per_install_not_a_plain_hash_of_the_password() -> None:
    unsalted = hashlib.sha256(b"user\0pass-word").hexdigest()
    metadata = phone.desired_trunk(agent(), CREDS).metadata
    assert unsalted[:16] not in metadata
    other_install = phone.desired_trunk(agent(), phone.Credentials("user", "pass-word", b"another-key")).metadata
    assert json.loads(metadata)["auth"] != json.loads(other_install)["auth"]


def observed(trunk: phone.Trunk, id_: str) -> phone.Trunk:
    return phone.Trunk(**{**trunk.__dict__, "id": id_, "credentials": None})


def test_plan_creates_then_is_idempotent_then_updates_drift_and_removes_duplicates() -> None:
    va = agent()
    want = phone.desired_trunk(va, CREDS)
    steps, keep = phone.plan_trunk(want, [], "fleet/tasks")
    assert [s.action for s in steps] == ["create"] and keep == ""
    assert phone.plan_trunk(want, [observed(want, "ST_1")], "fleet/tasks") == ([], "ST_1")
    drifted = phone.Trunk(**{**observed(want, "ST_1").__dict__, "allowed_addresses": ("0.0.0.0/0",)})
    steps, keep = phone.plan_trunk(want, [drifted, observed(want, "ST_2")], "fleet/tasks")
    assert [(s.action, s.id) for s in steps] == [("delete", "ST_2"), ("update", "ST_1")] and keep == "ST_1"


def test_plan_never_touches_foreign_objects() -> None:
    foreign = phone.Trunk(name="hand-made", metadata="", numbers=("+15550999",), allowed_addresses=(),
                          auth_username="", krisp_enabled=False, ringing_timeout_seconds=0,
                          max_call_duration_seconds=0, id="ST_X")  # fmt: skip
    other = observed(phone.desired_trunk(agent("other"), None), "ST_O")
    assert phone.plan_trunk(None, [foreign, other], "fleet/tasks") == ([], "")
    rule = phone.Rule(name="r", metadata="", trunk_ids=("ST_X",), room_prefix="", agent_name="", agent_metadata="",
                      id="SDR_X")  # fmt: skip
    assert phone.plan_rule(None, [rule], "fleet/tasks") == []


def test_rule_is_repointed_when_the_trunk_is_recreated() -> None:
    va = agent()
    old = phone.Rule(**{**phone.desired_rule(va, "ST_old").__dict__, "id": "SDR_1"})
    steps = phone.plan_rule(phone.desired_rule(va, "ST_new"), [old], "fleet/tasks")
    assert [(s.action, s.id) for s in steps] == [("update", "SDR_1")]
    assert steps[0].rule is not None and steps[0].rule.trunk_ids == ("ST_new",)


def test_conflicts_name_the_claimant() -> None:
    va = agent()
    other = observed(phone.desired_trunk(agent("other"), None), "ST_O")
    foreign = phone.Trunk(name="hand-made", metadata="{not json", numbers=("+15550100",), allowed_addresses=(),
                          auth_username="", krisp_enabled=False, ringing_timeout_seconds=0,
                          max_call_duration_seconds=0, id="ST_X")  # fmt: skip
    assert phone.conflicts(va, [other]) == {"+15550100": "VoiceAgent fleet/other"}
    assert phone.conflicts(va, [foreign]) == {"+15550100": "trunk hand-made (ST_X)"}
    mine = observed(phone.desired_trunk(va, None), "ST_1")
    assert phone.conflicts(va, [mine]) == {}


def test_the_sweep_takes_only_this_clusters_objects_of_agents_that_are_gone() -> None:
    gone = observed(phone.desired_trunk(agent("gone"), None, "cluster-a"), "ST_GONE")
    alive = observed(phone.desired_trunk(agent("alive"), None, "cluster-a"), "ST_ALIVE")
    other_cluster = observed(phone.desired_trunk(agent("gone"), None, "cluster-b"), "ST_B")
    legacy = observed(phone.desired_trunk(agent("old"), None), "ST_LEGACY")  # made before the cluster key
    foreign = phone.Trunk("hand-made", "", ("+15550199",), (), "", False, 30, 3600, id="ST_X")
    trunks = [gone, alive, other_cluster, legacy, foreign]
    assert phone.orphans(trunks, "cluster-a", alive={"fleet/alive"}) == ["ST_GONE", "ST_LEGACY"]
    rule = phone.Rule(**{**phone.desired_rule(agent("gone"), "ST_GONE", "cluster-a").__dict__, "id": "SDR_1"})
    assert phone.orphans([rule], "cluster-a", alive={"fleet/gone"}) == []
    assert phone.orphans([rule], "cluster-a", alive=set()) == ["SDR_1"]


def test_the_cluster_marker_changes_the_trunk_so_it_is_updated_in_place() -> None:
    va = agent()
    before = observed(phone.desired_trunk(va, CREDS), "ST_1")
    steps, keep = phone.plan_trunk(phone.desired_trunk(va, CREDS, "cluster-a"), [before], "fleet/tasks")
    assert keep == "ST_1" and [s.action for s in steps] == ["update"]
