"""All three offline providers together, and the environment that points the agent at them."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from .cartesia_server import CartesiaServer
from .deepgram_server import DeepgramServer
from .faults import FaultConfig, Mode
from .openai_server import OpenAIServer
from .server import OfflineServer

OFFLINE_API_KEY = "offline-key"


@dataclass
class OfflineStack:
    """Deepgram-, OpenAI- and Cartesia-compatible servers sharing one control registry."""

    deepgram: DeepgramServer
    openai: OpenAIServer
    cartesia: CartesiaServer

    @classmethod
    def create(
        cls,
        *,
        host: str = "127.0.0.1",
        stt_port: int = 0,
        openai_port: int = 0,
        tts_port: int = 0,
        fault: FaultConfig | None = None,
        deepgram_options: dict[str, Any] | None = None,
        openai_options: dict[str, Any] | None = None,
        cartesia_options: dict[str, Any] | None = None,
    ) -> OfflineStack:
        stack = cls(
            DeepgramServer(host=host, port=stt_port, fault=fault, **(deepgram_options or {})),
            OpenAIServer(host=host, port=openai_port, fault=fault, **(openai_options or {})),
            CartesiaServer(host=host, port=tts_port, fault=fault, **(cartesia_options or {})),
        )
        stack.deepgram.link(stack.servers)
        return stack

    @property
    def servers(self) -> tuple[OfflineServer, ...]:
        return (self.deepgram, self.openai, self.cartesia)

    async def start(self) -> None:
        started: list[OfflineServer] = []
        try:
            for srv in self.servers:
                await srv.start()
                started.append(srv)
        except BaseException:
            for srv in reversed(started):
                await srv.stop()
            raise

    async def stop(self) -> None:
        for srv in reversed(self.servers):
            await srv.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def reset(self) -> None:
        """Every server back to ``ok`` with zeroed counters."""
        for srv in self.servers:
            await srv.set_fault(Mode.OK, latency_ms=0, status=503, disconnect_after=1)
            srv.reset_counters()

    def env(self) -> dict[str, str]:
        return stack_env(self.servers)


def stack_env(servers: tuple[OfflineServer, ...] | list[OfflineServer]) -> dict[str, str]:
    """Environment lines for the servers given: provider keys (dummies), base URLs, control URLs."""
    env: dict[str, str] = {}
    for srv in servers:
        if isinstance(srv, DeepgramServer):
            env["DEEPGRAM_API_KEY"] = OFFLINE_API_KEY
            env["DEEPGRAM_BASE_URL"] = srv.provider_url
        elif isinstance(srv, OpenAIServer):
            env["OPENAI_API_KEY"] = OFFLINE_API_KEY
            env["OPENAI_BASE_URL"] = srv.provider_url
        elif isinstance(srv, CartesiaServer):
            env["CARTESIA_API_KEY"] = OFFLINE_API_KEY
            env["CARTESIA_BASE_URL"] = srv.provider_url
        env[f"VOICEFLEET_OFFLINE_{srv.service.upper()}_CONTROL"] = srv.control_url
    return env
