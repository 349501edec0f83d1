#!/bin/bash
# Verifies deploy/systemd/outbox-relay.service with systemd-analyze, against the built binary.
#
#   check-systemd.sh UNIT_FILE RELAY_BINARY [TEMPLATE_UNIT_FILE]
#
# The template (outbox-relay@.service) is verified as an instance, with the
# same checks plus its per-instance environment file.
# `systemd-analyze verify` insists that ExecStart= exists, so it checks a
# copy whose ExecStart points at the binary just built. Any complaint (an
# unknown key, a directive in the wrong section) fails the test, not only a
# non-zero exit. The hardening is held to an exposure score of at most 2.0
# (systemd's scale: 0 = locked down, 10 = unprotected).
set -euo pipefail

unit=$1
relay=$2
template=${3:-}

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

for key in Type=notify NotifyAccess=main 'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF "$key" "$unit" || {
        echo "FAIL: $unit lacks $key" >&2
        status=1
    }
done
grep -qE '^WatchdogSec=[1-9]' "$unit" || {
    echo "FAIL: $unit has no WatchdogSec=" >&2
    status=1
}
grep -qx 'EnvironmentFile=-/etc/outbox-relay/outbox-relay.env' "$unit" || {
    echo "FAIL: $unit: the environment file must be optional (EnvironmentFile=-...)" >&2
    status=1
}

if [ -n "$template" ]; then
    # Everything but the instance lines must match the single unit.
    sed "s|^ExecStart=/usr/local/bin/outbox-relay\$|ExecStart=$relay|" "$template" >"$work/outbox-relay@check.service"
    if ! out=$(systemd-analyze verify "$work/outbox-relay@check.service" 2>&1) || [ -n "$out" ]; then
        echo "FAIL: systemd-analyze verify (template):" >&2
        printf '%s\n' "$out" >&2
        status=1
    fi
    grep -qx 'EnvironmentFile=/etc/outbox-relay/%i.env' "$template" || {
        echo "FAIL: $template: expected EnvironmentFile=/etc/outbox-relay/%i.env" >&2
        status=1
    }
    diff <(sed -n '/^\[Unit\]/,$p' "$unit" | grep -v -e '^Description=' -e '^EnvironmentFile=' -e '^#') \
        <(sed -n '/^\[Unit\]/,$p' "$template" | grep -v -e '^Description=' -e '^EnvironmentFile=' -e '^#') >&2 || {
        echo "FAIL: $template and $unit differ beyond Description=, EnvironmentFile= and comments" >&2
        status=1
    }
fi

[ $status = 0 ] && echo "ok: $(basename "$unit")${template:+ and $(basename "$template")} verify"
exit $status
