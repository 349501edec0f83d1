/* The stream the relay manages: re-created when deleted while connected; created with the
 * replicas, storage, max age and duplicate window settings; a replica count the server cannot
 * place is refused with a clear error. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_MANAGED"

static bool nats_ready(void *arg)
{
    return it_metric(((struct it_relay *)arg)->http_port, "outbox_relay_nats_connected") == 1;
}

static bool stream_exists(void *arg)
{
    return it_js_stream_exists(arg);
}

static void insert(PGconn *conn, const char *tag, int rows)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.managed.%s', 'x'"
               " FROM generate_series(1, %d)",
               tag, rows);
}

/*
 * The stream is deleted under a connected relay (an operator's mistake, a
 * re-deploy): the next publishes find no stream, the relay creates it again
 * and the rows go through on their retries instead of going dead.
 */
START_TEST(test_stream_recreated_after_delete_while_connected)
{
    const char *env[] = {"OUTBOX_STREAM=" STREAM,
                         "OUTBOX_STREAM_SUBJECTS=it.managed.>",
                         "OUTBOX_RETRY_BASE_MS=100",
                         "OUTBOX_RETRY_MAX_MS=500",
                         "OUTBOX_MAX_ATTEMPTS=30",
                         "OUTBOX_POLL_INTERVAL_MS=200",
                         NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    PGconn *conn = it_pg_connect();
    ck_assert_msg(it_wait_until(nats_ready, relay, 15000), "the relay never connected");
    insert(conn, "before", 10);
    ck_assert_int_eq(it_pg_wait_published(conn, 10, 15000), 10);

    jsErrCode jerr = 0;
    natsStatus s = js_DeleteStream(it_js(), STREAM, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "deleting the stream: %s (%d)", natsStatus_GetText(s), (int)jerr);
    ck_assert(!it_js_stream_exists(STREAM));
    insert(conn, "after", 10);

    int64_t got = it_pg_wait_published(conn, 20, 20000);
    if (got != 20)
        it_relay_dump_log(relay);
    ck_assert_msg(got == 20, "%lld of 20 rows published after the stream was deleted",
                  (long long)got);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"), 0);
    ck_assert_msg(it_wait_until(stream_exists, STREAM, 1000), "the stream is still missing");
    /* The new stream holds exactly the rows published after the deletion. */
    ck_assert_int_eq(it_js_stream_msgs(STREAM), 10);
    ck_assert_msg(it_relay_logged(relay, LOG_MSG_STREAM_CREATED),
                  "no \"" LOG_MSG_STREAM_CREATED "\" line");
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

START_TEST(test_stream_created_with_its_settings)
{
    const char *env[] = {"OUTBOX_STREAM=" STREAM,
                         "OUTBOX_STREAM_SUBJECTS=it.managed.>, it.other.*",
                         "OUTBOX_STREAM_STORAGE=memory",
                         "OUTBOX_STREAM_MAX_AGE=1h30m",
                         "OUTBOX_STREAM_DUPLICATE_WINDOW=45s",
                         NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert_msg(it_wait_until(stream_exists, STREAM, 15000), "the relay created no stream");
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    ck_assert_int_eq(js_GetStreamInfo(&si, it_js(), STREAM, NULL, &jerr), NATS_OK);
    ck_assert_int_eq(si->Config->Storage, js_MemoryStorage);
    ck_assert_int_eq(si->Config->Replicas, 1);
    ck_assert(si->Config->MaxAge == (int64_t)5400 * 1000000000);
    ck_assert(si->Config->Duplicates == (int64_t)45 * 1000000000);
    ck_assert_int_eq(si->Config->SubjectsLen, 2);
    ck_assert_str_eq(si->Config->Subjects[1], "it.other.*");
    jsStreamInfo_Destroy(si);
    it_relay_stop(relay);
}
END_TEST

/* A single server cannot hold three replicas: the relay says which setting to change. */
START_TEST(test_replicas_the_server_cannot_place_are_named)
{
    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.managed.>",
                         "OUTBOX_STREAM_REPLICAS=3", NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    if (!it_relay_wait_log(relay, "OUTBOX_STREAM_REPLICAS=3: the server cannot place", 1, 15000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("no clear error for a replica count the server refused");
    }
    ck_assert(!it_js_stream_exists(STREAM));
    /* Stays up: the server side may change (a cluster joins) without touching the relay. */
    ck_assert_int_eq(it_http_status(relay->http_port, "/healthz"), 200);
    it_relay_stop(relay);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_stream");
    TCase *tc = it_tcase(suite, "nats_stream", it_start_servers, 120);
    tcase_add_test(tc, test_stream_recreated_after_delete_while_connected);
    tcase_add_test(tc, test_stream_created_with_its_settings);
    tcase_add_test(tc, test_replicas_the_server_cannot_place_are_named);
    return run_suite(suite);
}
