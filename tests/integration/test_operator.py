"""The operator against the real control plane: kube-apiserver, controllers, scheduler and kwok nodes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from testground.operator import Namespace, OperatorProcess, load_examples, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.integration


def examples() -> list[dict[str, Any]]:
    return load_examples(EXAMPLES)


def example(kind: str) -> dict[str, Any]:
    return next(d for d in examples() if d["kind"] == kind)


CHILDREN = {
    "serviceaccount": "tasks",
    "configmap": "tasks-config",
    "deployment": "tasks",
    "service": "tasks-metrics",
    "hpa": "tasks",
    "pdb": "tasks",
}


def test_apply_examples_creates_children_and_becomes_ready(ns: Namespace) -> None:
    started = time.monotonic()
    assert ns.apply(*examples()).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    elapsed = time.monotonic() - started
    print(f"kubectl apply → Ready: {elapsed:.1f}s")
    for kind, name in CHILDREN.items():
        obj = ns.get(kind, name)
        assert obj is not None, f"{kind}/{name} missing"
        assert obj["metadata"]["ownerReferences"][0]["name"] == "tasks"
    va = ns.get("voiceagent", "tasks")
    assert va is not None
    status = va["status"]
    assert status["observedGeneration"] == va["metadata"]["generation"]
    assert status["readyReplicas"] == 2 == status["replicas"]  # the real HPA scaled the Deployment to minReplicas
    assert status["providers"] == {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}
    policy = ns.get("providerpolicy", "default")
    assert policy is not None and policy["status"]["active"]["stt"] == "deepgram"
    events = ns.kubectl("get", "events", "--field-selector", "involvedObject.name=tasks", "-o", "json").stdout
    assert any(e["reason"] == "Available" for e in json.loads(events)["items"])


def test_edits_are_followed_and_hpa_replicas_are_left_alone(ns: Namespace) -> None:
    assert ns.apply(*examples()).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    before = ns.get("deployment", "tasks")
    assert before is not None and before["spec"]["replicas"] == 2
    old_hash = before["spec"]["template"]["metadata"]["annotations"]["voicefleet.io/config-hash"]
    patch = {"spec": {"scaling": {"minReplicas": 3, "maxReplicas": 7}, "pipeline": {"instructions": "Be terse."}}}
    ns.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p", json.dumps(patch))
    wait_for("HPA bounds follow", lambda: (ns.get("hpa", "tasks") or {}).get("spec", {}).get("maxReplicas") == 7)
    config = wait_for(
        "config follows",
        lambda: "Be terse." in (ns.get("configmap", "tasks-config") or {}).get("data", {}).get("agent.json", ""),
    )
    assert config
    dep = wait_for(
        "deployment rolled",
        lambda: (
            ns.get("deployment", "tasks")
            if (ns.get("deployment", "tasks") or {})["spec"]["template"]["metadata"]["annotations"][
                "voicefleet.io/config-hash"
            ]
            != old_hash
            else None
        ),
    )
    # The HPA, not the operator, moves replicas to the new minimum.
    wait_for("HPA scales to 3", lambda: (ns.get("deployment", "tasks") or {})["spec"].get("replicas") == 3)
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    assert dep["spec"]["template"]["metadata"]["annotations"]["voicefleet.io/config-hash"] != old_hash
    shown = json.loads(ns.kubectl("get", "deployment", "tasks", "-o", "json", "--show-managed-fields").stdout)
    owners = {
        m["manager"] for m in shown["metadata"]["managedFields"] if '"f:replicas"' in json.dumps(m.get("fieldsV1"))
    }
    assert "voicefleet-operator" not in owners, owners


def agent_json(ns: Namespace) -> dict[str, Any]:
    config_map = ns.get("configmap", "tasks-config") or {}
    loaded: dict[str, Any] = json.loads(config_map.get("data", {}).get("agent.json", "{}"))
    return loaded


def test_max_sessions_per_pod_is_the_capacity_each_agent_pod_reports_and_an_edit_rolls_the_pods(
    ns: Namespace,
) -> None:
    assert ns.apply(*examples()).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    assert agent_json(ns)["maxSessions"] == example("VoiceAgent")["spec"]["scaling"]["maxSessionsPerPod"]
    old_hash = (ns.get("deployment", "tasks") or {})["spec"]["template"]["metadata"]["annotations"][
        "voicefleet.io/config-hash"
    ]
    patch = {"spec": {"scaling": {"targetSessionsPerPod": 1, "maxSessionsPerPod": 1}}}
    ns.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p", json.dumps(patch))
    wait_for("maxSessions follows the spec", lambda: agent_json(ns).get("maxSessions") == 1)
    wait_for(
        "the pods roll to the new capacity",
        lambda: (
            (ns.get("deployment", "tasks") or {})["spec"]["template"]["metadata"]["annotations"][
                "voicefleet.io/config-hash"
            ]
            != old_hash
        ),
    )
    unset = {"spec": {"scaling": {"maxSessionsPerPod": None}}}
    ns.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p", json.dumps(unset))
    wait_for("unset: LiveKit's CPU-based load again", lambda: "maxSessions" not in agent_json(ns))


def test_deleted_and_edited_children_are_restored(ns: Namespace) -> None:
    assert ns.apply(*examples()).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    for kind in ("configmap", "hpa", "pdb", "service"):
        old = ns.get(kind, CHILDREN[kind])
        assert old is not None
        ns.kubectl("delete", kind, CHILDREN[kind])
        wait_for(
            f"{kind} restored",
            lambda kind=kind, old=old: (
                (ns.get(kind, CHILDREN[kind]) or {}).get("metadata", {}).get("uid")
                not in (None, old["metadata"]["uid"])
            ),
        )
    ns.kubectl("patch", "hpa", "tasks", "--type=merge", "-p", '{"spec":{"maxReplicas":99}}')
    wait_for("HPA drift repaired", lambda: (ns.get("hpa", "tasks") or {})["spec"]["maxReplicas"] == 20)
    ns.kubectl("patch", "configmap", "tasks-config", "--type=merge", "-p", '{"data":{"agent.json":"{}"}}')
    wait_for(
        "config drift repaired",
        lambda: "task-manager" in (ns.get("configmap", "tasks-config") or {})["data"]["agent.json"],
    )


ADMISSION_CASES = [
    (
        {"scaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.scaling.minReplicas",
        "minReplicas must be <= maxReplicas",
    ),
    (
        {"pipeline": {"stt": {"provider": "cartesia", "model": "x"}}},
        "spec.pipeline.stt",
        "stt providers must be one of",
    ),
    ({"channels": {"phone": {"numbers": ["+15550100"]}}}, "spec.channels.phone", "toll fraud"),
    ({"agentName": "Not_A_Name"}, "spec.agentName", "should match"),
    ({"scaling": {"targetSessionsPerPod": 0}}, "spec.scaling.targetSessionsPerPod", "should be greater than or equal"),
    (
        {"scaling": {"targetSessionsPerPod": 5, "maxSessionsPerPod": 4}},
        "spec.scaling.targetSessionsPerPod",
        "targetSessionsPerPod must be <= maxSessionsPerPod",
    ),
    ({"scaling": {"maxSessionsPerPod": 0}}, "spec.scaling.maxSessionsPerPod", "should be greater than or equal"),
]


@pytest.mark.parametrize(("change", "path", "message"), ADMISSION_CASES)
def test_invalid_specs_are_rejected_at_admission_with_the_field(
    ns: Namespace, change: dict[str, Any], path: str, message: str
) -> None:
    agent = example("VoiceAgent")
    for key, value in change.items():
        agent["spec"][key] = {**agent["spec"].get(key, {}), **value} if isinstance(value, dict) else value
    result = ns.apply(agent)
    assert result.returncode != 0
    assert path in result.stderr and message in result.stderr, result.stderr
    assert ns.get("voiceagent", "tasks") is None


def test_invalid_policy_override_is_rejected(ns: Namespace) -> None:
    policy = example("ProviderPolicy")
    policy["spec"]["override"] = {"stt": "nope"}
    result = ns.apply(policy)
    assert result.returncode != 0 and "override.stt must name a provider" in result.stderr, result.stderr


def test_invalid_spec_beyond_the_schema_keeps_the_running_fleet(ns: Namespace) -> None:
    assert ns.apply(*examples()).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    before = ns.get("deployment", "tasks")
    assert before is not None
    ns.kubectl(
        "patch",
        "voiceagent",
        "tasks",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"env": [{"name": "LIVEKIT_URL", "value": "ws://elsewhere"}]}}),
    )
    cond = ns.wait_condition("voiceagent", "tasks", "Ready", "False", "InvalidSpec")
    assert "spec.env[0].name: LIVEKIT_URL is set by the operator" in cond["message"]
    after = ns.get("deployment", "tasks")
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["status"]["readyReplicas"] == 2
    ns.kubectl("patch", "voiceagent", "tasks", "--type=json", "-p", '[{"op":"remove","path":"/spec/env"}]')
    ns.wait_condition("voiceagent", "tasks", "Ready", "True")


def test_missing_policy_and_secret_are_conditions_that_heal(ns: Namespace) -> None:
    docs = {d["metadata"]["name"]: d for d in examples()}
    assert ns.apply(docs["tasks"]).returncode == 0
    ns.wait_condition("voiceagent", "tasks", "Ready", "False", "PolicyNotFound")
    assert ns.apply(docs["default"]).returncode == 0
    ns.wait_condition("voiceagent", "tasks", "Ready", "False", "SecretNotFound")
    assert ns.get("deployment", "tasks") is None  # nothing half-made while references are missing
    assert ns.apply(docs["livekit-credentials"], docs["provider-keys"]).returncode == 0
    ns.wait_condition("voiceagent", "tasks", "Ready", "True")


def test_policy_override_is_reported_and_removing_it_hands_back(ns: Namespace) -> None:
    assert ns.apply(*examples()).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    ns.kubectl(
        "patch",
        "providerpolicy",
        "default",
        "--type=merge",
        "-p",
        '{"spec":{"override":{"stt":"whisper","reason":"deepgram incident"}}}',
    )
    wait_for(
        "agent reports whisper",
        lambda: (ns.get("voiceagent", "tasks") or {})["status"]["providers"]["stt"] == "whisper",
    )
    ns.wait_condition("providerpolicy", "default", "Ready", "True", "OverrideActive")
    ns.kubectl("patch", "providerpolicy", "default", "--type=json", "-p", '[{"op":"remove","path":"/spec/override"}]')
    wait_for(
        "agent back on deepgram",
        lambda: (ns.get("voiceagent", "tasks") or {})["status"]["providers"]["stt"] == "deepgram",
    )


def test_deleting_the_agent_garbage_collects_children(ns: Namespace) -> None:
    assert ns.apply(*examples()).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    ns.kubectl("delete", "voiceagent", "tasks")
    for kind, name in CHILDREN.items():
        wait_for(f"{kind}/{name} collected", lambda kind=kind, name=name: ns.get(kind, name) is None)


def test_operator_killed_mid_reconcile_converges_after_restart(ns: Namespace, operator: OperatorProcess) -> None:
    assert ns.apply(*examples()).returncode == 0
    wait_for("reconcile started", lambda: ns.get("configmap", "tasks-config"), every=0.05)
    operator.stop(signal.SIGKILL)
    ns.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p", '{"spec":{"scaling":{"maxReplicas":9}}}')
    operator.start()
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    wait_for("edit made while down applied", lambda: (ns.get("hpa", "tasks") or {})["spec"]["maxReplicas"] == 9)
    assert "voicefleet_operator_reconciles_total" in operator.metrics()


def test_external_autoscaler_removes_our_hpa_and_back(ns: Namespace) -> None:
    assert ns.apply(*examples()).returncode == 0
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    ns.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p", '{"spec":{"scaling":{"autoscaler":"External"}}}')
    wait_for("our HPA deleted", lambda: ns.get("hpa", "tasks") is None)
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    ns.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p", '{"spec":{"scaling":{"autoscaler":"HPA"}}}')
    wait_for("HPA back", lambda: ns.get("hpa", "tasks") is not None)
