"""The browser channel against the real test ground: the token service as a local process on livekit-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testground.livekit import LiveKit
from voicefleet_agent import contract
from voiceroom import LiveKitCredentials, TokenService

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

