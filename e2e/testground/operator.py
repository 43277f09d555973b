"""The voicefleet operator as a real process against a test-ground cluster, as `make run` starts it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from testground import secret_scan
from testground.kube import Cluster
from testground.process import ComponentError, free_port, http_ok

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 90.0, every: float = 0.2) -> T:
    """Poll until probe() returns something truthy; fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last  # type: ignore[no-any-return]
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class OperatorProcess:
    """`python -m voicefleet_operator` with its own liveness and metrics ports and a log file."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        env: dict[str, str] | None = None,
        fleet_address: str = "127.0.0.1",
        namespaces: tuple[str, ...] = (),
    ) -> None:
        """`fleet_address`: where the fleet channel listens; host.POD_GATEWAY for agents in real-node pods.
        `namespaces`: serve only these (`--namespace`, as the chart's default install does); none: every one."""
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.fleet_address = fleet_address
        # one per-install key for every start of this operator, as the chart's Secret gives one
        self.env = {"VOICEFLEET_INSTALL_KEY": secrets.token_urlsafe(32), **(env or {})}
        secret_scan.remember(self.env["VOICEFLEET_INSTALL_KEY"])
        self.log_path = log_dir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = self.metrics_port = self.fleet_port = 0

    def start(self, timeout: float = 60) -> None:
        self.health_port, self.metrics_port, self.fleet_port = free_port(), free_port(), free_port()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "voicefleet_operator", "--log-format", "plain",
                    "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
                    "--metrics-port", str(self.metrics_port),
                    "--fleet-listen", f"{self.fleet_address}:{self.fleet_port}", "--fleet-url", self.fleet_url,
                    *(f"--namespace={ns}" for ns in self.namespaces),
                ],
                env={**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not http_ok(self.readiness_url):  # logged in to the API server and watching
            if self.proc.poll() is not None:
                raise ComponentError("operator", f"exited with {self.proc.returncode}", self.log_path)
            if time.monotonic() > deadline:
                raise ComponentError("operator", f"not ready after {timeout}s", self.log_path)
            time.sleep(0.2)

    @property
    def fleet_url(self) -> str:
        """Where agents long-poll the operator for the providers in use."""
        return f"http://{self.fleet_address}:{self.fleet_port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
            return str(response.read().decode())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    @property
    def readiness_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/readyz"


class Namespace:
    """kubectl scoped to one namespace of a test-ground cluster, with polling helpers."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.name, *args, input=input, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.kubectl("get", kind, name, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return dict(json.loads(result.stdout))

    def apply(self, *docs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        secret_scan.remember_docs(docs)
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=False)

    def dump_status_and_events(self) -> Path:
        """Every VoiceAgent's and ProviderPolicy's status and every Event of the namespace, into the cluster's
        logs (for the session's secret scan, before the namespace goes)."""
        path = self.cluster.logs_dir / "namespaces" / f"{self.name}.status-events.log"
        path.parent.mkdir(exist_ok=True)
        found = self.kubectl("get", "voiceagents,providerpolicies,events", "-o", "json", check=False)
        path.write_text(found.stdout + found.stderr)
        return path

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return None

    def wait_condition(
        self, kind: str, name: str, type_: str, status: str, reason: str | None = None
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            cond = self.condition(kind, name, type_)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        found: dict[str, Any] | None = wait_for(f"{kind}/{name} {type_}={status} {reason or ''}", probe)
        assert found is not None
        return found


def load_examples(directory: Path) -> list[dict[str, Any]]:
    """Every document of the YAML files in `directory`, in file order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs
