"""Hostile input and ownership against the real API server, livekit-server and the operator as a process:
open trunks and malformed values refused at admission, objects of others never adopted, refused writes reported,
deletes that always finish, and no SIP object left behind."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import yaml
from livekit.protocol.sip import (
    CreateSIPDispatchRuleRequest,
    CreateSIPInboundTrunkRequest,
    DeleteSIPDispatchRuleRequest,
    DeleteSIPTrunkRequest,
    SIPDispatchRule,
    SIPDispatchRuleIndividual,
    SIPDispatchRuleInfo,
    SIPInboundTrunkInfo,
)
from phone_kit import LiveKitView, agent, number

from testground.livekit import LiveKit
from testground.operator import Namespace, wait_for

pytestmark = pytest.mark.integration
DELETE_WITHIN_S = 10


def with_phone(body: dict[str, Any], **phone: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    changed["spec"]["channels"]["phone"].update(phone)
    return changed


def refused(ns: Namespace, body: dict[str, Any], field: str) -> str:
    result = ns.apply(body)
    assert result.returncode != 0, f"admitted: {json.dumps(body)[:300]}"
    assert field in result.stderr, result.stderr
    return result.stderr


def deleted_within(ns: Namespace, kind: str, name: str, seconds: float = DELETE_WITHIN_S) -> float:
    started = time.monotonic()
    ns.kubectl("delete", kind, name, "--wait=false")
    wait_for(f"{kind}/{name} gone", lambda: ns.get(kind, name) is None, timeout=seconds)
    return time.monotonic() - started


@pytest.mark.parametrize(
    "addresses",
    [["0.0.0.0/0"], ["::/0"], ["0.0.0.0/1", "128.0.0.0/1"], ["10.0.0.0/8"], ["2001:db8::/32"],
     ["dead.beef"], ["10.0.0.0/99"], [":::::"], ["203.0.113.0/24", "1.2.3.4/-1"]],
)  # fmt: skip
def test_open_ranges_and_malformed_addresses_are_refused_at_admission(
    phone_ns: Namespace, livekit: LiveKit, addresses: list[str]
) -> None:
    body = with_phone(agent(phone_ns, livekit.url), allowedAddresses=addresses)
    refused(phone_ns, body, "spec.channels.phone.allowedAddresses")


def test_min_prefix_length_widens_the_allowed_ranges_but_never_to_an_open_one(
    phone_ns: Namespace, livekit: LiveKit
) -> None:
    body = with_phone(agent(phone_ns, livekit.url), allowedAddresses=["10.0.0.0/8"], minPrefixLength={"ipv4": 8})
    assert phone_ns.apply(body).returncode == 0
    too_wide = with_phone(body, minPrefixLength={"ipv4": 4})
    too_wide["metadata"]["name"] = "phone-wide"
    refused(phone_ns, too_wide, "spec.channels.phone.minPrefixLength.ipv4")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("livekit", "url"), "ws://", "spec.livekit.url"),
        (("livekit", "url"), "ws://lk\n:7880", "spec.livekit.url"),
        (("livekit", "url"), "http://[::1", "spec.livekit.url"),
        (("livekit", "url"), "ftp://lk:7880", "spec.livekit.url"),
        (("pipeline", "stt", "baseUrl"), "http://", "spec.pipeline.stt.baseUrl"),
        (("tools", "mcpServers"), [{"name": "t", "url": "http:///mcp"}], "spec.tools.mcpServers[0].url"),
        (("pipeline", "tts", "options"), {f"k{i}": "v" for i in range(33)}, "spec.pipeline.tts.options"),
        (("pipeline", "tts", "options"), {"voice": "v" * 1025}, "spec.pipeline.tts.options.voice"),
        (("pipeline", "tts", "options"), {"bad key!": "v"}, "spec.pipeline.tts.options"),
        (("channels", "phone", "metadata"), {f"k{i}": "v" for i in range(33)}, "spec.channels.phone.metadata"),
        (("env",), [{"name": "BIG", "value": "x" * 8193}], "spec.env[0].value"),
        (("resources", "limits"), {"memory": "99999999Pi"}, "spec.resources.limits.memory"),
        (("resources", "requests"), {"memory": "4Gi"}, "spec.resources.requests"),  # above the 2Gi limit
        (("resources", "requests"), {"gpu": "1"}, "spec.resources.requests"),
        (("livekit", "secretRef", "apiKeyKey"), "a/b", "spec.livekit.secretRef.apiKeyKey"),
        (("image",), "agent dev", "spec.image"),
    ],
)
def test_values_that_no_child_could_hold_are_refused_at_admission_naming_the_field(
    phone_ns: Namespace, livekit: LiveKit, path: tuple[str, ...], value: Any, field: str
) -> None:
    body = agent(phone_ns, livekit.url)
    node = body["spec"]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    refused(phone_ns, body, field)


@pytest.mark.parametrize("name", ["9lives", "tasks.v2", "a" * 56, "Tasks"])
def test_names_that_would_give_invalid_children_are_refused(phone_ns: Namespace, livekit: LiveKit, name: str) -> None:
    body = agent(phone_ns, livekit.url)
    body["metadata"]["name"] = name
    result = phone_ns.apply(body)
    assert result.returncode != 0
    assert "metadata.name" in result.stderr or "a lowercase RFC 1123" in result.stderr, result.stderr


def test_the_longest_admitted_name_becomes_a_ready_fleet(phone_ns: Namespace, livekit: LiveKit) -> None:
    body = agent(phone_ns, livekit.url)
    name = body["metadata"]["name"] = "a" * 55
    del body["spec"]["channels"]["phone"]
    assert phone_ns.apply(body).returncode == 0
    phone_ns.wait_condition("voiceagent", name, "Ready", "True")
    assert phone_ns.get("service", f"{name}-metrics") is not None


def test_an_empty_sip_password_is_refused_and_nothing_reaches_livekit(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    empty = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sip-empty"},
             "stringData": {"username": "trunk-user", "password": ""}}  # fmt: skip
    assert ns.apply(empty).returncode == 0
    body = with_phone(agent(ns, livekit.url), authSecretRef={"name": "sip-empty"})
    del body["spec"]["channels"]["phone"]["allowedAddresses"]
    assert ns.apply(body).returncode == 0
    cond = ns.wait_condition("voiceagent", "phone", "PhoneReady", "False", "InvalidCredentials")
    assert "password is empty" in cond["message"]
    assert lkview.ours(ns.name) == []


def test_objects_of_the_same_name_made_by_someone_else_are_never_adopted(phone_ns: Namespace, livekit: LiveKit) -> None:
    ns = phone_ns
    theirs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "phone-config"}, "data": {"mine": "yes"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "phone"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "phone-metrics"},
         "spec": {"ports": [{"port": 1234}], "selector": {"app": "mine"}}},
    ]  # fmt: skip
    assert ns.apply(*theirs).returncode == 0
    before = {d["kind"]: ns.get(d["kind"], d["metadata"]["name"]) for d in theirs}
    body = agent(ns, livekit.url)
    del body["spec"]["channels"]["phone"]
    assert ns.apply(body).returncode == 0
    cond = ns.wait_condition("voiceagent", "phone", "Ready", "False", "NameConflict")
    assert "already exists and was not created for this VoiceAgent" in cond["message"]
    va = ns.get("voiceagent", "phone") or {}
    assert cond["observedGeneration"] == va["metadata"]["generation"]
    assert ns.get("deployment", "phone") is None, "nothing is written while a name is taken"
    for kind, old in before.items():
        now = ns.get(kind, old["metadata"]["name"]) if old else None
        assert now is not None and now["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"], kind
        assert "ownerReferences" not in now["metadata"], kind
    deleted_within(ns, "voiceagent", "phone")
    for kind, old in before.items():
        assert ns.get(kind, old["metadata"]["name"]) is not None, f"the user's {kind} was garbage-collected"


def test_the_fleet_builds_once_the_conflicting_objects_are_removed(phone_ns: Namespace, livekit: LiveKit) -> None:
    ns = phone_ns
    assert ns.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "phone-config"}}).returncode == 0
    body = agent(ns, livekit.url)
    del body["spec"]["channels"]["phone"]
    assert ns.apply(body).returncode == 0
    ns.wait_condition("voiceagent", "phone", "Ready", "False", "NameConflict")
    ns.kubectl("delete", "configmap", "phone-config")
    ns.wait_condition("voiceagent", "phone", "Ready", "True")
    config = ns.get("configmap", "phone-config") or {}
    assert config["metadata"]["ownerReferences"][0]["name"] == "phone"


def object_id(sip_object: Any) -> str:
    return str(getattr(sip_object, "sip_trunk_id", "") or getattr(sip_object, "sip_dispatch_rule_id", ""))


def quota(name: str, **hard: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}}


def test_a_child_the_api_server_refuses_on_create_is_a_condition_and_nothing_is_written(
    phone_ns: Namespace, livekit: LiveKit
) -> None:
    ns = phone_ns
    assert ns.apply(quota("no-services", **{"count/services": "0"})).returncode == 0
    body = agent(ns, livekit.url)
    del body["spec"]["channels"]["phone"]
    assert ns.apply(body).returncode == 0
    cond = ns.wait_condition("voiceagent", "phone", "Ready", "False", "ApplyFailed")
    assert "Service" in cond["message"] and "phone-metrics" in cond["message"] and "quota" in cond["message"]
    assert cond["observedGeneration"] == (ns.get("voiceagent", "phone") or {})["metadata"]["generation"]
    assert ns.get("configmap", "phone-config") is None and ns.get("deployment", "phone") is None
    degraded = ns.condition("voiceagent", "phone", "Degraded") or {}
    assert degraded.get("status") == "True" and degraded.get("reason") == "ApplyFailed"


def test_a_refused_edit_is_reported_at_the_new_generation_and_the_running_fleet_is_kept(
    phone_ns: Namespace, livekit: LiveKit
) -> None:
    ns = phone_ns
    body = agent(ns, livekit.url)
    del body["spec"]["channels"]["phone"]
    body["spec"]["scaling"]["autoscaler"] = "External"
    assert ns.apply(body).returncode == 0
    ns.wait_condition("voiceagent", "phone", "Ready", "True")
    deployment = ns.get("deployment", "phone") or {}
    config = (ns.get("configmap", "phone-config") or {})["data"]["agent.json"]
    assert ns.apply(quota("no-hpa", **{"count/horizontalpodautoscalers.autoscaling": "0"})).returncode == 0
    edit = {"spec": {"scaling": {"autoscaler": "HPA"}, "pipeline": {"instructions": "A refused edit."}}}
    ns.kubectl("patch", "voiceagent", "phone", "--type=merge", "-p", json.dumps(edit))
    generation = (ns.get("voiceagent", "phone") or {})["metadata"]["generation"]

    def refused_at_this_generation() -> dict[str, Any] | None:
        cond = ns.condition("voiceagent", "phone", "Ready")
        return cond if cond and cond["reason"] == "ApplyFailed" and cond["observedGeneration"] == generation else None

    cond = wait_for("the refused edit reported", refused_at_this_generation)
    assert cond["status"] == "False" and "HorizontalPodAutoscaler" in cond["message"]
    assert (ns.get("configmap", "phone-config") or {})["data"]["agent.json"] == config
    after = ns.get("deployment", "phone") or {}
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"]
    ns.kubectl("delete", "resourcequota", "no-hpa")
    ns.kubectl("patch", "voiceagent", "phone", "--type=merge", "-p", '{"spec":{"pipeline":{"fillerAfterMs":800}}}')
    ns.wait_condition("voiceagent", "phone", "Ready", "True")
    assert "A refused edit." in (ns.get("configmap", "phone-config") or {})["data"]["agent.json"]


def test_a_valid_spec_with_large_text_keeps_bookkeeping_small_and_deletes_in_time(
    phone_ns: Namespace, livekit: LiveKit
) -> None:
    ns = phone_ns
    body = agent(ns, livekit.url)
    body["spec"]["pipeline"]["instructions"] = "\U0001f600\u0007" * 30000
    body["spec"]["env"] = [{"name": f"E{i}", "value": "\u2603" * 8000} for i in range(20)]
    # `kubectl create`: client-side apply would keep its own copy of this spec in an annotation, over its limit
    ns.kubectl("create", "-f", "-", input=yaml.safe_dump(body))
    wait_for("a condition at the current generation", lambda: ns.condition("voiceagent", "phone", "Ready"))
    annotations = (ns.get("voiceagent", "phone") or {})["metadata"].get("annotations") or {}
    assert sum(len(v) for k, v in annotations.items() if k.startswith("voicefleet.io/")) < 1024, annotations.keys()
    deleted_within(ns, "voiceagent", "phone")


def test_deleting_right_after_creating_leaves_nothing_in_livekit(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    for attempt in range(4):
        body = agent(ns, livekit.url)
        body["metadata"]["name"] = f"race-{attempt}"
        body["spec"]["channels"]["phone"]["numbers"] = [number(ns, attempt)]
        assert ns.apply(body).returncode == 0
        if attempt % 2:  # half of them while the first reconcile is talking to LiveKit
            wait_for("a trunk", lambda a=attempt: lkview.trunks(f'"{ns.name}/race-{a}"'))
        deleted_within(ns, "voiceagent", f"race-{attempt}", seconds=30)
    assert lkview.ours(ns.name) == []


def test_sip_objects_this_cluster_made_for_agents_that_are_gone_are_swept(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    cluster = ns.cluster.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout
    ghost = json.dumps({"voicefleet.io/owner": f"{ns.name}/ghost", "uid": "gone", "cluster": cluster})
    elsewhere = json.dumps({"voicefleet.io/owner": f"{ns.name}/ghost", "uid": "x", "cluster": "another-cluster"})

    def make_trunk(metadata: str, suffix: int, address: str) -> Any:
        info = SIPInboundTrunkInfo(name="hand-made", metadata=metadata, numbers=[number(ns, suffix)],
                                   allowed_addresses=[address])  # fmt: skip
        return lkview.run(lambda sip: sip.create_inbound_trunk(CreateSIPInboundTrunkRequest(trunk=info)))

    trunk = make_trunk(ghost, 8, "198.51.100.7")
    keep = make_trunk(elsewhere, 9, "198.51.100.8")
    rule_info = SIPDispatchRuleInfo(
        name="orphan",
        metadata=ghost,
        trunk_ids=[trunk.sip_trunk_id],
        rule=SIPDispatchRule(dispatch_rule_individual=SIPDispatchRuleIndividual(room_prefix="x-")),
    )
    rule = lkview.run(lambda sip: sip.create_dispatch_rule(CreateSIPDispatchRuleRequest(dispatch_rule=rule_info)))
    try:
        assert ns.apply(agent(ns, livekit.url)).returncode == 0  # a phone agent on the same LiveKit
        ns.wait_condition("voiceagent", "phone", "PhoneReady", "True", "Configured")
        ids = {trunk.sip_trunk_id, rule.sip_dispatch_rule_id}
        wait_for("orphans swept", lambda: not ids & {object_id(x) for x in lkview.ours(ns.name)})
        assert keep.sip_trunk_id in {t.sip_trunk_id for t in lkview.trunks(ns.name)}
    finally:
        lkview.run(lambda sip: sip.delete_trunk(DeleteSIPTrunkRequest(sip_trunk_id=keep.sip_trunk_id)))
        for x in lkview.rules(ghost):
            lkview.run(lambda sip, i=x.sip_dispatch_rule_id: sip.delete_dispatch_rule(
                DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=i)))  # fmt: skip
        for x in lkview.trunks(ghost):
            lkview.run(lambda sip, i=x.sip_trunk_id: sip.delete_trunk(DeleteSIPTrunkRequest(sip_trunk_id=i)))


def test_an_agent_livekit_never_answered_for_deletes_at_once(phone_ns: Namespace, livekit: LiveKit) -> None:
    ns = phone_ns
    assert ns.apply(agent(ns, "ws://127.0.0.1:9")).returncode == 0
    ns.wait_condition("voiceagent", "phone", "PhoneReady", "False", "LiveKitUnavailable")
    deleted_within(ns, "voiceagent", "phone")
    events = json.loads(ns.kubectl("get", "events", "-o", "json").stdout)["items"]
    assert any(e["reason"] == "PhoneCleanupSkipped" for e in events)


def test_the_abandon_annotation_lets_a_delete_finish_without_livekit(
    phone_ns: Namespace, livekit: LiveKit, lkview: LiveKitView
) -> None:
    ns = phone_ns
    assert ns.apply(agent(ns, livekit.url)).returncode == 0
    ns.wait_condition("voiceagent", "phone", "PhoneReady", "True", "Configured")
    gone = {"spec": {"livekit": {"url": "ws://127.0.0.1:9"}}}  # LiveKit holds its trunk, and is then unreachable
    ns.kubectl("patch", "voiceagent", "phone", "--type=merge", "-p", json.dumps(gone))
    ns.wait_condition("voiceagent", "phone", "PhoneReady", "False", "LiveKitUnavailable")
    ns.kubectl("delete", "voiceagent", "phone", "--wait=false")

    def pending() -> bool:
        events = json.loads(ns.kubectl("get", "events", "-o", "json").stdout)["items"]
        return any(e["reason"] == "PhoneCleanupPending" for e in events)

    wait_for("deletion waiting for LiveKit", pending)
    assert ns.get("voiceagent", "phone") is not None
    ns.kubectl("annotate", "voiceagent", "phone", "voicefleet.io/abandon-phone-cleanup=true")
    wait_for("deleted", lambda: ns.get("voiceagent", "phone") is None, timeout=30)
    events = json.loads(ns.kubectl("get", "events", "-o", "json").stdout)["items"]
    assert any(e["reason"] == "PhoneCleanupAbandoned" for e in events)
    # what it left in LiveKit goes with the next sweep there (here: the next phone agent on that LiveKit)
    following = with_phone(agent(ns, livekit.url), numbers=[number(ns, 5)])
    following["metadata"]["name"] = "next"
    assert ns.apply(following).returncode == 0
    wait_for("the abandoned trunk swept", lambda: lkview.trunks(f'"{ns.name}/phone"') == [])
