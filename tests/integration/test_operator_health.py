"""The operator's health endpoints tell the truth: ready only when logged in and watching, a clear non-zero exit
when the API server stays unusable. Real operator processes, a real API server or a closed port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testground.operator import OperatorProcess
from testground.process import free_port

pytestmark = pytest.mark.integration
EXIT_GAVE_UP = 3  # voicefleet_operator.__main__.EXIT_GAVE_UP


def status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


def test_operator_on_the_test_ground_is_live_and_ready(operator: OperatorProcess) -> None:
    assert status(operator.liveness_url) == (200, "ok\n")
    assert status(operator.readiness_url) == (200, "ok\n")


def test_operator_with_unreachable_api_server_is_live_not_ready_then_exits_non_zero(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{closed}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    health = free_port()
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "voicefleet_operator", "--log-format", "plain",
                "--liveness", f"http://127.0.0.1:{health}/healthz", "--metrics-port", str(free_port()),
                "--fleet-listen", f"127.0.0.1:{free_port()}", "--api-check-seconds", "1", "--give-up-seconds", "20",
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        seen: list[tuple[int, str]] = []
        deadline = time.monotonic() + 60
        while proc.poll() is None and not (seen and seen[-1][0] == 503 and "ConnectError" in seen[-1][1]):
            assert time.monotonic() < deadline, f"no 503 from /readyz within 60 s: {seen[-3:]}"
            seen.append(status(f"http://127.0.0.1:{health}/readyz"))
            time.sleep(0.2)
        assert seen and seen[-1][0] == 503, f"exited {proc.returncode} before /readyz said why: {seen[-3:]}"
        assert all(code != 200 for code, _ in seen), "ready although the API server is unreachable"
        assert status(f"http://127.0.0.1:{health}/healthz") == (200, "ok\n")  # alive: nothing is stuck
        assert proc.wait(timeout=120) == EXIT_GAVE_UP
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "giving up: the API server has been unusable since it started" in text, text[-3000:]
