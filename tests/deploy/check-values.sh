#!/bin/bash
# Checks that the Helm chart's config values and `outbox-relay --help` name the same settings.
#
#   check-values.sh RELAY_BINARY VALUES_YAML
#
# Every setting the relay prints (OUTBOX_FOO_BAR) must be a key fooBar under
# `config:` in values.yaml and the other way round, and the defaults must
# agree unless the values line says "chart default" (a deliberate change,
# such as a NATS URL that makes sense inside a cluster).
set -euo pipefail

relay=$1
values=$2

help_out=$("$relay" --help) || {
    echo "FAIL: $relay --help exited non-zero" >&2
    exit 1
}

# VARIABLE<TAB>default, from lines "  OUTBOX_X   --x   default: D".
help_settings=$(printf '%s\n' "$help_out" | awk '
    $1 ~ /^OUTBOX_[A-Z0-9_]+$/ && $2 ~ /^--/ {
        d = $0
        if (sub(/.*default: /, "", d) == 0) next
        if (d == "(empty)") d = ""
        printf "%s\t%s\n", $1, d
    }' | sort)

# VARIABLE<TAB>default<TAB>exempt, from the two-space keys of the top-level config: block.
values_settings=$(awk '
    /^config:/ { inside = 1; next }
    inside && /^[^ #]/ { inside = 0 }
    inside && /^  [A-Za-z0-9]+:/ {
        line = $0
        exempt = (line ~ /#.*chart default/) ? "exempt" : ""
        sub(/^  /, "", line)
        key = line; sub(/:.*/, "", key)
        val = line; sub(/^[^:]*:[ ]*/, "", val)
        sub(/[ ]+#.*$/, "", val)
        if (val ~ /^".*"$/ || val ~ /^\047.*\047$/) val = substr(val, 2, length(val) - 2)
        var = key
        gsub(/[A-Z]/, "_&", var)
        printf "OUTBOX_%s\t%s\t%s\n", toupper(var), val, exempt
    }' "$values" | sort)

if [ -z "$help_settings" ]; then
    echo "FAIL: no settings found in --help output:" >&2
    printf '%s\n' "$help_out" >&2
    exit 1
fi
if [ -z "$values_settings" ]; then
    echo "FAIL: no keys found under config: in $values" >&2
    exit 1
fi

status=0
awk -F'\t' '
    NR == FNR { help[$1] = $2; next }
    { seen[$1] = 1
      if (!($1 in help)) {
          printf "FAIL: values.yaml config key for %s is not a relay setting\n", $1; bad = 1
      } else if ($3 != "exempt" && $2 != help[$1]) {
          printf "FAIL: %s: values.yaml default \"%s\", relay default \"%s\"\n", $1, $2, help[$1]; bad = 1
      } }
    END { for (v in help) if (!(v in seen)) {
              printf "FAIL: %s is a relay setting but has no key under config: in values.yaml\n", v; bad = 1 }
          exit bad }
' <(printf '%s\n' "$help_settings") <(printf '%s\n' "$values_settings") >&2 || status=1

# values.schema.json next to values.yaml lists the same config keys (it rejects any other).
schema="$(dirname "$values")/values.schema.json"
if [ -f "$schema" ]; then
    schema_vars=$(jq -r '.properties.config.properties | keys[]' "$schema" |
        awk '{ v = $0; gsub(/[A-Z]/, "_&", v); print "OUTBOX_" toupper(v) }' | sort)
    values_vars=$(cut -f1 <<<"$values_settings")
    # maxInflightBytes waits in the schema for OUTBOX_MAX_INFLIGHT_BYTES (commented out in values.yaml).
    extra=$(comm -13 <(printf '%s\n' "$values_vars") <(printf '%s\n' "$schema_vars") | grep -vx OUTBOX_MAX_INFLIGHT_BYTES || true)
    missing=$(comm -23 <(printf '%s\n' "$values_vars") <(printf '%s\n' "$schema_vars") || true)
    for v in $missing; do
        echo "FAIL: $v has a config key in values.yaml but none in values.schema.json" >&2
        status=1
    done
    for v in $extra; do
        echo "FAIL: values.schema.json allows a config key for $v, which is not a relay setting" >&2
        status=1
    done
else
    echo "FAIL: $schema is missing" >&2
    status=1
fi

count=$(wc -l <<<"$help_settings")
if [ $status = 0 ]; then
    echo "ok: $count settings, values.yaml and --help agree"
fi
exit $status
