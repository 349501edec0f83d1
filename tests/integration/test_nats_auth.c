/* NATS security: TLS (CA, server name, client certificate), user + password file, token file;
 * refused credentials give a clear error, a relay that stays up and unready, and --check fails. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM       "IT_AUTH"
#define PASSWORD     "NATSPASS-MARKER-5e1b"
#define WRONG        "NATSPASS-WRONG-0c77"
#define TOKEN        "NATSTOKEN-MARKER-a9d2"
#define WRONG_TOKEN  "NATSTOKEN-WRONG-31fe"
#define NATS_TEST_CN "nats.test"
/* The user nkey pair of the NATS documentation's examples: a test key, public on purpose. */
#define NKEY_SEED "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
#define NKEY_USER "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"

static char paths[8][512];
enum { CA, SERVER_PEM, SERVER_KEY, NAMED_PEM, NAMED_KEY, CLIENT_PEM, CLIENT_KEY, SCRIPT };

static const char *path_of(int which)
{
    static const char *const names[] = {"ca.pem",    "server.pem", "server.key", "named.pem",
                                        "named.key", "client.pem", "client.key", "certs.sh"};
    snprintf(paths[which], sizeof paths[which], "%s/%s", it_dir(), names[which]);
    return paths[which];
}

/*
 * A throw-away CA; a server certificate for 127.0.0.1 and localhost; one for
 * nats.test only (to need OUTBOX_NATS_TLS_SERVER_NAME); a client certificate.
 */
static void make_certs(void)
{
    FILE *f = fopen(path_of(SCRIPT), "w");
    ck_assert_ptr_nonnull(f);
    fprintf(
        f,
        "set -e\ncd '%s'\n"
        "key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \"$@\"; }\n"
        "key -x509 -keyout ca.key -out ca.pem -days 2 -subj /CN=outbox-it-ca\n"
        "leaf() {\n"
        "  key -keyout $1.key -out $1.csr -subj \"/CN=$2\"\n"
        "  printf 'subjectAltName=%%s\\nextendedKeyUsage=%%s\\n' \"$3\" \"$4\" > $1.ext\n"
        "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \\\n"
        "    -extfile $1.ext -out $1.pem\n"
        "}\n"
        "leaf server localhost DNS:localhost,IP:127.0.0.1 serverAuth\n"
        "leaf named " NATS_TEST_CN " DNS:" NATS_TEST_CN " serverAuth\n"
        "leaf client outbox-relay DNS:outbox-relay clientAuth\n",
        it_dir());
    ck_assert_int_eq(fclose(f), 0);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "sh '%s' > '%s/certs.log' 2>&1", path_of(SCRIPT), it_dir());
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "making certificates failed (%d); see %s/certs.log", rc, it_dir());
}

static void write_file(const char *name, const char *text, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", it_dir(), name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* nats-server with `conf`, (re)started. */
static void nats_with(const char *conf)
{
    it_nats_stop();
    it_nats_set_config(conf);
    it_nats_start();
}

struct relay_http {
    struct it_relay *relay;
    int port;
};

/* The relay against nats-server's port with the given URL scheme and settings. */
static struct relay_http start_relay(const char *scheme, const char *const *extra)
{
    char url[128];
    snprintf(url, sizeof url, "OUTBOX_NATS_URL=%s://127.0.0.1:%d", scheme, it_nats_port());
    const char *env[24] = {url, "OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.auth.>",
                           "OUTBOX_RECONNECT_MAX_MS=1000", NULL};
    int i = 4;
    for (; extra != NULL && *extra != NULL && i < 23; extra++)
        env[i++] = *extra;
    struct it_relay *relay = it_relay_start_http(env, NULL);
    return (struct relay_http){.relay = relay, .port = relay->http_port};
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

/* Inserts `rows` rows tagged `tag` and waits until the relay has published them all. */
static void relays_rows(struct relay_http *rh, const char *tag, int rows)
{
    struct ready_want w = {rh->port, 200};
    if (!it_wait_until(readyz_is, &w, 15000)) {
        it_relay_dump_log(rh->relay);
        ck_abort_msg("%s: the relay never became ready", tag);
    }
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.auth.%s', 'x'"
               " FROM generate_series(1, %d)",
               tag, rows);
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM outbox WHERE subject = 'it.auth.%s' AND status = 'published'",
             tag);
    int64_t got = it_pg_wait_int(conn, sql, rows, 15000);
    if (got != rows)
        it_relay_dump_log(rh->relay);
    ck_assert_msg(got == rows, "%s: %lld of %d rows published", tag, (long long)got, rows);
    PQfinish(conn);
}

/*
 * Refused: the relay says why, again on each new attempt (not silent), stays
 * up (it_wait_until fails the test if it exits) and is not ready.
 */
static void refused_clearly(struct relay_http *rh, const char *why)
{
    if (!it_relay_wait_log(rh->relay, why, 4, 15000) ||
        !it_relay_wait_logged(rh->relay, LOG_MSG_NATS_REOPENING, 2, 15000)) {
        it_relay_dump_log(rh->relay);
        ck_abort_msg("the relay did not say \"%s\" at each of two attempts", why);
    }
    ck_assert_int_eq(it_http_status(rh->port, "/readyz"), 503);
    ck_assert_int_eq(it_http_status(rh->port, "/healthz"), 200);
}

START_TEST(test_tls_ca_server_name_and_client_certificate)
{
    it_pg_start();
    make_certs();
    char conf[2048];
    /* Client certificates required. */
    snprintf(conf, sizeof conf,
             "tls {\n  cert_file: \"%s\"\n  key_file: \"%s\"\n  ca_file: \"%s\"\n"
             "  verify: true\n  timeout: 2\n}\n",
             path_of(SERVER_PEM), path_of(SERVER_KEY), path_of(CA));
    nats_with(conf);

    char ca[600], cert[600], key[600];
    snprintf(ca, sizeof ca, "OUTBOX_NATS_TLS_CA=%s", path_of(CA));
    snprintf(cert, sizeof cert, "OUTBOX_NATS_TLS_CERT=%s", path_of(CLIENT_PEM));
    snprintf(key, sizeof key, "OUTBOX_NATS_TLS_KEY=%s", path_of(CLIENT_KEY));
    const char *mutual[] = {ca, cert, key, NULL};
    struct relay_http rh = start_relay("tls", mutual);
    relays_rows(&rh, "mutual", 20);
    it_relay_stop(rh.relay);

    const char *no_client_cert[] = {ca, NULL};
    rh = start_relay("tls", no_client_cert);
    refused_clearly(&rh, "TLS client certificate missing or refused");
    it_relay_stop(rh.relay);

    /* The server's certificate names nats.test only: the relay checks the name. */
    snprintf(conf, sizeof conf, "tls {\n  cert_file: \"%s\"\n  key_file: \"%s\"\n  timeout: 2\n}\n",
             path_of(NAMED_PEM), path_of(NAMED_KEY));
    nats_with(conf);
    const char *by_address[] = {ca, NULL};
    rh = start_relay("tls", by_address);
    refused_clearly(&rh, "TLS failed");
    ck_assert(it_relay_log_contains(rh.relay, "mismatch"));
    it_relay_stop(rh.relay);

    const char *by_name[] = {ca, "OUTBOX_NATS_TLS_SERVER_NAME=" NATS_TEST_CN, NULL};
    rh = start_relay("tls", by_name);
    relays_rows(&rh, "named", 20);
    it_relay_stop(rh.relay);

    /* Without the CA, the system's trust store does not know the test CA. */
    const char *no_ca[] = {"OUTBOX_NATS_TLS_SERVER_NAME=" NATS_TEST_CN, NULL};
    rh = start_relay("tls", no_ca);
    refused_clearly(&rh, "TLS failed");
    it_relay_stop(rh.relay);

    /* --check verifies the same way. */
    char url[128];
    snprintf(url, sizeof url, "OUTBOX_NATS_URL=tls://127.0.0.1:%d", it_nats_port());
    const char *check_ok[] = {url, ca, "OUTBOX_NATS_TLS_SERVER_NAME=" NATS_TEST_CN, NULL};
    const char *check_args[] = {"--check", NULL};
    char *out = NULL;
    int rc = it_relay_run(check_ok, check_args, 30000, &out);
    ck_assert_msg(rc == 0, "--check exited %d: %s", rc, out);
    free(out);
    const char *check_bad[] = {url, ca, NULL};
    rc = it_relay_run(check_bad, check_args, 30000, &out);
    ck_assert_msg(rc != 0 && strstr(out, "TLS failed") != NULL && strstr(out, "mismatch") != NULL,
                  "--check exited %d: %s", rc, out);
    free(out);
}
END_TEST

START_TEST(test_user_password_and_token_from_files)
{
    it_pg_start();
    char right[600], wrong[600], token[600], wrong_token[600], path[512];
    write_file("nats.password", PASSWORD "\n", path, sizeof path);
    snprintf(right, sizeof right, "OUTBOX_NATS_PASSWORD_FILE=%s", path);
    write_file("wrong.password", WRONG "\n", path, sizeof path);
    snprintf(wrong, sizeof wrong, "OUTBOX_NATS_PASSWORD_FILE=%s", path);
    write_file("nats.token", TOKEN "\n", path, sizeof path);
    snprintf(token, sizeof token, "OUTBOX_NATS_TOKEN_FILE=%s", path);
    write_file("wrong.token", WRONG_TOKEN "\n", path, sizeof path);
    snprintf(wrong_token, sizeof wrong_token, "OUTBOX_NATS_TOKEN_FILE=%s", path);

    nats_with("authorization {\n  user: relay\n  password: \"" PASSWORD "\"\n}\n");
    const char *user_env[] = {"OUTBOX_NATS_USER=relay", right, NULL};
    struct relay_http rh = start_relay("nats", user_env);
    relays_rows(&rh, "password", 20);
    it_relay_stop(rh.relay);

    const char *wrong_env[] = {"OUTBOX_NATS_USER=relay", wrong, NULL};
    struct relay_http refused = start_relay("nats", wrong_env);
    refused_clearly(&refused,
                    "authorization failed (OUTBOX_NATS_USER / OUTBOX_NATS_PASSWORD_FILE)");

    char url[128];
    snprintf(url, sizeof url, "OUTBOX_NATS_URL=nats://127.0.0.1:%d", it_nats_port());
    const char *check_args[] = {"--check", NULL};
    const char *check_wrong[] = {url, "OUTBOX_NATS_USER=relay", wrong, NULL};
    char *out = NULL;
    int rc = it_relay_run(check_wrong, check_args, 30000, &out);
    ck_assert_msg(rc == 1 && strstr(out, "FAIL nats: ") != NULL &&
                      strstr(out, "authorization failed") != NULL,
                  "--check exited %d: %s", rc, out);
    ck_assert_msg(strstr(out, WRONG) == NULL, "--check printed the password: %s", out);
    free(out);
    const char *check_right[] = {url, "OUTBOX_NATS_USER=relay", right, NULL};
    rc = it_relay_run(check_right, check_args, 30000, &out);
    ck_assert_msg(rc == 0, "--check exited %d: %s", rc, out);
    free(out);

    /* The server side changes to what the refused relay holds: it connects without a restart. */
    nats_with("authorization {\n  user: relay\n  password: \"" WRONG "\"\n}\n");
    relays_rows(&refused, "recovered", 10);
    it_relay_stop(refused.relay);

    nats_with("authorization {\n  token: \"" TOKEN "\"\n}\n");
    const char *token_env[] = {token, NULL};
    rh = start_relay("nats", token_env);
    relays_rows(&rh, "token", 20);
    it_relay_stop(rh.relay);
    const char *wrong_token_env[] = {wrong_token, NULL};
    rh = start_relay("nats", wrong_token_env);
    refused_clearly(&rh, "authorization failed (OUTBOX_NATS_TOKEN_FILE)");
    it_relay_stop(rh.relay);

    /* An nkey user: the seed file holds the seed and, as `nk -pubout` writes it, the public key. */
    char nkey[600], seed_only[600];
    write_file("user.nk", NKEY_SEED "\n" NKEY_USER "\n", path, sizeof path);
    snprintf(nkey, sizeof nkey, "OUTBOX_NATS_NKEY_SEED=%s", path);
    write_file("seed-only.nk", NKEY_SEED "\n", path, sizeof path);
    snprintf(seed_only, sizeof seed_only, "OUTBOX_NATS_NKEY_SEED=%s", path);
    nats_with("authorization {\n  users: [ { nkey: " NKEY_USER " } ]\n}\n");
    const char *nkey_env[] = {nkey, NULL};
    rh = start_relay("nats", nkey_env);
    relays_rows(&rh, "nkey", 20);
    it_relay_stop(rh.relay);
    /* nats.c cannot derive the public key: without it, a clear refusal at start. */
    const char *seed_only_env[] = {url, seed_only, NULL};
    rc = it_relay_run(seed_only_env, NULL, 30000, &out);
    ck_assert_msg(rc == 2 && strstr(out, "OUTBOX_NATS_NKEY_SEED") != NULL &&
                      strstr(out, "holds no user public key") != NULL,
                  "exited %d: %s", rc, out);
    free(out);

    /* No relay ever logged a secret, right or wrong. */
    static const char *const secrets[] = {PASSWORD, WRONG, TOKEN, WRONG_TOKEN, NKEY_SEED};
    for (int r = 1;; r++) {
        char log_path[600];
        snprintf(log_path, sizeof log_path, "%s/relay-%d.log", it_dir(), r);
        FILE *f = fopen(log_path, "r");
        if (f == NULL)
            break;
        fclose(f);
        struct it_relay fake = {0};
        snprintf(fake.log_path, sizeof fake.log_path, "%s", log_path);
        for (size_t k = 0; k < sizeof secrets / sizeof secrets[0]; k++)
            ck_assert_msg(!it_relay_log_contains(&fake, secrets[k]), "%s contains %s", log_path,
                          secrets[k]);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_auth");
    TCase *tc = it_tcase(suite, "nats_auth", it_setup, 180);
    tcase_add_test(tc, test_tls_ca_server_name_and_client_certificate);
    tcase_add_test(tc, test_user_password_and_token_from_files);
    return run_suite(suite);
}
