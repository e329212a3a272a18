{{/*
Names. The operator's own objects are labelled app.kubernetes.io/name=rlrun-operator, never
app.kubernetes.io/name=rlrun: that label (with app.kubernetes.io/instance=<run>) is how the operator finds
the children of a run, and its own pod must never look like one.
*/}}
{{- define "rlrun.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rlrun.operatorName" -}}
{{- printf "%s-operator" (include "rlrun.fullname" .) -}}
{{- end -}}

{{- define "rlrun.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rlrun.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rlrun.peeringName" -}}
{{- default (include "rlrun.fullname" .) .Values.peering.name -}}
{{- end -}}

{{- define "rlrun.peering" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches in namespaced mode, as a JSON list. */}}
{{- define "rlrun.watchNamespaces" -}}
{{- if .Values.rbac.clusterWide -}}
{{- if .Values.watchNamespaces -}}
{{- fail "watchNamespaces is for namespaced mode: set rbac.clusterWide=false, or leave watchNamespaces empty" -}}
{{- end -}}
[]
{{- else -}}
{{- default (list .Release.Namespace) .Values.watchNamespaces | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{- define "rlrun.selectorLabels" -}}
app.kubernetes.io/name: rlrun-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rlrun.labels" -}}
{{ include "rlrun.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: rlrun
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "rlrun.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "rlrun.progressURL" -}}
{{- printf "http://%s.%s.svc:%d" (include "rlrun.operatorName" .) .Release.Namespace (int .Values.ports.progress) -}}
{{- end -}}
