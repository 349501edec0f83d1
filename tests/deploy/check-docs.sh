#!/bin/bash
# Checks the facts README.md states that the tree can verify:
#  - the settings table is one table (no blank line splits it) with a row for
#    every setting `outbox-relay --help` prints;
#  - every "schema version N" is the version sql/900_schema_version.sql sets;
#  - every subject the README's SQL examples write is one the quick start's
#    stream takes (OUTBOX_STREAM_SUBJECTS in deploy/local/run.sh), so the
#    examples work on the stack the quick start leaves running.
#
#   check-docs.sh RELAY_BINARY SOURCE_DIR
set -euo pipefail
relay=$1
top=$2
readme="$top/README.md"
status=0
fail() { echo "FAIL: $*" >&2; status=1; }

# The settings table: from the OUTBOX_PG_URL row to the first line that is not a row.
table=$(awk '/^\| `OUTBOX_PG_URL`/ {on=1} on && !/^\|/ {exit} on {print}' "$readme")
[ -n "$table" ] || fail "no settings table (a row starting with | \`OUTBOX_PG_URL\`) in $readme"
rows=$(printf '%s\n' "$table" | grep -o '^| `OUTBOX_[A-Z0-9_]*`' | tr -d '|` ' | sort -u)
help_vars=$("$relay" --help | awk '$1 ~ /^OUTBOX_[A-Z0-9_]+$/ {print $1}' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$help_vars") <(printf '%s\n' "$rows"))
[ -z "$missing" ] || fail "settings without a row in the settings table (or after a line that splits it):" $missing

version=$(grep -oE 'schema version [0-9]+' "$top/sql/900_schema_version.sql" | awk '{print $3}')
[ -n "$version" ] || fail "no schema version in sql/900_schema_version.sql"
while read -r n; do
    [ "$n" = "$version" ] || fail "README says schema version $n; sql/ is at $version"
done < <(grep -oE 'schema version [0-9]+' "$readme" | awk '{print $3}')
while read -r n; do
    [ "$n" = "$version" ] || fail "README's migrate output says \"version\":$n; sql/ is at $version"
done < <(grep -o '"version":[0-9]*' "$readme" | cut -d: -f2)

filter=$({ grep -o "OUTBOX_STREAM_SUBJECTS='[^']*'" "$top/deploy/local/run.sh" || true; } | head -1 | cut -d"'" -f2)
[ -n "$filter" ] || fail "no OUTBOX_STREAM_SUBJECTS in deploy/local/run.sh"
prefix=${filter%>}
subjects=$(grep -oE "(outbox_enqueue(_bytes)?\(|VALUES \()'[^']+'" "$readme" | cut -d"'" -f2 | sort -u)
[ -n "$subjects" ] || fail "no SQL example subjects found in $readme"
for s in $subjects; do
    case "$s" in
    "$prefix"*) ;;
    *) fail "README example subject '$s' is not taken by the quick start's stream ($filter)" ;;
    esac
done

[ $status = 0 ] && echo "ok: settings table ($(printf '%s\n' "$rows" | wc -l) rows), schema version $version, example subjects:" $subjects
exit $status
