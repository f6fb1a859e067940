{{/*
Named templates shared by every service: one definition each for the api Deployment, the worker
Deployment, the migration Job and their environment, so no service's manifests are copy-pasted.
Most take a context dict: root (the chart's $), name (the service), svc (its values), component.
*/}}

{{- define "crm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crm.fullname" -}}
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

{{/* Name of one service's resource: <fullname>-<service>-<component> (a DNS label). */}}
{{- define "crm.componentName" -}}
{{- printf "%s-%s-%s" (include "crm.fullname" .root) .name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crm.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of the release's own resources that belong to no single service. */}}
{{- define "crm.commonLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: {{ include "crm.name" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "crm.labels" -}}
{{ include "crm.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "crm.name" .root }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selects every pod of the release (NetworkPolicy, monitors). */}}
{{- define "crm.releaseSelector" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: {{ include "crm.name" . }}
{{- end -}}

{{- define "crm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "crm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The migration Jobs run before the release's own resources exist: their ServiceAccount is a hook too. */}}
{{- define "crm.migrationsServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- printf "%s-migrate" (include "crm.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "crm.serviceAccountName" . -}}
{{- end -}}
{{- end -}}

{{/* The image of a service: images.<service> overrides <image.repository>-<service>:<image.tag>. */}}
{{- define "crm.image" -}}
{{- $own := index (.root.Values.images | default dict) .name | default dict -}}
{{- $repo := $own.repository | default (printf "%s-%s" .root.Values.image.repository .name) -}}
{{- $tag := $own.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* One value of a settings map as the string the service parses (numbers without exponents, maps as JSON). */}}
{{- define "crm.envValue" -}}
{{- if kindIs "string" . -}}
{{- . -}}
{{- else if kindIs "slice" . -}}
{{- join "," . -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/* A settings map (camelCase key -> value) as CRM_* variables; empty strings, maps and lists are left to the defaults. */}}
{{- define "crm.configEnv" -}}
{{- range $key, $value := . }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value "")) (and (or (kindIs "map" $value) (kindIs "slice" $value)) (eq (len $value) 0))) }}
- name: {{ printf "CRM_%s" ($key | snakecase | upper) }}
  value: {{ include "crm.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The settings of one service: config, then domainConfig (services with a database), then its own. */}}
{{- define "crm.serviceConfig" -}}
{{- $merged := deepCopy (.root.Values.config | default dict) -}}
{{- if eq .svc.role "domain" -}}
{{- $merged = mergeOverwrite $merged (deepCopy (.root.Values.domainConfig | default dict)) -}}
{{- end -}}
{{- $merged = mergeOverwrite $merged (deepCopy (.svc.config | default dict)) -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* The environment of a service's container; the component (api, worker, migrate) adds its own part. */}}
{{- define "crm.env" -}}
{{- $v := .root.Values -}}
- name: CRM_SERVICE_NAME
  value: {{ .name | quote }}
- name: CRM_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ required "existingSecret (the Secret holding the JWT secret) is required" $v.existingSecret | quote }}
      key: {{ $v.jwtSecretKey | quote }}
- name: PROMETHEUS_MULTIPROC_DIR
  value: {{ $v.paths.metrics | quote }}
{{- include "crm.configEnv" (include "crm.serviceConfig" . | fromYaml) }}
{{- if eq .svc.role "domain" }}
{{- $db := .svc.databaseSecret | default dict }}
- name: CRM_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.name | default $v.existingSecret | quote }}
      key: {{ $db.key | default (printf "CRM_DATABASE_URL_%s" (upper .name)) | quote }}
- name: CRM_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrapServers is required" $v.kafka.bootstrapServers | quote }}
{{- if $v.kafka.extraConfigSecret.name }}
- name: CRM_KAFKA_EXTRA
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.extraConfigSecret.name | quote }}
      key: {{ required "kafka.extraConfigSecret.key is required with its name" $v.kafka.extraConfigSecret.key | quote }}
{{- else if $v.kafka.extraConfig }}
- name: CRM_KAFKA_EXTRA
  value: {{ toJson $v.kafka.extraConfig | quote }}
{{- end }}
- name: CRM_TOPIC_PARTITIONS
  value: {{ toJson $v.kafka.topicPartitions | quote }}
- name: CRM_TOPIC_REPLICATION
  value: {{ toJson $v.kafka.topicReplication | quote }}
{{- end }}
{{- if eq .name "webhooks" }}
{{- /* The Fernet keys of the subscriptions' signing secrets: the api encrypts, the worker decrypts to sign
(the settings loader requires them in every webhooks process, its migrations too). */}}
{{- $keys := .svc.secretsKeySecret | default dict }}
- name: CRM_WEBHOOK_SECRETS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $keys.name | default $v.existingSecret | quote }}
      key: {{ $keys.key | default "CRM_WEBHOOK_SECRETS_KEY" | quote }}
{{- end }}
{{- if eq .svc.role "gateway" }}
{{- range $other, $o := $v.services }}
{{- if eq $o.role "domain" }}
- name: {{ printf "CRM_%s_URL" (upper $other) }}
  value: {{ printf "http://%s:%v" (include "crm.componentName" (dict "root" $.root "name" $other "component" "api")) $v.api.port | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .svc.role "console" }}
{{- $cfg := include "crm.serviceConfig" . | fromYaml }}
{{- $key := .svc.secretKeySecret | default dict }}
- name: CRM_GATEWAY_URL
  value: {{ printf "http://%s:%v" (include "crm.componentName" (dict "root" .root "name" "gateway" "component" "api")) $v.api.port | quote }}
- name: CRM_CONSOLE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $key.name | default $v.existingSecret | quote }}
      key: {{ $key.key | default "CRM_CONSOLE_SECRET_KEY" | quote }}
{{- if $cfg.consoleOidcIssuer }}
{{- $oidc := .svc.oidcClientSecret | default dict }}
- name: CRM_CONSOLE_OIDC_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $oidc.name | default $v.existingSecret | quote }}
      key: {{ $oidc.key | default "CRM_CONSOLE_OIDC_CLIENT_SECRET" | quote }}
{{- end }}
{{- end }}
{{- if eq .component "api" }}
- name: CRM_BIND
  value: {{ printf "0.0.0.0:%v" $v.api.port | quote }}
{{- if .svc.attachments }}
{{- $a := $v.attachments }}
- name: CRM_ATTACHMENTS_STORE
  value: {{ $a.store | quote }}
{{- if eq $a.store "local" }}
- name: CRM_ATTACHMENTS_DIR
  value: {{ $v.paths.attachments | quote }}
{{- else }}
- name: CRM_ATTACHMENTS_S3_BUCKET
  value: {{ required "attachments.s3.bucket is required when attachments.store is s3" $a.s3.bucket | quote }}
{{- with $a.s3.endpoint }}
- name: CRM_ATTACHMENTS_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $a.s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .component "worker" }}
- name: CRM_WORKER_PORT
  value: {{ $v.worker.port | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* envFrom: S3 credentials for the api of services with attachments, and extraEnvFrom. */}}
{{- define "crm.envFrom" -}}
{{- $v := .root.Values -}}
{{- $items := list -}}
{{- if and (eq .component "api") .svc.attachments (eq $v.attachments.store "s3") $v.attachments.s3.existingSecret -}}
{{- $items = append $items (dict "secretRef" (dict "name" $v.attachments.s3.existingSecret)) -}}
{{- end -}}
{{- range $v.extraEnvFrom -}}
{{- $items = append $items . -}}
{{- end -}}
{{- if $items }}
envFrom: {{- toYaml $items | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "crm.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.securityContext.runAsUser }}
  runAsGroup: {{ .Values.securityContext.runAsGroup }}
  fsGroup: {{ .Values.securityContext.runAsGroup }}
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "crm.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.securityContext.runAsUser }}
  runAsGroup: {{ .Values.securityContext.runAsGroup }}
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities: {drop: ["ALL"]}
{{- end -}}

{{/* Writable places on a read-only root filesystem: /tmp, the metrics directory, and local attachments. */}}
{{- define "crm.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: metrics, mountPath: {{ .root.Values.paths.metrics | quote }}}
{{- if and (eq .component "api") .svc.attachments (eq .root.Values.attachments.store "local") }}
- name: attachments
  mountPath: {{ .root.Values.paths.attachments | quote }}
  {{- if .root.Values.attachments.persistence.enabled }}
  subPath: {{ .name }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "crm.volumes" -}}
{{- $v := .root.Values -}}
- name: tmp
  emptyDir: {sizeLimit: {{ $v.tmpSizeLimit }}}
- name: metrics
  emptyDir: {medium: Memory, sizeLimit: {{ $v.metricsSizeLimit }}}
{{- if and (eq .component "api") .svc.attachments (eq $v.attachments.store "local") }}
- name: attachments
  {{- if $v.attachments.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ $v.attachments.persistence.existingClaim | default (printf "%s-attachments" (include "crm.fullname" .root)) }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Scheduling and pod extras shared by the api and worker pods (values of that component). */}}
{{- define "crm.podExtras" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* The values of a component for one service: the defaults (api / worker) merged with services.<name>.<component>. */}}
{{- define "crm.componentValues" -}}
{{- $defaults := index .root.Values .component -}}
{{- $own := index .svc .component | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy $defaults) (deepCopy $own)) -}}
{{- end -}}

{{/* How many api replicas a service runs at least (for PDBs and the attachments check). */}}
{{- define "crm.minReplicas" -}}
{{- if .cfg.autoscaling.enabled -}}{{ .cfg.autoscaling.minReplicas }}{{- else -}}{{ .cfg.replicas }}{{- end -}}
{{- end -}}
