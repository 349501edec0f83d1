/* `outbox-relay migrate`: create or upgrade the schema under OUTBOX_TABLE and OUTBOX_CHANNEL. */
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/cli/cmd.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pg/migrate.h"
#include "outbox_relay/lib/util.h"

const struct cmd_option cmd_migrate_options[] = {
    {"dry-run", false,
     "print the SQL it would run (for psql users with custom names), change nothing"},
    {"force", false, "apply the migrations even when the version is current"},
    {"lock-timeout-ms", true, "give up when a lock on the table waits this long (default 30000)"},
    {NULL, false, NULL},
};

/* Serialises concurrent migrates of one table (e.g. two Helm hooks); not the leader lock. */

static int version_of(struct cmd_ctx *ctx, PGconn *conn, const char *t, int *found)
{
    const char *params[] = {t};
    PGresult *res = cmd_pg_exec(ctx, conn, migrate_version_sql, 1, params);
    if (res == NULL)
        return -1;
    int v = (int)migrate_judge(res, found);
    PQclear(res);
    return v;
}

static const char *verdict_name(int v)
{
    switch (v) {
    case MIGRATE_CURRENT:
        return "current";
    case MIGRATE_OLDER:
        return "older";
    case MIGRATE_UNMARKED:
        return "unmarked";
    default:
        return "absent";
    }
}

/* Prints the outcome; takes files. */
static int report(const struct cmd_ctx *ctx, bool changed, int before, int found, json_t *files)
{
    int need = migrate_schema_version();
    if (ctx->json) {
        cmd_print_json(ctx, json_pack("{s:s, s:s, s:b, s:s, s:i, s:i, s:o}", "table",
                                      ctx->cfg.table, "channel", ctx->cfg.channel, "changed",
                                      changed, "before", verdict_name(before), "version_before",
                                      found, "version", need, "applied", files));
        return CMD_OK;
    }
    if (!changed)
        fprintf(ctx->out, "table %s: schema version %d is current; nothing to do\n", ctx->cfg.table,
                found);
    else
        fprintf(ctx->out, "table %s (channel %s): schema %s (version %d) -> version %d; applied:",
                ctx->cfg.table, ctx->cfg.channel, verdict_name(before), found, need);
    for (size_t i = 0; changed && i < json_array_size(files); i++)
        fprintf(ctx->out, " %s", json_string_value(json_array_get(files, i)));
    if (changed)
        fputc('\n', ctx->out);
    json_decref(files);
    return CMD_OK;
}

/*
 * The key of the migrate lock: the table's schema-qualified name, its
 * schema resolved as CREATE TABLE would (the table once it exists), so
 * "outbox" and "public.outbox" serialise on one lock.
 */
#define MIGRATE_CLASS OUTBOX_CLASS_SQL(OUTBOX_MIGRATE_CLASS)
static const char migrate_lock_sql[] =
    "SELECT pg_advisory_xact_lock(" MIGRATE_CLASS ", hashtext(COALESCE("
    "(SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class AS c "
    "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)), "
    "(SELECT format('%I.%I', CASE WHEN cardinality(p) = 2 THEN p[1] ELSE current_schema() END, "
    "p[cardinality(p)]) FROM parse_ident($1) AS p))))";

static int migrate_with_schema(struct cmd_ctx *ctx, const char *schema, int lock_ms)
{
    const struct relay_config *cfg = &ctx->cfg;
    if (schema == NULL)
        return cmd_fail(ctx, CMD_CONNECT, "out of memory");

    if (cmd_flag(ctx, "dry-run")) {
        fprintf(ctx->out, "-- outbox-relay migrate for table %s, channel %s (schema version %d)\n",
                cfg->table, cfg->channel, migrate_schema_version());
        if (schema[0])
            fprintf(ctx->out, "CREATE SCHEMA IF NOT EXISTS %s;\nSET search_path TO %s;\n", schema,
                    schema);
        for (size_t i = 0; i < migrate_nfiles; i++) {
            if (!migrate_file_applied(&migrate_files[i]))
                continue;
            char *sql = migrate_render(migrate_files[i].text, cfg);
            fprintf(ctx->out, "\n-- %s\n%s", migrate_files[i].name, sql ? sql : "");
            free(sql);
        }
        return CMD_OK;
    }

    PGconn *conn = cmd_pg_connect(ctx);
    if (conn == NULL)
        return CMD_CONNECT;
    char *t = config_table_sql(cfg), *sql = NULL;
    if (t == NULL) {
        PQfinish(conn);
        return cmd_fail(ctx, CMD_CONNECT, "out of memory");
    }
    int found = 0, before = version_of(ctx, conn, t, &found);
    int rc = CMD_CONNECT;
    json_t *files = json_array();
    if (before == MIGRATE_CURRENT && !cmd_flag(ctx, "force")) {
        free(t);
        PQfinish(conn);
        return report(ctx, false, before, found, files);
    }
    /* One transaction: a failed step leaves the schema as it was. */
    PGresult *res = before < 0 ? NULL : cmd_pg_exec(ctx, conn, "BEGIN", 0, NULL);
    PQclear(res);
    if (res != NULL) {
        /* "already exists, skipping" notices are expected on an upgrade. */
        sql = str_printf("SET LOCAL lock_timeout = %d", lock_ms);
        res = sql ? cmd_pg_exec(ctx, conn, sql, 0, NULL) : NULL;
        free(sql);
        PQclear(res);
    }
    if (res != NULL) {
        res = cmd_pg_exec(ctx, conn, "SET LOCAL client_min_messages = warning", 0, NULL);
        PQclear(res);
    }
    if (res != NULL) {
        const char *params[] = {t};
        res = cmd_pg_exec(ctx, conn, migrate_lock_sql, 1, params);
        PQclear(res);
    }
    /* Another migrate may have finished while this one waited for the lock. */
    if (res != NULL && version_of(ctx, conn, t, &found) == MIGRATE_CURRENT &&
        !cmd_flag(ctx, "force")) {
        PQclear(PQexec(conn, "ROLLBACK"));
        free(t);
        PQfinish(conn);
        return report(ctx, false, MIGRATE_CURRENT, found, files);
    }
    if (res != NULL && schema[0]) {
        sql = str_printf("CREATE SCHEMA IF NOT EXISTS %s", schema);
        res = sql ? cmd_pg_exec(ctx, conn, sql, 0, NULL) : NULL;
        free(sql);
        PQclear(res);
        sql = str_printf("SET LOCAL search_path TO %s", schema);
        if (res != NULL)
            res = sql ? cmd_pg_exec(ctx, conn, sql, 0, NULL) : NULL;
        free(sql);
        PQclear(res);
    }
    for (size_t i = 0; res != NULL && i < migrate_nfiles; i++) {
        if (!migrate_file_applied(&migrate_files[i]))
            continue;
        char *text = migrate_render(migrate_files[i].text, cfg);
        /* Simple query protocol: a file's statements (and $$ bodies) in one go. */
        res = text ? PQexec(conn, text) : NULL;
        free(text);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            cmd_fail(ctx, CMD_CONNECT, "%s: %s", migrate_files[i].name,
                     res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "out of memory");
            PQclear(res);
            res = NULL;
            break;
        }
        PQclear(res);
        json_array_append_new(files, json_string(migrate_files[i].name));
    }
    if (res != NULL) {
        res = cmd_pg_exec(ctx, conn, "COMMIT", 0, NULL);
        PQclear(res);
    }
    if (res != NULL) {
        rc = report(ctx, true, before, found, files);
    } else {
        PQclear(PQexec(conn, "ROLLBACK"));
        json_decref(files);
    }
    free(t);
    PQfinish(conn);
    return rc;
}

int cmd_migrate(struct cmd_ctx *ctx)
{
    const struct relay_config *cfg = &ctx->cfg;
    const char *lt = cmd_value(ctx, "lock-timeout-ms");
    int lock_ms = lt ? atoi(lt) : 30000;
    if (lock_ms <= 0)
        return cmd_fail(ctx, CMD_USAGE, "--lock-timeout-ms: \"%s\" is not a positive number", lt);
    const char *dot = strchr(cfg->table, '.');
    struct strbuf sb = {0};
    if (dot != NULL)
        sb_put_ident(&sb, cfg->table, (size_t)(dot - cfg->table));
    char *schema = dot != NULL ? sb_take(&sb) : strdup("");
    int rc = migrate_with_schema(ctx, schema, lock_ms);
    free(schema);
    return rc;
}
