{{- define "armor-refresh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "armor-refresh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "armor-refresh.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "armor-refresh.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "armor-refresh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "armor-refresh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "armor-refresh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "armor-refresh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "armor-refresh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "armor-refresh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "armor-refresh.webhookService" -}}
{{- printf "%s-webhook" (include "armor-refresh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator patches the caBundle itself unless cert-manager injects it. */}}
{{- define "armor-refresh.selfSigned" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.certManager.enabled) }}true{{ end }}
{{- end }}

{{/* The default policy is rendered when its kind can be created: the API server serves it,
or the CRDs are not this release's (crds.enabled=false: installed beforehand). */}}
{{- define "armor-refresh.renderDefaultPolicy" -}}
{{- if and .Values.defaultPolicy.enabled (or (not .Values.crds.enabled) (.Capabilities.APIVersions.Has "refresh.armor.dev/v1alpha1/ArmorRefreshPolicy")) }}true{{ end }}
{{- end }}
