/*
 * The relay's statements carry a comment naming their kind, which
 * pg_stat_statements keeps; where the extension is loaded, /metrics exports
 * the WAL each kind wrote (outbox_relay_pg_wal_bytes_total). Without it, or
 * when reading it fails, the families are absent, one log line says why,
 * and the relay relays as before.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/lib/log_events.h"
#include "prom_text.h"
#include "run_suite.h"

#define STREAM "IT_WAL"
#define ROWS   60

#define WAL_BYTES "outbox_relay_pg_wal_bytes_total"
#define WAL_CALLS "outbox_relay_pg_wal_statements_total"

static struct it_scrape scraped;

static void scrape(int port)
{
    it_scrape_metrics(port, &scraped);
}

static bool has_family(const char *name)
{
    return prom_family_find(&scraped.e, name) != NULL;
}

static double by_kind(const char *family, const char *kind)
{
    return prom_sample_get(&scraped.e, family, "kind", kind)->value;
}

static void with_pg_stat_statements(void)
{
    it_pg_add_setting("shared_preload_libraries=pg_stat_statements");
    it_start_servers();
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE EXTENSION pg_stat_statements");
    PQfinish(conn);
}

static struct it_relay *start_relay_with(const char *extra)
{
    const char *subjects[] = {"it.wal.>", NULL};
    it_js_add_stream(STREAM, subjects);
    const char *env[] = {"OUTBOX_METRICS_INTERVAL_MS=100", extra, NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert(it_wait_metric(relay->http_port, "outbox_relay_leader", 1, 10000));
    return relay;
}

static struct it_relay *start_relay(void)
{
    return start_relay_with(NULL);
}

/* Rows one INSERT at a time, then every one published (marked) so far. */
static void relay_rows(PGconn *conn, int first, int n)
{
    for (int i = first; i < first + n; i++)
        it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.wal.row', '%d')", i);
    ck_assert_int_eq(it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'",
                                    first + n - 1, 20000),
                     first + n - 1);
}

/* The messages logged with this "msg" (a LOG_MSG_* constant). */
static int logged_times(const struct it_relay *relay, const char *msg)
{
    char field[256];
    snprintf(field, sizeof field, "\"msg\":\"%s\"", msg);
    char *log = it_relay_log(relay);
    int n = 0;
    for (const char *p = log; (p = strstr(p, field)) != NULL; p++)
        n++;
    free(log);
    return n;
}

struct wal_wait {
    int port;
    double above; /* mark's WAL bytes must exceed this */
};

static bool mark_wal_above(void *arg)
{
    struct wal_wait *w = arg;
    scrape(w->port);
    return has_family(WAL_BYTES) && by_kind(WAL_BYTES, "mark") > w->above;
}

static double mark_wal_after(int port, double above)
{
    struct wal_wait w = {port, above};
    ck_assert_msg(it_wait_until(mark_wal_above, &w, 20000), "%s{kind=mark} never above %g",
                  WAL_BYTES, above);
    return by_kind(WAL_BYTES, "mark");
}

START_TEST(test_statements_carry_their_kind)
{
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = start_relay();
    relay_rows(conn, 1, ROWS);
    /* What a DBA sees: the relay's marks and claims, named, in pg_stat_statements... */
    ck_assert_int_ge(it_pg_int(conn, "SELECT count(*) FROM pg_stat_statements"
                                     " WHERE query LIKE '/* outbox-relay mark */ UPDATE %%'"),
                     1);
    ck_assert_int_ge(it_pg_int(conn, "SELECT count(*) FROM pg_stat_statements"
                                     " WHERE query LIKE '/* outbox-relay claim */ %%'"),
                     1);
    ck_assert_int_ge(it_pg_int(conn, "SELECT count(*) FROM pg_stat_statements"
                                     " WHERE query LIKE '/* outbox-relay lock */ %%'"),
                     1);
    /* ...and in pg_stat_activity, every session of the relay, whatever it ran last. */
    ck_assert_int_ge(it_pg_int(conn, "SELECT count(*) FROM pg_stat_activity"
                                     " WHERE application_name = 'outbox-relay'"),
                     1);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM pg_stat_activity"
                                     " WHERE application_name = 'outbox-relay'"
                                     " AND query NOT LIKE '/* outbox-relay %% */ %%'"),
                     0);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

START_TEST(test_mark_wal_exported_and_growing)
{
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = start_relay();
    int port = relay->http_port;
    relay_rows(conn, 1, ROWS);
    double first = mark_wal_after(port, 0);
    ck_assert(by_kind(WAL_CALLS, "mark") >= 1);
    double calls = by_kind(WAL_CALLS, "mark");
    fprintf(stderr, "%d rows: marks wrote %g bytes of WAL in %g statements\n", ROWS, first, calls);

    relay_rows(conn, ROWS + 1, ROWS);
    double second = mark_wal_after(port, first);
    ck_assert(by_kind(WAL_CALLS, "mark") > calls);
    ck_assert_int_eq(logged_times(relay, LOG_MSG_STATEMENT_WAL_UNAVAILABLE), 0);
    fprintf(stderr, "%d rows: %g bytes\n", 2 * ROWS, second);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* A relay role with the example grants only: pg_stat_statements shows it its own statements. */
START_TEST(test_unprivileged_role_reads_its_own)
{
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE ROLE wal_relay LOGIN IN ROLE outbox_relay");
    char url[256];
    snprintf(url, sizeof url, "OUTBOX_PG_URL=postgresql://wal_relay@127.0.0.1:%d/%s", it_pg_port(),
             PQdb(conn));
    struct it_relay *relay = start_relay_with(url);
    relay_rows(conn, 1, ROWS);
    mark_wal_after(relay->http_port, 0);
    ck_assert_int_eq(logged_times(relay, LOG_MSG_STATEMENT_WAL_UNAVAILABLE), 0);
    ck_assert_int_eq(logged_times(relay, LOG_MSG_STATEMENT_WAL_FAILED), 0);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

struct samples_wait {
    int port;
    double want;
};

static bool samples_reached(void *arg)
{
    struct samples_wait *w = arg;
    scrape(w->port);
    return by_kind("outbox_relay_pg_statements_total", "sample") >= w->want;
}

/* At least `n` more of the relay's sample statements, its WAL reads among them. */
static void wait_samples(int port, int n)
{
    scrape(port);
    struct samples_wait w = {port, by_kind("outbox_relay_pg_statements_total", "sample") + n};
    ck_assert(it_wait_until(samples_reached, &w, 20000));
}

/* The extension dropped under a running relay: the read fails, once logged; relaying goes on. */
START_TEST(test_failing_read_disturbs_nothing)
{
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = start_relay();
    int port = relay->http_port;
    relay_rows(conn, 1, ROWS);
    mark_wal_after(port, 0);

    it_pg_exec(conn, "DROP EXTENSION pg_stat_statements");
    ck_assert(it_relay_wait_logged(relay, LOG_MSG_STATEMENT_WAL_FAILED, 1, 20000));
    relay_rows(conn, ROWS + 1, ROWS);
    wait_samples(port, 10);
    ck_assert(!has_family(WAL_BYTES));
    ck_assert(!has_family(WAL_CALLS));
    ck_assert_int_eq(logged_times(relay, LOG_MSG_STATEMENT_WAL_FAILED), 1);
    ck_assert_double_eq(by_kind("outbox_relay_pg_statement_errors_total", "mark"), 0);
    ck_assert_double_eq(by_kind("outbox_relay_pg_statement_errors_total", "claim"), 0);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* No pg_stat_statements: no WAL families, one line saying why, rows relayed as ever. */
START_TEST(test_without_extension_absent)
{
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = start_relay();
    int port = relay->http_port;
    relay_rows(conn, 1, ROWS);
    ck_assert(it_relay_wait_logged(relay, LOG_MSG_STATEMENT_WAL_UNAVAILABLE, 1, 20000));
    wait_samples(port, 10);
    ck_assert(!has_family(WAL_BYTES));
    ck_assert(!has_family(WAL_CALLS));
    ck_assert_int_eq(logged_times(relay, LOG_MSG_STATEMENT_WAL_UNAVAILABLE), 1);
    ck_assert_int_eq(logged_times(relay, LOG_MSG_STATEMENT_WAL_FAILED), 0);
    ck_assert_double_eq(by_kind("outbox_relay_pg_statement_errors_total", "sample"), 0);
    ck_assert_double_eq(by_kind("outbox_relay_pg_statement_rows_total", "mark"), ROWS);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("statement_wal");
    TCase *with = it_tcase(suite, "with_pg_stat_statements", with_pg_stat_statements, 120);
    tcase_add_test(with, test_statements_carry_their_kind);
    tcase_add_test(with, test_mark_wal_exported_and_growing);
    tcase_add_test(with, test_unprivileged_role_reads_its_own);
    tcase_add_test(with, test_failing_read_disturbs_nothing);
    TCase *without = it_tcase(suite, "without_pg_stat_statements", it_start_servers, 120);
    tcase_add_test(without, test_without_extension_absent);
    return run_suite(suite);
}
