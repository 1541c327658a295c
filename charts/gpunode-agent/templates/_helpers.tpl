{{- define "gpunode-agent.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpunode-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gpunode-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpunode-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gpunode-agent.labels" -}}
{{ include "gpunode-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "gpunode-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gpunode-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}


{{/* The opt-in GPU health taint's key, as the agent's config has it. */}}
{{- define "gpunode-agent.taintKey" -}}
{{- dig "metrics" "health" "taint" "key" "gpunode.dev/gpu-unhealthy" .Values.config -}}
{{- end -}}

{{/* The opt-in RDMA health taint's key, as the agent's config has it. */}}
{{- define "gpunode-agent.rdmaTaintKey" -}}
{{- dig "metrics" "rdmaHealth" "taint" "key" "gpunode.dev/rdma-unhealthy" .Values.config -}}
{{- end -}}

{{/* The instance the agents write on their Nodes (gpunode.dev/instance) and
the cleanup hook selects by: config.publish.instance, else
<namespace>/<release>. */}}
{{- define "gpunode-agent.instance" -}}
{{- dig "publish" "instance" "" .Values.config | default (printf "%s/%s" .Release.Namespace .Release.Name) -}}
{{- end -}}

{{/* The tuning readiness taint's key when config.tuning.readinessTaint is
enabled, else empty. */}}
{{- define "gpunode-agent.readinessTaintKey" -}}
{{- if dig "tuning" "readinessTaint" "enabled" false .Values.config -}}
{{- dig "tuning" "readinessTaint" "key" "gpunode.dev/tuning" .Values.config -}}
{{- end -}}
{{- end -}}

{{/* "true" when RDMA probes are enabled in the agent's config, else empty. */}}
{{- define "gpunode-agent.probeEnabled" -}}
{{- if dig "probe" "enabled" false .Values.config -}}true{{- end -}}
{{- end -}}

{{/* "true" when host tuning writes to the host (config.tuning.mode other
than off and audit), else empty: /sys and /proc are mounted writable only
then. */}}
{{- define "gpunode-agent.tuningWrites" -}}
{{- if not (has (dig "tuning" "mode" "audit" .Values.config) (list "off" "audit")) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the agent's container is privileged: tuning (audit
included) or probes on, or securityContext.privileged set; else empty. */}}
{{- define "gpunode-agent.privileged" -}}
{{- if or (ne (dig "tuning" "mode" "audit" .Values.config) "off") (include "gpunode-agent.probeEnabled" .) (dig "privileged" false .Values.securityContext) -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding the RDMA probe token. */}}
{{- define "gpunode-agent.probeTokenSecret" -}}
{{- .Values.probeToken.existingSecret | default (printf "%s-probe-token" (include "gpunode-agent.fullname" . | trunc 51 | trimSuffix "-")) -}}
{{- end -}}

{{/* The chart-generated probe token (base64): the Secret's current one,
kept on upgrade, or a new random one. Generated once per render and kept
in .Release-independent scratch (a key of .Values set here), so the Secret
and the DaemonSet's checksum see the same token even on a first install. */}}
{{- define "gpunode-agent.generatedProbeToken" -}}
{{- if not (hasKey .Values "_generatedProbeToken") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "gpunode-agent.probeTokenSecret" .) }}
{{- $token := "" }}
{{- if and $existing $existing.data (hasKey $existing.data "token") }}
{{- $token = index $existing.data "token" }}
{{- else }}
{{- $token = randAlphaNum 48 | b64enc }}
{{- end }}
{{- $_ := set .Values "_generatedProbeToken" $token }}
{{- end }}
{{- index .Values "_generatedProbeToken" -}}
{{- end -}}

{{/* The checksum of the probe token the pods mount, so that a new token
rolls them: the generated Secret's, or an existingSecret's as helm's
lookup finds it (empty where lookup cannot read the cluster: helm
template, Argo CD, Flux). */}}
{{- define "gpunode-agent.probeTokenChecksum" -}}
{{- if .Values.probeToken.existingSecret }}
{{- $s := lookup "v1" "Secret" .Release.Namespace .Values.probeToken.existingSecret }}
{{- if and $s $s.data (hasKey $s.data .Values.probeToken.existingSecretKey) }}
{{- index $s.data .Values.probeToken.existingSecretKey | sha256sum }}
{{- end }}
{{- else }}
{{- include "gpunode-agent.generatedProbeToken" . | sha256sum }}
{{- end }}
{{- end -}}

{{/* Labels of a monitoring object beyond the common ones: kube-prometheus-stack's
release label (metrics.prometheusRelease), then the object's own labels,
which win. Called with (list $ .Values.<object>.labels). */}}
{{- define "gpunode-agent.monitoringLabels" -}}
{{- $ctx := index . 0 }}
{{- $labels := dict }}
{{- with $ctx.Values.metrics.prometheusRelease }}
{{- $_ := set $labels "release" . }}
{{- end }}
{{- $labels = merge (deepCopy (index . 1 | default dict)) $labels }}
{{- with $labels }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{/*
"true" when the admission policy is rendered: enabled and the API serves
admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (Kubernetes
1.30+). helm install and upgrade read that from the cluster; helm
template's built-in list names no kinds, so it needs
--api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy.
*/}}
{{- define "gpunode-agent.admissionPolicyRendered" -}}
{{- if and .Values.admissionPolicy.enabled (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") -}}
true
{{- end -}}
{{- end }}
