{{/*
Names, labels and small derived values shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "widget-plugin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, or <release>-<name>, or just <release>
when the release name already contains the chart name. Truncated to 63 characters (DNS label).
*/}}
{{- define "widget-plugin.fullname" -}}
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

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "widget-plugin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the DaemonSet's pods; never change them (selectors are immutable). */}}
{{- define "widget-plugin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "widget-plugin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The app.kubernetes.io/* labels every object carries. */}}
{{- define "widget-plugin.labels" -}}
helm.sh/chart: {{ include "widget-plugin.chart" . }}
{{ include "widget-plugin.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: device-plugin
app.kubernetes.io/part-of: widget-device-plugin
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The supervisor image reference. */}}
{{- define "widget-plugin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The name of the ConfigMap holding config.yaml: the user's, or the chart's. */}}
{{- define "widget-plugin.configMapName" -}}
{{- if .Values.existingConfigMap }}
{{- .Values.existingConfigMap }}
{{- else }}
{{- printf "%s-config" (include "widget-plugin.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The extended resource a device gets: <domain>/<type>-<model>, plus ".shared" when the settings
for its (type, model) say renameShared with more than one replica and the device-plugin API
serves it (as the supervisor names it; DRA shares a device without renaming it).
Call with (dict "root" $ "device" $device "settings" (list $resourceLists...)): the lists of
`resources` settings that apply, in order; a later entry for the same (type, model) replaces an
earlier one, as a `nodes` entry's settings replace the top-level ones.
*/}}
{{- define "widget-plugin.resourceName" -}}
{{- $device := .device }}
{{- $shared := false }}
{{- $api := toString (default "device-plugin" .root.Values.config.api) }}
{{- range $list := .settings }}
{{- range $list }}
{{- if and (eq (toString .type) (toString $device.type)) (eq (toString .model) (toString $device.model)) }}
{{- $shared = and .renameShared (gt (int (default 1 .replicas)) 1) }}
{{- $api = default (toString (default "device-plugin" $.root.Values.config.api)) .api }}
{{- end }}
{{- end }}
{{- end }}
{{- $shared = and $shared (ne $api "dra") }}
{{- printf "%s/%s-%s%s" (default "ska-sdp.org" .root.Values.config.domain) $device.type $device.model (ternary ".shared" "" (not (not $shared))) }}
{{- end }}

{{/*
The resources the chart's `config` advertises, one per line as "<resource> <where>": where is
"all" for top-level devices, or a nodes entry's `match` pattern.
*/}}
{{- define "widget-plugin.configResources" -}}
{{- $cfg := .Values.config }}
{{- $top := default list $cfg.resources }}
{{- range $cfg.devices }}
{{ include "widget-plugin.resourceName" (dict "root" $ "device" . "settings" (list $top)) }} all
{{- end }}
{{- range $cfg.nodes }}
{{- $node := . }}
{{- range .devices }}
{{ include "widget-plugin.resourceName" (dict "root" $ "device" . "settings" (list $top (default list $node.resources))) }} {{ $node.match }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The resource the `helm test` pod requests: tests.resource, or the first device's resource (a
top-level device's, else the first `nodes` entry's; the scheduler then picks a matching node).
*/}}
{{- define "widget-plugin.testResource" -}}
{{- if .Values.tests.resource }}
{{- .Values.tests.resource }}
{{- else if not .Values.existingConfigMap }}
{{- $first := include "widget-plugin.configResources" . | trim | splitList "\n" | first }}
{{- if $first }}
{{- first (splitList " " $first) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The DeviceClass the `helm test` pod claims a device of, when it tests DRA: tests.deviceClass, or
(without tests.resource) the class of the first device's resource when DRA serves it, under the
settings that apply where that device is listed. Empty: the pod requests tests.resource.
*/}}
{{- define "widget-plugin.testDeviceClass" -}}
{{- if .Values.tests.deviceClass }}
{{- .Values.tests.deviceClass }}
{{- else if not (or .Values.tests.resource .Values.existingConfigMap) }}
{{- $cfg := .Values.config }}
{{- $top := toString (default "device-plugin" $cfg.api) }}
{{- $first := dict }}
{{- $lists := list (default list $cfg.resources) }}
{{- if $cfg.devices }}
{{- $first = first $cfg.devices }}
{{- else }}
{{- range $cfg.nodes }}
{{- if and (not $first) .devices }}
{{- $first = first .devices }}
{{- $lists = append $lists (default list .resources) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $first }}
{{- $api := $top }}
{{- range $list := $lists }}
{{- $api = default $api (include "widget-plugin.apiIn" (dict "list" $list "type" $first.type "model" $first.model "top" $top)) }}
{{- end }}
{{- if eq $api "dra" }}
{{- include "widget-plugin.deviceClassName" (dict "type" $first.type "model" $first.model "driver" (include "widget-plugin.draDriver" .)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of the `helm test` objects: not the DaemonSet's selector labels (the metrics Service
must not select the test pod). */}}
{{- define "widget-plugin.testLabels" -}}
helm.sh/chart: {{ include "widget-plugin.chart" . }}
app.kubernetes.io/name: {{ printf "%s-test" (include "widget-plugin.name" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Where the chart mounts things in the container (the supervisor's defaults). */}}
{{- define "widget-plugin.configDir" -}}/etc/widget-plugin{{- end }}
{{- define "widget-plugin.pluginDir" -}}/var/lib/kubelet/device-plugins{{- end }}
{{- define "widget-plugin.podResourcesDir" -}}/var/lib/kubelet/pod-resources{{- end }}
{{- define "widget-plugin.cdiDir" -}}/var/run/cdi{{- end }}

{{/*
The ID the supervisor derives for a device without `id` (supervisor/resources.py device_id):
<type>-<model>-<path without /dev/>, or, when the path had to change to fit (characters other
than letters, digits, '.', '_', '-', or more than 63 in all), cut to 52, '-' and '.' trimmed at
the end, and the first 10 hex digits of the path's SHA-256 appended. Call with the device.
*/}}
{{- define "widget-plugin.deviceId" -}}
{{- $relative := regexReplaceAll "^/+" (trimPrefix "/dev/" .device) "" -}}
{{- $slug := regexReplaceAll "[^A-Za-z0-9._-]" $relative "-" -}}
{{- $base := printf "%s-%s-%s" .type .model $slug -}}
{{- if and (eq $slug $relative) (le (len $base) 63) -}}
{{- $base -}}
{{- else -}}
{{- printf "%s-%s" (regexReplaceAll "[-.]+$" (trunc 52 $base) "") (trunc 10 (sha256sum .device)) -}}
{{- end -}}
{{- end }}

{{/*
The seconds a duration string (250ms, 30s, 1m30s, 2h) stands for, as the supervisor reads it.
The schema checks the form; this is for the bounds it cannot check on strings (x-maxSeconds).
*/}}
{{- define "widget-plugin.seconds" -}}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?(ms|s|m|h)" (toString .) -1 -}}
{{- $total = addf $total (mulf (float64 (regexFind "^[0-9.]+" $part)) (get $units (regexFind "(ms|s|m|h)$" $part))) -}}
{{- end -}}
{{- $total -}}
{{- end }}
