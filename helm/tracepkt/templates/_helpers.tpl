{{/* The chart's name, or nameOverride. */}}
{{- define "tracepkt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name, at most 63 characters (a DNS label). */}}
{{- define "tracepkt.fullname" -}}
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

{{- define "tracepkt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* What selects the pods: never changes over upgrades. */}}
{{- define "tracepkt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tracepkt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The pod template's labels: no chart version among them, since a changed pod template rolls
the pods on every node, and a chart release that changes nothing in the pod must not.
`part-of` names the scrape job (the monitors' jobLabel), which the alert rules select.
*/}}
{{- define "tracepkt.podLabels" -}}
{{ include "tracepkt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: probe
app.kubernetes.io/part-of: tracepkt
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Every other object's labels: the pod's, and the chart's version. */}}
{{- define "tracepkt.labels" -}}
helm.sh/chart: {{ include "tracepkt.chart" . }}
{{ include "tracepkt.podLabels" . }}
{{- end }}

{{- define "tracepkt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tracepkt.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* [registry/]repository:tag[@digest]; with a digest the runtime pulls exactly that image. */}}
{{- define "tracepkt.image" -}}
{{- with .Values.image }}
{{- $repo := .repository }}
{{- with .registry }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}
{{- end }}
{{- $ref := printf "%s:%s" $repo (.tag | default $.Chart.AppVersion) }}
{{- with .digest }}
{{- $ref = printf "%s@%s" $ref . }}
{{- end }}
{{- $ref }}
{{- end }}
{{- end }}

{{/*
tracepkt's config file: the `config` tree, with `listen` from `metrics` and `otlp` from
`otlp`, so the port the pod declares and the one tracepkt listens on cannot disagree.
*/}}
{{- define "tracepkt.config" -}}
{{- $c := deepCopy .Values.config }}
{{- if hasKey $c "listen" }}
{{- fail "config.listen: set metrics.port and metrics.bindAddress instead" }}
{{- end }}
{{- if hasKey $c "otlp" }}
{{- fail "config.otlp: set the otlp values instead (otlp.endpoint, otlp.protocol, ...)" }}
{{- end }}
{{- $crossNode := and (kindIs "map" $c.cross_node) $c.cross_node.enabled }}
{{- if and (not $c.targets) (not $crossNode) }}
{{- fail "config.targets: list at least one target (or turn config.cross_node on, to only follow other nodes' probes)" }}
{{- end }}
{{- if not $c.targets }}
{{- $_ := set $c "targets" list }}
{{- end }}
{{- if and $crossNode (eq (toString $c.attach) "in-flight") }}
{{- fail "config.cross_node needs the programs attached all the time: config.attach: always, or leave attach out" }}
{{- end }}
{{- $_ := set $c "listen" (printf "%s:%d" .Values.metrics.bindAddress (int .Values.metrics.port)) }}
{{- with .Values.otlp }}
{{- if .endpoint }}
{{- $o := dict "endpoint" .endpoint "protocol" .protocol "timeout" .timeout "sample_ratio" .sampleRatio "service_name" .serviceName }}
{{- if .traceUrl }}
{{- $_ := set $o "trace_url" .traceUrl }}
{{- end }}
{{- $_ := set $c "otlp" $o }}
{{- end }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/*
The container's capabilities: the base set, and the opt-in ones. BPF creates the maps and
loads the programs, PERFMON lets tracing programs load, attach and read kernel memory, NET_RAW
opens the raw ICMP sockets. NET_ADMIN only on request: no call tracepkt makes needs it on the
kernels tested (6.1, 6.18) except creating its nftables trace table.
*/}}
{{- define "tracepkt.capabilities" -}}
{{- $caps := list "BPF" "PERFMON" "NET_RAW" }}
{{- if .Values.securityContext.netAdmin }}
{{- $caps = append $caps "NET_ADMIN" }}
{{- end }}
{{- if .Values.podNames.enabled }}
{{- $caps = append $caps "SYS_PTRACE" }}
{{- end }}
{{- if .Values.securityContext.sysAdmin }}
{{- $caps = append $caps "SYS_ADMIN" }}
{{- end }}
{{- toYaml $caps }}
{{- end }}

{{/*
The scrape settings shared by the ServiceMonitor and the PodMonitor. Every series gets a
`node` label: with hostNetwork the scrape address is the node's, and the node's name reads
better than its IP.
*/}}
{{- define "tracepkt.scrape" -}}
{{- with .interval }}
interval: {{ . }}
{{- end }}
{{- with .scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
honorLabels: {{ .honorLabels }}
relabelings:
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
  {{- with .relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The kubelet probes' scheme: HTTPS when the web configuration turns TLS on.
*/}}
{{- define "tracepkt.probeScheme" -}}
scheme: {{ if and .Values.webConfig.secretName .Values.webConfig.tls }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}
