{{/* The chart's name and full name (63 characters at most, RFC 1123). */}}
{{- define "unlearnops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "unlearnops.fullname" -}}
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

{{- define "unlearnops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "unlearnops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "unlearnops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "unlearnops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "unlearnops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "unlearnops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest */}}
{{- define "unlearnops.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Pod and container security (restricted Pod Security Standard). */}}
{{- define "unlearnops.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "unlearnops.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Settings from the ConfigMap and credentials from existing Secrets (references only). */}}
{{- define "unlearnops.envFrom" -}}
- configMapRef:
    name: {{ include "unlearnops.fullname" . }}-settings
{{- range $key := list "s3" "mlflow" "ledger" "signingKey" }}
{{- with (get $.Values.secrets $key) }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "unlearnops.volumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
- name: policy
  configMap:
    name: {{ include "unlearnops.fullname" . }}-policy
{{- end -}}

{{- define "unlearnops.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/unlearnops/.unlearnops
- name: policy
  mountPath: /etc/unlearnops
  readOnly: true
{{- end -}}

{{/* The policy argument: the mounted custom file, or a policy name. */}}
{{- define "unlearnops.policyRef" -}}
{{- if .Values.settings.gatePolicyYaml -}}
/etc/unlearnops/policy.yaml
{{- else -}}
{{- .Values.settings.gatePolicy -}}
{{- end -}}
{{- end -}}
