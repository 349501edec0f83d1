/* What a consumer of a pipelined stream sees: the row's own headers, Nats-Msg-Id = its
 * event_id, and the fence Nats-Expected-Last-Msg-Id only as documented: naming the message right
 * before it in the stream, which has the same subject. No header carries the event id of a
 * message of another subject. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_FENCE_HDR"
#define ROWS   1200
#define RUN    40 /* rows of one subject in a row, then the other subject */

/* The subject of the message whose Nats-Msg-Id is id, or NULL if none has it. */
static const char *subject_of(struct it_msgs *m, const char *id)
{
    const struct it_msg *found = it_msgs_find(m, id);
    return found ? found->subject : NULL;
}

START_TEST(test_consumers_see_no_header_of_another_subject)
{
    const char *subjects[] = {"it.hdr.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    /* One hot key across two subjects, in runs and single rows, each row with a header. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, ordering_key, payload, headers)"
               " SELECT CASE WHEN (g / %d) %% 2 = 0 OR g %% 7 = 0 THEN 'it.hdr.order'"
               " ELSE 'it.hdr.audit' END, 'k', convert_to(g::text, 'UTF8'),"
               " jsonb_build_object('X-Row', g::text)"
               " FROM generate_series(1, %d) g",
               RUN, ROWS);
    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.hdr.>", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_int_eq(it_pg_wait_published(conn, ROWS, 60000), ROWS);
    it_assert_keys_in_order_once(conn, STREAM);

    struct it_msgs m;
    it_js_read_stream_once(STREAM, ROWS, &m);
    size_t fenced = 0;
    for (size_t i = 0; i < m.count; i++) {
        const struct it_msg *msg = &m.msgs[i];
        for (int h = 0; h < msg->nheaders; h++) {
            const struct it_header *hd = &msg->headers[h];
            ck_assert_int_eq(hd->nvalues, 1);
            const char *v = hd->values[0];
            if (strcmp(hd->key, "X-Row") == 0 || strcmp(hd->key, "Nats-Msg-Id") == 0) {
                /* the row's own header; its own id */
            } else if (strcmp(hd->key, "Nats-Expected-Last-Msg-Id") == 0) {
                ck_assert_msg(i > 0 && strcmp(v, m.msgs[i - 1].msg_id) == 0,
                              "seq %llu: the fence names %s, not the message before it",
                              (unsigned long long)msg->seq, v);
                fenced++;
            } else {
                ck_abort_msg("seq %llu carries header %s: %s, which its row did not set",
                             (unsigned long long)msg->seq, hd->key, v);
            }
            const char *other = subject_of(&m, v);
            ck_assert_msg(other == NULL || strcmp(other, msg->subject) == 0,
                          "seq %llu (%s): header %s carries the event id %s of a %s message",
                          (unsigned long long)msg->seq, msg->subject, hd->key, v, other);
        }
    }
    /* The drain was pipelined: most messages follow one of their subject in flight. */
    ck_assert_msg(fenced > ROWS / 2, "only %zu of %d messages were fenced", fenced, ROWS);
    it_msgs_free(&m);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("fence_headers");
    TCase *tc = it_tcase(suite, "fence_headers", it_start_servers, 120);
    tcase_add_test(tc, test_consumers_see_no_header_of_another_subject);
    return run_suite(suite);
}
