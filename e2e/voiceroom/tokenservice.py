"""The browser channel's token service (``python -m voicefleet_browser``) as a local process next to a VoiceStack."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from testground.process import Process, free_port, http_ok
from voicefleet_agent import contract

STARTUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: dict[str, Any]
    raw: bytes


@dataclass
class TokenService:
    """One token service process on a free loopback port; its log in ``<logs_dir>/<name>.log``."""

    livekit_env: Mapping[str, str]
    agent_name: str
    logs_dir: Path
    name: str = "token-service"
    settings: Mapping[str, str] = field(default_factory=dict)  # contract.ENV_BROWSER_* values

    def start(self) -> Self:
        self.port = free_port()
        env = {
            **self.livekit_env,
            contract.ENV_AGENT_NAME: self.agent_name,
            contract.ENV_BROWSER_PORT: str(self.port),
            **self.settings,
        }
        argv = [sys.executable, "-m", contract.BROWSER_MODULE]
        self.process = Process(self.name, argv, self.logs_dir / f"{self.name}.log", env=env)
        self.process.wait_ready(lambda: http_ok(self.url + contract.BROWSER_HEALTH_PATH.lstrip("/")),
                                STARTUP_TIMEOUT, "serving HTTP")  # fmt: skip
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        req = urllib.request.Request(self.url + path.lstrip("/"), data=body, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw, status, got = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            raw, status, got = err.read(), err.code, dict(err.headers)
        is_json = got.get("Content-Type", "").startswith("application/json")
        return Reply(status, got, json.loads(raw) if is_json else {}, raw)

    def token(self, body: bytes = b"{}", headers: Mapping[str, str] | None = None) -> Reply:
        return self.request(
            "POST", contract.BROWSER_TOKEN_PATH, body, {"Content-Type": "application/json", **(headers or {})}
        )
