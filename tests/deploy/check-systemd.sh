#!/bin/bash
# Verifies deploy/systemd/outbox-relay.service with systemd-analyze, against the built binary.
#
#   check-systemd.sh UNIT_FILE RELAY_BINARY
#
# `systemd-analyze verify` insists that ExecStart= exists, so it checks a
# copy whose ExecStart points at the binary just built. Any complaint (an
# unknown key, a directive in the wrong section) fails the test, not only a
# non-zero exit. The hardening is held to an exposure score of at most 2.0
# (systemd's scale: 0 = locked down, 10 = unprotected).
set -euo pipefail

unit=$1
relay=$2

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIP: systemd-analyze not installed (Debian package systemd)"
    exit 77
fi
[ -x "$relay" ] || {
    echo "FAIL: $relay is not an executable" >&2
    exit 1
}
grep -q '^ExecStart=/usr/local/bin/outbox-relay$' "$unit" || {
    echo "FAIL: $unit: expected ExecStart=/usr/local/bin/outbox-relay" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/local/bin/outbox-relay\$|ExecStart=$relay|" "$unit" >"$work/outbox-relay.service"

status=0
if ! out=$(systemd-analyze verify "$work/outbox-relay.service" 2>&1) || [ -n "$out" ]; then
    echo "FAIL: systemd-analyze verify:" >&2
    printf '%s\n' "$out" >&2
    status=1
fi

# --offline needs systemd 250 or later; older ones only verify.
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    if ! out=$(systemd-analyze security --offline=true --threshold=20 "$work/outbox-relay.service" 2>&1); then
        echo "FAIL: systemd-analyze security: exposure above 2.0" >&2
        printf '%s\n' "$out" | grep -v '^✓' >&2
        status=1
    else
        printf '%s\n' "$out" | tail -n 1
    fi
fi

for key in Restart=on-failure ProtectSystem=strict NoNewPrivileges=yes PrivateTmp=yes ProtectHome=yes \
    DynamicUser=yes SystemCallFilter=@system-service KillSignal=SIGTERM; do
    grep -qx "$key" "$unit" || {
        echo "FAIL: $unit lacks $key" >&2
        status=1
    }
done
grep -q '^After=.*postgresql.service' "$unit" || {
    echo "FAIL: $unit does not start after postgresql.service" >&2
    status=1
}
grep -q '^RestrictAddressFamilies=' "$unit" || {
    echo "FAIL: $unit does not restrict address families" >&2
    status=1
}

[ $status = 0 ] && echo "ok: $(basename "$unit") verifies"
exit $status
