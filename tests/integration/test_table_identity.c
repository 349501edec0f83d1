/* One table, one leader, whatever its spelling; names as long as PostgreSQL allows. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pg/outbox_table.h"
#include "run_suite.h"

#define ROWS 200

static const char *const http_env_base[] = {
    "OUTBOX_LEADER_RETRY_MS=200",
    "OUTBOX_POLL_INTERVAL_MS=200",
    "OUTBOX_METRICS_INTERVAL_MS=100",
};

struct pair {
    int leader_port, other_port;
};

/* The second relay has made up its mind: it leads, or it has looked at the holder. */
static bool second_relay_decided(void *arg)
{
    struct pair *p = arg;
    if (it_metric(p->other_port, "outbox_relay_pg_connected") != 1 ||
        it_metric(p->other_port, "outbox_relay_nats_connected") != 1)
        return false;
    double silent = it_metric(p->other_port, "outbox_relay_leader_silent_seconds");
    return it_metric(p->other_port, "outbox_relay_leader") == 1 || (silent != 0 && silent != -1);
}

START_TEST(test_two_spellings_of_one_table_elect_one_leader)
{
    const char *subjects[] = {"it.ident.>", NULL};
    it_js_add_stream("IT_IDENT", subjects);
    PGconn *conn = it_pg_connect();
    const char *env_a[] = {http_env_base[0], http_env_base[1], http_env_base[2],
                           "OUTBOX_TABLE=outbox", NULL};
    const char *env_b[] = {http_env_base[0], http_env_base[1], http_env_base[2],
                           "OUTBOX_TABLE=public.outbox", NULL};
    struct it_relay *a = it_relay_start_http(env_a, NULL);
    ck_assert_msg(it_wait_metric(a->http_port, "outbox_relay_leader", 1, 20000),
                  "the first relay did not lead");
    struct it_relay *b = it_relay_start_http(env_b, NULL);
    struct pair p = {a->http_port, b->http_port};
    ck_assert_msg(it_wait_until(second_relay_decided, &p, 20000),
                  "the second relay neither led nor saw the leader");

    ck_assert_int_eq(it_pg_relay_lock_holders(conn), 1);
    ck_assert_int_eq(it_metric(a->http_port, "outbox_relay_leader"), 1);
    ck_assert_int_eq(it_metric(b->http_port, "outbox_relay_leader"), 0);

    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.ident.' || g,"
               " convert_to(g::text, 'UTF8') FROM generate_series(1, %d) g",
               ROWS);
    ck_assert_int_eq(it_pg_wait_published(conn, ROWS, 30000), ROWS);
    it_assert_each_row_once(conn, "IT_IDENT", ROWS);
    ck_assert_msg(it_metric(b->http_port, "outbox_relay_published_total") == 0,
                  "the relay of the other spelling published too");
    ck_assert_int_eq(it_pg_relay_lock_holders(conn), 1);
    it_relay_stop(b);
    it_relay_stop(a);
    PQfinish(conn);
}
END_TEST

/* 63 characters: PostgreSQL's longest identifier (NAMEDATALEN - 1). */
#define LONG_SCHEMA  "s23456789_123456789_123456789_123456789_123456789_123456789_123"
#define LONG_TABLE   "t23456789_123456789_123456789_123456789_123456789_123456789_123"
#define LONG_CHANNEL "c23456789_123456789_123456789_123456789_123456789_123456789_123"

START_TEST(test_maximal_names_are_migrated_and_relayed)
{
    ck_assert_int_eq(strlen(LONG_SCHEMA), 63);
    ck_assert_int_eq(strlen(LONG_TABLE), 63);
    ck_assert_int_eq(strlen(LONG_CHANNEL), 63);
    const char *subjects[] = {"it.long.>", NULL};
    it_js_add_stream("IT_LONG", subjects);
    PGconn *conn = it_pg_connect();
    const char *env[] = {http_env_base[0],
                         http_env_base[1],
                         http_env_base[2],
                         "OUTBOX_TABLE=" LONG_SCHEMA "." LONG_TABLE,
                         "OUTBOX_CHANNEL=" LONG_CHANNEL,
                         NULL};
    const char *migrate[] = {"migrate", NULL};
    ck_assert_int_eq(it_relay_cmd(env, migrate, NULL, NULL), 0);
    /* Every object the migration made for the table, and its NOTIFY channel. */
    ck_assert_int_eq(it_pg_int(conn,
                               "SELECT count(*) FROM pg_indexes WHERE schemaname = '%s'"
                               " AND tablename = '%s'",
                               LONG_SCHEMA, LONG_TABLE),
                     it_pg_int(conn, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"
                                     " AND tablename = 'outbox'"));
    ck_assert_int_eq(
        it_pg_int(conn,
                  "SELECT count(*) FROM pg_trigger WHERE tgrelid = '\"%s\".\"%s\"'::regclass"
                  " AND NOT tgisinternal AND tgargs = convert_to('%s', 'UTF8') || '\\x00'::bytea",
                  LONG_SCHEMA, LONG_TABLE, LONG_CHANNEL),
        1);

    struct it_relay *r = it_relay_start_http(env, NULL);
    ck_assert_msg(it_wait_metric(r->http_port, "outbox_relay_leader", 1, 20000),
                  "no relay leads the table of maximal names");
    ck_assert_int_eq(it_pg_relay_lock_holders(conn), 1);
    it_pg_exec(conn,
               "INSERT INTO \"%s\".\"%s\" (subject, payload) SELECT 'it.long.' || g,"
               " convert_to(g::text, 'UTF8') FROM generate_series(1, %d) g",
               LONG_SCHEMA, LONG_TABLE, ROWS);
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM \"" LONG_SCHEMA "\".\"" LONG_TABLE
                                    "\" WHERE status = 'published'",
                                    ROWS, 30000),
                     ROWS);
    ck_assert_int_eq(it_js_stream_msgs("IT_LONG"), ROWS);

    json_t *doc = NULL;
    const char *status[] = {"status", "--json", NULL};
    ck_assert_int_eq(it_relay_cmd(env, status, &doc, NULL), 0);
    ck_assert_ptr_nonnull(doc);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(doc, "counts"), "published")), ROWS);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(doc, "leader"), "pid")),
                     it_pg_int(conn, "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a"
                                     " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                                     " AND l.classid = " OUTBOX_CLASS_SQL(
                                         OUTBOX_LOCK_CLASS) " AND a.application_name = "
                                                            "'outbox-relay'"));
    json_decref(doc);

    const char *check[] = {"--check", NULL};
    char *out = NULL;
    ck_assert_msg(it_relay_run(env, check, 30000, &out) == 0, "--check failed: %s", out);
    free(out);
    it_relay_stop(r);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("table_identity");
    TCase *tc = it_tcase(suite, "table_identity", it_start_servers, 120);
    tcase_add_test(tc, test_two_spellings_of_one_table_elect_one_leader);
    tcase_add_test(tc, test_maximal_names_are_migrated_and_relayed);
    return run_suite(suite);
}
