{{/* Names, labels and the agent's config file, shared by every template. */}}

{{- define "aimesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The DaemonSet, ConfigMap, Service, ... are all named this: the release name,
or release-chart when the release name does not contain the chart's name.
*/}}
{{- define "aimesh.fullname" -}}
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

{{- define "aimesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aimesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aimesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aimesh.labels" -}}
helm.sh/chart: {{ include "aimesh.chart" . }}
{{ include "aimesh.selectorLabels" . }}
app.kubernetes.io/version: {{ include "aimesh.imageTag" . | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: aimesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "aimesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aimesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "aimesh.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "aimesh.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "aimesh.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{/* Where the host's cgroup v2 root appears inside the agent container. */}}
{{- define "aimesh.cgroupMountPath" -}}
{{- printf "/host%s" (.Values.cgroup.root | trimSuffix "/") -}}
{{- end -}}

{{- define "aimesh.apiSocket" -}}
{{- printf "%s/agent.sock" (.Values.apiSocket.hostDir | trimSuffix "/") -}}
{{- end -}}

{{/*
agent.connectionLifecycle as "true" or "false". Unset counts as true: a
release upgraded with --reuse-values keeps the values of the chart it was
installed with, which may predate this one.
*/}}
{{- define "aimesh.connectionLifecycle" -}}
{{- if hasKey .Values.agent "connectionLifecycle" -}}
{{- .Values.agent.connectionLifecycle | toString -}}
{{- else -}}
true
{{- end -}}
{{- end -}}

{{/*
The host directory of network namespace files the agent walks and the
DaemonSet mounts at the same path: agent.netnsDir (/var/run/netns when unset,
as above), "" when it is empty or the connection lifecycle is off.
*/}}
{{- define "aimesh.netnsDir" -}}
{{- if eq (include "aimesh.connectionLifecycle" .) "true" -}}
{{- if hasKey .Values.agent "netnsDir" -}}
{{- .Values.agent.netnsDir | trimSuffix "/" -}}
{{- else -}}
/var/run/netns
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A value as CLI11 reads it in a config file: strings double-quoted, lists as
[a, b], numbers and booleans bare.
*/}}
{{- define "aimesh.configValue" -}}
{{- if kindIs "string" . -}}
{{- quote . -}}
{{- else if kindIs "slice" . -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "aimesh.configValue" $v }}{{ end }}]
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/*
agent.conf: the agent's settings, one `flag-name = value` line each, sorted by
name. Paths, the metrics address and the DaemonSet name follow from the
chart's other values; agent.extraConfig adds any other flag but may not
replace these.
*/}}
{{- define "aimesh.agentConfig" -}}
{{- $v := .Values -}}
{{- $bpfRoot := $v.bpf.root | trimSuffix "/" -}}
{{- if not (hasPrefix (printf "%s/" $bpfRoot) $v.bpf.pinDir) -}}
{{- fail (printf "bpf.pinDir (%s) must be a directory under bpf.root (%s)" $v.bpf.pinDir $v.bpf.root) -}}
{{- end -}}
{{- $host := $v.metrics.bindAddress -}}
{{- if contains ":" $host -}}{{- $host = printf "[%s]" $host -}}{{- end -}}
{{- $conf := dict
  "kubernetes" true
  "daemonset" (printf "%s/%s" .Release.Namespace (include "aimesh.fullname" .))
  "metrics-addr" (printf "%s:%d" $host (int $v.metrics.port))
  "api-socket" (include "aimesh.apiSocket" .)
  "bpffs" $bpfRoot
  "pin-dir" ($v.bpf.pinDir | trimSuffix "/")
  "cgroup" (include "aimesh.cgroupMountPath" .)
  "log-level" $v.agent.logLevel
  "telemetry" $v.agent.telemetry
  "resync-seconds" (int $v.agent.resyncSeconds)
  "connection-lifecycle" (eq (include "aimesh.connectionLifecycle" .) "true")
  "default-algorithm" $v.agent.defaultAlgorithm
-}}
{{- if $v.agent.kubernetesSelector -}}
{{- if $v.agent.meshAllServices -}}
{{- fail "agent.meshAllServices=true meshes every Service: it needs agent.kubernetesSelector=\"\"" -}}
{{- end -}}
{{- $_ := set $conf "kubernetes-selector" $v.agent.kubernetesSelector -}}
{{- else if not $v.agent.meshAllServices -}}
{{- fail "agent.kubernetesSelector is empty, which meshes every Service (kube-dns and default/kubernetes included): set agent.meshAllServices=true to mean it" -}}
{{- end -}}
{{- /* Only with the DaemonSet's mount of that directory. */ -}}
{{- with include "aimesh.netnsDir" . -}}
{{- $_ := set $conf "netns-dir" . -}}
{{- end -}}
{{- $tuningFlags := dict
  "latencyDecaySeconds" "latency-decay-seconds"
  "penaltyPerFailure" "penalty-per-failure"
  "penaltyHalfLifeSeconds" "penalty-half-life-seconds"
  "ejectAfter" "eject-after"
  "ejectBaseSeconds" "eject-base-seconds"
  "ejectMaxSeconds" "eject-max-seconds"
  "scrapeIntervalMs" "scrape-interval-ms"
  "scrapeTimeoutMs" "scrape-timeout-ms"
-}}
{{- range $key, $value := $v.agent.tuning -}}
{{- $_ := set $conf (get $tuningFlags $key) $value -}}
{{- end -}}
{{- /* Flags the chart sets from its own values, and flags that make no sense in the chart. */ -}}
{{- $owned := dict
  "metrics-addr" "metrics.bindAddress and metrics.port"
  "api-socket" "apiSocket.hostDir"
  "bpffs" "bpf.root"
  "pin-dir" "bpf.pinDir"
  "cgroup" "cgroup.root"
  "log-level" "agent.logLevel"
  "telemetry" "agent.telemetry"
  "resync-seconds" "agent.resyncSeconds"
  "kubernetes-selector" "agent.kubernetesSelector"
  "default-algorithm" "agent.defaultAlgorithm"
  "connection-lifecycle" "agent.connectionLifecycle"
  "netns-dir" "agent.netnsDir (the DaemonSet mounts it)"
-}}
{{- range $key, $flag := $tuningFlags -}}
{{- $_ := set $owned $flag (printf "agent.tuning.%s" $key) -}}
{{- end -}}
{{- $refused := dict
  "kubernetes" "the chart always runs the Kubernetes source"
  "daemonset" "it is always this release's DaemonSet"
  "kubeconfig" "the agent uses its ServiceAccount"
  "kubernetes-context" "the agent uses its ServiceAccount"
  "state-file" "the chart runs the Kubernetes source"
  "config" "the chart passes --config itself"
  "check-config" "it would stop the agent"
  "cleanup" "it would stop the agent"
-}}
{{- range $key, $value := $v.agent.extraConfig -}}
{{- if hasKey $owned $key -}}
{{- fail (printf "agent.extraConfig: %q is set by the chart from %s; set that instead" $key (get $owned $key)) -}}
{{- end -}}
{{- if hasKey $refused $key -}}
{{- fail (printf "agent.extraConfig: %q cannot be set: %s" $key (get $refused $key)) -}}
{{- end -}}
{{- $_ := set $conf $key $value -}}
{{- end -}}
# aimesh-agent settings, rendered by the aimesh chart (CLI11 config file:
# `flag-name = value`, the agent's long flags without dashes).
{{- range $key, $value := $conf }}
{{ $key }} = {{ include "aimesh.configValue" $value }}
{{- end }}
{{ end -}}
