{{/* Names. */}}
{{- define "meridian.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "meridian.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "meridian.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable for the life of a release (a Deployment's selector is immutable). */}}
{{- define "meridian.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meridian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The recommended labels, on every object. */}}
{{- define "meridian.labels" -}}
helm.sh/chart: {{ include "meridian.chart" . }}
{{ include "meridian.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: dns
app.kubernetes.io/part-of: meridian
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "meridian.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "meridian.adminSecretName" -}}
{{- .Values.adminToken.existingSecret | default (printf "%s-admin" (include "meridian.fullname" .)) -}}
{{- end -}}

{{- define "meridian.geoipSecretName" -}}
{{- .Values.geoip.maxmind.existingSecret | default (printf "%s-geoip" (include "meridian.fullname" .)) -}}
{{- end -}}

{{/* The GeoIP file meridian opens. */}}
{{- define "meridian.geoipPath" -}}
{{- $file := .Values.geoip.file -}}
{{- if not $file -}}
{{- if eq .Values.geoip.source "maxmind" -}}
{{- $file = printf "%s.mmdb" (first .Values.geoip.maxmind.editionIds) -}}
{{- else -}}
{{- fail "geoip.file: name the database file on geoip.volume (e.g. GeoLite2-City.mmdb)" -}}
{{- end -}}
{{- end -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.geoip.mountPath) $file -}}
{{- end -}}

{{/*
"Install unless someone else already has": for a cluster-scoped object that other software may
own (external-dns' CRD, KubeFed's namespace). Arguments: (list $ mode apiVersion kind name).
Renders "true" when mode is true, or mode is auto and the object is absent or was installed by
this very release (so an upgrade keeps managing what the install created instead of deleting it).
*/}}
{{- define "meridian.installUnlessOwnedElsewhere" -}}
{{- $ := index . 0 -}}
{{- $mode := toString (index . 1) -}}
{{- if eq $mode "true" -}}
true
{{- else if eq $mode "auto" -}}
{{- $existing := lookup (index . 2) (index . 3) "" (index . 4) -}}
{{- if not $existing -}}
true
{{- else -}}
{{- $ann := $existing.metadata.annotations | default dict -}}
{{- if and (eq (index $ann "meta.helm.sh/release-name" | default "") $.Release.Name) (eq (index $ann "meta.helm.sh/release-namespace" | default "") $.Release.Namespace) -}}
true
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
