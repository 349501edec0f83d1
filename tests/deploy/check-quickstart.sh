#!/bin/bash
# The quick start as a newcomer runs it: deploy/local/run.sh from a private
# directory (0700, as a clone under /root is; PostgreSQL, run as its own user
# when we are root, cannot enter it), then the operator command its last lines
# point to, with the settings it wrote to .local/env. Free ports, and
# everything stopped and removed at the end.
#
#   check-quickstart.sh SOURCE_DIR RELAY_BINARY STREAM_TAIL_BINARY
set -euo pipefail
src=$1
relay=$2
tail_bin=$3
if ! command -v nats-server >/dev/null || [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
    echo "skip: nats-server or PostgreSQL 15 missing"
    exit 77
fi

home=$(mktemp -d /tmp/outbox-quickstart-XXXXXX)
chmod 700 "$home"
top="$home/outbox-relay"
mkdir -p "$top/deploy/local" "$top/build"
cp "$src/deploy/local/run.sh" "$top/deploy/local/"
cp "$relay" "$top/build/outbox-relay"
cp "$tail_bin" "$top/build/stream-tail"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PG_PORT=$(free_port)
NATS_PORT=$(free_port)
HTTP_PORT=$(free_port)
export PG_PORT NATS_PORT HTTP_PORT SKIP_BUILD=1

cleanup() {
    bash "$top/deploy/local/run.sh" stop >/dev/null 2>&1 || true
    rm -rf "/var/tmp/outbox-relay-local-$(printf '%s' "$top" | md5sum | cut -c1-12)" "$home"
}
trap cleanup EXIT

fail() {
    printf '%s\n' "$out"
    echo "FAIL: $*"
    exit 1
}

out=$(bash "$top/deploy/local/run.sh" 2>&1) || fail "deploy/local/run.sh exited non-zero"
published=$(printf '%s\n' "$out" | grep -c '| published |' || true)
[ "$published" = 3 ] || fail "$published of the 3 demo rows published"
printf '%s\n' "$out" | grep -q "outbox-relay status" || fail "no hint to run outbox-relay status"
[ -f "$top/.local/env" ] || fail "no .local/env"

# What the script's last lines tell the newcomer to do.
status=$(. "$top/.local/env" && "$top/build/outbox-relay" status --json 2>&1) ||
    { out=$status; fail "outbox-relay status after '. .local/env' failed"; }
python3 - "$status" <<'PY' || { out=$status; fail "status does not show the 3 published rows"; }
import json, sys
doc = json.loads(sys.argv[1].strip().splitlines()[-1])
sys.exit(0 if doc["counts"]["published"] == 3 else 1)
PY
echo "ok: the quick start from a private directory published 3 rows; status read them"
