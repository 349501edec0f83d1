/* `outbox-relay replay`: publish already-published rows again, with or without their message id. */
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/nats/cloudevents.h"
#include "outbox_relay/cli/cmd.h"
#include "outbox_relay/nats/message.h"

const struct cmd_option cmd_replay_options[] = {
    {"ids", true, "comma-separated row ids"},
    {"id-range", true, "FIRST-LAST, inclusive"},
    {"created-from", true, "created_at at or after this timestamp"},
    {"created-to", true, "created_at before this timestamp"},
    {"fresh-id", false,
     "send a new Nats-Msg-Id (the original goes in Outbox-Original-Msg-Id), so JetStream's "
     "duplicate window does not drop the copy"},
    {"dry-run", false, "print what would be sent, send nothing"},
    {NULL, false, NULL},
};

#define HEADER_ORIGINAL "Outbox-Original-Msg-Id"
#define HEADER_REPLAY   "Outbox-Replay"

int cmd_replay(struct cmd_ctx *ctx)
{
    struct strbuf where = {0};
    const char *params[8];
    int np = 0;
    bool fresh = cmd_flag(ctx, "fresh-id"), dry = cmd_flag(ctx, "dry-run");
    if (cmd_select_rows(ctx, &where, params, &np) < 0) {
        sb_free(&where);
        return CMD_USAGE;
    }
    if (where.n == 0) {
        sb_free(&where);
        return cmd_fail(ctx, CMD_USAGE, "choose rows: --ids, --id-range or --created-from/-to");
    }
    char *t = config_table_sql(&ctx->cfg);
    /*
     * Only published rows are sent: the others are the relay's to send. They
     * are still listed, as skipped, so a replay that sends nothing says why.
     * Key order = id order.
     */
    char *sql = t == NULL ? NULL
                          : str_printf("SELECT o.id, o.event_id, o.subject, "
                                       "CASE WHEN o.status = 'published' THEN o.payload END, "
                                       "o.headers::text, gen_random_uuid()::text, o.status, "
                                       "extract(epoch FROM o.created_at)::float8 "
                                       "FROM %s AS o WHERE true%s ORDER BY o.id",
                                       t, where.s);
    free(t);
    sb_free(&where);
    if (sql == NULL)
        return cmd_fail(ctx, CMD_CONNECT, "out of memory");
    PGresult *rows = cmd_pg_once(ctx, sql, np, params);
    free(sql);
    if (rows == NULL)
        return ctx->pg_failure;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (!dry && cmd_nats_connect(ctx, &nc, &js) < 0) {
        PQclear(rows);
        return CMD_CONNECT;
    }
    int64_t max_payload = nc ? natsConnection_GetMaxPayload(nc) : 0;
    /* A dry run connects to nothing, but building messages needs the library open. */
    if (nc == NULL && nats_Open(-1) != NATS_OK) {
        PQclear(rows);
        return CMD_CONNECT;
    }

    int stored = 0, duplicates = 0, failed = 0, skipped = 0, n = PQntuples(rows), published = 0;
    json_t *outcomes = json_array();
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(rows, i, 0), *event_id = PQgetvalue(rows, i, 1);
        const char *status = PQgetvalue(rows, i, 6);
        if (strcmp(status, "published") != 0) {
            char why[96];
            snprintf(why, sizeof(why), "status is %s: only published rows are replayed", status);
            json_array_append_new(outcomes, json_pack("{s:I, s:s, s:s, s:I, s:s}", "id",
                                                      (json_int_t)strtoll(id, NULL, 10), "outcome",
                                                      "skipped", "msg_id", event_id, "stream_seq",
                                                      (json_int_t)0, "error", why));
            skipped++;
            continue;
        }
        published++;
        const char *subject = PQgetvalue(rows, i, 2),
                   *msg_id = fresh ? PQgetvalue(rows, i, 5) : event_id;
        size_t len = 0;
        unsigned char *payload =
            PQunescapeBytea((const unsigned char *)PQgetvalue(rows, i, 3), &len);
        char err[512] = "", outcome[64] = "";
        natsMsg *msg = NULL;
        uint64_t seq = 0;
        /* The same message the relay built (headers, payload), then the replay marks. The
         * CloudEvent is the same event: ce-id stays the event_id under a fresh message id. */
        const char *headers = PQgetvalue(rows, i, 4),
                   *ce_source = config_cloudevents_source(&ctx->cfg);
        char *with_ce = NULL;
        enum message_result r =
            ce_source == NULL
                ? MESSAGE_OK
                : cloudevents_headers(headers, subject, event_id,
                                      strtod(PQgetvalue(rows, i, 7), NULL), ce_source, &with_ce);
        if (r == MESSAGE_OK)
            r = message_build(&msg, subject, msg_id, with_ce != NULL ? with_ce : headers,
                              (const char *)payload, len, max_payload, err, sizeof(err));
        else
            snprintf(err, sizeof(err), "out of memory");
        free(with_ce);
        PQfreemem(payload);
        if (r == MESSAGE_OK) {
            natsMsgHeader_Set(msg, HEADER_REPLAY, "true");
            if (fresh)
                natsMsgHeader_Set(msg, HEADER_ORIGINAL, event_id);
        }
        if (r != MESSAGE_OK) {
            snprintf(outcome, sizeof(outcome), "failed");
            failed++;
        } else if (dry) {
            snprintf(outcome, sizeof(outcome), "would_send");
        } else {
            jsPubAck *pa = NULL;
            jsErrCode jerr = 0;
            natsStatus s = js_PublishMsg(&pa, js, msg, NULL, &jerr);
            if (s == NATS_OK && pa->Duplicate) {
                snprintf(outcome, sizeof(outcome), "duplicate");
                duplicates++;
                seq = pa->Sequence;
            } else if (s == NATS_OK) {
                snprintf(outcome, sizeof(outcome), "stored");
                stored++;
                seq = pa->Sequence;
            } else {
                const char *detail = nats_GetLastError(NULL);
                snprintf(outcome, sizeof(outcome), "failed");
                snprintf(err, sizeof(err), "%s (%d)%s%s", natsStatus_GetText(s), (int)jerr,
                         detail ? ": " : "", detail ? detail : "");
                failed++;
            }
            jsPubAck_Destroy(pa);
        }
        natsMsg_Destroy(msg);
        json_array_append_new(outcomes, json_pack("{s:I, s:s, s:s, s:I, s:s}", "id",
                                                  (json_int_t)strtoll(id, NULL, 10), "outcome",
                                                  outcome, "msg_id", msg_id, "stream_seq",
                                                  (json_int_t)seq, "error", err));
    }
    PQclear(rows);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);

    if (ctx->json) {
        cmd_print_json(ctx, json_pack("{s:b, s:b, s:i, s:i, s:i, s:i, s:i, s:o}", "dry_run", dry,
                                      "fresh_id", fresh, "rows", published, "stored", stored,
                                      "duplicates", duplicates, "failed", failed, "skipped",
                                      skipped, "outcomes", outcomes));
    } else {
        for (size_t i = 0; i < json_array_size(outcomes); i++) {
            json_t *o = json_array_get(outcomes, i);
            const char *what = json_string_value(json_object_get(o, "outcome"));
            long long id = (long long)json_integer_value(json_object_get(o, "id"));
            long long seq = (long long)json_integer_value(json_object_get(o, "stream_seq"));
            if (!strcmp(what, "stored"))
                fprintf(ctx->out, "row %lld: stored at seq %lld\n", id, seq);
            else if (!strcmp(what, "duplicate"))
                fprintf(ctx->out,
                        "row %lld: dropped as a duplicate of seq %lld (same Nats-Msg-Id "
                        "inside the stream's duplicate window)\n",
                        id, seq);
            else if (!strcmp(what, "skipped"))
                fprintf(ctx->out, "row %lld: skipped: %s\n", id,
                        json_string_value(json_object_get(o, "error")));
            else if (!strcmp(what, "would_send"))
                fprintf(ctx->out, "row %lld: would send with Nats-Msg-Id %s\n", id,
                        json_string_value(json_object_get(o, "msg_id")));
            else
                fprintf(ctx->out, "row %lld: failed: %s\n", id,
                        json_string_value(json_object_get(o, "error")));
        }
        fprintf(ctx->out,
                "%s%d published rows: %d stored as new messages, %d dropped as "
                "duplicates, %d failed; %d selected rows skipped (not published)\n",
                dry ? "dry run, would replay " : "replayed ", published, stored, duplicates, failed,
                skipped);
        json_decref(outcomes);
    }
    /* Rows selected but not sent are findings too: the operator expected them sent. */
    if (n == 0 && !ctx->json)
        fprintf(ctx->out, "no row matches the selection\n");
    return failed > 0 || skipped > 0 || n == 0 ? CMD_FINDINGS : CMD_OK;
}
