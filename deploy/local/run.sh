#!/usr/bin/env bash
# Local stack: installs what is missing, builds, starts PostgreSQL and
# nats-server (JetStream) under .local/ on loopback, applies sql/, runs the
# relay and enqueues demo events, then shows them in the stream.
#
#   bash deploy/local/run.sh          start everything (again: restarts the relay)
#   bash deploy/local/run.sh stop     stop the relay and both servers
#
# Ports (override with the variables): PG_PORT=55432 NATS_PORT=54222
# HTTP_PORT=9841. Everything lives in .local/ of the checkout, except
# PostgreSQL's data when root runs this from a directory the postgres user
# cannot enter (a clone under /root): that goes to /var/tmp/outbox-relay-local-<id>,
# one per checkout. SKIP_BUILD=1 uses build/outbox-relay and build/stream-tail
# as they are (the suite's quick-start test).
# The settings for the CLI are written to .local/env (`. .local/env`).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
state="$top/.local"
mkdir -p "$state"
PG_PORT=${PG_PORT:-55432}
NATS_PORT=${NATS_PORT:-54222}
HTTP_PORT=${HTTP_PORT:-9841}
PG_BIN=/usr/lib/postgresql/15/bin
PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
NATS_URL="nats://127.0.0.1:$NATS_PORT"
STREAM=DEMO

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# PostgreSQL runs as the postgres user when we are root: its data directory
# must be one that user can reach, which a private checkout is not.
pg_dir="$state/pg"
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$state" 2>/dev/null; then
    pg_dir=/var/tmp/outbox-relay-local-$(printf '%s' "$top" | md5sum | cut -c1-12)/pg
    mkdir -p "$(dirname "$pg_dir")"
fi

# PostgreSQL refuses to run as root: use its own system user then.
as_db_user() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

stop_all() {
    [ -f "$state/relay.pid" ] && kill "$(cat "$state/relay.pid")" 2>/dev/null || true
    [ -f "$state/nats.pid" ] && kill "$(cat "$state/nats.pid")" 2>/dev/null || true
    if [ -f "$pg_dir/data/postmaster.pid" ]; then
        as_db_user "$PG_BIN/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null || true
    fi
    rm -f "$state/relay.pid" "$state/nats.pid"
}

if [ "${1:-}" = stop ]; then
    stop_all
    say "stopped (data kept in $state; remove it to start afresh)"
    exit 0
fi

packages=(cmake gcc make pkg-config libpq-dev libnats-dev libev-dev libjansson-dev
          postgresql nats-server curl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

say "building"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$top/build" -j"$(nproc)" --target outbox-relay stream-tail >/dev/null
fi

[ -f "$state/relay.pid" ] && kill "$(cat "$state/relay.pid")" 2>/dev/null && sleep 1 || true

if [ ! -d "$pg_dir/data" ]; then
    say "creating a PostgreSQL cluster in $pg_dir"
    mkdir -p "$pg_dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$pg_dir"; fi
    as_db_user "$PG_BIN/initdb" -D "$pg_dir/data" -A trust -U postgres >/dev/null
fi
if ! as_db_user "$PG_BIN/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; then
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_db_user "$PG_BIN/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $pg_dir" start >/dev/null
fi

if ! { [ -f "$state/nats.pid" ] && kill -0 "$(cat "$state/nats.pid")" 2>/dev/null; }; then
    say "starting nats-server with JetStream on 127.0.0.1:$NATS_PORT"
    mkdir -p "$state/nats"
    nats-server -js -sd "$state/nats" -a 127.0.0.1 -p "$NATS_PORT" >"$state/nats/log" 2>&1 &
    echo $! >"$state/nats.pid"
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
        sleep 0.1
    done
fi

say "applying the schema (outbox-relay migrate)"
OUTBOX_PG_URL="$PG_URL" "$top/build/outbox-relay" migrate

cat >"$state/env" <<EOF
export OUTBOX_PG_URL='$PG_URL'
export OUTBOX_NATS_URL='$NATS_URL'
export OUTBOX_STREAM='$STREAM'
export OUTBOX_STREAM_SUBJECTS='demo.>'
EOF

say "starting the relay (log: $state/relay.log, metrics: http://127.0.0.1:$HTTP_PORT/metrics)"
(. "$state/env" && exec env OUTBOX_HTTP_ADDR="127.0.0.1:$HTTP_PORT" OUTBOX_LOG_FORMAT=text \
    "$top/build/outbox-relay") >>"$state/relay.log" 2>&1 &
echo $! >"$state/relay.pid"
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

say "enqueueing three demo events"
last=$(psql -qAt "$PG_URL" -c "SELECT COALESCE(max(id), 0) FROM outbox")
psql -qAt "$PG_URL" >/dev/null <<'SQL'
BEGIN;
SELECT outbox_enqueue('demo.orders.created', '{"order": 1, "total": "9.90"}',
                      '{"trace-id": "demo-1"}', 'order-1');
SELECT outbox_enqueue('demo.orders.paid', '{"order": 1}', '{}', 'order-1');
SELECT outbox_enqueue_bytes('demo.audit', convert_to('plain bytes', 'UTF8'));
COMMIT;
SQL
for _ in $(seq 100); do
    left=$(psql -qAt "$PG_URL" -c "SELECT count(*) FROM outbox WHERE id > $last AND status <> 'published'")
    [ "$left" = 0 ] && break
    sleep 0.1
done
psql "$PG_URL" -c "SELECT id, subject, status, stream_seq, published_at FROM outbox WHERE id > $last ORDER BY id"

say "the stream $STREAM now holds"
first=$(psql -qAt "$PG_URL" -c "SELECT min(stream_seq) FROM outbox WHERE id > $last")
"$top/build/stream-tail" "$NATS_URL" "$STREAM" "${first:-1}"

cat <<EOF

The relay keeps running (pid $(cat "$state/relay.pid")). The operator
commands read their settings from the environment, as the relay does:
  . $state/env; export PATH=$top/build:\$PATH
  outbox-relay status
Try:
  psql '$PG_URL' -c "SELECT outbox_enqueue('demo.hello', '{\"hi\": true}')"
  $top/build/stream-tail $NATS_URL $STREAM
  curl -s http://127.0.0.1:$HTTP_PORT/metrics | grep -v '^#'
Stop everything with: bash deploy/local/run.sh stop
EOF
