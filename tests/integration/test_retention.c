/* Retention: only old published rows go, window by window of ids, while a drain runs, past dead
 * and late-published rows; a window's cost does not grow with the table; a partitioned outbox. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "harness.h"
#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pg/pg_source.h"
#include "outbox_relay/pg/retention.h"
#include "run_suite.h"

#define STREAM "IT_RETENTION"
#define OLD    20000 /* published 10 days ago */
#define DRAIN  20000 /* pending, drained by the relay meanwhile */
/* Below every id: where a pass starts. */
#define FIRST_ID "-9223372036854775808"

/* The module's connection: a pg_source of its own, as the relay's; retention leads once it is up.
 */
static void on_pg_connected(void *arg)
{
    struct retention **r = arg;
    retention_set_leader(*r, true);
}

static void on_pg_down(void *arg, const char *why)
{
    ck_abort_msg("retention's connection went: %s", why);
}

static void on_pg_notified(void *arg)
{
}

struct watch {
    ev_timer timer;
    struct retention *r;
    uint64_t want;
    uint64_t batch;
    bool whole_batches;
    uint64_t hook_at;   /* once this many rows are pruned, hook runs (once) */
    void (*hook)(void); /* every total seen was a multiple of the batch */
};

static void on_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct watch *wt = w->data;
    uint64_t pruned = retention_pruned_total(wt->r);
    wt->whole_batches = wt->whole_batches && pruned % wt->batch == 0;
    if (wt->hook != NULL && pruned >= wt->hook_at) {
        wt->hook();
        wt->hook = NULL;
    }
    if (pruned >= wt->want)
        ev_break(loop, EVBREAK_ALL);
}

static void on_give_up(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

/* The statement's plan under the relay's session settings: the primary key, nothing that reads or
 * sorts the whole table, and no index on published_at (there is none). */
static void assert_by_primary_key(PGconn *conn, const char *sql)
{
    PQclear(it_pg_query(conn, "%s", outbox_session_sql));
    it_pg_exec(conn, "DEALLOCATE ALL");
    it_pg_exec(conn, "PREPARE retention(bigint, int, bigint) AS %s", sql);
    PGresult *plan =
        it_pg_query(conn, "EXPLAIN (COSTS OFF) EXECUTE retention(604800, 2000, %s)", FIRST_ID);
    bool by_pkey = false, whole_table = false;
    for (int i = 0; i < PQntuples(plan); i++) {
        const char *line = PQgetvalue(plan, i, 0);
        fprintf(stderr, "plan: %s\n", line);
        by_pkey = by_pkey || strstr(line, "outbox_pkey");
        whole_table = whole_table || strstr(line, "Seq Scan") || strstr(line, "Sort") ||
                      strstr(line, "Hash") || strstr(line, "Bitmap") ||
                      strstr(line, "published_at_idx");
    }
    PQclear(plan);
    it_pg_exec(conn, "DEALLOCATE ALL");
    ck_assert_msg(by_pkey && !whole_table, "the statement does not walk the primary key alone");
}

/* The module itself, on a loop, on a connection of its own, until it pruned want rows (or 30 s
 * went by). Returns the rows it pruned; *whole_batches: every total seen was a multiple of the
 * batch. */
static uint64_t run_retention_hook(struct relay_config *cfg, uint64_t want, bool *whole_batches,
                                   uint64_t hook_at, void (*hook)(void))
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct retention *r = NULL;
    char err[256];
    struct pg_source *pg = pg_source_create(loop, cfg,
                                            (struct pg_source_events){.connected = on_pg_connected,
                                                                      .disconnected = on_pg_down,
                                                                      .notified = on_pg_notified,
                                                                      .fatal = on_pg_down,
                                                                      .arg = &r},
                                            err, sizeof(err));
    ck_assert_msg(pg != NULL, "pg_source_create: %s", err);
    r = retention_create(loop, cfg, pg, err, sizeof(err));
    ck_assert_msg(r != NULL, "retention_create: %s", err);
    pg_source_start(pg);
    struct watch w = {.r = r,
                      .want = want,
                      .batch = (uint64_t)cfg->retention_batch,
                      .whole_batches = true,
                      .hook_at = hook_at,
                      .hook = hook};
    ev_timer_init(&w.timer, on_watch, 0.05, 0.05);
    w.timer.data = &w;
    ev_timer_start(loop, &w.timer);
    ev_timer stop_anyway;
    ev_timer_init(&stop_anyway, on_give_up, 30., 0.);
    ev_timer_start(loop, &stop_anyway);
    retention_set_leader(r, true);
    int64_t t0 = it_now_ms();
    ev_run(loop, 0);
    uint64_t pruned = retention_pruned_total(r);
    fprintf(stderr, "retention: %llu rows in %lld ms\n", (unsigned long long)pruned,
            (long long)(it_now_ms() - t0));
    retention_set_leader(r, false);
    pg_source_destroy(pg); /* before retention: a queued statement calls back as it is dropped */
    retention_destroy(r);
    ev_loop_destroy(loop);
    *whole_batches = w.whole_batches;
    return pruned;
}

static uint64_t run_retention(struct relay_config *cfg, uint64_t want, bool *whole_batches)
{
    return run_retention_hook(cfg, want, whole_batches, 0, NULL);
}

/* The rows the statement read through the primary key, executed (in a transaction rolled back). */
static long pkey_rows_read(PGconn *conn, const char *sql, const char *cursor)
{
    PQclear(it_pg_query(conn, "%s", outbox_session_sql));
    it_pg_exec(conn, "DEALLOCATE ALL");
    it_pg_exec(conn, "PREPARE retention(bigint, int, bigint) AS %s", sql);
    it_pg_exec(conn, "BEGIN");
    PGresult *plan = it_pg_query(conn,
                                 "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE"
                                 " retention(604800, 2000, %s)",
                                 cursor);
    it_pg_exec(conn, "ROLLBACK");
    it_pg_exec(conn, "DEALLOCATE ALL");
    long most = -1;
    for (int i = 0; i < PQntuples(plan); i++) {
        const char *line = PQgetvalue(plan, i, 0), *rows = strstr(line, "rows=");
        fprintf(stderr, "plan: %s\n", line);
        if (strstr(line, "outbox_pkey") && rows != NULL && atol(rows + 5) > most)
            most = atol(rows + 5);
    }
    PQclear(plan);
    return most;
}

static bool drain_under_way(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject LIKE 'it.ret.new.%%'"
                           " AND status = 'published'") > 0;
}

START_TEST(test_retention_prunes_only_old_published_rows_during_a_drain)
{
    const char *subjects[] = {"it.ret.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(
        conn,
        "INSERT INTO outbox (subject, status, created_at, published_at, stream_seq, attempts)"
        " SELECT 'it.ret.old', 'published', now() - interval '10 days',"
        " now() - interval '10 days' + g * interval '1 ms', g, 1"
        " FROM generate_series(1, %d) g",
        OLD);
    /* Old dead rows stay whatever their age; young published rows stay. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, created_at, last_error)"
                     " SELECT 'it.ret.dead', 'dead', now() - interval '30 days', 'x'"
                     " FROM generate_series(1, 50)");
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, published_at, stream_seq)"
                     " SELECT 'it.ret.young', 'published', now() - interval '6 days', 1"
                     " FROM generate_series(1, 100)");
    it_pg_exec(conn, "ANALYZE outbox");

    /* The statements walk the primary key, a window at a time. */
    struct relay_config cfg;
    it_relay_config(&cfg, (const char *[]){"--retention-batch", "2000", "--retention", "7d",
                                           "--retention-interval-ms", "100", NULL});
    char *sql = retention_build_sql(&cfg), *probe = retention_build_probe_sql(&cfg);
    ck_assert(sql != NULL && probe != NULL);
    assert_by_primary_key(conn, sql);
    assert_by_primary_key(conn, probe);
    /* A window of old rows: deleted whole, reading the window's rows once each. */
    ck_assert_int_eq(pkey_rows_read(conn, sql, FIRST_ID), 2000);
    free(sql);
    free(probe);

    /* A drain runs meanwhile. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.ret.new.' || (g %% 5), convert_to(g::text, 'UTF8'),"
               " 'k' || (g %% 50) FROM generate_series(1, %d) g",
               DRAIN);
    struct it_relay *relay = it_relay_start(NULL, NULL);
    ck_assert(it_wait_until(drain_under_way, conn, 30000));

    bool whole_batches = false;
    uint64_t pruned = run_retention(&cfg, OLD, &whole_batches);
    ck_assert_int_eq(pruned, OLD);
    ck_assert_msg(whole_batches, "rows were pruned in other amounts than whole batches of 2000");
    config_free(&cfg);

    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject = 'it.ret.old'"),
                     0);
    ck_assert_int_eq(
        it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject = 'it.ret.dead' AND status ="
                        " 'dead'"),
        50);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject = 'it.ret.young'"),
                     100);
    /* The drain finished, every row once. */
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox WHERE subject LIKE 'it.ret.new.%%'"
                                    " AND status = 'published'",
                                    DRAIN, 60000),
                     DRAIN);
    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, DRAIN, &msgs);
    it_msgs_free(&msgs);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* Rows a pass walks past, below old published ones. Windows of 100 rows. */
#define DEAD_BLOCK 250 /* dead, a month old */
#define LATE_BLOCK 150 /* created 10 days ago, published yesterday (retried late) */
#define WAIT_BLOCK 120 /* created 10 days ago, still pending */
#define OLD_BLOCK  1000

/* The pending rows, published long ago after all: below the cursor of the pass under way. */
static void publish_waiting_rows(void)
{
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "UPDATE outbox SET status = 'published', published_at = now() - interval"
                     " '9 days', stream_seq = 1 WHERE subject = 'it.ret.wait'");
    PQfinish(conn);
}

START_TEST(test_retention_walks_past_dead_late_and_unfinished_rows)
{
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, status, created_at, last_error)"
               " SELECT 'it.ret.dead', 'dead', now() - interval '30 days', 'x'"
               " FROM generate_series(1, %d)",
               DEAD_BLOCK);
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, status, created_at, published_at, stream_seq)"
               " SELECT 'it.ret.late', 'published', now() - interval '10 days',"
               " now() - interval '1 day', g FROM generate_series(1, %d) g",
               LATE_BLOCK);
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, created_at)"
               " SELECT 'it.ret.wait', now() - interval '10 days' FROM generate_series(1, %d)",
               WAIT_BLOCK);
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, status, created_at, published_at, stream_seq)"
               " SELECT 'it.ret.old', 'published', now() - interval '10 days',"
               " now() - interval '10 days', g FROM generate_series(1, %d) g",
               OLD_BLOCK);
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, status, published_at, stream_seq)"
               " SELECT 'it.ret.young', 'published', now(), g FROM generate_series(1, 100) g");

    struct relay_config cfg;
    it_relay_config(&cfg, (const char *[]){"--retention-batch", "100", "--retention", "7d",
                                           "--retention-interval-ms", "100", NULL});
    /* Once the old rows are gone, the pending rows below them turn old and published: a later
     * pass, from the lowest id again, prunes them too. */
    bool whole_batches = false;
    uint64_t pruned = run_retention_hook(&cfg, OLD_BLOCK + WAIT_BLOCK, &whole_batches, OLD_BLOCK,
                                         publish_waiting_rows);
    config_free(&cfg);
    ck_assert_int_eq(pruned, OLD_BLOCK + WAIT_BLOCK);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject IN"
                                     " ('it.ret.old', 'it.ret.wait')"),
                     0);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject = 'it.ret.dead'"),
                     DEAD_BLOCK);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject = 'it.ret.late'"),
                     LATE_BLOCK);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject = 'it.ret.young'"),
                     100);
    PQfinish(conn);
}
END_TEST

/* A round that finds nothing (a week of young rows, far more than a window) reads one window of
 * the primary key, and its summary ends the pass there. */
START_TEST(test_round_that_finds_nothing_reads_one_window)
{
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, created_at, published_at, stream_seq)"
                     " SELECT 'it.ret.young', 'published', now() - g * interval '20 seconds',"
                     " now() - g * interval '20 seconds', g FROM generate_series(1, 20000) g");
    struct relay_config cfg;
    it_relay_config(&cfg, (const char *[]){"--retention-batch", "2000", "--retention", "7d", NULL});
    char *sql = retention_build_sql(&cfg), *probe = retention_build_probe_sql(&cfg);
    ck_assert(sql != NULL && probe != NULL);
    long read = pkey_rows_read(conn, sql, FIRST_ID);
    ck_assert_msg(read > 0 && read <= 2000, "the delete read %ld rows of the primary key", read);
    read = pkey_rows_read(conn, probe, FIRST_ID);
    ck_assert_msg(read > 0 && read <= 2000, "the probe read %ld rows of the primary key", read);
    /* Nothing deleted; the window's summary: 2000 rows, one created after the cutoff. */
    PQclear(it_pg_query(conn, "%s", outbox_session_sql));
    it_pg_exec(conn, "PREPARE deleting(bigint, int, bigint) AS %s", sql);
    it_pg_exec(conn, "PREPARE probing(bigint, int, bigint) AS %s", probe);
    PGresult *res = it_pg_query(conn, "EXECUTE deleting(604800, 2000, %s)", FIRST_ID);
    ck_assert_int_eq(PQntuples(res), 0);
    PQclear(res);
    res = it_pg_query(conn, "EXECUTE probing(604800, 2000, %s)", FIRST_ID);
    ck_assert_int_eq(PQntuples(res), 1);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "2000");
    ck_assert_str_eq(PQgetvalue(res, 0, 2), "t");
    PQclear(res);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox"), 20000);
    free(sql);
    free(probe);
    config_free(&cfg);
    PQfinish(conn);
}
END_TEST

/* The alternative for high volume: partitions by id range, dropped whole. */
START_TEST(test_relay_drains_a_partitioned_outbox_and_survives_a_dropped_partition)
{
    const char *subjects[] = {"it.part.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "CREATE TABLE outbox_p (" IT_OUTBOX_COLUMNS_SQL ") PARTITION BY RANGE (id);"
               "CREATE TABLE outbox_p_1 PARTITION OF outbox_p FOR VALUES FROM (MINVALUE) TO (5001);"
               "CREATE TABLE outbox_p_2 PARTITION OF outbox_p FOR VALUES FROM (5001) TO (MAXVALUE);"
               "CREATE INDEX ON outbox_p (id) WHERE status IN ('pending', 'failed');"
               "CREATE INDEX ON outbox_p (ordering_key, id) WHERE status IN ('failed', 'dead')"
               " AND ordering_key IS NOT NULL;"
               "CREATE TRIGGER outbox_p_notify AFTER INSERT ON outbox_p FOR EACH STATEMENT"
               " EXECUTE FUNCTION outbox_notify('outbox_p')");
    it_pg_exec(conn, "INSERT INTO outbox_p (subject, payload, ordering_key)"
                     " SELECT 'it.part.' || (g %% 3), convert_to(g::text, 'UTF8'), 'k' || (g %% 7)"
                     " FROM generate_series(1, 10000) g");
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox_p_1"), 5000);
    const char *env[] = {"OUTBOX_TABLE=outbox_p", "OUTBOX_CHANNEL=outbox_p", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox_p WHERE status = 'published'",
                                    10000, 60000),
                     10000);
    /* Retention by partition: detach and drop the first, under the running relay. */
    it_pg_exec(conn, "ALTER TABLE outbox_p DETACH PARTITION outbox_p_1; DROP TABLE outbox_p_1");
    it_pg_exec(conn, "INSERT INTO outbox_p (subject, payload) SELECT 'it.part.late',"
                     " convert_to(g::text, 'UTF8') FROM generate_series(1, 100) g");
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox_p WHERE status = 'published'",
                                    5100, 30000),
                     5100);
    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, 10100, &msgs);
    it_msgs_free(&msgs);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("retention");
    TCase *tc = it_tcase(suite, "retention", it_start_servers, 180);
    tcase_add_test(tc, test_retention_prunes_only_old_published_rows_during_a_drain);
    tcase_add_test(tc, test_retention_walks_past_dead_late_and_unfinished_rows);
    tcase_add_test(tc, test_round_that_finds_nothing_reads_one_window);
    tcase_add_test(tc, test_relay_drains_a_partitioned_outbox_and_survives_a_dropped_partition);
    return run_suite(suite);
}
