/* `outbox-relay requeue`: dead (and failed) rows back to pending, chosen by filters. */
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/cli/cmd.h"

const struct cmd_option cmd_requeue_options[] = {
    {"ids", true, "comma-separated row ids"},
    {"id-range", true, "FIRST-LAST, inclusive"},
    {"subject", true,
     "NATS-style pattern (orders.*, orders.>) or, when it holds % or _, a SQL LIKE pattern"},
    {"error-match", true, "last_error contains this text (case-insensitive)"},
    {"created-from", true, "created_at at or after this timestamp"},
    {"created-to", true, "created_at before this timestamp"},
    {"include-failed", false, "also failed rows waiting for their retry"},
    {"force", false, "also rows whose reason is permanent (they will die again unless fixed)"},
    {"dry-run", false, "print what would change, change nothing"},
    {"all", false, "no filter: every dead row (a filter or --all is required)"},
    {NULL, false, NULL},
};

/*
 * Reasons the relay writes for a row that can never be published as it is
 * (message.c's validation and the permanent publish errors); keyed on the
 * stable start of the text. Requeueing such a row only makes it die again,
 * unless the row was fixed (then: --force).
 */
static const char *const permanent_prefixes[] = {
    "invalid subject",
    "invalid event_id",
    "headers:",
    "message too large",
    "message size exceeds maximum allowed", /* the stream's max_msg_size (JetStream 10054) */
    "publish failed: Invalid Subject",
    "publish failed: Maximum Payload Exceeded",
    "publish failed: Invalid Argument",
    "invalid row",
};
#define NPERMANENT (sizeof(permanent_prefixes) / sizeof(permanent_prefixes[0]))

/*
 * A NATS subject pattern as a SQL LIKE pattern: '*' is one token, '>' the
 * rest (one token or more). LIKE cannot say "one token", so '*' becomes '%'
 * and a regex check on top keeps it to one token.
 */
static char *nats_pattern_regex(const char *pat)
{
    struct strbuf out = {0};
    sb_putc(&out, '^');
    for (const char *p = pat; *p; p++) {
        if (*p == '*' && (p == pat || p[-1] == '.') && (p[1] == '\0' || p[1] == '.'))
            sb_puts(&out, "[^.]+");
        else if (*p == '>' && (p == pat || p[-1] == '.') && p[1] == '\0')
            sb_puts(&out, ".+");
        else if (strchr(".^$+?()[]{}|\\", *p))
            sb_printf(&out, "\\%c", *p);
        else
            sb_putc(&out, *p);
    }
    sb_putc(&out, '$');
    return sb_take(&out);
}

static int requeue_rows(struct cmd_ctx *ctx, struct strbuf *wb, char **subject_re);

int cmd_requeue(struct cmd_ctx *ctx)
{
    struct strbuf where = {0};
    char *subject_re = NULL;
    int rc = requeue_rows(ctx, &where, &subject_re);
    sb_free(&where);
    free(subject_re);
    return rc;
}

static int requeue_rows(struct cmd_ctx *ctx, struct strbuf *wb, char **subject_re)
{
    const char *subject = cmd_value(ctx, "subject"), *match = cmd_value(ctx, "error-match");
    bool dry = cmd_flag(ctx, "dry-run"), force = cmd_flag(ctx, "force");
    const char *params[16];
    int np = 0;
    sb_puts(wb, "");
    if (cmd_select_rows(ctx, wb, params, &np) < 0)
        return CMD_USAGE;
    if (subject != NULL) {
        if (strpbrk(subject, "%_") != NULL) {
            params[np] = subject;
            sb_printf(wb, " AND o.subject LIKE $%d", ++np);
        } else {
            *subject_re = nats_pattern_regex(subject);
            if (*subject_re == NULL)
                return cmd_fail(ctx, CMD_CONNECT, "out of memory");
            params[np] = *subject_re;
            sb_printf(wb, " AND o.subject ~ $%d", ++np);
        }
    }
    if (match != NULL) {
        params[np] = match;
        sb_printf(wb, " AND strpos(lower(COALESCE(o.last_error, '')), lower($%d)) > 0", ++np);
    }
    if (wb->oom)
        return cmd_fail(ctx, CMD_CONNECT, "out of memory");
    const char *where = wb->s;
    if (where[0] == '\0' && !cmd_flag(ctx, "all"))
        return cmd_fail(ctx, CMD_USAGE,
                        "choose rows: --ids, --id-range, --subject, --error-match, "
                        "--created-from/--created-to, or --all");

    /* permanent: does last_error start with a reason that cannot change by retrying? */
    struct strbuf pb = {0};
    sb_putc(&pb, '(');
    for (size_t i = 0; i < NPERMANENT; i++)
        sb_printf(&pb, "%sstarts_with(COALESCE(o.last_error, ''), '%s')", i ? " OR " : "",
                  permanent_prefixes[i]);
    sb_putc(&pb, ')');
    char *permanent = sb_take(&pb);

    /*
     * A row with an ordering_key comes back as 'failed' and due now, not
     * 'pending': the claim query holds a key's later rows behind an earlier
     * failed row, not behind a pending one. As pending, the requeued row
     * (low id, behind the relay's scan cursor) waited for the next sweep
     * while a scan from the cursor took the later rows of its key, no longer
     * held, and published them first (test_requeued_row_keeps_its_place...).
     *
     * Safe next to a running leader: a dead row is never claimed, so no
     * relay holds it. A failed row is taken only while it waits for its
     * retry (next_attempt_at in the future): then its last mark is
     * committed and no relay holds it either. A due failed row may be in a
     * relay's hands right now; it is left alone (its retry is under way).
     */
    char *t = config_table_sql(&ctx->cfg), *sql = NULL;
    const char *status_cond = cmd_flag(ctx, "include-failed")
                                  ? "(o.status = 'dead' OR (o.status = 'failed' AND "
                                    "o.next_attempt_at > now()))"
                                  : "(o.status = 'dead')";
    if (t == NULL || permanent == NULL) {
        /* nothing to build */
    } else if (dry) {
        sql = str_printf(
            "SELECT o.id, o.status, o.subject, o.ordering_key, COALESCE(o.last_error, ''), "
            "(NOT %s OR %s)::int AS take FROM %s AS o WHERE %s%s ORDER BY o.id",
            permanent, force ? "true" : "false", t, status_cond, where);
    } else {
        sql = str_printf(
            "WITH chosen AS (SELECT o.id, o.status AS was, %s AS permanent FROM %s AS o "
            "WHERE %s%s FOR UPDATE), "
            "requeued AS (UPDATE %s AS o SET attempts = 0, dead_lettered_at = NULL, "
            "status = CASE WHEN o.ordering_key IS NULL THEN 'pending' ELSE 'failed' END, "
            "next_attempt_at = CASE WHEN o.ordering_key IS NULL THEN NULL ELSE now() END "
            "FROM chosen AS c WHERE o.id = c.id "
            "AND (NOT c.permanent OR %s) RETURNING o.id, c.was, o.subject, o.ordering_key, "
            "COALESCE(o.last_error, '') AS err), "
            "wake AS (SELECT pg_notify('%s', '') WHERE EXISTS (SELECT 1 FROM requeued)) "
            "SELECT r.id, r.was, r.subject, r.ordering_key, r.err, 1 FROM requeued AS r "
            "LEFT JOIN wake ON true "
            "UNION ALL SELECT o.id, o.status, o.subject, o.ordering_key, "
            "COALESCE(o.last_error, ''), 0 FROM %s AS o JOIN chosen AS c ON c.id = o.id "
            "WHERE c.permanent AND NOT %s ORDER BY 1",
            permanent, t, status_cond, where, t, force ? "true" : "false", ctx->cfg.channel, t,
            force ? "true" : "false");
    }
    free(t);
    free(permanent);
    if (sql == NULL)
        return cmd_fail(ctx, CMD_CONNECT, "out of memory");
    PGresult *res = cmd_pg_once(ctx, sql, np, params);
    free(sql);
    if (res == NULL)
        return ctx->pg_failure;

    int n = PQntuples(res), taken = 0, skipped = 0;
    json_t *doc = json_object(), *rows = json_array(), *skips = json_array();
    for (int i = 0; i < n; i++) {
        bool take = !strcmp(PQgetvalue(res, i, 5), "1");
        json_t *row = json_pack(
            "{s:I, s:s, s:s, s:o, s:s}", "id", (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10),
            "status", PQgetvalue(res, i, 1), "subject", PQgetvalue(res, i, 2), "ordering_key",
            PQgetisnull(res, i, 3) ? json_null() : json_string(PQgetvalue(res, i, 3)), "last_error",
            PQgetvalue(res, i, 4));
        json_array_append_new(take ? rows : skips, row);
        take ? taken++ : skipped++;
    }
    json_object_set_new(doc, "dry_run", json_boolean(dry));
    json_object_set_new(doc, dry ? "would_requeue" : "requeued", json_integer(taken));
    json_object_set_new(doc, "skipped_permanent", json_integer(skipped));
    json_object_set_new(doc, "rows", rows);
    json_object_set_new(doc, "skipped", skips);
    if (ctx->json) {
        cmd_print_json(ctx, doc);
    } else {
        FILE *out = ctx->out;
        for (size_t i = 0; i < json_array_size(rows); i++) {
            json_t *r = json_array_get(rows, i);
            fprintf(out, "%s row %lld (%s) %s: %s\n", dry ? "would requeue" : "requeued",
                    (long long)json_integer_value(json_object_get(r, "id")),
                    json_string_value(json_object_get(r, "status")),
                    json_string_value(json_object_get(r, "subject")),
                    json_string_value(json_object_get(r, "last_error")));
        }
        for (size_t i = 0; i < json_array_size(skips); i++) {
            json_t *r = json_array_get(skips, i);
            fprintf(out, "skipped row %lld (permanent, --force to include): %s\n",
                    (long long)json_integer_value(json_object_get(r, "id")),
                    json_string_value(json_object_get(r, "last_error")));
        }
        fprintf(out, "%s %d rows of %s; %d skipped as permanent\n",
                dry ? "dry run: would requeue" : "requeued", taken, ctx->cfg.table, skipped);
        json_decref(doc);
    }
    PQclear(res);
    return CMD_OK;
}
