{{/* Names, labels and the shared pieces of every pod. */}}

{{- define "tessera.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "tessera" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tessera" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: tessera
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector of one service's pods; call with (dict "root" $ "name" "contacts"). */}}
{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: tessera
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "tessera.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "tessera.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "tessera.fullname" .)) -}}
{{- end -}}

{{- define "tessera.rabbitmqName" -}}
{{- printf "%s-rabbitmq" (include "tessera.fullname" .) -}}
{{- end -}}

{{- define "tessera.postgresName" -}}
{{- printf "%s-postgres" (include "tessera.fullname" .) -}}
{{- end -}}

{{/* The consuming services: everything but the gateway. */}}
{{- define "tessera.consumers" -}}
identity contacts segments consent activation
{{- end -}}

{{/* Refuses values that cannot work: more consumers than partitions, no broker, KEDA
     without a management API to ask. */}}
{{- define "tessera.checkValues" -}}
{{- if not (or .Values.secrets.existingSecret .Values.secrets.brokerUrl .Values.rabbitmq.create) -}}
{{- fail "secrets.brokerUrl: required (an AMQP URL) unless secrets.existingSecret or rabbitmq.create is set; without it every service would start with an in-process broker" -}}
{{- end -}}
{{- if and (eq .Values.autoscaling.mode "keda") (not .Values.rabbitmq.create) -}}
{{- if not .Values.rabbitmq.managementUrl -}}
{{- fail "rabbitmq.managementUrl: required with autoscaling.mode keda and an existing broker (http://host:15672/)" -}}
{{- end -}}
{{- if not .Values.autoscaling.keda.credentialsSecret -}}
{{- fail "autoscaling.keda.credentialsSecret: required with autoscaling.mode keda and an existing broker (a Secret with username and password)" -}}
{{- end -}}
{{- end -}}
{{- $partitions := int .Values.partitions -}}
{{- if lt $partitions 1 -}}
{{- fail (printf "partitions: must be at least 1 (got %d)" $partitions) -}}
{{- end -}}
{{- $autoscaled := ne .Values.autoscaling.mode "none" -}}
{{- if and $autoscaled (gt (int .Values.autoscaling.maxReplicas) $partitions) -}}
{{- fail (printf "autoscaling.maxReplicas: must not exceed partitions (%d > %d): each partition has one active consumer" (int .Values.autoscaling.maxReplicas) $partitions) -}}
{{- end -}}
{{- if and $autoscaled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas: must not exceed autoscaling.maxReplicas (%d > %d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if not (has .Values.autoscaling.mode (list "none" "keda" "hpa")) -}}
{{- fail (printf "autoscaling.mode: must be one of none, keda, hpa (got %q)" .Values.autoscaling.mode) -}}
{{- end -}}
{{- range $name := splitList " " (include "tessera.consumers" .) -}}
{{- $service := index $.Values.services $name -}}
{{- if and $service.enabled (not $autoscaled) (gt (int $service.replicas) $partitions) -}}
{{- fail (printf "services.%s.replicas: must not exceed partitions (%d > %d): each partition has one active consumer" $name (int $service.replicas) $partitions) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment that does not come from the ConfigMap or Secret: operator-made credentials. */}}
{{- define "tessera.env" -}}
{{- if .Values.rabbitmq.create }}
- name: TESSERA_RABBITMQ_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ include "tessera.rabbitmqName" . }}-default-user, key: username}
- name: TESSERA_RABBITMQ_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "tessera.rabbitmqName" . }}-default-user, key: password}
- name: TESSERA_BROKER_URL
  value: "amqp://$(TESSERA_RABBITMQ_USERNAME):$(TESSERA_RABBITMQ_PASSWORD)@{{ include "tessera.rabbitmqName" . }}.{{ .Release.Namespace }}.svc:5672/"
{{- end }}
{{- if .Values.cloudnativepg.create }}
- name: TESSERA_POSTGRES_USER
  valueFrom:
    secretKeyRef: {name: {{ include "tessera.postgresName" . }}-app, key: username}
- name: TESSERA_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "tessera.postgresName" . }}-app, key: password}
{{- end }}
{{- end -}}

{{- define "tessera.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.pod.runAsUser }}
runAsGroup: {{ .Values.pod.runAsUser }}
fsGroup: {{ .Values.pod.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tessera.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "tessera.envFrom" -}}
- configMapRef:
    name: {{ include "tessera.fullname" . }}-config
- secretRef:
    name: {{ include "tessera.secretName" . }}
{{- end -}}
