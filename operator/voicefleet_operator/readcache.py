"""Reads served from what the operator's watches already delivered: work proportional to change.

A reconcile reads its VoiceAgent's policy and the resourceVersions of the Secrets it references. The operator
watches both anyway (they are what wakes it), so each watch event is kept here and the read costs no request; only
what no event has shown yet (or what was deleted since) is read from the API server. Every event is stored before
it triggers a reconcile, so a reconcile always sees at least the state that woke it. (The Deployment is read afresh:
a write's answer can be older than a watch event that overtook it, and its rollout figures are the status.)
"""

from __future__ import annotations

import copy
from typing import Any

from voicefleet_operator.kube import Kube


class Watched(Kube):
    """The storage layer, with the policy and Secret-version reads answered from watch events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.secret_versions: dict[tuple[str, str], str] = {}
        self.hits = 0  # reads saved, for tests and the benchmark

    def saw(self, obj: dict[str, Any], deleted: bool) -> None:
        """Keep a watch event of a ProviderPolicy or a Secret."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        kind = obj.get("kind")
        if kind == "ProviderPolicy":
            _put(self.policies, key, obj, deleted)
        elif kind == "Secret":
            if deleted:
                self.secret_versions.pop(key, None)
            else:
                self.secret_versions[key] = str(meta.get("resourceVersion", ""))

    async def provider_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        if (found := self.policies.get((namespace, name))) is not None:
            self.hits += 1
            return found
        return await super().provider_policy(namespace, name)

    async def secret_version(self, namespace: str, name: str) -> str | None:
        if (found := self.secret_versions.get((namespace, name))) is not None:
            self.hits += 1
            return found
        return await super().secret_version(namespace, name)


def _put(cache: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str], obj: dict[str, Any], gone: bool) -> None:
    if gone or (obj.get("metadata") or {}).get("deletionTimestamp"):
        cache.pop(key, None)
    else:
        cache[key] = copy.deepcopy(obj)  # the watch's events of one object arrive in order
