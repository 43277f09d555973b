"""The browser channel against the real test ground: the token service as a local process on livekit-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testground.livekit import LiveKit
from voicefleet_agent import contract
from voicefleet_offline import espeak
from voiceroom import LiveKitCredentials, TokenService, VoiceStack

ALLOWED_ORIGIN = "https://shop.example.com"
SHARED_SECRET = "knock-knock-0123456789"
AGENT = "browser-test-agent"


@pytest.fixture(scope="module")
def token_service(livekit: LiveKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenService]:
    """A service with a CORS origin and a shared secret; a generous rate limit (tests/browser share 127.0.0.1)."""
    settings = {
        contract.ENV_BROWSER_ALLOWED_ORIGINS: ALLOWED_ORIGIN,
        contract.ENV_BROWSER_SHARED_SECRET: SHARED_SECRET,
        contract.ENV_BROWSER_RATE_PER_MINUTE: "600",
        contract.ENV_BROWSER_TOKEN_TTL_SECONDS: "120",
    }
    logs = tmp_path_factory.mktemp("token-service")
    with TokenService(LiveKitCredentials.of(livekit).env(), AGENT, logs, settings=settings) as service:
        yield service


@pytest.fixture(scope="module")
def voice_stack(livekit: LiveKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoiceStack]:
    """A real agent worker (offline providers, tasks server) on the ground's livekit-server; module-scoped, and under
    its own agent name, so that LiveKit never dispatches the page to tests/realroom's worker (a session-scoped one
    that is still registered when the tests run in another order)."""
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")
    root = tmp_path_factory.mktemp("voiceroom")
    with VoiceStack(root, LiveKitCredentials.of(livekit), agent_name="voiceroom-browser") as stack:
        yield stack


@pytest.fixture(scope="module")
def talk_service(voice_stack: VoiceStack, livekit: LiveKit) -> Iterator[TokenService]:
    """The token service and talk page for the stack's agent, as a local process (defaults: no secret, no extra
    origins)."""
    with TokenService(LiveKitCredentials.of(livekit).env(), voice_stack.agent_name, voice_stack.logs_dir) as service:
        yield service
