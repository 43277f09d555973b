{{/* Chart name, trimmed to a DNS label. */}}
{{- define "voicefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name: the release name alone when it already contains the chart name. */}}
{{- define "voicefleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "voicefleet.operatorName" -}}
{{- printf "%s-operator" (include "voicefleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The fleet channel as agent pods reach it. */}}
{{- define "voicefleet.fleetUrl" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "voicefleet.operatorName" .) .Release.Namespace .Values.operator.fleetPort) .Values.operator.fleetUrl }}
{{- end }}

{{- define "voicefleet.whisperName" -}}
{{- printf "%s-whisper" (include "voicefleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "voicefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voicefleet.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels common to every object of the release; pass (dict "ctx" $ "component" "operator"). */}}
{{- define "voicefleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "voicefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: voicefleet
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "voicefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicefleet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The operator image: digest wins over tag; the tag defaults to the chart's appVersion. */}}
{{- define "voicefleet.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (toString .tag) }}
{{- end }}
{{- end }}

{{/* Label selector for the Services the operator creates in front of agent pods (desired.py). */}}
{{- define "voicefleet.agentServiceLabels" -}}
app.kubernetes.io/name: voicefleet-agent
app.kubernetes.io/managed-by: voicefleet-operator
{{- end }}

{{/* The namespaces the operator serves, as a JSON list; [] means every namespace (operator.watchAnyNamespace). */}}
{{- define "voicefleet.namespaces" -}}
{{- if .Values.operator.watchAnyNamespace }}
{{- list | toJson }}
{{- else if .Values.operator.watchNamespaces }}
{{- .Values.operator.watchNamespaces | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* Namespaces selector for monitors of agents: the watched namespaces, else all. */}}
{{- define "voicefleet.agentNamespaceSelector" -}}
{{- $namespaces := include "voicefleet.namespaces" . | fromJsonArray }}
{{- if $namespaces }}
matchNames:
{{- range $namespaces }}
  - {{ . | quote }}
{{- end }}
{{- else }}
any: true
{{- end }}
{{- end }}

{{- /*
Least privilege, verb by verb, for what the operator does (tests/packaging proves it reconciles with exactly these):
- its own kinds: watch them, patch metadata (kopf's finalizer and progress annotations) and status;
  voiceagents/finalizers update: blockOwnerDeletion on the children's owner references needs it where the
  OwnerReferencesPermissionEnforcement admission plugin runs;
- the children of a VoiceAgent: server-side apply (create + patch) and watch; never update/delete (owner
  references let the garbage collector delete them); tests/packaging fails on a rule the operator never uses;
- Secrets and ConfigMaps it references: read only; ConfigMaps are also children, and so is one Secret per
  VoiceAgent that follows a ProviderPolicy (its fleet-channel token), hence create/patch;
- Events: create.
*/ -}}
{{- define "voicefleet.namespacedRules" }}
- apiGroups: [voicefleet.io]
  resources: [voiceagents, providerpolicies]
  verbs: [get, list, watch, patch]
- apiGroups: [voicefleet.io]
  resources: [voiceagents/status, providerpolicies/status]
  verbs: [patch]
- apiGroups: [voicefleet.io]
  resources: [voiceagents/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps]
  # get: a ConfigMap a spec names for its instructions
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [serviceaccounts, services]
  # get: before its first write of a child, whether that name is held by an object it did not create
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  # get: its rollout's figures, for the VoiceAgent's status
  verbs: [get, list, watch, create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  # delete: an agent switched to spec.scaling.autoscaler External (e.g. KEDA) loses the HPA the operator made.
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [pods]
  # which agent pods are ready (FleetConnected) and draining (label-selected: agent pods only); patch: their
  # controller.kubernetes.io/pod-deletion-cost, so that scale-in removes idle pods first
  verbs: [list, watch, patch]
- apiGroups: [custom.metrics.k8s.io]
  resources: [pods/voicefleet_agent_active_sessions]
  # the agents' live sessions as the HPA reads them: status.sessions and the pods' deletion costs
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
