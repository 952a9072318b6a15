{{/*
Names. The fullname is the release name, suffixed with the chart name unless the release
name already contains it (release "promoter" -> "promoter", release "ci" -> "ci-promoter").
*/}}
{{- define "promoter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "promoter.fullname" -}}
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

{{- define "promoter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "promoter.labels" -}}
helm.sh/chart: {{ include "promoter.chart" . }}
{{ include "promoter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the controller's pods. Never change them on upgrade. */}}
{{- define "promoter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "promoter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "promoter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "promoter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The subjects of every binding: the controller's ServiceAccount. */}}
{{- define "promoter.subjects" -}}
- kind: ServiceAccount
  name: {{ include "promoter.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "promoter.webhookServiceName" -}}
{{- printf "%s-webhook" (include "promoter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "promoter.metricsServiceName" -}}
{{- printf "%s-metrics" (include "promoter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "promoter.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Where the compiled-plugin cache and git working copies live (an emptyDir). */}}
{{- define "promoter.dataDir" -}}/var/lib/promoter{{- end }}

{{/*
The Secrets that plugins name (grant credentials and signing keys, OCI pull Secrets): sorted, without
duplicates, joined with commas ("" for none). They live in the release namespace, beside
the plugin ConfigMaps.
*/}}
{{- define "promoter.pluginSecretNames" -}}
{{- $names := list }}
{{- range concat (.Values.plugins.inline | default list) (.Values.plugins.oci | default list) }}
{{- with .pullSecret }}
{{- $names = append $names . }}
{{- end }}
{{- with .grant }}
{{- range .credentials | default list }}
{{- $names = append $names .secretRef.name }}
{{- end }}
{{- range .keys | default list }}
{{- $names = append $names .secretRef.name }}
{{- end }}
{{- end }}
{{- end }}
{{- $names | uniq | sortAlpha | join "," }}
{{- end }}
