"""What the operator wrote last, per child object: work proportional to change.

A server-side apply of a manifest that is already in place costs an API write and wakes every watcher, yet changes
nothing. The reconciler asks `fresh()` before each apply: the manifest hashes to what we applied last, and the
object as last observed (the apply's answer, then every watch event) still carries the *marker* our apply left —
same uid, same `generation` (where the API server keeps one; else the same spec for kinds with a spec, the HPA and
the Service, whose status updates must not count as drift; else the same `resourceVersion`: ConfigMap,
ServiceAccount, Secret) and the labels, annotations and owner references we set. A deleted or edited child changes
the marker, so drift is still restored at once; the watch event that shows it is also what `observe()` flags as
worth a reconcile. Status-only updates of a child (an HPA's metrics, a PDB's counts) change no marker and wake
nothing, except the Deployment's rollout figures, which the VoiceAgent's status reports.

Pure bookkeeping: no I/O, no clock. One instance lives in the operator process and is lost on restart, when the
first reconcile of each agent applies once more.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
# Applies in flight at once, across all agents. A fleet created at once would otherwise send hundreds of writes
# together; the API server then answers each so late that clients time out and retry, and the retries (each a
# new ClusterIP allocation for a Service) keep it saturated. A bounded queue finishes sooner.
WRITE_CONCURRENCY = 16
Marker = tuple[str, str, str]  # uid, generation or resourceVersion, digest of the metadata we set


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(obj.get("apiVersion", "")), str(obj.get("kind", "")), str(meta.get("namespace", "")),
            str(meta.get("name", "")))  # fmt: skip


def marker(obj: dict[str, Any], owned_metadata: dict[str, Any]) -> Marker:
    """What an object must still show for our last apply to be in place."""
    meta = obj.get("metadata") or {}
    if meta.get("generation"):
        version = str(meta["generation"])
    elif "spec" in obj:  # a spec without a generation (HPA, Service): its status updates are not drift
        version = "spec:" + digest(obj["spec"])
    else:
        version = f"rv:{meta.get('resourceVersion', '')}"
    mine = {
        "labels": {k: (meta.get("labels") or {}).get(k) for k in owned_metadata.get("labels") or {}},
        "annotations": {k: (meta.get("annotations") or {}).get(k) for k in owned_metadata.get("annotations") or {}},
        "ownerReferences": [
            {k: ref.get(k) for k in ("apiVersion", "kind", "name", "uid", "controller")}
            for ref in meta.get("ownerReferences") or []
        ],
    }
    return (str(meta.get("uid", "")), str(version), digest(mine))


def rollout_of(deployment: dict[str, Any]) -> str:
    """The Deployment figures a VoiceAgent's status is computed from."""
    status = deployment.get("status") or {}
    conds = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]
    figures = ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    return digest([(deployment.get("metadata") or {}).get("generation"), [status.get(k) for k in figures], conds])


@dataclass
class _Entry:
    manifest: str  # digest of the manifest we applied
    metadata: dict[str, Any]  # the labels/annotations we set, to read the marker of observed objects
    marker: Marker  # the object as our apply left it


@dataclass(frozen=True)
class _Settled:
    children: tuple[Key, ...]
    at: float  # monotonic time of the reconcile that found nothing to do or fix
    phone: bool  # LiveKit holds objects of this agent: compared on every resync period


@dataclass
class Applied:
    """Per child: the manifest we applied last and the marker it left; per Deployment: the rollout last seen; per
    VoiceAgent: when a reconcile last left it with no problem."""

    entries: dict[Key, _Entry] = field(default_factory=dict)
    seen: dict[Key, Marker] = field(default_factory=dict)
    rollouts: dict[Key, str] = field(default_factory=dict)
    agents: dict[tuple[str, str], _Settled] = field(default_factory=dict)
    skipped: int = 0  # applies saved, for tests and the benchmark
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(WRITE_CONCURRENCY))

    def reconciled(self, namespace: str, name: str, children: list[Key] | None, at: float, phone: bool = False) -> None:
        """A reconcile of the agent ended; `children` None when it left a problem to retry."""
        if children is None:
            self.agents.pop((namespace, name), None)
        else:
            self.agents[(namespace, name)] = _Settled(tuple(children), at, phone)

    def quiet(self, namespace: str, name: str, now: float, period: float, full_every: float) -> bool:
        """True when a periodic resync of the agent has nothing to do: its last reconcile found no problem less
        than `full_every` seconds ago (`period` for a phone agent, whose LiveKit objects no watch shows) and every
        child is still as applied (the watch would have shown drift)."""
        settled = self.agents.get((namespace, name))
        if settled is None or now - settled.at >= (period if settled.phone else full_every):
            return False
        return self.settled(list(settled.children))

    def forget_agent(self, namespace: str, name: str) -> None:
        settled = self.agents.pop((namespace, name), None)
        for key in settled.children if settled else ():
            self.forget(key)

    def fresh(self, manifest: dict[str, Any]) -> bool:
        """True when applying `manifest` would change nothing we know of."""
        key = key_of(manifest)
        entry = self.entries.get(key)
        if entry is None or entry.manifest != digest(manifest):
            return False
        if self.seen.get(key, entry.marker) != entry.marker:
            return False
        self.skipped += 1
        return True

    def record(self, manifest: dict[str, Any], result: dict[str, Any] | None) -> None:
        """Remember a successful apply and the object it returned (None: nothing known, apply next time)."""
        key = key_of(manifest)
        if result is None:
            self.forget(key)
            return
        owned = {k: (manifest.get("metadata") or {}).get(k) or {} for k in ("labels", "annotations")}
        mark = marker(result, owned)
        self.entries[key] = _Entry(digest(manifest), owned, mark)
        self.seen[key] = mark

    def forget(self, key: Key) -> None:
        self.entries.pop(key, None)
        self.seen.pop(key, None)
        self.rollouts.pop(key, None)

    def observe(self, obj: dict[str, Any], deleted: bool, listing: bool = False) -> bool:
        """Fold a watch event of a child in; True when it is worth a reconcile of its owner: the child is gone,
        differs from what we applied (drift), or — a Deployment — its rollout moved. `listing`: an object of a
        (re)list, which matters only when it shows drift from what this process applied."""
        key = key_of(obj)
        entry = self.entries.get(key)
        if listing and entry is None:
            return False
        if deleted:
            self.forget(key)  # applied again by the owner's reconcile
            return True
        rollout_moved = False
        if key[1] == "Deployment":
            rollout = rollout_of(obj)
            rollout_moved = self.rollouts.get(key) != rollout
            self.rollouts[key] = rollout
        if entry is None:
            return rollout_moved  # not applied by this process (yet): the agent's own reconcile covers it
        mark = marker(obj, entry.metadata)
        self.seen[key] = mark
        return mark != entry.marker or rollout_moved

    def settled(self, keys: list[Key]) -> bool:
        """Every one of these children is in place as we last applied it."""
        for key in keys:
            entry = self.entries.get(key)
            if entry is None or self.seen.get(key, entry.marker) != entry.marker:
                return False
        return True


def status_unchanged(old: dict[str, Any], patch: dict[str, Any]) -> bool:
    """True when a merge patch of `patch` onto the status `old` would change nothing (None removes a key)."""
    for name, value in patch.items():
        if value is None:
            if old.get(name) is not None:
                return False
        elif old.get(name) != value:
            return False
    return True
