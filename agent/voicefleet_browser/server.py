"""The token service: POST /api/token mints a LiveKit token, / serves the talk page (aiohttp)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

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

log = logging.getLogger("voicefleet.browser")
STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"/": ("index.html", "text/html"), "/talk.js": ("talk.js", "text/javascript"),
              "/talk.css": ("talk.css", "text/css")}  # fmt: skip
SETTINGS = web.AppKey("settings", Settings)
LIMITER = web.AppKey("limiter", RateLimiter)
CLOCK = web.AppKey[Callable[[], float]]("clock")


def _error(exc: BadRequest, headers: dict[str, str]) -> web.Response:
    if exc.retry_after is not None:
        headers = {**headers, "Retry-After": str(exc.retry_after)}
    return web.json_response(exc.body(), status=exc.status, headers=headers)


def _cors(request: web.Request, settings: Settings) -> dict[str, str]:
    """CORS headers for an allowed cross-origin caller; raises BadRequest(403) for a browser of another origin."""
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, request.host, settings.allowed_origins):
        raise BadRequest(403, f"origin {origin} is not allowed (channels.browser.allowedOrigins)")
    if origin is None:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": f"Content-Type, {contract.BROWSER_SECRET_HEADER}",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


async def preflight(request: web.Request) -> web.Response:
    try:
        return web.Response(status=204, headers=_cors(request, request.app[SETTINGS]))
    except BadRequest as exc:
        return _error(exc, {})


async def token(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    try:
        headers.update(_cors(request, settings))
        wait = request.app[LIMITER].take(request.remote or "unknown", request.app[CLOCK]())
        if wait > 0:
            raise BadRequest(429, "too many token requests from this address", retry_after=max(1, round(wait)))
        check_secret(settings.shared_secret, request.headers.get(contract.BROWSER_SECRET_HEADER))
        if request.content_length is not None and request.content_length > 4096:
            raise BadRequest(413, "request body over 4096 bytes")
        name = parse_request(await request.content.read(4097))
    except BadRequest as exc:
        log.info("token refused: %s %s from %s", exc.status, exc, request.remote)
        return _error(exc, headers)
    grant = mint(settings, name)
    log.info("token issued: room %s identity %s for %s", grant.room, grant.identity, request.remote)
    return web.json_response({"server_url": settings.livekit_url, "participant_token": grant.token}, headers=headers)


async def page(request: web.Request) -> web.StreamResponse:
    filename, content_type = PAGE_FILES[request.path]
    path = STATIC / filename
    if not path.is_file():  # the bundle is a build output (make page), never committed
        log.error("talk page file %s missing: run `make page`", path)
        return web.json_response(
            {"error": f"{filename} missing from this build (make page)", "status": 500}, status=500
        )
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})


async def health(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:  # 404, 405: JSON like every other refusal
        return web.json_response({"error": exc.reason, "status": exc.status}, status=exc.status)


def make_app(settings: Settings, clock: Callable[[], float] = time.monotonic) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=4096)
    app[SETTINGS] = settings
    app[LIMITER] = RateLimiter(settings.rate_per_minute)
    app[CLOCK] = clock
    app.router.add_post(contract.BROWSER_TOKEN_PATH, token)
    app.router.add_route("OPTIONS", contract.BROWSER_TOKEN_PATH, preflight)
    app.router.add_get(contract.BROWSER_HEALTH_PATH, health)
    for path in PAGE_FILES:
        app.router.add_get(path, page)
    return app
