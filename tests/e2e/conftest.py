"""The e2e tier's install, shared by its modules: docs/install.md on the test ground's real node
(testground.install)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testground import install
from testground.pytest_plugin import NodeGround


@pytest.fixture(scope="module")
def installed(node_ground: NodeGround) -> Iterator[NodeGround]:
    """make images' images in the node's containerd, then docs/install.md steps 1 and 2 with the offline stack."""
    with install.installed(node_ground):
        yield node_ground
