{{/* Names, labels and the rendered configuration file. */}}

{{- define "roster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "roster.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "roster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "roster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "roster.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "roster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: roster
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "roster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "roster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "roster.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Lease leader election uses (operator.leaseName, default "<fullname>-leader"). */}}
{{- define "roster.leaseName" -}}
{{- $op := default (dict) .Values.config.operator }}
{{- default (printf "%s-leader" (include "roster.fullname" .)) $op.leaseName }}
{{- end }}

{{/* Where the mounted secrets are: the config points at these files. */}}
{{- define "roster.secretsDir" -}}/etc/roster/secrets{{- end }}

{{/*
The configuration file: .Values.config with what the chart manages filled in — the secret files
(mounted from the Secrets named in .Values.secrets), the CA file, slurm.conf, the Lease's
name and the metrics address. The Lease's namespace is the pod's own (POD_NAMESPACE), where
the Role for it is.
*/}}
{{- define "roster.config" -}}
{{- $c := deepCopy .Values.config }}
{{- $dir := include "roster.secretsDir" . }}
{{- $ldap := $c.ldap }}
{{- $_ := set $ldap "bindPasswordFile" (printf "%s/ldap-bind-password" $dir) }}
{{- if or .Values.secrets.ldapCA.configMap .Values.secrets.ldapCA.secret }}
{{- $tls := default (dict) $ldap.tls }}
{{- $_ := set $tls "caFile" (printf "%s/ldap-ca.pem" $dir) }}
{{- $_ := set $ldap "tls" $tls }}
{{- end }}
{{- $op := default (dict) $c.operator }}
{{- $_ := set $op "leaseName" (include "roster.leaseName" .) }}
{{- $_ := set $op "metricsAddress" (printf "0.0.0.0:%d" (int .Values.metrics.port)) }}
{{- $_ := set $c "operator" $op }}
{{- if $c.slurm }}
{{- if .Values.secrets.slurmDatabaseUrl.name }}
{{- $_ := set $c.slurm "databaseUrlFile" (printf "%s/slurm-database-url" $dir) }}
{{- end }}
{{- if .Values.slurm.slurmConf.configMap }}
{{- $_ := set $c.slurm "slurmConf" "/etc/slurm/slurm.conf" }}
{{- end }}
{{- end }}
{{- if $c.gold }}
{{- $_ := set $c.gold "authKeyFile" (printf "%s/gold-auth-key" $dir) }}
{{- end }}
{{- range $relay := list (and $c.guests $c.guests.smtp) (and $c.notices $c.notices.smtp) }}
{{- if $relay }}
{{- if $.Values.secrets.smtpPassword.name }}
{{- $_ := set $relay "passwordFile" (printf "%s/smtp-password" $dir) }}
{{- end }}
{{- if or $.Values.secrets.smtpCA.configMap $.Values.secrets.smtpCA.secret }}
{{- $_ := set $relay "caFile" (printf "%s/smtp-ca.pem" $dir) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $c }}
{{- end }}
