/* `outbox-relay audit`: rows marked published, checked against the message at their stream_seq. */
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/cli/cmd.h"

const struct cmd_option cmd_audit_options[] = {
    {"ids", true, "comma-separated row ids"},
    {"id-range", true, "FIRST-LAST, inclusive"},
    {"created-from", true, "created_at at or after this timestamp"},
    {"created-to", true, "created_at before this timestamp"},
    {"sample", true, "N published rows chosen at random (of those the other filters select)"},
    {"limit-report", true, "print at most this many problem rows (default 50)"},
    {NULL, false, NULL},
};

enum verdict { V_OK, V_MISSING, V_MISMATCH, V_RETENTION, V_COUNT };
static const char *const verdict_names[V_COUNT] = {"ok", "missing", "mismatch",
                                                   "removed_by_retention"};

/* Streams seen: name, the subject that led to it, and the stream's first/last sequence. */
struct stream_cache {
    char subject[256];
    char name[128]; /* "" = no stream takes the subject */
    uint64_t first, last;
};

/* The stream that takes `subject`: $JS.API.STREAM.NAMES with a subject filter. */
static int stream_for_subject(natsConnection *nc, const char *subject, char *name, size_t len)
{
    char body[512];
    json_t *req = json_pack("{s:s}", "subject", subject);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    snprintf(body, sizeof(body), "%s", text ? text : "{}");
    free(text);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, nc, "$JS.API.STREAM.NAMES", body, 5000);
    name[0] = '\0';
    if (s != NATS_OK)
        return -1;
    json_t *doc = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, NULL);
    json_t *streams = json_object_get(doc, "streams");
    if (json_array_size(streams) > 0)
        snprintf(name, len, "%s", json_string_value(json_array_get(streams, 0)));
    json_decref(doc);
    natsMsg_Destroy(reply);
    return 0;
}

static struct stream_cache *stream_lookup(const struct cmd_ctx *ctx, natsConnection *nc, jsCtx *js,
                                          struct stream_cache **cache, size_t *n,
                                          const char *subject)
{
    for (size_t i = 0; i < *n; i++) {
        if (ctx->cfg.stream[0] != '\0' || !strcmp((*cache)[i].subject, subject))
            return &(*cache)[i];
    }
    struct stream_cache *grown = realloc(*cache, (*n + 1) * sizeof(**cache));
    if (grown == NULL)
        return NULL;
    *cache = grown;
    struct stream_cache *c = &grown[(*n)++];
    memset(c, 0, sizeof(*c));
    snprintf(c->subject, sizeof(c->subject), "%s", subject);
    if (ctx->cfg.stream[0] != '\0')
        snprintf(c->name, sizeof(c->name), "%s", ctx->cfg.stream);
    else if (stream_for_subject(nc, subject, c->name, sizeof(c->name)) < 0)
        return NULL;
    if (c->name[0] != '\0') {
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, js, c->name, NULL, NULL) != NATS_OK)
            return NULL;
        c->first = si->State.FirstSeq;
        c->last = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    return c;
}

/* Checks one row; writes what differs into why. */
static enum verdict audit_row(natsMsg *m, const char *subject, const char *event_id,
                              const unsigned char *payload, size_t len, char *why, size_t wlen)
{
    const char *id = NULL;
    natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
    if (strcmp(natsMsg_GetSubject(m), subject) != 0) {
        snprintf(why, wlen, "subject %s in the stream", natsMsg_GetSubject(m));
        return V_MISMATCH;
    }
    if (id == NULL || strcmp(id, event_id) != 0) {
        snprintf(why, wlen, "Nats-Msg-Id %s in the stream, event_id %s", id ? id : "(none)",
                 event_id);
        return V_MISMATCH;
    }
    size_t mlen = (size_t)natsMsg_GetDataLength(m);
    if (mlen != len || (len > 0 && memcmp(natsMsg_GetData(m), payload, len) != 0)) {
        snprintf(why, wlen, "payload differs (%zu bytes in the row, %zu in the stream)", len, mlen);
        return V_MISMATCH;
    }
    return V_OK;
}

int cmd_audit(struct cmd_ctx *ctx)
{
    struct strbuf wb = {0};
    const char *params[8];
    int np = 0;
    sb_puts(&wb, "");
    if (cmd_select_rows(ctx, &wb, params, &np) < 0) {
        sb_free(&wb);
        return CMD_USAGE;
    }
    const char *where = wb.s;
    const char *sample = cmd_value(ctx, "sample"), *lr = cmd_value(ctx, "limit-report");
    int limit_report = lr ? atoi(lr) : 50;
    if (sample != NULL && atoi(sample) <= 0) {
        sb_free(&wb);
        return cmd_fail(ctx, CMD_USAGE, "--sample: \"%s\" is not a positive number", sample);
    }
    if (where[0] == '\0' && sample == NULL) {
        sb_free(&wb);
        return cmd_fail(ctx, CMD_USAGE,
                        "choose rows: --ids, --id-range, --created-from/-to or "
                        "--sample N");
    }
    char *t = config_table_sql(&ctx->cfg), *sql = NULL;
    if (t != NULL && sample != NULL)
        sql = str_printf(
            "SELECT * FROM (SELECT o.id, o.event_id, o.subject, o.payload, o.stream_seq "
            "FROM %s AS o WHERE o.status = 'published'%s ORDER BY random() LIMIT %d) AS s "
            "ORDER BY id",
            t, where, atoi(sample));
    else if (t != NULL)
        sql = str_printf("SELECT o.id, o.event_id, o.subject, o.payload, o.stream_seq FROM %s AS o "
                         "WHERE o.status = 'published'%s ORDER BY o.id",
                         t, where);
    free(t);
    sb_free(&wb);
    if (sql == NULL)
        return cmd_fail(ctx, CMD_CONNECT, "out of memory");
    PGresult *rows = cmd_pg_once(ctx, sql, np, params);
    free(sql);
    if (rows == NULL)
        return ctx->pg_failure;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (cmd_nats_connect(ctx, &nc, &js) < 0) {
        PQclear(rows);
        return CMD_CONNECT;
    }

    int counts[V_COUNT] = {0}, reported = 0, rc = CMD_OK;
    struct stream_cache *cache = NULL;
    size_t ncache = 0;
    json_t *problems = json_array();
    for (int i = 0; i < PQntuples(rows) && rc == CMD_OK; i++) {
        const char *id = PQgetvalue(rows, i, 0), *event_id = PQgetvalue(rows, i, 1);
        const char *subject = PQgetvalue(rows, i, 2);
        uint64_t seq = PQgetisnull(rows, i, 4) ? 0 : strtoull(PQgetvalue(rows, i, 4), NULL, 10);
        char why[512] = "";
        enum verdict v;
        struct stream_cache *s = stream_lookup(ctx, nc, js, &cache, &ncache, subject);
        if (s == NULL) {
            rc = cmd_fail(ctx, CMD_CONNECT, "looking up the stream of %s: %s", subject,
                          nats_GetLastError(NULL));
            break;
        }
        if (seq == 0) {
            v = V_MISSING;
            snprintf(why, sizeof(why), "published without a stream_seq");
        } else if (s->name[0] == '\0') {
            v = V_MISSING;
            snprintf(why, sizeof(why), "no stream takes subject %s", subject);
        } else if (seq < s->first) {
            v = V_RETENTION;
            snprintf(why, sizeof(why), "seq %llu is below the first sequence %llu of %s",
                     (unsigned long long)seq, (unsigned long long)s->first, s->name);
        } else {
            natsMsg *m = NULL;
            jsErrCode jerr = 0;
            natsStatus st = js_GetMsg(&m, js, s->name, seq, NULL, &jerr);
            if (st == NATS_OK) {
                size_t len = 0;
                unsigned char *payload =
                    PQunescapeBytea((const unsigned char *)PQgetvalue(rows, i, 3), &len);
                v = audit_row(m, subject, event_id, payload, len, why, sizeof(why));
                PQfreemem(payload);
                natsMsg_Destroy(m);
            } else if (st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
                v = V_MISSING;
                snprintf(why, sizeof(why), "no message at seq %llu of %s", (unsigned long long)seq,
                         s->name);
            } else {
                rc = cmd_fail(ctx, CMD_CONNECT, "reading seq %llu of %s: %s (%d)",
                              (unsigned long long)seq, s->name, natsStatus_GetText(st), (int)jerr);
                break;
            }
        }
        counts[v]++;
        if (v != V_OK && reported++ < limit_report) {
            json_array_append_new(problems,
                                  json_pack("{s:I, s:s, s:I, s:s, s:s}", "id",
                                            (json_int_t)strtoll(id, NULL, 10), "verdict",
                                            verdict_names[v], "stream_seq", (json_int_t)seq,
                                            "stream", s->name, "detail", why));
        }
    }
    free(cache);
    natsConnection_Destroy(nc);
    jsCtx_Destroy(js);
    int checked = PQntuples(rows);
    PQclear(rows);
    if (rc != CMD_OK) {
        json_decref(problems);
        return rc;
    }
    if (ctx->json) {
        json_t *doc = json_pack("{s:i}", "checked", checked);
        for (int v = 0; v < V_COUNT; v++)
            json_object_set_new(doc, verdict_names[v], json_integer(counts[v]));
        json_object_set_new(doc, "problems", problems);
        cmd_print_json(ctx, doc);
    } else {
        for (size_t i = 0; i < json_array_size(problems); i++) {
            json_t *p = json_array_get(problems, i);
            fprintf(ctx->out, "%-20s row %lld: %s\n",
                    json_string_value(json_object_get(p, "verdict")),
                    (long long)json_integer_value(json_object_get(p, "id")),
                    json_string_value(json_object_get(p, "detail")));
        }
        fprintf(ctx->out,
                "audited %d published rows: %d ok, %d missing, %d mismatch, %d removed by "
                "the stream's retention\n",
                checked, counts[V_OK], counts[V_MISSING], counts[V_MISMATCH], counts[V_RETENTION]);
        json_decref(problems);
    }
    return counts[V_MISSING] + counts[V_MISMATCH] > 0 ? CMD_FINDINGS : CMD_OK;
}
