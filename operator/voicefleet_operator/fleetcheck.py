"""Pure: whether a VoiceAgent's pods follow the fleet channel — its FleetConnected condition.

A pod that cannot reach the operator's fleet channel (a wrong --fleet-url, a NetworkPolicy, a wrong token) still
serves calls, with the providers it started with: provider failover and the on-call's override never reach it.
Nothing else shows that, so the VoiceAgent says it. Decided from what the operator already holds: the agent pods
it watches (Ready, and since when this process saw them so), the pods the fleet channel heard from within its
window, and why the VoiceAgent's last poll was refused. No clock and no I/O here: `now` is monotonic seconds.

`Ready` does not depend on it: the fleet serves calls either way, and an operator restart (every pod re-polls within
its backoff) must not make every fleet unready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voicefleet_operator.conditions import Status
from voicefleet_operator.desired import INSTANCE_LABEL

CONDITION = "FleetConnected"
DEFAULT_GRACE_S = 30.0  # longer than an agent's longest backoff (15 s) after the operator was away
SHOWN_PODS = 5  # pod names in a message; the rest are counted

_REFUSED = {
    "token": "the operator refuses their polls: wrong fleet token (the pods must mount the Secret {name}-fleet as "
    "the operator writes it)",
    "policy": "the operator refuses their polls: they poll for another ProviderPolicy than the VoiceAgent follows now",
    "policy-unknown": "the operator does not know the ProviderPolicy they poll for",
}


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str
    message: str
    silent: tuple[str, ...] = ()  # ready pods that do not poll


def decide(
    *,
    name: str,
    fleet_url: str | None,
    ready: Mapping[str, float],
    polled: Mapping[str, float],
    refused: str | None,
    now: float,
    grace: float,
    deployment_ready: int | None = None,
) -> Verdict | None:
    """FleetConnected from the VoiceAgent's ready pods (pod → since when ready), the pods heard from, and the reason
    of its last refused poll. None: not decided yet (a pod became ready within `grace` and has not polled, or the
    Deployment reports ready pods this process has not seen yet): the condition stays as it is."""
    if not fleet_url:
        return Verdict("False", "NoFleetURL",
                       "The operator runs without a fleet URL (--fleet-url, VOICEFLEET_FLEET_URL): agent pods are "
                       "not told where the fleet channel is, so provider failover and overrides do not reach them; "
                       "they keep the providers they started with.",
                       tuple(sorted(ready)))  # fmt: skip
    if not ready:
        if deployment_ready != 0:
            return None
        return Verdict("True", "PodsPolling", f"Every ready agent pod polls the fleet channel at {fleet_url}.")
    silent = sorted(pod for pod, since in ready.items() if pod not in polled and now - since >= grace)
    if silent:
        shown = ", ".join(silent[:SHOWN_PODS]) + (f" and {len(silent) - SHOWN_PODS} more" if len(silent) > SHOWN_PODS
                                                   else "")  # fmt: skip
        if refused in _REFUSED:
            reason, cause = "PollsRefused", _REFUSED[refused].format(name=name)
        else:
            reason, cause = (
                "PodsNotPolling",
                (
                    f"check that the pods reach {fleet_url} (the operator's --fleet-url: its address as seen from the "
                    "pods), that no NetworkPolicy blocks that port, and the pods' log ('fleet channel ... unreachable')"
                ),
            )
        return Verdict(
            "False",
            reason,
            f"{len(silent)} of {len(ready)} ready agent pods do not poll the fleet channel at {fleet_url} "
            f"({shown}): {cause}. Provider failover and overrides do not reach them; they keep the providers they "
            "started with.",
            tuple(silent),
        )
    if any(pod not in polled for pod in ready):
        return None  # ready within the grace period, not heard from yet
    return Verdict("True", "PodsPolling", f"Every ready agent pod polls the fleet channel at {fleet_url}.")


def pod_ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False  # draining: it leaves the fleet
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@dataclass
class AgentPods:
    """The ready agent pods of every VoiceAgent, from the pod watch: pod → when this process first saw it ready."""

    ready: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def saw(self, pod: Mapping[str, Any], deleted: bool, now: float) -> None:
        meta = pod.get("metadata") or {}
        voiceagent = (meta.get("labels") or {}).get(INSTANCE_LABEL)
        if not voiceagent:
            return
        key = (str(meta.get("namespace", "")), str(voiceagent))
        name = str(meta.get("name", ""))
        pods = self.ready.setdefault(key, {})
        if not deleted and pod_ready(pod):
            pods.setdefault(name, now)
        else:
            pods.pop(name, None)
            if not pods:
                del self.ready[key]

    def of(self, namespace: str, voiceagent: str) -> dict[str, float]:
        return dict(self.ready.get((namespace, voiceagent), {}))
