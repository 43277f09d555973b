"""Fault injection state shared by every offline provider server.

A server holds one `FaultState`. Each request (or WebSocket handshake) takes a `FaultTicket` when it starts, so a
`count`-limited fault applies to exactly that many requests; long-lived WebSockets also read the live state per
message so a runtime switch (say to ``disconnect``) reaches calls that are already open.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    """How a server answers; see the package README for the exact wire behaviour of each."""

    OK = "ok"
    DOWN = "down"
    ERROR5XX = "error5xx"
    SLOW = "slow"
    HANG = "hang"
    DISCONNECT = "disconnect"


@dataclass(frozen=True)
class FaultConfig:
    """A fault setting: the mode plus its parameters."""

    mode: Mode = Mode.OK
    latency_ms: int = 0
    status: int = 503
    disconnect_after: int = 1
    count: int | None = None

    def validated(self) -> FaultConfig:
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if self.disconnect_after < 0:
            raise ValueError("disconnect_after must be >= 0")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1 or null")
        return self


_UPDATABLE = ("mode", "latency_ms", "status", "disconnect_after", "count")


def config_from_payload(current: FaultConfig, payload: dict[str, Any]) -> FaultConfig:
    """Apply a `POST /_control` body to `current`; unknown keys are an error so typos don't pass silently."""
    allowed = {*_UPDATABLE, "target", "for_ms", "reset_counters"}
    unknown = set(payload) - allowed
    if unknown:
        raise ValueError(f"unknown control fields: {sorted(unknown)}")
    changes: dict[str, Any] = {}
    if "mode" in payload:
        changes["mode"] = Mode(str(payload["mode"]))
        if "count" not in payload:
            changes["count"] = None
    for key in ("latency_ms", "status", "disconnect_after"):
        if key in payload:
            changes[key] = int(payload[key])
    if "count" in payload:
        changes["count"] = None if payload["count"] is None else int(payload["count"])
    return replace(current, **changes).validated()


@dataclass(frozen=True)
class FaultTicket:
    """The fault a single request or connection was admitted under."""

    mode: Mode
    latency_ms: int
    status: int
    disconnect_after: int

    @property
    def latency_s(self) -> float:
        return self.latency_ms / 1000


@dataclass
class FaultState:
    """Current fault plus counters; mutated only from the server's event loop."""

    config: FaultConfig = field(default_factory=FaultConfig)
    requests: int = 0
    by_mode: Counter[str] = field(default_factory=Counter)
    by_path: Counter[str] = field(default_factory=Counter)
    ws_connections: int = 0
    ws_active: int = 0
    ws_messages_in: int = 0
    ws_messages_out: int = 0
    aborted_connections: int = 0
    changed_at: float = field(default_factory=time.time)

    def admit(self, path: str) -> FaultTicket:
        """Count a new request and return the fault it runs under, consuming one unit of `count`."""
        cfg = self.config
        self.requests += 1
        self.by_path[path] += 1
        self.by_mode[cfg.mode.value] += 1
        if cfg.count is not None and cfg.mode is not Mode.OK:
            remaining = cfg.count - 1
            self.config = (
                FaultConfig(latency_ms=cfg.latency_ms, status=cfg.status, disconnect_after=cfg.disconnect_after)
                if remaining == 0
                else replace(cfg, count=remaining)
            )
        return FaultTicket(cfg.mode, cfg.latency_ms, cfg.status, cfg.disconnect_after)

    def live(self) -> FaultTicket:
        """The current setting, without counting a request (for per-message checks on open streams)."""
        cfg = self.config
        return FaultTicket(cfg.mode, cfg.latency_ms, cfg.status, cfg.disconnect_after)

    def reset_counters(self) -> None:
        self.requests = 0
        self.by_mode.clear()
        self.by_path.clear()
        self.ws_connections = 0
        self.ws_messages_in = 0
        self.ws_messages_out = 0
        self.aborted_connections = 0

    def snapshot(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "mode": cfg.mode.value,
            "latency_ms": cfg.latency_ms,
            "status": cfg.status,
            "disconnect_after": cfg.disconnect_after,
            "count": cfg.count,
            "changed_at": self.changed_at,
            "counters": {
                "requests": self.requests,
                "by_mode": dict(self.by_mode),
                "by_path": dict(self.by_path),
                "ws_connections": self.ws_connections,
                "ws_active": self.ws_active,
                "ws_messages_in": self.ws_messages_in,
                "ws_messages_out": self.ws_messages_out,
                "aborted_connections": self.aborted_connections,
            },
        }
