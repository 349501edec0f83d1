#!/bin/bash
# Checks that README.md documents every setting `outbox-relay --help` prints,
# and names no OUTBOX_ variable the relay does not have.
#
#   check-readme.sh RELAY_BINARY README
set -euo pipefail
relay=$1
readme=$2
help_vars=$("$relay" --help | awk '$1 ~ /^OUTBOX_[A-Z0-9_]+$/ {print $1}' | sort -u)
readme_vars=$(grep -o '`OUTBOX_[A-Z0-9_]*`' "$readme" | tr -d '`' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$help_vars") <(printf '%s\n' "$readme_vars"))
unknown=$(comm -13 <(printf '%s\n' "$help_vars") <(printf '%s\n' "$readme_vars"))
status=0
if [ -n "$missing" ]; then
    echo "FAIL: settings missing from $readme:" $missing >&2
    status=1
fi
if [ -n "$unknown" ]; then
    echo "FAIL: $readme names settings the relay does not have:" $unknown >&2
    status=1
fi
[ $status = 0 ] && echo "ok: README documents all $(printf '%s\n' "$help_vars" | wc -l) settings"
exit $status
