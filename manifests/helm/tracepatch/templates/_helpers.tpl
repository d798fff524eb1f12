{{/* Named templates shared by the chart's manifests. */}}

{{/* Chart name, overridable by nameOverride. */}}
{{- define "tracepatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects (Service, Deployment, ConfigMap prefix, ...): the
release name, plus the chart name unless the release name already contains it, so a
release called "tracepatch" yields the plain names of manifests/.
*/}}
{{- define "tracepatch.fullname" -}}
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

{{- define "tracepatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pods; never change them on upgrade (selectors are immutable). */}}
{{- define "tracepatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tracepatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tracepatch.labels" -}}
helm.sh/chart: {{ include "tracepatch.chart" . }}
{{ include "tracepatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tracepatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the MutatingWebhookConfiguration, refused unless it sorts before "istio-": the
apiserver calls mutating webhook configurations in order of their names (byte-wise), and
tracepatch must see a pod before Istio's injector (istio-sidecar-injector,
istio-revision-tag-*) adds a sidecar it cannot take back out.
*/}}
{{- define "tracepatch.webhookName" -}}
{{- $name := .Values.webhook.name }}
{{- if not (lt $name "istio-") }}
{{- fail (printf "webhook.name %q must sort before \"istio-\" (e.g. 00-tracepatch): the apiserver calls mutating webhook configurations in name order, and tracepatch must run before Istio's sidecar injector" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* The Secret holding tls.crt and tls.key (and, self-managed, the CA). */}}
{{- define "tracepatch.certSecretName" -}}
{{- if eq .Values.certificates.mode "secret" }}
{{- required "certificates.secret.name is required with certificates.mode=secret" .Values.certificates.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "tracepatch.fullname" .) }}
{{- end }}
{{- end }}

{{/* DNS names the apiserver may use for the Service. */}}
{{- define "tracepatch.serviceDnsNames" -}}
{{- $svc := include "tracepatch.fullname" . -}}
- {{ $svc }}
- {{ $svc }}.{{ .Release.Namespace }}
- {{ $svc }}.{{ .Release.Namespace }}.svc
- {{ $svc }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{/*
A duration value in milliseconds, parsed like the server's durations (--drain-timeout,
--shutdown-delay): a number with ms, s, m, h or d, or a bare number of seconds.
Call with (list "valueName" .Values.valueName); the name is for the error message.
*/}}
{{- define "tracepatch.durationMs" -}}
{{- $name := index . 0 }}
{{- $d := toString (index . 1) }}
{{- $n := regexFind "^[0-9]+" $d | atoi }}
{{- $unit := regexReplaceAll "^[0-9]+" $d "" }}
{{- if eq $unit "ms" }}{{ $n }}
{{- else if or (eq $unit "") (eq $unit "s") }}{{ mul $n 1000 }}
{{- else if eq $unit "m" }}{{ mul $n 60000 }}
{{- else if eq $unit "h" }}{{ mul $n 3600000 }}
{{- else if eq $unit "d" }}{{ mul $n 86400000 }}
{{- else }}{{ fail (printf "%s %q: use a number with ms, s, m, h or d" $name $d) }}
{{- end }}
{{- end }}

{{/*
Non-empty when the rules configuration is the built-in default (no configFile, and
`config` equal to files/default-config.yaml, the output of `tracepatch config default`):
then the chart's matchConditions, rendered for that configuration, apply.
*/}}
{{- define "tracepatch.defaultRulesConfig" -}}
{{- $default := .Files.Get "files/default-config.yaml" | fromYaml }}
{{- if and (not .Values.configFile) (eq (toJson .Values.config) (toJson $default)) -}}
true
{{- end }}
{{- end }}
