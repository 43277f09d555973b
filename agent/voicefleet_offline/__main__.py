"""``python -m voicefleet_offline [all|deepgram|openai|cartesia] ...``: run offline providers until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence

from .cartesia_server import CartesiaServer
from .deepgram_server import DeepgramServer
from .faults import FaultConfig, Mode
from .openai_server import OpenAIServer
from .server import OfflineServer
from .stack import OfflineStack, stack_env
from .whisper import get_engine


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m voicefleet_offline", description=__doc__)
    p.add_argument("service", nargs="?", default="all", choices=["all", "deepgram", "openai", "cartesia"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--stt-port", type=int, default=0, help="Deepgram-compatible server port (0: any free port)")
    p.add_argument("--openai-port", type=int, default=0)
    p.add_argument("--tts-port", type=int, default=0, help="Cartesia-compatible server port")
    p.add_argument("--port", type=int, default=None, help="port of the single service named")
    p.add_argument("--mode", default="ok", choices=[m.value for m in Mode], help="initial fault mode")
    p.add_argument("--latency-ms", type=int, default=0, help="latency added in mode 'slow'")
    p.add_argument("--status", type=int, default=503, help="HTTP status sent in mode 'error5xx'")
    p.add_argument("--disconnect-after", type=int, default=1, help="units sent before a 'disconnect' drop")
    p.add_argument("--min-endpointing-ms", type=int, default=300, help="STT: least silence that ends an utterance")
    p.add_argument("--interim-interval-ms", type=int, default=1000, help="STT: speech between interims (0: off)")
    p.add_argument("--token-delay-ms", type=int, default=0, help="LLM: pause between streamed deltas")
    p.add_argument("--no-preload", action="store_true", help="load Whisper on first use instead of at start")
    p.add_argument("--env-file", default=None, help="also write the export lines here once listening")
    p.add_argument("--log-level", default="INFO")
    return p


def _servers(args: argparse.Namespace, fault: FaultConfig) -> list[OfflineServer]:
    dg = {"min_endpointing_ms": args.min_endpointing_ms, "interim_interval_ms": args.interim_interval_ms}
    oa = {"token_delay_ms": args.token_delay_ms}
    if args.service == "all":
        stack = OfflineStack.create(
            host=args.host,
            stt_port=args.stt_port,
            openai_port=args.openai_port,
            tts_port=args.tts_port,
            fault=fault,
            deepgram_options=dict(dg),
            openai_options=dict(oa),
        )
        return list(stack.servers)
    single: OfflineServer
    if args.service == "deepgram":
        single = DeepgramServer(host=args.host, port=args.port or args.stt_port, fault=fault, **dg)
    elif args.service == "openai":
        single = OpenAIServer(host=args.host, port=args.port or args.openai_port, fault=fault, **oa)
    else:
        single = CartesiaServer(host=args.host, port=args.port or args.tts_port, fault=fault)
    return [single]


def _write_env_file(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".offline-env-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


async def _run(args: argparse.Namespace) -> None:
    fault = FaultConfig(
        mode=Mode(args.mode), latency_ms=args.latency_ms, status=args.status, disconnect_after=args.disconnect_after
    ).validated()
    servers = _servers(args, fault)
    if not args.no_preload and any(isinstance(s, DeepgramServer | OpenAIServer) for s in servers):
        await get_engine().warm_up()
    started: list[OfflineServer] = []
    try:
        for srv in servers:
            await srv.start()
            started.append(srv)
        text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in stack_env(servers).items())
        sys.stdout.write(text)
        sys.stdout.flush()
        if args.env_file:
            _write_env_file(args.env_file, text)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for srv in reversed(started):
            await srv.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every decode at INFO
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
