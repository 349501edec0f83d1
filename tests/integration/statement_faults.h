/*
 * The statement fault injector shared by test_statement_faults*.c: one
 * scenario, run once per row of a table of faults.
 *
 * The relay connects as the role `relay` (the example role outbox_relay plus
 * DELETE for retention) whose search_path starts with the schema `fault`.
 * There, functions shadowing the built-ins that exactly one of the relay's
 * statements calls, and triggers on the outbox, call fault.hit(kind):
 *
 *   claim          octet_length(bytea)       (the claim's byte cut)
 *   mark_<status>  BEFORE UPDATE row trigger (published, failed, dead)
 *   leader_lock    pg_try_advisory_lock(int, int) with the leader's class
 *   sleep_lock     pg_try_advisory_lock(int, int) with the sleep class
 *   watch          pg_backend_pid()          (a standby's look at the leader)
 *   sample         count(*)                  (only table_sample.c counts)
 *   retention      BEFORE DELETE statement trigger
 *
 * fault.hit fails the statement while its kind is armed in fault.ctl, at
 * most `times` times (0: until cleared), counting each fault in a sequence
 * (a sequence survives the rollback of the statement it failed). How: a
 * raised error, a real statement_timeout (a sleep past the role's), a real
 * lock_timeout (a lock the test holds), or the session terminating itself
 * mid-statement. Other rows of the table fail statements with what an
 * operator or PostgreSQL does: REVOKE, a CHECK constraint NOT VALID, a
 * read-only role; those are counted by the database's rolled-back
 * transactions. The heartbeat (SELECT 1) has nothing to shadow: the test
 * ends the leader's session itself.
 *
 * The promises checked after the fault is cleared: the relay (the ASan build
 * in the sanitized build tree) never exits; every row is published once,
 * in per-key order, read back by a JetStream consumer; the one invalid row
 * and no other is dead; work goes on (rows, retention).
 */
#ifndef OUTBOX_RELAY_IT_STATEMENT_FAULTS_H
#define OUTBOX_RELAY_IT_STATEMENT_FAULTS_H

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pg/outbox_table.h"

#define SF_STREAM "IT_FAULT"

enum sf_counted {
    SF_BY_HITS,      /* fault.hit's sequence */
    SF_BY_ROLLBACKS, /* pg_stat_database.xact_rollback since the fault was armed */
    SF_BY_TEST,      /* the test ends the relay's sessions itself `times` times */
};

enum sf_when {
    SF_WITH_ROWS,     /* armed, then rows inserted: the statement runs on them */
    SF_BEFORE_START,  /* armed before the relay starts (its first statements) */
    SF_BEFORE_ROWS,   /* armed, faults counted, only then rows (an idle relay's statements) */
    SF_SILENT_LEADER, /* two relays; the leader is stopped: a standby watches it */
};

struct sf_fault {
    const char *name;
    const char *kind;   /* fault.hit kind armed, or NULL */
    const char *mode;   /* 'raise', 'timeout', 'lock', 'terminate' */
    int times;          /* faults before clearing; with kind: fault.hit stops after that many */
    const char *inject; /* more SQL to make the statement fail, or NULL */
    const char *clear;  /* SQL undoing it, or NULL */
    enum sf_counted counted;
    enum sf_when when;
    bool reconnect; /* inject/clear take effect on new sessions: end the relay's */
};

static const char sf_schema_sql[] =
    "CREATE ROLE relay LOGIN IN ROLE outbox_relay;"
    "GRANT DELETE ON outbox TO relay;"
    "CREATE SCHEMA fault;"
    "GRANT USAGE ON SCHEMA fault TO relay;"
    "CREATE TABLE fault.ctl (kind text PRIMARY KEY, mode text NOT NULL, times int NOT NULL);"
    "CREATE SEQUENCE fault.hits;"
    "CREATE TABLE fault.blocker ();"
    "CREATE FUNCTION fault.hit(k text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog AS $$"
    " DECLARE c fault.ctl; n bigint;"
    " BEGIN"
    "  IF session_user <> 'relay' THEN RETURN; END IF;"
    "  SELECT * INTO c FROM fault.ctl WHERE kind = k;"
    "  IF NOT FOUND THEN RETURN; END IF;"
    "  SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO n FROM fault.hits;"
    "  IF c.times > 0 AND n >= c.times THEN RETURN; END IF;"
    "  PERFORM nextval('fault.hits');"
    "  IF c.mode = 'timeout' THEN PERFORM pg_sleep(30);"
    "  ELSIF c.mode = 'lock' THEN LOCK TABLE fault.blocker IN ACCESS EXCLUSIVE MODE;"
    "  ELSIF c.mode = 'terminate' THEN"
    "   PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(30);"
    "  END IF;"
    "  RAISE EXCEPTION 'fault injected into %', k;"
    " END $$;"
    "CREATE FUNCTION fault.octet_length(bytea) RETURNS int LANGUAGE plpgsql AS $$"
    " BEGIN PERFORM fault.hit('claim'); RETURN pg_catalog.octet_length($1); END $$;"
    "CREATE FUNCTION fault.pg_try_advisory_lock(int, int) RETURNS bool LANGUAGE plpgsql AS $$"
    " BEGIN PERFORM fault.hit(CASE WHEN $1 = " OUTBOX_CLASS_SQL(
        OUTBOX_LOCK_CLASS) " THEN 'leader_lock' ELSE 'sleep_lock' END);"
                           " RETURN pg_catalog.pg_try_advisory_lock($1, $2); END $$;"
                           "CREATE FUNCTION fault.pg_backend_pid() RETURNS int LANGUAGE plpgsql AS "
                           "$$"
                           " BEGIN PERFORM fault.hit('watch'); RETURN pg_catalog.pg_backend_pid(); "
                           "END $$;"
                           "CREATE FUNCTION fault.count_final(bigint) RETURNS bigint LANGUAGE "
                           "plpgsql AS $$"
                           " BEGIN PERFORM fault.hit('sample'); RETURN $1; END $$;"
                           "CREATE AGGREGATE fault.count(*) (sfunc = pg_catalog.int8inc, stype = "
                           "bigint,"
                           " initcond = '0', finalfunc = fault.count_final);"
                           "CREATE FUNCTION fault.on_mark() RETURNS trigger LANGUAGE plpgsql AS $$"
                           " BEGIN PERFORM fault.hit('mark_' || NEW.status); RETURN NEW; END $$;"
                           "CREATE TRIGGER fault_mark BEFORE UPDATE ON outbox FOR EACH ROW"
                           " EXECUTE FUNCTION fault.on_mark();"
                           "CREATE FUNCTION fault.on_delete() RETURNS trigger LANGUAGE plpgsql AS "
                           "$$"
                           " BEGIN PERFORM fault.hit('retention'); RETURN NULL; END $$;"
                           "CREATE TRIGGER fault_retention BEFORE DELETE ON outbox FOR EACH "
                           "STATEMENT"
                           " EXECUTE FUNCTION fault.on_delete();"
                           "ALTER ROLE relay SET search_path = fault, pg_catalog, public;"
                           /* Above every statement the relay runs on a small table; below the sleep
                              of 'timeout'. */
                           "ALTER ROLE relay SET statement_timeout = '3s';"
                           "ALTER ROLE relay SET lock_timeout = '300ms';";

/* Ends every session of the relays; how many. */
static int64_t sf_end_relay_sessions(PGconn *conn)
{
    return it_pg_int(conn, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                           " FROM pg_stat_activity WHERE usename = 'relay'");
}

static int64_t sf_rollbacks(PGconn *conn)
{
    return it_pg_int(conn, "SELECT xact_rollback FROM pg_stat_database"
                           " WHERE datname = current_database()");
}

static int64_t sf_hits(PGconn *conn)
{
    return it_pg_int(conn, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END"
                           " FROM fault.hits");
}

/* Rows first..last of the regular flow: five keys and some unkeyed rows, three subjects. */
static void sf_insert(PGconn *conn, int first, int last)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.fault.' || (g %% 3), convert_to(g::text, 'UTF8'),"
               " CASE WHEN g %% 6 = 5 THEN NULL ELSE 'k' || (g %% 5) END"
               " FROM generate_series(%d, %d) g",
               first, last);
}

/* The stream also takes it.later.>: the rows that failed for want of it go out. */
static void sf_stream_add_later(void)
{
    const char *subjects[] = {"it.fault.>", "it.later.>"};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = SF_STREAM;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 2;
    cfg.Storage = js_FileStorage;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_UpdateStream(&si, it_js(), &cfg, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "stream update: %s (%d)", natsStatus_GetText(s), (int)jerr);
    jsStreamInfo_Destroy(si);
}

struct sf_wait {
    PGconn *conn;
    const struct sf_fault *f;
    int64_t since; /* rollbacks when armed */
    int64_t want;
};

static int64_t sf_fired(struct sf_wait *w)
{
    switch (w->f->counted) {
    case SF_BY_HITS:
        return sf_hits(w->conn);
    case SF_BY_ROLLBACKS:
        return sf_rollbacks(w->conn) - w->since;
    default:
        return w->f->times; /* counted as the test ended them */
    }
}

static bool sf_has_fired(void *arg)
{
    struct sf_wait *w = arg;
    return sf_fired(w) >= w->want;
}

/* Every regular row published, the invalid row dead, the old published rows pruned. */
static bool sf_settled(void *arg)
{
    struct sf_wait *w = arg;
    return it_pg_int(w->conn, "SELECT count(*) FILTER (WHERE status = 'published'"
                              " AND subject <> 'it.fault.archive')"
                              " + 1000 * count(*) FILTER (WHERE status = 'dead')"
                              " + 1000000 * count(*) FILTER (WHERE subject = 'it.fault.archive')"
                              " FROM outbox") == w->want;
}

static bool sf_first_rows_out(void *arg)
{
    return it_pg_int(arg, "SELECT count(*) FROM outbox WHERE status = 'published'"
                          " AND subject <> 'it.fault.archive'") == 20;
}

static bool sf_leads(void *arg)
{
    return it_pg_relay_lock_holders(arg) == 1;
}

static const char *const sf_env_common[] = {
    "OUTBOX_POLL_INTERVAL_MS=100",
    "OUTBOX_RETRY_BASE_MS=50",
    "OUTBOX_RETRY_MAX_MS=200",
    "OUTBOX_MAX_ATTEMPTS=1000",
    "OUTBOX_METRICS_INTERVAL_MS=100",
    "OUTBOX_LEADER_LEASE_MS=1000",
    "OUTBOX_LEADER_RETRY_MS=100",
    "OUTBOX_RECONNECT_MAX_MS=200",
    "OUTBOX_RETENTION=1h",
    "OUTBOX_RETENTION_INTERVAL_MS=200",
    "OUTBOX_PUBLISH_TIMEOUT_MS=2000",
    NULL,
};

static struct it_relay *sf_start_relay(const char *pg_url, bool http)
{
    const char *env[32];
    size_t n = 0;
    for (; sf_env_common[n] != NULL; n++)
        env[n] = sf_env_common[n];
    env[n++] = pg_url;
    env[n] = NULL;
    return http ? it_relay_start_http(env, NULL) : it_relay_start(env, NULL);
}

static void sf_arm(PGconn *conn, const struct sf_fault *f, struct sf_wait *w)
{
    w->since = sf_rollbacks(conn);
    if (f->kind != NULL) {
        it_pg_exec(conn, "SELECT setval('fault.hits', 1, false)");
        it_pg_exec(conn, "INSERT INTO fault.ctl VALUES ('%s', '%s', %d)", f->kind, f->mode,
                   f->times == 1 ? 1 : 0);
    }
    if (f->inject != NULL)
        it_pg_exec(conn, "%s", f->inject);
    if (f->reconnect)
        sf_end_relay_sessions(conn);
}

static void sf_clear(PGconn *conn, const struct sf_fault *f)
{
    it_pg_exec(conn, "DELETE FROM fault.ctl");
    if (f->clear != NULL)
        it_pg_exec(conn, "%s", f->clear);
    if (f->reconnect)
        sf_end_relay_sessions(conn);
}

struct sf_round {
    PGconn *conn;
    char ended[512]; /* pids of the sessions ended so far, as an SQL list */
};

/* A relay session leads that is none of those ended. */
static bool sf_leads_anew(void *arg)
{
    struct sf_round *r = arg;
    return it_pg_int(r->conn,
                     "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
                     " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid"
                     " AND a.usename = 'relay' AND a.pid NOT IN (%s)",
                     OUTBOX_CLASS_SQL(OUTBOX_LOCK_CLASS), r->ended) == 1;
}

/* The test's own fault: end the relay's sessions `times` times, each once it leads again. */
static void sf_end_leader_sessions(PGconn *conn, int times)
{
    struct sf_round r = {.conn = conn, .ended = "0"};
    for (int i = 0; i < times; i++) {
        ck_assert_msg(it_wait_until(sf_leads_anew, &r, 20000), "relay does not lead (round %d)", i);
        PGresult *res = it_pg_query(conn, "SELECT string_agg(pid::text, ',')"
                                          " FILTER (WHERE pg_terminate_backend(pid))"
                                          " FROM pg_stat_activity WHERE usename = 'relay'");
        ck_assert(!PQgetisnull(res, 0, 0));
        size_t n = strlen(r.ended);
        snprintf(r.ended + n, sizeof r.ended - n, ",%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
}

static void sf_run(const struct sf_fault *f)
{
    fprintf(stderr, "statement fault: %s\n", f->name);
    const char *subjects[] = {"it.fault.>", NULL};
    it_js_add_stream(SF_STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "%s", sf_schema_sql);
    char pg_url[256];
    snprintf(pg_url, sizeof pg_url, "OUTBOX_PG_URL=postgresql://relay@127.0.0.1:%d/%s",
             it_pg_port(), PQdb(conn));
    /* Published long ago: retention's work, whose progress is checked at the end. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, published_at)"
                     " SELECT 'it.fault.archive', 'published', now() - interval '2 hours'"
                     " FROM generate_series(1, 3)");
    sf_insert(conn, 1, 20);

    /* The lock the 'lock' mode waits for, held until the fault is cleared. */
    PGconn *holder = it_pg_connect();
    it_pg_exec(holder, "BEGIN; LOCK TABLE fault.blocker IN ACCESS EXCLUSIVE MODE");

    struct sf_wait w = {.conn = conn, .f = f, .want = f->times};
    struct it_relay *relay = NULL, *other = NULL;
    if (f->when == SF_BEFORE_START)
        sf_arm(conn, f, &w);
    relay = sf_start_relay(pg_url, f->when == SF_SILENT_LEADER);
    if (f->when == SF_SILENT_LEADER)
        other = sf_start_relay(pg_url, true);
    if (f->when != SF_BEFORE_START) {
        ck_assert_msg(it_wait_until(sf_first_rows_out, conn, 30000), "the first rows");
        ck_assert(it_wait_until(sf_leads, conn, 10000));
    }
    if (f->when == SF_SILENT_LEADER) {
        /* The leader stops answering: only the standby's watch can end its session. */
        if (it_metric(relay->http_port, "outbox_relay_leader") == 1) {
            struct it_relay *t = relay;
            relay = other;
            other = t;
        }
        ck_assert_int_eq(it_metric(other->http_port, "outbox_relay_leader"), 1);
        kill(other->pid, SIGSTOP);
    }
    if (f->when != SF_BEFORE_START)
        sf_arm(conn, f, &w);
    if (f->when != SF_BEFORE_ROWS) {
        sf_insert(conn, 21, 60);
        /* No stream takes it.later.> yet: failed marks, with their keys held. */
        it_pg_exec(conn, "INSERT INTO outbox (subject, payload, ordering_key)"
                         " VALUES ('it.later.a', 'x', 'k2'), ('it.later.b', 'x', 'k3')");
        /* Invalid (a blank around the event_id): dead at its first attempt, its key flows. */
        it_pg_exec(conn, "INSERT INTO outbox (subject, event_id, payload, ordering_key)"
                         " VALUES ('it.fault.poison', ' lead', 'x', 'k1')");
    }
    if (f->when == SF_BEFORE_ROWS)
        sf_insert(conn, 21, 21); /* wakes a sleeping relay, which then goes to sleep again */
    if (f->counted == SF_BY_TEST)
        sf_end_leader_sessions(conn, f->times);
    bool fired = it_wait_until(sf_has_fired, &w, 20000);
    ck_assert_msg(fired, "%s: the fault fired %lld times, want %d", f->name,
                  (long long)sf_fired(&w), f->times);
    if (f->when == SF_BEFORE_ROWS) {
        sf_insert(conn, 22, 60);
        it_pg_exec(conn, "INSERT INTO outbox (subject, payload, ordering_key)"
                         " VALUES ('it.later.a', 'x', 'k2'), ('it.later.b', 'x', 'k3')");
        it_pg_exec(conn, "INSERT INTO outbox (subject, event_id, payload, ordering_key)"
                         " VALUES ('it.fault.poison', ' lead', 'x', 'k1')");
    }

    sf_clear(conn, f);
    it_pg_exec(holder, "COMMIT");
    PQfinish(holder);
    sf_stream_add_later();
    sf_insert(conn, 61, 80);

    /* 80 regular + 2 later rows published, 1 dead, the archive pruned. */
    w.want = 82 + 1000;
    if (!it_wait_until(sf_settled, &w, 30000)) {
        it_relay_dump_log(relay);
        PGresult *r = it_pg_query(conn, "SELECT status, count(*), max(last_error) FROM outbox"
                                        " GROUP BY 1 ORDER BY 1");
        for (int i = 0; i < PQntuples(r); i++)
            fprintf(stderr, "  %s: %s rows (%s)\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                    PQgetvalue(r, i, 2));
        PQclear(r);
        ck_abort_msg("%s: no progress once the fault was cleared", f->name);
    }
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"
                                     " AND event_id = ' lead' AND attempts = 1"),
                     1);
    struct it_key_audit a;
    it_audit_key_order(conn, SF_STREAM, 5, &a);
    ck_assert_int_eq(a.inversions, 0);
    ck_assert_int_eq(a.duplicates, 0);
    ck_assert_int_eq(a.unknown, 0);
    ck_assert_int_eq(a.missing, 1); /* the dead row */
    ck_assert_int_eq(a.messages, a.rows - 1);

    if (other != NULL)
        it_relay_signal(other, SIGKILL);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}

/* Each row a test of its own; IT_FAULT_ONLY=<part of a name> adds only the matching rows. */
static void sf_add_rows(TCase *tc, const TTest *test, const struct sf_fault *faults, int n)
{
    const char *only = getenv("IT_FAULT_ONLY");
    for (int i = 0; i < n; i++)
        if (only == NULL || !*only || strstr(faults[i].name, only) != NULL)
            tcase_add_loop_test(tc, test, i, i + 1);
}

#endif
