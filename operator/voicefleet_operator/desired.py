"""Pure: a VoiceAgent (and its ProviderPolicy) → the agent config and the Kubernetes objects it should own."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from voicefleet_agent import contract
from voicefleet_operator.models import (
    API_VERSION,
    BROWSER_SUFFIX,
    CHILD_SUFFIXES,
    GROUP,
    ActiveProviders,
    NamedProviderSpec,
    ProviderPolicy,
    ProviderSpec,
    VoiceAgent,
)

FIELD_MANAGER = "voicefleet-operator"
MANAGED_BY = "voicefleet-operator"
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
SECRETS_HASH_ANNOTATION = f"{GROUP}/secrets-hash"
AGENT_NAME_LABEL = f"{GROUP}/agent-name"
MODALITIES: tuple[contract.Modality, ...] = ("stt", "llm", "tts")
# The API server refuses a ConfigMap whose data exceeds 1 MiB; keep room for the object's metadata.
CONFIG_MAX_BYTES = 1024 * 1024 - 16 * 1024
# Time allowed after the drain timeout for the worker to exit once its last job ends.
EXIT_MARGIN_SECONDS = 30
METRICS_DIR = "/var/run/voicefleet/prometheus"

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant that manages the user's tasks. Keep answers short and spoken-style. "
    "Use the task tools to list, add, update, complete and delete tasks. Always confirm before deleting."
)

RESERVED_ENV = frozenset(
    {
        contract.ENV_CONFIG_PATH,
        contract.ENV_LIVEKIT_URL,
        contract.ENV_LIVEKIT_API_KEY,
        contract.ENV_LIVEKIT_API_SECRET,
        contract.ENV_AGENT_NAME,
        contract.ENV_PROMETHEUS_MULTIPROC_DIR,
        contract.ENV_POD_NAME,
        contract.ENV_POD_NAMESPACE,
        contract.ENV_FLEET_URL,
        contract.ENV_VOICEAGENT,
        contract.ENV_FLEET_TOKEN_FILE,
    }
)


# VOICEFLEET_* variables a user sets through spec.env: the key the agents sign tasks-server tokens with.
USER_ENV = frozenset({contract.ENV_TASKS_TOKEN_KEY})


class InvalidSpec(ValueError):
    """The spec is valid by schema but cannot be reconciled; the message names the field."""


@dataclass(frozen=True)
class Inputs:
    """Everything the pure core needs, gathered by the I/O layer."""

    agent: VoiceAgent
    policy: ProviderPolicy | None = None
    instructions: str | None = None  # resolved from instructionsConfigMapRef, when set
    secret_versions: dict[str, str] = field(default_factory=dict)  # Secret name → resourceVersion
    policy_active: ActiveProviders | None = None  # what the policy's failover decided, from its status
    fleet_url: str | None = None  # the operator's fleet channel, for agents that follow a policy
    fleet_token: str | None = None  # the agent's token on that channel (a keyed digest made by the I/O layer)
    had_browser: bool = False  # the status shows a browser channel: its objects are to go when it is disabled


@dataclass(frozen=True)
class Desired:
    config: contract.AgentConfig
    config_hash: str
    active: ActiveProviders
    objects: list[dict[str, Any]]
    absent: list[tuple[str, str, str]] = field(default_factory=list)  # (apiVersion, kind, name) to delete if ours
    browser_url: str | None = None  # the talk page inside the cluster, when the browser channel is enabled


def names(agent_name: str) -> dict[str, str]:
    """Deterministic child names per kind (valid for every VoiceAgent name the schema admits)."""
    return {kind: agent_name + suffix for kind, suffix in CHILD_SUFFIXES.items()}


INSTANCE_LABEL = "app.kubernetes.io/instance"  # an agent pod's VoiceAgent
AGENT_POD_NAME = "voicefleet-agent"


def selector_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": AGENT_POD_NAME, INSTANCE_LABEL: name}


def labels(agent: VoiceAgent) -> dict[str, str]:
    return {
        **selector_labels(agent.metadata["name"]),
        "app.kubernetes.io/component": "voice-agent",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "voicefleet",
        AGENT_NAME_LABEL: agent.spec.agent_name,
    }


def api_key_env(modality: str, index: int) -> str:
    return f"VOICEFLEET_{modality.upper()}_{index}_API_KEY"


def _chain(inputs: Inputs, modality: contract.Modality) -> list[NamedProviderSpec]:
    policy = inputs.policy
    chain = getattr(policy.spec, modality) if policy else None
    if chain is not None:
        return list(chain.providers)
    single: ProviderSpec = getattr(inputs.agent.spec.pipeline, modality)
    return [NamedProviderSpec(name=single.provider, **single.model_dump(exclude_unset=True))]


def _provider_config(modality: str, index: int, spec: NamedProviderSpec) -> contract.ProviderConfig:
    base = contract.DEFAULT_PRICING.get(spec.provider, contract.Pricing())
    overrides = spec.pricing.model_dump(exclude_none=True) if spec.pricing else {}
    return contract.ProviderConfig(
        name=spec.name,
        provider=spec.provider,
        model=spec.model,
        base_url=spec.base_url,
        api_key_env=api_key_env(modality, index) if spec.secret_ref else None,
        options=spec.options,
        pricing=base.model_copy(update=overrides),
    )


def active_providers(inputs: Inputs) -> ActiveProviders:
    """Per modality: what the policy's failover decided, else the on-call override, else the chain's first."""
    override = inputs.policy.spec.override if inputs.policy else None
    decided = inputs.policy_active
    chosen = {}
    for modality in MODALITIES:
        names = [p.name for p in _chain(inputs, modality)]
        pinned = getattr(override, modality) if override else None
        current = getattr(decided, modality) if decided else None
        chosen[modality] = pinned or (current if current in names else None) or names[0]
    return ActiveProviders(**chosen)


def agent_config(inputs: Inputs) -> contract.AgentConfig:
    spec = inputs.agent.spec
    pipeline = spec.pipeline
    chains = {m: tuple(_provider_config(m, i, p) for i, p in enumerate(_chain(inputs, m))) for m in MODALITIES}
    return contract.AgentConfig(
        agent_name=spec.agent_name,
        stt=chains["stt"],
        llm=chains["llm"],
        tts=chains["tts"],
        vad=contract.VadConfig(
            activation_threshold=pipeline.vad.activation_threshold,
            min_silence_duration_ms=pipeline.vad.min_silence_duration_ms,
        ),
        turn_detection=pipeline.turn_detection.mode,
        instructions=inputs.instructions or pipeline.instructions or DEFAULT_INSTRUCTIONS,
        mcp_servers=tuple(contract.McpServerConfig(name=s.name, url=s.url) for s in spec.tools.mcp_servers),
        filler_after_ms=pipeline.filler_after_ms,
        drain_timeout_seconds=spec.drain.grace_period_seconds,
        max_sessions=spec.scaling.max_sessions_per_pod,
        policy_name=inputs.policy.metadata.get("name") if inputs.policy else None,
    )


def referenced_secrets(agent: VoiceAgent, policy: ProviderPolicy | None) -> set[str]:
    """Names of the Secrets the VoiceAgent's pods read (agents and the browser token service)."""
    found = agent_secrets(agent, policy)
    browser = agent.spec.channels.browser
    if browser.enabled and browser.secret_ref:
        found.add(browser.secret_ref.name)
    return found


def agent_secrets(agent: VoiceAgent, policy: ProviderPolicy | None) -> set[str]:
    """Names of the Secrets the agent pods read: a change to one of them rolls the agents."""
    spec = agent.spec
    found = {spec.livekit.secret_ref.name}
    found.update(e.secret_key_ref.name for e in spec.env if e.secret_key_ref)
    inputs = Inputs(agent=agent, policy=policy)
    for modality in MODALITIES:
        found.update(p.secret_ref.name for p in _chain(inputs, modality) if p.secret_ref)
    return found


def validate(inputs: Inputs) -> None:
    """Checks the schema cannot express. Raises InvalidSpec naming the field."""
    for i, env in enumerate(inputs.agent.spec.env):
        if env.name in RESERVED_ENV or (env.name.startswith("VOICEFLEET_") and env.name not in USER_ENV):
            raise InvalidSpec(f"spec.env[{i}].name: {env.name} is set by the operator")
    if inputs.policy is not None:
        override = inputs.policy.spec.override
        for modality in MODALITIES:
            pinned = getattr(override, modality) if override else None
            if pinned and pinned not in {p.name for p in _chain(inputs, modality)}:
                raise InvalidSpec(
                    f"providerPolicy {inputs.policy.metadata.get('name')}: override.{modality} names "
                    f"{pinned!r}, which is not in its {modality} chain"
                )


def _secrets_hash(inputs: Inputs, secrets: set[str]) -> str:
    return _hash(json.dumps(sorted((k, v) for k, v in inputs.secret_versions.items() if k in secrets)))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def controlled_by(body: dict[str, Any], owner_uid: str) -> bool:
    """Whether an object's controller reference points at the VoiceAgent with `owner_uid`."""
    refs = body.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == owner_uid and r.get("controller") for r in refs)


def _meta(agent: VoiceAgent, name: str, object_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": agent.metadata["namespace"],
        "labels": object_labels or labels(agent),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "VoiceAgent",
                "name": agent.metadata["name"],
                "uid": agent.metadata["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def _env(inputs: Inputs, config: contract.AgentConfig) -> list[dict[str, Any]]:
    spec = inputs.agent.spec
    creds = spec.livekit.secret_ref

    def from_secret(name: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    def from_field(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    env = [
        {"name": contract.ENV_LIVEKIT_URL, "value": spec.livekit.url},
        from_secret(contract.ENV_LIVEKIT_API_KEY, creds.name, creds.api_key_key),
        from_secret(contract.ENV_LIVEKIT_API_SECRET, creds.name, creds.api_secret_key),
        {"name": contract.ENV_AGENT_NAME, "value": spec.agent_name},
        {"name": contract.ENV_CONFIG_PATH, "value": f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE}"},
        {"name": contract.ENV_PROMETHEUS_MULTIPROC_DIR, "value": METRICS_DIR},
        from_field(contract.ENV_POD_NAME, "metadata.name"),
        from_field(contract.ENV_POD_NAMESPACE, "metadata.namespace"),
    ]
    if _follows_fleet(inputs):
        env.append({"name": contract.ENV_FLEET_URL, "value": inputs.fleet_url})
        env.append({"name": contract.ENV_VOICEAGENT, "value": inputs.agent.metadata["name"]})
        token_file = f"{contract.FLEET_TOKEN_DIR}/{contract.FLEET_TOKEN_KEY}"
        env.append({"name": contract.ENV_FLEET_TOKEN_FILE, "value": token_file})
    for modality in MODALITIES:
        for index, provider in enumerate(_chain(inputs, modality)):
            if provider.secret_ref:
                ref = provider.secret_ref
                env.append(from_secret(api_key_env(modality, index), ref.name, ref.key))
    for extra in spec.env:
        if extra.secret_key_ref:
            env.append(from_secret(extra.name, extra.secret_key_ref.name, extra.secret_key_ref.key))
        else:
            env.append({"name": extra.name, "value": extra.value})
    return env


def _follows_fleet(inputs: Inputs) -> bool:
    return inputs.policy is not None and bool(inputs.fleet_url) and bool(inputs.fleet_token)


def _fleet_secret(inputs: Inputs, name: str) -> dict[str, Any]:
    assert inputs.fleet_token is not None
    token = base64.b64encode(inputs.fleet_token.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(inputs.agent, name), "type": "Opaque",
            "data": {contract.FLEET_TOKEN_KEY: token}}  # fmt: skip


def _deployment(inputs: Inputs, config: contract.AgentConfig, config_hash: str, name: str) -> dict[str, Any]:
    agent = inputs.agent
    spec = agent.spec
    secrets_hash = _secrets_hash(inputs, agent_secrets(agent, inputs.policy))

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "worker"},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        }

    pod_labels = labels(agent)
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "metrics", "mountPath": METRICS_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names(agent.metadata["name"])["ConfigMap"]}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "metrics", "emptyDir": {}},
    ]
    if _follows_fleet(inputs):
        mounts.append({"name": "fleet-token", "mountPath": contract.FLEET_TOKEN_DIR, "readOnly": True})
        secret = names(agent.metadata["name"])["Secret"]
        volumes.append({"name": "fleet-token", "secret": {"secretName": secret, "defaultMode": 0o440}})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(agent, name),
        "spec": {
            # No replicas: the HPA owns them, and server-side apply leaves a field we never set alone.
            "selector": {"matchLabels": selector_labels(agent.metadata["name"])},
            "revisionHistoryLimit": 5,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash, SECRETS_HASH_ANNOTATION: secrets_hash},
                },
                "spec": {
                    "serviceAccountName": names(agent.metadata["name"])["ServiceAccount"],
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": spec.drain.grace_period_seconds + EXIT_MARGIN_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "agent",
                            "image": spec.image,
                            "imagePullPolicy": spec.image_pull_policy,
                            "env": _env(inputs, config),
                            "ports": [
                                {"name": "worker", "containerPort": contract.WORKER_PORT, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": contract.METRICS_PORT, "protocol": "TCP"},
                            ],
                            # alive: the worker answers; ready: registered with LiveKit (contract.py)
                            "startupProbe": probe(contract.LIVENESS_PATH, 2, 60),
                            "livenessProbe": probe(contract.LIVENESS_PATH, 10, 3),
                            "readinessProbe": probe(contract.READINESS_PATH, 5, 2),
                            "resources": spec.resources.model_dump(),
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def _hpa(agent: VoiceAgent, name: str, deployment: str) -> dict[str, Any]:
    scaling = agent.spec.scaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(agent, name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": contract.ACTIVE_SESSIONS},
                        "target": {"type": "AverageValue", "averageValue": str(scaling.target_sessions_per_pod)},
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                    "selectPolicy": "Min",
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }


def browser_name(agent_name: str) -> str:
    return agent_name + BROWSER_SUFFIX


def browser_selector_labels(name: str) -> dict[str, str]:
    # not the agents' selector: the metrics Service, the PDB and the HPA must never count token-service pods
    return {"app.kubernetes.io/name": "voicefleet-browser", "app.kubernetes.io/instance": name}


def browser_url(agent: VoiceAgent) -> str:
    """The talk page as seen inside the cluster (expose the Service with an Ingress or Gateway for the outside)."""
    return f"http://{browser_name(agent.metadata['name'])}.{agent.metadata['namespace']}.svc:{contract.BROWSER_PORT}/"


def _browser_env(agent: VoiceAgent) -> list[dict[str, Any]]:
    spec = agent.spec
    browser = spec.channels.browser
    creds = spec.livekit.secret_ref

    def from_secret(name: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    env = [
        {"name": contract.ENV_LIVEKIT_URL, "value": spec.livekit.url},
        from_secret(contract.ENV_LIVEKIT_API_KEY, creds.name, creds.api_key_key),
        from_secret(contract.ENV_LIVEKIT_API_SECRET, creds.name, creds.api_secret_key),
        {"name": contract.ENV_AGENT_NAME, "value": spec.agent_name},
        {"name": contract.ENV_BROWSER_ALLOWED_ORIGINS, "value": ",".join(browser.allowed_origins)},
        {"name": contract.ENV_BROWSER_RATE_PER_MINUTE, "value": str(browser.rate_per_minute)},
        {"name": contract.ENV_BROWSER_TOKEN_TTL_SECONDS, "value": str(browser.token_ttl_seconds)},
    ]
    if browser.livekit_url:
        env.append({"name": contract.ENV_BROWSER_LIVEKIT_PUBLIC_URL, "value": browser.livekit_url})
    if browser.secret_ref:
        ref = browser.secret_ref
        env.append(from_secret(contract.ENV_BROWSER_SHARED_SECRET, ref.name, ref.key))
    return env


def _browser_objects(inputs: Inputs) -> list[dict[str, Any]]:
    """The token service: one small stateless Deployment from the agent image, and its Service."""
    agent = inputs.agent
    spec = agent.spec
    name = browser_name(agent.metadata["name"])
    selector = browser_selector_labels(agent.metadata["name"])
    object_labels = {**labels(agent), **selector, "app.kubernetes.io/component": "browser-channel"}
    browser = spec.channels.browser
    secrets = {spec.livekit.secret_ref.name} | ({browser.secret_ref.name} if browser.secret_ref else set())

    def probe(period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": contract.BROWSER_HEALTH_PATH, "port": "http"}, "periodSeconds": period,
                "timeoutSeconds": 3, "failureThreshold": failures}  # fmt: skip

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(agent, name, object_labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 3,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": dict(object_labels),
                    "annotations": {SECRETS_HASH_ANNOTATION: _secrets_hash(inputs, secrets)},
                },
                "spec": {
                    "serviceAccountName": names(agent.metadata["name"])["ServiceAccount"],
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 10,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "browser",
                            "image": spec.image,
                            "imagePullPolicy": spec.image_pull_policy,
                            "command": ["python", "-m", contract.BROWSER_MODULE],
                            "env": _browser_env(agent),
                            "ports": [{"name": "http", "containerPort": contract.BROWSER_PORT, "protocol": "TCP"}],
                            "readinessProbe": probe(5, 2),
                            "livenessProbe": probe(10, 3),
                            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(agent, name, object_labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": contract.BROWSER_PORT, "targetPort": "http"}],
        },
    }
    return [deployment, service]


def render(inputs: Inputs) -> Desired:
    """The objects a VoiceAgent owns, in apply order. Raises InvalidSpec."""
    validate(inputs)
    agent = inputs.agent
    child = names(agent.metadata["name"])
    config = agent_config(inputs)
    config_json = config.to_json()
    if len(config_json.encode()) > CONFIG_MAX_BYTES:
        source = "spec.pipeline." + ("instructionsConfigMapRef" if inputs.instructions else "instructions")
        raise InvalidSpec(
            f"{source}: the rendered {contract.CONFIG_FILE} would be {len(config_json.encode())} bytes, over the "
            f"{CONFIG_MAX_BYTES} bytes a ConfigMap can hold; shorten the instructions"
        )
    config_hash = _hash(config_json)
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(agent, child["ServiceAccount"]),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(agent, child["ConfigMap"]),
            "data": {contract.CONFIG_FILE: config_json},
        },
        *([_fleet_secret(inputs, child["Secret"])] if _follows_fleet(inputs) else []),
        _deployment(inputs, config, config_hash, child["Deployment"]),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(agent, child["Service"]),
            "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(agent.metadata["name"]),
                "ports": [{"name": "metrics", "port": contract.METRICS_PORT, "targetPort": "metrics"}],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(agent, child["PodDisruptionBudget"]),
            "spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": selector_labels(agent.metadata["name"])},
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
        },
    ]
    absent = []
    if agent.spec.scaling.autoscaler == "HPA":
        objects.insert(len(objects) - 1, _hpa(agent, child["HorizontalPodAutoscaler"], child["Deployment"]))
    else:
        absent.append(("autoscaling/v2", "HorizontalPodAutoscaler", child["HorizontalPodAutoscaler"]))
    url = None
    if agent.spec.channels.browser.enabled:
        objects.extend(_browser_objects(inputs))
        url = browser_url(agent)
    elif inputs.had_browser:  # only then: a look-up per reconcile for every agent without the channel would cost
        browser = browser_name(agent.metadata["name"])
        absent += [("apps/v1", "Deployment", browser), ("v1", "Service", browser)]
    return Desired(
        config=config,
        config_hash=config_hash,
        active=active_providers(inputs),
        objects=objects,
        absent=absent,
        browser_url=url,
    )
