/* `outbox-relay migrate`: a custom table and channel in an empty database, idempotence, versions.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pg/migrate.h"
#include "run_suite.h"

#define STREAM "IT_MIGRATE"

static char url_env[256];

static PGconn *connect_empty(void)
{
    PGconn *c = PQconnectdb(url_env + strlen("OUTBOX_PG_URL="));
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    return c;
}

/* Object ids of everything in schema shop: a DROP + CREATE would change them. */
static char *catalog_fingerprint(PGconn *c)
{
    PGresult *r = it_pg_query(
        c, "SELECT (SELECT string_agg(oid::text || ':' || relname, ',' ORDER BY relname)"
           " FROM pg_class WHERE relnamespace = 'shop'::regnamespace) || '|' ||"
           " (SELECT string_agg(oid::text || ':' || tgname, ',' ORDER BY tgname) FROM pg_trigger"
           "  WHERE tgrelid = 'shop.events'::regclass) || '|' ||"
           " (SELECT string_agg(oid::text || ':' || proname, ',' ORDER BY proname) FROM pg_proc"
           "  WHERE pronamespace = 'shop'::regnamespace)");
    char *s = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return s;
}

static bool leader_elected(void *conn)
{
    return it_pg_relay_lock_holders(conn) == 1;
}

START_TEST(test_migrate_custom_names_then_relay_then_noop)
{
    PGconn *admin = it_pg_connect();
    it_pg_exec(admin, "CREATE DATABASE empty");
    snprintf(url_env, sizeof(url_env), "OUTBOX_PG_URL=postgresql://postgres@127.0.0.1:%d/empty",
             it_pg_port());
    const char *env[] = {url_env, "OUTBOX_TABLE=shop.events", "OUTBOX_CHANNEL=shop_wake", NULL};

    json_t *doc = NULL;
    const char *args[] = {"migrate", "--json", NULL};
    ck_assert_int_eq(it_relay_cmd(env, args, &doc, NULL), 0);
    ck_assert(json_is_true(json_object_get(doc, "changed")));
    ck_assert_str_eq(json_string_value(json_object_get(doc, "before")), "absent");
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), migrate_schema_version());
    json_decref(doc);

    PGconn *c = connect_empty();
    /* Everything under the configured names; nothing under the defaults. */
    ck_assert_int_eq(it_pg_int(c, "SELECT count(*) FROM pg_class WHERE relname LIKE 'outbox%%'"),
                     0);
    ck_assert_int_eq(it_pg_int(c, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'shop'"
                                  " AND indexname LIKE 'events\\_%%'"),
                     6); /* pkey + 5 */
    ck_assert_int_eq(it_pg_int(c,
                               "SELECT count(*) FROM pg_class WHERE oid = 'shop.events'::regclass"
                               " AND 'fillfactor=50' = ANY (reloptions)"),
                     1);
    ck_assert_int_eq(it_pg_int(c, "SELECT count(*) FROM pg_proc WHERE pronamespace ="
                                  " 'shop'::regnamespace AND proname LIKE 'events\\_%%'"),
                     5);
    /* The NOTIFY goes to the configured channel. Producers notify only while
     * a relay sleeps, holding its sleep key (class 1869574266, the table's
     * oid): a second session plays that relay. */
    PGconn *sleeper = connect_empty();
    it_pg_exec(sleeper, "SELECT pg_advisory_lock(1869574266, 'shop.events'::regclass::oid::int4)");
    it_pg_exec(c, "LISTEN shop_wake");
    it_pg_exec(c, "SELECT shop.events_enqueue('it.migrate.probe', '{\"n\": 0}')");
    PQfinish(sleeper);
    PQconsumeInput(c);
    PGnotify *note = PQnotifies(c);
    ck_assert_ptr_nonnull(note);
    ck_assert_str_eq(note->relname, "shop_wake");
    PQfreemem(note);
    it_pg_exec(c, "UNLISTEN *");
    it_pg_exec(c, "DELETE FROM shop.events");

    /* Re-running is a no-op: same objects (no DROP/CREATE), "nothing to do". */
    char *before = catalog_fingerprint(c);
    char *out = NULL;
    const char *text_args[] = {"migrate", NULL};
    ck_assert_int_eq(it_relay_cmd(env, text_args, NULL, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "is current; nothing to do"));
    free(out);
    char *after = catalog_fingerprint(c);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);

    /* The relay relays through it, woken by the custom channel (the poll is a minute). */
    const char *subjects[] = {"it.migrate.>", NULL};
    it_js_add_stream(STREAM, subjects);
    const char *relay_env[] = {url_env, "OUTBOX_TABLE=shop.events", "OUTBOX_CHANNEL=shop_wake",
                               "OUTBOX_POLL_INTERVAL_MS=60000", NULL};
    struct it_relay *relay = it_relay_start(relay_env, NULL);
    ck_assert(it_wait_until(leader_elected, c, 15000));
    it_pg_exec(c, "SELECT shop.events_enqueue('it.migrate.' || g, jsonb_build_object('n', g))"
                  " FROM generate_series(1, 50) g");
    ck_assert_int_eq(
        it_pg_wait_int(c, "SELECT count(*) FROM shop.events WHERE status = 'published'", 50, 10000),
        50);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), 50);
    it_relay_stop(relay);

    /* --force applies again over live data without losing it. */
    const char *force[] = {"migrate", "--force", NULL};
    ck_assert_int_eq(it_relay_cmd(env, force, NULL, NULL), 0);
    ck_assert_int_eq(it_pg_int(c, "SELECT count(*) FROM shop.events"), 50);
    PQfinish(c);
    PQfinish(admin);
}
END_TEST

START_TEST(test_schema_version_check)
{
    PGconn *c = it_pg_connect();
    struct relay_config cfg = {.table = "outbox", .channel = "outbox"};
    char msg[256];
    /* The harness applied sql/ with psql: that records the version too. */
    ck_assert_int_eq(migrate_check_version(c, &cfg, msg, sizeof(msg)), MIGRATE_CURRENT);
    fprintf(stderr, "%s\n", msg);
    const char *args[] = {"migrate", NULL};
    char *out = NULL;
    ck_assert_int_eq(it_relay_cmd(NULL, args, NULL, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "nothing to do"));
    free(out);

    it_pg_exec(c, "COMMENT ON TABLE outbox IS 'Transactional outbox; schema version 0'");
    ck_assert_int_eq(migrate_check_version(c, &cfg, msg, sizeof(msg)), MIGRATE_OLDER);
    fprintf(stderr, "%s\n", msg);
    it_pg_exec(c, "COMMENT ON TABLE outbox IS NULL");
    ck_assert_int_eq(migrate_check_version(c, &cfg, msg, sizeof(msg)), MIGRATE_UNMARKED);
    fprintf(stderr, "%s\n", msg);
    json_t *doc = NULL;
    const char *json_args[] = {"migrate", "--json", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, json_args, &doc, NULL), 0);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "before")), "unmarked");
    json_decref(doc);
    ck_assert_int_eq(migrate_check_version(c, &cfg, msg, sizeof(msg)), MIGRATE_CURRENT);

    struct relay_config missing = {.table = "nope", .channel = "outbox"};
    ck_assert_int_eq(migrate_check_version(c, &missing, msg, sizeof(msg)), MIGRATE_NO_TABLE);
    fprintf(stderr, "%s\n", msg);
    /* 3: PostgreSQL unreachable. */
    char url[128];
    snprintf(url, sizeof(url), "OUTBOX_PG_URL=postgresql://postgres@127.0.0.1:%d/x",
             it_free_port());
    const char *env[] = {url, NULL};
    ck_assert_int_eq(it_relay_cmd(env, args, NULL, NULL), 3);
    PQfinish(c);
}
END_TEST

/* A table made at schema version 4, with its index on published_at, rows in it: migrate drops the
 * index (every published mark wrote an entry in it), leaves half of each new page to the marks
 * (fillfactor 50), keeps the rows, records version 5. */
START_TEST(test_version_4_table_carried_forward)
{
    PGconn *c = it_pg_connect();
    struct relay_config cfg = {.table = "outbox", .channel = "outbox"};
    char msg[256];
    it_pg_exec(c, "CREATE INDEX outbox_published_at_idx ON outbox (published_at)"
                  " WHERE status = 'published'");
    it_pg_exec(c, "COMMENT ON TABLE outbox IS 'Transactional outbox relayed to NATS JetStream by"
                  " outbox-relay; schema version 4'");
    it_pg_exec(c, "INSERT INTO outbox (subject, status, published_at, stream_seq)"
                  " SELECT 'it.migrate.v4', 'published', now(), g FROM generate_series(1, 10) g");
    ck_assert_int_eq(migrate_check_version(c, &cfg, msg, sizeof(msg)), MIGRATE_OLDER);

    json_t *doc = NULL;
    const char *args[] = {"migrate", "--json", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, args, &doc, NULL), 0);
    ck_assert(json_is_true(json_object_get(doc, "changed")));
    ck_assert_str_eq(json_string_value(json_object_get(doc, "before")), "older");
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version_before")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), 5);
    json_decref(doc);

    ck_assert_int_eq(it_pg_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'outbox'"
                                  " AND indexname = 'outbox_published_at_idx'"),
                     0);
    ck_assert_int_eq(it_pg_int(c, "SELECT count(*) FROM outbox WHERE subject = 'it.migrate.v4'"),
                     10);
    ck_assert_int_eq(it_pg_int(c, "SELECT count(*) FROM pg_class WHERE oid = 'outbox'::regclass"
                                  " AND 'fillfactor=50' = ANY (reloptions)"),
                     1);
    ck_assert_int_eq(migrate_check_version(c, &cfg, msg, sizeof(msg)), MIGRATE_CURRENT);
    ck_assert_int_eq(migrate_schema_version(), 5);
    PQfinish(c);
}
END_TEST

/*
 * A partitioned outbox (docs/operations.md, "Very high volume: partitions"): a
 * partitioned table takes no fillfactor of its own, so migrate gives it to
 * each leaf partition, and carries the table forward like any other.
 */
START_TEST(test_partitioned_table_migrated)
{
    PGconn *c = it_pg_connect();
    it_pg_exec(c, "CREATE TABLE parted (" IT_OUTBOX_COLUMNS_SQL ") PARTITION BY RANGE (id);"
                  "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (MINVALUE) TO (1001);"
                  "CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (1001) TO (MAXVALUE)");
    const char *env[] = {"OUTBOX_TABLE=parted", "OUTBOX_CHANNEL=parted", NULL};
    const char *args[] = {"migrate", "--json", NULL};
    json_t *doc = NULL;
    char *output = NULL;
    int code = it_relay_cmd(env, args, &doc, &output);
    ck_assert_msg(code == 0, "migrate of a partitioned table exited %d: %s", code,
                  output ? output : "");
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), migrate_schema_version());
    json_decref(doc);
    free(output);
    ck_assert_int_eq(it_pg_int(c,
                               "SELECT count(*) FROM pg_class WHERE relname IN"
                               " ('parted_1', 'parted_2') AND 'fillfactor=50' = ANY (reloptions)"),
                     2);
    it_pg_exec(c, "INSERT INTO parted (subject) VALUES ('it.migrate.parted')");
    PQfinish(c);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cmd_migrate");
    TCase *tc = it_tcase(suite, "cmd_migrate", it_start_servers, 120);
    tcase_add_test(tc, test_migrate_custom_names_then_relay_then_noop);
    tcase_add_test(tc, test_schema_version_check);
    tcase_add_test(tc, test_version_4_table_carried_forward);
    tcase_add_test(tc, test_partitioned_table_migrated);
    return run_suite(suite);
}
