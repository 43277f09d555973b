"""The token service's pure parts: settings, origin and secret checks, request parsing, rate limit, the token."""

from __future__ import annotations

import json
from datetime import timedelta

import jwt
import pytest
from livekit import api

from voicefleet_agent import contract
from voicefleet_browser.tokens import (
    BadRequest,
    RateLimiter,
    Settings,
    check_secret,
    mint,
    origin_allowed,
    parse_request,
)

SECRET = "s3cret-s3cret-s3cret-s3cret-0123"
ENV = {
    contract.ENV_LIVEKIT_URL: "ws://livekit.internal:7880",
    contract.ENV_LIVEKIT_API_KEY: "APIkey",
    contract.ENV_LIVEKIT_API_SECRET: SECRET,
    contract.ENV_AGENT_NAME: "tasks",
}


def test_settings_read_every_knob_from_the_contract_env_names() -> None:
    settings = Settings.from_env(
        {
            **ENV,
            contract.ENV_BROWSER_LIVEKIT_PUBLIC_URL: "wss://lk.example.com",
            contract.ENV_BROWSER_ALLOWED_ORIGINS: "https://a.example.com, https://b.example.com/,",
            contract.ENV_BROWSER_RATE_PER_MINUTE: "3",
            contract.ENV_BROWSER_TOKEN_TTL_SECONDS: "120",
            contract.ENV_BROWSER_SHARED_SECRET: "knock",
        }
    )
    assert settings.livekit_url == "wss://lk.example.com"
    assert settings.allowed_origins == {"https://a.example.com", "https://b.example.com"}
    assert (settings.rate_per_minute, settings.ttl_seconds, settings.shared_secret) == (3, 120, "knock")
    assert Settings.from_env(ENV).livekit_url == ENV[contract.ENV_LIVEKIT_URL]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({k: v for k, v in ENV.items() if k != contract.ENV_LIVEKIT_API_SECRET}, "LIVEKIT_API_SECRET is not set"),
        ({**ENV, contract.ENV_BROWSER_RATE_PER_MINUTE: "ten"}, "is not a whole number"),
        ({**ENV, contract.ENV_BROWSER_TOKEN_TTL_SECONDS: "0"}, "must be at least 1"),
    ],
)
def test_settings_name_the_bad_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_origin_is_the_pages_own_host_or_listed() -> None:
    allowed = frozenset({"https://shop.example.com"})
    assert origin_allowed(None, "svc:8080", allowed)  # not a browser
    assert origin_allowed("http://svc:8080", "svc:8080", allowed)  # the talk page itself
    assert origin_allowed("https://shop.example.com", "svc:8080", allowed)
    assert not origin_allowed("https://evil.example.com", "svc:8080", allowed)
    assert not origin_allowed("http://svc:8081", "svc:8080", frozenset())


def test_secret_check_refuses_missing_and_wrong_keys_with_401() -> None:
    check_secret(None, None)
    check_secret("knock", "knock")
    for given in (None, "", "knock!"):
        with pytest.raises(BadRequest) as refused:
            check_secret("knock", given)
        assert refused.value.status == 401
        assert "knock" not in str(refused.value)


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{", 400, "not JSON"),
        (b"[1]", 400, "must be a JSON object"),
        (b'{"room_name": "someone-elses-call"}', 400, "room_name: chosen by the server"),
        (b'{"participant_identity": "boss"}', 400, "participant_identity: chosen by the server"),
        (b'{"colour": "red"}', 400, "unknown field colour"),
        (b'{"participant_name": 7}', 400, "participant_name must be printable text"),
        (b'{"participant_name": "' + b"x" * 65 + b'"}', 400, "at most 64"),
        (b" " * 5000, 413, "over 4096 bytes"),
    ],
)
def test_bad_token_requests_get_a_clear_4xx(raw: bytes, status: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as refused:
        parse_request(raw)
    assert refused.value.status == status
    assert refused.value.body() == {"error": str(refused.value), "status": status}


def test_empty_and_named_requests_are_accepted() -> None:
    assert parse_request(b"") == ""
    assert parse_request(b"{}") == ""
    assert parse_request(json.dumps({"participant_name": "Ada"}).encode()) == "Ada"


def test_rate_limit_allows_a_burst_then_refills_per_client() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.take("10.0.0.1", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("10.0.0.1", 100.0) == pytest.approx(20.0)  # one token every 20 s
    assert limiter.take("10.0.0.2", 100.0) == 0.0  # another client is not held back
    assert limiter.take("10.0.0.1", 120.0) == 0.0
    assert limiter.take("10.0.0.1", 121.0) > 0


def test_rate_limit_memory_is_bounded() -> None:
    limiter = RateLimiter(per_minute=1, max_clients=2)
    for client in ("a", "b", "c"):
        limiter.take(client, 0.0)
    assert limiter.take("a", 0.0) == 0.0  # forgotten, so a full bucket again
    assert limiter.take("c", 0.0) > 0


def test_token_is_for_a_fresh_room_with_the_agent_dispatched() -> None:
    settings = Settings.from_env({**ENV, contract.ENV_BROWSER_TOKEN_TTL_SECONDS: "300"})
    first, second = mint(settings, "Ada"), mint(settings, "")
    assert first.room != second.room and first.identity != second.identity
    claims = api.TokenVerifier("APIkey", SECRET).verify(first.token)
    assert claims.video is not None and claims.video.room == first.room and claims.video.room_join
    assert claims.identity == first.identity and first.identity.startswith(contract.BROWSER_IDENTITY_PREFIX)
    assert first.room.startswith(contract.BROWSER_ROOM_PREFIX)
    assert claims.name == "Ada"
    assert claims.room_config is not None
    assert [d.agent_name for d in claims.room_config.agents] == ["tasks"]
    with pytest.raises(Exception, match="Signature"):
        api.TokenVerifier("APIkey", "another-secret-another-secret-00").verify(first.token)
    assert timedelta(seconds=300) == settings_ttl(first.token)


def settings_ttl(token: str) -> timedelta:
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    return timedelta(seconds=payload["exp"] - payload["nbf"])
