"""Fixtures for the failover end-to-end tests: CRDs, the real operator process, the offline providers, a
namespace per test and fleets of follower processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from failover.harness import POLICY, FollowerFleet, OfflineProcess, join_fleet
from testground.operator import Namespace, OperatorProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def failover_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session's one operator (tests/conftest.py): a second one on the same cluster would fight it."""
    return operator


@pytest.fixture(scope="session")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineProcess]:
    stack = OfflineProcess(tmp_path_factory.mktemp("offline"))
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def fns(cluster: Any, failover_operator: OperatorProcess, offline: OfflineProcess) -> Iterator[Namespace]:
    name = f"f-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    namespace = Namespace(cluster, name)
    yield namespace
    namespace.dump_status_and_events()
    offline.fault("deepgram", "ok")
    # stop this test's probes before the next test starts: they share the offline Whisper with it
    cluster.kubectl("-n", name, "delete", "providerpolicy", "--all", "--wait=true", "--timeout=60s", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def followers(
    fns: Namespace, failover_operator: OperatorProcess, tmp_path: Path
) -> Iterator[Callable[[int], FollowerFleet]]:
    started: list[FollowerFleet] = []

    def start(size: int) -> FollowerFleet:
        fleet_pass = join_fleet(fns, tmp_path / "fleet-token")
        log = tmp_path / f"switches-{size}.log"
        fleet = FollowerFleet(failover_operator.fleet_url, fns.name, POLICY, size, log, fleet_pass)
        fleet.start()
        started.append(fleet)
        return fleet

    yield start
    for fleet in started:
        fleet.stop()
