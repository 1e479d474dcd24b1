{{/*
Naming, labels and images shared by every template. Names follow the usual Helm pattern:
<release>-<chart>, shortened when the release name already contains the chart name.
*/}}

{{- define "tidepool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tidepool.fullname" -}}
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

{{- define "tidepool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "tidepool.labels" -}}
helm.sh/chart: {{ include "tidepool.chart" . }}
{{ include "tidepool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tidepool
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: stable across upgrades (never add version labels here). */}}
{{- define "tidepool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidepool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Component names and labels. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "tidepool.componentName" -}}
{{- printf "%s-%s" (include "tidepool.fullname" .ctx | trunc 54 | trimSuffix "-") .component }}
{{- end }}

{{- define "tidepool.componentLabels" -}}
{{ include "tidepool.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tidepool.componentSelectorLabels" -}}
{{ include "tidepool.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount names. */}}
{{- define "tidepool.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "tidepool.componentName" (dict "ctx" . "component" "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's Kopf peering name, or nothing when a single replica runs standalone. Peering is on
exactly when there is more than one replica: Kopf then lets one act and pauses the others.
*/}}
{{- define "tidepool.operator.peeringName" -}}
{{- if gt (int .Values.operator.replicas) 1 }}
{{- default (include "tidepool.componentName" (dict "ctx" . "component" "operator")) .Values.operator.peering.name }}
{{- end }}
{{- end }}

{{- define "tidepool.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "tidepool.componentName" (dict "ctx" . "component" "gateway")) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference. Call with (dict "ctx" $ "image" .Values.operator.image).
No registry host unless imageRegistry is set; a digest wins over the tag.
*/}}
{{- define "tidepool.image" -}}
{{- $registry := .ctx.Values.imageRegistry | trimSuffix "/" }}
{{- $repo := .image.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" $registry $repo }}{{ end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
A component's PodDisruptionBudget. Call with (dict "ctx" $ "component" "gateway" "budget" (dict
"minAvailable" 1)): budget holds minAvailable or maxUnavailable.
*/}}
{{- define "tidepool.podDisruptionBudget" -}}
{{- $component := dict "ctx" .ctx "component" .component }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tidepool.componentName" $component }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "tidepool.componentLabels" $component | nindent 4 }}
spec:
  {{- toYaml .budget | nindent 2 }}
  selector:
    matchLabels:
      {{- include "tidepool.componentSelectorLabels" $component | nindent 6 }}
{{- end }}
