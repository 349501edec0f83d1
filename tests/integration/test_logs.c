/* Logs: one JSON object per line (or text), levels, SIGHUP level change, and never a password,
 * payload or header value, through failures, restarts and bad rows. */
#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "run_suite.h"
#include "text_match.h"

#define STREAM         "IT_LOGS"
#define PG_PASSWORD    "PGPASS-MARKER-91c2"
#define PG_WRONG       "PGPASS-WRONG-6b07"
#define SSL_PASSWORD   "SSLPASS-MARKER-44e0"
#define NATS_PASSWORD  "NATSPASS-MARKER-3d58"
#define PAYLOAD_MARKER "PAYLOAD-MARKER-7f3a"
#define HEADER_MARKER  "HEADER-MARKER-c9d1"
#define TS_RE          "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"

static const char *const secrets[] = {PG_PASSWORD,   PG_WRONG,       SSL_PASSWORD,
                                      NATS_PASSWORD, PAYLOAD_MARKER, HEADER_MARKER};

static void no_secrets(const char *what, const char *text)
{
    for (size_t k = 0; k < sizeof secrets / sizeof secrets[0]; k++)
        ck_assert_msg(strstr(text, secrets[k]) == NULL, "%s contains %s:\n%s", what, secrets[k],
                      text);
}

static char pg_url_password[1024], pg_url_passfile[1024], pg_url_wrong[1024];
static char nats_user_env[] = "OUTBOX_NATS_USER=relay";
static char nats_password_env[600];
static char stream_env[] = "OUTBOX_STREAM=" STREAM;
static char subjects_env[] = "OUTBOX_STREAM_SUBJECTS=it.logs.>";

/*
 * The throw-away cluster trusts everyone; one role must show a password:
 * logs_user authenticates with SCRAM over TCP. Its password is in the URL of
 * one relay and in a passfile for another.
 */
static void setup_password_role(void)
{
    char hba[600];
    snprintf(hba, sizeof hba, "%s/pgdata/pg_hba.conf", it_dir());
    FILE *f = fopen(hba, "r");
    ck_assert_ptr_nonnull(f);
    char rest[65536];
    size_t n = fread(rest, 1, sizeof rest - 1, f);
    rest[n] = '\0';
    fclose(f);
    f = fopen(hba, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "host all logs_user 127.0.0.1/32 scram-sha-256\n%s", rest);
    ck_assert_int_eq(fclose(f), 0);

    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE ROLE logs_user LOGIN PASSWORD '" PG_PASSWORD "'");
    it_pg_exec(conn, "GRANT SELECT, UPDATE ON outbox TO logs_user");
    it_pg_exec(conn, "SELECT pg_reload_conf()");
    PQfinish(conn);

    char passfile[256];
    snprintf(passfile, sizeof passfile, "%s/pgpass", it_dir());
    f = fopen(passfile, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "127.0.0.1:%d:outbox_it:logs_user:%s\n", it_pg_port(), PG_PASSWORD);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(passfile, 0600), 0);

    snprintf(pg_url_password, sizeof pg_url_password,
             "OUTBOX_PG_URL=postgresql://logs_user:" PG_PASSWORD
             "@127.0.0.1:%d/outbox_it?sslmode=disable&sslpassword=" SSL_PASSWORD,
             it_pg_port());
    snprintf(pg_url_passfile, sizeof pg_url_passfile,
             "OUTBOX_PG_URL=host=127.0.0.1 port=%d dbname=outbox_it user=logs_user passfile=%s",
             it_pg_port(), passfile);
    snprintf(
        pg_url_wrong, sizeof pg_url_wrong,
        "OUTBOX_PG_URL=host=127.0.0.1 port=%d dbname=outbox_it user=logs_user password=" PG_WRONG,
        it_pg_port());

    /* The reload is asynchronous: wait until a wrong password is refused. */
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo, "%s", pg_url_wrong + strlen("OUTBOX_PG_URL="));
    int64_t deadline = it_now_ms() + 10000;
    for (;;) {
        PGconn *c = PQconnectdb(conninfo);
        bool refused = PQstatus(c) != CONNECTION_OK;
        PQfinish(c);
        if (refused)
            break;
        ck_assert_msg(it_now_ms() < deadline, "pg_hba.conf change not in effect");
    }
}

static void setup_nats_with_password(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/nats.password", it_dir());
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(NATS_PASSWORD "\n", f);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(nats_password_env, sizeof nats_password_env, "OUTBOX_NATS_PASSWORD_FILE=%s", path);
    /* A small max_payload makes "too large" cheap to reach. */
    it_nats_set_config("max_payload: 65536\n"
                       "authorization {\n  user: relay\n  password: \"" NATS_PASSWORD "\"\n}\n");
    it_nats_start();
}

struct relay_http {
    struct it_relay *relay;
    int port;
};

static struct relay_http start_relay(const char *pg_url, const char *const *extra)
{
    /* it.nolisten.* is outside the stream on purpose: rows there fail with no_stream. */
    const char *env[24] = {pg_url,
                           nats_user_env,
                           nats_password_env,
                           stream_env,
                           subjects_env,
                           "OUTBOX_RECONNECT_MAX_MS=300",
                           "OUTBOX_ALLOW_SUBJECTS=it.nolisten.>",
                           NULL};
    int i = 7;
    for (; extra != NULL && *extra != NULL && i < 23; extra++)
        env[i++] = *extra;
    struct it_relay *relay = it_relay_start_http(env, NULL);
    return (struct relay_http){.relay = relay, .port = relay->http_port};
}

static bool ready(void *arg)
{
    struct relay_http *rh = arg;
    return it_http_status(rh->port, "/readyz") == 200;
}

static void wait_ready(struct relay_http *rh)
{
    if (!it_wait_until(ready, rh, 20000)) {
        it_relay_dump_log(rh->relay);
        ck_abort_msg("the relay did not become ready");
    }
}

static void wait_log(struct it_relay *relay, const char *needle)
{
    if (!it_relay_wait_log(relay, needle, 1, 15000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("the log never showed %s", needle);
    }
}

struct levels {
    int debug, info, warn, error;
};

/* Every line is a JSON object with ts, level and msg first; counts the levels. */
static struct levels check_json_lines(const char *log)
{
    struct levels seen = {0};
    char *copy = strdup(log);
    char *save = NULL;
    int lines = 0;
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        lines++;
        json_error_t jerr;
        json_t *obj = json_loads(line, 0, &jerr);
        ck_assert_msg(json_is_object(obj), "line %d is not a JSON object (%s): %s", lines,
                      jerr.text, line);
        const char *ts = json_string_value(json_object_get(obj, "ts"));
        const char *level = json_string_value(json_object_get(obj, "level"));
        const char *msg = json_string_value(json_object_get(obj, "msg"));
        ck_assert_msg(ts != NULL && text_matches(ts, TS_RE), "line %d: bad ts: %s", lines, line);
        ck_assert_msg(msg != NULL && msg[0] != '\0', "line %d: no msg: %s", lines, line);
        ck_assert_msg(level != NULL, "line %d: no level: %s", lines, line);
        if (strcmp(level, "debug") == 0)
            seen.debug++;
        else if (strcmp(level, "info") == 0)
            seen.info++;
        else if (strcmp(level, "warn") == 0)
            seen.warn++;
        else if (strcmp(level, "error") == 0)
            seen.error++;
        else
            ck_abort_msg("line %d: unknown level %s", lines, level);
        ck_assert_msg(strncmp(line, "{\"ts\":", 6) == 0, "line %d: ts is not first: %s", lines,
                      line);
        /* Reals are short: "retry_in_s":0.172, not 0.17199999999999999. */
        ck_assert_msg(!text_matches(line, "[0-9]\\.[0-9]{8,}"), "line %d: long real: %s", lines,
                      line);
        json_decref(obj);
    }
    ck_assert_int_gt(lines, 0);
    free(copy);
    return seen;
}

START_TEST(test_json_logs_hold_no_secrets_or_payloads)
{
    it_pg_start();
    setup_password_role();
    setup_nats_with_password();
    PGconn *conn = it_pg_connect();

    const char *env[] = {"OUTBOX_LOG_LEVEL=debug", "OUTBOX_MAX_ATTEMPTS=2",
                         "OUTBOX_RETRY_BASE_MS=50", "OUTBOX_RETRY_MAX_MS=100", NULL};
    struct relay_http rh = start_relay(pg_url_password, env);
    wait_ready(&rh);

    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, headers)"
                     " SELECT 'it.logs.ok', convert_to('" PAYLOAD_MARKER " ' || g, 'UTF8'),"
                     "        jsonb_build_object('X-Trace', '" HEADER_MARKER "-' || g)"
                     " FROM generate_series(1, 20) g");
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, headers) VALUES"
               " ('it.logs.bad subject', '" PAYLOAD_MARKER "', '{}'),"
               " ('it.logs.headers', '" PAYLOAD_MARKER "',"
               "  '{\"X-Bad\": {\"nested\": \"" HEADER_MARKER "\"}}'),"
               " ('it.logs.crlf', 'p', '{\"X-Crlf\": \"" HEADER_MARKER "\\r\\nX: y\"}'),"
               " ('it.logs.large', convert_to(repeat('" PAYLOAD_MARKER "', 5000), 'UTF8'),"
               "  '{}'),"
               " ('it.nolisten.x', '" PAYLOAD_MARKER "', '{\"X-T\": \"" HEADER_MARKER "\"}')");
    ck_assert_int_eq(
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status IN ('published', 'dead')",
                       25, 20000),
        25);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"), 5);

    /* Warn paths: NATS and PostgreSQL go away and come back. */
    it_nats_restart();
    wait_log(rh.relay, "nats disconnected");
    wait_ready(&rh);
    it_pg_restart();
    PQfinish(conn);
    conn = it_pg_connect();
    wait_log(rh.relay, "postgresql connection lost");
    wait_ready(&rh);
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) SELECT 'it.logs.ok',"
                     " convert_to('" PAYLOAD_MARKER "', 'UTF8') FROM generate_series(1, 5)");
    ck_assert_int_eq(it_pg_wait_published(conn, 25, 20000), 25);
    it_relay_stop(rh.relay);

    char *log = it_relay_log(rh.relay);
    struct levels seen = check_json_lines(log);
    ck_assert_int_gt(seen.debug, 0);
    ck_assert_int_gt(seen.info, 0);
    ck_assert_int_gt(seen.warn, 0);
    ck_assert_msg(strstr(log, "\"msg\":\"row is dead\"") != NULL, "no dead row logged:\n%s", log);
    ck_assert_msg(strstr(log, "\"msg\":\"publish failed\"") != NULL, "no debug failure:\n%s", log);
    ck_assert_msg(text_matches(log, "\"retry_in_s\":[0-9]"), "no backoff logged:\n%s", log);
    /* The startup line: versions of the relay and its libraries, the URL without password. */
    json_t *start = json_loads(log, JSON_DISABLE_EOF_CHECK, NULL);
    ck_assert_ptr_nonnull(start);
    ck_assert_str_eq(json_string_value(json_object_get(start, "msg")), "outbox-relay starting");
    static const char *const keys[] = {"version", "libpq", "nats_c", "libev", "jansson"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        ck_assert_msg(json_string_value(json_object_get(start, keys[k])) != NULL, "no %s", keys[k]);
    const char *shown = json_string_value(json_object_get(start, "pg_url"));
    ck_assert_msg(shown != NULL && strstr(shown, "user=logs_user password=***") != NULL &&
                      strstr(shown, "sslpassword=***") != NULL,
                  "pg_url: %s", shown);
    json_decref(start);
    no_secrets("the JSON log", log);
    free(log);

    /* --check with a refused password names the problem, not the password. */
    const char *check_args[] = {"--check", NULL};
    const char *check_env[] = {pg_url_wrong, nats_user_env, nats_password_env, NULL};
    char *out = NULL;
    int rc = it_relay_run(check_env, check_args, 30000, &out);
    ck_assert_msg(rc == 1 && strstr(out, "password authentication failed") != NULL &&
                      strstr(out, "password=***") != NULL,
                  "--check exited %d: %s", rc, out);
    no_secrets("--check output", out);
    free(out);
    PQfinish(conn);
}
END_TEST

START_TEST(test_text_format_warn_level_and_sighup)
{
    it_pg_start();
    setup_password_role();
    setup_nats_with_password();
    PGconn *conn = it_pg_connect();

    /* Text lines, with the password from a passfile. */
    const char *text_env[] = {"OUTBOX_LOG_FORMAT=text", NULL};
    struct relay_http rh = start_relay(pg_url_passfile, text_env);
    wait_ready(&rh);
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, headers) SELECT 'it.logs.text',"
                     " convert_to('" PAYLOAD_MARKER "', 'UTF8'),"
                     " jsonb_build_object('X-T', '" HEADER_MARKER "') FROM generate_series(1, 5)");
    ck_assert_int_eq(it_pg_wait_published(conn, 5, 15000), 5);
    it_relay_stop(rh.relay);
    char *log = it_relay_log(rh.relay);
    char *save = NULL;
    int lines = 0;
    for (char *line = strtok_r(log, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save), lines++)
        ck_assert_msg(text_matches(line, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z "
                                         "(DEBUG|INFO|WARN|ERROR) [^{]"),
                      "not a text line: %s", line);
    ck_assert_int_gt(lines, 3);
    free(log);
    log = it_relay_log(rh.relay);
    ck_assert_msg(strstr(log, "INFO outbox-relay starting version=") != NULL, "%s", log);
    no_secrets("the text log", log);
    free(log);

    /* warn: no info lines, until SIGHUP brings the level from the file down to debug. */
    char level_file[600], level_env[700];
    snprintf(level_file, sizeof level_file, "%s/log-level", it_dir());
    FILE *f = fopen(level_file, "w");
    ck_assert_ptr_nonnull(f);
    fputs("warn\n", f);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(level_env, sizeof level_env, "OUTBOX_LOG_LEVEL_FILE=%s", level_file);
    const char *warn_env[] = {"OUTBOX_LOG_LEVEL=warn", level_env, NULL};
    rh = start_relay(pg_url_passfile, warn_env);
    wait_ready(&rh);
    it_nats_restart();
    wait_log(rh.relay, "nats disconnected");
    wait_ready(&rh);
    log = it_relay_log(rh.relay);
    struct levels seen = check_json_lines(log);
    ck_assert_msg(seen.info == 0 && seen.debug == 0 && seen.warn > 0, "warn level log:\n%s", log);
    free(log);

    f = fopen(level_file, "w");
    ck_assert_ptr_nonnull(f);
    fputs("debug\n", f);
    ck_assert_int_eq(fclose(f), 0);
    it_relay_signal(rh.relay, SIGHUP);
    rh.relay->stopping = false; /* SIGHUP is not a stop: it must keep running */
    wait_log(rh.relay, "\"msg\":\"SIGHUP: log level changed\",\"log_level\":\"debug\"");
    /* A publish with nowhere to go fails: a debug line now. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.nolisten.z', 'p')");
    wait_log(rh.relay, "\"level\":\"debug\",\"msg\":\"publish failed\"");
    /* And a warn line for the reason within seconds, not when the row goes dead. */
    wait_log(rh.relay, "\"level\":\"warn\",\"msg\":\"publish failed\",\"reason\":\"no_stream\"");
    it_relay_stop(rh.relay);
    log = it_relay_log(rh.relay);
    seen = check_json_lines(log);
    ck_assert_int_gt(seen.debug, 0);
    no_secrets("the warn/debug log", log);
    free(log);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("logs");
    TCase *tc = it_tcase(suite, "logs", it_setup, 180);
    tcase_add_test(tc, test_json_logs_hold_no_secrets_or_payloads);
    tcase_add_test(tc, test_text_format_warn_level_and_sighup);
    return run_suite(suite);
}
