"""tests/integration: the operator against the real control plane and livekit-server."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testground.livekit import LiveKit
from testground.operator import Namespace

# The tests import their helpers (phone_kit) as a top-level module; pytest runs in importlib mode.
sys.path.insert(0, str(Path(__file__).parent))
from phone_kit import LiveKitView, secrets


@pytest.fixture
def lkview(livekit: LiveKit) -> Iterator[LiveKitView]:
    """What the real livekit-server holds."""
    yield LiveKitView(livekit)


@pytest.fixture
def phone_ns(ns: Namespace, livekit: LiveKit) -> Namespace:
    """A test namespace holding the LiveKit and SIP-auth Secrets of phone_kit's VoiceAgent."""
    assert ns.apply(*secrets(livekit)).returncode == 0
    return ns
