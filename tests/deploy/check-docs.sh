#!/bin/bash
# Checks the facts README.md and docs/ state that the tree can verify:
#  - README.md is a front page: at most 300 lines;
#  - the settings table of docs/configuration.md is one table (no blank line
#    splits it) with a row for every setting `outbox-relay --help` prints, and
#    no row for a setting the relay does not have;
#  - every command `outbox-relay --help` lists, and `check`, has a section in
#    docs/operations.md and is named in README.md;
#  - the metrics table of docs/operations.md has a row for every family the
#    relay exports (relay/*/metrics.c), and README.md and docs/ name no
#    outbox_relay_ series it does not export;
#  - every "schema version N" is the version sql/900_schema_version.sql sets;
#  - every subject the SQL examples write is one the quick start's stream
#    takes (OUTBOX_STREAM_SUBJECTS in deploy/local/run.sh), so the examples
#    work on the stack the quick start leaves running;
#  - every relative link in README.md and docs/*.md resolves: the file exists
#    and, for a #fragment into a Markdown file, a heading makes that anchor;
#  - the `tree relay include` drawn in docs/architecture.md lists exactly the
#    sources and headers the tree holds, each under its layer's folder.
#
#   check-docs.sh RELAY_BINARY SOURCE_DIR
set -euo pipefail
relay=$1
top=$2
readme="$top/README.md"
config="$top/docs/configuration.md"
ops="$top/docs/operations.md"
docs=("$readme" "$top"/docs/*.md)
status=0
fail() { echo "FAIL: $*" >&2; status=1; }
for f in "$config" "$ops"; do
    [ -f "$f" ] || { echo "FAIL: $f is missing" >&2; exit 1; }
done

lines=$(wc -l <"$readme")
[ "$lines" -le 300 ] || fail "README.md has $lines lines; a front page has at most 300 (move detail to docs/)"

# The settings table: from the OUTBOX_PG_URL row to the first line that is not a row.
table=$(awk '/^\| `OUTBOX_PG_URL`/ {on=1} on && !/^\|/ {exit} on {print}' "$config")
[ -n "$table" ] || fail "no settings table (a row starting with | \`OUTBOX_PG_URL\`) in $config"
rows=$(printf '%s\n' "$table" | grep -o '^| `OUTBOX_[A-Z0-9_]*`' | tr -d '|` ' | sort -u)
help_vars=$("$relay" --help | awk '$1 ~ /^OUTBOX_[A-Z0-9_]+$/ {print $1}' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$help_vars") <(printf '%s\n' "$rows"))
[ -z "$missing" ] || fail "settings without a row in the settings table of $config (or after a line that splits it):" $missing
extra=$(comm -13 <(printf '%s\n' "$help_vars") <(printf '%s\n' "$rows"))
[ -z "$extra" ] || fail "rows in the settings table of $config for settings the relay does not have:" $extra

# Commands: the --help line "Commands (...): a, b, c" and check.
commands=$("$relay" --help | sed -n 's/^Commands[^:]*: *//p' | tr -d ' ' | tr ',' '\n')
[ -n "$commands" ] || fail "no Commands line in outbox-relay --help"
for c in check $commands; do
    grep -q "^### $c\$" "$ops" || fail "command $c has no '### $c' section in $ops"
    grep -q "\`$c\`\|outbox-relay $c" "$readme" || fail "README.md does not name the command $c"
done

# Metrics: the families metrics.c renders, against the table and every name in the docs.
metrics_c=$(find "$top/relay" -name metrics.c | head -1)
[ -n "$metrics_c" ] || fail "no metrics.c under $top/relay"
families=$(grep -oE '(counter|counter_by_reason|gauge_int|gauge_double|family)\(&b, "[a-z_]+"' "$metrics_c" |
    cut -d'"' -f2 | sed 's/^/outbox_relay_/' | sort -u)
[ "$(printf '%s\n' "$families" | grep -c .)" -ge 10 ] || fail "found only these metric families in $metrics_c:" $families
mtable=$(awk '/^\| metric \|/ {on=1} on && !/^\|/ {exit} on {print}' "$ops")
for f in $families; do
    grep -q "\`$f[\`{]" <<<"$mtable" || fail "metric $f has no row in the metrics table of $ops"
done
for s in $(grep -ohE '\boutbox_relay_[a-z0-9_]+' "${docs[@]}" | sort -u); do
    base=$s
    case "$s" in *_bucket | *_sum | *_count) base=${s%_*} ;; esac
    grep -qx -e "$s" -e "$base" <<<"$families" ||
        fail "the docs name $s, which the relay does not export"
done

version=$(grep -oE 'schema version [0-9]+' "$top/sql/900_schema_version.sql" | awk '{print $3}')
[ -n "$version" ] || fail "no schema version in sql/900_schema_version.sql"
while read -r n; do
    [ "$n" = "$version" ] || fail "the docs say schema version $n; sql/ is at $version"
done < <(grep -ohE 'schema version [0-9]+' "${docs[@]}" | awk '{print $3}')
while read -r n; do
    [ "$n" = "$version" ] || fail "the docs' migrate output says \"version\":$n; sql/ is at $version"
done < <(grep -oh '"version":[0-9]*' "${docs[@]}" | cut -d: -f2)

filter=$({ grep -o "OUTBOX_STREAM_SUBJECTS='[^']*'" "$top/deploy/local/run.sh" || true; } | head -1 | cut -d"'" -f2)
[ -n "$filter" ] || fail "no OUTBOX_STREAM_SUBJECTS in deploy/local/run.sh"
prefix=${filter%>}
subjects=$(grep -ohE "(outbox_enqueue(_bytes)?\(|VALUES \()'[^']+'" "${docs[@]}" | cut -d"'" -f2 | sort -u)
[ -n "$subjects" ] || fail "no SQL example subjects found in README.md or docs/"
for s in $subjects; do
    case "$s" in
    "$prefix"*) ;;
    *) fail "example subject '$s' is not taken by the quick start's stream ($filter)" ;;
    esac
done

# GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.
anchors() {
    awk '/^```/ {code = !code} !code && /^#+ / {sub(/^#+ +/, ""); print}' "$1" |
        tr 'A-Z' 'a-z' | sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g'
}
nlinks=0
for doc in "${docs[@]}"; do
    dir=$(dirname "$doc")
    # Inline links outside code spans and fences: ](target) and ](target "title").
    while read -r target; do
        case "$target" in
        http://* | https://* | mailto:*) continue ;;
        esac
        nlinks=$((nlinks + 1))
        path=${target%%#*}
        frag=
        [ "$path" = "$target" ] || frag=${target#*#}
        file=$doc
        [ -z "$path" ] || file="$dir/$path"
        if [ ! -e "$file" ]; then
            fail "${doc#"$top"/}: link to $target: no such file"
        elif [ -n "$frag" ] && [ "${file%.md}" != "$file" ] && ! grep -qx -- "$frag" <<<"$(anchors "$file")"; then
            fail "${doc#"$top"/}: link to $target: no heading makes the anchor #$frag"
        fi
    done < <(awk '/^```/ {code = !code; next} !code' "$doc" | sed 's/`[^`]*`//g' |
        grep -oE '\]\([^) ]+' | cut -c3-)
done

# The drawn tree: every file under the folder it is drawn in, no more, no less.
drawn=$(awk '/^\$ tree relay include/ {on=1; next} on && /^```/ {exit} on' "$top/docs/architecture.md" |
    sed 's/│   /    /g; s/[├└]── /    /g' | grep -v '^[0-9]* directories' | awk 'NF {
        line = $0; sub(/[a-z_0-9.]+$/, "", line); depth = length(line) / 4
        name = $NF
        if (name !~ /\./) { dir[depth] = name; next }
        path = ""
        for (d = 0; d < depth; d++) path = path dir[d] "/"
        print path name
    }' | sort)
actual=$(cd "$top" && find relay include -name '*.[ch]' | sort)
if [ -z "$drawn" ]; then
    fail "docs/architecture.md draws no \`tree relay include\`"
elif [ "$drawn" != "$actual" ]; then
    fail "docs/architecture.md's tree differs from the sources (< drawn, > actual): $(diff <(echo "$drawn") <(echo "$actual") | grep '^[<>]' | tr '\n' ' ')"
fi

[ $status = 0 ] && echo "ok: README $lines lines, settings table ($(printf '%s\n' "$rows" | wc -l) rows)," \
    "commands:" check $commands ", $(printf '%s\n' "$families" | wc -l) metric families, schema version $version," \
    "$nlinks relative links, example subjects:" $subjects
exit $status
