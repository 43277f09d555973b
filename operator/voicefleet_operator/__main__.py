"""`python -m voicefleet_operator`: run the operator against the current kubeconfig or in-cluster config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import urllib.parse

import kopf
from kopf._cogs.structs.references import Insights
from kopf._core.engines.peering import Identity
from lightkube import AsyncClient
from prometheus_client import start_http_server

from voicefleet_agent import contract
from voicefleet_operator import handlers  # registers the handlers
from voicefleet_operator.fleetcheck import DEFAULT_GRACE_S
from voicefleet_operator.kube import Kube
from voicefleet_operator.selfcheck import SelfCheck, serve

log = logging.getLogger("voicefleet_operator")
EXIT_GAVE_UP = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicefleet-operator", description=__doc__)
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch only these (default: all)")
    parser.add_argument(
        "--liveness",
        default=os.environ.get("VOICEFLEET_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="where the health endpoints listen: liveness at this URL's host:port + /healthz, readiness + /readyz",
    )
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("VOICEFLEET_METRICS_PORT", "9090")))
    parser.add_argument(
        "--fleet-listen",
        default=os.environ.get(handlers.ENV_FLEET_LISTEN, "0.0.0.0:8090"),
        help="host:port where agents long-poll for the providers in use",
    )
    parser.add_argument(
        "--fleet-url",
        default=os.environ.get(contract.ENV_FLEET_URL, ""),
        help="that address as agent pods reach it, e.g. http://voicefleet-operator.voicefleet.svc:8090 in the "
        "cluster; outside it, an address of this host the pods can reach. Unset: pods do not follow provider "
        "changes, and VoiceAgents that follow a ProviderPolicy show FleetConnected=False, reason NoFleetURL",
    )
    parser.add_argument(
        "--fleet-grace-seconds",
        type=float,
        default=float(os.environ.get(handlers.ENV_FLEET_GRACE, str(DEFAULT_GRACE_S))),
        help="how long a ready agent pod may go without polling the fleet channel before FleetConnected=False",
    )
    parser.add_argument(
        "--api-check-seconds",
        type=float,
        default=float(os.environ.get("VOICEFLEET_API_CHECK_SECONDS", "5")),
        help="how often readiness checks that the API server answers the operator",
    )
    parser.add_argument(
        "--give-up-seconds",
        type=float,
        default=float(os.environ.get("VOICEFLEET_GIVE_UP_SECONDS", "300")),
        help=f"exit with status {EXIT_GAVE_UP} when the API server stays unusable this long",
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default=os.environ.get("VOICEFLEET_LOG", "json"))
    parser.add_argument("--verbose", action="store_true")
    return parser


def identity() -> str:
    """Who this operator is, for kopf. kopf's own default asks the passwd database for the user name, and a
    container's uid (10001) has no entry there: KeyError at start."""
    return os.environ.get("POD_ID") or f"voicefleet-operator@{socket.gethostname()}/{os.getpid()}"


class ApiCheck:
    """One cheap request the operator needs to do its job: list VoiceAgents (logged in, allowed, CRD installed)."""

    def __init__(self, namespaces: list[str]) -> None:
        self.namespace = namespaces[0] if namespaces else None
        self.kube: Kube | None = None

    async def __call__(self) -> None:
        if self.kube is None:  # reads the kubeconfig or in-cluster config; a missing one fails the check
            self.kube = Kube(AsyncClient(field_manager="voicefleet-operator"))
        await self.kube.check(self.namespace)


async def run(args: argparse.Namespace) -> int:
    insights = Insights()
    stop = asyncio.Event()
    gave_up: list[str] = []

    def give_up(reason: str) -> None:
        log.error(reason)
        gave_up.append(reason)
        stop.set()

    state = SelfCheck(
        check=ApiCheck(args.namespace),
        watching=insights.ready_resources.is_set,
        interval=args.api_check_seconds,
        give_up_after=args.give_up_seconds,
    )
    health = urllib.parse.urlsplit(args.liveness)
    runner = await serve(state, health.hostname or "0.0.0.0", health.port or 8080)
    checker = asyncio.create_task(state.run(give_up), name="voicefleet.selfcheck")
    try:
        await kopf.operator(
            standalone=True,  # one active replica: the chart runs a single replica with the Recreate strategy
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            identity=Identity(identity()),
            insights=insights,
            stop_flag=stop,
        )
    finally:
        checker.cancel()
        await runner.cleanup()
    return EXIT_GAVE_UP if gave_up else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ[handlers.ENV_FLEET_LISTEN] = args.fleet_listen
    os.environ[contract.ENV_FLEET_URL] = args.fleet_url
    os.environ[handlers.ENV_FLEET_GRACE] = str(args.fleet_grace_seconds)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    # one line per API request drowns the operator's own (lightkube's client logs as httpx2)
    for chatty in ("httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if not args.fleet_url:
        log.warning("no --fleet-url (%s): agent pods are not told where the fleet channel is and will not follow "
                    "provider changes; VoiceAgents that follow a ProviderPolicy show FleetConnected=False, reason "
                    "NoFleetURL", contract.ENV_FLEET_URL)  # fmt: skip
    start_http_server(args.metrics_port)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
