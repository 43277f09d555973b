"""Reads answered from watch events: no request for what an event already showed, a request for the rest."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.readcache import Watched


class Client:
    """Counts the reads that reach the API server."""

    def __init__(self) -> None:
        self.gets: list[str] = []

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
