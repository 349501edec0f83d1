/* `outbox-relay status`: what the table holds, what is stuck and why, who relays it. Read-only. */
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/cli/cmd.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/lib/util.h"

const struct cmd_option cmd_status_options[] = {
    {"limit", true, "at most this many dead reasons and held keys (default 20)"},
    {NULL, false, NULL},
};

static json_t *field_value(PGresult *res, int row, int col, bool number)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    const char *v = PQgetvalue(res, row, col);
    return number ? json_integer(strtoll(v, NULL, 10)) : json_string(v);
}

/* Rows of a result as an array of objects; names[i] ending in '#' are integers. */
static json_t *rows_json(PGresult *res, const char *const *names)
{
    json_t *arr = json_array();
    for (int r = 0; r < PQntuples(res); r++) {
        json_t *obj = json_object();
        for (int c = 0; names[c] != NULL; c++) {
            size_t n = strlen(names[c]);
            bool number = names[c][n - 1] == '#';
            char key[64];
            snprintf(key, sizeof(key), "%.*s", (int)(number ? n - 1 : n), names[c]);
            json_object_set_new(obj, key, field_value(res, r, c, number));
        }
        json_array_append_new(arr, obj);
    }
    return arr;
}

static const char *v(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? "-" : PQgetvalue(res, row, col);
}

int cmd_status(struct cmd_ctx *ctx)
{
    const char *limit_s = cmd_value(ctx, "limit");
    int limit = limit_s ? atoi(limit_s) : 20;
    if (limit <= 0)
        return cmd_fail(ctx, CMD_USAGE, "--limit: \"%s\" is not a positive number", limit_s);
    PGconn *conn = cmd_pg_connect(ctx);
    if (conn == NULL)
        return CMD_CONNECT;
    char *t = config_table_sql(&ctx->cfg), *lim = str_printf("%d", limit), *sql = NULL;
    const char *p_limit[] = {lim};
    const char *p_table[] = {t};
    PGresult *res[5] = {0};
    if (t == NULL || lim == NULL) {
        free(t);
        free(lim);
        PQfinish(conn);
        return cmd_fail(ctx, CMD_CONNECT, "out of memory");
    }

    /* 0: counts. One pass over the table (bounded by retention). */
    sql = str_printf(
        "SELECT count(*) FILTER (WHERE status = 'pending'), "
        "count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'dead'), "
        "count(*) FILTER (WHERE status = 'published'), count(*) FROM %s",
        t);
    res[0] = sql ? cmd_pg_exec(ctx, conn, sql, 0, NULL) : NULL;
    /* 1: the oldest unfinished row, by the partial index of unfinished rows. */
    free(sql);
    sql =
        str_printf("SELECT id, status, created_at, extract(epoch FROM now() - created_at)::float8, "
                   "attempts, next_attempt_at FROM %s WHERE status IN ('pending', 'failed') "
                   "ORDER BY id LIMIT 1",
                   t);
    if (res[0] && sql)
        res[1] = cmd_pg_exec(ctx, conn, sql, 0, NULL);
    /* 2: dead rows grouped by their reason. */
    free(sql);
    sql = str_printf("SELECT count(*), min(id), max(id), (array_agg(subject ORDER BY id))[1], "
                     "COALESCE(last_error, '') FROM %s WHERE status = 'dead' GROUP BY last_error "
                     "ORDER BY count(*) DESC, min(id) LIMIT $1::int",
                     t);
    if (res[1] && sql)
        res[2] = cmd_pg_exec(ctx, conn, sql, 1, p_limit);
    /* 3: keys held: the first failed (or, with OUTBOX_DEAD_HOLDS_KEY, dead) row of a
     * key and how many later unfinished rows of the key wait behind it. */
    free(sql);
    sql =
        str_printf("SELECT h.ordering_key, h.id, h.status, h.last_error, w.n FROM ("
                   "SELECT DISTINCT ON (ordering_key) ordering_key, id, status, last_error FROM %s "
                   "WHERE status IN ('failed'%s) AND ordering_key IS NOT NULL "
                   "ORDER BY ordering_key, id) AS h, LATERAL (SELECT count(*) AS n FROM %s AS o "
                   "WHERE o.ordering_key = h.ordering_key AND o.id > h.id "
                   "AND o.status IN ('pending', 'failed')) AS w WHERE w.n > 0 "
                   "ORDER BY w.n DESC, h.id LIMIT $1::int",
                   t, ctx->cfg.dead_holds_key ? ", 'dead'" : "", t);
    if (res[2] && sql)
        res[3] = cmd_pg_exec(ctx, conn, sql, 1, p_limit);
    /* 4: relay sessions: the one holding the table's leader lock, and the others. */
    free(sql);
    sql = str_printf(
        "SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start, "
        "(l.pid IS NOT NULL)::int AS leader FROM pg_stat_activity AS a "
        "LEFT JOIN pg_locks AS l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted "
        "AND l.classid = %s::oid AND l.objid = $1::regclass::oid AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
        "AND (l.pid IS NOT NULL OR (a.application_name = 'outbox-relay' AND NOT EXISTS ("
        "SELECT 1 FROM pg_locks AS x WHERE x.pid = a.pid AND x.locktype = 'advisory' "
        "AND x.granted AND x.classid = %s::oid))) ORDER BY leader DESC, a.backend_start",
        OUTBOX_CLASS_SQL(OUTBOX_LOCK_CLASS), OUTBOX_CLASS_SQL(OUTBOX_LOCK_CLASS));
    if (res[3] && sql)
        res[4] = cmd_pg_exec(ctx, conn, sql, 1, p_table);
    free(sql);
    int rc = res[4] ? CMD_OK : CMD_CONNECT;
    if (rc == CMD_OK && ctx->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "table", json_string(ctx->cfg.table));
        static const char *const counts[] = {"pending#",   "failed#", "dead#",
                                             "published#", "total#",  NULL};
        json_t *c = rows_json(res[0], counts);
        json_object_set(doc, "counts", json_array_get(c, 0));
        json_decref(c);
        static const char *const oldest[] = {"id#",       "status",          "created_at", "age_s",
                                             "attempts#", "next_attempt_at", NULL};
        json_t *o = rows_json(res[1], oldest);
        if (json_array_size(o) > 0) {
            json_t *row = json_array_get(o, 0);
            json_object_set_new(row, "age_s", json_real(atof(PQgetvalue(res[1], 0, 3))));
            json_object_set(doc, "oldest_unfinished", row);
        } else {
            json_object_set_new(doc, "oldest_unfinished", json_null());
        }
        json_decref(o);
        static const char *const dead[] = {"count#",         "first_id#", "last_id#",
                                           "sample_subject", "reason",    NULL};
        json_object_set_new(doc, "dead_by_reason", rows_json(res[2], dead));
        static const char *const held[] = {"ordering_key", "held_by_id#", "held_by_status",
                                           "reason",       "waiting#",    NULL};
        json_object_set_new(doc, "held_keys", rows_json(res[3], held));
        static const char *const sess[] = {"pid#",          "application_name", "client_addr",
                                           "backend_start", "leader#",          NULL};
        json_t *all = rows_json(res[4], sess), *standbys = json_array();
        json_t *leader = json_null();
        for (size_t i = 0; i < json_array_size(all); i++) {
            json_t *s = json_array_get(all, i);
            bool is_leader = json_integer_value(json_object_get(s, "leader")) == 1;
            json_object_del(s, "leader");
            if (is_leader && json_is_null(leader))
                leader = json_incref(s);
            else
                json_array_append(standbys, s);
        }
        json_decref(all);
        json_object_set_new(doc, "leader", leader);
        json_object_set_new(doc, "standbys", standbys);
        cmd_print_json(ctx, doc);
    } else if (rc == CMD_OK) {
        FILE *out = ctx->out;
        fprintf(out, "table %s\n", ctx->cfg.table);
        fprintf(out, "rows: %s pending, %s failed, %s dead, %s published (%s in all)\n",
                v(res[0], 0, 0), v(res[0], 0, 1), v(res[0], 0, 2), v(res[0], 0, 3),
                v(res[0], 0, 4));
        if (PQntuples(res[1]) == 0)
            fprintf(out, "oldest unfinished: none\n");
        else
            fprintf(out, "oldest unfinished: id %s (%s, %s attempts), created %s, %.1f s ago\n",
                    v(res[1], 0, 0), v(res[1], 0, 1), v(res[1], 0, 4), v(res[1], 0, 2),
                    atof(v(res[1], 0, 3)));
        fprintf(out, "dead rows by reason:%s\n", PQntuples(res[2]) ? "" : " none");
        for (int i = 0; i < PQntuples(res[2]); i++)
            fprintf(out, "  %6s  ids %s..%s  e.g. subject %s\n          %s\n", v(res[2], i, 0),
                    v(res[2], i, 1), v(res[2], i, 2), v(res[2], i, 3), v(res[2], i, 4));
        fprintf(out, "keys held behind a failed%s row:%s\n",
                ctx->cfg.dead_holds_key ? " or dead" : "", PQntuples(res[3]) ? "" : " none");
        for (int i = 0; i < PQntuples(res[3]); i++)
            fprintf(out, "  key %s: row %s (%s) holds %s later rows: %s\n", v(res[3], i, 0),
                    v(res[3], i, 1), v(res[3], i, 2), v(res[3], i, 4), v(res[3], i, 3));
        int leaders = 0;
        for (int i = 0; i < PQntuples(res[4]); i++) {
            bool is_leader = !strcmp(v(res[4], i, 4), "1") && leaders++ == 0;
            fprintf(out, "%s pid %s (%s) from %s, session since %s\n",
                    is_leader ? "leader: " : "standby:", v(res[4], i, 0), v(res[4], i, 1),
                    v(res[4], i, 2), v(res[4], i, 3));
        }
        if (leaders == 0)
            fprintf(out, "leader:  none (no session holds the leader lock of %s)\n",
                    ctx->cfg.table);
    }
    for (int i = 0; i < 5; i++)
        PQclear(res[i]);
    free(t);
    free(lim);
    PQfinish(conn);
    return rc;
}
