/*
 * The hostile-row corpus: whatever a row may legally hold, run through the real pipeline (real
 * relay, PostgreSQL, nats-server). Each row is either published byte for byte with exactly its
 * headers and the relay's Nats-Msg-Id, or dead at its first attempt with a reason of the expected
 * class; and a later row of its ordering_key is published either way.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "HOSTILE"
#define EXT    "HOSTILE_EXT"
/* nats-server's default max_payload; the relay reads it from the server. */
#define M "1048576"
/* The smallest budget the relay takes: rows larger than it still go, alone. */
#define BUDGET "65536"

/* The relay's own header block around an 8-byte event_id: "NATS/1.0\r\n", "Nats-Msg-Id: <8>\r\n",
 * "\r\n" = 27 + 8. */
#define OWN_HEADERS "35"

#define BYTES(n)  "convert_to(repeat('p', " n "), 'UTF8')"
#define HDR(k, v) "jsonb_build_object('" k "', " v ")"
/* A header block of exactly n bytes from one X-Big header: the value fills what the
 * status line, "X-Big: \r\n", the Nats-Msg-Id line (8-byte id) and the blank line leave. */
#define BLOCK(n) HDR("X-Big", "repeat('h', " n " - (10 + 9 + 23 + 2))")

static const struct hostile {
    const char *name;
    const char *subject;  /* SQL */
    const char *event_id; /* SQL */
    const char *payload;  /* SQL, NULL: '{}' */
    const char *headers;  /* SQL, NULL: '{}' */
    const char *key;      /* SQL, NULL: a key of the row's own, followed by a later row */
    const char *dead;     /* NULL: published; else how last_error starts */
} corpus[] = {
    /* subjects */
    {"system: JetStream API", "'$JS.API.STREAM.PURGE." STREAM "'", "'s-js'", NULL, NULL, NULL,
     "invalid subject"},
    {"system: $SYS", "'$SYS.REQ.SERVER.PING'", "'s-sys'", NULL, NULL, NULL, "invalid subject"},
    {"system: $KV", "'$KV.bucket.key'", "'s-kv'", NULL, NULL, NULL, "invalid subject"},
    {"reply inbox", "'_INBOX.abc'", "'s-inbox'", NULL, NULL, NULL, "invalid subject"},
    {"outside the stream", "'other.x'", "'s-out'", NULL, NULL, NULL, "subject not allowed"},
    {"outside, not the allowed pattern", "'ext.no.x'", "'s-extno'", NULL, NULL, NULL,
     "subject not allowed"},
    {"outside, allowed", "'ext.ok.x'", "'s-extok'", NULL, NULL, NULL, NULL},
    {"wildcard *", "'h.*'", "'s-star'", NULL, NULL, NULL, "invalid subject"},
    {"wildcard >", "'h.>'", "'s-gt'", NULL, NULL, NULL, "invalid subject"},
    {"empty subject", "''", "'s-empty'", NULL, NULL, NULL, "invalid subject"},
    {"space in subject", "'h. x'", "'s-space'", NULL, NULL, NULL, "invalid subject"},
    {"tab in subject", "E'h.\\tx'", "'s-tab'", NULL, NULL, NULL, "invalid subject"},
    {"empty token", "'h..x'", "'s-tok'", NULL, NULL, NULL, "invalid subject"},
    {"trailing dot", "'h.x.'", "'s-dot'", NULL, NULL, NULL, "invalid subject"},
    {"subject at 3840 bytes", "'h.' || repeat('a', 3838)", "'s-3840'", NULL, NULL, NULL, NULL},
    {"subject at 3841 bytes", "'h.' || repeat('a', 3839)", "'s-3841'", NULL, NULL, NULL,
     "invalid subject"},
    {"UTF-8 subject", "'h.é'", "'s-utf8'", NULL, NULL, NULL, NULL},

    /* headers */
    {"headers: array", "'h.x'", "'h-arr'", NULL, "'[1]'", NULL, "headers:"},
    {"headers: string", "'h.x'", "'h-str'", NULL, "'\"s\"'", NULL, "headers:"},
    {"headers: null", "'h.x'", "'h-null'", NULL, "'null'", NULL, "headers:"},
    {"headers: number value", "'h.x'", "'h-num'", NULL, "'{\"a\": 1}'", NULL, "headers:"},
    {"headers: null value", "'h.x'", "'h-nullv'", NULL, "'{\"a\": null}'", NULL, "headers:"},
    {"headers: object value", "'h.x'", "'h-obj'", NULL, "'{\"a\": {\"b\": \"c\"}}'", NULL,
     "headers:"},
    {"headers: mixed array", "'h.x'", "'h-mix'", NULL, "'{\"a\": [\"x\", 1]}'", NULL, "headers:"},
    {"headers: array of strings", "'h.x'", "'h-multi'", NULL,
     "'{\"X-Multi\": [\"a\", \"b\", \"c\"]}'", NULL, NULL},
    {"headers: empty array", "'h.x'", "'h-earr'", NULL, "'{\"X-E\": [], \"X-F\": \"f\"}'", NULL,
     NULL},
    {"headers: empty name", "'h.x'", "'h-ename'", NULL, "'{\"\": \"v\"}'", NULL, "headers:"},
    {"headers: name with :", "'h.x'", "'h-colon'", NULL, "'{\"a:b\": \"v\"}'", NULL, "headers:"},
    {"headers: name with space", "'h.x'", "'h-nsp'", NULL, "'{\"a b\": \"v\"}'", NULL, "headers:"},
    {"headers: name with CR LF", "'h.x'", "'h-ncrlf'", NULL, "'{\"a\\r\\nb\": \"v\"}'", NULL,
     "headers:"},
    {"headers: non-ASCII name", "'h.x'", "'h-nutf'", NULL, "'{\"é\": \"v\"}'", NULL, "headers:"},
    {"headers: reserved name", "'h.x'", "'h-resv'", NULL, "'{\"Nats-Msg-Id\": \"other\"}'", NULL,
     "headers:"},
    {"headers: reserved, any case", "'h.x'", "'h-resv2'", NULL,
     "'{\"nats-expected-stream\": \"X\"}'", NULL, "headers:"},
    {"headers: value with CR LF", "'h.x'", "'h-vcrlf'", NULL, "'{\"a\": \"x\\r\\ny\"}'", NULL,
     "headers:"},
    {"headers: value with LF", "'h.x'", "'h-vlf'", NULL, "'{\"a\": \"x\\ny\"}'", NULL, "headers:"},
    {"headers: UTF-8 value", "'h.x'", "'h-vutf'", NULL, "'{\"X-U\": \"é€😀\"}'", NULL, NULL},
    {"headers: empty value", "'h.x'", "'h-vemp'", NULL, "'{\"X-V\": \"\"}'", NULL, "headers:"},
    {"headers: 1000 headers", "'h.x'", "'h-many'", NULL,
     "(SELECT jsonb_object_agg('X-H' || g, 'v' || g) FROM generate_series(1000, 1999) g)", NULL,
     NULL},
    /* nats.c would send one's values under the other's name */
    {"headers: a name another starts", "'h.x'", "'h-prefix'", NULL,
     "'{\"Trace\": \"a\", \"Traceparent\": \"b\"}'", NULL, "headers:"},
    {"headers: 1000 headers, names prefixing", "'h.x'", "'h-many2'", NULL,
     "(SELECT jsonb_object_agg('X-H' || g, 'v' || g) FROM generate_series(1, 1000) g)", NULL,
     "headers:"},
    {"headers: names alike", "'h.x'", "'h-alike'", NULL, "'{\"X-A\": \"a\", \"X-AB\": \"b\"}'",
     NULL, NULL},
    {"headers: name \"Nats\"", "'h.x'", "'h-nats'", NULL, "'{\"Nats\": \"n\"}'", NULL, NULL},
    {"headers: value with tab", "'h.x'", "'h-vtab'", NULL, "'{\"X-T\": \"a\\tb\"}'", NULL, NULL},
    {"headers: value with edge spaces", "'h.x'", "'h-vsp'", NULL, "'{\"X-S\": \" a \"}'", NULL,
     "headers:"},
    {"headers: block at 64 KiB", "'h.x'", "'h-065535'", NULL, BLOCK("65535"), NULL, NULL},
    {"headers: block over 64 KiB", "'h.x'", "'h-065536'", NULL, BLOCK("65536"), NULL,
     "headers too large"},
    /* jsonb compresses these to a few KB (pg_column_size); their text is what the relay reads */
    {"headers: compressible, 100 KB", "'h.x'", "'h-cmp1'", NULL, HDR("X-C", "repeat('c', 100000)"),
     NULL, "headers too large"},
    {"headers: compressible, 600 KB", "'h.x'", "'h-cmp6'", NULL, HDR("X-C", "repeat('c', 600000)"),
     NULL, "headers too large"},

    /* sizes: payload + the relay's headers around max_payload */
    {"payload: max_payload - 1", "'h.x'", "'mp-under'", BYTES(M " - " OWN_HEADERS " - 1"), NULL,
     NULL, NULL},
    {"payload: max_payload", "'h.x'", "'mp-exact'", BYTES(M " - " OWN_HEADERS), NULL, NULL, NULL},
    {"payload: max_payload + 1", "'h.x'", "'mp-overr'", BYTES(M " - " OWN_HEADERS " + 1"), NULL,
     NULL, "message too large"},
    /* "X-A: v\r\n" is 8 more bytes of headers */
    {"payload + a header: max_payload", "'h.x'", "'mh-exact'", BYTES(M " - " OWN_HEADERS " - 8"),
     "'{\"X-A\": \"v\"}'", NULL, NULL},
    {"payload + a header: max_payload + 1", "'h.x'", "'mh-overr'",
     BYTES(M " - " OWN_HEADERS " - 7"), "'{\"X-A\": \"v\"}'", NULL, "message too large"},
    {"payload: the byte budget", "'h.x'", "'b-exact'", BYTES(BUDGET), NULL, NULL, NULL},
    {"payload: over the byte budget", "'h.x'", "'b-over'", BYTES("200000"), NULL, NULL, NULL},
    {"payload: 100 MB", "'h.x'", "'huge'", BYTES("100000000"), NULL, NULL, "message too large"},
    {"payload: empty", "'h.x'", "'p-empty'", "'\\x'::bytea", NULL, NULL, NULL},
    {"payload: binary", "'h.x'", "'p-bin'", "'\\x00ff0d0a00'::bytea", NULL, NULL, NULL},

    /* event ids */
    {"event_id: empty", "'h.x'", "''", NULL, NULL, NULL, "invalid event_id"},
    {"event_id: 10,000 bytes", "'h.x'", "repeat('e', 10000)", NULL, NULL, NULL, NULL},
    {"event_id: inner space", "'h.x'", "'id with spaces'", NULL, NULL, NULL, NULL},
    {"event_id: leading space", "'h.x'", "' lead'", NULL, NULL, NULL, "invalid event_id"},
    {"event_id: trailing space", "'h.x'", "'trail '", NULL, NULL, NULL, "invalid event_id"},
    {"event_id: CR LF", "'h.x'", "E'a\\r\\nb'", NULL, NULL, NULL, "invalid event_id"},
    {"event_id: UTF-8", "'h.x'", "'é-1'", NULL, NULL, NULL, NULL},

    /* ordering keys, NULL where allowed */
    {"key: NULL", "'h.x'", "'k-null'", NULL, NULL, "NULL", NULL},
    {"key: empty", "'h.x'", "'k-empty'", NULL, NULL, "''", NULL},
    {"key: NULL, dead", "'$JS.API.INFO'", "'k-nulld'", NULL, NULL, "NULL", "invalid subject"},
};
#define NCORPUS ((int)(sizeof corpus / sizeof corpus[0]))

static bool settled(void *arg)
{
    PGconn *conn = arg;
    return it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status NOT IN ('published', 'dead')"
                           " OR (status = 'dead' AND attempts > 1)") == 0;
}

static void hex(const unsigned char *data, int len, char *out)
{
    for (int i = 0; i < len; i++)
        sprintf(out + 2 * i, "%02x", data[i]);
    out[2 * len] = '\0';
}

/*
 * Whether the message carries exactly the row's headers and its Nats-Msg-Id
 * (and, pipelined, a fence naming the message just before it in the stream,
 * of the same subject); why otherwise.
 */
static bool same_headers(struct it_msgs *in, const struct it_msg *m, const char *headers,
                         const char *event_id, char *why, size_t len)
{
    json_t *obj = json_loads(headers, JSON_DECODE_ANY, NULL);
    const char *name;
    json_t *v;
    int want = 1; /* Nats-Msg-Id */
    bool ok = true;
    json_object_foreach(obj, name, v)
    {
        const struct it_header *h = it_msg_header(m, name);
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        if (n == 0) {
            if (h != NULL)
                ok = false, snprintf(why, len, "%s: sent, the row has no value", name);
            continue;
        }
        want++;
        if (h == NULL || (size_t)h->nvalues != n) {
            snprintf(why, len, "%s: %d values (\"%.20s\", \"%.20s\"), want %zu", name,
                     h ? h->nvalues : 0, h && h->nvalues > 0 ? h->values[0] : "",
                     h && h->nvalues > 1 ? h->values[1] : "", n);
            ok = false;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            const char *s = json_string_value(json_is_array(v) ? json_array_get(v, i) : v);
            if (strcmp(h->values[i], s) != 0) {
                snprintf(why, len, "%s: value \"%.40s\", want \"%.40s\"", name, h->values[i], s);
                ok = false;
            }
        }
    }
    json_decref(obj);
    const struct it_header *id = it_msg_header(m, "Nats-Msg-Id");
    if (id == NULL || id->nvalues != 1 || strcmp(id->values[0], event_id) != 0) {
        snprintf(why, len, "Nats-Msg-Id \"%.40s\", want \"%.40s\"", id ? id->values[0] : "",
                 event_id);
        ok = false;
    }
    const struct it_header *fence = it_msg_header(m, "Nats-Expected-Last-Msg-Id");
    if (ok && fence != NULL) {
        const struct it_msg *prev = fence->nvalues == 1 ? it_msgs_find(in, fence->values[0]) : NULL;
        bool right = prev != NULL && prev->seq + 1 == m->seq && !strcmp(prev->subject, m->subject);
        if (!right) {
            snprintf(why, len, "fence \"%.40s\" does not name the message before it on %s",
                     fence->values[0], m->subject);
            ok = false;
        }
        want++;
    }
    if (ok && m->nheaders != want) {
        snprintf(why, len, "%d headers, want %d", m->nheaders, want);
        ok = false;
    }
    return ok;
}

START_TEST(test_hostile_corpus)
{
    const char *subjects[] = {"h.>", NULL};
    const char *ext[] = {"ext.>", NULL};
    it_js_add_stream(STREAM, subjects);
    it_js_add_stream(EXT, ext);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE TABLE corpus (id bigint, idx int, follower bool)");
    for (int i = 0; i < NCORPUS; i++) {
        const struct hostile *h = &corpus[i];
        char key[32];
        snprintf(key, sizeof key, "'c%d'", i);
        it_pg_exec(conn,
                   "WITH r AS (INSERT INTO outbox (subject, event_id, payload, headers, "
                   "ordering_key) VALUES (%s, %s, %s, %s, %s) RETURNING id)"
                   " INSERT INTO corpus SELECT id, %d, false FROM r",
                   h->subject, h->event_id, h->payload ? h->payload : "'{}'",
                   h->headers ? h->headers : "'{}'", h->key ? h->key : key, i);
    }
    /* A later row of each key, after every corpus row. */
    for (int i = 0; i < NCORPUS; i++) {
        char key[32];
        snprintf(key, sizeof key, "'c%d'", i);
        it_pg_exec(conn,
                   "WITH r AS (INSERT INTO outbox (subject, event_id, ordering_key) VALUES"
                   " ('h.follow', 'follow-%d', %s) RETURNING id)"
                   " INSERT INTO corpus SELECT id, %d, true FROM r",
                   i, corpus[i].key ? corpus[i].key : key, i);
    }

    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=h.>",
                         "OUTBOX_ALLOW_SUBJECTS=ext.ok.*", "OUTBOX_MAX_INFLIGHT_BYTES=" BUDGET,
                         /* pipelined, as by default with OUTBOX_STREAM: the fence is allowed */
                         "OUTBOX_RETRY_BASE_MS=50", "OUTBOX_RETRY_MAX_MS=200", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    bool done = it_wait_until(settled, conn, 60000);
    if (!done)
        it_relay_dump_log(relay);

    struct it_msgs msgs, ext_msgs;
    int64_t in_stream = it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'"
                                        " AND subject LIKE 'h.%%'");
    it_js_read_stream_once(STREAM, (size_t)in_stream, &msgs);
    it_js_read_stream(EXT, &ext_msgs);

    int wrong = 0;
    PGresult *res = it_pg_query(
        conn, "SELECT c.idx, c.follower, o.status, coalesce(o.last_error, ''), o.attempts,"
              " o.event_id, o.subject, o.headers::text,"
              " CASE WHEN octet_length(o.payload) < 4000000 THEN encode(o.payload, 'hex') END"
              " FROM corpus c JOIN outbox o USING (id) ORDER BY c.follower, c.idx");
    ck_assert_int_eq(PQntuples(res), 2 * NCORPUS);
    for (int r = 0; r < PQntuples(res); r++) {
        int i = atoi(PQgetvalue(res, r, 0));
        bool follower = PQgetvalue(res, r, 1)[0] == 't';
        const char *status = PQgetvalue(res, r, 2), *error = PQgetvalue(res, r, 3);
        const char *event_id = PQgetvalue(res, r, 5), *subject = PQgetvalue(res, r, 6);
        const char *want = follower ? NULL : corpus[i].dead;
        char why[256] = "";
        bool ok;
        if (want != NULL) {
            ok = strcmp(status, "dead") == 0 && strcmp(PQgetvalue(res, r, 4), "1") == 0 &&
                 strncmp(error, want, strlen(want)) == 0;
            if (!ok)
                snprintf(why, sizeof why, "%s after %s attempts \"%.120s\", want dead \"%s...\"",
                         status, PQgetvalue(res, r, 4), error, want);
        } else if (strcmp(status, "published") != 0) {
            ok = false;
            snprintf(why, sizeof why, "%s \"%.160s\", want published", status, error);
        } else {
            struct it_msgs *in = strncmp(subject, "ext.", 4) == 0 ? &ext_msgs : &msgs;
            const struct it_msg *m = it_msgs_find(in, event_id);
            const char *payload_hex = PQgetvalue(res, r, 8);
            char *got = m ? malloc(2 * (size_t)m->len + 1) : NULL;
            if (got)
                hex(m->data, m->len, got);
            ok = m != NULL && strcmp(m->subject, subject) == 0 && strcmp(got, payload_hex) == 0 &&
                 same_headers(in, m, PQgetvalue(res, r, 7), event_id, why, sizeof why);
            if (m == NULL)
                snprintf(why, sizeof why, "published, but not in the stream");
            else if (why[0] == '\0' && !ok)
                snprintf(why, sizeof why, "subject or payload differs (%d bytes)", m->len);
            free(got);
        }
        fprintf(stderr, "hostile: %-40s %s%s%s\n", corpus[i].name, follower ? "(later row) " : "",
                ok ? "ok: " : "WRONG: ", ok ? (want ? error : status) : why);
        wrong += !ok;
    }
    PQclear(res);
    it_msgs_free(&msgs);
    it_msgs_free(&ext_msgs);
    ck_assert_msg(done, "rows did not settle");
    ck_assert_msg(wrong == 0, "%d rows met the wrong fate (see above)", wrong);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("hostile_rows");
    TCase *tc = it_tcase(suite, "hostile", it_start_servers, 180);
    tcase_add_test(tc, test_hostile_corpus);
    return run_suite(suite);
}
