"""Golden tests of the pure core: spec in → owned objects out. UPDATE_GOLDEN=1 rewrites the expected files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicefleet_agent import contract
from voicefleet_operator import desired
from voicefleet_operator.models import ProviderPolicy, VoiceAgent

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"


def load(path: Path, kind: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] == kind:
            doc["metadata"].setdefault("namespace", "fleet")
            doc["metadata"].setdefault("uid", "6b0f3a4e-0000-4000-8000-000000000001")
            return dict(doc)
    raise LookupError(kind)


def example_agent(**changes: Any) -> VoiceAgent:
    body = load(ROOT / "examples/20-voiceagent.yaml", "VoiceAgent")
    body["spec"].update(changes)
    return VoiceAgent.model_validate(body)


def example_policy() -> ProviderPolicy:
    return ProviderPolicy.model_validate(load(ROOT / "examples/10-providerpolicy.yaml", "ProviderPolicy"))


def check_golden(name: str, objects: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(objects, sort_keys=False, width=120)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name}: rendered objects differ from {path} (UPDATE_GOLDEN=1 to accept)"


SECRETS = {"livekit-credentials": "101", "provider-keys": "102"}


def test_example_with_policy_golden() -> None:
    inputs = desired.Inputs(agent=example_agent(), policy=example_policy(), secret_versions=SECRETS)
    check_golden("example-with-policy", desired.render(inputs).objects)


def test_minimal_agent_without_policy_golden() -> None:
    body = {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "mini", "namespace": "fleet", "uid": "uid-mini"},
        "spec": {
            "image": "agent:dev",
            "agentName": "mini",
            "livekit": {"url": "ws://127.0.0.1:7880", "secretRef": {"name": "lk"}},
            "pipeline": {
                "stt": {"provider": "deepgram", "model": "nova-3", "secretRef": {"name": "keys", "key": "dg"}},
                "llm": {"provider": "openai", "model": "gpt-4o-mini"},
                "tts": {"provider": "cartesia", "model": "sonic-3", "options": {"voice": "v1"}},
            },
            "env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "TOKEN", "secretKeyRef": {"name": "t"}}],
        },
    }
    inputs = desired.Inputs(agent=VoiceAgent.model_validate(body), secret_versions={"lk": "1", "keys": "2", "t": "3"})
    check_golden("minimal", desired.render(inputs).objects)


FLEET = {"fleet_url": "http://operator:8090", "fleet_token": "tok-en"}


def test_every_child_is_owned_labelled_and_named_deterministically() -> None:
    inputs = desired.Inputs(agent=example_agent(), policy=example_policy(), secret_versions=SECRETS, **FLEET)
    objects = desired.render(inputs).objects
    assert {o["kind"]: o["metadata"]["name"] for o in objects} == desired.names("tasks")
    for obj in objects:
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "voicefleet.io/v1alpha1",
            "kind": "VoiceAgent",
            "name": "tasks",
            "uid": "6b0f3a4e-0000-4000-8000-000000000001",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "voicefleet-operator"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "tasks"


def deployment(inputs: desired.Inputs) -> dict[str, Any]:
    return next(o for o in desired.render(inputs).objects if o["kind"] == "Deployment")


def test_deployment_leaves_replicas_to_the_hpa_and_drains_longer_than_the_drain_timeout() -> None:
    dep = deployment(desired.Inputs(agent=example_agent(drain={"gracePeriodSeconds": 900}), secret_versions=SECRETS))
    assert "replicas" not in dep["spec"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 900


def test_max_sessions_per_pod_reaches_the_agent_config_and_rolls_the_pods() -> None:
    scaling = {"minReplicas": 2, "maxReplicas": 20, "targetSessionsPerPod": 2}
    unset = desired.render(desired.Inputs(agent=example_agent(scaling=scaling), secret_versions=SECRETS))
    capped = desired.render(
        desired.Inputs(agent=example_agent(scaling={**scaling, "maxSessionsPerPod": 3}), secret_versions=SECRETS)
    )
    assert unset.config.max_sessions is None and '"maxSessions"' not in unset.config.to_json()
    assert capped.config.max_sessions == 3
    assert contract.AgentConfig.from_json(capped.config.to_json()).max_sessions == 3
    assert capped.config_hash != unset.config_hash


def test_config_change_changes_the_pod_template_hash_but_secret_rotation_too() -> None:
    base = desired.Inputs(agent=example_agent(), policy=example_policy(), secret_versions=SECRETS)
    annotations = deployment(base)["spec"]["template"]["metadata"]["annotations"]
    other = desired.Inputs(agent=example_agent(agentName="other"), policy=example_policy(), secret_versions=SECRETS)
    rotated = desired.Inputs(
        agent=example_agent(), policy=example_policy(), secret_versions={**SECRETS, "provider-keys": "999"}
    )
    hashes = desired.CONFIG_HASH_ANNOTATION, desired.SECRETS_HASH_ANNOTATION
    other_ann = deployment(other)["spec"]["template"]["metadata"]["annotations"]
    rotated_ann = deployment(rotated)["spec"]["template"]["metadata"]["annotations"]
    assert other_ann[hashes[0]] != annotations[hashes[0]]
    assert rotated_ann[hashes[0]] == annotations[hashes[0]]
    assert rotated_ann[hashes[1]] != annotations[hashes[1]]


def test_config_follows_the_policy_chain_in_order_with_key_env_names() -> None:
    plan = desired.render(desired.Inputs(agent=example_agent(), policy=example_policy(), secret_versions=SECRETS))
    config = contract.AgentConfig.from_json(plan.objects[1]["data"][contract.CONFIG_FILE])
    assert [p.name for p in config.stt] == ["deepgram", "whisper"]
    assert config.stt[0].api_key_env == "VOICEFLEET_STT_0_API_KEY"
    assert config.stt[1].api_key_env is None
    assert config.stt[0].pricing.usd_per_minute == pytest.approx(0.0077)
    assert config.policy_name == "default"
    env = {
        e["name"]: e
        for e in deployment(desired.Inputs(agent=example_agent(), policy=example_policy()))["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["VOICEFLEET_STT_0_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "provider-keys", "key": "deepgram"}
    assert plan.active.stt == "deepgram"


def test_override_is_reported_as_active_without_changing_the_rendered_config() -> None:
    policy = example_policy()
    body = policy.model_dump(by_alias=True)
    body["spec"]["override"] = {"stt": "whisper"}
    pinned = ProviderPolicy.model_validate(body)
    base = desired.render(desired.Inputs(agent=example_agent(), policy=policy, secret_versions=SECRETS))
    flipped = desired.render(desired.Inputs(agent=example_agent(), policy=pinned, secret_versions=SECRETS))
    assert flipped.active.stt == "whisper"
    # The flip must not roll pods: the config (and so the pod template) is unchanged.
    assert flipped.config_hash == base.config_hash


def test_instructions_from_a_config_map_win_and_default_instructions_apply() -> None:
    agent = example_agent(pipeline={**example_agent().spec.pipeline.model_dump(by_alias=True), "instructions": None})
    assert desired.agent_config(desired.Inputs(agent=agent)).instructions == desired.DEFAULT_INSTRUCTIONS
    assert desired.agent_config(desired.Inputs(agent=agent, instructions="Be terse.")).instructions == "Be terse."


def test_reserved_env_names_are_an_invalid_spec_naming_the_field() -> None:
    agent = example_agent(env=[{"name": "A", "value": "1"}, {"name": "LIVEKIT_URL", "value": "ws://x"}])
    with pytest.raises(desired.InvalidSpec, match=r"spec\.env\[1\]\.name: LIVEKIT_URL"):
        desired.render(desired.Inputs(agent=agent))


def test_referenced_secrets_cover_livekit_env_and_policy_providers() -> None:
    agent = example_agent(env=[{"name": "X", "secretKeyRef": {"name": "extra", "key": "k"}}])
    assert desired.referenced_secrets(agent, example_policy()) == {"livekit-credentials", "provider-keys", "extra"}
    assert desired.referenced_secrets(agent, None) == {"livekit-credentials", "extra"}


def test_external_autoscaler_renders_no_hpa_and_marks_ours_for_deletion() -> None:
    agent = example_agent(scaling={"autoscaler": "External", "minReplicas": 2, "maxReplicas": 4})
    plan = desired.render(desired.Inputs(agent=agent, secret_versions=SECRETS))
    assert "HorizontalPodAutoscaler" not in {o["kind"] for o in plan.objects}
    assert plan.absent == [("autoscaling/v2", "HorizontalPodAutoscaler", "tasks")]
    assert "replicas" not in next(o for o in plan.objects if o["kind"] == "Deployment")["spec"]


def test_every_child_name_is_a_valid_service_name_at_the_longest_admitted_agent_name() -> None:
    import re

    from voicefleet_operator.models import AGENT_NAME_MAX, DNS_1035_LABEL

    longest = "a" * AGENT_NAME_MAX
    for kind, child in desired.names(longest).items():
        assert len(child) <= (63 if kind == "Service" else 253), (kind, child)
        assert re.match(DNS_1035_LABEL, child), (kind, child)


def test_instructions_that_would_overflow_the_config_map_are_invalid_spec_naming_the_field() -> None:
    near_limit = "x" * (1024 * 1024 - 100)  # a ConfigMap of instructions can hold this; agent.json adds the rest
    inputs = desired.Inputs(agent=example_agent(), instructions=near_limit, secret_versions=SECRETS)
    with pytest.raises(
        desired.InvalidSpec, match=r"spec\.pipeline\.instructionsConfigMapRef: the rendered agent\.json"
    ):
        desired.render(inputs)


def test_a_policy_follower_gets_its_fleet_token_from_a_secret_mounted_read_only() -> None:
    inputs = desired.Inputs(agent=example_agent(), policy=example_policy(), secret_versions=SECRETS, **FLEET)
    objects = desired.render(inputs).objects
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "tasks-fleet" and secret["data"] == {"token": "dG9rLWVu"}
    assert [o["kind"] for o in objects].index("Secret") < [o["kind"] for o in objects].index("Deployment")
    pod = deployment(inputs)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["VOICEFLEET_VOICEAGENT"] == "tasks"
    assert env["VOICEFLEET_FLEET_TOKEN_FILE"] == "/etc/voicefleet-fleet/token"
    assert "tok-en" not in json.dumps(pod)  # the token only in the Secret, never in the pod spec
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "fleet-token")
    assert mount["readOnly"] and next(v for v in pod["volumes"] if v["name"] == "fleet-token")["secret"] == {
        "secretName": "tasks-fleet",
        "defaultMode": 0o440,
    }
    alone = desired.render(desired.Inputs(agent=example_agent(), secret_versions=SECRETS, **FLEET)).objects
    assert "Secret" not in [o["kind"] for o in alone]
