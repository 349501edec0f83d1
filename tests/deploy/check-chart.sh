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

# values.schema.json: valid JSON, unknown keys rejected, the shipped values accepted.
schema="$chart/values.schema.json"
if [ ! -f "$schema" ]; then
    fail "missing values.schema.json"
elif ! jq -e '.additionalProperties == false and .properties.config.additionalProperties == false' \
    "$schema" >/dev/null; then
    fail "values.schema.json must reject unknown keys (additionalProperties: false) at the top and in config"
elif python3 -c 'import jsonschema, yaml' 2>/dev/null; then
    python3 - "$schema" "$chart/values.yaml" <<'PY' || fail "values.schema.json"
import copy, json, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
values = yaml.safe_load(open(sys.argv[2]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
errors = [e.message for e in validator.iter_errors(values)]
assert not errors, "values.yaml does not satisfy the schema: %s" % errors
def rejected(change, what):
    v = copy.deepcopy(values)
    change(v)
    assert list(validator.iter_errors(v)), "the schema accepts " + what
rejected(lambda v: v["config"].update(pollIntervallMs=50), "config.pollIntervallMs (a typo)")
rejected(lambda v: v.update(replicas=3), "an unknown top-level key")
rejected(lambda v: v["image"].update(repo="x"), "image.repo")
rejected(lambda v: v["config"].update(batchSize="many"), "a string for config.batchSize")
rejected(lambda v: v["secrets"]["pgUrl"].update(value="postgres://u:p@h/db"), "a secret value")
ok = copy.deepcopy(values)
ok["migrate"] = {"enabled": True, "image": {"tag": "x"}, "backoffLimit": 1}
ok["image"]["repository"] = "registry.example.com/outbox-relay"
errors = [e.message for e in validator.iter_errors(ok)]
assert not errors, "the schema rejects migrate.* or image.repository: %s" % errors
print("ok: values.schema.json accepts values.yaml and rejects 5 kinds of mistakes")
PY
else
    echo "note: python3-jsonschema is not installed: values.schema.json checked structurally only"
fi
grep -q 'required "image.repository must be set' "$chart/templates/deployment.yaml" ||
    fail "deployment.yaml must fail rendering without image.repository (required)"

cmp -s "$alerts" "$chart/files/alerts.yaml" ||
    fail "$chart/files/alerts.yaml differs from $alerts (copy it: they are one set of alerts)"

if command -v helm >/dev/null 2>&1; then
    helm lint --strict "$chart" || fail "helm lint"
    rendered=$(mktemp)
    trap 'rm -f "$rendered"' EXIT
    if helm template relay "$chart" >/dev/null 2>&1; then
        fail "helm template renders without image.repository"
    fi
    if helm template relay "$chart" --set image.repository=registry.example.com/outbox-relay \
        --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
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
