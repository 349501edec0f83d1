/* Integration-test harness: a throw-away PostgreSQL 15 (and a streaming replica), SQL helpers. */
#include "harness_internal.h"
#include "outbox_relay/pg/outbox_table.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- PostgreSQL ---- */

/* Outside `it`: it_setup() clears that, and the choice is made before it. */
static bool it_pg_durable;
#define IT_PG_MAX_SETTINGS 4
static const char *it_pg_settings[IT_PG_MAX_SETTINGS];
static int it_pg_nsettings;
static bool it_pg_skip_migrations; /* it_pg_set_migrations(false) */

static bool it_pg_ready(void *arg)
{
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2", it.pg_port);
    return PQping(conninfo) == PQPING_OK;
}

static int it_sql_file_cmp(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int it_sql_file_filter(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 4 && strcmp(e->d_name + n - 4, ".sql") == 0;
}

static void it_pg_migrate(void)
{
    char port[16], log_path[PATH_MAX];
    snprintf(port, sizeof port, "%d", it.pg_port);
    snprintf(log_path, sizeof log_path, "%s/migrate.log", it.dir);
    struct dirent **files;
    int n = scandir(SOURCE_DIR "/sql", &files, it_sql_file_filter, it_sql_file_cmp);
    ck_assert_msg(n > 0, "no migrations in %s/sql", SOURCE_DIR);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/sql/%s", SOURCE_DIR, files[i]->d_name);
        const char *argv[] = {PG_BIN "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
                              "127.0.0.1",    "-p", port, "-U", "postgres",        "-d",
                              IT_DB,          "-f", path, NULL};
        it_run_tool(argv, log_path, false, 60000);
        free(files[i]);
    }
    free(files);
}

/*
 * A postmaster over `data` on `port`, on loopback and the test's socket
 * directory, with `extra` settings (NULL-terminated) after the common ones.
 * fsync=off and full_page_writes=off unless `durable`, for speed: the tests
 * crash the relay and restart PostgreSQL cleanly, never the operating
 * system, so durability against power loss is not what they measure.
 */
static pid_t it_postmaster_spawn(const char *data, int port, const char *log_path, bool durable,
                                 const char *const *extra)
{
    char port_arg[16], sockdir[PATH_MAX + 32];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    snprintf(sockdir, sizeof sockdir, "unix_socket_directories=%s", it.dir);
    const char *common[] = {
        "listen_addresses=127.0.0.1", sockdir, durable ? "fsync=on" : "fsync=off",
        durable ? "full_page_writes=on" : "full_page_writes=off", "max_connections=50"};
    enum { COMMON = sizeof common / sizeof common[0], MAX_EXTRA = IT_PG_MAX_SETTINGS + 2 };
    const char *argv[5 + 2 * (COMMON + MAX_EXTRA) + 1] = {PG_BIN "/postgres", "-D", data, "-p",
                                                          port_arg};
    size_t argc = 5;
    for (size_t k = 0; k < COMMON; k++) {
        argv[argc++] = "-c";
        argv[argc++] = common[k];
    }
    for (size_t k = 0; extra[k] != NULL; k++) {
        ck_assert_msg(k < MAX_EXTRA, "too many PostgreSQL settings");
        argv[argc++] = "-c";
        argv[argc++] = extra[k];
    }
    argv[argc] = NULL;
    return it_spawn(argv, NULL, log_path, true, SIGQUIT);
}

/* Starts the postmaster on it.pg_port over `data` and waits until it accepts connections. */
static void it_pg_spawn(const char *data)
{
    char log_path[PATH_MAX];
    snprintf(log_path, sizeof log_path, "%s/postgres.log", it.dir);
    const char *extra[IT_PG_MAX_SETTINGS + 2] = {"max_wal_size=1GB"};
    for (int k = 0; k < it_pg_nsettings; k++)
        extra[k + 1] = it_pg_settings[k];
    it.pg_pid = it_postmaster_spawn(data, it.pg_port, log_path, it_pg_durable, extra);
    int64_t deadline = it_now_ms() + 30000;
    while (!it_pg_ready(NULL)) {
        int st;
        if (waitpid(it.pg_pid, &st, WNOHANG) == it.pg_pid) {
            char why[64];
            it_untrack(it.pg_pid);
            it.pg_pid = 0;
            it_dump_tail("postgres log", log_path, 40);
            ck_abort_msg("postgres exited at start: %s", it_describe_status(st, why, sizeof why));
        }
        if (it_now_ms() >= deadline) {
            it_dump_tail("postgres log", log_path, 40);
            ck_abort_msg("postgres not ready on port %d within 30 s", it.pg_port);
        }
        it_sleep_ms(20);
    }
}

/*
 * A cluster as initdb, CREATE DATABASE and the migrations leave it is the
 * same for every test of a checkout, and making it costs seconds (more on a
 * loaded machine). The first test makes it and keeps a copy, named after
 * what made it (PostgreSQL's binaries, initdb's flags, the migrations'
 * contents), next to the tests' temp dirs; the others copy that. A lock
 * keeps two tests from writing the same template.
 */
static const char *const it_initdb_flags[] = {
    "-A",   "trust",      "-U",        "postgres",          "-E",
    "UTF8", "--locale=C", "--no-sync", "--no-instructions", NULL};

static uint64_t it_fnv(uint64_t h, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ULL;
    return h;
}

static void it_pg_template_path(char *out, size_t len)
{
    uint64_t h = it_fnv(14695981039346656037ULL, PG_BIN, strlen(PG_BIN));
    for (size_t i = 0; it_initdb_flags[i] != NULL; i++)
        h = it_fnv(h, it_initdb_flags[i], strlen(it_initdb_flags[i]) + 1);
    h = it_fnv(h, IT_DB, sizeof IT_DB);
    h = it_fnv(h, &it_pg_skip_migrations, sizeof it_pg_skip_migrations);
    struct dirent **files;
    int n = it_pg_skip_migrations
                ? 0
                : scandir(SOURCE_DIR "/sql", &files, it_sql_file_filter, it_sql_file_cmp);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/sql/%s", SOURCE_DIR, files[i]->d_name);
        char *text = it_read_file(path);
        h = it_fnv(h, files[i]->d_name, strlen(files[i]->d_name) + 1);
        h = it_fnv(h, text, strlen(text) + 1);
        free(text);
        free(files[i]);
    }
    if (n > 0)
        free(files);
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(out, len, "%s/outbox-it-pgtemplate-%016llx", base, (unsigned long long)h);
}

static void it_copy_tree(const char *from, const char *to)
{
    char log_path[PATH_MAX];
    snprintf(log_path, sizeof log_path, "%s/template.log", it.dir);
    const char *argv[] = {"/bin/cp", "-a", from, to, NULL};
    it_run_tool(argv, log_path, false, 120000);
}

/* Keeps the stopped cluster in `data` as the template, unless another test made it first. */
static void it_pg_template_save(const char *data, const char *template)
{
    char lock_path[PATH_MAX + 8], tmp[PATH_MAX + 32];
    snprintf(lock_path, sizeof lock_path, "%s.lock", template);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        if (fd >= 0)
            close(fd);
        return; /* no template: the next test makes its cluster itself */
    }
    if (access(template, F_OK) != 0) {
        snprintf(tmp, sizeof tmp, "%s.tmp-%d", template, (int)getpid());
        it_copy_tree(data, tmp);
        if (rename(tmp, template) != 0)
            fprintf(stderr, "harness: keeping the PostgreSQL template: %s\n", strerror(errno));
    }
    close(fd); /* releases the lock */
}

/* A new cluster in `data`: the template's copy, or initdb + database + migrations (then kept). */
static void it_pg_init_cluster(const char *data)
{
    it.pg_port = it_free_port();
    snprintf(it.pg_url, sizeof it.pg_url, "postgresql://postgres@127.0.0.1:%d/%s", it.pg_port,
             IT_DB);
    /* IT_PG_TEMPLATE=0: every test makes its own cluster (to compare, or to rule the copy out). */
    const char *use = getenv("IT_PG_TEMPLATE");
    bool templated = !use || strcmp(use, "0") != 0;
    char template[PATH_MAX];
    it_pg_template_path(template, sizeof template);
    if (templated && access(template, F_OK) == 0) {
        it_copy_tree(template, data);
        return;
    }
    char initdb_log[PATH_MAX];
    snprintf(initdb_log, sizeof initdb_log, "%s/initdb.log", it.dir);
    const char *argv[16] = {PG_BIN "/initdb", "-D", data};
    for (size_t i = 0; it_initdb_flags[i] != NULL; i++)
        argv[3 + i] = it_initdb_flags[i];
    it_run_tool(argv, initdb_log, true, 120000);
    it_pg_spawn(data);
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=postgres dbname=postgres",
             it.pg_port);
    PGconn *c = PQconnectdb(conninfo);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    it_pg_exec(c, "CREATE DATABASE " IT_DB);
    PQfinish(c);
    if (!it_pg_skip_migrations)
        it_pg_migrate();
    if (templated) {
        it_pg_stop();
        it_pg_template_save(data, template);
    }
}

void it_pg_start(void)
{
    it_setup();
    if (it.pg_pid > 0)
        return;
    char data[PATH_MAX];
    snprintf(data, sizeof data, "%s/pgdata", it.dir);
    if (!it.pg_initialized) {
        it_pg_init_cluster(data);
        it.pg_initialized = true;
    }
    if (it.pg_pid <= 0) /* it_pg_init_cluster leaves a cluster it made itself running */
        it_pg_spawn(data);
}

void it_pg_stop(void)
{
    if (it.pg_pid <= 0)
        return;
    /* SIGINT = fast shutdown: clients are disconnected, a checkpoint is written. */
    it_stop_process(it.pg_pid, SIGINT, 60000);
    it.pg_pid = 0;
}

void it_pg_restart(void)
{
    it_pg_stop();
    it_pg_start();
}

int it_pg_port(void)
{
    return it.pg_port;
}

pid_t it_pg_pid(void)
{
    return it.pg_pid;
}

void it_pg_set_durable(bool durable)
{
    it_pg_durable = durable;
}

void it_pg_add_setting(const char *setting)
{
    ck_assert_msg(it_pg_nsettings < IT_PG_MAX_SETTINGS, "too many PostgreSQL settings");
    it_pg_settings[it_pg_nsettings++] = setting;
}

const char *it_pg_url(void)
{
    return it.pg_url;
}

PGconn *it_pg_connect(void)
{
    ck_assert_msg(it.pg_initialized, "PostgreSQL not started");
    PGconn *c = PQconnectdb(it.pg_url);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect %s: %s", it.pg_url, PQerrorMessage(c));
    return c;
}

static PGresult *it_pg_vquery(PGconn *conn, const char *fmt, va_list ap)
{
    char *sql = NULL;
    ck_assert_msg(vasprintf(&sql, fmt, ap) >= 0, "out of memory");
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_COPY_IN)
        ck_abort_msg("SQL failed: %s  in: %.300s", PQresultErrorMessage(res), sql);
    free(sql);
    return res;
}

void it_pg_exec(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = it_pg_vquery(conn, fmt, ap);
    va_end(ap);
    PQclear(res);
}

PGresult *it_pg_query(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = it_pg_vquery(conn, fmt, ap);
    va_end(ap);
    return res;
}

int64_t it_pg_int(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = it_pg_vquery(conn, fmt, ap);
    va_end(ap);
    ck_assert_msg(PQntuples(res) == 1 && PQnfields(res) == 1 && !PQgetisnull(res, 0, 0),
                  "expected one non-NULL value from: %s", fmt);
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

struct it_pg_wait {
    PGconn *conn;
    const char *sql;
    int64_t want;
    int64_t last;
};

static bool it_pg_wait_cond(void *arg)
{
    struct it_pg_wait *w = arg;
    w->last = it_pg_int(w->conn, "%s", w->sql);
    return w->last == w->want;
}

int64_t it_pg_wait_int(PGconn *conn, const char *sql, int64_t want, int timeout_ms)
{
    struct it_pg_wait w = {.conn = conn, .sql = sql, .want = want, .last = -1};
    it_wait_until(it_pg_wait_cond, &w, timeout_ms);
    return w.last;
}

bool it_pg_insert_row(PGconn *conn, const char *subject, const char *key, const char *payload,
                      char *err, size_t errlen)
{
    const char *values[3] = {subject, key, payload};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO outbox (subject, ordering_key, payload)"
                                 " VALUES ($1, $2, convert_to($3, 'UTF8'))",
                                 3, NULL, values, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
    PQclear(res);
    return ok;
}

void it_pg_dump_row_states(PGconn *conn)
{
    PGresult *res = it_pg_query(conn, "SELECT status, attempts, last_error, count(*) FROM outbox"
                                      " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
    for (int i = 0; i < PQntuples(res); i++)
        fprintf(stderr, "rows: %s, %s attempts, \"%s\": %s\n", PQgetvalue(res, i, 0),
                PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
    PQclear(res);
}

#define IT_PUBLISHED_SQL "SELECT count(*) FROM outbox WHERE status = 'published'"

int64_t it_pg_published(PGconn *conn)
{
    return it_pg_int(conn, IT_PUBLISHED_SQL);
}

int64_t it_pg_wait_published(PGconn *conn, int64_t want, int timeout_ms)
{
    return it_pg_wait_int(conn, IT_PUBLISHED_SQL, want, timeout_ms);
}

static bool it_pg_published_reached(void *arg)
{
    struct it_pg_wait *w = arg;
    w->last = it_pg_published(w->conn);
    return w->last >= w->want;
}

void it_pg_wait_published_reach(PGconn *conn, int64_t want, int timeout_ms, const char *what)
{
    struct it_pg_wait w = {.conn = conn, .want = want, .last = -1};
    ck_assert_msg(it_wait_until(it_pg_published_reached, &w, timeout_ms),
                  "no progress %s: %lld rows published, waited for %lld", what, (long long)w.last,
                  (long long)w.want);
}

void it_pg_wait_progress(PGconn *conn, int64_t more, int timeout_ms, const char *what)
{
    it_pg_wait_published_reach(conn, it_pg_published(conn) + more, timeout_ms, what);
}

void it_pg_record_marks(PGconn *conn)
{
    it_pg_exec(conn,
               "CREATE TABLE mark_log (id bigint, status text, attempts int,"
               " next_attempt_at timestamptz, last_error text, at timestamptz,"
               " statement_at timestamptz);"
               "CREATE FUNCTION mark_log_row() RETURNS trigger LANGUAGE plpgsql AS $$"
               " BEGIN INSERT INTO mark_log VALUES (NEW.id, NEW.status, NEW.attempts,"
               "   NEW.next_attempt_at, NEW.last_error, clock_timestamp(),"
               "   statement_timestamp()); RETURN NEW; END $$;"
               /* BEFORE: `at` is read as each row is updated. An AFTER trigger fires only at
                  the end of the statement, milliseconds later for a batch on a loaded machine. */
               "CREATE TRIGGER mark_log BEFORE UPDATE ON outbox"
               " FOR EACH ROW EXECUTE FUNCTION mark_log_row()");
}

int64_t it_pg_relay_lock_holders(PGconn *conn)
{
    return it_pg_int(conn, "SELECT count(DISTINCT l.pid) FROM pg_locks l"
                           " JOIN pg_stat_activity a USING (pid)"
                           " WHERE l.locktype = 'advisory' AND l.granted"
                           "   AND l.classid = " OUTBOX_CLASS_SQL(
                               OUTBOX_LOCK_CLASS) "   AND a.application_name = 'outbox-relay'");
}

/* ---- PostgreSQL without the outbox schema, and a streaming replica ---- */

void it_pg_set_migrations(bool migrate)
{
    it_pg_skip_migrations = !migrate;
}

void it_pg_apply_migrations(void)
{
    ck_assert_msg(it.pg_pid > 0, "PostgreSQL not running");
    it_pg_migrate();
}

void it_pg_stop_immediate(void)
{
    if (it.pg_pid <= 0)
        return;
    /* SIGQUIT = immediate shutdown: backends are killed, no checkpoint. */
    it_stop_process(it.pg_pid, SIGQUIT, 30000);
    it.pg_pid = 0;
}

/* Outside `it` as well: it_teardown() stops it before the primary. */
static struct {
    pid_t owner; /* the process that started it */
    pid_t pid;
    int port;
    char url[256];
} it_replica;

static bool it_replica_ready(void *arg)
{
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2",
             it_replica.port);
    return PQping(conninfo) == PQPING_OK;
}

/* Returns true when the one-row, one-column query `sql` on conn answers `want`. */
static bool it_pg_answers(PGconn *conn, const char *sql, const char *want)
{
    PGresult *res = PQexec(conn, sql);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
              strcmp(PQgetvalue(res, 0, 0), want) == 0;
    PQclear(res);
    return ok;
}

struct it_pg_answer {
    PGconn *conn;
    const char *sql, *want;
};

static bool it_pg_answer_cond(void *arg)
{
    struct it_pg_answer *a = arg;
    return it_pg_answers(a->conn, a->sql, a->want);
}

void it_pg_replica_start(bool synchronous)
{
    ck_assert_msg(it.pg_pid > 0, "start the primary before its replica");
    ck_assert_msg(it_replica.pid == 0, "one replica per test");
    char data[PATH_MAX], log_path[PATH_MAX], primary_port[16];
    snprintf(data, sizeof data, "%s/pgreplica", it.dir);
    snprintf(log_path, sizeof log_path, "%s/replica.log", it.dir);
    snprintf(primary_port, sizeof primary_port, "%d", it.pg_port);
    /* -R writes standby.signal and primary_conninfo; -c fast: no wait for a checkpoint. */
    const char *backup[] = {PG_BIN "/pg_basebackup",
                            "-h",
                            "127.0.0.1",
                            "-p",
                            primary_port,
                            "-U",
                            "postgres",
                            "-D",
                            data,
                            "-R",
                            "-X",
                            "stream",
                            "-c",
                            "fast",
                            "--no-sync",
                            NULL};
    char backup_log[PATH_MAX];
    snprintf(backup_log, sizeof backup_log, "%s/basebackup.log", it.dir);
    it_run_tool(backup, backup_log, true, 120000);

    it_replica.port = it_free_port();
    it_replica.owner = getpid();
    snprintf(it_replica.url, sizeof it_replica.url, "postgresql://postgres@127.0.0.1:%d/%s",
             it_replica.port, IT_DB);
    /* The replica never waits for a standby of its own, promoted or not. */
    const char *extra[] = {"synchronous_standby_names=", NULL};
    it_replica.pid = it_postmaster_spawn(data, it_replica.port, log_path, false, extra);
    if (!it_wait_until(it_replica_ready, NULL, 30000)) {
        it_dump_tail("replica log", log_path, 40);
        ck_abort_msg("replica not ready on port %d within 30 s", it_replica.port);
    }

    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=postgres dbname=postgres",
             it.pg_port);
    PGconn *c = PQconnectdb(conninfo);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    struct it_pg_answer streaming = {
        c, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", "1"};
    if (!it_wait_until(it_pg_answer_cond, &streaming, 30000)) {
        it_dump_tail("replica log", log_path, 40);
        ck_abort_msg("the replica does not stream from the primary within 30 s");
    }
    if (synchronous) {
        it_pg_exec(c, "ALTER SYSTEM SET synchronous_standby_names = '*'");
        it_pg_exec(c, "SELECT pg_reload_conf()");
        struct it_pg_answer sync = {
            c, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", "1"};
        ck_assert_msg(it_wait_until(it_pg_answer_cond, &sync, 30000),
                      "the replica did not become synchronous within 30 s");
    }
    PQfinish(c);
}

int it_pg_replica_port(void)
{
    return it_replica.port;
}

PGconn *it_pg_replica_connect(void)
{
    ck_assert_msg(it_replica.pid > 0, "no replica running");
    PGconn *c = PQconnectdb(it_replica.url);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect %s: %s", it_replica.url,
                  PQerrorMessage(c));
    return c;
}

void it_pg_replica_promote(void)
{
    PGconn *c = it_pg_replica_connect();
    /* wait => true: returns once the promotion is complete (or 60 s passed). */
    ck_assert_msg(it_pg_answers(c, "SELECT pg_promote(true, 60)", "t"), "pg_promote failed: %s",
                  PQerrorMessage(c));
    struct it_pg_answer writable = {c, "SELECT pg_is_in_recovery()", "f"};
    ck_assert_msg(it_wait_until(it_pg_answer_cond, &writable, 30000),
                  "the replica still in recovery 30 s after pg_promote");
    PQfinish(c);
}

void it_pg_replica_teardown(void)
{
    if (it_replica.owner == getpid() && it_replica.pid > 0)
        it_stop_process(it_replica.pid, SIGQUIT, 10000);
    memset(&it_replica, 0, sizeof it_replica);
}
