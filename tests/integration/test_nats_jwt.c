/* NATS decentralized auth: nats-server in operator mode (MEMORY resolver), the relay with a
 * .creds file (OUTBOX_NATS_CREDS). A valid user relays rows end to end; an expired user and a
 * revoked user are each refused with an error that names the cause, nothing is published, the
 * relay stays up and unready, and --check fails with one line. Fixtures: fixtures/jwt/. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM   "IT_JWT"
#define FIXTURES SOURCE_DIR "/tests/integration/fixtures/jwt/"
#define CREDS(n) "OUTBOX_NATS_CREDS=" FIXTURES n ".creds"
#define ROWS     20

static char *read_fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s%s", FIXTURES, name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    static char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    ck_assert_msg(n > 0 && n < sizeof text - 1, "%s: unexpected size %zu", path, n);
    text[n] = '\0';
    return text;
}

/* PostgreSQL, and nats-server in operator mode; the test's reader is the valid user. */
static void servers_in_operator_mode(void)
{
    it_pg_start();
    it_nats_set_config(read_fixture("operator.conf"));
    it_nats_set_credentials(FIXTURES "relay.creds");
    it_nats_start();
}

static struct it_relay *start_relay(const char *creds)
{
    const char *env[] = {creds, "OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.jwt.>",
                         "OUTBOX_RECONNECT_MAX_MS=1000", NULL};
    return it_relay_start_http(env, NULL);
}

struct ready_want {
    int port;
    int status;
};

static bool readyz_is(void *arg)
{
    struct ready_want *w = arg;
    return it_http_status(w->port, "/readyz") == w->status;
}

static void insert_rows(PGconn *conn)
{
    it_pg_exec(
        conn,
        "INSERT INTO outbox (subject, payload) SELECT 'it.jwt.' || i, convert_to('x' || i, 'UTF8')"
        " FROM generate_series(1, %d) AS i",
        ROWS);
}

START_TEST(test_valid_user_relays_through_operator_mode)
{
    servers_in_operator_mode();
    struct it_relay *relay = start_relay(CREDS("relay"));
    struct ready_want w = {relay->http_port, 200};
    if (!it_wait_until(readyz_is, &w, 15000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay never became ready");
    }
    PGconn *conn = it_pg_connect();
    insert_rows(conn);
    int64_t got = it_pg_wait_published(conn, ROWS, 15000);
    if (got != ROWS)
        it_relay_dump_log(relay);
    ck_assert_msg(got == ROWS, "%lld of %d rows published", (long long)got, ROWS);
    /* The reader, a user of the same account, finds each row once in the stream. */
    it_assert_each_row_once(conn, STREAM, ROWS);
    it_relay_stop(relay);
    PQfinish(conn);

    const char *check_env[] = {CREDS("relay"), "OUTBOX_STREAM=" STREAM,
                               "OUTBOX_STREAM_SUBJECTS=it.jwt.>", NULL};
    const char *check_args[] = {"--check", NULL};
    char *out = NULL;
    int rc = it_relay_run(check_env, check_args, 30000, &out);
    ck_assert_msg(rc == 0, "--check exited %d: %s", rc, out);
    free(out);
}
END_TEST

/* A line of `text` that holds both `a` and `b`, or NULL. */
static const char *line_with(const char *text, const char *a, const char *b)
{
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        const char *hit_a = strstr(line, a), *hit_b = strstr(line, b);
        if (hit_a != NULL && hit_b != NULL && hit_a < line + n && hit_b < line + n)
            return line;
        line = end ? end + 1 : NULL;
    }
    return NULL;
}

/*
 * The refused user: the relay says why (`cause`) at each attempt, stays up
 * and unready, publishes nothing; --check exits 1 with a "FAIL nats:" line
 * that names the cause.
 */
static void refused_for(const char *creds, const char *cause)
{
    servers_in_operator_mode();
    PGconn *conn = it_pg_connect();
    insert_rows(conn);
    struct it_relay *relay = start_relay(creds);
    if (!it_relay_wait_log(relay, cause, 2, 15000) ||
        !it_relay_wait_log(relay, "authorization failed (OUTBOX_NATS_CREDS)", 2, 15000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay did not say \"%s\" at each of two attempts", cause);
    }
    ck_assert_int_eq(it_http_status(relay->http_port, "/readyz"), 503);
    ck_assert_int_eq(it_http_status(relay->http_port, "/healthz"), 200);
    ck_assert_int_eq(it_pg_published(conn), 0);
    ck_assert(!it_js_stream_exists(STREAM) || it_js_stream_msgs(STREAM) == 0);
    it_relay_stop(relay);
    PQfinish(conn);

    const char *check_env[] = {creds, "OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.jwt.>",
                               NULL};
    const char *check_args[] = {"--check", NULL};
    char *out = NULL;
    int rc = it_relay_run(check_env, check_args, 30000, &out);
    fprintf(stderr, "%s", out);
    ck_assert_msg(rc == 1 && line_with(out, "FAIL nats: ", cause) != NULL,
                  "--check exited %d without a FAIL nats line naming \"%s\":\n%s", rc, cause, out);
    free(out);
}

START_TEST(test_expired_user_is_refused_clearly)
{
    refused_for(CREDS("expired"), "user authentication expired");
}
END_TEST

START_TEST(test_revoked_user_is_refused_clearly)
{
    refused_for(CREDS("revoked"), "revoked by its account");
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_jwt");
    TCase *tc = it_tcase(suite, "nats_jwt", it_setup, 120);
    tcase_add_test(tc, test_valid_user_relays_through_operator_mode);
    tcase_add_test(tc, test_expired_user_is_refused_clearly);
    tcase_add_test(tc, test_revoked_user_is_refused_clearly);
    return run_suite(suite);
}
