{{/*
Names, labels and the pod-spec pieces the DaemonSet and the rendered static
pod share.
*/}}

{{- define "qkeyd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-qkeyd", or the release name alone when it already says qkeyd. */}}
{{- define "qkeyd.fullname" -}}
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

{{- define "qkeyd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the DaemonSet's pods (never change them in place). */}}
{{- define "qkeyd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qkeyd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end }}

{{- define "qkeyd.labels" -}}
helm.sh/chart: {{ include "qkeyd.chart" . }}
app.kubernetes.io/name: {{ include "qkeyd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: qkeyd
{{- end }}

{{- define "qkeyd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "qkeyd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "qkeyd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The devices that are on, as a list of
{key, path, gid, resourceName, cdiDevice}, in a fixed order.
*/}}
{{- define "qkeyd.devices" -}}
{{- $out := list }}
{{- range $key := list "hwrng" "tpm" }}
{{- $d := index $.Values.devices $key }}
{{- if $d.enabled }}
{{- if not $d.path }}
{{- fail (printf "devices.%s.path is empty" $key) }}
{{- end }}
{{- if and $d.resourceName $d.cdiDevice }}
{{- fail (printf "devices.%s: set resourceName or cdiDevice, not both" $key) }}
{{- end }}
{{- $out = append $out (dict "key" $key "path" $d.path "gid" $d.gid "resourceName" (default "" $d.resourceName) "cdiDevice" (default "" $d.cdiDevice)) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
"true" when qkeyd must run as uid 0: a device that is on has no group
(devices.<name>.gid null), so only its owner, root, can open it.
*/}}
{{- define "qkeyd.needsRoot" -}}
{{- range (include "qkeyd.devices" . | fromJsonArray) }}
{{- if kindIs "invalid" .gid }}true{{ end }}
{{- end }}
{{- end }}

{{- define "qkeyd.uid" -}}
{{- if include "qkeyd.needsRoot" . }}0{{ else }}{{ int64 .Values.securityContext.runAsUser }}{{ end }}
{{- end }}

{{- define "qkeyd.gid" -}}
{{- if include "qkeyd.needsRoot" . }}0{{ else }}{{ int64 .Values.securityContext.runAsGroup }}{{ end }}
{{- end }}

{{/*
The pod securityContext. Takes (dict "root" $ "fsGroup" bool): the static pod
has no volume whose ownership the kubelet could manage, so no fsGroup.
*/}}
{{- define "qkeyd.podSecurityContext" -}}
{{- $root := .root }}
{{- $uid := include "qkeyd.uid" $root | int64 }}
{{- $gid := include "qkeyd.gid" $root | int64 }}
{{- $groups := list }}
{{- range (include "qkeyd.devices" $root | fromJsonArray) }}
{{- if not (kindIs "invalid" .gid) }}
{{- $groups = append $groups (int64 .gid) }}
{{- end }}
{{- end }}
{{- range $root.Values.securityContext.supplementalGroups }}
{{- $groups = append $groups (int64 .) }}
{{- end -}}
runAsNonRoot: {{ ne $uid 0 }}
runAsUser: {{ $uid }}
runAsGroup: {{ $gid }}
{{- if $groups }}
supplementalGroups:
  {{- range ($groups | uniq) }}
  - {{ . }}
  {{- end }}
{{- end }}
{{- if and .fsGroup (ne $uid 0) }}
# Secret and emptyDir files readable by qkeyd's group (hostPaths are not affected).
fsGroup: {{ $gid }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The qkeyd container's securityContext. */}}
{{- define "qkeyd.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
  {{- with .Values.securityContext.addCapabilities }}
  add:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The init container that hands the host directories to qkeyd's uid. Takes
(dict "root" $ "dirs" (list (list path mode) ...) "mounts" <volumeMounts yaml>).
*/}}
{{- define "qkeyd.chownContainer" -}}
{{- $root := .root }}
{{- $uid := include "qkeyd.uid" $root }}
{{- $gid := include "qkeyd.gid" $root }}
{{- $img := $root.Values.hostDirs.chown.image -}}
- name: chown-host-dirs
  image: {{ printf "%s:%s" $img.repository $img.tag }}
  imagePullPolicy: {{ $img.pullPolicy }}
  command:
    - sh
    - -ec
    - |
      {{- range .dirs }}
      chmod {{ index . 1 }} {{ index . 0 }}
      chown {{ $uid }}:{{ $gid }} {{ index . 0 }}
      {{- end }}
  securityContext:
    runAsNonRoot: false
    runAsUser: 0
    runAsGroup: 0
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    privileged: false
    capabilities:
      drop: ["ALL"]
      # chown to another uid; chmod of a directory that uid already owns.
      add: ["CHOWN", "FOWNER"]
  resources:
    requests:
      cpu: 10m
      memory: 8Mi
    limits:
      memory: 32Mi
  volumeMounts:
    {{- .mounts | nindent 4 }}
{{- end }}

{{/*
Volume mounts and volumes for the devices that come as hostPaths. Takes
(dict "root" $ "static" bool): the static pod ignores resourceName (a device
plugin runs as a pod, which may need the API that waits for this plugin).
*/}}
{{- define "qkeyd.deviceMounts" -}}
{{- range (include "qkeyd.devices" .root | fromJsonArray) }}
{{- if not (or .cdiDevice (and .resourceName (not $.static))) }}
- name: dev-{{ .key }}
  mountPath: {{ .path }}
{{- end }}
{{- end }}
{{- end }}

{{- define "qkeyd.deviceVolumes" -}}
{{- range (include "qkeyd.devices" .root | fromJsonArray) }}
{{- if not (or .cdiDevice (and .resourceName (not $.static))) }}
- name: dev-{{ .key }}
  hostPath:
    path: {{ .path }}
    type: CharDevice
{{- end }}
{{- end }}
{{- end }}

{{/* The cdi.k8s.io/ annotations of the devices that come through CDI. */}}
{{- define "qkeyd.cdiAnnotations" -}}
{{- range (include "qkeyd.devices" . | fromJsonArray) }}
{{- if .cdiDevice }}
cdi.k8s.io/qkeyd-{{ .key }}: {{ .cdiDevice | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The qkeyd.toml a `config`-shaped value gives: its toml, else its settings as TOML. */}}
{{- define "qkeyd.configToml" -}}
{{- if .config.toml }}
{{- .config.toml }}
{{- else -}}
# qkeyd.toml written by the qkeyd Helm chart from {{ .from }}.settings.
# The listen address, state directory and sockets come from the command line.
{{- include "qkeyd.toml.table" (dict "table" .config.settings "path" "") }}
{{ end }}
{{- end }}
