"""The base of every offline provider server: listener, fault middleware, control and health endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web

from .faults import FaultConfig, FaultState, FaultTicket, Mode, config_from_payload

log = logging.getLogger("voicefleet_offline")

TICKET = web.RequestKey("ticket", FaultTicket)
_EXEMPT = ("/_control", "/healthz")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StreamDropped(Exception):
    """Raised inside a stream handler once the fault layer has cut its connection."""


class StreamFault(Exception):
    """Raised inside a stream handler when it must answer with a provider error and close."""

    def __init__(self, status: int) -> None:
        super().__init__(f"injected error {status}")
        self.status = status


class OfflineServer:
    """One provider-compatible HTTP/WebSocket server on 127.0.0.1 with fault injection.

    Use as ``async with DeepgramServer() as srv: srv.provider_url``; ``port=0`` picks a free port.
    """

    service: ClassVar[str] = "base"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fault: FaultConfig | None = None,
        require_auth: bool = True,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port = port
        self.require_auth = require_auth
        self.fault = FaultState(config=(fault or FaultConfig()).validated())
        self._registry: dict[str, OfflineServer] = {self.service: self}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._stopping = asyncio.Event()
        self._revert_task: asyncio.Task[None] | None = None
        self._websockets: set[web.WebSocketResponse] = set()
        self._listening = False

    # -- subclass hooks -------------------------------------------------------------------------

    def routes(self) -> Iterable[web.RouteDef]:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The JSON error body this provider sends with an HTTP error status."""
        return {"error": message, "status": status}

    def authorized(self, request: web.Request) -> bool:
        return True

    @property
    def provider_url(self) -> str:
        """The URL to hand to the provider's plugin as ``base_url``."""
        return self.base_url

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_control"

    def link(self, others: Iterable[OfflineServer]) -> None:
        """Share one control registry so any server's ``/_control`` can target a sibling (e.g. one that is down)."""
        registry = {self.service: self}
        for other in others:
            registry[other.service] = other
        for srv in registry.values():
            srv._registry = registry

    async def start(self) -> None:
        app = web.Application(middlewares=[self._fault_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/_control", self._get_control)
        app.router.add_post("/_control", self._post_control)
        app.add_routes(list(self.routes()))
        # handler_cancellation: a client that gives up cancels its handler (hung requests, Whisper waits).
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        self._stopping = asyncio.Event()
        if self.fault.config.mode is not Mode.DOWN:
            await self._listen()
        elif self._requested_port == 0:
            raise ValueError("starting in mode 'down' needs an explicit port")
        log.info("%s listening on %s (mode %s)", self.service, self.base_url, self.fault.config.mode)

    async def stop(self) -> None:
        self._stopping.set()
        if self._revert_task is not None:
            self._revert_task.cancel()
        for ws in list(self._websockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"server shutting down"), 0.5)
        await self._unlisten()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _listen(self) -> None:
        if self._listening or self._runner is None:
            return
        self._site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        if self._port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self._port = int(sockets[0].getsockname()[1])
        self._listening = True

    async def _unlisten(self) -> None:
        if self._site is not None and self._listening:
            await self._site.stop()
        self._listening = False

    # -- fault control --------------------------------------------------------------------------

    async def set_fault(
        self,
        mode: Mode | str | None = None,
        *,
        latency_ms: int | None = None,
        status: int | None = None,
        disconnect_after: int | None = None,
        count: int | None = None,
        for_ms: int | None = None,
    ) -> dict[str, Any]:
        """Change the fault mode; ``count`` limits it to that many requests, ``for_ms`` reverts to ok after a while."""
        payload: dict[str, Any] = {}
        if mode is not None:
            payload["mode"] = str(mode)
        for key, value in (("latency_ms", latency_ms), ("status", status), ("disconnect_after", disconnect_after)):
            if value is not None:
                payload[key] = value
        if count is not None:
            payload["count"] = count
        await self._apply(config_from_payload(self.fault.config, payload), for_ms)
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"service": self.service, "base_url": self.base_url, **self.fault.snapshot()}

    def reset_counters(self) -> None:
        self.fault.reset_counters()

    async def _apply(self, config: FaultConfig, for_ms: int | None) -> None:
        if self._revert_task is not None:
            self._revert_task.cancel()
            self._revert_task = None
        was_down = self.fault.config.mode is Mode.DOWN
        self.fault.config = config
        self.fault.changed_at = time.time()
        if config.mode is Mode.DOWN and not was_down:
            await self._unlisten()
            self._abort_all()
        elif config.mode is not Mode.DOWN and was_down:
            await self._listen()
        if for_ms is not None and config.mode is not Mode.OK:
            self._revert_task = asyncio.create_task(self._revert_after(for_ms / 1000))

    async def _revert_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._revert_task = None
        await self._apply(replace(self.fault.config, mode=Mode.OK, count=None), None)

    def _abort_all(self) -> None:
        if self._runner is None or self._runner.server is None:
            return
        for handler in self._runner.server.connections:
            transport = handler.transport
            if transport is not None and not transport.is_closing():
                transport.abort()
                self.fault.aborted_connections += 1

    # -- middleware and endpoints -----------------------------------------------------------------

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _EXEMPT:
            return await handler(request)
        ticket = self.fault.admit(request.path)
        request[TICKET] = ticket
        if ticket.mode is Mode.DOWN:
            # a keep-alive connection that outlived the switch to down
            self.abort(request)
            return web.Response(status=503)
        if ticket.mode is Mode.ERROR5XX:
            return self.error_response(ticket.status, "offline provider: injected failure")
        if ticket.mode is Mode.HANG:
            await self.hang()
            self.abort(request)
            return web.Response(status=503)
        if ticket.mode is Mode.SLOW and ticket.latency_ms:
            await asyncio.sleep(ticket.latency_s)
        if self.require_auth and not self.authorized(request):
            return self.error_response(401, "offline provider: missing credentials")
        response = await handler(request)
        if ticket.mode is Mode.DISCONNECT and isinstance(response, web.Response) and not response.prepared:
            return await self._partial_then_abort(request, response, ticket)
        return response

    async def _partial_then_abort(
        self, request: web.Request, response: web.Response, ticket: FaultTicket
    ) -> web.StreamResponse:
        body = response.body if isinstance(response.body, bytes) else b""
        if ticket.disconnect_after == 0:
            self.abort(request)
            return response
        partial = web.StreamResponse(status=response.status, headers=response.headers)
        partial.content_length = len(body)
        await partial.prepare(request)
        await partial.write(body[: len(body) // 2])
        self.abort(request)
        return partial

    def error_response(self, status: int, message: str) -> web.Response:
        return web.json_response(self.error_body(status, message), status=status)

    def abort(self, request: web.Request) -> None:
        """Drop the request's TCP connection without a proper close, the way a crashing provider would."""
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.abort()
            self.fault.aborted_connections += 1

    async def hang(self) -> None:
        """Wait until the server stops; the client giving up cancels this (handler cancellation)."""
        await self._stopping.wait()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self.service, "mode": self.fault.config.mode.value})

    def _targets(self, target: str | None) -> list[OfflineServer]:
        if target is None or target == self.service:
            return [self]
        if target == "all":
            return list(self._registry.values())
        if target in self._registry:
            return [self._registry[target]]
        raise ValueError(f"unknown target {target!r}; known: {sorted(self._registry)} or 'all'")

    def _control_view(self, targets: list[OfflineServer], target: str | None) -> dict[str, Any]:
        if target == "all":
            return {"services": {srv.service: srv.state() for srv in targets}}
        return targets[0].state()

    async def _get_control(self, request: web.Request) -> web.Response:
        target = request.query.get("target")
        try:
            targets = self._targets(target)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(self._control_view(targets, target))

    async def _post_control(self, request: web.Request) -> web.Response:
        try:
            raw = await request.text()
            payload = json.loads(raw) if raw.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("control body must be a JSON object")
            target = payload.get("target")
            targets = self._targets(None if target is None else str(target))
            for_ms = payload.get("for_ms")
            updates = {k: v for k, v in payload.items() if k not in ("target", "for_ms", "reset_counters")}
            planned = [(srv, config_from_payload(srv.fault.config, updates)) for srv in targets]
        except (ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        for srv, config in planned:
            if payload.get("reset_counters"):
                srv.reset_counters()
            if updates or for_ms is not None:
                await srv._apply(config, None if for_ms is None else int(for_ms))
        return web.json_response(self._control_view(targets, None if target is None else str(target)))

    # -- helpers for stream handlers ------------------------------------------------------------------

    def track(self, ws: web.WebSocketResponse) -> None:
        self._websockets.add(ws)
        self.fault.ws_connections += 1
        self.fault.ws_active += 1

    def untrack(self, ws: web.WebSocketResponse) -> None:
        if ws in self._websockets:
            self._websockets.discard(ws)
            self.fault.ws_active -= 1

    def guard(self, request: web.Request) -> StreamGuard:
        return StreamGuard(self, request)


class StreamGuard:
    """Applies faults to one open stream (a WebSocket or a chunked HTTP body), unit by unit.

    The mode a stream was admitted under holds for its lifetime; while it is ``ok`` the server's live mode
    applies, so switching a running server to ``disconnect``/``hang``/``error5xx`` reaches open streams.
    """

    def __init__(self, server: OfflineServer, request: web.Request) -> None:
        self.server = server
        self.request = request
        self.admitted: FaultTicket = request.get(TICKET) or server.fault.live()
        self.sent = 0

    def effective(self) -> FaultTicket:
        if self.admitted.mode not in (Mode.OK, Mode.SLOW):
            return self.admitted
        live = self.server.fault.live()
        if live.mode is Mode.OK and self.admitted.mode is Mode.SLOW:
            return self.admitted
        return live

    async def before_unit(self) -> None:
        """Call before sending each unit; raises `StreamDropped`/`StreamFault` or blocks per the fault."""
        eff = self.effective()
        if eff.mode in (Mode.DISCONNECT, Mode.DOWN) and self.sent >= eff.disconnect_after:
            self.server.abort(self.request)
            raise StreamDropped()
        if eff.mode is Mode.HANG:
            await self.server.hang()
            raise StreamDropped()
        if eff.mode is Mode.ERROR5XX:
            raise StreamFault(eff.status)
        self.sent += 1

    def poll(self) -> None:
        """Check between incoming messages, so a stream with nothing to send still sees a runtime fault."""
        eff = self.effective()
        if eff.mode in (Mode.DISCONNECT, Mode.DOWN) and self.sent >= eff.disconnect_after:
            self.server.abort(self.request)
            raise StreamDropped()
        if eff.mode is Mode.ERROR5XX:
            raise StreamFault(eff.status)

    async def turn_delay(self) -> None:
        """Latency added once per response turn on a stream (first TTS chunk of a context, each STT final)."""
        eff = self.effective()
        if eff.mode is Mode.SLOW and eff.latency_ms:
            await asyncio.sleep(eff.latency_s)

    async def send_json(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        await self.before_unit()
        await ws.send_str(json.dumps(payload))
        self.server.fault.ws_messages_out += 1
