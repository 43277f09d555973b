"""Reads served from what the operator's watches already delivered: work proportional to change.

A reconcile reads its VoiceAgent's policy, the resourceVersions of the Secrets it references and its Deployment
(whose rollout figures are the status). The operator watches all three anyway (they are what wakes it), so each
watch event is kept here and the read costs no request; only what no event has shown yet (or what was deleted
since) is read from the API server. Every event is stored before it triggers a reconcile, so a reconcile always
sees at least the state that woke it. A Deployment is also kept from the answer of our own apply, and of the two
the newer one wins (by resourceVersion): a write's answer can be older than a watch event that overtook it.
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
        # per Deployment: the newest body seen (None: deleted) and its resourceVersion
        self.deployments: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}
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
        elif kind == "Deployment":
            self._newer(key, obj, deleted)

    def _newer(self, key: tuple[str, str], obj: dict[str, Any], deleted: bool) -> None:
        """Keep a Deployment unless what is kept is newer; a deletion is kept too, so an older answer cannot
        bring the object back. A resourceVersion that is not a number (never, with etcd) is not cached."""
        try:
            version = int((obj.get("metadata") or {}).get("resourceVersion", ""))
        except ValueError:
            self.deployments.pop(key, None)
            return
        kept = self.deployments.get(key)
        if kept is None or version >= kept[0]:
            self.deployments[key] = (version, None if deleted else _rollout_part(obj))

    async def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        if (kept := self.deployments.get((namespace, name))) is not None and kept[1] is not None:
            self.hits += 1
            return kept[1]
        return await super().deployment(namespace, name)  # not kept: a Deployment no watch of ours shows

    async def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any] | None:
        result = await super().apply(manifest, dry_run=dry_run)
        if result is not None and not dry_run and result.get("kind") == "Deployment":
            meta = result.get("metadata") or {}
            self._newer((str(meta.get("namespace", "")), str(meta.get("name", ""))), result, deleted=False)
        return result

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


def _rollout_part(deployment: dict[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of its Deployment (conditions.Rollout): 1000 whole pod templates are memory for
    nothing."""
    meta = deployment.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "generation", "resourceVersion") if k in meta}
    return {"kind": "Deployment", "metadata": kept, "status": copy.deepcopy(deployment.get("status") or {})}


def _put(cache: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str], obj: dict[str, Any], gone: bool) -> None:
    if gone or (obj.get("metadata") or {}).get("deletionTimestamp"):
        cache.pop(key, None)
    else:
        cache[key] = copy.deepcopy(obj)  # the watch's events of one object arrive in order
