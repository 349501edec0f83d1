/* Integration-test harness: reading a stream back and auditing it against the outbox. */
#include "harness_internal.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *it_strdup(const char *s)
{
    char *d = strdup(s ? s : "");
    ck_assert_ptr_nonnull(d);
    return d;
}

static void it_msg_copy(struct it_msg *out, natsMsg *m, uint64_t seq)
{
    memset(out, 0, sizeof *out);
    out->seq = natsMsg_GetSequence(m) ? natsMsg_GetSequence(m) : seq;
    out->subject = it_strdup(natsMsg_GetSubject(m));
    out->len = natsMsg_GetDataLength(m);
    out->data = malloc((size_t)out->len + 1);
    ck_assert_ptr_nonnull(out->data);
    if (out->len > 0)
        memcpy(out->data, natsMsg_GetData(m), (size_t)out->len);

    const char **keys = NULL;
    int nkeys = 0;
    natsStatus s = natsMsgHeader_Keys(m, &keys, &nkeys);
    if (s == NATS_NOT_FOUND)
        return;
    ck_assert_msg(s == NATS_OK, "header keys of seq %llu: %s", (unsigned long long)seq,
                  natsStatus_GetText(s));
    out->headers = calloc((size_t)nkeys, sizeof *out->headers);
    ck_assert_ptr_nonnull(out->headers);
    out->nheaders = nkeys;
    for (int i = 0; i < nkeys; i++) {
        struct it_header *h = &out->headers[i];
        h->key = it_strdup(keys[i]);
        const char **values = NULL;
        int nvalues = 0;
        s = natsMsgHeader_Values(m, keys[i], &values, &nvalues);
        ck_assert_msg(s == NATS_OK, "header %s of seq %llu: %s", keys[i], (unsigned long long)seq,
                      natsStatus_GetText(s));
        h->values = calloc((size_t)nvalues + 1, sizeof *h->values);
        ck_assert_ptr_nonnull(h->values);
        h->nvalues = nvalues;
        for (int j = 0; j < nvalues; j++)
            h->values[j] = it_strdup(values[j]);
        free((void *)values);
        if (strcmp(h->key, "Nats-Msg-Id") == 0 && nvalues > 0)
            out->msg_id = h->values[0];
    }
    free((void *)keys);
}

void it_js_read_stream(const char *name, struct it_msgs *out)
{
    memset(out, 0, sizeof *out);
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info(name, &s);
    ck_assert_msg(s == NATS_OK, "stream info %s: %s", name, natsStatus_GetText(s));
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq, msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    if (msgs == 0)
        return;
    out->msgs = calloc(last - first + 1, sizeof *out->msgs);
    ck_assert_ptr_nonnull(out->msgs);
    for (uint64_t seq = first; seq <= last; seq++) {
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        s = js_GetMsg(&m, it_js(), name, seq, NULL, &jerr);
        if (s == NATS_NOT_FOUND)
            continue; /* deleted */
        ck_assert_msg(s == NATS_OK, "get %s seq %llu: %s (%d)", name, (unsigned long long)seq,
                      natsStatus_GetText(s), (int)jerr);
        it_msg_copy(&out->msgs[out->count++], m, seq);
        natsMsg_Destroy(m);
    }
}

void it_msgs_free(struct it_msgs *msgs)
{
    for (size_t i = 0; i < msgs->count; i++) {
        struct it_msg *m = &msgs->msgs[i];
        for (int h = 0; h < m->nheaders; h++) {
            for (int v = 0; v < m->headers[h].nvalues; v++)
                free(m->headers[h].values[v]);
            free(m->headers[h].values);
            free(m->headers[h].key);
        }
        free(m->headers);
        free(m->subject);
        free(m->data);
    }
    free(msgs->msgs);
    free(msgs->by_id);
    memset(msgs, 0, sizeof *msgs);
}

static int it_msg_id_cmp(const void *a, const void *b)
{
    const struct it_msg *x = *(struct it_msg *const *)a, *y = *(struct it_msg *const *)b;
    int c = strcmp(x->msg_id ? x->msg_id : "", y->msg_id ? y->msg_id : "");
    if (c != 0)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void it_msgs_index(struct it_msgs *msgs)
{
    if (msgs->by_id || msgs->count == 0)
        return;
    msgs->by_id = malloc(msgs->count * sizeof *msgs->by_id);
    ck_assert_ptr_nonnull(msgs->by_id);
    for (size_t i = 0; i < msgs->count; i++)
        msgs->by_id[i] = &msgs->msgs[i];
    qsort(msgs->by_id, msgs->count, sizeof *msgs->by_id, it_msg_id_cmp);
}

const struct it_msg *it_msgs_find(struct it_msgs *msgs, const char *msg_id)
{
    it_msgs_index(msgs);
    size_t lo = 0, hi = msgs->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *id = msgs->by_id[mid]->msg_id ? msgs->by_id[mid]->msg_id : "";
        int c = strcmp(id, msg_id);
        if (c == 0)
            return msgs->by_id[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t it_msgs_duplicate_ids(struct it_msgs *msgs)
{
    it_msgs_index(msgs);
    size_t dups = 0;
    for (size_t i = 1; i < msgs->count; i++) {
        const char *a = msgs->by_id[i - 1]->msg_id, *b = msgs->by_id[i]->msg_id;
        if (strcmp(a ? a : "", b ? b : "") == 0)
            dups++;
    }
    return dups;
}

const struct it_header *it_msg_header(const struct it_msg *msg, const char *key)
{
    for (int i = 0; i < msg->nheaders; i++)
        if (strcmp(msg->headers[i].key, key) == 0)
            return &msg->headers[i];
    return NULL;
}

void it_js_read_stream_once(const char *name, size_t want, struct it_msgs *out)
{
    ck_assert_int_eq(it_js_stream_msgs(name), want);
    it_js_read_stream(name, out);
    ck_assert_int_eq(out->count, want);
    ck_assert_int_eq(it_msgs_duplicate_ids(out), 0);
}

void it_assert_each_row_once(PGconn *conn, const char *stream, int64_t rows)
{
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox"), rows);
    struct it_msgs msgs;
    it_js_read_stream_once(stream, (size_t)rows, &msgs);
    /* Binary results: payloads come back as raw bytes, text columns as text. */
    PGresult *res = PQexecParams(conn,
                                 "SELECT id::text, event_id, coalesce(stream_seq::text, ''),"
                                 " subject, payload FROM outbox ORDER BY id",
                                 0, NULL, NULL, NULL, NULL, 1);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "reading the outbox: %s",
                  PQresultErrorMessage(res));
    int missing = 0, wrong_seq = 0, wrong_content = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0), *seq = PQgetvalue(res, i, 2);
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(res, i, 1));
        if (m == NULL) {
            if (++missing <= 5)
                fprintf(stderr, "row %s: no message with Nats-Msg-Id %s\n", id,
                        PQgetvalue(res, i, 1));
            continue;
        }
        if (strtoull(seq, NULL, 10) != m->seq && ++wrong_seq <= 5)
            fprintf(stderr, "row %s: stream_seq '%s', its message is at %llu\n", id, seq,
                    (unsigned long long)m->seq);
        int len = PQgetlength(res, i, 4);
        if ((strcmp(m->subject, PQgetvalue(res, i, 3)) != 0 || m->len != len ||
             memcmp(m->data, PQgetvalue(res, i, 4), (size_t)len) != 0) &&
            ++wrong_content <= 5)
            fprintf(stderr, "row %s: its message on %s differs from the row\n", id, m->subject);
    }
    PQclear(res);
    it_msgs_free(&msgs);
    ck_assert_msg(missing == 0, "%d rows without a message in %s", missing, stream);
    ck_assert_msg(wrong_seq == 0, "%d rows whose stream_seq holds another message", wrong_seq);
    ck_assert_msg(wrong_content == 0, "%d rows whose message has another subject or payload",
                  wrong_content);
}

struct it_audit_row {
    char *event_id;
    int64_t id;
    int key; /* index of its ordering_key; -1: none */
    bool seen;
};

static int it_audit_row_cmp(const void *a, const void *b)
{
    return strcmp(((const struct it_audit_row *)a)->event_id,
                  ((const struct it_audit_row *)b)->event_id);
}

void it_audit_key_order(PGconn *conn, const char *stream, int show, struct it_key_audit *out)
{
    memset(out, 0, sizeof *out);
    PGresult *res = it_pg_query(conn, "SELECT event_id, id,"
                                      " CASE WHEN ordering_key IS NULL THEN -1"
                                      "      ELSE dense_rank() OVER (ORDER BY ordering_key) END"
                                      " FROM outbox");
    size_t n = (size_t)PQntuples(res);
    struct it_audit_row *rows = calloc(n + 1, sizeof *rows);
    ck_assert_ptr_nonnull(rows);
    int nkeys = 0;
    for (size_t i = 0; i < n; i++) {
        rows[i].event_id = it_strdup(PQgetvalue(res, (int)i, 0));
        rows[i].id = strtoll(PQgetvalue(res, (int)i, 1), NULL, 10);
        rows[i].key = atoi(PQgetvalue(res, (int)i, 2));
        if (rows[i].key > nkeys)
            nkeys = rows[i].key;
    }
    PQclear(res);
    qsort(rows, n, sizeof *rows, it_audit_row_cmp);
    out->rows = n;
    out->keys = (size_t)nkeys;
    /* Highest row id (and its sequence) published so far per key; ranks start at 1. */
    int64_t *last_id = calloc((size_t)nkeys + 1, sizeof *last_id);
    uint64_t *last_seq = calloc((size_t)nkeys + 1, sizeof *last_seq);
    ck_assert(last_id && last_seq);

    struct it_msgs msgs;
    it_js_read_stream(stream, &msgs);
    out->messages = msgs.count;
    for (size_t i = 0; i < msgs.count; i++) {
        const struct it_msg *m = &msgs.msgs[i];
        struct it_audit_row probe = {.event_id = m->msg_id ? m->msg_id : ""};
        struct it_audit_row *r = bsearch(&probe, rows, n, sizeof *rows, it_audit_row_cmp);
        if (r == NULL) {
            out->unknown++;
            continue;
        }
        if (r->seen) {
            out->duplicates++;
            continue;
        }
        r->seen = true;
        out->distinct++;
        if (r->key < 0)
            continue;
        if (r->id < last_id[r->key]) {
            if ((int)out->inversions < show)
                fprintf(stderr,
                        "key order: row %lld (key #%d) at stream seq %llu, after its key's"
                        " row %lld at seq %llu\n",
                        (long long)r->id, r->key, (unsigned long long)m->seq,
                        (long long)last_id[r->key], (unsigned long long)last_seq[r->key]);
            out->inversions++;
        } else {
            last_id[r->key] = r->id;
            last_seq[r->key] = m->seq;
        }
    }
    out->missing = out->rows - out->distinct;
    it_msgs_free(&msgs);
    for (size_t i = 0; i < n; i++)
        free(rows[i].event_id);
    free(rows);
    free(last_id);
    free(last_seq);
}

void it_assert_keys_in_order_once(PGconn *conn, const char *stream)
{
    struct it_key_audit a;
    it_audit_key_order(conn, stream, 10, &a);
    fprintf(stderr,
            "audit %s: %zu rows, %zu keys, %zu messages, %zu distinct, %zu duplicates,"
            " %zu unknown, %zu missing, %zu key-order inversions\n",
            stream, a.rows, a.keys, a.messages, a.distinct, a.duplicates, a.unknown, a.missing,
            a.inversions);
    ck_assert_msg(a.inversions == 0, "%zu rows reached the stream after a later row of their key",
                  a.inversions);
    ck_assert_msg(a.missing == 0, "%zu rows have no message", a.missing);
    ck_assert_msg(a.duplicates == 0, "%zu messages duplicate an earlier one", a.duplicates);
    ck_assert_msg(a.unknown == 0, "%zu messages match no row", a.unknown);
    ck_assert_int_eq(a.messages, a.rows);
}
