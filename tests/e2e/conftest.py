"""The e2e tier's install, shared by its modules (one ground, one install per run): docs/install.md's shell commands
on the test ground's real node (testground.install)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testground import install
from testground.install import (  # noqa: F401 - the tier's modules import these from here
    EXAMPLE_IMAGE,
    FLEET_NS,
    INSTALL_DOC,
    OPERATOR_NS,
    REGISTRY,
    SKIPS,
    TAG,
)
from testground.pytest_plugin import NodeGround, node_ground_stack


def agent_pods(ground: NodeGround) -> list[dict[str, Any]]:
    return install.agent_pods(ground.cluster)


@pytest.fixture(scope="package")
def node_ground(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeGround]:
    """The tier's one real-node ground (tests/e2e is a package, so it goes when its last test has run)."""
    yield from node_ground_stack(request, tmp_path_factory)


@pytest.fixture(scope="package")
def installed(node_ground: NodeGround) -> Iterator[NodeGround]:
    """docs/install.md, every command the ground can run, ending with examples/ applied and `va/tasks` Ready."""
    install.install_as_documented(node_ground)
    yield node_ground
    install.uninstall(node_ground)
