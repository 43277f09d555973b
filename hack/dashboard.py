"""The voicefleet Grafana dashboard, built from a compact panel list (`make charts-sync` writes it into the chart).

Queries name real metrics only: tests/packaging checks every one against what the agent and the operator export.
The agent ServiceMonitor adds the `voiceagent` label (the VoiceAgent's name) that panels filter and join on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

UID = "voicefleet-overview"
SEL = 'namespace=~"$namespace", voiceagent=~"$voiceagent"'
WINDOW = "$__rate_interval"
# The HPA target the operator sets: targetSessionsPerPod of the active-sessions Pods metric.
TARGET = ', metric_name="voicefleet_agent_active_sessions", metric_target_type="average"'


def _hpa(metric: str, extra: str = "") -> str:
    """A kube-state-metrics HPA series relabelled with the VoiceAgent it belongs to (HPA name = VoiceAgent name)."""
    selector = f'namespace=~"$namespace", horizontalpodautoscaler=~"$voiceagent"{extra}'
    return f'label_replace({metric}{{{selector}}}, "voiceagent", "$1", "horizontalpodautoscaler", "(.*)")'


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    thresholds: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _quantiles(metric: str, by: str = "") -> tuple[Target, ...]:
    group = f"{by}, le" if by else "le"
    return tuple(
        Target(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[{WINDOW}])))",
            f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for q in (0.5, 0.9, 0.95, 0.99)
    )


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Conversation",
        (
            Panel(
                "Voice-to-voice latency",
                "From the end of the user's speech to the agent's first audio. Target: p95 under 0.8 s.",
                _quantiles("voicefleet_agent_voice_to_voice_seconds"),
                unit="s",
                thresholds=(0.8,),
            ),
            Panel(
                "Per-stage latency (p95)",
                "STT transcription delay, LLM time to first token, TTS time to first byte, and end-of-turn delay.",
                (
                    Target(
                        "histogram_quantile(0.95, sum by (stage, le) "
                        f"(rate(voicefleet_agent_stage_latency_seconds_bucket{{{SEL}}}[{WINDOW}])))",
                        "{{stage}}",
                    ),
                    Target(
                        "histogram_quantile(0.95, sum by (le) "
                        f"(rate(voicefleet_agent_end_of_turn_delay_seconds_bucket{{{SEL}}}[{WINDOW}])))",
                        "end of turn",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Calls and barge-ins per minute",
                "Sessions started and agent replies the caller interrupted.",
                (
                    Target(f"sum(rate(voicefleet_agent_sessions_total{{{SEL}}}[{WINDOW}])) * 60", "sessions started"),
                    Target(f"sum(rate(voicefleet_agent_interruptions_total{{{SEL}}}[{WINDOW}])) * 60", "interruptions"),
                ),
                unit="short",
            ),
            Panel(
                "Average call length",
                "Minutes per finished session.",
                (
                    Target(
                        f"sum(increase(voicefleet_agent_session_minutes_total{{{SEL}}}[1h])) / "
                        f"sum(increase(voicefleet_agent_sessions_total{{{SEL}}}[1h]))",
                        "minutes per call",
                    ),
                ),
                unit="m",
            ),
        ),
    ),
    (
        "Phone",
        (
            Panel(
                "Phone calls answered, by how they ended",
                "Calls (SIP) the agents answered in the last hour, by outcome: caller_hung_up, dropped (the caller's"
                " leg was lost), agent_ended, error, shutdown (the job ended under the call).",
                (
                    Target(
                        f"sum by (voiceagent, outcome) (increase(voicefleet_agent_phone_calls_total{{{SEL}}}[1h]))",
                        "{{voiceagent}} {{outcome}}",
                    ),
                ),
                width=12,
            ),
            Panel(
                "SIP calls at livekit-sip, by outcome",
                "livekit-sip's own count of inbound calls in the last hour: accepted (matched a trunk, passed auth) and"
                " how calls ended (result/reason; client_error/unauthorized: wrong password, client_error/flood:"
                " address or number no trunk accepts). Refused calls never reach a VoiceAgent, and livekit-sip labels"
                " them by its own instance, not by trunk: scrape livekit-sip to see them.",
                (
                    Target(
                        'sum by (result, reason) (increase(livekit_sip_calls_terminated_total{dir="in"}[1h]))',
                        "{{result}}/{{reason}}",
                    ),
                    Target('sum(increase(livekit_sip_invite_accepted_total{dir="in"}[1h]))', "accepted"),
                ),
                width=12,
            ),
        ),
    ),
    (
        "Capacity",
        (
            Panel(
                "Active sessions vs replicas",
                "Live sessions, agent pods and the fleet's capacity (maxReplicas x targetSessionsPerPod).",
                (
                    Target(
                        f"sum by (voiceagent) (voicefleet_agent_active_sessions{{{SEL}}})", "sessions {{voiceagent}}"
                    ),
                    Target(
                        'sum by (deployment) (kube_deployment_status_replicas{namespace=~"$namespace", '
                        'deployment=~"$voiceagent"})',
                        "replicas {{deployment}}",
                    ),
                    Target(
                        'sum by (deployment) (kube_deployment_status_replicas_available{namespace=~"$namespace", '
                        'deployment=~"$voiceagent"})',
                        "ready {{deployment}}",
                    ),
                    Target(
                        f"sum by (voiceagent) ({_hpa('kube_horizontalpodautoscaler_spec_max_replicas')} * on "
                        f"(namespace, voiceagent) {_hpa('kube_horizontalpodautoscaler_spec_target_metric', TARGET)})",
                        "capacity {{voiceagent}}",
                    ),
                ),
                width=16,
            ),
            Panel(
                "Sessions per pod",
                "Average live sessions per agent pod; the HPA keeps it near targetSessionsPerPod.",
                (
                    Target(
                        f"sum by (voiceagent) (voicefleet_agent_active_sessions{{{SEL}}}) / on (voiceagent) "
                        "sum by (voiceagent) (label_replace(kube_deployment_status_replicas_available"
                        '{namespace=~"$namespace", deployment=~"$voiceagent"}, "voiceagent", "$1", "deployment", '
                        '"(.*)"))',
                        "{{voiceagent}}",
                    ),
                ),
                kind="stat",
                width=8,
            ),
        ),
    ),
    (
        "Cost",
        (
            Panel(
                "Cost per call-minute",
                "Provider spend per minute of live call (USD). Target band: 0.03 to 0.07.",
                (
                    Target(
                        f"(sum by (voiceagent) (rate(voicefleet_agent_cost_usd_total{{{SEL}}}[15m])) * 60) / "
                        f"(sum by (voiceagent) (avg_over_time(voicefleet_agent_active_sessions{{{SEL}}}[15m])) > 0)",
                        "{{voiceagent}}",
                    ),
                ),
                unit="currencyUSD",
                thresholds=(0.07,),
                width=8,
            ),
            Panel(
                "Cost per call",
                "USD per session started, over the last hour.",
                (
                    Target(
                        f"sum by (voiceagent) (increase(voicefleet_agent_cost_usd_total{{{SEL}}}[1h])) / "
                        f"(sum by (voiceagent) (increase(voicefleet_agent_sessions_total{{{SEL}}}[1h])) > 0)",
                        "{{voiceagent}}",
                    ),
                ),
                unit="currencyUSD",
                width=8,
            ),
            Panel(
                "Spend by provider (USD/hour)",
                "Which provider the money goes to.",
                (
                    Target(
                        "sum by (modality, provider) "
                        f"(rate(voicefleet_agent_cost_usd_total{{{SEL}}}[{WINDOW}])) * 3600",
                        "{{modality}} {{provider}}",
                    ),
                ),
                unit="currencyUSD",
                width=8,
            ),
        ),
    ),
    (
        "Providers",
        (
            Panel(
                "Provider errors per second",
                "Errors the agents saw from each provider, retried or not.",
                (
                    Target(
                        "sum by (modality, provider) "
                        f"(rate(voicefleet_agent_provider_errors_total{{{SEL}}}[{WINDOW}]))",
                        "{{modality}} {{provider}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Provider health",
                "Operator probes per ProviderPolicy provider: 1 healthy, 0 failing (after the policy's thresholds).",
                (
                    Target(
                        "min by (namespace, policy, provider) "
                        '(voicefleet_operator_provider_healthy{namespace=~"$namespace"})',
                        "{{namespace}}/{{policy}} {{provider}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Provider in use",
                "The provider each modality of each ProviderPolicy runs on now.",
                (
                    Target(
                        "max by (namespace, policy, modality, provider) "
                        '(voicefleet_operator_active_provider{namespace=~"$namespace"}) == 1',
                        "{{namespace}}/{{policy}} {{modality}}: {{provider}}",
                    ),
                ),
                width=8,
            ),
        ),
    ),
    (
        "Failover",
        (
            Panel(
                "Provider flips",
                "Changes of the provider in use in the last hour, by reason (FailedOver, FailedBack, Override, ...).",
                (
                    Target(
                        "sum by (namespace, policy, modality, reason) "
                        '(increase(voicefleet_operator_provider_flips_total{namespace=~"$namespace"}[1h]))',
                        "{{policy}} {{modality}} {{reason}}",
                    ),
                ),
                width=12,
            ),
            Panel(
                "Probe latency (p95)",
                "Latency of the operator's synthetic provider probes; over latencyThresholdMs counts as a failure.",
                (
                    Target(
                        "histogram_quantile(0.95, sum by (provider, le) "
                        f"(rate(voicefleet_operator_probe_seconds_bucket[{WINDOW}])))",
                        "{{provider}}",
                    ),
                ),
                unit="s",
                width=12,
            ),
        ),
    ),
    (
        "Operator",
        (
            Panel(
                "Reconciles per second",
                "By kind and result: ok, problem (the object reports why in its conditions) or error.",
                (
                    Target(
                        f"sum by (kind, result) (rate(voicefleet_operator_reconciles_total[{WINDOW}]))",
                        "{{kind}} {{result}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Reconcile errors",
                "Reconciles that raised (API or LiveKit failures); kopf retries them.",
                (
                    Target(
                        f'sum by (kind) (increase(voicefleet_operator_reconciles_total{{result="error"}}[{WINDOW}]))',
                        "{{kind}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Sessions API and deletion costs",
                "Whether the operator reads sessions from custom.metrics.k8s.io (status.sessions; 0: the adapter is "
                "missing or down), and the pod-deletion-cost writes that keep scale-in off busy pods.",
                (
                    Target("min(voicefleet_operator_custom_metrics_up)", "custom metrics API up"),
                    Target(
                        f"sum(increase(voicefleet_operator_deletion_cost_writes_total[{WINDOW}]))",
                        "deletion-cost writes",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Reconcile duration",
                "p50 and p95 of one reconcile.",
                tuple(
                    Target(
                        f"histogram_quantile({q}, sum by (kind, le) "
                        f"(rate(voicefleet_operator_reconcile_seconds_bucket[{WINDOW}])))",
                        f"p{round(q * 100)} {{{{kind}}}}",
                    )
                    for q in (0.5, 0.95)
                ),
                unit="s",
                width=8,
            ),
            Panel(
                "Writes skipped",
                "Applies and status patches left out because what they would write is already in place: at rest, every"
                " trigger should land here.",
                (
                    Target(
                        f"sum by (kind) (rate(voicefleet_operator_skipped_writes_total[{WINDOW}]))",
                        "{{kind}}",
                    ),
                ),
                width=12,
            ),
            Panel(
                "Fleet polls refused",
                "Fleet channel polls from an unknown VoiceAgent, with a wrong token, or for a policy not its own.",
                (
                    Target(
                        f"sum by (reason) (increase(voicefleet_operator_fleet_refused_total[{WINDOW}]))",
                        "{{reason}}",
                    ),
                ),
                width=12,
            ),
        ),
    ),
)


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": "red", "value": t} for t in panel.thresholds]
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if panel.thresholds and panel.kind == "timeseries":
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if panel.kind == "timeseries" else {},
        "targets": [
            {
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": t.expr,
                "legendFormat": t.legend,
                "refId": chr(ord("A") + i),
            }
            for i, t in enumerate(panel.targets)
        ],
        **panel.extra,
    }


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for title, row in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        next_id += 1
        y += 1
        x = 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
        y += 8
    return {
        "uid": UID,
        "title": "voicefleet",
        "description": "Voice agent fleets run by the voicefleet operator: latency, capacity, cost, providers.",
        "tags": ["voicefleet", "livekit", "voice"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                _variable("namespace", "Namespace", "label_values(voicefleet_agent_active_sessions, namespace)"),
                _variable(
                    "voiceagent",
                    "VoiceAgent",
                    'label_values(voicefleet_agent_active_sessions{namespace=~"$namespace"}, voiceagent)',
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"
