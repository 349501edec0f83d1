/* A multi-host PostgreSQL failover mid-drain: the relay follows the promoted replica. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM       "IT_PG_FAILOVER"
#define ROWS_BEFORE  20000
#define ROWS_AFTER   2000
#define RESUME_BOUND 20000 /* ms after the promotion; the relay should need ~1 s */

/*
 * A short query deadline: with the old watcher bug every connect attempt hung
 * until it, so a relay that resumes within the bound cannot be one that
 * merely waited the deadline out (it never resumed at all).
 */
static const char *const relay_base_env[] = {
    "OUTBOX_PG_TIMEOUT_MS=3000",   "OUTBOX_RECONNECT_MAX_MS=500", "OUTBOX_LEADER_RETRY_MS=500",
    "OUTBOX_POLL_INTERVAL_MS=200", "OUTBOX_RETRY_BASE_MS=100",    "OUTBOX_RETRY_MAX_MS=1000",
    "OUTBOX_MAX_ATTEMPTS=1000",    "OUTBOX_BATCH_SIZE=100",       "OUTBOX_MAX_INFLIGHT=200",
};

static void setup_primary_and_replica(void)
{
    it_start_servers();
    it_pg_replica_start(true);
}

static bool drain_under_way(void *conn)
{
    return it_pg_published(conn) >= ROWS_BEFORE / 10;
}

struct progress {
    PGconn *conn;
    int64_t above;
};

static bool published_more(void *arg)
{
    struct progress *p = arg;
    return it_pg_published(p->conn) > p->above;
}

/*
 * The replica has replayed all it will: its replay position has not moved
 * for a quarter of a second (no primary sends more). Not "replayed up to
 * what it received": the relay's marks commit asynchronously, so the WAL
 * the primary had flushed when it died may end inside a record, which the
 * replica never replays (promotion discards it).
 */
struct replay_watch {
    PGconn *conn;
    char lsn[64];
    int64_t since_ms;
};

static bool replay_settled(void *arg)
{
    struct replay_watch *w = arg;
    PGresult *res = it_pg_query(w->conn, "SELECT pg_last_wal_replay_lsn()::text");
    char lsn[64];
    snprintf(lsn, sizeof lsn, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    int64_t now = it_now_ms();
    if (strcmp(lsn, w->lsn) != 0) {
        snprintf(w->lsn, sizeof w->lsn, "%s", lsn);
        w->since_ms = now;
        return false;
    }
    return now - w->since_ms >= 250;
}

START_TEST(test_relay_follows_promoted_replica)
{
    const char *subjects[] = {"it.failover.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *primary = it_pg_connect();
    it_pg_exec(primary,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.failover.' || (g %% 3), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 2 = 0 THEN 'key-' || (g %% 40) END"
               " FROM generate_series(1, %d) g",
               ROWS_BEFORE);

    /* libpq's multi-host form: it tries each host and keeps the writable one. */
    char url[300];
    snprintf(url, sizeof url,
             "OUTBOX_PG_URL=postgresql://postgres@127.0.0.1:%d,127.0.0.1:%d/outbox_it"
             "?target_session_attrs=read-write",
             it_pg_port(), it_pg_replica_port());
    const char *env[sizeof relay_base_env / sizeof relay_base_env[0] + 2];
    size_t n = 0;
    for (; n < sizeof relay_base_env / sizeof relay_base_env[0]; n++)
        env[n] = relay_base_env[n];
    env[n++] = url;
    env[n] = NULL;
    struct it_relay *relay = it_relay_start(env, NULL);

    ck_assert_msg(it_wait_until(drain_under_way, primary, 60000), "the drain did not get going");
    PQfinish(primary);
    it_pg_stop_immediate();

    /* Synchronous replication: every producer commit is on the replica, and
     * the relay's marks up to the primary's last WAL flush; once replayed,
     * the count is the relay's progress before the failover. */
    PGconn *replica = it_pg_replica_connect();
    struct replay_watch rw = {.conn = replica, .since_ms = it_now_ms()};
    ck_assert_msg(it_wait_until(replay_settled, &rw, 30000), "the replica kept replaying");
    int64_t cut_at = it_pg_published(replica);
    fprintf(stderr, "pg failover: primary stopped with %lld of %d rows marked\n", (long long)cut_at,
            ROWS_BEFORE);
    ck_assert_msg(cut_at < ROWS_BEFORE, "the drain finished before the primary stopped");

    /* From the promotion request: pg_promote polls every 100 ms, and the relay
     * may be on the new primary before it returns. */
    int64_t promoted_at = it_now_ms();
    it_pg_replica_promote();
    int64_t promote_ms = it_now_ms() - promoted_at;
    struct progress p = {replica, cut_at};
    bool resumed = it_wait_until(published_more, &p, RESUME_BOUND);
    int64_t resumed_after = it_now_ms() - promoted_at;
    if (!resumed)
        it_relay_dump_log(relay);
    ck_assert_msg(resumed, "no row published within %d ms of the promotion", RESUME_BOUND);

    it_pg_exec(replica,
               "INSERT INTO outbox (subject, payload)"
               " SELECT 'it.failover.after', convert_to('after-' || g, 'UTF8')"
               " FROM generate_series(1, %d) g",
               ROWS_AFTER);
    int64_t got = it_pg_wait_published(replica, ROWS_BEFORE + ROWS_AFTER, RESUME_BOUND);
    int64_t all_after = it_now_ms() - promoted_at;
    fprintf(stderr,
            "pg failover: pg_promote took %lld ms; first row published %lld ms after the "
            "promotion request, all %d rows %lld ms after it\n",
            (long long)promote_ms, (long long)resumed_after, ROWS_BEFORE + ROWS_AFTER,
            (long long)all_after);
    if (got != ROWS_BEFORE + ROWS_AFTER)
        it_relay_dump_log(relay);
    ck_assert_msg(got == ROWS_BEFORE + ROWS_AFTER, "%lld of %d rows published", (long long)got,
                  ROWS_BEFORE + ROWS_AFTER);
    it_assert_each_row_once(replica, STREAM, ROWS_BEFORE + ROWS_AFTER);
    it_relay_stop(relay);
    PQfinish(replica);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("pg_failover");
    TCase *tc = it_tcase(suite, "pg_failover", setup_primary_and_replica, 180);
    tcase_add_test(tc, test_relay_follows_promoted_replica);
    return run_suite(suite);
}
