"""Reads served from what the operator's watches already delivered: work proportional to change.

A reconcile reads its VoiceAgent, the agent's policy, the resourceVersions of the Secrets it references and its
Deployment (whose rollout figures are the status). The operator watches all of them anyway (they are what wakes
it), so each watch event is kept here and the read costs no request; only what no event has shown yet (or what was
deleted since) is read from the API server. Every event is stored before it triggers a reconcile, so a reconcile
always sees at least the state that woke it. A VoiceAgent is also kept from the answer of our own status write,
and a Deployment from the answer of our own apply; of an answer and an event the newer one wins (by
resourceVersion): a write's answer can be older than a watch event that overtook it, and a reconcile must never
compare its status with one older than what it wrote last.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from voicefleet_operator.kube import Kube, VoiceAgentResource


class Watched(Kube):
    """The storage layer, with the policy and Secret-version reads answered from watch events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.secret_versions: dict[tuple[str, str], str] = {}
        # per VoiceAgent and per Deployment: the newest body seen (None: deleted) and its resourceVersion
        self.agents: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}
        self.deployments: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}
        self.hits = 0  # reads saved, for tests and the benchmark

    def saw(self, obj: dict[str, Any], deleted: bool) -> None:
        """Keep a watch event of a VoiceAgent, a ProviderPolicy, a Secret or a Deployment."""
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
            _newer(self.deployments, key, obj, deleted, _rollout_part)
        elif kind == "VoiceAgent":
            _newer(self.agents, key, obj, deleted, _without_managed_fields)

    async def voice_agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        if (kept := self.agents.get((namespace, name))) is not None and kept[1] is not None:
            self.hits += 1
            return kept[1]
        found = await super().voice_agent(namespace, name)  # every VoiceAgent it serves is watched: keep it
        if found is not None:
            _newer(self.agents, (namespace, name), found, False, _without_managed_fields)
        return found

    async def voice_agents(self, namespace: str) -> list[dict[str, Any]]:
        """The VoiceAgents of a namespace as their watch events show them, without a LIST of every one (a policy
        or Secret change reaches its agents from here). An agent no event has shown yet is not among them; its own
        first reconcile, which comes after that event, reads the policy and Secrets as they are by then."""
        self.hits += 1
        return [body for (ns, _), (_, body) in list(self.agents.items()) if ns == namespace and body is not None]

    async def patch_status(self, res: Any, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        answer = await super().patch_status(res, namespace, name, status)
        if answer is not None and res is VoiceAgentResource:
            _newer(self.agents, (namespace, name), answer, False, _without_managed_fields)
        return answer

    async def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        if (kept := self.deployments.get((namespace, name))) is not None and kept[1] is not None:
            self.hits += 1
            return kept[1]
        return await super().deployment(namespace, name)  # not kept: a Deployment no watch of ours shows

    async def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any] | None:
        result = await super().apply(manifest, dry_run=dry_run)
        if result is not None and not dry_run and result.get("kind") == "Deployment":
            meta = result.get("metadata") or {}
            key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
            _newer(self.deployments, key, result, False, _rollout_part)
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


Kept = dict[tuple[str, str], tuple[int, dict[str, Any] | None]]


def _newer(
    cache: Kept, key: tuple[str, str], obj: dict[str, Any], deleted: bool, part: Callable[[dict[str, Any]], Any]
) -> None:
    """Keep `part` of an object unless what is kept is newer; a deletion is kept too, so an older answer cannot
    bring the object back. A resourceVersion that is not a number (never, with etcd) is not cached."""
    try:
        version = int((obj.get("metadata") or {}).get("resourceVersion", ""))
    except ValueError:
        cache.pop(key, None)
        return
    kept = cache.get(key)
    if kept is None or version >= kept[0]:
        cache[key] = (version, None if deleted else part(obj))


def _without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without managedFields, which no reconcile reads (half of a VoiceAgent's size)."""
    kept = copy.deepcopy({k: v for k, v in obj.items() if k != "metadata"})
    kept["metadata"] = copy.deepcopy({k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"})
    return kept


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
