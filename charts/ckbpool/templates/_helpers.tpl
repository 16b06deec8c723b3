{{/* Labels every object carries; `ckbpool.dev/stack` is what the NetworkPolicies select on. */}}
{{- define "ckbpool.labels" -}}
app.kubernetes.io/name: ckbpool
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
ckbpool.dev/stack: {{ .Values.name }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "ckb") */}}
{{- define "ckbpool.selector" -}}
ckbpool.dev/stack: {{ .root.Values.name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Pod security of every pod: a fixed non-root user, its group owning the volumes, seccomp RuntimeDefault.
     (dict "uid" 1000) */}}
{{- define "ckbpool.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security: read-only root filesystem, no privilege escalation, every capability dropped. */}}
{{- define "ckbpool.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* prometheus.io scrape annotations: (dict "root" $ "port" 8180 "path" "/metrics") */}}
{{- define "ckbpool.scrape" -}}
{{- if .root.Values.monitoring.scrape }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: {{ .path | default "/metrics" | quote }}
{{- end }}
{{- end -}}

{{/* The checksum of a component's ConfigMap, so a config edit rolls its pods. */}}
{{- define "ckbpool.configChecksum" -}}
checksum/config: {{ toJson (index .root.Values.files .component | default dict) | sha256sum }}
checksum/secrets: {{ toJson .root.Values.secrets | sha256sum }}
{{- end -}}

{{/* The secrets a pod mounts at /run/secrets/<name>: (dict "root" $ "names" (list ...)); only those present. */}}
{{- define "ckbpool.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ .root.Values.name }}-secrets
    defaultMode: 0440
    items:
{{- range .names }}
{{- if hasKey $.root.Values.secrets . }}
      - key: {{ . }}
        path: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A PVC template: (dict "root" $ "size" 10) */}}
{{- define "ckbpool.pvc" -}}
- metadata:
    name: data
    labels:
      ckbpool.dev/stack: {{ .root.Values.name }}
  spec:
    accessModes: ["ReadWriteOnce"]
{{- if .root.Values.storage.className }}
    storageClassName: {{ .root.Values.storage.className | quote }}
{{- end }}
    resources:
      requests:
        storage: {{ printf "%vGi" .size }}
{{- end -}}
