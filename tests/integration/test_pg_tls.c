/* PostgreSQL security through libpq's own settings: TLS with sslmode=verify-full and a client
 * certificate (cert authentication), as docs/configuration.md documents it. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_PG_TLS"

/* A CA; a server certificate for localhost and 127.0.0.1; a client certificate for certuser. */
static void make_certs(void)
{
    char script[512], cmd[1200];
    snprintf(script, sizeof script, "%s/certs.sh", it_dir());
    FILE *f = fopen(script, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(
        f,
        "set -e\ncd '%s'\n"
        "key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \"$@\"; }\n"
        "key -x509 -keyout ca.key -out ca.pem -days 2 -subj /CN=outbox-it-pg-ca\n"
        "leaf() {\n"
        "  key -keyout $1.key -out $1.csr -subj \"/CN=$2\"\n"
        "  printf 'subjectAltName=%%s\\n' \"$3\" > $1.ext\n"
        "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \\\n"
        "    -extfile $1.ext -out $1.pem\n"
        "}\n"
        "leaf server localhost DNS:localhost,IP:127.0.0.1\n"
        "leaf client certuser DNS:certuser\n"
        "key -x509 -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=someone-else\n",
        it_dir());
    ck_assert_int_eq(fclose(f), 0);
    snprintf(cmd, sizeof cmd, "sh '%s' > '%s/certs.log' 2>&1", script, it_dir());
    ck_assert_msg(system(cmd) == 0, "making certificates failed; see %s/certs.log", it_dir());
}

/* Copies a file into the data directory, owned like the directory, mode 0600. */
static void install_for_server(const char *from, const char *to)
{
    char src[512], dst[512], cmd[1200];
    snprintf(src, sizeof src, "%s/%s", it_dir(), from);
    snprintf(dst, sizeof dst, "%s/pgdata/%s", it_dir(), to);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", src, dst);
    ck_assert_int_eq(system(cmd), 0);
    struct stat st;
    char pgdata[512];
    snprintf(pgdata, sizeof pgdata, "%s/pgdata", it_dir());
    ck_assert_int_eq(stat(pgdata, &st), 0);
    ck_assert_int_eq(chown(dst, st.st_uid, st.st_gid), 0);
    ck_assert_int_eq(chmod(dst, 0600), 0);
}

static bool ready(void *arg)
{
    return it_http_status(*(int *)arg, "/readyz") == 200;
}

START_TEST(test_verify_full_with_client_certificate)
{
    it_start_servers();
    make_certs();
    install_for_server("server.pem", "server.crt");
    install_for_server("server.key", "server.key");
    install_for_server("ca.pem", "root.crt");
    /* certuser may only come over TLS, with a certificate whose CN is its name. */
    char hba[512], rest[65536];
    snprintf(hba, sizeof hba, "%s/pgdata/pg_hba.conf", it_dir());
    FILE *f = fopen(hba, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(rest, 1, sizeof rest - 1, f);
    rest[n] = '\0';
    fclose(f);
    f = fopen(hba, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "hostssl all certuser 127.0.0.1/32 cert\nhost all certuser 127.0.0.1/32 reject\n%s",
            rest);
    ck_assert_int_eq(fclose(f), 0);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "ALTER SYSTEM SET ssl = on");
    it_pg_exec(conn, "ALTER SYSTEM SET ssl_ca_file = 'root.crt'");
    it_pg_exec(conn, "CREATE ROLE certuser LOGIN");
    it_pg_exec(conn, "GRANT SELECT, UPDATE, DELETE ON outbox TO certuser");
    it_pg_exec(conn, "SELECT pg_reload_conf()");
    PQfinish(conn);
    it_pg_restart(); /* certificate files are read at start (and reload); a restart is certain */

    char key_path[512];
    snprintf(key_path, sizeof key_path, "%s/client.key", it_dir());
    ck_assert_int_eq(chmod(key_path, 0600), 0); /* libpq refuses a key others can read */
    const char *subjects[] = {"it.pgtls.>", NULL};
    it_js_add_stream(STREAM, subjects);

    char url[1200];
    snprintf(url, sizeof url,
             "OUTBOX_PG_URL=host=localhost port=%d dbname=outbox_it user=certuser "
             "sslmode=verify-full sslrootcert=%s/ca.pem sslcert=%s/client.pem sslkey=%s",
             it_pg_port(), it_dir(), it_dir(), key_path);
    const char *env[] = {url, NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    int port = relay->http_port;
    if (!it_wait_until(ready, &port, 15000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay did not connect over TLS");
    }
    conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) SELECT 'it.pgtls.row', 'x'"
                     " FROM generate_series(1, 20)");
    ck_assert_int_eq(it_pg_wait_published(conn, 20, 15000), 20);
    /* The relay's own session is encrypted and authenticated by certificate. */
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM pg_stat_ssl s"
                                     " JOIN pg_stat_activity a USING (pid)"
                                     " WHERE a.usename = 'certuser' AND s.ssl"
                                     " AND s.client_dn = '/CN=certuser'"),
                     1);
    it_relay_signal(relay, SIGTERM);
    ck_assert(it_relay_wait(relay, 15000));
    ck_assert_int_eq(it_relay_exit_code(relay), 0);

    /* A CA that did not sign the server: refused, said so, not ready, still running. */
    snprintf(url, sizeof url,
             "OUTBOX_PG_URL=host=localhost port=%d dbname=outbox_it user=certuser "
             "sslmode=verify-full sslrootcert=%s/other-ca.pem sslcert=%s/client.pem sslkey=%s",
             it_pg_port(), it_dir(), it_dir(), key_path);
    relay = it_relay_start_http(env, NULL);
    port = relay->http_port;
    if (!it_relay_wait_log(relay, "certificate verify failed", 1, 15000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("no certificate error logged");
    }
    ck_assert_int_eq(it_http_status(port, "/readyz"), 503);
    it_relay_signal(relay, SIGTERM);
    ck_assert(it_relay_wait(relay, 15000));

    /* --check takes the same connection string. */
    snprintf(url, sizeof url,
             "OUTBOX_PG_URL=host=localhost port=%d dbname=outbox_it user=certuser "
             "sslmode=verify-full sslrootcert=%s/ca.pem sslcert=%s/client.pem sslkey=%s",
             it_pg_port(), it_dir(), it_dir(), key_path);
    const char *check_env[] = {url, NULL};
    const char *check_args[] = {"--check", NULL};
    char *out = NULL;
    int rc = it_relay_run(check_env, check_args, 30000, &out);
    ck_assert_msg(rc == 0, "--check exited %d: %s", rc, out);
    free(out);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("pg_tls");
    TCase *tc = it_tcase(suite, "pg_tls", it_setup, 120);
    tcase_add_test(tc, test_verify_full_with_client_certificate);
    return run_suite(suite);
}
