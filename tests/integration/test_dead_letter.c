/* Dead rows on the bus: OUTBOX_DEAD_LETTER_SUBJECT, read back by a JetStream consumer. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pipeline/dead_letter.h"
#include "run_suite.h"

#define DLQ  "it.dl.dead"
#define LIVE 50

static const char *const dl_env[] = {"OUTBOX_DEAD_LETTER_SUBJECT=" DLQ, "OUTBOX_MAX_ATTEMPTS=1",
                                     "OUTBOX_RETRY_BASE_MS=50",         "OUTBOX_RETRY_MAX_MS=200",
                                     "OUTBOX_POLL_INTERVAL_MS=100",     NULL};

static void insert_live(PGconn *conn, int from, int to)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.dl.live.x', "
               "convert_to(g::text, 'UTF8') FROM generate_series(%d, %d) g",
               from, to);
}

/* The header's only value, or NULL. */
static const char *header(const struct it_msg *m, const char *key)
{
    const struct it_header *h = it_msg_header(m, key);
    return h != NULL && h->nvalues == 1 ? h->values[0] : NULL;
}

static void expect_header(const struct it_msg *m, const char *key, const char *want)
{
    const char *got = header(m, key);
    ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s: %s is \"%s\", want \"%s\"", m->msg_id,
                  key, got ? got : "(none)", want);
}

static int64_t id_of(PGconn *conn, const char *event_id)
{
    return it_pg_int(conn, "SELECT id FROM outbox WHERE event_id = '%s'", event_id);
}

START_TEST(test_dead_rows_arrive_on_the_dead_letter_subject)
{
    const char *subjects[] = {"it.dl.live.>", DLQ, NULL};
    it_js_add_stream("IT_DL", subjects);
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = it_relay_start_http(dl_env, NULL);

    insert_live(conn, 1, LIVE / 2);
    /* Dead at once: a reserved header. Its headers are not passed on. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, event_id, payload, headers) VALUES "
                     "('it.dl.live.a', 'ev-a', 'pa', '{\"X-Keep\": \"1\", \"Nats-Bad\": \"x\"}')");
    /* Dead after its one attempt: no stream takes its subject. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, event_id, payload, headers) VALUES "
                     "('it.nostream.b', 'ev-b', 'pb', '{\"X-Orig\": \"v\"}')");
    /* Over the server's max_payload (1 MiB): its dead letter goes without it. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, event_id, payload) VALUES "
                     "('it.dl.live.c', 'ev-c', convert_to(repeat('c', 2000000), 'UTF8'))");
    /* An event_id that cannot be an id: the letter's id comes from the row id. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, event_id, payload) VALUES "
                     "('it.dl.live.d', '', 'pd')");
    insert_live(conn, LIVE / 2 + 1, LIVE);

    int64_t lettered = it_pg_wait_int(
        conn, "SELECT count(*) FROM outbox WHERE status = 'dead' AND dead_lettered_at IS NOT NULL",
        4, 30000);
    if (lettered != 4)
        it_relay_dump_log(relay);
    ck_assert_int_eq(lettered, 4);
    ck_assert_int_eq(it_pg_wait_published(conn, LIVE, 30000), LIVE);

    struct it_msgs msgs;
    it_js_read_stream_once("IT_DL", LIVE + 4, &msgs);
    char id[32];

    const struct it_msg *a = it_msgs_find(&msgs, "dead-ev-a-1");
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(a->subject, DLQ);
    ck_assert_int_eq(a->len, 2);
    ck_assert(memcmp(a->data, "pa", 2) == 0);
    snprintf(id, sizeof id, "%lld", (long long)id_of(conn, "ev-a"));
    expect_header(a, DEAD_HEADER_ID, id);
    expect_header(a, DEAD_HEADER_EVENT_ID, "ev-a");
    expect_header(a, DEAD_HEADER_SUBJECT, "it.dl.live.a");
    expect_header(a, DEAD_HEADER_REASON, "invalid_row");
    expect_header(a, DEAD_HEADER_ATTEMPTS, "1");
    expect_header(a, DEAD_HEADER_HEADERS_OMITTED, "invalid");
    ck_assert_ptr_null(it_msg_header(a, "X-Keep"));
    ck_assert_ptr_null(it_msg_header(a, DEAD_HEADER_PAYLOAD_OMITTED));
    ck_assert_ptr_nonnull(strstr(header(a, DEAD_HEADER_ERROR), "Nats-Bad"));

    const struct it_msg *b = it_msgs_find(&msgs, "dead-ev-b-1");
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(b->len, 2);
    ck_assert(memcmp(b->data, "pb", 2) == 0);
    snprintf(id, sizeof id, "%lld", (long long)id_of(conn, "ev-b"));
    expect_header(b, DEAD_HEADER_ID, id);
    expect_header(b, DEAD_HEADER_SUBJECT, "it.nostream.b");
    expect_header(b, DEAD_HEADER_REASON, "no_stream");
    expect_header(b, DEAD_HEADER_ATTEMPTS, "1");
    expect_header(b, "X-Orig", "v");
    ck_assert_ptr_null(it_msg_header(b, DEAD_HEADER_HEADERS_OMITTED));

    const struct it_msg *c = it_msgs_find(&msgs, "dead-ev-c-1");
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->len, 0);
    expect_header(c, DEAD_HEADER_PAYLOAD_OMITTED, "2000000");
    expect_header(c, DEAD_HEADER_SUBJECT, "it.dl.live.c");
    expect_header(c, DEAD_HEADER_REASON, "too_large");

    char dead_id[64];
    snprintf(dead_id, sizeof dead_id, "dead-row-%lld-1",
             (long long)it_pg_int(conn, "SELECT id FROM outbox WHERE subject = 'it.dl.live.d'"));
    const struct it_msg *e = it_msgs_find(&msgs, dead_id);
    ck_assert_ptr_nonnull(e);
    expect_header(e, DEAD_HEADER_REASON, "invalid_row");
    ck_assert_int_eq(e->len, 2);
    it_msgs_free(&msgs);

    ck_assert(it_wait_metric(relay->http_port, "outbox_relay_dead_letters_total", 4, 10000));
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

static bool dead_letter_failed_twice(void *arg)
{
    struct it_relay *relay = arg;
    return it_metric(relay->http_port, "outbox_relay_dead_letter_failures_total") >= 2;
}

START_TEST(test_dead_letter_retried_until_a_stream_takes_it_and_sent_again_after_requeue)
{
    const char *live[] = {"it.dl.live.>", NULL};
    it_js_add_stream("IT_LIVE", live);
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = it_relay_start_http(dl_env, NULL);

    it_pg_exec(conn, "INSERT INTO outbox (subject, event_id, payload) VALUES "
                     "('it.nostream.r', 'ev-r', 'pr')");
    ck_assert_int_eq(
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'", 1, 30000), 1);
    /* No stream takes the dead-letter subject: it fails, and is tried again. */
    ck_assert(it_wait_until(dead_letter_failed_twice, relay, 30000));
    /* Live rows flow meanwhile. */
    insert_live(conn, 1, LIVE);
    ck_assert_int_eq(it_pg_wait_published(conn, LIVE, 30000), LIVE);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE dead_lettered_at IS NULL "
                                     "AND status = 'dead'"),
                     1);

    const char *dlq[] = {DLQ, NULL};
    it_js_add_stream("IT_DLQ", dlq);
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox WHERE status = 'dead' "
                                    "AND dead_lettered_at IS NOT NULL AND dead_letters = 1",
                                    1, 30000),
                     1);

    /* Requeued, the row dies again and is dead-lettered again: a new Nats-Msg-Id. */
    const char *args[] = {"requeue", "--all", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, args, NULL, NULL), 0);
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox WHERE status = 'dead' "
                                    "AND dead_lettered_at IS NOT NULL AND dead_letters = 2",
                                    1, 30000),
                     1);
    struct it_msgs msgs;
    it_js_read_stream_once("IT_DLQ", 2, &msgs);
    ck_assert_int_eq(msgs.count, 2);
    ck_assert_ptr_nonnull(it_msgs_find(&msgs, "dead-ev-r-1"));
    ck_assert_ptr_nonnull(it_msgs_find(&msgs, "dead-ev-r-2"));
    ck_assert_int_eq(msgs.msgs[1].len, 2);
    ck_assert(memcmp(msgs.msgs[1].data, "pr", 2) == 0);
    it_msgs_free(&msgs);

    ck_assert_int_eq(it_pg_published(conn), LIVE);
    ck_assert(it_wait_metric(relay->http_port, "outbox_relay_dead_letters_total", 2, 10000));
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

START_TEST(test_check_wants_a_stream_on_the_dead_letter_subject)
{
    const char *live[] = {"it.dl.live.>", NULL};
    it_js_add_stream("IT_LIVE", live);
    const char *env[] = {"OUTBOX_DEAD_LETTER_SUBJECT=" DLQ, NULL};
    const char *check[] = {"--check", NULL};
    char *out = NULL;
    ck_assert_int_eq(it_relay_run(env, check, 30000, &out), 1);
    ck_assert_msg(strstr(out, "FAIL dead-letter subject " DLQ) != NULL, "%s", out);
    free(out);
    const char *dlq[] = {DLQ, NULL};
    it_js_add_stream("IT_DLQ", dlq);
    ck_assert_int_eq(it_relay_run(env, check, 30000, &out), 0);
    ck_assert_msg(strstr(out, "ok   dead-letter subject " DLQ) != NULL, "%s", out);
    free(out);
}
END_TEST

START_TEST(test_bad_dead_letter_subject_exits_2)
{
    const char *bad[] = {"dead.>", "$JS.dead", "_INBOX.x", "dead..x", NULL};
    for (int i = 0; bad[i] != NULL; i++) {
        char setting[64];
        snprintf(setting, sizeof setting, "OUTBOX_DEAD_LETTER_SUBJECT=%s", bad[i]);
        const char *env[] = {setting, NULL};
        char *out = NULL;
        ck_assert_int_eq(it_relay_run(env, NULL, 10000, &out), 2);
        ck_assert_ptr_nonnull(strstr(out, "OUTBOX_DEAD_LETTER_SUBJECT"));
        free(out);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("dead_letter");
    TCase *tc = it_tcase(suite, "dead_letter", it_start_servers, 120);
    tcase_add_test(tc, test_dead_rows_arrive_on_the_dead_letter_subject);
    tcase_add_test(tc,
                   test_dead_letter_retried_until_a_stream_takes_it_and_sent_again_after_requeue);
    tcase_add_test(tc, test_check_wants_a_stream_on_the_dead_letter_subject);
    tcase_add_test(tc, test_bad_dead_letter_subject_exits_2);
    return run_suite(suite);
}
