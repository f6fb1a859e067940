{{/* The worker of one service: outbox relay, consumers, housekeeping (and e.g. the trigger scheduler).
One replica is the default; more are safe - a PostgreSQL advisory lock lets one relay publish while the
others stand by, consumer groups share the partitions - so updates roll without stopping the relay first. */}}
{{- define "crm.worker" -}}
{{- $v := .root.Values -}}
{{- $cfg := include "crm.componentValues" . | fromYaml -}}
{{- $ctx := merge (dict "cfg" $cfg) . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "crm.componentName" . }}
  labels: {{- include "crm.labels" . | nindent 4 }}
spec:
  replicas: {{ $cfg.replicas }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {{- include "crm.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels: {{- include "crm.labels" . | nindent 8 }}
      {{- with $cfg.podAnnotations }}
      annotations: {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "crm.serviceAccountName" .root }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $cfg.terminationGracePeriodSeconds }}
      {{- include "crm.podSecurityContext" .root | nindent 6 }}
      {{- include "crm.podExtras" $ctx | nindent 6 }}
      containers:
        - name: worker
          image: {{ include "crm.image" . | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: ["worker"]
          env: {{- include "crm.env" . | nindent 12 }}
          {{- include "crm.envFrom" . | nindent 10 }}
          ports:
            - {name: metrics, containerPort: {{ $v.worker.port }}, protocol: TCP}
          startupProbe: {{- toYaml $cfg.startupProbe | nindent 12 }}
          livenessProbe: {{- toYaml $cfg.livenessProbe | nindent 12 }}
          readinessProbe: {{- toYaml $cfg.readinessProbe | nindent 12 }}
          resources: {{- toYaml $cfg.resources | nindent 12 }}
          {{- include "crm.containerSecurityContext" .root | nindent 10 }}
          volumeMounts: {{- include "crm.volumeMounts" . | nindent 12 }}
      volumes: {{- include "crm.volumes" . | nindent 8 }}
{{- if and $cfg.podDisruptionBudget.enabled (gt (int $cfg.replicas) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "crm.componentName" . }}
  labels: {{- include "crm.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $cfg.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels: {{- include "crm.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}
