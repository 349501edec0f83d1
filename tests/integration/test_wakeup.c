/* Wake-up: rows inserted while the relay idles arrive on NOTIFY, long before the poll interval. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "harness.h"
#include "outbox_relay/pg/outbox_table.h"
#include "run_suite.h"

#define STREAM "IT_WAKEUP"
/* Ten minutes: a row that waits for the poll would blow every deadline below. */
#define POLL_MS     600000
#define DEADLINE_MS 10000

/*
 * The relay's sessions have all been idle for 300 ms: it finished its last
 * claim and is waiting, so a row inserted now can only be found through
 * the notification (or the poll ten minutes away).
 */
static bool relay_idle(void *arg)
{
    return it_pg_int(arg, "SELECT (count(*) > 0 AND bool_and(state = 'idle'"
                          "        AND state_change < clock_timestamp() - interval '300 ms'))::int"
                          " FROM pg_stat_activity"
                          " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                          "   AND backend_type = 'client backend'") == 1;
}

static void wait_published(PGconn *conn, int64_t want, const char *what)
{
    int64_t start = it_now_ms();
    int64_t got = it_pg_wait_published(conn, want, DEADLINE_MS);
    ck_assert_msg(got == want, "%s: %lld of %lld rows published after %d ms (poll interval %d ms)",
                  what, (long long)got, (long long)want, DEADLINE_MS, POLL_MS);
    fprintf(stderr, "wakeup: %s published within %lld ms\n", what,
            (long long)(it_now_ms() - start));
}

START_TEST(test_insert_while_idle_wakes_relay)
{
    const char *subjects[] = {"it.wakeup.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=600000", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    /* Published means the relay is up, listening and past its first scan. */
    it_pg_exec(conn, "SELECT outbox_enqueue('it.wakeup.first', '{\"n\": 0}')");
    wait_published(conn, 1, "the first row");

    /* One row through the helper function. */
    ck_assert_msg(it_wait_until(relay_idle, conn, 10000), "relay never went idle");
    it_pg_exec(conn, "SELECT outbox_enqueue('it.wakeup.one', '{\"n\": 1}')");
    wait_published(conn, 2, "one row");

    /* A multi-row statement: one notification for 200 rows. */
    ck_assert_msg(it_wait_until(relay_idle, conn, 10000), "relay never went idle");
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload)"
                     " SELECT 'it.wakeup.many', convert_to(g::text, 'UTF8')"
                     " FROM generate_series(1, 200) g");
    wait_published(conn, 202, "a 200-row statement");

    /* Several transactions in a row, each with its own notification. */
    ck_assert_msg(it_wait_until(relay_idle, conn, 10000), "relay never went idle");
    for (int i = 0; i < 3; i++)
        it_pg_exec(conn, "BEGIN; INSERT INTO outbox (subject) VALUES ('it.wakeup.tx'), "
                         "('it.wakeup.tx'); COMMIT");
    wait_published(conn, 208, "three transactions");

    ck_assert_int_eq(it_js_stream_msgs(STREAM), 208);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/*
 * Many producers in bursts with quiet spells between them: the relay falls
 * asleep in every spell (it sleeps once it has seen no rows for ~10 ms and
 * holds none), and the next burst's commits race its try for the sleep lock
 * and its unlock on waking. A row whose producer skipped the NOTIFY while
 * the relay fell asleep anyway would wait for the poll ten minutes away.
 * Bursts of ACTIVE_MS in every CYCLE_MS, on a clock the producers share;
 * within a burst each commits one row per transaction back to back.
 */
#define PRODUCERS 8
#define CYCLE_MS  40
#define ACTIVE_MS 15
#define RUN_MS    3000

struct producer {
    pthread_t thread;
    PGconn *conn;
    int index;
    int64_t until_ms;
    int64_t commits;
    char error[256]; /* no Check calls in threads */
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    char key[16];
    snprintf(key, sizeof key, "burst-%d", p->index);
    for (int64_t now = it_now_ms(); now < p->until_ms; now = it_now_ms()) {
        int64_t into_cycle = now % CYCLE_MS;
        if (into_cycle >= ACTIVE_MS) {
            /* The quiet spell: the workload's shape, not a wait for a condition. */
            int64_t ms = CYCLE_MS - into_cycle;
            struct timespec quiet = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
            nanosleep(&quiet, NULL);
            continue;
        }
        if (!it_pg_insert_row(p->conn, "it.wakeup.burst", key, "x", p->error, sizeof p->error))
            break;
        p->commits++;
    }
    return NULL;
}

START_TEST(test_bursts_from_many_producers_never_wait_for_the_poll)
{
    const char *subjects[] = {"it.wakeup.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=600000", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert(it_relay_wait_logged(relay, LOG_MSG_BECAME_LEADER, 1, 20000));

    struct producer ps[PRODUCERS];
    int64_t until = it_now_ms() + RUN_MS;
    for (int i = 0; i < PRODUCERS; i++) {
        ps[i] = (struct producer){.conn = it_pg_connect(), .index = i, .until_ms = until};
        ck_assert_int_eq(pthread_create(&ps[i].thread, NULL, producer_main, &ps[i]), 0);
    }
    /* Meanwhile: the relay does fall asleep between bursts, or the race is not exercised. */
    int asleep_seen = 0, looks = 0;
    for (bool was = false; it_now_ms() < until; looks++) {
        bool now =
            it_pg_int(conn,
                      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                      " AND granted AND classid = " OUTBOX_CLASS_SQL(OUTBOX_SLEEP_CLASS)) == 1;
        asleep_seen += now && !was;
        was = now;
    }
    int64_t total = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(ps[i].thread, NULL);
        ck_assert_msg(ps[i].error[0] == '\0', "producer %d: %s", i, ps[i].error);
        total += ps[i].commits;
        PQfinish(ps[i].conn);
    }
    fprintf(stderr,
            "wakeup: %d producers committed %lld rows in %d bursts; the relay was seen falling"
            " asleep %d times in %d looks\n",
            PRODUCERS, (long long)total, RUN_MS / CYCLE_MS, asleep_seen, looks);
    ck_assert_msg(asleep_seen > 0, "the relay never slept between bursts");
    wait_published(conn, total, "bursts from many producers");
    it_assert_each_row_once(conn, STREAM, total);
    it_assert_keys_in_order_once(conn, STREAM);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("wakeup");
    TCase *tc = it_tcase(suite, "wakeup", it_start_servers, 120);
    tcase_add_test(tc, test_insert_while_idle_wakes_relay);
    tcase_add_test(tc, test_bursts_from_many_producers_never_wait_for_the_poll);
    return run_suite(suite);
}
