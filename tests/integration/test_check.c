/* --check is read-only and verifies what the relay needs: privileges, trigger, streams, limits. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define DEADLINE_MS 30000

static const char *const check_args[] = {"--check", NULL};

static void assert_line(const char *output, const char *prefix, const char *needle)
{
    /* a line that starts with prefix and holds needle */
    for (const char *line = output; line != NULL && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        bool hit = strncmp(copy, prefix, strlen(prefix)) == 0 && strstr(copy, needle) != NULL;
        free(copy);
        if (hit)
            return;
        line = end ? end + 1 : NULL;
    }
    ck_abort_msg("no \"%s...%s\" line in:\n%s", prefix, needle, output);
}

static void add_stream(const char *name, const char *subject, int64_t duplicates_ns)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {subject};
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_MemoryStorage;
    sc.Duplicates = duplicates_ns;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(NULL, it_js(), &sc, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "add stream %s: %s (%d)", name, natsStatus_GetText(s), (int)jerr);
}

START_TEST(test_check_does_not_create_a_missing_stream)
{
    const char *env[] = {"OUTBOX_STREAM=IT_CHECK_MISSING", "OUTBOX_STREAM_SUBJECTS=it.check.>",
                         NULL};
    char *out = NULL;
    int code = it_relay_run(env, check_args, DEADLINE_MS, &out);
    ck_assert_msg(code != 0, "--check passed with the stream missing:\n%s", out);
    assert_line(out, "FAIL ", "IT_CHECK_MISSING");
    ck_assert_msg(!it_js_stream_exists("IT_CHECK_MISSING"), "--check created the stream:\n%s", out);
    free(out);
}
END_TEST

START_TEST(test_check_role_without_update_on_status)
{
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE ROLE check_ro LOGIN");
    it_pg_exec(conn, "GRANT SELECT, UPDATE (attempts, next_attempt_at, last_error, published_at,"
                     " stream_seq) ON outbox TO check_ro");
    PGresult *db = it_pg_query(conn, "SELECT current_database()");
    char url[256];
    snprintf(url, sizeof url, "OUTBOX_PG_URL=host=127.0.0.1 port=%d dbname=%s user=check_ro",
             it_pg_port(), PQgetvalue(db, 0, 0));
    PQclear(db);
    const char *env[] = {url, NULL};
    char *out = NULL;
    int code = it_relay_run(env, check_args, DEADLINE_MS, &out);
    ck_assert_msg(code == 1, "--check exited %d without UPDATE on status:\n%s", code, out);
    assert_line(out, "FAIL privileges", "(status)");
    free(out);

    /* with the grant, the same role passes */
    it_pg_exec(conn, "GRANT UPDATE (status), DELETE ON outbox TO check_ro");
    code = it_relay_run(env, check_args, DEADLINE_MS, &out);
    ck_assert_msg(code == 0, "--check exited %d with every grant:\n%s", code, out);
    assert_line(out, "ok   privileges", "check_ro");
    free(out);
    PQfinish(conn);
}
END_TEST

START_TEST(test_check_healthy_setup)
{
    add_stream("IT_CHECK", "it.check.>", 0); /* the default window: 2 min */
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) SELECT 'it.check.' || (g %% 3), 'x'"
                     " FROM generate_series(1, 30) g");
    const char *env[] = {"OUTBOX_STREAM=IT_CHECK", "OUTBOX_STREAM_SUBJECTS=it.check.>",
                         "OUTBOX_STREAM_STORAGE=memory", NULL};
    char *out = NULL;
    int code = it_relay_run(env, check_args, DEADLINE_MS, &out);
    fprintf(stderr, "%s", out);
    ck_assert_msg(code == 0, "--check exited %d on a healthy setup:\n%s", code, out);
    assert_line(out, "ok   trigger", "channel outbox");
    assert_line(out, "ok   privileges", "postgres");
    assert_line(out, "ok   subject it.check.0", "stream IT_CHECK");
    assert_line(out, "ok   stream IT_CHECK", "duplicate window 120 s");
    assert_line(out, "ok   nats reached", "max_payload 1048576");
    ck_assert_msg(strstr(out, "FAIL") == NULL && strstr(out, "warn") == NULL, "%s", out);
    /* An existing stream that differs from what the settings would create: a warning. */
    free(out);
    const char *differs[] = {"OUTBOX_STREAM=IT_CHECK", "OUTBOX_STREAM_SUBJECTS=it.check.>",
                             "OUTBOX_STREAM_DUPLICATE_WINDOW=5m", "OUTBOX_STREAM_REPLICAS=3", NULL};
    code = it_relay_run(differs, check_args, DEADLINE_MS, &out);
    ck_assert_msg(code == 0, "--check exited %d on a stream that only differs:\n%s", code, out);
    assert_line(out, "warn stream IT_CHECK differs", "duplicate window 2m");
    assert_line(out, "warn stream IT_CHECK differs", "replicas 1, settings ask 3");
    assert_line(out, "warn stream IT_CHECK differs", "storage memory, settings ask file");
    /* read-only: the rows are untouched */
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'pending'"
                                     " AND attempts = 0"),
                     30);
    PQfinish(conn);
    free(out);
}
END_TEST

START_TEST(test_check_finds_what_would_go_wrong)
{
    add_stream("IT_CHECK_SHORT", "it.short.>", (int64_t)30 * 1000000000);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.short.a', 'x'),"
                     " ('it.nowhere.a', 'x'),"
                     " ('it.short.big', convert_to(repeat('b', 2000000), 'UTF8'))");
    const char *env[] = {"OUTBOX_CHANNEL=elsewhere", NULL};
    char *out = NULL;
    int code = it_relay_run(env, check_args, DEADLINE_MS, &out);
    fprintf(stderr, "%s", out);
    ck_assert_msg(code == 1, "--check exited %d:\n%s", code, out);
    assert_line(out, "FAIL trigger", "relay listens on elsewhere (OUTBOX_CHANNEL)");
    assert_line(out, "FAIL subject it.nowhere.a", "no stream takes it");
    assert_line(out, "warn stream IT_CHECK_SHORT", "duplicate window 30 s");
    assert_line(out, "warn max_payload", "2000000 bytes");
    free(out);

    /* without a trigger: rows wait for the poll, a warning */
    it_pg_exec(conn, "DROP TRIGGER outbox_notify_insert ON outbox");
    it_relay_run(NULL, check_args, DEADLINE_MS, &out);
    assert_line(out, "warn trigger", "OUTBOX_POLL_INTERVAL_MS");
    free(out);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("check");
    TCase *tc = it_tcase(suite, "check", it_start_servers, 120);
    tcase_add_test(tc, test_check_does_not_create_a_missing_stream);
    tcase_add_test(tc, test_check_role_without_update_on_status);
    tcase_add_test(tc, test_check_healthy_setup);
    tcase_add_test(tc, test_check_finds_what_would_go_wrong);
    return run_suite(suite);
}
