#!/bin/bash
# Lints the YAML of deploy/ with yamllint (Helm templates excepted) and checks the dashboard's JSON.
#
#   check-yaml.sh SOURCE_DIR
#
# Run from the source root so the .yamllint there (and its ignore patterns,
# which are relative paths) applies.
set -euo pipefail

cd "$1"
status=0

if ! command -v yamllint >/dev/null 2>&1; then
    echo "SKIP: yamllint not installed (apt-get install yamllint; .ci/run installs it)"
    exit 77
fi
files=$(find deploy -name '*.yaml' -o -name '*.yml' | grep -v '/templates/' | sort)
[ -n "$files" ] || {
    echo "FAIL: no YAML under deploy/" >&2
    exit 1
}
if yamllint --strict -c .yamllint deploy; then
    echo "ok: yamllint: $(wc -l <<<"$files") files"
else
    status=1
fi

for json in deploy/grafana/*.json; do
    if command -v jq >/dev/null 2>&1; then
        jq -e '.panels | length > 0' "$json" >/dev/null || {
            echo "FAIL: $json is not a dashboard with panels" >&2
            status=1
        }
    elif command -v python3 >/dev/null 2>&1; then
        python3 -m json.tool "$json" >/dev/null || {
            echo "FAIL: $json is not valid JSON" >&2
            status=1
        }
    else
        echo "note: neither jq nor python3: $json not parsed"
    fi
done
exit $status
