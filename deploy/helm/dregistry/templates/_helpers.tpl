{{/* Chart name, overridable. */}}
{{- define "dregistry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects; "-egress" is appended to it, so it is cut
to 56 characters to keep every name within the 63 of a DNS label.
*/}}
{{- define "dregistry.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dregistry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "dregistry.labels" -}}
helm.sh/chart: {{ include "dregistry.chart" . }}
{{ include "dregistry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select every daemon, egress or not (the Service uses them). */}}
{{- define "dregistry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dregistry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dregistry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dregistry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dregistry.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Secret with the gossip keys: the user's, or the one the chart makes. */}}
{{- define "dregistry.clusterKeySecret" -}}
{{- default (printf "%s-cluster-key" (include "dregistry.fullname" .)) .Values.cluster.key.existingSecret }}
{{- end }}

{{/* Secret with upstream credentials; empty when none is configured. */}}
{{- define "dregistry.registryAuthSecret" -}}
{{- if .Values.upstream.auth.existingSecret }}
{{- .Values.upstream.auth.existingSecret }}
{{- else if .Values.upstream.auth.dockerconfigjson }}
{{- printf "%s-registry-auth" (include "dregistry.fullname" .) }}
{{- end }}
{{- end }}

{{/* Where the daemons meet: the given list, or the headless Service. */}}
{{- define "dregistry.join" -}}
{{- if .Values.cluster.join }}
{{- join "," .Values.cluster.join }}
{{- else }}
{{- printf "%s.%s.svc.%s:%d" (include "dregistry.fullname" .) .Release.Namespace .Values.cluster.clusterDomain (int .Values.ports.gossip) }}
{{- end }}
{{- end }}
