/* The benchmark's workload shapes: retention, a cold backlog, one hot key, big rows. */
/* _GNU_SOURCE comes from the build. */
#include "bench.h"

#include <check.h>
#include <stdio.h>

/* ---- 6. workload shapes of issues 10 and 11: cold backlog, hot key, big payloads ---- */

/* `rows` pending rows of `bytes` each, in statements of at most ~64 MB. */
static void backlog_insert(PGconn *conn, int rows, int bytes, const char *key_sql)
{
    char payload[160];
    sql_payload_expr_of(bytes, payload, sizeof payload);
    int chunk = bytes > 0 ? (64 << 20) / bytes : rows;
    if (chunk < 1)
        chunk = 1;
    for (int from = 1; from <= rows; from += chunk) {
        int to = from + chunk - 1 < rows ? from + chunk - 1 : rows;
        it_pg_exec(conn,
                   "INSERT INTO outbox (subject, ordering_key, payload)"
                   " SELECT 'bench.shape', %s, %s FROM generate_series(%d, %d) AS g",
                   key_sql, payload, from, to);
    }
}

/*
 * A backlog built while no relay runs: `rows` pending rows of `bytes` each,
 * ordering_key = key_sql (an SQL expression of g, or NULL). Autovacuum is
 * off for the table until the next build, so nothing analyzes it behind
 * the bench's back.
 */
/* An empty table nothing analyzes behind the bench's back until the next drain ends. */
static void backlog_reset(PGconn *conn)
{
    it_pg_exec(conn, "TRUNCATE outbox");
    it_pg_exec(conn, "ALTER TABLE outbox SET (autovacuum_enabled = false)");
}

void backlog_build(PGconn *conn, int rows, int bytes, const char *key_sql, enum backlog_stats stats)
{
    backlog_reset(conn);
    if (stats == STATS_STALE) {
        it_pg_exec(conn, "INSERT INTO outbox (subject, status, published_at, stream_seq)"
                         " SELECT 'bench.history', 'published', now(), 0"
                         " FROM generate_series(1, 1000)");
        it_pg_exec(conn, "VACUUM ANALYZE outbox");
    }
    backlog_insert(conn, rows, bytes, key_sql);
    if (stats == STATS_ANALYZED)
        it_pg_exec(conn, "VACUUM ANALYZE outbox");
    pg_checkpoint(conn);
}

struct shape_drain {
    double seconds, rate, peak_rss_mb;
};

/* A relay started on the backlog (the clock starts before its spawn) until every row is published.
 */
static void shape_drain_env(PGconn *conn, const char *what, int rows, const char *const *extra,
                            struct shape_drain *out)
{
    const char *env[MAX_RELAY_ENV + 8];
    int n = 0;
    for (int i = 0; i < opt.nrelay_env; i++)
        env[n++] = opt.relay_env[i];
    for (; extra != NULL && *extra != NULL && n < MAX_RELAY_ENV + 7; extra++)
        env[n++] = *extra;
    env[n] = NULL;
    uint64_t before = it_js_stream_msgs(STREAM);
    progress("%s: %d rows", what, rows);
    double t0 = mono_now();
    struct it_relay *relay = it_relay_start(env, NULL);
    int timeout_ms = 300000 + rows / 10;
    struct stream_wait w = {.want = before + (uint64_t)rows};
    if (!it_wait_until(stream_reached, &w, timeout_ms))
        ck_abort_msg("%s: %llu of %d rows reached the stream within %d ms", what,
                     (unsigned long long)(w.seen - before), rows, timeout_ms);
    int64_t left = it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'",
                                  0, timeout_ms);
    out->seconds = mono_now() - t0;
    out->rate = rows / out->seconds;
    out->peak_rss_mb = proc_peak_rss_mb(relay->pid);
    relay_stop(relay);
    it_pg_exec(conn, "ALTER TABLE outbox RESET (autovacuum_enabled)");
    ck_assert_msg(left == 0, "%s: %lld rows not published", what, (long long)left);
}

static void shape_drain(PGconn *conn, const char *what, int rows, struct shape_drain *out)
{
    shape_drain_env(conn, what, rows, NULL, out);
}

/*
 * Issue 12: what retention costs a drain running at the same time. The same
 * backlog drains twice next to `retention_rows` published rows a week old:
 * once with retention off, once with the leader pruning them (batches every
 * 100 ms, the default batch size).
 */
void bench_retention(PGconn *conn, double limit)
{
    int backlog = opt.retention_rows / 2;
    struct shape_drain off, on;
    const char *env_off[] = {"OUTBOX_RETENTION=0", NULL};
    const char *env_on[] = {"OUTBOX_RETENTION=7d", "OUTBOX_RETENTION_INTERVAL_MS=100", NULL};
    struct shape_drain *runs[] = {&off, &on};
    const char *const *envs[] = {env_off, env_on};
    int64_t pruned = 0;
    for (int i = 0; i < 2; i++) {
        /* A week of history autovacuum has long since analyzed, then a backlog it has not. */
        backlog_reset(conn);
        it_pg_exec(conn,
                   "INSERT INTO outbox (subject, status, published_at, stream_seq, created_at)"
                   " SELECT 'bench.old', 'published', now() - interval '8 days', g,"
                   " now() - interval '8 days' FROM generate_series(1, %d) AS g",
                   opt.retention_rows);
        it_pg_exec(conn, "VACUUM ANALYZE outbox");
        backlog_insert(conn, backlog, opt.payload_bytes, "NULL");
        pg_checkpoint(conn);
        shape_drain_env(conn, i ? "drain while pruning" : "drain, retention off", backlog, envs[i],
                        runs[i]);
        pruned = opt.retention_rows -
                 it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject = 'bench.old'");
    }
    bench_record("retention", "old_rows", "rows", opt.retention_rows);
    bench_record("retention", "backlog_rows", "rows", backlog);
    bench_record("retention", "drain_rate_off", "rows/s", off.rate);
    bench_record("retention", "drain_rate_pruning", "rows/s", on.rate);
    bench_record("retention", "pruned_during_drain", "rows", (double)pruned);
    bench_record("retention", "ratio_pruning_to_off", "x", on.rate / off.rate);
    bench_record("retention", "ratio_to_L", "x", on.rate / limit);
}

/*
 * Issue 11 §0: a backlog the planner has no statistics for (runs first, on a
 * table never analyzed), one it has stale statistics for (analyzed while
 * only published rows were in it), and the same after ANALYZE.
 */
void bench_cold(PGconn *conn, double limit)
{
    struct shape_drain cold, stale, analyzed;
    backlog_build(conn, opt.cold_rows, opt.payload_bytes, "NULL", STATS_NONE);
    shape_drain(conn, "cold backlog (table never analyzed)", opt.cold_rows, &cold);
    backlog_build(conn, opt.cold_rows, opt.payload_bytes, "NULL", STATS_STALE);
    shape_drain(conn, "backlog on stale statistics (analyzed when all published)", opt.cold_rows,
                &stale);
    backlog_build(conn, opt.cold_rows, opt.payload_bytes, "NULL", STATS_ANALYZED);
    shape_drain(conn, "the same backlog after VACUUM ANALYZE", opt.cold_rows, &analyzed);
    bench_record("cold", "rows", "rows", opt.cold_rows);
    bench_record("cold", "drain_rate", "rows/s", cold.rate);
    bench_record("cold", "drain_rate_stale", "rows/s", stale.rate);
    bench_record("cold", "drain_rate_analyzed", "rows/s", analyzed.rate);
    /* Goals: >= 0.9. */
    bench_record("cold", "ratio_to_analyzed", "x", cold.rate / analyzed.rate);
    bench_record("cold", "stale_ratio_to_analyzed", "x", stale.rate / analyzed.rate);
    bench_record("cold", "ratio_to_L", "x", cold.rate / limit);
}

/* Issue 11 §3: every row on one ordering_key vs no key. */
void bench_keyed(PGconn *conn, double limit)
{
    struct shape_drain one, none;
    backlog_build(conn, opt.key_rows, opt.payload_bytes, "'hot'", STATS_NONE);
    shape_drain(conn, "one-key drain", opt.key_rows, &one);
    backlog_build(conn, opt.key_rows, opt.payload_bytes, "NULL", STATS_NONE);
    shape_drain(conn, "no-key drain", opt.key_rows, &none);
    bench_record("keyed", "rows", "rows", opt.key_rows);
    bench_record("keyed", "one_key_rate", "rows/s", one.rate);
    bench_record("keyed", "no_key_rate", "rows/s", none.rate);
    /* Goal: >= 0.5. */
    bench_record("keyed", "ratio_one_to_no_key", "x", one.rate / none.rate);
    bench_record("keyed", "no_key_ratio_to_L", "x", none.rate / limit);
}

/*
 * Issues 10 §1 and 11 §4: rows of `bytes`: the drain in bytes/s next to raw
 * JetStream async publishing of the same count and size (its window capped
 * at ~64 MB in flight), and the relay's peak RSS.
 */
void bench_big(PGconn *conn, const char *section, int rows, int bytes)
{
    int window = (64 << 20) / bytes;
    if (window > opt.js_window)
        window = opt.js_window;
    if (window < 1)
        window = 1;
    double raw = raw_js_rate(rows, bytes, window) * bytes;
    struct shape_drain d;
    backlog_build(conn, rows, bytes, "NULL", STATS_NONE);
    char what[64];
    snprintf(what, sizeof what, "drain of %d-byte rows", bytes);
    shape_drain(conn, what, rows, &d);
    double mb = 1024.0 * 1024.0;
    bench_record(section, "rows", "rows", rows);
    bench_record(section, "payload_bytes", "B", bytes);
    bench_record(section, "raw_js_window", "msgs", window);
    bench_record(section, "raw_js_mb_s", "MB/s", raw / mb);
    bench_record(section, "drain_mb_s", "MB/s", d.rate * bytes / mb);
    bench_record(section, "drain_rate", "rows/s", d.rate);
    /* Goal: >= 0.5. */
    bench_record(section, "ratio_to_raw", "x", d.rate * bytes / raw);
    bench_record(section, "relay_peak_rss_mb", "MB", d.peak_rss_mb);
}
