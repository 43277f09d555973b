"""The write cache: an apply is skipped only while what we applied is still in place."""

from __future__ import annotations

import copy
from typing import Any

from voicefleet_operator.applied import Applied, status_unchanged
from voicefleet_operator.followers import Change, Followers, view


def _manifest(image: str = "agent:1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tasks", "namespace": "ns", "labels": {"app.kubernetes.io/managed-by": "voicefleet"}},
        "spec": {"template": {"spec": {"containers": [{"name": "agent", "image": image}]}}},
    }


def _observed(manifest: dict[str, Any], generation: int = 1, **status: int) -> dict[str, Any]:
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(uid="u1", generation=generation, resourceVersion=str(100 + generation))
    obj["status"] = dict(status)
    return obj


def test_the_same_manifest_is_applied_once() -> None:
    applied = Applied()
    assert not applied.fresh(_manifest())
    applied.record(_manifest(), _observed(_manifest()))
    assert applied.fresh(_manifest())
    assert not applied.fresh(_manifest("agent:2"))


def test_status_updates_of_a_child_wake_nothing_but_a_rollout_does() -> None:
    applied = Applied()
    applied.record(_manifest(), _observed(_manifest()))
    assert applied.observe(_observed(_manifest(), replicas=1), deleted=False)  # the rollout moved
    assert not applied.observe(_observed(_manifest(), replicas=1), deleted=False)  # the same again
    assert applied.fresh(_manifest())


def test_an_edited_child_is_not_fresh_and_wakes_its_owner() -> None:
    applied = Applied()
    applied.record(_manifest(), _observed(_manifest()))
    applied.observe(_observed(_manifest()), deleted=False)
    assert applied.observe(_observed(_manifest(), generation=2), deleted=False)
    assert not applied.fresh(_manifest())


def test_a_label_taken_off_a_child_is_drift() -> None:
    applied = Applied()
    applied.record(_manifest(), _observed(_manifest()))
    applied.observe(_observed(_manifest()), deleted=False)
    edited = _observed(_manifest())
    edited["metadata"]["labels"] = {}
    assert applied.observe(edited, deleted=False)
    assert not applied.fresh(_manifest())


def test_a_deleted_child_is_applied_again() -> None:
    applied = Applied()
    applied.record(_manifest(), _observed(_manifest()))
    assert applied.observe(_observed(_manifest()), deleted=True)
    assert not applied.fresh(_manifest())


def test_a_relisted_child_matters_only_when_it_drifted() -> None:
    applied = Applied()
    other = _manifest()
    other["metadata"]["name"] = "other"
    assert not applied.observe(_observed(other), deleted=False, listing=True)


def test_a_quiet_agent_needs_no_resync_until_the_safety_net_or_drift() -> None:
    applied = Applied()
    applied.record(_manifest(), _observed(_manifest()))
    key = ("apps/v1", "Deployment", "ns", "tasks")
    applied.reconciled("ns", "tasks", [key], at=100.0)
    assert applied.quiet("ns", "tasks", now=150.0, period=60, full_every=600)
    assert not applied.quiet("ns", "tasks", now=701.0, period=60, full_every=600)
    applied.reconciled("ns", "tasks", [key], at=100.0, phone=True)
    assert not applied.quiet("ns", "tasks", now=161.0, period=60, full_every=600)  # LiveKit is due a look
    applied.reconciled("ns", "tasks", [key], at=100.0)
    applied.observe(_observed(_manifest(), generation=2), deleted=False)
    assert not applied.quiet("ns", "tasks", now=150.0, period=60, full_every=600)
    applied.reconciled("ns", "tasks", None, at=160.0)  # a problem: resync every period
    assert not applied.quiet("ns", "tasks", now=161.0, period=60, full_every=600)


def test_a_status_patch_that_changes_nothing_is_recognised() -> None:
    old = {"observedGeneration": 2, "replicas": 2, "phone": {"trunkId": "t"}}
    assert status_unchanged(old, {"observedGeneration": 2, "replicas": 2})
    assert not status_unchanged(old, {"observedGeneration": 3})
    assert not status_unchanged(old, {"phone": None})
    assert status_unchanged({"replicas": 1}, {"phone": None})


def _policy(**spec: Any) -> dict[str, Any]:
    base = {"stt": {"providers": [{"name": "deepgram"}, {"name": "whisper"}]}, "healthCheck": {"intervalSeconds": 5}}
    return {"metadata": {"name": "default", "namespace": "ns"}, "spec": {**base, **spec}, "status": {}}


def test_policy_bookkeeping_wakes_no_agent_and_a_flip_only_their_status() -> None:
    followers = Followers()
    on_deepgram = {"stt": "deepgram"}
    assert followers.change("ns", "default", view(_policy(), on_deepgram), listing=True) is Change.NONE
    probed = _policy()
    probed["status"] = {"providers": [{"name": "deepgram", "lastProbeLatencyMs": 12.0}]}
    assert followers.change("ns", "default", view(probed, on_deepgram)) is Change.NONE
    assert followers.change("ns", "default", view(_policy(healthCheck={"intervalSeconds": 1}), on_deepgram)) is (
        Change.NONE
    )
    pinned = _policy(override={"stt": "whisper"})
    assert followers.change("ns", "default", view(pinned, {"stt": "whisper"})) is Change.PROVIDERS
    chains = _policy(stt={"providers": [{"name": "whisper"}]})
    assert followers.change("ns", "default", view(chains, {"stt": "whisper"})) is Change.RENDER
    assert followers.change("ns", "default", None) is Change.RENDER


def test_a_new_policy_renders_its_waiting_agents() -> None:
    assert Followers().change("ns", "default", view(_policy(), {"stt": "deepgram"})) is Change.RENDER


def test_an_hpa_status_update_is_not_drift_but_a_spec_edit_is() -> None:
    """The API server keeps no generation for HPAs: each status write of the HPA controller (its current metrics, every
    sync with sessions coming and going) is a new resourceVersion, and must not re-apply the HPA."""
    manifest = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "tasks", "namespace": "ns"},
        "spec": {"minReplicas": 2, "maxReplicas": 10},
    }
    applied = Applied()
    answer = copy.deepcopy(manifest)
    answer["metadata"].update(uid="u1", resourceVersion="100")
    applied.record(manifest, answer)
    synced = copy.deepcopy(answer)
    synced["metadata"]["resourceVersion"] = "101"
    synced["status"] = {"currentMetrics": [{"type": "Pods"}], "desiredReplicas": 2}
    assert not applied.observe(synced, deleted=False)
    assert applied.fresh(manifest)
    edited = copy.deepcopy(synced)
    edited["spec"]["maxReplicas"] = 99
    assert applied.observe(edited, deleted=False)
    assert not applied.fresh(manifest)
