"""Which VoiceAgents a ProviderPolicy event concerns, and how much: work proportional to change.

Agents render a policy's provider chains into their config, and show the providers in use in their status; nothing
else of the policy reaches them. Probe bookkeeping in the policy's status (latencies, last probe), its health-check
and failback settings, and every status write the operator makes itself change neither, so they wake no agent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from voicefleet_operator.applied import digest

_NOT_RENDERED = ("healthCheck", "failback", "override")  # the override reaches agents through the decided providers


class Change(enum.Enum):
    NONE = "none"  # nothing agents render or show
    PROVIDERS = "providers"  # only the providers in use: the agents' status.providers
    RENDER = "render"  # the chains, or the policy appeared or went: a full reconcile of every follower


@dataclass(frozen=True)
class View:
    """What agents see of one policy."""

    chains: str
    active: str


def view(body: dict[str, Any], active: dict[str, str]) -> View:
    spec = {k: v for k, v in (body.get("spec") or {}).items() if k not in _NOT_RENDERED}
    return View(chains=digest(spec), active=digest(sorted(active.items())))


@dataclass
class Followers:
    """The view of every policy as the agents were last told."""

    views: dict[tuple[str, str], View] = field(default_factory=dict)

    def change(self, namespace: str, name: str, seen: View | None, listing: bool = False) -> Change:
        """Fold in a policy event (`seen` None: the policy is gone). `listing`: the operator's initial list, when
        every agent is reconciled by its own resume anyway."""
        key = (namespace, name)
        before = self.views.get(key)
        if seen is None:
            self.views.pop(key, None)
            return Change.RENDER
        self.views[key] = seen
        if before is None:
            return Change.NONE if listing else Change.RENDER
        if before.chains != seen.chains:
            return Change.RENDER
        return Change.PROVIDERS if before.active != seen.active else Change.NONE


def follows(agent: dict[str, Any], policy: str) -> bool:
    return bool(((agent.get("spec") or {}).get("providerPolicyRef") or {}).get("name") == policy)
