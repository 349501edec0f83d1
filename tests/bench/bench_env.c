/* The benchmark's connections to PostgreSQL and JetStream, and its relay processes. */
/* _GNU_SOURCE comes from the build. */
#include "bench.h"

#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- PostgreSQL helpers ---- */

const char *pg_show(PGconn *conn, const char *setting, char *buf, size_t len)
{
    PGresult *res = it_pg_query(conn, "SHOW %s", setting);
    snprintf(buf, len, "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "?");
    PQclear(res);
    return buf;
}

/* A payload expression of `bytes` distinct bytes per row g (generate_series). */
void sql_payload_expr_of(int bytes, char *buf, size_t len)
{
    snprintf(buf, len, "substring(decode(repeat(md5(g::text), %d), 'hex') FROM 1 FOR %d)",
             bytes / 16 + 1, bytes);
}

void sql_payload_expr(char *buf, size_t len)
{
    sql_payload_expr_of(opt.payload_bytes, buf, len);
}

int64_t pg_xact_commits(PGconn *conn)
{
    return it_pg_int(conn, "SELECT xact_commit FROM pg_stat_database"
                           " WHERE datname = current_database()");
}

void pg_checkpoint(PGconn *conn)
{
    it_pg_exec(conn, "CHECKPOINT");
}

/* ---- JetStream helpers ---- */

natsConnection *nats_connect_asap(bool send_asap)
{
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetURL(o, it_nats_url());
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(o, send_asap);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, 5000);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    ck_assert_msg(s == NATS_OK, "connect %s: %s", it_nats_url(), natsStatus_GetText(s));
    return nc;
}

natsConnection *nats_connect(void)
{
    return nats_connect_asap(false);
}

jsCtx *js_context(natsConnection *nc)
{
    jsCtx *js = NULL;
    natsStatus s = natsConnection_JetStream(&js, nc, NULL);
    ck_assert_msg(s == NATS_OK, "JetStream context: %s", natsStatus_GetText(s));
    return js;
}

/* A push consumer of what the stream stores from now on, without acks. */
void new_messages_of(jsSubOptions *so, const char *stream)
{
    jsSubOptions_Init(so);
    so->Stream = stream;
    so->Config.DeliverPolicy = js_DeliverNew;
    so->Config.AckPolicy = js_AckNone;
}

/* ---- relay processes ---- */

static bool relay_is_leader(void *arg)
{
    return it_relay_log_contains(arg, "became leader");
}

struct it_relay *relay_start_leader(void)
{
    struct it_relay *relay = it_relay_start(opt.relay_env, NULL);
    if (!it_wait_until(relay_is_leader, relay, 30000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay did not become leader within 30 s");
    }
    return relay;
}

void relay_stop(struct it_relay *relay)
{
    it_relay_signal(relay, SIGTERM);
    if (!it_relay_wait(relay, 30000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay did not exit within 30 s of SIGTERM");
    }
    if (it_relay_exit_code(relay) != 0) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay exited with %d after SIGTERM", it_relay_exit_code(relay));
    }
}

void progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

bool stream_reached(void *arg)
{
    struct stream_wait *w = arg;
    w->seen = it_js_stream_msgs(STREAM);
    return w->seen >= w->want;
}

void relay_sessions_find(PGconn *conn, struct relay_sessions *rs)
{
    PGresult *res = it_pg_query(conn, "SELECT pid FROM pg_stat_activity"
                                      " WHERE application_name = 'outbox-relay'");
    rs->n = 0;
    for (int i = 0; i < PQntuples(res) && rs->n < 8; i++)
        rs->pid[rs->n++] = (pid_t)atoi(PQgetvalue(res, i, 0));
    PQclear(res);
}

double relay_sessions_cpu_s(const struct relay_sessions *rs)
{
    double total = 0;
    for (int i = 0; i < rs->n; i++) {
        double cpu = proc_cpu_s(rs->pid[i], false, NULL);
        if (cpu > 0)
            total += cpu;
    }
    return total;
}

int64_t wal_bytes(PGconn *conn)
{
    return it_pg_int(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint");
}
