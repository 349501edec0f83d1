/* Retention: only old published rows go, in batches, while a drain runs; a partitioned outbox. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "harness.h"
#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/pg_source.h"
#include "outbox_relay/pg/retention.h"
#include "run_suite.h"

#define STREAM "IT_RETENTION"
#define OLD    20000 /* published 10 days ago */
#define DRAIN  20000 /* pending, drained by the relay meanwhile */

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
    bool whole_batches; /* every total seen was a multiple of the batch */
};

static void on_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct watch *wt = w->data;
    uint64_t pruned = retention_pruned_total(wt->r);
    wt->whole_batches = wt->whole_batches && pruned % 2000 == 0;
    if (pruned >= wt->want)
        ev_break(loop, EVBREAK_ALL);
}

static void on_give_up(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
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

    /* The statement walks the partial index on published_at, not the table. */
    struct relay_config cfg;
    it_relay_config(&cfg, (const char *[]){"--retention-batch", "2000", "--retention", "7d",
                                           "--retention-interval-ms", "100", NULL});
    char *sql = retention_build_sql(&cfg);
    ck_assert_ptr_nonnull(sql);
    /* The statement with its parameters in place, for EXPLAIN. */
    char explain[1200];
    const char *p1 = strstr(sql, "$1::bigint"), *p2 = strstr(sql, "$2::int");
    ck_assert(p1 && p2 && p1 < p2);
    snprintf(explain, sizeof(explain), "EXPLAIN (COSTS OFF) %.*s604800%.*s2000%s", (int)(p1 - sql),
             sql, (int)(p2 - p1 - 2), p1 + 2, p2 + 2);
    PGresult *plan = it_pg_query(conn, "%s", explain);
    bool uses_index = false, by_pkey = false, seq_scan = false;
    for (int i = 0; i < PQntuples(plan); i++) {
        const char *line = PQgetvalue(plan, i, 0);
        fprintf(stderr, "plan: %s\n", line);
        uses_index = uses_index || strstr(line, "outbox_published_at_idx");
        by_pkey = by_pkey || strstr(line, "outbox_pkey");
        seq_scan = seq_scan || strstr(line, "Seq Scan");
    }
    PQclear(plan);
    ck_assert_msg(uses_index, "the retention statement does not use outbox_published_at_idx");
    ck_assert_msg(by_pkey && !seq_scan, "the delete does not find its rows by the primary key");
    ck_assert_ptr_nonnull(strstr(sql, "ORDER BY published_at LIMIT $2::int"));
    free(sql);

    /* A drain runs meanwhile. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.ret.new.' || (g %% 5), convert_to(g::text, 'UTF8'),"
               " 'k' || (g %% 50) FROM generate_series(1, %d) g",
               DRAIN);
    struct it_relay *relay = it_relay_start(NULL, NULL);
    ck_assert(it_wait_until(drain_under_way, conn, 30000));

    /* The module itself, on a loop, on a connection of its own. */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct retention *r = NULL;
    char err[256];
    struct pg_source *pg = pg_source_create(loop, &cfg,
                                            (struct pg_source_events){.connected = on_pg_connected,
                                                                      .disconnected = on_pg_down,
                                                                      .notified = on_pg_notified,
                                                                      .fatal = on_pg_down,
                                                                      .arg = &r},
                                            err, sizeof(err));
    ck_assert_msg(pg != NULL, "pg_source_create: %s", err);
    r = retention_create(loop, &cfg, pg, err, sizeof(err));
    ck_assert_msg(r != NULL, "retention_create: %s", err);
    pg_source_start(pg);
    struct watch w = {.r = r, .want = OLD, .whole_batches = true};
    ev_timer_init(&w.timer, on_watch, 0.05, 0.05);
    w.timer.data = &w;
    ev_timer_start(loop, &w.timer);
    ev_timer stop_anyway;
    ev_timer_init(&stop_anyway, on_give_up, 30., 0.);
    ev_timer_start(loop, &stop_anyway);
    retention_set_leader(r, true);
    int64_t t0 = it_now_ms();
    ev_run(loop, 0);
    int64_t took = it_now_ms() - t0;
    fprintf(stderr, "retention: %llu rows in %lld ms, while the relay drained\n",
            (unsigned long long)retention_pruned_total(r), (long long)took);
    ck_assert_int_eq(retention_pruned_total(r), OLD);
    ck_assert_msg(w.whole_batches, "rows were pruned in other amounts than whole batches of 2000");
    retention_set_leader(r, false);
    pg_source_destroy(pg); /* before retention: a queued statement calls back as it is dropped */
    retention_destroy(r);
    ev_loop_destroy(loop);
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

/* The alternative for high volume: partitions by id range, dropped whole. */
START_TEST(test_relay_drains_a_partitioned_outbox_and_survives_a_dropped_partition)
{
    const char *subjects[] = {"it.part.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "CREATE TABLE outbox_p ("
               " id bigint GENERATED BY DEFAULT AS IDENTITY,"
               " event_id text NOT NULL DEFAULT gen_random_uuid()::text,"
               " subject text NOT NULL, payload bytea NOT NULL DEFAULT '\\x'::bytea,"
               " headers jsonb NOT NULL DEFAULT '{}'::jsonb, ordering_key text,"
               " created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
               " status text NOT NULL DEFAULT 'pending', attempts integer NOT NULL DEFAULT 0,"
               " next_attempt_at timestamptz, last_error text, published_at timestamptz,"
               " stream_seq bigint, PRIMARY KEY (id)) PARTITION BY RANGE (id);"
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
    tcase_add_test(tc, test_relay_drains_a_partitioned_outbox_and_survives_a_dropped_partition);
    return run_suite(suite);
}
