{{/*
Simulated nodes (`widget-supervisor simulate`, supervisor/cli.py): the simulator's names and
labels, the terms of its node selector, and the node affinity that keeps pods off the
simulated nodes. tests/deploy/test_helm_simulate.py checks them.
*/}}

{{/*
The simulator's objects' name: <fullname>-simulator. The full name is cut to 53 characters first,
so the suffix always fits in 63 and never collides with the DaemonSet's objects' names.
*/}}
{{- define "widget-plugin.simulatorName" -}}
{{- printf "%s-simulator" (include "widget-plugin.fullname" . | trunc 53 | trimSuffix "-") -}}
{{- end }}

{{/*
Labels that select the simulator's pods. Their name is not the DaemonSet's, so that neither
the DaemonSet nor its metrics Service (and ServiceMonitor, which copies the pod's node into
`node`) selects them.
*/}}
{{- define "widget-plugin.simulatorSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-simulator" (include "widget-plugin.name" . | trunc 53 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The app.kubernetes.io/* labels of every simulator object. */}}
{{- define "widget-plugin.simulatorLabels" -}}
helm.sh/chart: {{ include "widget-plugin.chart" . }}
{{ include "widget-plugin.simulatorSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: simulator
app.kubernetes.io/part-of: widget-device-plugin
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The simulator's ServiceAccount. */}}
{{- define "widget-plugin.simulatorServiceAccountName" -}}
{{- $sa := .Values.simulate.serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "widget-plugin.simulatorName" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end }}

{{/* "true" when the simulator runs leader election (more than one replica). */}}
{{- define "widget-plugin.simulatorElects" -}}
{{- ternary "true" "" (gt (int .Values.simulate.replicas) 1) -}}
{{- end }}

{{/*
The Lease the replicas elect their leader through: named after the Deployment, so that two
releases in one namespace never share one.
*/}}
{{- define "widget-plugin.simulatorLease" -}}
{{- include "widget-plugin.simulatorName" . -}}
{{- end }}

{{/*
simulate.nodeSelector as the CLI reads it (supervisor/cli.py _parse_selector): KEY=VALUE terms
(KEY==VALUE too) separated by ',', blanks around terms ignored. One "KEY=VALUE" a line.
*/}}
{{- define "widget-plugin.simulatedSelector" -}}
{{- range $term := splitList "," (toString .Values.simulate.nodeSelector) -}}
{{- if trim $term -}}
{{- $kv := splitn "=" 2 (trim $term) }}
{{ trim $kv._0 }}={{ trimPrefix "=" (trim $kv._1) }}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
`affinity` with the simulated nodes excluded, as YAML (empty for no affinity at all). Call with
(dict "root" $ "affinity" AFFINITY). With simulate.daemonSetAffinity (on by default, whether
or not this release simulates: KWOK's nodes take DaemonSet pods and only pretend to run them), every
term of its required node affinity gets one more expression per selector term, KEY NotIn
[VALUE] (a node that lacks KEY matches NotIn): a node matches the whole selector only if it has
every KEY=VALUE, so "not simulated" is "some KEY differs", one term each, and ANDing that with
the user's terms (ORed) means every user term once with each of ours. Preferred terms, pod
affinity and the rest stay as they are. With daemonSetAffinity off: `affinity` unchanged.
*/}}
{{- define "widget-plugin.avoidSimulatedNodes" -}}
{{- $root := .root -}}
{{- $affinity := deepCopy (default dict .affinity) -}}
{{- if $root.Values.simulate.daemonSetAffinity -}}
{{- $exprs := list -}}
{{- range $line := include "widget-plugin.simulatedSelector" $root | trim | splitList "\n" -}}
{{- if $line -}}
{{- $kv := splitn "=" 2 $line -}}
{{- $exprs = append $exprs (dict "key" $kv._0 "operator" "NotIn" "values" (list $kv._1)) -}}
{{- end -}}
{{- end -}}
{{- if $exprs -}}
{{- $node := default dict (get $affinity "nodeAffinity") -}}
{{- $required := default dict (get $node "requiredDuringSchedulingIgnoredDuringExecution") -}}
{{- $merged := list -}}
{{- range $term := default (list dict) (get $required "nodeSelectorTerms") -}}
{{- range $expr := $exprs -}}
{{- $copy := deepCopy $term -}}
{{- $_ := set $copy "matchExpressions" (append (default list (get $copy "matchExpressions")) $expr) -}}
{{- $merged = append $merged $copy -}}
{{- end -}}
{{- end -}}
{{- $_ := set $required "nodeSelectorTerms" $merged -}}
{{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" $required -}}
{{- $_ := set $affinity "nodeAffinity" $node -}}
{{- end -}}
{{- end -}}
{{- if $affinity -}}
{{- toYaml $affinity -}}
{{- end -}}
{{- end }}
