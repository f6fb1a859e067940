{{/* The migrations of one service (`crm-service <name> migrate`) as a hook Job before install and
upgrade. Migrations are expand/contract: the old pods keep running while it runs. */}}
{{- define "crm.migrate" -}}
{{- $v := .root.Values -}}
{{- $cfg := $v.migrations -}}
{{- $ctx := merge (dict "cfg" $cfg) . -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "crm.componentName" . }}
  labels: {{- include "crm.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: {{ $cfg.backoffLimit }}
  activeDeadlineSeconds: {{ $cfg.activeDeadlineSeconds }}
  template:
    metadata:
      labels: {{- include "crm.labels" . | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "crm.migrationsServiceAccountName" .root }}
      automountServiceAccountToken: false
      {{- include "crm.podSecurityContext" .root | nindent 6 }}
      {{- include "crm.podExtras" $ctx | nindent 6 }}
      containers:
        - name: migrate
          image: {{ include "crm.image" . | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: ["migrate"]
          env: {{- include "crm.env" . | nindent 12 }}
          {{- include "crm.envFrom" . | nindent 10 }}
          resources: {{- toYaml $cfg.resources | nindent 12 }}
          {{- include "crm.containerSecurityContext" .root | nindent 10 }}
          volumeMounts: {{- include "crm.volumeMounts" . | nindent 12 }}
      volumes: {{- include "crm.volumes" . | nindent 8 }}
{{- end -}}
