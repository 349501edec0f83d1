/* Unit tests for settings: defaults, environment and flags, validation, redaction, table quoting.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outbox_relay/lib/config.h"
#include "run_suite.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

extern char **environ;

/* The test process's own OUTBOX_* variables must not leak into what is tested. */
static void clear_outbox_env(void)
{
    for (;;) {
        char **e = environ;
        while (*e != NULL && strncmp(*e, "OUTBOX_", 7) != 0)
            e++;
        if (*e == NULL)
            return;
        char name[128];
        size_t n = strcspn(*e, "=");
        ck_assert_uint_lt(n, sizeof(name));
        memcpy(name, *e, n);
        name[n] = '\0';
        unsetenv(name);
    }
}

/* config_load with argv = {"outbox-relay", args...}; returns its result, err filled. */
static int load(struct relay_config *cfg, const char *const *args, char *err, size_t errlen)
{
    char *argv[32] = {"outbox-relay"};
    int argc = 1;
    for (; args != NULL && args[argc - 1] != NULL; argc++) {
        ck_assert_int_lt(argc, 31);
        argv[argc] = (char *)args[argc - 1];
    }
    err[0] = '\0';
    return config_load(cfg, argc, argv, err, errlen);
}

/* Loads and expects failure whose message names `setting` and contains `detail`. */
static void expect_error(const char *const *args, const char *setting, const char *detail)
{
    struct relay_config cfg;
    char err[512];
    int rc = load(&cfg, args, err, sizeof(err));
    config_free(&cfg);
    ck_assert_msg(rc == -1, "accepted; expected an error about %s", setting);
    ck_assert_msg(strstr(err, setting) != NULL, "error \"%s\" does not name %s", err, setting);
    ck_assert_msg(detail == NULL || strstr(err, detail) != NULL, "error \"%s\" does not say \"%s\"",
                  err, detail);
    ck_assert_msg(strchr(err, '\n') == NULL, "error is not one line: %s", err);
}

static void expect_ok(const char *const *args, struct relay_config *cfg)
{
    char err[512];
    int rc = load(cfg, args, err, sizeof(err));
    ck_assert_msg(rc == 0, "rejected: %s", err);
}

/* A readable temporary file holding `text`; the path is malloc'd. */
static char *temp_file(const char *text)
{
    char *path = strdup("/tmp/outbox-config-test-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* ---- defaults ---------------------------------------------------------- */

START_TEST(test_defaults)
{
    struct relay_config cfg;
    expect_ok(NULL, &cfg);
    ck_assert_str_eq(cfg.pg_url, "");
    ck_assert_str_eq(cfg.nats_url, "nats://127.0.0.1:4222");
    ck_assert_str_eq(cfg.table, "outbox");
    ck_assert_str_eq(cfg.channel, "outbox");
    ck_assert_str_eq(cfg.stream, "");
    ck_assert_str_eq(cfg.stream_subjects, "");
    ck_assert_int_eq(cfg.batch_size, 500);
    ck_assert_int_eq(cfg.max_inflight, 4000);
    ck_assert_int_eq(cfg.poll_interval_ms, 1000);
    ck_assert_int_eq(cfg.publish_timeout_ms, 5000);
    ck_assert_int_eq(cfg.retry_base_ms, 1000);
    ck_assert_int_eq(cfg.retry_max_ms, 300000);
    ck_assert_int_eq(cfg.max_attempts, 10);
    ck_assert(!cfg.dead_holds_key);
    ck_assert_int_eq(cfg.shutdown_timeout_ms, 10000);
    ck_assert_int_eq(cfg.stall_timeout_ms, 60000);
    ck_assert_int_eq(cfg.leader_retry_ms, 2000);
    ck_assert_int_eq(cfg.nats_lost_ms, 30000);
    ck_assert_int_eq(cfg.pg_timeout_ms, 30000);
    ck_assert_int_eq(cfg.reconnect_max_ms, 10000);
    ck_assert_int_eq(cfg.metrics_interval_ms, 5000);
    ck_assert_str_eq(cfg.http_addr, ":9841");
    ck_assert_int_eq(cfg.log_level, LOG_INFO);
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_JSON);
    ck_assert_str_eq(cfg.nats_creds, "");
    ck_assert_str_eq(cfg.nats_user, "");
    ck_assert_str_eq(cfg.nats_tls_ca, "");
    config_free(&cfg);
    ck_assert_ptr_null(cfg.table); /* freed and cleared */
}
END_TEST

/* ---- environment and flags --------------------------------------------- */

START_TEST(test_env_then_flags_win)
{
    struct relay_config cfg;
    setenv("OUTBOX_BATCH_SIZE", "100", 1);
    setenv("OUTBOX_TABLE", "app.events", 1);
    setenv("OUTBOX_LOG_FORMAT", "text", 1);
    expect_ok(NULL, &cfg);
    ck_assert_int_eq(cfg.batch_size, 100);
    ck_assert_str_eq(cfg.table, "app.events");
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_TEXT);
    config_free(&cfg);

    const char *eq_form[] = {"--batch-size=200", "--table=other", NULL};
    expect_ok(eq_form, &cfg);
    ck_assert_int_eq(cfg.batch_size, 200);
    ck_assert_str_eq(cfg.table, "other");
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_TEXT); /* from the environment still */
    config_free(&cfg);

    const char *spaced[] = {"--batch-size", "300", "--log-format", "json", NULL};
    expect_ok(spaced, &cfg);
    ck_assert_int_eq(cfg.batch_size, 300);
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_JSON);
    config_free(&cfg);

    /* The last flag wins; an empty value is a value. */
    const char *twice[] = {"--batch-size=1", "--batch-size=2", "--http-addr=", NULL};
    expect_ok(twice, &cfg);
    ck_assert_int_eq(cfg.batch_size, 2);
    ck_assert_str_eq(cfg.http_addr, "");
    config_free(&cfg);
}
END_TEST

/* Settings carry no verbs: commands and --help are the command line's (cmd.c, main.c). */
START_TEST(test_no_verbs)
{
    static const char *const verbs[] = {"--check", "--requeue-dead", "--probe", "--help",
                                        "--version"};
    for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
        const char *args[] = {verbs[i], NULL};
        expect_error(args, verbs[i], "unknown option");
    }
}
END_TEST

START_TEST(test_bad_arguments)
{
    const char *unknown[] = {"--no-such-thing=1", NULL};
    expect_error(unknown, "--no-such-thing", "unknown option");
    const char *positional[] = {"outbox", NULL};
    expect_error(positional, "\"outbox\"", "unexpected argument");
    const char *missing[] = {"--batch-size", NULL};
    expect_error(missing, "OUTBOX_BATCH_SIZE", "needs a value");
    /* A near miss names the flag that was meant. */
    const char *typo[] = {"--batch-sise=5", NULL};
    expect_error(typo, "--batch-sise", "--batch-size");
}
END_TEST

/* ---- numbers ----------------------------------------------------------- */

static const struct {
    const char *var, *value, *detail;
} bad_numbers[] = {
    {"OUTBOX_BATCH_SIZE", "abc", "not a whole number"},
    {"OUTBOX_BATCH_SIZE", "12x", "not a whole number"},
    {"OUTBOX_BATCH_SIZE", "", "not a whole number"},
    {"OUTBOX_BATCH_SIZE", "1.5", "not a whole number"},
    {"OUTBOX_BATCH_SIZE", "99999999999999999999", "not a whole number"},
    {"OUTBOX_BATCH_SIZE", "0", "out of range (1..10000)"},
    {"OUTBOX_BATCH_SIZE", "10001", "out of range"},
    {"OUTBOX_BATCH_SIZE", "-5", "out of range"},
    {"OUTBOX_MAX_INFLIGHT", "0", "out of range"},
    {"OUTBOX_POLL_INTERVAL_MS", "9", "out of range"},
    {"OUTBOX_PUBLISH_TIMEOUT_MS", "ten", "not a whole number"},
    {"OUTBOX_RETRY_BASE_MS", "0", "out of range"},
    {"OUTBOX_MAX_ATTEMPTS", "0", "out of range"},
    {"OUTBOX_LEADER_RETRY_MS", "99", "out of range"},
    {"OUTBOX_NATS_LOST_MS", "999", "out of range"},
    {"OUTBOX_PG_TIMEOUT_MS", "99", "out of range"},
    {"OUTBOX_RECONNECT_MAX_MS", "2147483648", "out of range"},
    {"OUTBOX_STALL_TIMEOUT_MS", "999", "out of range"},
    {"OUTBOX_SHUTDOWN_TIMEOUT_MS", "-1", "out of range"},
};

START_TEST(test_bad_number_names_variable)
{
    setenv(bad_numbers[_i].var, bad_numbers[_i].value, 1);
    expect_error(NULL, bad_numbers[_i].var, bad_numbers[_i].detail);
}
END_TEST

/* A bad flag value names the same variable, so one line of docs explains both. */
START_TEST(test_bad_number_flag_names_variable)
{
    const char *args[] = {"--max-attempts=never", NULL};
    expect_error(args, "OUTBOX_MAX_ATTEMPTS", "\"never\" is not a whole number");
    const char *args2[] = {"--pg-timeout-ms", "50", NULL};
    expect_error(args2, "OUTBOX_PG_TIMEOUT_MS", "50 is out of range");
}
END_TEST

START_TEST(test_number_edges_accepted)
{
    struct relay_config cfg;
    setenv("OUTBOX_BATCH_SIZE", "1", 1);
    setenv("OUTBOX_MAX_INFLIGHT", "1", 1);
    setenv("OUTBOX_SHUTDOWN_TIMEOUT_MS", "0", 1);
    setenv("OUTBOX_RETRY_BASE_MS", "250", 1);
    setenv("OUTBOX_RETRY_MAX_MS", "250", 1);
    expect_ok(NULL, &cfg);
    ck_assert_int_eq(cfg.batch_size, 1);
    ck_assert_int_eq(cfg.max_inflight, 1);
    ck_assert_int_eq(cfg.shutdown_timeout_ms, 0);
    ck_assert_int_eq(cfg.retry_max_ms, 250);
    config_free(&cfg);
}
END_TEST

START_TEST(test_cross_setting_rules)
{
    setenv("OUTBOX_RETRY_BASE_MS", "5000", 1);
    setenv("OUTBOX_RETRY_MAX_MS", "1000", 1);
    expect_error(NULL, "OUTBOX_RETRY_MAX_MS", "below OUTBOX_RETRY_BASE_MS");
    unsetenv("OUTBOX_RETRY_BASE_MS");
    unsetenv("OUTBOX_RETRY_MAX_MS");
    const char *batch[] = {"--batch-size=600", "--max-inflight=500", NULL};
    expect_error(batch, "OUTBOX_BATCH_SIZE", "above OUTBOX_MAX_INFLIGHT");
    const char *stream[] = {"--stream=ORDERS", NULL};
    expect_error(stream, "OUTBOX_STREAM_SUBJECTS", "must be set");
    const char *dotted[] = {"--stream=ORD.ERS", "--stream-subjects=orders.>", NULL};
    expect_error(dotted, "OUTBOX_STREAM", "may not contain");
    struct relay_config cfg;
    const char *good[] = {"--stream=ORDERS", "--stream-subjects=orders.>,payments.*", NULL};
    expect_ok(good, &cfg);
    ck_assert_str_eq(cfg.stream_subjects, "orders.>,payments.*");
    config_free(&cfg);
}
END_TEST

/* ---- booleans and enums ------------------------------------------------ */

START_TEST(test_bool_parsing)
{
    static const struct {
        const char *value;
        bool want;
    } cases[] = {{"true", true},   {"TRUE", true},   {"1", true},  {"yes", true}, {"Yes", true},
                 {"false", false}, {"False", false}, {"0", false}, {"no", false}, {"NO", false}};
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct relay_config cfg;
        setenv("OUTBOX_DEAD_HOLDS_KEY", cases[i].value, 1);
        expect_ok(NULL, &cfg);
        ck_assert_msg(cfg.dead_holds_key == cases[i].want, "\"%s\"", cases[i].value);
        config_free(&cfg);
    }
    static const char *bad[] = {"maybe", "", "2", "on", "truee"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        setenv("OUTBOX_DEAD_HOLDS_KEY", bad[i], 1);
        expect_error(NULL, "OUTBOX_DEAD_HOLDS_KEY", "is not true or false");
    }
    unsetenv("OUTBOX_DEAD_HOLDS_KEY");
    /* A bare boolean flag means true; an explicit value is honoured. */
    struct relay_config cfg;
    const char *bare[] = {"--dead-holds-key", NULL};
    expect_ok(bare, &cfg);
    ck_assert(cfg.dead_holds_key);
    config_free(&cfg);
    setenv("OUTBOX_DEAD_HOLDS_KEY", "true", 1);
    const char *off[] = {"--dead-holds-key=false", NULL};
    expect_ok(off, &cfg);
    ck_assert(!cfg.dead_holds_key);
    config_free(&cfg);
}
END_TEST

START_TEST(test_log_settings)
{
    struct relay_config cfg;
    const char *debug[] = {"--log-level=debug", "--log-format=text", NULL};
    expect_ok(debug, &cfg);
    ck_assert_int_eq(cfg.log_level, LOG_DEBUG);
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_TEXT);
    config_free(&cfg);
    const char *level[] = {"--log-level=verbose", NULL};
    expect_error(level, "OUTBOX_LOG_LEVEL", "\"verbose\"");
    const char *format[] = {"--log-format=xml", NULL};
    expect_error(format, "OUTBOX_LOG_FORMAT", "json or text");
}
END_TEST

/* ---- table and channel ------------------------------------------------- */

static const struct {
    const char *table;
    bool ok;
} tables[] = {
    {"outbox", true},
    {"app.outbox", true},
    {"_private", true},
    {"Outbox2", true},
    {"a$b", true},
    {"", false},
    {"1outbox", false},
    {"out-box", false},
    {"out box", false},
    {"a.b.c", false},
    {".outbox", false},
    {"app.", false},
    {"outbox;drop table x", false},
    {"\"quoted\"", false},
    {"t\xc3\xa4"
     "ble",
     false},
    /* 63 bytes is PostgreSQL's limit; 64 would be truncated silently */
    {"t23456789012345678901234567890123456789012345678901234567890123", true},
    {"t234567890123456789012345678901234567890123456789012345678901234", false},
};

START_TEST(test_table_validation)
{
    struct relay_config cfg;
    char err[512];
    const char *args[] = {NULL, NULL};
    char flag[256];
    snprintf(flag, sizeof(flag), "--table=%s", tables[_i].table);
    args[0] = flag;
    int rc = load(&cfg, args, err, sizeof(err));
    config_free(&cfg);
    if (tables[_i].ok) {
        ck_assert_msg(rc == 0, "\"%s\" rejected: %s", tables[_i].table, err);
    } else {
        ck_assert_msg(rc == -1, "\"%s\" accepted", tables[_i].table);
        ck_assert_msg(strstr(err, "OUTBOX_TABLE") != NULL, "error: %s", err);
    }
}
END_TEST

START_TEST(test_channel_validation)
{
    struct relay_config cfg;
    const char *ok[] = {"--channel=outbox_events", NULL};
    expect_ok(ok, &cfg);
    ck_assert_str_eq(cfg.channel, "outbox_events");
    config_free(&cfg);
    static const char *bad[] = {"", "a.b", "bad-name", "9lives", "x y", "a\"b"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        setenv("OUTBOX_CHANNEL", bad[i], 1);
        expect_error(NULL, "OUTBOX_CHANNEL", "not a channel name");
    }
}
END_TEST

/* No statement of the relay may outlive the leader lease: a standby would end a working leader. */
START_TEST(test_statement_deadline_below_the_lease)
{
    struct relay_config cfg;
    const char *defaults[] = {NULL};
    expect_ok(defaults, &cfg);
    ck_assert_int_lt(config_statement_deadline_ms(&cfg), cfg.leader_lease_ms);
    ck_assert_int_le(config_statement_deadline_ms(&cfg), cfg.pg_timeout_ms);
    config_free(&cfg);
    const char *long_timeout[] = {"--leader-lease-ms=1000", "--pg-timeout-ms=3600000", NULL};
    expect_ok(long_timeout, &cfg);
    ck_assert_int_eq(config_statement_deadline_ms(&cfg), 500);
    config_free(&cfg);
    const char *short_timeout[] = {"--pg-timeout-ms=2000", NULL};
    expect_ok(short_timeout, &cfg);
    ck_assert_int_eq(config_statement_deadline_ms(&cfg), 2000);
    config_free(&cfg);
}
END_TEST

START_TEST(test_table_sql_quoting)
{
    struct relay_config cfg;
    const char *plain[] = {"--table=outbox", NULL};
    expect_ok(plain, &cfg);
    char *t = config_table_sql(&cfg);
    ck_assert_str_eq(t, "\"outbox\"");
    free(t);
    config_free(&cfg);
    /* Quoted per part: case is kept, and the schema is not part of the name. */
    const char *qualified[] = {"--table=App.OutBox", NULL};
    expect_ok(qualified, &cfg);
    t = config_table_sql(&cfg);
    ck_assert_str_eq(t, "\"App\".\"OutBox\"");
    free(t);
    config_free(&cfg);
    /* The longest names there are: never cut. */
    const char *longest[] = {
        "--table=s23456789_123456789_123456789_123456789_123456789_123456789_123."
        "t23456789_123456789_123456789_123456789_123456789_123456789_123",
        NULL};
    expect_ok(longest, &cfg);
    t = config_table_sql(&cfg);
    ck_assert_uint_eq(strlen(t), 63 + 63 + 5);
    free(t);
    config_free(&cfg);
}
END_TEST

/* ---- connection strings ------------------------------------------------ */

static const struct {
    const char *url;
    const char *detail; /* NULL: valid */
} nats_urls[] = {
    {"nats://127.0.0.1:4222", NULL},
    {"nats://a.example:4222,nats://b.example:4222", NULL},
    {"nats://a:4222, nats://b:4222", NULL},
    {"tls://nats.example:4443", NULL},
    {"nats.example:4222", NULL},
    {"nats.example", NULL},
    {"nats://user:secret@nats.example:4222", NULL},
    {"nats://token@nats.example:4222", NULL},
    {"nats://[::1]:4222", NULL},
    {"", "is empty"},
    {"http://nats.example:4222", "\"http\" is not a nats:// or tls:// scheme"},
    {"nats://", "malformed"},
    {"nats://:4222", "malformed"},
    {"nats://host/path", "malformed"},
    {"nats://host:0", "bad port"},
    {"nats://host:65536", "bad port"},
    {"nats://host:abc", "bad port"},
    {"nats://a:4222,ftp://b:21", "scheme"},
};

START_TEST(test_nats_url_validation)
{
    struct relay_config cfg;
    char err[512];
    setenv("OUTBOX_NATS_URL", nats_urls[_i].url, 1);
    int rc = load(&cfg, NULL, err, sizeof(err));
    config_free(&cfg);
    if (nats_urls[_i].detail == NULL) {
        ck_assert_msg(rc == 0, "\"%s\" rejected: %s", nats_urls[_i].url, err);
        return;
    }
    ck_assert_msg(rc == -1, "\"%s\" accepted", nats_urls[_i].url);
    ck_assert_msg(strstr(err, "OUTBOX_NATS_URL") != NULL && strstr(err, nats_urls[_i].detail),
                  "\"%s\": error \"%s\" lacks \"%s\"", nats_urls[_i].url, err,
                  nats_urls[_i].detail);
    ck_assert_msg(strstr(err, "secret") == NULL, "the error shows the password: %s", err);
}
END_TEST

START_TEST(test_pg_url_validation_hides_secrets)
{
    struct relay_config cfg;
    const char *uri[] = {"--pg-url=postgresql://relay:s3cret@db.example:5432/app", NULL};
    expect_ok(uri, &cfg);
    config_free(&cfg);
    const char *kv[] = {"--pg-url=host=db.example password='s3 cret' dbname=app", NULL};
    expect_ok(kv, &cfg);
    config_free(&cfg);
    /* Malformed: the error says so in one line, without the password. */
    const char *bad[] = {
        "--pg-url=postgresql://relay:s3cret@[::1/app",
        "--pg-url=host=db password=s3cret nosuchoption=1",
        "--pg-url=host=db password=s3cret dbname",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char err[512];
        const char *args[] = {bad[i], NULL};
        ck_assert_msg(load(&cfg, args, err, sizeof(err)) == -1, "%s accepted", bad[i]);
        config_free(&cfg);
        ck_assert_msg(strstr(err, "OUTBOX_PG_URL") != NULL, "error: %s", err);
        ck_assert_msg(strstr(err, "s3cret") == NULL, "the error shows the password: %s", err);
        ck_assert_msg(strchr(err, '\n') == NULL, "error is not one line: %s", err);
    }
}
END_TEST

START_TEST(test_nats_auth_pairing)
{
    char *secret = temp_file("hunter2\n");
    char user[] = "--nats-user=relay", pass[512], token[512];
    snprintf(pass, sizeof(pass), "--nats-password-file=%s", secret);
    snprintf(token, sizeof(token), "--nats-token-file=%s", secret);

    const char *user_only[] = {user, NULL};
    expect_error(user_only, "OUTBOX_NATS_PASSWORD_FILE", "go together");
    const char *pass_only[] = {pass, NULL};
    expect_error(pass_only, "OUTBOX_NATS_USER", "go together");
    struct relay_config cfg;
    const char *both[] = {user, pass, NULL};
    expect_ok(both, &cfg);
    ck_assert_str_eq(cfg.nats_user, "relay");
    config_free(&cfg);
    /* One way to authenticate at a time. */
    const char *two_ways[] = {user, pass, token, NULL};
    expect_error(two_ways, "OUTBOX_NATS_CREDS", "only one of");
    /* Files must be readable at start, not at the first reconnect. */
    const char *missing[] = {user, "--nats-password-file=/nonexistent/outbox-pass", NULL};
    expect_error(missing, "OUTBOX_NATS_PASSWORD_FILE", "cannot read");
    const char *cert_only[] = {"--nats-tls-cert=/etc/hostname", NULL};
    expect_error(cert_only, "OUTBOX_NATS_TLS_KEY", "go together");
    const char *key_only[] = {"--nats-tls-key=/etc/hostname", NULL};
    expect_error(key_only, "OUTBOX_NATS_TLS_CERT", "go together");
    const char *ca_missing[] = {"--nats-tls-ca=/nonexistent/ca.pem", NULL};
    expect_error(ca_missing, "OUTBOX_NATS_TLS_CA", "cannot read");
    unlink(secret);
    free(secret);
}
END_TEST

START_TEST(test_read_secret)
{
    char err[256];
    char *path = temp_file("s3cret\r\nsecond line\n");
    char *s = config_read_secret(path, err, sizeof(err));
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "s3cret");
    free(s);
    unlink(path);
    free(path);
    path = temp_file("");
    ck_assert_ptr_null(config_read_secret(path, err, sizeof(err)));
    ck_assert_msg(strstr(err, "is empty") != NULL, "%s", err);
    unlink(path);
    free(path);
    ck_assert_ptr_null(config_read_secret("/nonexistent/secret", err, sizeof(err)));
    ck_assert_msg(strstr(err, "cannot read") != NULL, "%s", err);
}
END_TEST

/* ---- redaction --------------------------------------------------------- */

static const struct {
    const char *in, *out;
} redactions[] = {
    /* libpq URIs */
    {"postgresql://relay:s3cret@db.example:5432/app", "postgresql://relay:***@db.example:5432/app"},
    {"postgres://relay@db.example/app", "postgres://relay@db.example/app"},
    {"postgresql://db.example/app", "postgresql://db.example/app"},
    {"postgresql://relay:p@ss@db.example/app", "postgresql://relay:***@db.example/app"},
    {"postgresql://relay:@db.example/app", "postgresql://relay:@db.example/app"},
    {"postgresql://u:a@h1:5432,h2:5433/app?sslmode=require",
     "postgresql://u:***@h1:5432,h2:5433/app?sslmode=require"},
    {"postgresql://db.example/app?user=u&password=s3cret&sslmode=require",
     "postgresql://db.example/app?user=u&password=***&sslmode=require"},
    /* key=value strings, quoted or not */
    {"host=db.example password=s3cret dbname=app", "host=db.example password=*** dbname=app"},
    {"password=s3cret", "password=***"},
    {"host=db password='s3 cr\\'et' dbname=app", "host=db password=*** dbname=app"},
    {"host=db password = s3cret dbname=app", "host=db password = *** dbname=app"},
    {"host=db password= 's3 cret'", "host=db password= ***"},
    {"host=db sslpassword=keypass sslmode=verify-full",
     "host=db sslpassword=*** sslmode=verify-full"},
    {"host=db user=password dbname=app", "host=db user=password dbname=app"},
    {"host=db mypassword=x", "host=db mypassword=x"},
    {"", ""},
    /* nats server lists: passwords, and a lone user name is a token */
    {"nats://relay:s3cret@a:4222,nats://relay:s3cret@b:4222",
     "nats://relay:***@a:4222,nats://relay:***@b:4222"},
    {"nats://a:4222,tls://u:pw@b:4443", "nats://a:4222,tls://u:***@b:4443"},
    {"nats://s3cretToken@a:4222", "nats://***@a:4222"},
    {"tls://s3cretToken@a:4443,nats://b:4222", "tls://***@a:4443,nats://b:4222"},
    {"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
};

START_TEST(test_redact)
{
    char buf[512];
    config_redact(redactions[_i].in, buf, sizeof(buf));
    ck_assert_msg(strcmp(buf, redactions[_i].out) == 0, "\"%s\" -> \"%s\", want \"%s\"",
                  redactions[_i].in, buf, redactions[_i].out);
}
END_TEST

START_TEST(test_redact_edges)
{
    char buf[512];
    /* A secret shorter than the mask, and a NULL string. */
    config_redact("nats://u:p@h:1", buf, sizeof(buf));
    ck_assert_str_eq(buf, "nats://u:***@h:1");
    config_redact(NULL, buf, sizeof(buf));
    ck_assert_str_eq(buf, "");
    /* Truncated to the buffer, never overrun, and still without the secret. */
    char small[24];
    config_redact("postgresql://relay:s3cret@db.example:5432/app", small, sizeof(small));
    ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
    ck_assert_ptr_null(strstr(small, "s3cret"));
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, clear_outbox_env, NULL);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_env_then_flags_win);
    tcase_add_test(tc, test_no_verbs);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_loop_test(tc, test_bad_number_names_variable, 0, ARRAY_LEN(bad_numbers));
    tcase_add_test(tc, test_bad_number_flag_names_variable);
    tcase_add_test(tc, test_number_edges_accepted);
    tcase_add_test(tc, test_cross_setting_rules);
    tcase_add_test(tc, test_bool_parsing);
    tcase_add_test(tc, test_log_settings);
    suite_add_tcase(s, tc);

    tc = tcase_create("names");
    tcase_add_checked_fixture(tc, clear_outbox_env, NULL);
    tcase_add_loop_test(tc, test_table_validation, 0, ARRAY_LEN(tables));
    tcase_add_test(tc, test_channel_validation);
    tcase_add_test(tc, test_table_sql_quoting);
    tcase_add_test(tc, test_statement_deadline_below_the_lease);
    suite_add_tcase(s, tc);

    tc = tcase_create("connections");
    tcase_add_checked_fixture(tc, clear_outbox_env, NULL);
    tcase_add_loop_test(tc, test_nats_url_validation, 0, ARRAY_LEN(nats_urls));
    tcase_add_test(tc, test_pg_url_validation_hides_secrets);
    tcase_add_test(tc, test_nats_auth_pairing);
    tcase_add_test(tc, test_read_secret);
    tcase_add_loop_test(tc, test_redact, 0, ARRAY_LEN(redactions));
    tcase_add_test(tc, test_redact_edges);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- unknown OUTBOX_* variables ---- */

struct unknown_seen {
    char names[8][128];
    char suggestions[8][128]; /* "" for none */
    size_t n;
};

static void collect_unknown(void *arg, const char *name, const char *suggestion)
{
    struct unknown_seen *seen = arg;
    ck_assert_uint_lt(seen->n, 8);
    snprintf(seen->names[seen->n], sizeof seen->names[0], "%s", name);
    snprintf(seen->suggestions[seen->n], sizeof seen->suggestions[0], "%s",
             suggestion ? suggestion : "");
    seen->n++;
}

START_TEST(test_unknown_env)
{
    char *envp[] = {
        "PATH=/usr/bin",
        "OUTBOX_TABLE=outbox",                /* a setting */
        "OUTBOX_TYPO_SETTING=1",              /* unknown, like nothing */
        "OUTBOX_POLL_INTERVALL_MS=50",        /* one letter too many */
        "OUTBOX_NATSURL=nats://x",            /* one letter missing */
        "OUTBOX_BATCH_SIZ=5",                 /* near OUTBOX_BATCH_SIZE */
        "OUTBOX_X=1",                         /* short and far from anything */
        "outbox_table=lower",                 /* not OUTBOX_: not ours */
        "OUTBOX_RELAY_SERVICE_HOST=10.0.0.1", /* Kubernetes service links */
        "OUTBOX_RELAY_SERVICE_PORT=9841",
        "OUTBOX_RELAY_SERVICE_PORT_HTTP=9841",
        "OUTBOX_RELAY_PORT=tcp://10.0.0.1:9841",
        "OUTBOX_RELAY_PORT_9841_TCP=tcp://10.0.0.1:9841",
        "OUTBOX_RELAY_PORT_9841_TCP_ADDR=10.0.0.1",
        "OUTBOX_RELAY_PORT_9841_TCP_PROTO=tcp",
        "OUTBOX_HTTP_ADDR", /* no '=': still a known name */
        NULL,
    };
    struct unknown_seen seen = {.n = 0};
    ck_assert_uint_eq(config_unknown_env(envp, collect_unknown, &seen), 5);
    ck_assert_uint_eq(seen.n, 5);
    ck_assert_str_eq(seen.names[0], "OUTBOX_TYPO_SETTING");
    ck_assert_str_eq(seen.suggestions[0], "");
    ck_assert_str_eq(seen.names[1], "OUTBOX_POLL_INTERVALL_MS");
    ck_assert_str_eq(seen.suggestions[1], "OUTBOX_POLL_INTERVAL_MS");
    ck_assert_str_eq(seen.names[2], "OUTBOX_NATSURL");
    ck_assert_str_eq(seen.suggestions[2], "OUTBOX_NATS_URL");
    ck_assert_str_eq(seen.names[3], "OUTBOX_BATCH_SIZ");
    ck_assert_str_eq(seen.suggestions[3], "OUTBOX_BATCH_SIZE");
    ck_assert_str_eq(seen.names[4], "OUTBOX_X");
    ck_assert_str_eq(seen.suggestions[4], "");

    /* Every setting's own variable is known. */
    char *known[] = {"OUTBOX_PG_URL=", "OUTBOX_NATS_TLS_SERVER_NAME=x",
                     "OUTBOX_LOG_LEVEL_FILE=", NULL};
    seen.n = 0;
    ck_assert_uint_eq(config_unknown_env(known, collect_unknown, &seen), 0);
    ck_assert_uint_eq(config_unknown_env(NULL, collect_unknown, &seen), 0);
}
END_TEST

int main(void)
{
    Suite *s = config_suite();
    TCase *tc = tcase_create("unknown_env");
    tcase_add_test(tc, test_unknown_env);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
