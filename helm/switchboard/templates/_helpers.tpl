{{/* Names, labels and shared pieces of the Switchboard chart. */}}

{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name; component names append to it, so keep room. */}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 35 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 35 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 35 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end }}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Edge names and selector. */}}
{{- define "switchboard.edge.fullname" -}}
{{- printf "%s-edge" (include "switchboard.fullname" .) }}
{{- end }}

{{- define "switchboard.edge.selectorLabels" -}}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/component: edge
{{- end }}

{{/* Router names and selector of one pool: call with (dict "root" $ "pool" $pool). */}}
{{- define "switchboard.router.fullname" -}}
{{- printf "%s-router-%s" (include "switchboard.fullname" .root) .pool.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.router.selectorLabels" -}}
{{ include "switchboard.selectorLabels" .root }}
app.kubernetes.io/component: router
switchboard.io/pool: {{ .pool.name }}
{{- end }}

{{/* Every router of every pool (the server API Service selects these). */}}
{{- define "switchboard.routers.selectorLabels" -}}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/component: router
{{- end }}

{{- define "switchboard.secretName" -}}
{{- default (printf "%s-auth" (include "switchboard.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/*
SWITCHBOARD_TENANT_POOLS for every process: tenant=pool for each tenant of
each pool. Tenants listed nowhere use the pool named "default".
*/}}
{{- define "switchboard.tenantPools" -}}
{{- $entries := list }}
{{- range .Values.routerPools }}
{{- $pool := .name }}
{{- range .tenants }}
{{- $entries = append $entries (printf "%s=%s" . $pool) }}
{{- end }}
{{- end }}
{{- join "," $entries }}
{{- end }}

{{/* Refuses values a running cluster would trip over, with a message that says why. */}}
{{- define "switchboard.validate" -}}
{{- $names := list }}
{{- $tenants := dict }}
{{- range .Values.routerPools }}
{{- if has .name $names }}
{{- fail (printf "routerPools: pool %q is declared twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- $pool := .name }}
{{- range .tenants }}
{{- if hasKey $tenants . }}
{{- fail (printf "routerPools: tenant %q is in pools %q and %q" . (get $tenants .) $pool) }}
{{- end }}
{{- $_ := set $tenants . $pool }}
{{- end }}
{{- end }}
{{- if not (has "default" $names) }}
{{- fail "routerPools: declare a pool named \"default\": it serves every tenant no pool lists, and edges are ready only while they reach one of its routers" }}
{{- end }}
{{- if and (not .Values.nats.url) (not .Values.nats.inCluster.enabled) (not .Values.nats.existingSecret) }}
{{- fail "nats: set nats.url (or nats.existingSecret), or nats.inCluster.enabled=true: routers announce themselves over NATS" }}
{{- end }}
{{- if and (not .Values.redis.url) (not .Values.redis.inCluster.enabled) (not .Values.redis.existingSecret) }}
{{- fail "redis: set redis.url (or redis.existingSecret), or redis.inCluster.enabled=true: routers keep presence and state there" }}
{{- end }}
{{- end }}

{{/* Environment shared by edges and routers. */}}
{{- define "switchboard.commonEnv" -}}
- name: SWITCHBOARD_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: SWITCHBOARD_NATS_URL
{{- if .Values.nats.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.existingSecret }}
      key: {{ .Values.nats.existingSecretKey }}
{{- else if .Values.nats.url }}
  value: {{ .Values.nats.url | quote }}
{{- else }}
  value: {{ printf "nats://%s-nats:4222" (include "switchboard.fullname" .) | quote }}
{{- end }}
- name: SWITCHBOARD_TRANSPORT
  value: {{ .Values.cluster.transport | quote }}
- name: SWITCHBOARD_SUBJECT_PREFIX
  value: {{ .Values.cluster.subjectPrefix | quote }}
- name: SWITCHBOARD_TENANT_POOLS
  value: {{ include "switchboard.tenantPools" . | quote }}
- name: SWITCHBOARD_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: {{ .Values.auth.existingSecretKeys.jwtSecret }}
{{- end }}

{{- define "switchboard.redisEnv" -}}
- name: SWITCHBOARD_REDIS_URL
{{- if .Values.redis.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.url }}
  value: {{ .Values.redis.url | quote }}
{{- else }}
  value: {{ printf "redis://%s-redis:6379/" (include "switchboard.fullname" .) | quote }}
{{- end }}
{{- end }}

{{/*
Restart pods when the settings or the given secrets change. Generated
secrets never change once made, so the values stand for the Secret.
*/}}
{{- define "switchboard.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/auth: {{ .Values.auth | toJson | sha256sum }}
{{- end }}
