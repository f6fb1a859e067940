{{/* The api of one service: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget. */}}
{{- define "crm.api" -}}
{{- $v := .root.Values -}}
{{- $cfg := include "crm.componentValues" . | fromYaml -}}
{{- $ctx := merge (dict "cfg" $cfg) . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "crm.componentName" . }}
  labels: {{- include "crm.labels" . | nindent 4 }}
spec:
  {{- if not $cfg.autoscaling.enabled }}
  replicas: {{ $cfg.replicas }}
  {{- end }}
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
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels: {{- include "crm.selectorLabels" . | nindent 14 }}
      containers:
        - name: api
          image: {{ include "crm.image" . | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: ["api"]
          env: {{- include "crm.env" . | nindent 12 }}
          {{- include "crm.envFrom" . | nindent 10 }}
          ports:
            - {name: http, containerPort: {{ $v.api.port }}, protocol: TCP}
          startupProbe: {{- toYaml $cfg.startupProbe | nindent 12 }}
          livenessProbe: {{- toYaml $cfg.livenessProbe | nindent 12 }}
          readinessProbe: {{- toYaml $cfg.readinessProbe | nindent 12 }}
          lifecycle:
            # Let the endpoints controller take the pod out of the Service before gunicorn stops.
            preStop: {exec: {command: ["sleep", "{{ $cfg.preStopSleepSeconds }}"]}}
          resources: {{- toYaml $cfg.resources | nindent 12 }}
          {{- include "crm.containerSecurityContext" .root | nindent 10 }}
          volumeMounts: {{- include "crm.volumeMounts" . | nindent 12 }}
      volumes: {{- include "crm.volumes" . | nindent 8 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "crm.componentName" . }}
  labels: {{- include "crm.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector: {{- include "crm.selectorLabels" . | nindent 4 }}
  ports:
    - {name: http, port: {{ $v.api.port }}, targetPort: http, protocol: TCP}
{{- if $cfg.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "crm.componentName" . }}
  labels: {{- include "crm.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "crm.componentName" . }}
  minReplicas: {{ $cfg.autoscaling.minReplicas }}
  maxReplicas: {{ $cfg.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: {{ $cfg.autoscaling.targetCPUUtilizationPercentage }}}
    {{- with $cfg.autoscaling.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target: {type: Utilization, averageUtilization: {{ . }}}
    {{- end }}
{{- end }}
{{- if $cfg.podDisruptionBudget.enabled }}
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
{{- if and .svc.attachments (eq $v.attachments.store "local") (not $v.attachments.persistence.enabled) (gt (int (include "crm.minReplicas" $ctx)) 1) }}
{{- fail (printf "attachments.store=local keeps %s's files in the pod: with more than one api replica set attachments.persistence.enabled (a ReadWriteMany volume) or attachments.store=s3" .name) }}
{{- end }}
{{- end -}}
