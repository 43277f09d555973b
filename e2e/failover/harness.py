"""Pieces shared by the failover bench and end-to-end tests: the offline provider stack as a process, a policy
document, and a fleet of follower processes whose switch times are collected from one append-only log."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testground import secret_scan

ROOT = Path(__file__).resolve().parents[2]

POLICY = "stt-failover"
KEYS_SECRET = "provider-keys"
OFFLINE_KEY = "offline-key"  # the offline servers want a key present, and do not check its value


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def wait_until(what: str, probe: Callable[[], Any], timeout: float, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class OfflineProcess:
    """``python -m voicefleet_offline all`` on free ports; faults go through the OpenAI server's control endpoint
    (``target``), which stays reachable while Deepgram is ``down``."""

    work: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 90) -> None:
        env_file = self.work / "offline.env"
        env_file.unlink(missing_ok=True)
        log = (self.work / "offline.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voicefleet_offline", "all", "--env-file", str(env_file)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_until("the offline stack", env_file.exists, timeout, every=0.1)
        for line in env_file.read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            if key:
                self.env[key] = value.strip().strip("'\"")

    @property
    def deepgram_url(self) -> str:
        return self.env["DEEPGRAM_BASE_URL"]

    @property
    def openai_url(self) -> str:
        return self.env["OPENAI_BASE_URL"]

    def fault(self, target: str, mode: str, **options: Any) -> dict[str, Any]:
        return _post(self.env["VOICEFLEET_OFFLINE_OPENAI_CONTROL"], {"target": target, "mode": mode, **options})

    def fault_state(self, target: str) -> dict[str, Any]:
        url = f"{self.env['VOICEFLEET_OFFLINE_OPENAI_CONTROL']}?target=all"
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.loads(response.read())["services"][target])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def policy_doc(
    deepgram_url: str,
    whisper_url: str,
    *,
    name: str = POLICY,
    interval_s: int = 1,
    failure_threshold: int = 2,
    recovery_threshold: int = 2,
    hold_s: int = 2,
    latency_threshold_ms: int = 6000,
    timeout_s: int = 6,
) -> dict[str, Any]:
    """A ProviderPolicy whose STT chain is deepgram → whisper on the offline stack (apply ``keys_doc()`` too).

    The 6 s probe timeout is for the offline servers: their Whisper (tiny.en on CPU) answers a probe in 0.5 to 2.5 s on
    two idle cores and slower beside a control plane; a real provider would take the chart's defaults."""
    key = {"name": KEYS_SECRET, "key": "stt"}
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "ProviderPolicy",
        "metadata": {"name": name},
        "spec": {
            "stt": {
                "providers": [
                    {
                        "name": "deepgram",
                        "provider": "deepgram",
                        "model": "nova-3",
                        "baseUrl": deepgram_url,
                        "secretRef": key,
                    },
                    {
                        "name": "whisper",
                        "provider": "whisper",
                        "model": "whisper-1",
                        "baseUrl": whisper_url,
                        "secretRef": key,
                    },
                ]
            },
            "healthCheck": {
                "intervalSeconds": interval_s,
                "timeoutSeconds": timeout_s,
                "latencyThresholdMs": latency_threshold_ms,
                "failureThreshold": failure_threshold,
                "recoveryThreshold": recovery_threshold,
            },
            "failback": {"mode": "Automatic", "holdSeconds": hold_s},
        },
    }


def example_health_check(path: Path = ROOT / "examples" / "10-providerpolicy.yaml") -> dict[str, Any]:
    """The example ProviderPolicy's healthCheck (with the model's defaults filled in) as ``policy_doc`` arguments."""
    from voicefleet_operator.models import HealthCheckSpec

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ProviderPolicy"]
    check = HealthCheckSpec.model_validate(docs[0]["spec"].get("healthCheck") or {})
    return {
        "interval_s": check.interval_seconds,
        "timeout_s": check.timeout_seconds,
        "latency_threshold_ms": check.latency_threshold_ms,
        "failure_threshold": check.failure_threshold,
        "recovery_threshold": check.recovery_threshold,
    }


def keys_doc() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": KEYS_SECRET},
        "stringData": {"stt": OFFLINE_KEY},
    }


MEMBER = "followers"


def member_docs(policy: str = POLICY, name: str = MEMBER) -> list[dict[str, Any]]:
    """A VoiceAgent that follows `policy`: the fleet channel answers only pods of a VoiceAgent, with its token."""
    secret = f"{name}-livekit"
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret},
         "stringData": {"apiKey": "devkey", "apiSecret": "secret"}},
        {"apiVersion": "voicefleet.io/v1alpha1", "kind": "VoiceAgent", "metadata": {"name": name},
         "spec": {"image": "ghcr.io/voicefleet/agent:0.1.0", "agentName": name, "providerPolicyRef": {"name": policy},
                  "livekit": {"url": "ws://127.0.0.1:7880", "secretRef": {"name": secret}},
                  "pipeline": {"stt": {"provider": "deepgram", "model": "nova-3"},
                               "llm": {"provider": "openai", "model": "gpt-4o-mini"},
                               "tts": {"provider": "cartesia", "model": "sonic-3"}},
                  "scaling": {"minReplicas": 1, "maxReplicas": 1}}},
    ]  # fmt: skip


@dataclass(frozen=True)
class FleetPass:
    """Who followers say they are on the fleet channel: a VoiceAgent, and a file with its token."""

    voiceagent: str
    token_file: Path


def join_fleet(ns: Any, token_file: Path, policy: str = POLICY, name: str = MEMBER) -> FleetPass:
    """Create the member VoiceAgent (the policy must exist) and copy its fleet token from the operator's Secret, as
    the kubelet mounts it into agent pods."""
    applied = ns.apply(*member_docs(policy, name))
    assert applied.returncode == 0, applied.stderr

    def token() -> str | None:
        found = ns.kubectl("get", "secret", f"{name}-fleet", "-o", "jsonpath={.data.token}", check=False)
        return base64.b64decode(found.stdout).decode() if found.returncode == 0 and found.stdout else None

    value: str = wait_until(f"the fleet token Secret of VoiceAgent {name}", token, timeout=60, every=0.2)
    secret_scan.remember(value)
    token_file.write_text(value)
    token_file.chmod(0o600)
    return FleetPass(name, token_file)


@dataclass(frozen=True)
class Switch:
    agent: str
    generation: int
    stt: str
    at: float  # wall clock, comparable across processes on one machine


@dataclass
class FollowerFleet:
    """N follower processes (``failover.follower``) of one policy; each appends its switches to one log."""

    url: str
    namespace: str
    policy: str
    size: int
    log: Path
    fleet_pass: FleetPass | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        self.log.unlink(missing_ok=True)
        self.log.touch()
        for i in range(self.size):
            argv = [sys.executable, "-m", "failover.follower", self.url, self.namespace, self.policy]
            argv += [f"follower-{i}", str(self.log)]
            if self.fleet_pass is not None:
                argv += [self.fleet_pass.voiceagent, str(self.fleet_pass.token_file)]
            quiet = subprocess.DEVNULL
            self.procs.append(subprocess.Popen(argv, stdin=quiet, stdout=quiet, stderr=quiet))

    def switches(self) -> list[Switch]:
        out = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                out.append(Switch(parts[0], int(parts[1]), parts[2], float(parts[3])))
        return out

    def on(self, stt: str, generation: int | None = None) -> dict[str, Switch]:
        """Per agent, its latest switch if that put it on ``stt`` (at ``generation`` when given)."""
        latest: dict[str, Switch] = {}
        for s in self.switches():
            latest[s.agent] = s
        return {a: s for a, s in latest.items() if s.stt == stt and (generation is None or s.generation == generation)}

    def wait_all_on(self, stt: str, timeout: float, generation: int | None = None) -> dict[str, Switch]:
        def done() -> dict[str, Switch] | None:
            found = self.on(stt, generation)
            return found if len(found) == self.size else None

        result: dict[str, Switch] = wait_until(f"{self.size} followers on {stt}", done, timeout, every=0.05)
        return result

    def rss_mib(self) -> float:
        total = 0
        for proc in self.procs:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
