/* Poison rows: bad subjects, oversized payloads and bad headers go dead at once; the rest flows. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/nats/message.h"
#include "run_suite.h"

#define STREAM       "IT_POISON"
#define SMALL_STREAM "IT_POISON_SMALL" /* max_msg_size 1024: JetStream itself refuses more */
#define MAX_PAYLOAD  65536
#define GOOD         5000
#define CHUNKS       10
#define KEYS         10

/* A small max_payload keeps the oversized row small. */
static void start_servers_small_payload(void)
{
    it_setup();
    it_nats_set_config("max_payload: 65536\n");
    it_pg_start();
    it_nats_start();
}

static void add_stream(const char *name, const char *subject, int64_t max_msg_size,
                       int64_t max_msgs)
{
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[] = {subject};
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    if (max_msg_size > 0)
        cfg.MaxMsgSize = (int32_t)max_msg_size;
    if (max_msgs > 0) {
        cfg.MaxMsgs = max_msgs;
        cfg.Discard = js_DiscardNew;
    }
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(NULL, it_js(), &cfg, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "add stream %s: %s (%d)", name, natsStatus_GetText(s), (int)jerr);
}

/* One poison row per chunk: the SQL that makes it, and what last_error must say. */
static const struct {
    const char *subject;
    const char *payload; /* SQL expression */
    const char *headers; /* SQL expression */
    const char *reason;
} poison[CHUNKS] = {
    {"it.poison..empty", "'x'", "'{}'", "empty token"},
    {"it.poison.*", "'x'", "'{}'", "wildcard token"},
    {"it.poison.a b", "'x'", "'{}'", "whitespace"},
    {"it.poison.>", "'x'", "'{}'", "wildcard token"},
    {"it.poison.big", "convert_to(repeat('p', 70000), 'UTF8')", "'{}'",
     "exceeds the server's max_payload 65536"},
    {"it.poison.hdr", "'x'", "'{\"X-Count\": 5}'", "not a string or array of strings"},
    {"it.poison.hdr", "'x'", "'{\"X-Nested\": {\"a\": \"b\"}}'",
     "not a string or array of strings"},
    {"it.poison.hdr", "'x'", "'[\"a\", \"b\"]'", "not a JSON object"},
    {"it.poison.hdr", "'x'", "'{\"X-List\": [\"a\", 1]}'", "not a string or array of strings"},
    /* Valid for NATS, refused by the stream: the PubAck error must count as permanent. */
    {"it.small.big", "convert_to(repeat('s', 2000), 'UTF8')", "'{}'",
     "message size exceeds maximum allowed"},
};

START_TEST(test_poison_rows_dead_at_once_others_flow)
{
    add_stream(STREAM, "it.poison.>", 0, 0);
    add_stream(SMALL_STREAM, "it.small.>", 1024, 0);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE TABLE poison (id bigint, reason text)");
    const char *env[] = {"OUTBOX_BATCH_SIZE=100", "OUTBOX_RETRY_BASE_MS=100",
                         "OUTBOX_POLL_INTERVAL_MS=200", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    /* Chunks of good rows, each followed by one poison row sharing a key with them. */
    for (int c = 0; c < CHUNKS; c++) {
        int from = c * (GOOD / CHUNKS) + 1, to = (c + 1) * (GOOD / CHUNKS);
        it_pg_exec(conn,
                   "INSERT INTO outbox (subject, payload, headers, ordering_key)"
                   " SELECT 'it.poison.good.' || (g %% 3), convert_to(g::text, 'UTF8'),"
                   "        CASE WHEN g %% 2 = 0 THEN jsonb_build_object('X-G', g::text,"
                   "             'X-Tags', jsonb_build_array('a', 'b')) ELSE '{}' END,"
                   "        CASE WHEN g %% 7 = 0 THEN NULL ELSE 'key-' || (g %% %d) END"
                   " FROM generate_series(%d, %d) g",
                   KEYS, from, to);
        it_pg_exec(conn,
                   "WITH p AS (INSERT INTO outbox (subject, payload, headers, ordering_key)"
                   " VALUES ('%s', %s, %s, 'key-%d') RETURNING id)"
                   " INSERT INTO poison SELECT id, $r$%s$r$ FROM p",
                   poison[c].subject, poison[c].payload, poison[c].headers, c % KEYS,
                   poison[c].reason);
    }
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox"), GOOD + CHUNKS);

    int64_t done = it_pg_wait_int(conn,
                                  "SELECT count(*) FROM outbox WHERE status = 'published'"
                                  " OR (status = 'dead' AND id IN (SELECT id FROM poison))",
                                  GOOD + CHUNKS, 60000);
    if (done != GOOD + CHUNKS)
        it_relay_dump_log(relay);
    ck_assert_msg(done == GOOD + CHUNKS, "%lld of %d rows settled", (long long)done, GOOD + CHUNKS);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000); /* never crashed */

    /* Every poison row: dead at the first attempt, with the reason in words. */
    PGresult *rows = it_pg_query(conn, "SELECT o.id, o.status, o.attempts, o.last_error, p.reason,"
                                       " o.subject FROM outbox o JOIN poison p USING (id)"
                                       " ORDER BY o.id");
    ck_assert_int_eq(PQntuples(rows), CHUNKS);
    for (int i = 0; i < CHUNKS; i++) {
        const char *id = PQgetvalue(rows, i, 0), *error = PQgetvalue(rows, i, 3);
        fprintf(stderr, "poison: row %s (%s): %s\n", id, PQgetvalue(rows, i, 5), error);
        ck_assert_str_eq(PQgetvalue(rows, i, 1), "dead");
        ck_assert_msg(atoi(PQgetvalue(rows, i, 2)) == 1, "row %s: %s attempts, want 1 (at once)",
                      id, PQgetvalue(rows, i, 2));
        ck_assert_msg(strstr(error, PQgetvalue(rows, i, 4)) != NULL,
                      "row %s: last_error \"%s\" does not say \"%s\"", id, error,
                      PQgetvalue(rows, i, 4));
    }
    PQclear(rows);

    /* Every good row once in the stream, at its stream_seq; nothing of the poison. */
    ck_assert_int_eq(it_js_stream_msgs(SMALL_STREAM), 0);
    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, GOOD, &msgs);
    rows = it_pg_query(
        conn, "SELECT coalesce(ordering_key, ''), event_id, stream_seq, id, attempts FROM outbox"
              " WHERE id NOT IN (SELECT id FROM poison) ORDER BY ordering_key, id");
    ck_assert_int_eq(PQntuples(rows), GOOD);
    int inversions = 0, wrong_seq = 0;
    uint64_t prev_seq = 0;
    const char *prev_key = "";
    for (int i = 0; i < GOOD; i++) {
        const char *key = PQgetvalue(rows, i, 0);
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(rows, i, 1));
        ck_assert_msg(m != NULL, "good row with event %s has no message", PQgetvalue(rows, i, 1));
        wrong_seq += strtoull(PQgetvalue(rows, i, 2), NULL, 10) != m->seq;
        if (*key && strcmp(prev_key, key) == 0 && m->seq < prev_seq && ++inversions <= 10)
            fprintf(stderr, "poison: key %s: row %s (attempts %s) seq %llu after %llu\n", key,
                    PQgetvalue(rows, i, 3), PQgetvalue(rows, i, 4), (unsigned long long)m->seq,
                    (unsigned long long)prev_seq);
        prev_key = key;
        prev_seq = m->seq;
    }
    ck_assert_msg(inversions == 0, "%d rows overtook an earlier row of their key", inversions);
    ck_assert_int_eq(wrong_seq, 0);
    PQclear(rows);
    it_msgs_free(&msgs);

    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* ---- what nats-server 2.9 really answers, and how the relay judges it ---- */

struct observed {
    int acks;
    natsStatus status;
    int js_code;
};

/* Acks arrive on a nats.c thread; the test reads them after js_PublishAsyncComplete. */
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    struct observed *o = closure;
    o->status = pae ? pae->Err : NATS_OK;
    o->js_code = pae ? (int)pae->ErrCode : 0;
    __atomic_add_fetch(&o->acks, 1, __ATOMIC_SEQ_CST);
    natsMsg_Destroy(msg);
}

/* Publishes like the relay (async, MaxWait) and returns the outcome: sync error or ack. */
static struct observed publish_like_relay(jsCtx *js, struct observed *o, const char *subject,
                                          int payload_len)
{
    char *payload = calloc(1, (size_t)payload_len + 1);
    ck_assert_ptr_nonnull(payload);
    memset(payload, 'z', (size_t)payload_len);
    natsMsg *msg = NULL;
    ck_assert_int_eq(natsMsg_Create(&msg, subject, NULL, payload, payload_len), NATS_OK);
    free(payload);
    memset(o, 0, sizeof *o);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 500;
    natsStatus s = js_PublishMsgAsync(js, &msg, &po);
    if (s != NATS_OK) {
        natsMsg_Destroy(msg);
        return (struct observed){.acks = 0, .status = s};
    }
    jsPubOptions_Init(&po);
    po.MaxWait = 5000;
    ck_assert_int_eq(js_PublishAsyncComplete(js, &po), NATS_OK);
    ck_assert_int_eq(__atomic_load_n(&o->acks, __ATOMIC_SEQ_CST), 1);
    return *o;
}

START_TEST(test_server_errors_classified_as_observed)
{
    add_stream(SMALL_STREAM, "it.small.>", 1024, 0);
    add_stream("IT_POISON_FULL", "it.full.>", 0, 1);
    natsConnection *nc = NULL;
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, it_nats_url()), NATS_OK);
    ck_assert_int_eq(natsConnection_GetMaxPayload(nc), MAX_PAYLOAD);
    /* A subscriber that never answers: the publish can only time out. */
    natsSubscription *silent = NULL;
    ck_assert_int_eq(natsConnection_SubscribeSync(&silent, nc, "it.silent.x"), NATS_OK);
    ck_assert_int_eq(natsConnection_Flush(nc), NATS_OK);
    struct observed o;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = &o;
    jsCtx *js = NULL;
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, &jo), NATS_OK);

    struct {
        const char *what, *subject;
        int len;
        natsStatus status;
        int js_code;
        bool permanent;
    } cases[] = {
        {"over max_payload", "it.small.x", MAX_PAYLOAD + 1, NATS_MAX_PAYLOAD, 0, true},
        {"over the stream's max_msg_size", "it.small.x", 2000, NATS_ERR,
         JSStreamMessageExceedsMaximumErr, true},
        {"no stream for the subject", "it.nostream.x", 10, NATS_NO_RESPONDERS, 0, false},
        {"no PubAck within MaxWait", "it.silent.x", 10, NATS_TIMEOUT, 0, false},
        {"a stream that fits", "it.full.x", 10, NATS_OK, 0, false},
        /* Discard-new at the message limit: space can come back, so retry. */
        {"a full stream", "it.full.x", 10, NATS_ERR, 10077, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct observed got = publish_like_relay(js, &o, cases[i].subject, cases[i].len);
        fprintf(stderr, "poison: %s: status %d (%s), JetStream error %d\n", cases[i].what,
                got.status, natsStatus_GetText(got.status), got.js_code);
        ck_assert_msg(got.status == cases[i].status && got.js_code == cases[i].js_code,
                      "%s: nats-server/nats.c gave status %d, JetStream error %d; expected %d, %d",
                      cases[i].what, got.status, got.js_code, cases[i].status, cases[i].js_code);
        if (got.status != NATS_OK)
            ck_assert_msg(message_error_is_permanent(got.status, got.js_code) == cases[i].permanent,
                          "%s: the relay judges it %s", cases[i].what,
                          cases[i].permanent ? "transient" : "permanent");
    }
    jsCtx_Destroy(js);
    natsSubscription_Destroy(silent);
    natsConnection_Destroy(nc);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("poison");
    TCase *tc = it_tcase(suite, "poison", start_servers_small_payload, 120);
    tcase_add_test(tc, test_poison_rows_dead_at_once_others_flow);
    tcase_add_test(tc, test_server_errors_classified_as_observed);
    return run_suite(suite);
}
