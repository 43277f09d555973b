"""pytest fixtures for the real test ground: `cluster` (Kubernetes on kwok nodes), `livekit` (livekit-server), and
`node_ground` (a ground of its own with a real kubelet node).

Enable with `pytest_plugins = ["testground.pytest_plugin"]`. Each fixture starts only its own stack, once per
session, under pytest's tmp folder (--testground=fresh, the default: sessions run by different people on one
machine don't share state). --testground=auto reuses a ground started by `python -m testground up` when it is
healthy, else starts one; --testground=reuse requires the running one. $TESTGROUND sets the default.

`node_ground` is module-scoped and separate from `cluster`/`livekit`: a real node takes the whole machine
(testground.host; another session waits for it), so it is held only while the tests that need it run, and pods of
other tests never land on it. Reused from `python -m testground up --real-node` with --testground=auto/reuse.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testground import host, secret_scan
from testground.ground import Ground
from testground.kube import Cluster, KubeStack
from testground.livekit import LiveKit, LiveKitStack
from testground.metrics import Metrics, MetricsStack
from testground.node import RealNode, RealNodeStack
from testground.process import ComponentError
from testground.sip import SipGround, SipStack

_LOGS = pytest.StashKey[dict[str, Path]]()
LOGS = _LOGS  # log folders of the session's stacks, by stack
_FIXTURES = ("cluster", "livekit", "sip", "node_ground", "node_metrics")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("testground")
    group.addoption(
        "--testground",
        choices=("auto", "fresh", "reuse"),
        default=os.environ.get("TESTGROUND", "fresh"),
        help="fresh: start a private ground per session; auto: reuse a running `python -m testground up` ground, "
        "else start one; reuse: require the running one (default: $TESTGROUND or fresh)",
    )
    group.addoption(
        "--testground-dir",
        default=os.environ.get("TESTGROUND_DIR"),
        help="state folder of `python -m testground up` (default: <rootdir>/.testground)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LOGS] = {}


def _running_ground(config: pytest.Config, part: str) -> Ground | None:
    mode = config.getoption("testground")
    if mode == "fresh":
        return None
    root = Path(config.getoption("testground_dir") or config.rootpath / ".testground")
    ground = Ground.load(root)
    if ground and getattr(ground, part) is not None and ground.healthy():
        return ground
    if mode == "reuse":
        raise ComponentError(part, f"no healthy test ground in {root}: run `python -m testground up`")
    return None


@pytest.fixture(scope="session")
def _testground_private_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("testground")


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A real kube-apiserver (RBAC, CEL), controller-manager (GC, Deployments, HPA), scheduler and kwok nodes."""
    logs = request.config.stash[_LOGS]
    ground = _running_ground(request.config, "cluster")
    if ground is not None and ground.cluster is not None:
        logs["cluster"] = ground.cluster.logs_dir
        yield ground.cluster
        return
    root: Path = request.getfixturevalue("_testground_private_root")
    stack = KubeStack(root)
    logs["cluster"] = stack.logs_dir
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def livekit(request: pytest.FixtureRequest) -> Iterator[LiveKit]:
    """A real livekit-server with Redis (so SIP and agent dispatch APIs work), on loopback."""
    logs = request.config.stash[_LOGS]
    ground = _running_ground(request.config, "livekit")
    if ground is not None and ground.livekit is not None:
        logs["livekit"] = ground.livekit.logs_dir
        secret_scan.remember(ground.livekit.api_secret)
        yield ground.livekit
        return
    root: Path = request.getfixturevalue("_testground_private_root")
    stack = LiveKitStack(root)
    logs["livekit"] = stack.logs_dir
    try:
        lk = stack.start()
        secret_scan.remember(lk.api_secret)
        yield lk
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def sip(request: pytest.FixtureRequest, livekit: LiveKit) -> Iterator[SipGround]:
    """livekit-sip for `livekit`, listening on a veth of its own; callers dial it from `sip.netns`."""
    root: Path = request.getfixturevalue("_testground_private_root")
    stack = SipStack(root, livekit=livekit)
    request.config.stash[_LOGS]["sip"] = stack.logs_dir
    try:
        yield stack.start()
    finally:
        stack.stop()


@dataclass(frozen=True)
class NodeGround:
    """A control plane and livekit-server that pods reach, with a real node (and the kwok nodes)."""

    cluster: Cluster
    livekit: LiveKit
    node: RealNode


@pytest.fixture(scope="module")
def node_ground(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeGround]:
    """Takes the machine (host.claim), starts cluster + livekit on the pod network, then the real node; afterwards
    stops them and puts the machine back as found. (tests/e2e shares one per package: its conftest overrides it with
    `node_ground_stack` at package scope. A package-scoped fixture defined here, in a plugin, would live for the
    whole session and hold the machine from every later ground.)"""
    yield from node_ground_stack(request, tmp_path_factory)


def node_ground_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeGround]:
    """The body of `node_ground`, for a fixture of another scope."""
    logs = request.config.stash[_LOGS]
    ground = _running_ground(request.config, "node")
    if ground is not None and ground.node and ground.cluster and ground.livekit:
        logs["node_ground"] = ground.node.logs_dir
        yield NodeGround(ground.cluster, ground.livekit, ground.node)
        return
    root = tmp_path_factory.mktemp("nodeground")
    claim = host.claim(root, wait=420)  # within pytest-timeout's 600 s
    # started one after the other in this thread: processes die with it (PR_SET_PDEATHSIG) if pytest is killed
    kube = KubeStack(root, serve_pods=True)
    livekit = LiveKitStack(root, pod_address=host.POD_GATEWAY)
    node = RealNodeStack(root)
    logs["node_ground"] = kube.logs_dir
    try:
        node.cluster = kube.start()
        node.livekit = livekit.start()
        yield NodeGround(node.cluster, node.livekit, node.start())
    finally:
        node.stop()
        livekit.stop()
        kube.stop()
        host.release(claim)


@pytest.fixture(scope="module")
def node_metrics(
    request: pytest.FixtureRequest, node_ground: NodeGround, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Metrics]:
    """Prometheus scraping the real node's agent pods and prometheus-adapter serving custom.metrics.k8s.io with the
    chart's rules (testground.metrics), for as long as `node_ground`."""
    ground = _running_ground(request.config, "metrics")
    if ground is not None and ground.metrics is not None:
        request.config.stash[_LOGS]["node_metrics"] = ground.metrics.logs_dir
        yield ground.metrics
        return
    stack = MetricsStack(tmp_path_factory.mktemp("metrics"), cluster=node_ground.cluster)
    request.config.stash[_LOGS]["node_metrics"] = stack.logs_dir
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"tg-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        logs = item.config.stash[_LOGS]
        used = [
            f"{name}: {logs[name]}" for name in _FIXTURES if name in getattr(item, "fixturenames", ()) and name in logs
        ]
        if used:
            report.sections.append(("testground logs", "\n".join(used)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    logs = terminalreporter.config.stash.get(_LOGS, {})
    if logs and (terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")):
        for name, path in logs.items():
            terminalreporter.write_line(f"testground {name} logs: {path}")
