{{/*
The KMS v2 plugin as a static pod for a control-plane node
(/etc/kubernetes/manifests/qkeyd-kms.yaml). A static pod is run by the
kubelet from a file, before and without the API: it can use no
ServiceAccount, Secret or ConfigMap, so its config comes from the node's
kms.staticPod.configDir. hostNetwork: the pod network may itself need the API
(a CNI that is not up yet), and the REST API stays on the host's loopback.
*/}}
{{- define "qkeyd.kmsStaticPod" -}}
{{- $sp := .Values.kms.staticPod }}
{{- $socketDir := dir .Values.kms.socket }}
{{- $uid := include "qkeyd.uid" . | int64 }}
{{- $mounts := include "qkeyd.deviceMounts" (dict "root" . "static" true) }}
{{- $annotations := merge (include "qkeyd.cdiAnnotations" . | fromYaml) (deepCopy $sp.annotations) -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ $sp.name }}
  namespace: {{ $sp.namespace }}
  labels:
    component: {{ $sp.name }}
    tier: control-plane
    app.kubernetes.io/name: {{ include "qkeyd.name" . }}
    app.kubernetes.io/component: kms
    app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  hostNetwork: true
  priorityClassName: {{ $sp.priorityClassName }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- include "qkeyd.podSecurityContext" (dict "root" . "fsGroup" false) | nindent 4 }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (ne $uid 0) .Values.hostDirs.chown.enabled }}
  initContainers:
    {{- $dirMounts := printf "- {name: kms-socket, mountPath: %s}\n- {name: kms-state, mountPath: %s}" $socketDir $sp.stateDir }}
    {{- include "qkeyd.chownContainer" (dict "root" . "dirs" (list (list $socketDir "0755") (list $sp.stateDir "0700")) "mounts" $dirMounts) | nindent 4 }}
  {{- end }}
  containers:
    - name: qkeyd
      image: {{ include "qkeyd.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - {{ .Values.image.binary }}
      args:
        - serve
        - --config={{ $sp.configDir }}/qkeyd-kms.toml
        - --state-dir={{ $sp.stateDir }}
        - --kms-socket={{ .Values.kms.socket }}
        - --listen=127.0.0.1:{{ int64 $sp.restPort }}
      env:
        - name: QKEYD_LOG
          value: {{ .Values.logLevel | quote }}
        {{- with $sp.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      securityContext:
        {{- include "qkeyd.containerSecurityContext" . | nindent 8 }}
      ports:
        - name: rest
          containerPort: {{ int64 $sp.restPort }}
          protocol: TCP
      # /readyz says whether the pool has healthy entropy, which Encrypt needs.
      startupProbe:
        httpGet: {host: 127.0.0.1, path: /readyz, port: {{ int64 $sp.restPort }}}
        periodSeconds: {{ .Values.probes.startup.periodSeconds }}
        failureThreshold: {{ .Values.probes.startup.failureThreshold }}
      livenessProbe:
        httpGet: {host: 127.0.0.1, path: /healthz, port: {{ int64 $sp.restPort }}}
        periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet: {host: 127.0.0.1, path: /readyz, port: {{ int64 $sp.restPort }}}
        periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
      {{- with $sp.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - {name: kms-socket, mountPath: {{ $socketDir }}}
        - {name: kms-config, mountPath: {{ $sp.configDir }}, readOnly: true}
        - {name: kms-state, mountPath: {{ $sp.stateDir }}}
        {{- with $mounts }}
        {{- . | trim | nindent 8 }}
        {{- end }}
        {{- with $sp.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    # Shared with kube-apiserver, which dials {{ .Values.kms.socket }}.
    - name: kms-socket
      hostPath: {path: {{ $socketDir }}, type: DirectoryOrCreate}
    - name: kms-config
      hostPath: {path: {{ $sp.configDir }}, type: Directory}
    # The KEK records: without them (or the sealer's key) every Secret is lost.
    - name: kms-state
      hostPath: {path: {{ $sp.stateDir }}, type: DirectoryOrCreate}
    {{- with (include "qkeyd.deviceVolumes" (dict "root" . "static" true)) }}
    {{- . | trim | nindent 4 }}
    {{- end }}
    {{- with $sp.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
