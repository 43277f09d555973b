"""Fixtures for every tier: the test ground, and ONE operator per test session on its cluster.

Two cluster-wide operators on one cluster would fight over every VoiceAgent (each renders its own fleet URL), so
every directory shares this one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testground.kube import Cluster
from testground.operator import Namespace, OperatorProcess

pytest_plugins = ["testground.pytest_plugin"]

ROOT = Path(__file__).resolve().parents[1]
RESYNC_SECONDS = "3"


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crds: None) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        cluster.kubeconfig,
        cluster.logs_dir,
        env={"VOICEFLEET_RESYNC_SECONDS": RESYNC_SECONDS, "VOICEFLEET_SIP_SWEEP_SECONDS": RESYNC_SECONDS},
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess) -> Iterator[Namespace]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield Namespace(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false")
