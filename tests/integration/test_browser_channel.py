"""The browser channel on the real control plane (kwok nodes): the token service's objects, status and admission."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from testground.operator import Namespace, load_examples, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
ORIGIN = "https://shop.example.com"


def with_browser(browser: dict[str, Any]) -> list[dict[str, Any]]:
    docs = copy.deepcopy(load_examples(ROOT / "examples"))
    for doc in docs:
        if doc["kind"] == "VoiceAgent":
            doc["spec"].setdefault("channels", {})["browser"] = browser
    return docs


def test_enabled_browser_channel_runs_the_token_service_and_shows_its_url(ns: Namespace) -> None:
    assert ns.apply(*with_browser({"enabled": True, "allowedOrigins": [ORIGIN], "ratePerMinute": 5})).returncode == 0
    url = f"http://tasks-browser.{ns.name}.svc:8080/"

    def browser_url() -> str | None:
        va = ns.get("voiceagent", "tasks") or {}
        return ((va.get("status") or {}).get("browser") or {}).get("url")

    assert wait_for("status.browser.url", browser_url) == url
    ns.kubectl("rollout", "status", "deployment/tasks-browser", "--timeout=120s")
    deployment, service = ns.get("deployment", "tasks-browser"), ns.get("service", "tasks-browser")
    assert deployment is not None and service is not None
    assert deployment["metadata"]["ownerReferences"][0]["name"] == "tasks"
    assert deployment["status"]["readyReplicas"] == 1
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VOICEFLEET_BROWSER_ALLOWED_ORIGINS"] == ORIGIN and env["VOICEFLEET_BROWSER_RATE_PER_MINUTE"] == "5"
    assert service["spec"]["ports"][0]["port"] == 8080
    table = ns.kubectl("get", "va", "tasks").stdout
    assert "BROWSER" in table.splitlines()[0] and url in table
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")

    assert ns.apply(*with_browser({"enabled": False})).returncode == 0
    wait_for("token service deleted", lambda: ns.get("deployment", "tasks-browser") is None or None)
    wait_for("its Service deleted", lambda: ns.get("service", "tasks-browser") is None or None)
    wait_for("status.browser removed", lambda: browser_url() is None or None)
    assert ns.get("deployment", "tasks") is not None  # the agents stay


@pytest.mark.parametrize(
    ("browser", "message"),
    [
        ({"enabled": True, "allowedOrigins": ["https://shop.example.com/page"]}, "allowedOrigins"),
        ({"enabled": True, "allowedOrigins": ["*"]}, "allowedOrigins"),
        ({"enabled": True, "ratePerMinute": 0}, "ratePerMinute"),
        ({"enabled": True, "livekitUrl": "ftp://lk.example.com"}, "livekitUrl"),
    ],
)
def test_bad_browser_settings_are_refused_at_admission_naming_the_field(
    ns: Namespace, browser: dict[str, Any], message: str
) -> None:
    docs = [d for d in with_browser(browser) if d["kind"] == "VoiceAgent"]
    result = ns.apply(*docs)
    assert result.returncode != 0, "admitted"
    assert f"spec.channels.browser.{message}" in result.stderr, result.stderr
