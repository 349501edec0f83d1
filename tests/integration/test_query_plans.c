/* The plans of the relay's hot-path statements (claim, marks) under the relay's session settings:
 * the same index-only shape on an empty table, on a backlog nobody analyzed and after ANALYZE, and
 * planned once per session rather than on every execution; the health sample's cost is bounded. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pipeline/claimer.h"
#include "run_suite.h"

/* Rows of the backlog: a third on 10 keys, some failed (so the hold probe has rows to find). */
#define BACKLOG 30000

struct statement {
    const char *name;
    const char *types;  /* PREPARE's parameter types */
    const char *params; /* EXECUTE's arguments */
};

static struct relay_config cfg;
static struct outbox_sql sql;

static void load_config(void)
{
    it_relay_config(&cfg, NULL);
    outbox_sql_build(&sql, &cfg, &claimer_message_limits);
}

/* Every node of a JSON plan as "Node Type[ on index]", appended to out, one per line. */
static void plan_nodes(json_t *node, char *out, size_t len)
{
    const char *type = json_string_value(json_object_get(node, "Node Type"));
    const char *index = json_string_value(json_object_get(node, "Index Name"));
    size_t used = strlen(out);
    snprintf(out + used, len - used, "%s%s%s\n", type ? type : "?", index ? " on " : "",
             index ? index : "");
    json_t *children = json_object_get(node, "Plans"), *child;
    size_t i;
    json_array_foreach(children, i, child) plan_nodes(child, out, len);
}

/* The plan the session runs for one statement, prepared afresh (as after a reconnect) and
 * executed twice; also how many of those executions were planned (custom plans). */
static void plan_of(PGconn *conn, const struct statement *st, const char *text, char *out,
                    size_t len, int64_t *custom_plans)
{
    it_pg_exec(conn, "DEALLOCATE ALL");
    it_pg_exec(conn, "PREPARE %s(%s) AS %s", st->name, st->types, text);
    it_pg_exec(conn, "BEGIN");
    PGresult *res =
        it_pg_query(conn, "EXPLAIN (FORMAT JSON, COSTS OFF) EXECUTE %s(%s)", st->name, st->params);
    PQclear(it_pg_query(conn, "EXECUTE %s(%s)", st->name, st->params));
    it_pg_exec(conn, "ROLLBACK");
    json_error_t jerr;
    json_t *doc = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
    PQclear(res);
    ck_assert_msg(doc != NULL, "EXPLAIN output: %s", jerr.text);
    out[0] = '\0';
    plan_nodes(json_object_get(json_array_get(doc, 0), "Plan"), out, len);
    json_decref(doc);
    *custom_plans = it_pg_int(
        conn, "SELECT custom_plans FROM pg_prepared_statements WHERE name = '%s'", st->name);
}

static void assert_index_only(const char *state, const char *name, const char *nodes)
{
    static const char *const banned[] = {"Seq Scan", "Sort", "Hash", "Bitmap", "Merge", NULL};
    for (int i = 0; banned[i]; i++)
        ck_assert_msg(strstr(nodes, banned[i]) == NULL, "%s, %s: plan has a %s:\n%s", state, name,
                      banned[i], nodes);
}

START_TEST(test_plans_do_not_depend_on_statistics)
{
    load_config();
    PGconn *conn = it_pg_connect();
    /* Nobody analyzes the table during the test but the test itself. */
    it_pg_exec(conn, "ALTER TABLE outbox SET (autovacuum_enabled = false)");
    /* The relay's own session settings. */
    PQclear(it_pg_query(conn, "%s", outbox_session_sql));

    const struct statement statements[] = {
        {"claim", "bigint, int, bigint, bigint, bigint[]", "0, 500, 33554432, 1048576, '{7,8}'"},
        {"mark_published", "bigint[], bigint[], bigint[]", "'{1,2,3}', '{1,2,3}', '{1,1,1}'"},
        {"mark_failed", "bigint[], text[], bigint[], text[], int[]",
         "'{4,5}', '{failed,dead}', '{100,0}', '{x,y}', '{1,0}'"},
        {"reconcile_unfinished", "int", "16000"},
        {"reconcile_marked_max", "int", "8000"},
        {"reconcile_mark", "bigint[], bigint[]", "'{6,7}', '{6,7}'"},
    };
    const char *texts[] = {sql.claim,
                           sql.mark_published,
                           sql.mark_failed,
                           sql.reconcile_unfinished,
                           sql.reconcile_marked_max,
                           sql.reconcile_mark};
    const char *states[] = {"empty, never analyzed", "backlog, never analyzed",
                            "backlog, analyzed"};
    enum { NSTATEMENTS = 6, NSTATES = 3 };
    static char plans[NSTATES][NSTATEMENTS][4096];

    for (int s = 0; s < NSTATES; s++) {
        if (s == 1) {
            /* Built the way a stopped relay's backlog is: inserts, no ANALYZE. */
            it_pg_exec(conn,
                       "INSERT INTO outbox (subject, ordering_key, payload)"
                       " SELECT 'it.plans', CASE WHEN g %% 3 = 0 THEN 'k' || (g %% 10) END,"
                       " convert_to(repeat('x', 256), 'UTF8') FROM generate_series(1, %d) g",
                       BACKLOG);
            it_pg_exec(conn, "UPDATE outbox SET status = 'failed', next_attempt_at = now()"
                             " WHERE id %% 97 = 0");
            ck_assert_int_eq(
                it_pg_int(conn, "SELECT count(*) FROM pg_stat_user_tables WHERE relname = "
                                "'outbox' AND (last_analyze IS NOT NULL OR last_autoanalyze IS "
                                "NOT NULL)"),
                0);
        } else if (s == 2) {
            it_pg_exec(conn, "ANALYZE outbox");
        }
        for (int i = 0; i < NSTATEMENTS; i++) {
            int64_t custom = -1;
            plan_of(conn, &statements[i], texts[i], plans[s][i], sizeof plans[s][i], &custom);
            assert_index_only(states[s], statements[i].name, plans[s][i]);
            /* Planned once per session, not on every execution. */
            ck_assert_msg(custom == 0, "%s, %s: %lld executions planned afresh", states[s],
                          statements[i].name, (long long)custom);
            ck_assert_msg(strcmp(plans[s][i], plans[0][i]) == 0,
                          "%s, %s: plan differs from the empty table's:\n%s\nvs\n%s", states[s],
                          statements[i].name, plans[s][i], plans[0][i]);
        }
        /* The hold probe reads the small index of failed and dead rows, not every unfinished
         * row of the key below each claimed row. */
        ck_assert_msg(strstr(plans[s][0], "outbox_held_keys_idx") != NULL,
                      "%s: the hold probe does not use outbox_held_keys_idx:\n%s", states[s],
                      plans[s][0]);
    }
    PQfinish(conn);
    config_free(&cfg);
}
END_TEST

/* The largest "Actual Rows" of any node reading index_name, in a JSON plan. */
static double most_rows_read(json_t *node, const char *index_name)
{
    const char *index = json_string_value(json_object_get(node, "Index Name"));
    double most = index != NULL && strcmp(index, index_name) == 0
                      ? json_number_value(json_object_get(node, "Actual Rows"))
                      : 0;
    json_t *children = json_object_get(node, "Plans"), *child;
    size_t i;
    json_array_foreach(children, i, child)
    {
        double n = most_rows_read(child, index_name);
        if (n > most)
            most = n;
    }
    return most;
}

/* The health sample on a backlog past its exact range: it reads a bounded number of index entries
 * (counting all took 0.2 s at 1,000,000 rows, every 5 s, on the relay's connection), and its
 * estimate of the rest is close. */
START_TEST(test_sample_cost_is_bounded)
{
    load_config();
    PGconn *conn = it_pg_connect();
    PQclear(it_pg_query(conn, "%s", outbox_session_sql));
    int64_t rows = OUTBOX_SAMPLE_EXACT + OUTBOX_SAMPLE_EXACT / 2;
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.plans', 'x'"
               " FROM generate_series(1, %lld)",
               (long long)rows);
    /* A published history below, as a relay leaves it. */
    it_pg_exec(conn, "UPDATE outbox SET status = 'published' WHERE id <= 1000");
    rows -= 1000;
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'pending'"), rows);
    PGresult *sample = it_pg_query(conn, "%s", sql.sample);
    int64_t pending = strtoll(PQgetvalue(sample, 0, 0), NULL, 10);
    PQclear(sample);
    fprintf(stderr, "sample: %lld pending rows estimated as %lld\n", (long long)rows,
            (long long)pending);
    ck_assert_int_eq(pending, rows);
    PGresult *res = it_pg_query(conn, "EXPLAIN (ANALYZE, FORMAT JSON) %s", sql.sample);
    json_error_t jerr;
    json_t *doc = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
    PQclear(res);
    ck_assert_msg(doc != NULL, "EXPLAIN output: %s", jerr.text);
    double read =
        most_rows_read(json_object_get(json_array_get(doc, 0), "Plan"), "outbox_unfinished_idx");
    json_decref(doc);
    ck_assert_msg(read <= OUTBOX_SAMPLE_EXACT, "the sample read %.0f unfinished rows", read);
    PQfinish(conn);
    config_free(&cfg);
}
END_TEST

/* The highest stream sequence marked, as reconciliation reads it (at most `marks` rows). */
static int64_t marked_max(PGconn *conn, int marks, double *read)
{
    it_pg_exec(conn, "DEALLOCATE ALL");
    it_pg_exec(conn, "PREPARE marked_max(int) AS %s", sql.reconcile_marked_max);
    int64_t max = it_pg_int(conn, "EXECUTE marked_max(%d)", marks);
    PGresult *res =
        it_pg_query(conn, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE marked_max(%d)", marks);
    json_error_t jerr;
    json_t *doc = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
    PQclear(res);
    ck_assert_msg(doc != NULL, "EXPLAIN output: %s", jerr.text);
    *read = most_rows_read(json_object_get(json_array_get(doc, 0), "Plan"), "outbox_pkey");
    json_decref(doc);
    return max;
}

/* The highest sequence marked, read by the primary key, is found with nothing waiting and below a
 * backlog far larger than the rows it reads (without an index on published_at), in bounded
 * reads. */
START_TEST(test_marked_max_found_by_the_primary_key)
{
    enum { MARKS = 200, PUBLISHED = 5000, WAITING = 30 };
    load_config();
    PGconn *conn = it_pg_connect();
    PQclear(it_pg_query(conn, "%s", outbox_session_sql));
    /* Published in id order, a few rows waiting for a retry among them. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, status, published_at, stream_seq)"
               " SELECT 'it.plans', 'published', now(), g FROM generate_series(1, %d) g",
               PUBLISHED);
    it_pg_exec(conn,
               "UPDATE outbox SET status = 'failed', stream_seq = NULL, published_at = NULL"
               " WHERE id %% 100 = 0 AND id <= %d",
               WAITING * 100);
    int64_t top = it_pg_int(conn, "SELECT max(stream_seq) FROM outbox");
    double read = 0;
    ck_assert_int_eq(marked_max(conn, MARKS, &read), top);
    /* A backlog above the last mark, far more rows than the statement reads. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.plans', 'x'"
               " FROM generate_series(1, %d)",
               BACKLOG);
    ck_assert_int_eq(marked_max(conn, MARKS, &read), top);
    ck_assert_msg(read <= 2 * MARKS, "the statement read %.0f rows of the primary key", read);
    /* Never above the true highest: the rows a term had in flight, some marked. */
    it_pg_exec(conn,
               "UPDATE outbox SET status = 'published', stream_seq = %lld + id %% 7, published_at ="
               " now() WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' ORDER BY id"
               " LIMIT 50) AND id %% 2 = 0",
               (long long)top);
    top = it_pg_int(conn, "SELECT max(stream_seq) FROM outbox");
    ck_assert_int_eq(marked_max(conn, MARKS, &read), top);
    PQfinish(conn);
    config_free(&cfg);
}
END_TEST

static void setup_pg(void)
{
    it_setup();
    it_pg_start();
}

int main(void)
{
    Suite *suite = suite_create("query_plans");
    TCase *tc = it_tcase(suite, "plans", setup_pg, 120);
    tcase_add_test(tc, test_plans_do_not_depend_on_statistics);
    tcase_add_test(tc, test_sample_cost_is_bounded);
    tcase_add_test(tc, test_marked_max_found_by_the_primary_key);
    return run_suite(suite);
}
