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
{{- if and .Values.cluster.tls.enabled (not .Values.cluster.tls.existingSecret) }}
{{- fail "cluster.tls: enabled needs existingSecret, a Secret with the certificate, key and CA (cert-manager's tls.crt, tls.key, ca.crt)" }}
{{- end }}
{{- if and .Values.nats.credentials.credsSecret .Values.nats.credentials.tokenSecret }}
{{- fail "nats.credentials: give credsSecret or tokenSecret, not both" }}
{{- end }}
{{- if and .Values.nats.inCluster.enabled (or .Values.nats.url .Values.nats.existingSecret .Values.nats.credentials.credsSecret .Values.nats.credentials.tokenSecret) }}
{{- fail "nats: inCluster.enabled runs a NATS with users of its own; leave nats.url, nats.existingSecret and nats.credentials empty with it" }}
{{- end }}
{{- if and .Values.nats.inCluster.enabled (not .Values.auth.generate) (not .Values.auth.seed) }}
{{- fail "nats.inCluster: its passwords are generated, which auth.generate=false forbids; set auth.seed (passwords derived from it) or point nats.url at a NATS of your own" }}
{{- end }}
{{- end }}

{{/* Environment shared by edges and routers. */}}
{{- define "switchboard.commonEnv" -}}
- name: SWITCHBOARD_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- if .Values.nats.inCluster.enabled }}
# Read before the URL below, which refers to it.
- name: NATS_CLUSTER_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.natsSecretName" . }}
      key: {{ include "switchboard.natsClusterUser" . }}
{{- end }}
- name: SWITCHBOARD_NATS_URL
{{- if .Values.nats.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.existingSecret }}
      key: {{ .Values.nats.existingSecretKey }}
{{- else if .Values.nats.url }}
  value: {{ .Values.nats.url | quote }}
{{- else }}
  value: {{ printf "nats://%s:$(NATS_CLUSTER_PASSWORD)@%s-nats:4222" (include "switchboard.natsClusterUser" .) (include "switchboard.fullname" .) | quote }}
{{- end }}
{{- with .Values.nats.credentials }}
{{- if .credsSecret }}
- name: SWITCHBOARD_NATS_CREDS
  value: {{ printf "%s/nats.creds" (include "switchboard.natsCredsDir" $) | quote }}
{{- end }}
{{- if .tokenSecret }}
- name: SWITCHBOARD_NATS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .tokenSecret }}
      key: {{ .tokenSecretKey }}
{{- end }}
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
- name: SWITCHBOARD_CLUSTER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: {{ .Values.auth.existingSecretKeys.clusterSecret }}
{{- with .Values.auth.jwt }}
{{- if .audience }}
- name: SWITCHBOARD_JWT_AUDIENCE
  value: {{ .audience | quote }}
{{- end }}
{{- if .issuer }}
- name: SWITCHBOARD_JWT_ISSUER
  value: {{ .issuer | quote }}
{{- end }}
{{- if .maxLifetime }}
- name: SWITCHBOARD_JWT_MAX_LIFETIME
  value: {{ .maxLifetime | quote }}
{{- end }}
{{- end }}
{{- if .Values.cluster.tls.enabled }}
{{- $dir := include "switchboard.tlsDir" . }}
- name: SWITCHBOARD_TLS_CERT
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: SWITCHBOARD_TLS_KEY
  value: {{ printf "%s/tls.key" $dir | quote }}
- name: SWITCHBOARD_TLS_CA
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
{{- end }}

{{/* Where the TLS Secret and the NATS creds file are mounted (outside the ConfigMap's mount). */}}
{{- define "switchboard.tlsDir" -}}
/var/run/switchboard/tls
{{- end }}

{{- define "switchboard.natsCredsDir" -}}
/var/run/switchboard/nats
{{- end }}

{{/* The in-cluster NATS: its users' passwords live in this Secret, one key per user. */}}
{{- define "switchboard.natsSecretName" -}}
{{- printf "%s-nats-users" (include "switchboard.fullname" .) }}
{{- end }}

{{- define "switchboard.natsClusterUser" -}}
switchboard
{{- end }}

{{/* Volume mounts and volumes for the cluster TLS Secret and the NATS creds file, when set. */}}
{{- define "switchboard.trustVolumeMounts" -}}
{{- if .Values.cluster.tls.enabled }}
- name: cluster-tls
  mountPath: {{ include "switchboard.tlsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.nats.credentials.credsSecret }}
- name: nats-creds
  mountPath: {{ include "switchboard.natsCredsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "switchboard.trustVolumes" -}}
{{- with .Values.cluster.tls }}
{{- if .enabled }}
- name: cluster-tls
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ .existingSecret }}
          items:
            - {key: {{ .keys.cert | quote }}, path: tls.crt}
            - {key: {{ .keys.key | quote }}, path: tls.key}
            {{- if not .caSecret }}
            - {key: {{ .keys.ca | quote }}, path: ca.crt}
            {{- end }}
      {{- with .caSecret }}
      # The CA bundle on its own (trust-manager, or old and new CA while the CA rotates).
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $.Values.cluster.tls.keys.ca | quote }}, path: ca.crt}
      {{- end }}
{{- end }}
{{- end }}
{{- with .Values.nats.credentials }}
{{- if .credsSecret }}
- name: nats-creds
  secret:
    secretName: {{ .credsSecret }}
    defaultMode: 0440
    items:
      - {key: {{ .credsSecretKey | quote }}, path: nats.creds}
{{- end }}
{{- end }}
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
Whether this render talks to a cluster (helm install, helm upgrade, helm
template --dry-run=server): lookup then finds the release's namespace, or
kube-system when the namespace is still to be made (--create-namespace).
helm template, helm lint, client-side dry runs and GitOps renders (Argo CD)
find neither: a random value made there would change at every render.
*/}}
{{- define "switchboard.clusterReadable" -}}
{{- if not (hasKey . "switchboardClusterReadable") }}
{{- $found := lookup "v1" "Namespace" "" .Release.Namespace }}
{{- if not $found }}
{{- $found = lookup "v1" "Namespace" "" "kube-system" }}
{{- end }}
{{- $_ := set . "switchboardClusterReadable" (ternary "true" "" (not (empty $found))) }}
{{- end }}
{{- get . "switchboardClusterReadable" }}
{{- end }}

{{/*
A secret derived from auth.seed: (dict "root" $ "key" "auth/jwtSecret").
Stable for one seed, release and namespace, so helm template renders the
same value every time; different for every key, release and namespace.
It starts with a letter (NATS reads passwords as config text).
*/}}
{{- define "switchboard.derive" -}}
{{- printf "s%s" (sha256sum (printf "switchboard/%s/%s/%s\n%s" .root.Release.Namespace .root.Release.Name .key .root.Values.auth.seed)) }}
{{- end }}

{{/*
The auth Secret's data as JSON (key -> base64 value), made once per render
so the Secret and the pods' checksums see the same values. Per value, the
first that applies: given in the values; derived from auth.seed; kept from
the Secret in the cluster; generated (auth.generate, and only when the
render talks to a cluster); else the render stops and says what to set.
With auth.existingSecret: that Secret's data when the render can read it
(so the checksum follows its content), else nothing.
*/}}
{{- define "switchboard.authData" -}}
{{- if not (hasKey . "switchboardAuthData") }}
{{- $auth := .Values.auth }}
{{- $keys := $auth.existingSecretKeys }}
{{- $out := dict }}
{{- if $auth.existingSecret }}
{{- $out = (lookup "v1" "Secret" .Release.Namespace $auth.existingSecret).data | default dict }}
{{- else }}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "switchboard.secretName" .)).data | default dict }}
{{- range $field, $length := dict "jwtSecret" 48 "apiKey" 40 "clusterSecret" 48 }}
{{- $key := get $keys $field }}
{{- $given := get $auth $field }}
{{- if $given }}
{{- $_ := set $out $key ($given | b64enc) }}
{{- else if $auth.seed }}
{{- $_ := set $out $key (include "switchboard.derive" (dict "root" $ "key" (printf "auth/%s" $field)) | b64enc) }}
{{- else if not $auth.generate }}
{{- fail (printf "auth.%s is empty and auth.generate is false: set auth.existingSecret to a Secret holding %s, %s and %s (the way for helm template and GitOps), auth.seed (every value derived from it, the same at each render), or give auth.%s" $field $keys.jwtSecret $keys.apiKey $keys.clusterSecret $field) }}
{{- else if hasKey $existing $key }}
{{- $_ := set $out $key (get $existing $key) }}
{{- else if include "switchboard.clusterReadable" $ }}
{{- $_ := set $out $key (randAlphaNum $length | b64enc) }}
{{- else }}
{{- fail (printf "auth.%s is empty and this render cannot read the cluster (helm template, helm lint, a client-side dry run, a GitOps tool): a generated value would change at every render. Set auth.existingSecret to a Secret holding %s, %s and %s (the way for GitOps), or auth.seed (a long random string: every value is derived from it, the same at each render), or give auth.%s. helm install and helm upgrade generate it and keep it." $field $keys.jwtSecret $keys.apiKey $keys.clusterSecret $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set . "switchboardAuthData" $out }}
{{- end }}
{{- get . "switchboardAuthData" | toJson }}
{{- end }}

{{/*
Users of the in-cluster NATS (the cluster user, then backend-<tenant>) and
their passwords as JSON (user -> base64), made once per render: derived
from auth.seed; kept from the Secret in the cluster; generated when the
render talks to a cluster; else the render stops and says what to set.
*/}}
{{- define "switchboard.natsUsersData" -}}
{{- if not (hasKey . "switchboardNatsUsersData") }}
{{- $users := list (include "switchboard.natsClusterUser" .) }}
{{- range .Values.nats.inCluster.backendTenants }}
{{- $users = append $users (printf "backend-%s" .) }}
{{- end }}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "switchboard.natsSecretName" .)).data | default dict }}
{{- $out := dict }}
{{- range $users }}
{{- if $.Values.auth.seed }}
{{- $_ := set $out . (include "switchboard.derive" (dict "root" $ "key" (printf "nats/%s" .)) | b64enc) }}
{{- else if hasKey $existing . }}
{{- $_ := set $out . (get $existing .) }}
{{- else if include "switchboard.clusterReadable" $ }}
{{- $_ := set $out . (printf "%s%s" (randAlpha 1) (randAlphaNum 31) | b64enc) }}
{{- else }}
{{- fail (printf "nats.inCluster: the password of NATS user %s would be generated, and this render cannot read the cluster (helm template, helm lint, a GitOps tool): it would change at every render. Set auth.seed (every password is derived from it, the same at each render), or point nats.url at a NATS of your own. helm install and helm upgrade generate the passwords and keep them." .) }}
{{- end }}
{{- end }}
{{- $_ := set . "switchboardNatsUsersData" $out }}
{{- end }}
{{- get . "switchboardNatsUsersData" | toJson }}
{{- end }}

{{/* The settings files, one per component (the ConfigMaps and the checksums use these). */}}
{{- define "switchboard.toml" -}}
{{- /* One `key = value` line each; JSON scalars are valid TOML (toToml would write 65536 as 65536.0). */}}
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}

{{/*
Pod annotations that restart a component's pods when what they read
changes, and only then: (dict "root" $ "component" "edge"|"router").
checksum/config hashes the component's own settings file (a router
setting restarts no edge); checksum/auth hashes the Secret keys the
component reads (edges read no API key) with their content, as rendered
or as read back from the cluster; checksum/nats-users the in-cluster NATS
passwords.
*/}}
{{- define "switchboard.checksums" -}}
{{- $root := .root }}
{{- $auth := $root.Values.auth }}
{{- $data := include "switchboard.authData" $root | fromJson }}
{{- $fields := ternary (list "jwtSecret" "clusterSecret") (list "jwtSecret" "apiKey" "clusterSecret") (eq .component "edge") }}
{{- $read := dict "secret" (include "switchboard.secretName" $root) }}
{{- range $fields }}
{{- $key := get $auth.existingSecretKeys . }}
{{- $_ := set $read $key (get $data $key | default "") }}
{{- end }}
{{- $config := ternary $root.Values.edge.config $root.Values.router.config (eq .component "edge") }}
checksum/config: {{ include "switchboard.toml" $config | sha256sum }}
checksum/auth: {{ $read | toJson | sha256sum }}
{{- if $root.Values.nats.inCluster.enabled }}
checksum/nats-users: {{ include "switchboard.natsUsersData" $root | sha256sum }}
{{- end }}
{{- end }}

{{/*
topologySpreadConstraints of a component: (dict "spread" <topologySpread
values> "constraints" <explicit list> "selector" <selector labels YAML>).
An explicit list wins; else, with spread.enabled, one constraint per
topology key (zones, then nodes) over the component's own pods.
*/}}
{{- define "switchboard.topologySpread" -}}
{{- if .constraints }}
{{- toYaml .constraints }}
{{- else if .spread.enabled }}
{{- range .spread.topologyKeys }}
- maxSkew: {{ $.spread.maxSkew }}
  topologyKey: {{ . }}
  whenUnsatisfiable: {{ $.spread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- $.selector | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}
