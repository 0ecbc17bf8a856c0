{{/*
kube-apiserver's EncryptionConfiguration, written once here. With the default
values it is deploy/kubernetes/encryption-config.yaml (the end-to-end test
compares the two after YAML parsing; the KMS end-to-end test runs a real
kube-apiserver with that file).
*/}}
{{- define "qkeyd.encryptionConfig" -}}
{{- $e := .Values.kms.encryption -}}
# kube-apiserver --encryption-provider-config: {{ join ", " $e.resources }}
# encrypted by qkeyd's KMS v2 plugin (envelope encryption: a DEK per write, its
# seed encrypted by qkeyd's KEK). Stored values start with
# k8s:enc:kms:v2:{{ $e.providerName }}: in etcd.
#
# The endpoint is the socket the qkeyd-kms static pod serves; kube-apiserver
# mounts its directory ({{ dir .Values.kms.socket }}) as a hostPath too.
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      {{- toYaml $e.resources | nindent 6 }}
    providers:
      - kms:
          # v2 must be said: the default is v1, which needs a deprecated gate.
          apiVersion: v2
          name: {{ $e.providerName }}
          endpoint: unix://{{ .Values.kms.socket }}
          timeout: {{ $e.timeout }}
      {{- if $e.identityFallback }}
      # Reads of data written before encryption was turned on.
      - identity: {}
      {{- end }}
{{- end }}
