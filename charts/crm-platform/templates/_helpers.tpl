{{- define "crm.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crm.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "crm.labels" -}}
{{ include "crm.selectorLabels" . }}
app.kubernetes.io/part-of: crm-platform
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The environment every container of a service gets. */}}
{{- define "crm.env" -}}
- name: CRM_SERVICE_NAME
  value: {{ .name | quote }}
- name: CRM_JWT_SECRET
  valueFrom: {secretKeyRef: {name: {{ .root.Values.existingSecret }}, key: CRM_JWT_SECRET}}
{{- if .cfg.database }}
- name: CRM_KAFKA_BOOTSTRAP
  value: {{ .root.Values.kafkaBootstrap | quote }}
- name: CRM_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ .root.Values.existingSecret }}, key: {{ printf "CRM_DATABASE_URL_%s" (upper .name) }}}}
{{- else }}
{{- range $svc, $c := .root.Values.services }}
{{- if ne $svc "gateway" }}
- name: {{ printf "CRM_%s_URL" (upper $svc) }}
  value: {{ printf "http://%s-%s-api:8080" (include "crm.fullname" $.root) $svc | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "crm.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: ["ALL"]}
{{- end -}}

{{/* The image of a service: images.<service> overrides image.repository-<service>:image.tag. */}}
{{- define "crm.image" -}}
{{- $own := index (.root.Values.images | default dict) .name | default dict -}}
{{- $repo := $own.repository | default (printf "%s-%s" .root.Values.image.repository .name) -}}
{{- $tag := $own.tag | default .root.Values.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
