/* The benchmark's ceilings: raw JetStream publishing and raw PostgreSQL marking. */
/* _GNU_SOURCE comes from the build. */
#include "bench.h"

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pipeline/claimer.h"

#include <check.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- 1a. raw JetStream publish rate (J) ---- */

struct raw_acks {
    atomic_long ok;
    atomic_long failed;
};

static void raw_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    struct raw_acks *acks = closure;
    if (pa != NULL)
        atomic_fetch_add(&acks->ok, 1);
    else
        atomic_fetch_add(&acks->failed, 1);
    natsMsg_Destroy(msg);
}

/* Async-publishes `msgs` messages of `bytes` each with a window of `window`; msgs/s. */
double raw_js_rate(int msgs, int bytes, int window)
{
    const char *subjects[] = {"raw.>", NULL};
    it_js_add_stream(RAW_STREAM, subjects);

    natsConnection *nc = nats_connect();
    struct raw_acks acks = {0};
    jsOptions jo;
    jsOptions_Init(&jo);
    /* A full window: past MaxPending a publish waits (StallWait) for room rather than fail. */
    jo.PublishAsync.MaxPending = window;
    jo.PublishAsync.StallWait = 60000;
    jo.PublishAsync.AckHandler = raw_on_ack;
    jo.PublishAsync.AckHandlerClosure = &acks;
    jsCtx *js = NULL;
    natsStatus s = natsConnection_JetStream(&js, nc, &jo);
    ck_assert_msg(s == NATS_OK, "JetStream context: %s", natsStatus_GetText(s));

    unsigned char *payload = malloc((size_t)bytes);
    ck_assert_ptr_nonnull(payload);
    for (int i = 0; i < bytes; i++)
        payload[i] = (unsigned char)(i * 31 + 7);
    unsigned run = (unsigned)wall_now_us();

    progress("raw JetStream: %d async publishes of %d B, window %d", msgs, bytes, window);
    double t0 = mono_now();
    for (int i = 0; i < msgs; i++) {
        /* The relay's ids are UUID text: the same length here. */
        char id[40];
        snprintf(id, sizeof id, "%08x-0000-4000-8000-%012x", run, (unsigned)i);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        /* No MaxWait, like the relay: it keeps the PubAck deadline itself (nats.c would keep a
         * timeout record per publish until the deadline, acked or not). */
        po.MsgId = id;
        s = js_PublishAsync(js, RAW_SUBJECT, payload, bytes, &po);
        ck_assert_msg(s == NATS_OK, "publish %d: %s", i, natsStatus_GetText(s));
    }
    jsPubOptions done;
    jsPubOptions_Init(&done);
    done.MaxWait = 120000;
    s = js_PublishAsyncComplete(js, &done);
    double seconds = mono_now() - t0;
    ck_assert_msg(s == NATS_OK, "waiting for PubAcks: %s", natsStatus_GetText(s));
    ck_assert_int_eq(atomic_load(&acks.failed), 0);
    ck_assert_int_eq(atomic_load(&acks.ok), msgs);
    ck_assert_int_eq(it_js_stream_msgs(RAW_STREAM), msgs);

    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    free(payload);
    jsErrCode jerr = 0;
    s = js_DeleteStream(it_js(), RAW_STREAM, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "delete stream: %s", natsStatus_GetText(s));
    return msgs / seconds;
}

/*
 * The floor under the relay's delivery latency: a message published on its
 * own (written at once) into a file stream, to a push consumer's receipt.
 * One every millisecond, as a relay at its tail sends them.
 */
static void raw_js_latency(int msgs)
{
    const char *subjects[] = {"raw.>", NULL};
    it_js_add_stream(RAW_STREAM, subjects);
    natsConnection *pub = nats_connect_asap(true), *nc = nats_connect();
    jsCtx *js = js_context(nc);
    jsSubOptions so;
    new_messages_of(&so, RAW_STREAM);
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_SubscribeSync(&sub, js, RAW_SUBJECT, NULL, &so, &jerr);
    ck_assert_msg(s == NATS_OK, "subscribe: %s (%d)", natsStatus_GetText(s), (int)jerr);
    double *ms = calloc((size_t)msgs, sizeof *ms);
    ck_assert_ptr_nonnull(ms);
    progress("raw JetStream delivery latency: %d messages", msgs);
    for (int i = 0; i < msgs; i++) {
        double t0 = mono_now();
        s = natsConnection_PublishString(pub, RAW_SUBJECT, "latency");
        ck_assert_msg(s == NATS_OK, "publish: %s", natsStatus_GetText(s));
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, sub, 5000);
        ck_assert_msg(s == NATS_OK, "receipt: %s", natsStatus_GetText(s));
        ms[i] = (mono_now() - t0) * 1000.0;
        natsMsg_Destroy(m);
        sleep_ms(1);
    }
    qsort(ms, (size_t)msgs, sizeof *ms, cmp_double);
    bench_record("raw", "js_delivery_p50_ms", "ms", ms[msgs / 2]);
    bench_record("raw", "js_delivery_p99_ms", "ms", ms[msgs * 99 / 100]);
    free(ms);
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsConnection_Destroy(pub);
    s = js_DeleteStream(it_js(), RAW_STREAM, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "delete stream: %s", natsStatus_GetText(s));
}

double bench_raw_js(void)
{
    raw_js_latency(1000);
    double rate = raw_js_rate(opt.raw_js_msgs, opt.payload_bytes, opt.js_window);
    bench_record("raw", "js_msgs", "msgs", opt.raw_js_msgs);
    bench_record("raw", "js_window", "msgs", opt.js_window);
    bench_record("raw", "J_js_publish_rate", "msgs/s", rate);
    return rate;
}

/* ---- 1b. raw PostgreSQL marking rate (M) ---- */

struct strbuf {
    char *s;
    size_t n, cap;
};

static void sb_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct strbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)len + 1 > b->cap) {
        b->cap = (b->cap + (size_t)len + 1) * 2;
        b->s = realloc(b->s, b->cap);
        ck_assert_ptr_nonnull(b->s);
    }
    memcpy(b->s + b->n, tmp, (size_t)len + 1);
    b->n += (size_t)len;
}

double bench_raw_pg(PGconn *conn)
{
    char payload[160];
    sql_payload_expr(payload, sizeof payload);
    it_pg_exec(conn, "DROP TABLE IF EXISTS bench_copy");
    it_pg_exec(conn, "CREATE TABLE bench_copy (LIKE outbox INCLUDING ALL)");
    it_pg_exec(conn,
               "INSERT INTO bench_copy (subject, payload) SELECT 'bench.raw', %s"
               " FROM generate_series(1, %d) AS g",
               payload, opt.raw_pg_rows);
    /* The same preparation as the drain's backlog: none but a clean start. */
    pg_checkpoint(conn);
    int64_t first = it_pg_int(conn, "SELECT min(id) FROM bench_copy");
    ck_assert_int_eq(it_pg_int(conn, "SELECT max(id) FROM bench_copy") - first + 1,
                     opt.raw_pg_rows);

    /* The relay's own mark statement on the copy, on a session set up as the relay sets its own
     * (plans fixed whatever the statistics say, asynchronous commit): what PostgreSQL can do for
     * the relay's marks, not for a statement the relay does not run. */
    struct relay_config cfg;
    it_relay_config(&cfg, (const char *[]){"--table", "bench_copy", NULL});
    struct outbox_sql statements;
    outbox_sql_build(&statements, &cfg, &claimer_message_limits);
    config_free(&cfg);
    const char *sql = statements.mark_published;
    PGconn *marker = it_pg_connect();
    PGresult *set = PQexec(marker, outbox_session_sql);
    ck_assert_msg(PQresultStatus(set) == PGRES_TUPLES_OK, "session: %s", PQresultErrorMessage(set));
    PQclear(set);

    /* The array literals are built before the clock starts: M is PostgreSQL's part. */
    int nbatches = (opt.raw_pg_rows + opt.mark_batch - 1) / opt.mark_batch;
    struct strbuf(*params)[3] = calloc((size_t)nbatches, sizeof *params);
    ck_assert_ptr_nonnull(params);
    double at = (double)wall_now_us() / 1e6;
    for (int b = 0; b < nbatches; b++) {
        for (int k = 0; k < 3; k++)
            sb_printf(&params[b][k], "{");
        for (int i = b * opt.mark_batch; i < (b + 1) * opt.mark_batch && i < opt.raw_pg_rows; i++) {
            const char *sep = i > b * opt.mark_batch ? "," : "";
            sb_printf(&params[b][0], "%s%" PRId64, sep, first + i);
            sb_printf(&params[b][1], "%s%d", sep, i + 1);
            sb_printf(&params[b][2], "%s%lld", sep, (long long)(at * 1e6) + i * 10);
        }
        for (int k = 0; k < 3; k++)
            sb_printf(&params[b][k], "}");
    }

    progress("raw PostgreSQL: marking %d rows, %d per UPDATE", opt.raw_pg_rows, opt.mark_batch);
    int64_t marked = 0;
    double t0 = mono_now();
    for (int b = 0; b < nbatches; b++) {
        const char *values[3] = {params[b][0].s, params[b][1].s, params[b][2].s};
        PGresult *res = PQexecParams(marker, sql, 3, NULL, values, NULL, NULL, 0);
        ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "mark: %s",
                      PQresultErrorMessage(res));
        marked += strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
    }
    double seconds = mono_now() - t0;
    PQfinish(marker);
    ck_assert_int_eq(marked, opt.raw_pg_rows);
    for (int b = 0; b < nbatches; b++)
        for (int k = 0; k < 3; k++)
            free(params[b][k].s);
    free(params);
    it_pg_exec(conn, "DROP TABLE bench_copy");

    double rate = opt.raw_pg_rows / seconds;
    bench_record("raw", "pg_rows", "rows", opt.raw_pg_rows);
    bench_record("raw", "mark_batch", "rows", opt.mark_batch);
    bench_record("raw", "M_pg_mark_rate", "rows/s", rate);
    return rate;
}
