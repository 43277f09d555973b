"""`python -m voicefleet_operator`: run the operator against the current kubeconfig or in-cluster config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import kopf
from prometheus_client import start_http_server

from voicefleet_operator import handlers  # noqa: F401  (registers the handlers)


def main() -> None:
    parser = argparse.ArgumentParser(prog="voicefleet-operator", description=__doc__)
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch only these (default: all)")
    parser.add_argument("--liveness", default=os.environ.get("VOICEFLEET_LIVENESS", "http://0.0.0.0:8080/healthz"))
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("VOICEFLEET_METRICS_PORT", "9090")))
    parser.add_argument(
        "--fleet-listen",
        default=os.environ.get("VOICEFLEET_FLEET_LISTEN", "0.0.0.0:8090"),
        help="host:port where agents long-poll for the providers in use",
    )
    parser.add_argument(
        "--fleet-url",
        default=os.environ.get("VOICEFLEET_FLEET_URL", ""),
        help="that address as agent pods reach it, e.g. http://voicefleet-operator.voicefleet.svc:8090",
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default=os.environ.get("VOICEFLEET_LOG", "json"))
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    os.environ["VOICEFLEET_FLEET_LISTEN"] = args.fleet_listen
    os.environ["VOICEFLEET_FLEET_URL"] = args.fleet_url
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    # one line per API request drowns the operator's own (lightkube's client logs as httpx2)
    for chatty in ("httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    start_http_server(args.metrics_port)
    asyncio.run(
        kopf.operator(
            standalone=True,  # one active replica: the chart runs a single replica with the Recreate strategy
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
        )
    )


if __name__ == "__main__":
    main()
