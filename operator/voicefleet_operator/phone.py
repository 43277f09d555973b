"""Pure: a VoiceAgent's phone channel → the LiveKit SIP inbound trunk and dispatch rule it should own, and the plan
to get there from what LiveKit holds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from voicefleet_operator.installkey import mac
from voicefleet_operator.models import VoiceAgent

OWNER_KEY = "voicefleet.io/owner"
CLUSTER_KEY = "cluster"  # the uid of the cluster's kube-system namespace: which operator install made the object


@dataclass(frozen=True)
class Credentials:
    """Digest-auth credentials, read from the Secret; never logged or put in status. `key`: the per-install key."""

    username: str
    password: str
    key: bytes

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<redacted>)"

    def fingerprint(self) -> str:
        """What LiveKit metadata carries to tell a changed password: keyed with the per-install key, so that who
        reads the metadata cannot test guesses of the password against it."""
        return mac(self.key, "sip-auth", self.username, self.password)[:32]


@dataclass(frozen=True)
class Trunk:
    """An inbound trunk, desired or observed. `id` is empty for a desired one."""

    name: str
    metadata: str
    numbers: tuple[str, ...]
    allowed_addresses: tuple[str, ...]
    auth_username: str
    krisp_enabled: bool
    ringing_timeout_seconds: int
    max_call_duration_seconds: int
    id: str = ""
    credentials: Credentials | None = field(default=None, compare=False)

    def same_as(self, other: Trunk) -> bool:
        """Equal in everything we manage (the password via the fingerprint in metadata)."""
        return _essence(self) == _essence(other)


def _essence(trunk: Trunk) -> tuple[object, ...]:
    return (
        trunk.name,
        trunk.metadata,
        tuple(sorted(trunk.numbers)),
        tuple(sorted(trunk.allowed_addresses)),
        trunk.auth_username,
        trunk.krisp_enabled,
        trunk.ringing_timeout_seconds,
        trunk.max_call_duration_seconds,
    )


@dataclass(frozen=True)
class Rule:
    """A dispatch rule: one room per call, the agent dispatched explicitly by name."""

    name: str
    metadata: str
    trunk_ids: tuple[str, ...]
    room_prefix: str
    agent_name: str
    agent_metadata: str
    id: str = ""

    def same_as(self, other: Rule) -> bool:
        return (self.name, self.metadata, tuple(sorted(self.trunk_ids)), self.room_prefix, self.agent_name,
                self.agent_metadata) == (other.name, other.metadata, tuple(sorted(other.trunk_ids)),
                                         other.room_prefix, other.agent_name, other.agent_metadata)  # fmt: skip


def owner(agent: VoiceAgent) -> str:
    return f"{agent.metadata['namespace']}/{agent.metadata['name']}"


def _marker_of(metadata: str) -> dict[str, object]:
    try:
        data = json.loads(metadata or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def owner_of(metadata: str) -> str | None:
    """The VoiceAgent a LiveKit object belongs to, from our marker in its metadata."""
    value = _marker_of(metadata).get(OWNER_KEY)
    return value if isinstance(value, str) else None


def made_here(metadata: str, cluster: str) -> str | None:
    """The owner of an object this cluster's operator made (markers of before the cluster key count as ours)."""
    data = _marker_of(metadata)
    theirs = data.get(CLUSTER_KEY)
    return owner_of(metadata) if theirs in (None, cluster) else None


def orphans(objects: Sequence[Trunk | Rule], cluster: str, alive: set[str]) -> list[str]:
    """Ids of objects this cluster made for a VoiceAgent not in `alive` (gone, or without a phone channel)."""
    found = []
    for obj in objects:
        who = made_here(obj.metadata, cluster)
        if who is not None and who not in alive:
            found.append(obj.id)
    return sorted(found)


def _marker(agent: VoiceAgent, cluster: str, **extra: str) -> str:
    marker = {OWNER_KEY: owner(agent), "uid": agent.metadata.get("uid", ""), **extra}
    if cluster:
        marker[CLUSTER_KEY] = cluster
    return json.dumps(marker, sort_keys=True)


def desired_trunk(agent: VoiceAgent, credentials: Credentials | None, cluster: str = "") -> Trunk:
    phone = agent.spec.channels.phone
    assert phone is not None
    extra = {"auth": credentials.fingerprint()} if credentials else {}
    return Trunk(
        name=f"voicefleet {owner(agent)}",
        metadata=_marker(agent, cluster, **extra),
        numbers=tuple(sorted(phone.numbers)),
        allowed_addresses=tuple(sorted(phone.allowed_addresses)),
        auth_username=credentials.username if credentials else "",
        krisp_enabled=phone.krisp_enabled,
        ringing_timeout_seconds=phone.ringing_timeout_seconds,
        max_call_duration_seconds=phone.max_call_duration_seconds,
        credentials=credentials,
    )


def desired_rule(agent: VoiceAgent, trunk_id: str, cluster: str = "") -> Rule:
    phone = agent.spec.channels.phone
    assert phone is not None
    return Rule(
        name=f"voicefleet {owner(agent)}",
        metadata=_marker(agent, cluster),
        trunk_ids=(trunk_id,),
        room_prefix=phone.room_prefix,
        agent_name=agent.spec.agent_name,
        agent_metadata=json.dumps(phone.metadata, sort_keys=True) if phone.metadata else "",
    )


@dataclass(frozen=True)
class Step:
    """One change: create (no id), update (id and the desired object) or delete (id only)."""

    action: str
    id: str = ""
    trunk: Trunk | None = None
    rule: Rule | None = None


def conflicts(agent: VoiceAgent, trunks: Sequence[Trunk]) -> dict[str, str]:
    """Numbers the agent wants that another trunk already serves: number → that trunk's owner or name."""
    phone = agent.spec.channels.phone
    wanted = set(phone.numbers) if phone else set()
    me = owner(agent)
    found: dict[str, str] = {}
    for trunk in trunks:
        theirs = owner_of(trunk.metadata)
        if theirs == me:
            continue
        for number in wanted.intersection(trunk.numbers):
            found[number] = f"VoiceAgent {theirs}" if theirs else f"trunk {trunk.name or trunk.id} ({trunk.id})"
    return dict(sorted(found.items()))


def plan_trunk(want: Trunk | None, trunks: Sequence[Trunk], me: str) -> tuple[list[Step], str]:
    """Steps to make our trunks match `want`, and the id of the trunk kept ('' when it is to be created)."""
    mine = sorted((t for t in trunks if owner_of(t.metadata) == me), key=lambda t: t.id)
    if want is None:
        return [Step("delete", t.id) for t in mine], ""
    if not mine:
        return [Step("create", trunk=want)], ""
    keep, extra = mine[0], mine[1:]  # duplicates (e.g. a crash between create and the next list) are removed
    steps = [Step("delete", t.id) for t in extra]
    if not keep.same_as(want):
        steps.append(Step("update", keep.id, trunk=want))
    return steps, keep.id


def plan_rule(want: Rule | None, rules: Sequence[Rule], me: str) -> list[Step]:
    """Steps to make our dispatch rules match `want`."""
    mine = sorted((r for r in rules if owner_of(r.metadata) == me), key=lambda r: r.id)
    if want is None:
        return [Step("delete", r.id) for r in mine]
    if not mine:
        return [Step("create", rule=want)]
    keep, extra = mine[0], mine[1:]
    steps = [Step("delete", r.id) for r in extra]
    if not keep.same_as(want):
        steps.append(Step("update", keep.id, rule=want))
    return steps
