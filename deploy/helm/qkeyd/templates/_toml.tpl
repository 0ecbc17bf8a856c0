{{/*
A map from values.yaml written out as TOML, for config.settings.

Helm reads every YAML number as a float64, so sprig's toToml would write
`monitor_rate = 4096.0`, which qkeyd's integer options refuse. Here a number
with no fractional part is written as an integer (qkeyd's float options take
integers too), and any other as a float.

qkeyd.toml.table takes (dict "table" MAP "path" "dotted.name"): first the
table's plain keys, then its sub-tables ([path.key]) and arrays of tables
([[path.key]]), each in key order. A null value is left out.
*/}}
{{- define "qkeyd.toml.table" -}}
{{- $path := .path }}
{{- range $key, $value := .table }}
{{- if and (not (kindIs "invalid" $value)) (not (include "qkeyd.toml.isTable" $value)) }}
{{ include "qkeyd.toml.key" $key }} = {{ include "qkeyd.toml.value" (dict "v" $value "at" (printf "%s%s" (ternary "" (printf "%s." $path) (eq $path "")) $key)) }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- $name := printf "%s%s" (ternary "" (printf "%s." $path) (eq $path "")) (include "qkeyd.toml.key" $key) }}
{{- if kindIs "map" $value }}

[{{ $name }}]
{{- include "qkeyd.toml.table" (dict "table" $value "path" $name) }}
{{- else if include "qkeyd.toml.isTable" $value }}
{{- range $value }}

[[{{ $name }}]]
{{- include "qkeyd.toml.table" (dict "table" . "path" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" for a map or a non-empty list of maps. */}}
{{- define "qkeyd.toml.isTable" -}}
{{- if kindIs "map" . }}true
{{- else if and (kindIs "slice" .) (gt (len .) 0) }}
{{- $all := true }}
{{- range . }}{{ if not (kindIs "map" .) }}{{ $all = false }}{{ end }}{{ end }}
{{- if $all }}true{{ end }}
{{- end }}
{{- end }}

{{/* A key, bare when TOML allows it, else quoted. */}}
{{- define "qkeyd.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
A value: a string (as a basic string: JSON's escapes are a subset of TOML's),
a boolean, a number, or a list of these. Takes (dict "v" VALUE "at" NAME).
*/}}
{{- define "qkeyd.toml.value" -}}
{{- $v := .v }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq (float64 $v) (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) }}{{ $v }}
{{- else if kindIs "slice" $v }}
{{- $at := .at -}}
[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "qkeyd.toml.value" (dict "v" $e "at" $at) }}{{ end }}]
{{- else }}
{{- fail (printf "config settings: %s: cannot write a %s as a TOML value" .at (kindOf $v)) }}
{{- end }}
{{- end }}
