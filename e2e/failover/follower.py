"""One fleet follower in its own OS process, as tiny as an agent's follower can be (aiohttp only).

``python -m failover.follower URL NAMESPACE POLICY AGENT LOG [VOICEAGENT TOKEN_FILE [POD]]`` appends one line per
generation it switches to: ``AGENT GENERATION STT WALLTIME`` (one short O_APPEND write, so lines from many
processes never interleave).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from voicefleet_agent.fleet_client import FleetFollower, FleetTarget


def main(argv: list[str]) -> int:
    url, namespace, policy, agent, log_path = argv[:5]
    voiceagent, token_file = argv[5:7] if len(argv) >= 7 else ("", "")
    pod = argv[7] if len(argv) >= 8 else ""  # the agent pod it speaks for (FleetConnected)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def on_change(generation: int, active: dict[str, str]) -> None:
        now = time.time()
        os.write(fd, f"{agent} {generation} {active.get('stt', '-')} {now:.6f}\n".encode())

    follower = FleetFollower(
        FleetTarget(url, namespace, policy, agent, voiceagent=voiceagent, token_file=token_file, pod=pod),
        on_change=on_change,
        wait_s=25,
    )
    try:
        asyncio.run(follower.run())
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
