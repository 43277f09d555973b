"""The token service on the real livekit-server: what it issues, that LiveKit honours it, and what it refuses."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from livekit import api, rtc

from testground.livekit import LiveKit
from voicefleet_agent import contract
from voiceroom import LiveKitCredentials, TokenService

from .conftest import AGENT, ALLOWED_ORIGIN, SHARED_SECRET

pytestmark = pytest.mark.integration
KEY = {contract.BROWSER_SECRET_HEADER: SHARED_SECRET}


def test_token_names_a_fresh_room_the_caller_and_the_agent_dispatch(
    token_service: TokenService, livekit: LiveKit
) -> None:
    first, second = token_service.token(headers=KEY), token_service.token(b'{"participant_name": "Ada"}', KEY)
    assert first.status == 200, first.body
    assert set(first.body) == {"server_url", "participant_token"}
    assert first.body["server_url"] == livekit.url
    assert first.headers["Cache-Control"] == "no-store"
    claims = api.TokenVerifier(livekit.api_key, livekit.api_secret).verify(first.body["participant_token"])
    other = api.TokenVerifier(livekit.api_key, livekit.api_secret).verify(second.body["participant_token"])
    assert claims.video is not None and other.video is not None
    assert claims.video.room_join and claims.video.room.startswith(contract.BROWSER_ROOM_PREFIX)
    assert claims.video.room != other.video.room and claims.identity != other.identity
    assert claims.identity.startswith(contract.BROWSER_IDENTITY_PREFIX) and other.name == "Ada"
    assert claims.room_config is not None and [d.agent_name for d in claims.room_config.agents] == [AGENT]

    payload = jwt.decode(first.body["participant_token"], livekit.api_secret, algorithms=["HS256"])
    assert payload["exp"] - payload["nbf"] == 120
    assert abs(payload["nbf"] - time.time()) < 60


async def test_livekit_creates_the_room_with_the_agent_dispatched_on_join(
    token_service: TokenService, livekit: LiveKit
) -> None:
    reply = token_service.token(headers=KEY)
    room_name = api.TokenVerifier(livekit.api_key, livekit.api_secret).verify(reply.body["participant_token"])
    assert room_name.video is not None
    room = rtc.Room()
    await room.connect(reply.body["server_url"], reply.body["participant_token"])
    try:
        creds = LiveKitCredentials.of(livekit)
        async with api.LiveKitAPI(creds.http_url, creds.api_key, creds.api_secret) as lk:
            deadline = time.monotonic() + 20
            while True:
                dispatches = await lk.agent_dispatch.list_dispatch(room_name.video.room)
                if dispatches or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert [d.agent_name for d in dispatches] == [AGENT]
        assert room.name == room_name.video.room
    finally:
        await room.disconnect()


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{}", {}, 401, "missing X-Voicefleet-Key"),
        (b"{}", {contract.BROWSER_SECRET_HEADER: "guess"}, 401, "wrong X-Voicefleet-Key"),
        (b"{}", {**KEY, "Origin": "https://evil.example.com"}, 403, "origin https://evil.example.com is not allowed"),
        (b"{oops", KEY, 400, "not JSON"),
        (b'{"room_name": "someone-elses-call"}', KEY, 400, "room_name: chosen by the server"),
        (b" " * 5000, KEY, 413, "over 4096 bytes"),
    ],
)
def test_bad_token_requests_get_a_clear_4xx_json_and_no_credentials(
    token_service: TokenService, livekit: LiveKit, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    reply = token_service.token(body, headers)
    assert reply.status == status
    assert message in reply.body["error"] and reply.body["status"] == status
    assert livekit.api_secret.encode() not in reply.raw and SHARED_SECRET.encode() not in reply.raw


def test_unknown_paths_and_methods_answer_json(token_service: TokenService) -> None:
    assert token_service.request("GET", contract.BROWSER_TOKEN_PATH).status == 405
    missing = token_service.request("GET", "/nothing-here")
    assert (missing.status, missing.body["status"]) == (404, 404)


def test_cors_allows_the_listed_origin_and_the_page_itself(token_service: TokenService) -> None:
    preflight = token_service.request(
        "OPTIONS",
        contract.BROWSER_TOKEN_PATH,
        headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert contract.BROWSER_SECRET_HEADER in preflight.headers["Access-Control-Allow-Headers"]
    refused = token_service.request("OPTIONS", contract.BROWSER_TOKEN_PATH, headers={"Origin": "https://evil.example"})
    assert refused.status == 403 and "Access-Control-Allow-Origin" not in refused.headers
    own = token_service.token(headers={**KEY, "Origin": f"http://127.0.0.1:{token_service.port}"})
    assert own.status == 200


def test_rate_limit_per_client_answers_429_with_retry_after(
    livekit: LiveKit, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = {contract.ENV_BROWSER_RATE_PER_MINUTE: "2"}
    logs = tmp_path_factory.mktemp("strict-token-service")
    with TokenService(LiveKitCredentials.of(livekit).env(), AGENT, logs, "strict", settings) as strict:
        assert [strict.token().status for _ in range(2)] == [200, 200]
        limited = strict.token()
        assert limited.status == 429 and "too many token requests" in limited.body["error"]
        assert 1 <= int(limited.headers["Retry-After"]) <= 30
