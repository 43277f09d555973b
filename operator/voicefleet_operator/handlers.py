"""kopf handlers: thin triggers into the Reconciler."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, cast

import httpx2 as httpx
import kopf
from lightkube import AsyncClient

from voicefleet_agent import contract
from voicefleet_operator.desired import AGENT_POD_NAME, MANAGED_BY
from voicefleet_operator.diffbase import HashedDiffBaseStorage
from voicefleet_operator.failover import Failover
from voicefleet_operator.fleet import Fleet
from voicefleet_operator.fleetcheck import DEFAULT_GRACE_S, AgentPods
from voicefleet_operator.livekit import LiveKitUnavailable
from voicefleet_operator.models import GROUP, VERSION
from voicefleet_operator.phonesync import PeriodicTelephony
from voicefleet_operator.probes import probe
from voicefleet_operator.readcache import Watched
from voicefleet_operator.reconcile import Reconciler, utcnow
from voicefleet_operator.scalein import FleetSessions

RETRY_SECONDS = 15
ENV_FLEET_LISTEN = "VOICEFLEET_FLEET_LISTEN"  # host:port of the fleet channel
# How long a ready agent pod may go without polling the fleet channel before FleetConnected says so; tests shorten it.
ENV_FLEET_GRACE = "VOICEFLEET_FLEET_GRACE_SECONDS"
# Drift repair and LiveKit comparison interval; tests shorten it.
RESYNC_SECONDS = float(os.environ.get("VOICEFLEET_RESYNC_SECONDS", "60"))
# How often each VoiceAgent's live sessions are read from the custom metrics API (status.sessions, deletion costs).
SESSIONS_SECONDS = float(os.environ.get("VOICEFLEET_SESSIONS_SECONDS", "10"))
CHILDREN = (
    ("", "v1", "serviceaccounts"),
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("", "v1", "secrets"),  # the fleet token
)
WATCHED_EVENTS = ("ADDED", "MODIFIED", "DELETED")
AGENT_POD_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/name": AGENT_POD_NAME}
# Set to "true" on a VoiceAgent whose LiveKit is gone for good, so that its deletion does not wait for it.
ABANDON_PHONE_CLEANUP = f"{GROUP}/abandon-phone-cleanup"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the API server at KUBERNETES_SERVICE_HOST/PORT with the ServiceAccount token, as client-go and
    lightkube find it. kopf's own service-account login dials https://kubernetes.default.svc and so needs cluster
    DNS; without it the operator looped on DNS errors. Elsewhere: the kubeconfig, as kopf does."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = SERVICE_ACCOUNT_DIR / "token"
    if host and token.is_file() and not os.environ.get("KUBECONFIG"):
        namespace = SERVICE_ACCOUNT_DIR / "namespace"
        return kopf.ConnectionInfo(
            server=f"https://{'[' + host + ']' if ':' in host else host}:{port}",
            ca_path=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
            scheme="Bearer",
            token=token.read_text().strip(),
            default_namespace=namespace.read_text().strip() if namespace.is_file() else None,
        )
    return kopf.login_with_kubeconfig(**kwargs)


def _emit(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)


def _ns(namespace: str | None) -> str:
    if namespace is None:  # every resource the operator handles is namespaced
        raise kopf.PermanentError("namespaced object without a namespace")
    return namespace


def _not_a_quiet_tick(record: logging.LogRecord) -> bool:
    # every VoiceAgent's sessions timer succeeds every few seconds: one line each would drown the log
    return record.getMessage() != "Timer 'sessions' succeeded."


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    logging.getLogger("kopf.objects").addFilter(_not_a_quiet_tick)
    settings.persistence.diffbase_storage = HashedDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Only warnings and our own transitions become Events: posting every INFO log line floods the queue, and one
    # Event that cannot be posted (namespace terminating) is retried with backoff ahead of all the others.
    settings.posting.level = logging.WARNING
    settings.posting.default_backoffs = (1, 3)
    settings.watching.server_timeout = 300
    # Only agent pods, filtered by the API server: the operator must not receive every pod event of the cluster.
    settings.watching.label_selectors["", "v1", "pods"] = ",".join(f"{k}={v}" for k, v in AGENT_POD_LABELS.items())
    # A slow answer is better than a retry: an abandoned write (a Service's ClusterIP allocation) is work the API
    # server does again.
    memo.kube = kube = Watched(AsyncClient(field_manager="voicefleet-operator", timeout=httpx.Timeout(10.0, read=60.0)))
    fleet = Fleet()
    host, _colon, port = os.environ.get(ENV_FLEET_LISTEN, "0.0.0.0:8090").rpartition(":")
    memo.fleet_runner = await fleet.serve(host, int(port))
    memo.failover = Failover(kube, fleet, emit=_emit, probe=probe, clock=utcnow)
    memo.sessions = FleetSessions(kube)
    memo.reconciler = Reconciler(
        kube,
        emit=_emit,
        telephony=PeriodicTelephony(kube, period=RESYNC_SECONDS),
        failover=memo.failover,
        fleet_url=os.environ.get(contract.ENV_FLEET_URL) or None,
        resync_seconds=RESYNC_SECONDS,
        pods=AgentPods(),
        fleet_grace=float(os.environ.get(ENV_FLEET_GRACE) or DEFAULT_GRACE_S),
    )


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    await memo.fleet_runner.cleanup()


@kopf.on.resume(GROUP, VERSION, "voiceagents")
@kopf.on.create(GROUP, VERSION, "voiceagents")
@kopf.on.update(GROUP, VERSION, "voiceagents", field="spec")
async def voice_agent(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    outcome = await memo.reconciler.agent(_ns(namespace), name)
    if outcome is not None and outcome.retry:
        raise kopf.TemporaryError(outcome.retry, delay=RETRY_SECONDS)


@kopf.on.event(GROUP, VERSION, "voiceagents")
async def voice_agent_seen(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    """Kept for the reconciles' reads (readcache.py); runs before the handlers above for the same event."""
    memo.kube.saw(dict(body), deleted=type == "DELETED")


def _has_phone(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return bool(spec.get("channels", {}).get("phone") or status.get("phone"))


@kopf.on.delete(GROUP, VERSION, "voiceagents", when=_has_phone)
async def remove_phone(
    body: kopf.Body, annotations: kopf.Annotations, status: kopf.Status, memo: Any, **_: Any
) -> None:
    if annotations.get(ABANDON_PHONE_CLEANUP) == "true":
        _emit(dict(body), "Warning", "PhoneCleanupAbandoned",
              f"{ABANDON_PHONE_CLEANUP}=true: deleted without removing the SIP trunk and rule from LiveKit; "
              "the orphan sweep removes them once LiveKit is reachable")  # fmt: skip
        return
    try:
        await memo.reconciler.remove_phone(dict(body))
    except (LiveKitUnavailable, LookupError) as error:
        if not status.get("phone"):  # LiveKit never confirmed a trunk or rule of ours: nothing to wait for
            _emit(dict(body), "Warning", "PhoneCleanupSkipped",
                  f"{error}; no SIP trunk or rule was ever recorded for this VoiceAgent, so its deletion does not "
                  "wait (the orphan sweep removes any that a crash left)")  # fmt: skip
            return
        _emit(dict(body), "Warning", "PhoneCleanupPending", f"Cannot remove the SIP trunk and rule yet: {error}")
        raise kopf.TemporaryError(str(error), delay=RETRY_SECONDS) from error


@kopf.timer(GROUP, VERSION, "voiceagents", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    await memo.reconciler.resync(_ns(namespace), name)


@kopf.on.event(GROUP, VERSION, "providerpolicies")
async def provider_policy(
    name: str, namespace: str | None, type: str | None, body: kopf.Body, memo: Any, **_: Any
) -> None:
    memo.kube.saw(dict(body), deleted=type == "DELETED")
    await memo.reconciler.policy(_ns(namespace), name, listing=type is None)


@kopf.daemon(GROUP, VERSION, "providerpolicies", cancellation_timeout=3)
async def watch_providers(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Probe every provider on its schedule (failover.Failover.watch); every second, publish rollout progress and
    whether the followers' pods poll (FleetConnected)."""
    namespace = _ns(namespace)

    async def every_second() -> None:
        await memo.failover.refresh_rollout(namespace, name)
        try:
            await memo.reconciler.fleet_check(namespace, name)
        except Exception:  # a reconcile that failed is retried next second; the probes must go on
            logging.getLogger(__name__).exception("FleetConnected of the followers of %s/%s", namespace, name)

    await memo.failover.watch(namespace, name, every_second)


@kopf.on.event("", "v1", "pods", labels=AGENT_POD_LABELS)
async def agent_pod(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    """Which agent pods are ready (FleetConnected), draining, and their deletion costs: kept in memory."""
    memo.reconciler.pods.saw(body, deleted=type == "DELETED", now=time.monotonic())
    memo.sessions.saw_pod(body, deleted=type == "DELETED")


@kopf.timer(GROUP, VERSION, "voiceagents", interval=SESSIONS_SECONDS, initial_delay=min(SESSIONS_SECONDS, 5.0))
async def sessions(name: str, namespace: str | None, spec: kopf.Spec, status: kopf.Status, memo: Any, **_: Any) -> None:
    """status.sessions, full and draining pods, and the pods' deletion costs, from the metric the HPA reads."""
    max_sessions = spec.get("scaling", {}).get("maxSessionsPerPod")
    await memo.sessions.tick(_ns(namespace), name, max_sessions, status)


def _owner(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences", []):
        if ref.get("kind") == "VoiceAgent" and ref.get("controller"):
            return str(ref["name"])
    return None


async def child_changed(body: kopf.Body, namespace: str | None, type: str, memo: Any, **_: Any) -> None:
    # Only what changes something the operator owns (drift, deletion) or reports (a Deployment's rollout) wakes
    # the owner; status updates of HPAs and PDBs, and the echo of our own writes, do not.
    if type is not None and type not in WATCHED_EVENTS:
        return
    memo.kube.saw(dict(body), deleted=type == "DELETED")
    matters = memo.reconciler.applied.observe(dict(body), deleted=type == "DELETED", listing=type is None)
    if matters and (owner := _owner(body)):
        await memo.reconciler.agent(_ns(namespace), owner)


for _group, _version, _plural in CHILDREN:
    kopf.on.event(
        _group, _version, _plural, labels={"app.kubernetes.io/managed-by": MANAGED_BY}, id=f"child-{_plural}"
    )(child_changed)


@kopf.on.event("", "v1", "secrets", labels={"app.kubernetes.io/managed-by": kopf.ABSENT})
async def secret_changed(name: str, namespace: str | None, type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo.kube.saw(dict(body), deleted=type == "DELETED")
    if type in WATCHED_EVENTS:
        await memo.reconciler.reference_changed(_ns(namespace), "Secret", name)


def _not_ours(body: kopf.Body, **_: Any) -> bool:
    return _owner(body) is None


@kopf.on.event("", "v1", "configmaps", when=_not_ours)
async def config_map_changed(name: str, namespace: str | None, type: str, memo: Any, **_: Any) -> None:
    if type in WATCHED_EVENTS:
        await memo.reconciler.reference_changed(_ns(namespace), "ConfigMap", name)
