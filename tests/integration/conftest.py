"""Fixtures shared by the integration tests: CRDs installed, the operator running, a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testground.operator import Namespace, OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
RESYNC_SECONDS = "3"


@pytest.fixture(scope="session")
def crds(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@pytest.fixture(scope="session")
def operator(cluster: Any, crds: None) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        Path(cluster.kubeconfig), Path(cluster.logs_dir), env={"VOICEFLEET_RESYNC_SECONDS": RESYNC_SECONDS}
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: Any, operator: OperatorProcess) -> Iterator[Namespace]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield Namespace(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false")
