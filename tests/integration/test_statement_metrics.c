/* /metrics: the relay's statements by kind (count, time, rows) move as the statements run. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "prom_text.h"
#include "relay_families.h"
#include "run_suite.h"

#define STREAM "IT_STATEMENTS"
#define ROWS   120 /* relayed, one INSERT each while the relay runs */
#define OLD    20  /* published rows a week old: retention prunes them */

static struct it_scrape scraped;

static void scrape(int port)
{
    it_scrape_metrics(port, &scraped);
}

/* One family's sample for one kind, from the last scrape. */
static double by_kind(const char *family, const char *kind)
{
    return prom_sample_get(&scraped.e, family, "kind", kind)->value;
}

struct kind_wait {
    int port;
    const char *family, *kind;
    double want;
};

static bool kind_reached(void *arg)
{
    struct kind_wait *w = arg;
    scrape(w->port);
    return by_kind(w->family, w->kind) >= w->want;
}

static void wait_kind(int port, const char *family, const char *kind, double want)
{
    struct kind_wait w = {port, family, kind, want};
    ck_assert_msg(it_wait_until(kind_reached, &w, 20000), "%s{kind=%s} is %g, want %g", family,
                  kind, by_kind(family, kind), want);
}

static struct it_relay *start_relay_with(const char *extra)
{
    const char *subjects[] = {"it.statements.>", NULL};
    it_js_add_stream(STREAM, subjects);
    const char *env[] = {"OUTBOX_METRICS_INTERVAL_MS=100", "OUTBOX_RETENTION=7d",
                         "OUTBOX_RETENTION_INTERVAL_MS=100", extra, NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert(it_wait_metric(relay->http_port, "outbox_relay_leader", 1, 10000));
    return relay;
}

static struct it_relay *start_relay(void)
{
    return start_relay_with(NULL);
}

/* Rows one INSERT at a time, as producers commit them, while the relay relays. */
static void insert_one_by_one(PGconn *conn, int n)
{
    for (int i = 0; i < n; i++)
        it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.statements.row', '%d')",
                   i);
}

START_TEST(test_every_kind_counted)
{
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, status, published_at, stream_seq, created_at)"
               " SELECT 'it.statements.old', 'published', now() - interval '8 days', g,"
               " now() - interval '8 days' FROM generate_series(1, %d) AS g",
               OLD);
    struct it_relay *relay = start_relay();
    int port = relay->http_port;
    const char *calls = "outbox_relay_pg_statements_total";
    const char *rows = "outbox_relay_pg_statement_rows_total";
    const char *seconds = "outbox_relay_pg_statement_seconds_total";
    const char *errors = "outbox_relay_pg_statement_errors_total";

    /* Leadership, the first sweep, the sample and the pruning ran before any row came. */
    wait_kind(port, rows, "retention", OLD);
    wait_kind(port, calls, "sample", 1);
    scrape(port);
    ck_assert(by_kind(calls, "lock") >= 1);
    ck_assert(by_kind(calls, "claim") >= 1);
    ck_assert(by_kind(rows, "sample") >= 1);
    ck_assert_double_eq(by_kind(rows, "retention"), OLD);
    ck_assert_double_eq(by_kind(calls, "mark"), 0);
    double claims_before = by_kind(calls, "claim");
    double claim_seconds_before = by_kind(seconds, "claim");

    insert_one_by_one(conn, ROWS);
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox WHERE status = 'published'"
                                    " AND subject = 'it.statements.row'",
                                    ROWS, 20000),
                     ROWS);
    /* Marks commit before the relay counts them: each published row changed by one mark. */
    wait_kind(port, rows, "mark", ROWS);
    ck_assert_double_eq(by_kind(rows, "mark"), ROWS);
    ck_assert(by_kind(calls, "mark") >= 1 && by_kind(calls, "mark") <= ROWS);
    ck_assert(by_kind(seconds, "mark") > 0);
    ck_assert(by_kind(calls, "claim") > claims_before);
    ck_assert(by_kind(seconds, "claim") > claim_seconds_before);
    ck_assert(by_kind(rows, "claim") >= ROWS);
    for (size_t k = 0; k < RELAY_STATEMENT_KINDS; k++)
        ck_assert_msg(by_kind(errors, relay_statement_kinds[k]) == 0, "errors{kind=%s} = %g",
                      relay_statement_kinds[k], by_kind(errors, relay_statement_kinds[k]));

    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/*
 * In steady flow every poll reads from id 0, so that a row that committed
 * late is found at once. Rows the relay already holds (published, their
 * mark not yet committed) are not read again: each row is claimed once.
 */
static void each_row_read_once(const char *extra)
{
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = start_relay_with(extra);
    int port = relay->http_port;
    insert_one_by_one(conn, ROWS);
    ck_assert_int_eq(
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'", ROWS, 20000),
        ROWS);
    wait_kind(port, "outbox_relay_pg_statement_rows_total", "mark", ROWS);
    double claimed = by_kind("outbox_relay_pg_statement_rows_total", "claim");
    double claims = by_kind("outbox_relay_pg_statements_total", "claim");
    fprintf(stderr, "%d rows: %g claims returned %g rows\n", ROWS, claims, claimed);
    ck_assert_double_eq(claimed, ROWS);
    it_relay_stop(relay);
    PQfinish(conn);
}

START_TEST(test_each_row_read_once_in_steady_flow)
{
    each_row_read_once(NULL);
}
END_TEST

/* A fixed pause between tail looks (latency traded for cost): every row still comes, once. */
START_TEST(test_tail_poll_pause_relays_every_row)
{
    each_row_read_once("OUTBOX_TAIL_POLL_US=3000");
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("statement_metrics");
    TCase *tc = it_tcase(suite, "statement_metrics", it_start_servers, 120);
    tcase_add_test(tc, test_every_kind_counted);
    tcase_add_test(tc, test_each_row_read_once_in_steady_flow);
    tcase_add_test(tc, test_tail_poll_pause_relays_every_row);
    return run_suite(suite);
}
