"""The browser channel in the pure core: the token service's Deployment and Service, and what it must not touch."""

from __future__ import annotations

from typing import Any

import pytest

from voicefleet_agent import contract
from voicefleet_operator import desired
from voicefleet_operator.models import BrowserChannelSpec

from .test_desired import SECRETS, check_golden, example_agent, example_policy

BROWSER = {
    "enabled": True,
    "allowedOrigins": ["https://shop.example.com"],
    "ratePerMinute": 5,
    "tokenTtlSeconds": 300,
    "secretRef": {"name": "browser-key", "key": "key"},
    "livekitUrl": "wss://livekit.example.com",
}
WITH_KEY = {**SECRETS, "browser-key": "201"}


def rendered(browser: dict[str, Any] | None, versions: dict[str, str] = WITH_KEY, **extra: Any) -> desired.Desired:
    channels = {"browser": browser} if browser is not None else {}
    agent = example_agent(channels=channels)
    return desired.render(desired.Inputs(agent=agent, policy=example_policy(), secret_versions=versions, **extra))


def by_key(plan: desired.Desired) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in plan.objects}


def test_browser_channel_golden() -> None:
    plan = rendered(BROWSER)
    check_golden("browser", [by_key(plan)[("Deployment", "tasks-browser")], by_key(plan)[("Service", "tasks-browser")]])
    assert plan.browser_url == "http://tasks-browser.fleet.svc:8080/"


def test_browser_is_off_by_default_and_adds_nothing() -> None:
    assert BrowserChannelSpec().enabled is False
    plan = rendered(None)
    assert not any(o["metadata"]["name"].endswith("-browser") for o in plan.objects)
    assert plan.browser_url is None and plan.absent == []


def test_disabling_deletes_the_token_service_only_when_status_showed_it() -> None:
    plan = rendered({"enabled": False}, had_browser=True)
    assert plan.absent == [("apps/v1", "Deployment", "tasks-browser"), ("v1", "Service", "tasks-browser")]


def test_token_service_pods_are_never_selected_by_the_agents_service_pdb_or_deployment() -> None:
    objects = by_key(rendered(BROWSER))
    browser_pod = objects[("Deployment", "tasks-browser")]["spec"]["template"]["metadata"]["labels"]
    for key in (("Service", "tasks-metrics"), ("PodDisruptionBudget", "tasks"), ("Deployment", "tasks")):
        spec = objects[key]["spec"]
        selector = spec.get("selector", {}).get("matchLabels") or spec["selector"]
        assert not all(browser_pod.get(k) == v for k, v in selector.items()), key
    service = objects[("Service", "tasks-browser")]["spec"]["selector"]
    agent_pod = objects[("Deployment", "tasks")]["spec"]["template"]["metadata"]["labels"]
    assert all(browser_pod[k] == v for k, v in service.items())
    assert not all(agent_pod.get(k) == v for k, v in service.items())


def test_the_agent_pods_do_not_roll_when_the_browser_channel_or_its_secret_changes() -> None:
    def agent_template(plan: desired.Desired) -> dict[str, Any]:
        return dict(by_key(plan)[("Deployment", "tasks")]["spec"]["template"])

    without = agent_template(rendered(None, SECRETS))
    assert agent_template(rendered(BROWSER)) == without
    assert agent_template(rendered(BROWSER, {**WITH_KEY, "browser-key": "999"})) == without
    browser_dep = by_key(rendered(BROWSER))[("Deployment", "tasks-browser")]
    rotated = by_key(rendered(BROWSER, {**WITH_KEY, "browser-key": "999"}))[("Deployment", "tasks-browser")]
    hash_of = desired.SECRETS_HASH_ANNOTATION
    annotations = browser_dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations[hash_of] != rotated["spec"]["template"]["metadata"]["annotations"][hash_of]


def test_token_service_env_carries_the_cr_settings_and_the_secrets_only_by_reference() -> None:
    container = by_key(rendered(BROWSER))[("Deployment", "tasks-browser")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert container["command"] == ["python", "-m", contract.BROWSER_MODULE]
    assert env[contract.ENV_AGENT_NAME] == "task-manager"
    assert env[contract.ENV_BROWSER_ALLOWED_ORIGINS] == "https://shop.example.com"
    assert env[contract.ENV_BROWSER_RATE_PER_MINUTE] == "5"
    assert env[contract.ENV_BROWSER_TOKEN_TTL_SECONDS] == "300"
    assert env[contract.ENV_BROWSER_LIVEKIT_PUBLIC_URL] == "wss://livekit.example.com"
    assert env[contract.ENV_BROWSER_SHARED_SECRET] == {"secretKeyRef": {"name": "browser-key", "key": "key"}}
    assert env[contract.ENV_LIVEKIT_API_SECRET]["secretKeyRef"]["name"] == "livekit-credentials"
    assert "browser-key" in desired.referenced_secrets(example_agent(channels={"browser": BROWSER}), None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("allowedOrigins", ["https://shop.example.com/path"], "String should match pattern"),
        ("allowedOrigins", ["*"], "String should match pattern"),
        ("ratePerMinute", 0, "greater than or equal to 1"),
        ("tokenTtlSeconds", 10, "greater than or equal to 60"),
        ("livekitUrl", "ftp://x", "String should match pattern"),
        ("colour", "red", "Extra inputs are not permitted"),
    ],
)
def test_browser_spec_refuses_bad_values(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BrowserChannelSpec.model_validate({"enabled": True, field: value})
