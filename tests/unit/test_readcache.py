"""Reads answered from watch events: no request for what an event already showed, a request for the rest."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.kube import VoiceAgentResource
from voicefleet_operator.readcache import Watched


class Client:
    """Counts the reads that reach the API server; a write answers `answer`."""

    def __init__(self) -> None:
        self.gets: list[str] = []
        self.answer: dict[str, Any] = {}

    async def apply(self, obj: Any, field_manager: str, force: bool, dry_run: bool) -> Any:
        answer = self.answer

        class Applied:
            def to_dict(self) -> dict[str, Any]:
                return answer

        return Applied()

    async def get(self, res: Any, name: str, namespace: str) -> Any:
        self.gets.append(name)

        class Found:
            def to_dict(self) -> dict[str, Any]:
                return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"}}

        return Found()


def _obj(kind: str, name: str, rv: str = "1") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


async def test_policy_and_secret_versions_come_from_events_until_deleted() -> None:
    client = Client()
    store = Watched(client)  # type: ignore[arg-type]
    store.saw(_obj("ProviderPolicy", "default", "5"), deleted=False)
    store.saw(_obj("Secret", "keys", "9"), deleted=False)
    assert (await store.provider_policy("ns", "default") or {})["metadata"]["resourceVersion"] == "5"
    assert await store.secret_version("ns", "keys") == "9"
    assert client.gets == []
    store.saw(_obj("Secret", "keys", "10"), deleted=False)
    assert await store.secret_version("ns", "keys") == "10"
    store.saw(_obj("ProviderPolicy", "default"), deleted=True)
    await store.provider_policy("ns", "default")
    await store.secret_version("ns", "other")
    assert client.gets == ["default", "other"]


async def test_the_cache_keeps_its_own_copy() -> None:
    store = Watched(Client())  # type: ignore[arg-type]
    event = _obj("ProviderPolicy", "default")
    store.saw(event, deleted=False)
    event["metadata"]["resourceVersion"] = "99"
    assert (await store.provider_policy("ns", "default") or {})["metadata"]["resourceVersion"] == "1"


MANIFEST = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "tasks", "namespace": "ns"},
    "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {}},
}


def _deployment(rv: str, ready: int) -> dict[str, Any]:
    return {**_obj("Deployment", "tasks", rv), "spec": {"template": {}}, "status": {"readyReplicas": ready}}


async def test_the_deployment_comes_from_the_newest_of_watch_events_and_apply_answers() -> None:
    client = Client()
    store = Watched(client)  # type: ignore[arg-type]
    client.answer = _deployment("12", 0)  # the answer of our write, overtaken by a newer watch event
    store.saw(_deployment("13", 1), deleted=False)
    await store.apply(MANIFEST)
    found = await store.deployment("ns", "tasks")
    assert found is not None and found["status"] == {"readyReplicas": 1}, "the older answer lost"
    assert "spec" not in found, "only what a reconcile reads is kept"
    assert client.gets == []


async def test_a_deleted_deployment_is_read_again_and_an_older_event_cannot_bring_it_back() -> None:
    client = Client()
    store = Watched(client)  # type: ignore[arg-type]
    store.saw(_deployment("20", 1), deleted=True)
    store.saw(_deployment("19", 1), deleted=False)
    await store.deployment("ns", "tasks")
    assert client.gets == ["tasks"]
    client.answer = _deployment("21", 0)  # created again by our apply
    await store.apply(MANIFEST)
    assert (await store.deployment("ns", "tasks") or {})["metadata"]["resourceVersion"] == "21"
    await store.apply(MANIFEST, dry_run=True)
    assert client.gets == ["tasks"]


def _agent(rv: str, ready: str) -> dict[str, Any]:
    body = _obj("VoiceAgent", "tasks", rv)
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    return {**body, "status": {"conditions": [{"type": "Ready", "status": ready}]}}


async def test_a_voice_agent_is_never_older_than_our_last_status_write() -> None:
    """Our status write answers rv 31; the watch event of an earlier write (rv 30) arrives after it and must not
    hide it, or the next reconcile would compare its status with one it already replaced."""
    client = Client()
    store = Watched(client)  # type: ignore[arg-type]
    store.saw(_agent("29", "False"), deleted=False)

    async def patch(res: Any, name: str, obj: Any, namespace: str, patch_type: Any) -> Any:
        class Answer:
            def to_dict(self) -> dict[str, Any]:
                return _agent("31", "True")

        return Answer()

    client.patch = patch  # type: ignore[attr-defined]
    await store.patch_status(VoiceAgentResource, "ns", "tasks", {"conditions": []})
    store.saw(_agent("30", "False"), deleted=False)
    found = await store.voice_agent("ns", "tasks")
    assert found is not None and found["status"]["conditions"][0]["status"] == "True"
    assert "managedFields" not in found["metadata"]
    assert client.gets == []
    store.saw(_agent("32", "True"), deleted=True)
    await store.voice_agent("ns", "tasks")
    assert client.gets == ["tasks"], "deleted: read again"


async def test_the_agents_of_a_namespace_are_those_the_watch_showed() -> None:
    client = Client()
    store = Watched(client)  # type: ignore[arg-type]
    store.saw(_agent("5", "True"), deleted=False)
    store.saw({**_agent("6", "True"), "metadata": {"name": "other", "namespace": "elsewhere", "resourceVersion": "6"}},
              deleted=False)  # fmt: skip
    store.saw({**_agent("7", "True"), "metadata": {"name": "gone", "namespace": "ns", "resourceVersion": "7"}},
              deleted=True)  # fmt: skip
    assert [a["metadata"]["name"] for a in await store.voice_agents("ns")] == ["tasks"]
    assert client.gets == []
