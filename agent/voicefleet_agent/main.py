"""The agent worker: an AgentServer dispatched explicitly by agent name, one voice session per job.

Run with ``python -m voicefleet_agent start`` (fills in PROMETHEUS_MULTIPROC_DIR for local runs) or
``python -m livekit.agents start agent/voicefleet_agent/main.py`` (then PROMETHEUS_MULTIPROC_DIR must already be set,
as it is in the pod). The config comes from the file named by VOICEFLEET_CONFIG.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from livekit.agents import AgentServer, JobContext, JobProcess

from voicefleet_agent import bargein, contract, http, loopwatch, speaking_rate, toolschema
from voicefleet_agent.assistant import TaskAssistant
from voicefleet_agent.config import load_config
from voicefleet_agent.contract import AgentConfig, tasks_token_key
from voicefleet_agent.fleet_client import FleetFollower, presence_follower
from voicefleet_agent.metrics import default_metrics, reap_dead_processes
from voicefleet_agent.session import agent_vad, run_session
from voicefleet_agent.worker_options import preload_local_inference, server_options

REAP_INTERVAL_SECONDS = 15.0
CONFIG = load_config()
log = logging.getLogger("voicefleet_agent")


class Server(AgentServer):
    """An AgentServer whose health endpoint (``/``, the readiness probe) answers 200 only while registered.

    livekit-agents' own ``/`` says OK from the start and while it cannot reach LiveKit; it turns 503 only once it
    gave up (``_connection_failed``), and then the process exits 0. Here ``_connection_failed`` reads "not
    registered (or gave up)", and `gave_up` remembers the give-up for the exit status.
    """

    gave_up = False

    @property
    def _connection_failed(self) -> bool:  # read by livekit-agents' "/" handler (pinned livekit-agents)
        return self.gave_up or not self.registered

    @_connection_failed.setter
    def _connection_failed(self, value: bool) -> None:
        self.gave_up = value

    @property
    def registered(self) -> bool:
        return self.id != "unregistered" and not self._connecting


def prewarm(proc: JobProcess) -> None:
    """Once per job process, before any job: the Silero VAD (bundled with livekit-local-inference, no download),
    the process's SSL context, lazily imported modules and a first LLM round (so no session pays for them on its
    loop), the tools' schemas built once and the speaking-rate estimate vectorized (not on every request, step),
    the tasks token key, and barge-in's prompt pause (``bargein``)."""
    loopwatch.install_from_env(os.environ)
    proc.userdata["vad"] = agent_vad(CONFIG.vad)
    bargein.install()
    proc.userdata["token_key"] = tasks_token_key(os.environ)
    toolschema.install()
    toolschema.warm(TaskAssistant)
    speaking_rate.install()
    http.prewarm()


async def entrypoint(ctx: JobContext) -> None:
    await run_session(ctx, CONFIG, vad=ctx.proc.userdata["vad"], token_key=ctx.proc.userdata["token_key"])


_background: set[asyncio.Task[None]] = set()
_presence: list[FleetFollower] = []


def _on_worker_started() -> None:
    # export every family at 0 from the start: the HPA needs the sessions gauge before the first call
    default_metrics().touch(CONFIG)

    async def reap() -> None:
        while True:
            await asyncio.to_thread(reap_dead_processes)
            await asyncio.sleep(REAP_INTERVAL_SECONDS)

    task = asyncio.get_running_loop().create_task(reap(), name="voicefleet.reap_metrics")
    _background.add(task)
    task.add_done_callback(_background.discard)
    # the pod shows the operator it reaches the fleet channel even while it runs no session (FleetConnected)
    if (follower := presence_follower(CONFIG.policy_name)) is not None:
        _presence.append(follower)


def build_server(config: AgentConfig) -> Server:
    preload_local_inference(config, os.environ)  # before the forkserver starts: it reads this at preload
    server = Server(setup_fnc=prewarm, **server_options(config, os.environ))
    # explicit dispatch: LiveKit only sends this worker jobs for this agent name
    server.rtc_session(entrypoint, agent_name=config.agent_name)
    server.on("worker_started", _on_worker_started)
    return server


server = build_server(CONFIG)


def cli(argv: list[str]) -> int:
    """``start [options]`` / ``console ...`` for this module, via livekit-agents' own CLI."""
    from livekit.agents.__main__ import main as livekit_main

    if argv and argv[0] in ("start", "console"):
        argv = [argv[0], str(Path(__file__).resolve()), *argv[1:]]
    status = livekit_main(argv)
    if server.gave_up:
        url = os.environ.get(contract.ENV_LIVEKIT_URL, "(LIVEKIT_URL unset)")
        log.error("giving up: could not connect and register with LiveKit at %s; see the retries above", url)
        return contract.EXIT_GAVE_UP
    return status


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
