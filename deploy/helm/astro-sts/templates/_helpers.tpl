{{/* The container settings of deploy/broker-container.yaml. */}}
{{- define "astro-sts.container" -}}
{{- .Files.Get "files/broker-container.yaml" | fromYaml | toJson -}}
{{- end -}}

{{/* The settings ConfigMap's content, hashed into the pods' annotation so
that a change rolls them, as kustomize's hashed name does. */}}
{{- define "astro-sts.settings" -}}
ASTRO_STS_AUDIENCE: {{ .Values.audience | quote }}
ASTRO_ORGANIZATION_ID: {{ .Values.organizationId | quote }}
{{- range $k, $v := .Values.settings }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "astro-sts.redisURL" -}}
{{- if .Values.redis.url -}}
{{ .Values.redis.url }}
{{- else if .Values.redis.inCluster -}}
redis://astro-sts-redis:6379/0
{{- else -}}
{{ fail "redis.enabled without redis.inCluster needs redis.url" }}
{{- end -}}
{{- end -}}
