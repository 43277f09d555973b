"""Fixtures for every tier: the test ground, and ONE operator per test session on its cluster.

Two cluster-wide operators on one cluster would fight over every VoiceAgent (each renders its own fleet URL), so
every directory shares this one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testground import secret_scan
from testground.kube import Cluster
from testground.operator import Namespace, OperatorProcess

pytest_plugins = ["testground.pytest_plugin"]
_BASETEMP = pytest.StashKey[Path]()

ROOT = Path(__file__).resolve().parents[1]
RESYNC_SECONDS = "3"
# kwok pods never poll the fleet channel: their VoiceAgents show FleetConnected=False after this (test_fleet_connected)
FLEET_GRACE_SECONDS = "4"


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crds: None) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        cluster.kubeconfig,
        cluster.logs_dir,
        env={
            "VOICEFLEET_RESYNC_SECONDS": RESYNC_SECONDS,
            "VOICEFLEET_SIP_SWEEP_SECONDS": RESYNC_SECONDS,
            "VOICEFLEET_FLEET_GRACE_SECONDS": FLEET_GRACE_SECONDS,
        },
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess) -> Iterator[Namespace]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    namespace = Namespace(cluster, name)
    yield namespace
    namespace.dump_status_and_events()
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session", autouse=True)
def _remember_basetemp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    request.config.stash[_BASETEMP] = tmp_path_factory.getbasetemp()


def _log_files(config: pytest.Config) -> list[Path]:
    roots = [config.stash[_BASETEMP]] if _BASETEMP in config.stash else []
    plugin = config.pluginmanager.get_plugin("testground.pytest_plugin")
    if plugin is not None:  # the stacks' log folders, also when a running ground is reused
        roots += list(config.stash.get(plugin.LOGS, {}).values())
    return sorted({f for root in roots if root.exists() for f in root.rglob("*.log")})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every log file of the session (operator, agents, livekit, the test ground's components, the status and
    Event dumps of each test namespace) is scanned for every secret value the tests created: any hit fails it."""
    if not secret_scan.SEEN:
        return  # no test made a secret (e.g. unit tests only)
    files, hits = secret_scan.scan(_log_files(session.config), secret_scan.SEEN)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = f"secret scan: {len(secret_scan.SEEN)} secret values, {files} log files, {len(hits)} hits"
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(line, red=bool(hits), green=not hits)
        for hit in hits:
            reporter.write_line(f"  {hit}", red=True)
    if hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
