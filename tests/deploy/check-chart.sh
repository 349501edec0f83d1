#!/bin/bash
# Checks the Helm chart: with `helm` when it is installed, else structurally.
#
#   check-chart.sh CHART_DIR ALERTS_YAML
#
# Debian ships no helm, so the structural checks run everywhere: required
# files, Chart.yaml fields, every .Values.x.y a template reads exists in
# values.yaml, template blocks are balanced, the pod is locked down, the
# PrometheusRule's alerts are the same file as deploy/prometheus/alerts.yaml.
# With helm on PATH it also lints and renders the chart with every optional
# part switched on.
set -euo pipefail

chart=$1
alerts=$2
status=0
fail() {
    echo "FAIL: $*" >&2
    status=1
}
# Occurrences of an extended regex in a file (0 is no error).
count() { { grep -oE "$1" "$2" || true; } | wc -l; }

for f in Chart.yaml values.yaml templates/_helpers.tpl templates/deployment.yaml templates/service.yaml \
    templates/pdb.yaml templates/servicemonitor.yaml templates/prometheusrule.yaml templates/NOTES.txt \
    files/alerts.yaml; do
    [ -f "$chart/$f" ] || fail "missing $f"
done
[ $status = 0 ] || exit 1

# Chart.yaml: apiVersion v2, name = folder name, SemVer version.
grep -qx 'apiVersion: v2' "$chart/Chart.yaml" || fail "Chart.yaml: apiVersion must be v2"
grep -qx "name: $(basename "$chart")" "$chart/Chart.yaml" || fail "Chart.yaml: name must be $(basename "$chart")"
grep -qE '^version: [0-9]+\.[0-9]+\.[0-9]+' "$chart/Chart.yaml" || fail "Chart.yaml: version must be SemVer"
grep -qE '^appVersion: ' "$chart/Chart.yaml" || fail "Chart.yaml: appVersion missing"

# Every key path of values.yaml (a.b.c), from indentation; list items end a path.
value_paths=$(awk '
    /^[ ]*#/ || /^[ ]*$/ || /^---/ { next }
    {
        match($0, /^ */); indent = RLENGTH
        line = substr($0, indent + 1)
        if (line ~ /^- /) next
        if (line !~ /^[A-Za-z0-9_]+:/) next
        key = line; sub(/:.*/, "", key)
        while (depth > 0 && indents[depth] >= indent) depth--
        depth++; indents[depth] = indent; keys[depth] = key
        path = keys[1]
        for (i = 2; i <= depth; i++) path = path "." keys[i]
        print path
    }' "$chart/values.yaml" | sort -u)

# .Values references in the templates (direct paths; "with" blocks are not followed).
refs=$(cat "$chart"/templates/* | { grep -oE '\.Values(\.[A-Za-z0-9_]+)+' || true; } | sed 's/^\.Values\.//' | sort -u)
for ref in $refs; do
    grep -qxF "$ref" <<<"$value_paths" || fail "templates read .Values.$ref, which values.yaml does not define"
done

# Balanced blocks: every if/range/with/define has its end.
for t in "$chart"/templates/*; do
    opens=$(count '\{\{-?[[:space:]]*(if|range|with|define|block)[[:space:]]' "$t")
    ends=$(count '\{\{-?[[:space:]]*end[[:space:]]*-?\}\}' "$t")
    [ "$opens" = "$ends" ] || fail "$(basename "$t"): $opens blocks opened, $ends closed"
    left=$(count '\{\{' "$t")
    right=$(count '\}\}' "$t")
    [ "$left" = "$right" ] || fail "$(basename "$t"): $left '{{' but $right '}}'"
done

# The pod as the issue asks for it: probes, non-root, read-only, no privilege.
dep="$chart/templates/deployment.yaml"
grep -q 'livenessProbe:' "$dep" || fail "deployment has no livenessProbe"
grep -q 'readinessProbe:' "$dep" || fail "deployment has no readinessProbe"
grep -q 'secretKeyRef:' "$dep" || fail "deployment takes no secret from a Secret reference"
for want in 'path: /healthz' 'path: /readyz' 'runAsNonRoot: true' 'readOnlyRootFilesystem: true' \
    'allowPrivilegeEscalation: false' 'drop: \["ALL"\]'; do
    grep -qE "^ +$want" "$chart/values.yaml" || fail "values.yaml lacks '$want'"
done
# Secrets are references, never values.
if grep -iE '^ *[A-Za-z]*(password|token|seed)[A-Za-z]*: *"[^"]+"' "$chart/values.yaml"; then
    fail "values.yaml holds a secret value"
fi

cmp -s "$alerts" "$chart/files/alerts.yaml" ||
    fail "$chart/files/alerts.yaml differs from $alerts (copy it: they are one set of alerts)"

if command -v helm >/dev/null 2>&1; then
    helm lint --strict "$chart" || fail "helm lint"
    rendered=$(mktemp)
    trap 'rm -f "$rendered"' EXIT
    if helm template relay "$chart" --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
        --set secrets.pgUrl.name=pg --set secrets.nats.name=nats >"$rendered"; then
        grep -q 'name: OUTBOX_NATS_TLS_SERVER_NAME' "$rendered" && fail "empty settings must not be rendered"
        grep -q 'name: OUTBOX_BATCH_SIZE' "$rendered" || fail "OUTBOX_BATCH_SIZE not rendered"
        grep -q 'kind: PrometheusRule' "$rendered" || fail "PrometheusRule not rendered"
        if command -v yamllint >/dev/null 2>&1; then
            yamllint -d relaxed "$rendered" || fail "rendered chart is not valid YAML"
        fi
    else
        fail "helm template"
    fi
else
    echo "note: helm is not installed (not in Debian): chart checked structurally, not rendered"
fi

[ $status = 0 ] && echo "ok: chart $(basename "$chart") ($(wc -w <<<"$refs") value references checked)"
exit $status
