{{/* Chart name, at most 63 characters (a DNS label). */}}
{{- define "domainwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name alone when it already contains the chart's. */}}
{{- define "domainwatch.fullname" -}}
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

{{- define "domainwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "domainwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "domainwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "domainwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "domainwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "domainwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "domainwatch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "domainwatch.configMapName" -}}
{{- default (include "domainwatch.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{- define "domainwatch.webConfigSecretName" -}}
{{- default (printf "%s-web-config" (include "domainwatch.fullname" .)) .Values.webConfig.existingSecret }}
{{- end }}

{{/* "true" when the exporter serves HTTPS (probes and the ServiceMonitor follow it). */}}
{{- define "domainwatch.tls" -}}
{{- $w := .Values.webConfig }}
{{- if and $w.enabled (ne (toString $w.tls) "") }}
{{- $w.tls | toString }}
{{- else if and $w.enabled (or $w.tlsSecret (hasKey ($w.config | default dict) "tls_server_config")) }}
{{- "true" }}
{{- else }}
{{- "false" }}
{{- end }}
{{- end }}

{{- define "domainwatch.shards" -}}
{{- max 1 (int .Values.shards) }}
{{- end }}
