"""Pure: settings from the environment, request checks, the per-client rate limit and the LiveKit token itself."""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from livekit import api

from voicefleet_agent import contract

DEFAULT_RATE_PER_MINUTE = 10
DEFAULT_TTL_SECONDS = 600
MAX_BODY_BYTES = 4096
MAX_NAME_LENGTH = 64
# Fields of LiveKit's standard token request that this service decides itself: a caller never picks the room (it
# could join someone else's call), the identity (tasks are kept per identity) or the dispatch.
SERVER_CHOSEN = ("room_name", "participant_identity", "participant_metadata", "participant_attributes", "room_config")
ACCEPTED = ("participant_name",)


class BadRequest(ValueError):
    """A request refused with `status` and a message for the caller (never a credential)."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "status": self.status}


@dataclass(frozen=True)
class Settings:
    livekit_url: str  # as the browser reaches it
    api_key: str
    api_secret: str
    agent_name: str
    allowed_origins: frozenset[str] = frozenset()
    rate_per_minute: int = DEFAULT_RATE_PER_MINUTE
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    shared_secret: str | None = None
    port: int = contract.BROWSER_PORT

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the service's environment; a missing or malformed variable raises ValueError naming it."""

        def need(name: str) -> str:
            value = environ.get(name, "")
            if not value:
                raise ValueError(f"{name} is not set")
            return value

        def number(name: str, default: int) -> int:
            text = environ.get(name, "")
            try:
                value = int(text) if text else default
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a whole number") from None
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
            return value

        origins = frozenset(
            o.strip().rstrip("/") for o in environ.get(contract.ENV_BROWSER_ALLOWED_ORIGINS, "").split(",")
        )
        return cls(
            livekit_url=environ.get(contract.ENV_BROWSER_LIVEKIT_PUBLIC_URL) or need(contract.ENV_LIVEKIT_URL),
            api_key=need(contract.ENV_LIVEKIT_API_KEY),
            api_secret=need(contract.ENV_LIVEKIT_API_SECRET),
            agent_name=need(contract.ENV_AGENT_NAME),
            allowed_origins=origins - {""},
            rate_per_minute=number(contract.ENV_BROWSER_RATE_PER_MINUTE, DEFAULT_RATE_PER_MINUTE),
            ttl_seconds=number(contract.ENV_BROWSER_TOKEN_TTL_SECONDS, DEFAULT_TTL_SECONDS),
            shared_secret=environ.get(contract.ENV_BROWSER_SHARED_SECRET) or None,
            port=number(contract.ENV_BROWSER_PORT, contract.BROWSER_PORT),
        )


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """No Origin (not a browser: curl, a backend) passes; a browser's must be the page's own host or listed."""
    if origin is None:
        return True
    if origin.rstrip("/") in allowed:
        return True
    return bool(host) and urlsplit(origin).netloc == host


def check_secret(expected: str | None, given: str | None) -> None:
    if expected is None:
        return
    if not given:
        raise BadRequest(401, f"missing {contract.BROWSER_SECRET_HEADER} header")
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise BadRequest(401, f"wrong {contract.BROWSER_SECRET_HEADER}")


def parse_request(raw: bytes) -> str:
    """The participant name from a token request body (JSON object, or empty). Raises BadRequest."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return ""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "request body must be a JSON object")
    if chosen := sorted(k for k in body if k in SERVER_CHOSEN):
        raise BadRequest(400, f"{', '.join(chosen)}: chosen by the server, leave it out")
    if unknown := sorted(k for k in body if k not in ACCEPTED):
        raise BadRequest(400, f"unknown field {', '.join(unknown)}; accepted: {', '.join(ACCEPTED)}")
    name = body.get("participant_name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise BadRequest(400, f"participant_name must be printable text of at most {MAX_NAME_LENGTH} characters")
    return name


class RateLimiter:
    """A token bucket per client key: `per_minute` tokens, refilled continuously. Bounded memory: the least
    recently seen clients are forgotten first (a forgotten client starts with a full bucket)."""

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        """0 when the client may have a token now (and it is spent), else the seconds until it may."""
        tokens, seen = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - seen) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


@dataclass(frozen=True)
class Grant:
    room: str
    identity: str
    token: str


def mint(settings: Settings, name: str) -> Grant:
    """A token for a fresh room that dispatches the agent as the room is created; valid for ttl_seconds."""
    room = contract.BROWSER_ROOM_PREFIX + secrets.token_hex(8)
    identity = contract.BROWSER_IDENTITY_PREFIX + secrets.token_hex(8)
    token = (
        api.AccessToken(settings.api_key, settings.api_secret)
        .with_identity(identity)
        .with_name(name or "Browser caller")
        .with_ttl(timedelta(seconds=settings.ttl_seconds))
        .with_grants(
            api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True)
        )
        .with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=settings.agent_name)]))
        .to_jwt()
    )
    return Grant(room=room, identity=identity, token=token)
