#!/bin/bash
# Checks that README.md and docs/ together document every setting
# `outbox-relay --help` prints, and name no OUTBOX_ variable the relay does
# not have.
#
#   check-readme.sh RELAY_BINARY SOURCE_DIR
set -euo pipefail
relay=$1
top=$2
docs=("$top/README.md" "$top"/docs/*.md)
help_vars=$("$relay" --help | awk '$1 ~ /^OUTBOX_[A-Z0-9_]+$/ {print $1}' | sort -u)
doc_vars=$(grep -oh '`OUTBOX_[A-Z0-9_]*`' "${docs[@]}" | tr -d '`' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$help_vars") <(printf '%s\n' "$doc_vars"))
unknown=$(comm -13 <(printf '%s\n' "$help_vars") <(printf '%s\n' "$doc_vars"))
status=0
if [ -n "$missing" ]; then
    echo "FAIL: settings missing from README.md and docs/:" $missing >&2
    status=1
fi
if [ -n "$unknown" ]; then
    echo "FAIL: README.md or docs/ name settings the relay does not have:" $unknown >&2
    status=1
fi
[ $status = 0 ] && echo "ok: README.md and docs/ document all $(printf '%s\n' "$help_vars" | wc -l) settings"
exit $status
