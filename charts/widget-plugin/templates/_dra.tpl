{{/*
DRA mode (Kubernetes Dynamic Resource Allocation, resource.k8s.io/v1): whether it is on, the
driver's name, and the (type, model) pairs served through it, as the supervisor derives them
(supervisor/config.py, supervisor/resources.py, dra_driver/names.py, dra_driver/objects.py).
tests/deploy/test_helm_dra.py renders DeviceClasses from these and compares them to
`widget-supervisor resources -o dra`.
*/}}

{{/*
"true" when the pods serve DRA resources: dra.enabled, or (with the chart's own `config`) a
top-level `api: dra`, or `api: dra` in any `resources` entry, top-level or in a `nodes` entry.
Empty otherwise. With existingConfigMap the chart cannot read the config: set dra.enabled.
*/}}
{{- define "widget-plugin.draEnabled" -}}
{{- $on := .Values.dra.enabled -}}
{{- if not .Values.existingConfigMap -}}
{{- $cfg := .Values.config -}}
{{- if eq (toString (default "device-plugin" $cfg.api)) "dra" -}}
{{- $on = true -}}
{{- end -}}
{{- $lists := list (default list $cfg.resources) -}}
{{- range $cfg.nodes -}}
{{- $lists = append $lists (default list .resources) -}}
{{- end -}}
{{- range $list := $lists -}}
{{- range $list -}}
{{- if eq (toString .api) "dra" -}}
{{- $on = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- ternary "true" "" (not (not $on)) -}}
{{- end }}

{{/* The DRA driver's name: config.dra.driver, else the config's domain (as the supervisor). */}}
{{- define "widget-plugin.draDriver" -}}
{{- $cfg := .Values.config -}}
{{- default (default "ska-sdp.org" $cfg.domain) (get (default dict $cfg.dra) "driver") -}}
{{- end }}

{{/*
A DeviceClass's name (dra_driver/names.py device_class_name): <type>-<model>.<driver>, with
'_' turned into '-' (a DNS subdomain has none). Call with (dict "type" T "model" M "driver" D).
*/}}
{{- define "widget-plugin.deviceClassName" -}}
{{- printf "%s-%s" .type .model | replace "_" "-" }}.{{ .driver }}
{{- end }}

{{/*
The api serving a (type, model) under one list of `resources` settings: the entry's `api`,
else the top-level api. Call with (dict "list" L "type" T "model" M "top" API); prints the
api, or nothing when the list has no entry for the pair.
*/}}
{{- define "widget-plugin.apiIn" -}}
{{- $pair := . -}}
{{- range $pair.list -}}
{{- if and (eq (toString .type) (toString $pair.type)) (eq (toString .model) (toString $pair.model)) -}}
{{- default $pair.top .api -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The (type, model) pairs served through DRA on some node, one "<type>|<model>" a line, sorted:
every pair with a device somewhere in the file whose settings say `api: dra` in any list that
may apply (the top-level `resources`, or any `nodes` entry's), or that no top-level entry
configures when the top-level api is dra. Which `nodes` entries apply depends on the node, which
the chart cannot know: a pair DRA on some node gets its DeviceClass (one too many is harmless,
one missing is not). Empty with existingConfigMap.
*/}}
{{- define "widget-plugin.draPairs" -}}
{{- if not .Values.existingConfigMap -}}
{{- $cfg := .Values.config -}}
{{- $top := toString (default "device-plugin" $cfg.api) -}}
{{- $devices := default list $cfg.devices -}}
{{- $lists := list -}}
{{- range $cfg.nodes -}}
{{- $devices = concat $devices (default list .devices) -}}
{{- $lists = append $lists (default list .resources) -}}
{{- end -}}
{{- $pairs := dict -}}
{{- range $devices -}}
{{- $key := printf "%s|%s" (toString .type) (toString .model) -}}
{{- $args := dict "type" .type "model" .model "top" $top -}}
{{- $dra := eq (default $top (include "widget-plugin.apiIn" (merge (dict "list" (default list $cfg.resources)) $args))) "dra" -}}
{{- range $list := $lists -}}
{{- if eq (include "widget-plugin.apiIn" (merge (dict "list" $list) $args)) "dra" -}}
{{- $dra = true -}}
{{- end -}}
{{- end -}}
{{- if $dra -}}
{{- $_ := set $pairs $key true -}}
{{- end -}}
{{- end -}}
{{- range keys $pairs | sortAlpha }}
{{ . }}
{{- end -}}
{{- end -}}
{{- end }}

{{/* The service account of the DaemonSet's pods in DRA mode. */}}
{{- define "widget-plugin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "widget-plugin.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{/*
The kubelet root directory without a trailing '/'. DRA's plugin directories are mounted at
their host paths inside the container: kubelet dials the service socket at the absolute path
the plugin's GetInfo reports, which the supervisor derives from --kubelet-root-dir.
*/}}
{{- define "widget-plugin.kubeletRoot" -}}
{{- trimSuffix "/" .Values.kubeletRootDir -}}
{{- end }}

{{/* "true" when the CDI directory is mounted: cdi.enabled, or DRA (which always writes CDI). */}}
{{- define "widget-plugin.cdiMounted" -}}
{{- ternary "true" "" (or .Values.cdi.enabled (eq (include "widget-plugin.draEnabled" .) "true")) -}}
{{- end }}
