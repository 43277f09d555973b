"""The Argo CD health check (docs/argocd/health.lua) on hand-written statuses; test_install.py runs it on real ones."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from packaging_kit import ROOT, argo_health, hack

NOW = "2026-11-24T12:00:00Z"


def cond(type_: str, status: str, reason: str, message: str = "", generation: int = 2) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
        "observedGeneration": generation,
    }


def agent(generation: int = 2, observed: int | None = 2, *conditions: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "tasks", "namespace": "voice", "generation": generation},
        "spec": {},
        "status": status,
    }


READY = cond("Ready", "True", "Available", "2/2 agent pods ready")
DONE = cond("Progressing", "False", "RolloutComplete", "2/2 agent pods ready")
FINE = cond("Degraded", "False", "AsExpected", "2/2 agent pods ready")

CASES = {
    "ready": (agent(2, 2, READY, DONE, FINE), "Healthy", "Available: 2/2 agent pods ready"),
    "no status yet": (
        {"metadata": {"name": "tasks", "generation": 1}, "spec": {}},
        "Progressing",
        "Waiting for the voicefleet operator to report status",
    ),
    "spec edited, not reconciled yet": (
        agent(3, 2, READY, DONE, FINE),
        "Progressing",
        "Waiting for the operator to reconcile generation 3",
    ),
    "status without observedGeneration": (agent(1, None, READY), "Progressing", None),
    "Ready from an older generation": (
        agent(3, 3, cond("Ready", "True", "Available", generation=2)),
        "Progressing",
        "Ready describes generation 2, not 3",
    ),
    "rolling out": (
        agent(
            2,
            2,
            cond("Ready", "False", "RollingOut", "Rolling out: 1/3 pods updated"),
            cond("Progressing", "True", "RollingOut", "1/3 pods updated"),
            FINE,
        ),
        "Progressing",
        "RollingOut: 1/3 pods updated",
    ),
    "first rollout, no pod ready yet": (
        agent(
            1,
            1,
            cond("Ready", "False", "RollingOut", generation=1),
            cond("Progressing", "True", "RollingOut", "0/2 pods updated", generation=1),
            cond("Degraded", "True", "NoReadyReplicas", "0/2 agent pods ready", generation=1),
        ),
        "Progressing",
        "RollingOut: 0/2 pods updated",
    ),
    "invalid spec": (
        agent(
            2,
            2,
            cond("Ready", "False", "InvalidSpec", "spec.env[0].name: LIVEKIT_URL is set by the operator"),
            cond("Progressing", "False", "InvalidSpec"),
            cond("Degraded", "True", "InvalidSpec", "spec.env[0].name: LIVEKIT_URL is set by the operator"),
        ),
        "Degraded",
        "InvalidSpec: spec.env[0].name: LIVEKIT_URL is set by the operator",
    ),
    "rollout failed": (
        agent(
            2,
            2,
            cond("Ready", "False", "RollingOut"),
            cond("Progressing", "True", "RollingOut"),
            cond("Degraded", "True", "RolloutFailed", "ProgressDeadlineExceeded"),
        ),
        "Degraded",
        "RolloutFailed: ProgressDeadlineExceeded",
    ),
    "all pods lost after rollout": (
        agent(
            2,
            2,
            cond("Ready", "False", "InsufficientReplicas", "0/2 agent pods ready"),
            cond("Progressing", "False", "RolloutComplete"),
            cond("Degraded", "True", "NoReadyReplicas", "0/2 agent pods ready"),
        ),
        "Degraded",
        "NoReadyReplicas: 0/2 agent pods ready",
    ),
    "scaling up to minReplicas": (
        agent(
            2,
            2,
            cond("Ready", "False", "InsufficientReplicas", "1/3 ready; minReplicas is 3"),
            cond("Progressing", "True", "ScalingUp", "1/3 ready; minReplicas is 3"),
            FINE,
        ),
        "Progressing",
        "ScalingUp: 1/3 ready; minReplicas is 3",
    ),
    "provider degraded (issue 5)": (
        agent(2, 2, READY, cond("ProviderDegraded", "True", "ProbesFailing", "deepgram: 3 probes failed")),
        "Degraded",
        "ProbesFailing: deepgram: 3 probes failed",
    ),
    "policy with an on-call override": (
        agent(4, 4, cond("Ready", "True", "OverrideActive", "On-call override in force: stt=whisper", 4)),
        "Healthy",
        "OverrideActive: On-call override in force: stt=whisper",
    ),
    "Ready False with nothing in progress": (
        agent(2, 2, cond("Ready", "False", "PolicyNotFound", "ProviderPolicy default not found")),
        "Degraded",
        "PolicyNotFound: ProviderPolicy default not found",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_health(case: str) -> None:
    obj, status, message = CASES[case]
    health = argo_health(obj)
    assert health["status"] == status, health
    if message is not None:
        assert health["message"] == message


def test_argocd_config_map_installs_the_script_for_both_kinds() -> None:
    doc = yaml.safe_load((ROOT / "docs" / "argocd" / "argocd-cm.yaml").read_text())
    lua = (ROOT / "docs" / "argocd" / "health.lua").read_text()
    assert doc["data"] == {
        "resource.customizations.health.voicefleet.io_VoiceAgent": lua,
        "resource.customizations.health.voicefleet.io_ProviderPolicy": lua,
    }
    sync = hack("charts_sync")
    assert sync.ARGOCD_CM not in sync.stale(), "run `make charts-sync`"


def test_example_applications_point_at_the_charts() -> None:
    apps = list(yaml.safe_load_all((ROOT / "docs" / "argocd" / "application.yaml").read_text()))
    assert all(a["kind"] == "Application" and (ROOT / a["spec"]["source"]["path"]).is_dir() for a in apps)
    wave = {
        a["spec"]["source"]["path"]: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for a in apps
    }
    assert wave["charts/voicefleet-crds"] < wave["charts/voicefleet"] < wave["examples"], "CRDs, operator, fleet"
    crds = next(a for a in apps if a["spec"]["source"]["path"] == "charts/voicefleet-crds")
    assert crds["spec"]["syncPolicy"]["automated"]["prune"] is False
    assert "ServerSideApply=true" in crds["spec"]["syncPolicy"]["syncOptions"]
    operator = next(a for a in apps if a["spec"]["source"]["path"] == "charts/voicefleet")
    values = operator["spec"]["source"]["helm"]["valuesObject"]
    assert set(values) <= set(yaml.safe_load((ROOT / "charts" / "voicefleet" / "values.yaml").read_text()))
