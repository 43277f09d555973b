"""A real livekit-server with Redis on loopback, with a generated API key and secret."""

from __future__ import annotations

import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testground import binaries, host
from testground.process import Stack, free_port, http_ok


@dataclass(frozen=True)
class LiveKit:
    """A running livekit-server: where it listens and the credentials that sign its tokens."""

    url: str
    http_url: str
    api_key: str
    api_secret: str
    redis: str
    logs_dir: Path
    rtc_udp_port: int
    rtc_tcp_port: int
    pod_url: str | None = None  # with a real node: the same server at the pod bridge's gateway (ws://10.247.0.1:…)

    def env(self) -> dict[str, str]:
        """The variables LiveKit SDKs and livekit-agents read."""
        return {"LIVEKIT_URL": self.url, "LIVEKIT_API_KEY": self.api_key, "LIVEKIT_API_SECRET": self.api_secret}

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "http_url": self.http_url,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "redis": self.redis,
            "logs_dir": str(self.logs_dir),
            "rtc_udp_port": self.rtc_udp_port,
            "rtc_tcp_port": self.rtc_tcp_port,
            "pod_url": self.pod_url,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LiveKit:
        return cls(**{**data, "logs_dir": Path(data["logs_dir"])})


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def livekit_config(
    *,
    http_port: int,
    udp_port: int,
    tcp_port: int,
    redis: str,
    api_key: str,
    api_secret: str,
    pod_address: str | None = None,
) -> dict[str, Any]:
    """livekit-server settings for loopback-only media: a local participant reaches it at 127.0.0.1.

    With `pod_address` (the real node's pod bridge gateway) it also listens there, gathers that interface and
    offers that address in its ICE candidates: a pod cannot send media to 127.0.0.1 (its own loopback), while a
    participant on the host reaches the gateway address as it reaches loopback."""
    return {
        "port": http_port,
        "bind_addresses": ["127.0.0.1", *([pod_address] if pod_address else [])],
        "keys": {api_key: api_secret},
        "redis": {"address": redis},
        "rtc": {
            "udp_port": udp_port,
            "tcp_port": tcp_port,
            # A fixed node IP with use_external_ip off means no STUN lookups (no network here), and the host
            # candidate offered is that address (NAT 1:1). Media sockets are bound per gathered interface: with a
            # real node only the pod bridge's, since a socket bound to 127.0.0.1 cannot answer a pod, while host
            # participants reach the gateway address as they reach loopback.
            "node_ip": pod_address or "127.0.0.1",
            "use_external_ip": False,
            "enable_loopback_candidate": not pod_address,
            "interfaces": {"includes": [host.POD_BRIDGE] if pod_address else ["lo"]},
        },
        "turn": {"enabled": False},
        "logging": {"level": "info"},
    }


@dataclass
class LiveKitStack(Stack[LiveKit]):
    """Starts redis-server and livekit-server under `root`; `stop` ends both."""

    pod_address: str | None = None  # also listen here (host.POD_GATEWAY when the ground has a real node)

    def _start(self) -> LiveKit:
        binaries.ensure_built(binaries.LIVEKIT_BINARIES, self.logs_dir / "build.log")
        work = self.root / "livekit"
        if work.exists():
            shutil.rmtree(work)
        (work / "redis").mkdir(parents=True)

        redis_port = free_port()
        redis = self.supervisor.spawn("redis-server", [
            binaries.redis_binary(), "--bind", "127.0.0.1", "--port", str(redis_port),
            "--save", "", "--appendonly", "no", "--dir", work / "redis", "--daemonize", "no",
        ])  # fmt: skip
        redis.wait_ready(lambda: _redis_pong(redis_port), self.timeout, "answering PING")

        http_port, tcp_port = free_port(), free_port()
        udp_port = free_port(socket.SOCK_DGRAM)
        api_key, api_secret = "API" + secrets.token_hex(6), secrets.token_urlsafe(32)
        address = f"127.0.0.1:{redis_port}"
        config = work / "livekit.yaml"
        config.write_text(yaml.safe_dump(livekit_config(
            http_port=http_port, udp_port=udp_port, tcp_port=tcp_port,
            redis=address, api_key=api_key, api_secret=api_secret, pod_address=self.pod_address,
        )))  # fmt: skip
        config.chmod(0o600)
        server = self.supervisor.spawn("livekit-server", [binaries.binary("livekit-server"), "--config", config])
        http_url = f"http://127.0.0.1:{http_port}"
        server.wait_ready(lambda: http_ok(http_url + "/"), self.timeout, "serving HTTP")
        return LiveKit(
            url=f"ws://127.0.0.1:{http_port}",
            http_url=http_url,
            api_key=api_key,
            api_secret=api_secret,
            redis=address,
            logs_dir=self.logs_dir,
            rtc_udp_port=udp_port,
            rtc_tcp_port=tcp_port,
            pod_url=f"ws://{self.pod_address}:{http_port}" if self.pod_address else None,
        )
