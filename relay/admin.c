/* One-shot commands: verify both ends (--check), requeue dead rows (--requeue-dead). */
#include "outbox_relay/admin.h"

#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "outbox_relay/js_sink.h"
#include "outbox_relay/pg_source.h"

static int admin_check_table(PGconn *conn, const struct relay_config *cfg, FILE *out)
{
    char t[160], sql[512];
    config_table_sql(cfg, t, sizeof(t));
    snprintf(sql, sizeof(sql),
             "SELECT id, event_id, subject, payload, headers, ordering_key, created_at, status, "
             "attempts, next_attempt_at, last_error, published_at, stream_seq FROM %s LIMIT 0",
             t);
    PGresult *res = PQexec(conn, sql);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(out, "FAIL table: OUTBOX_TABLE: table %s is not usable: %s\n", cfg->table,
                PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    PQclear(res);
    if (!ok)
        return 1;
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FILTER (WHERE status IN ('pending', 'failed')), "
             "count(*) FILTER (WHERE status = 'dead') FROM %s",
             t);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        fprintf(out, "ok   table %s: %s unfinished, %s dead\n", cfg->table, PQgetvalue(res, 0, 0),
                PQgetvalue(res, 0, 1));
    PQclear(res);
    return 0;
}

int admin_check(const struct relay_config *cfg, FILE *out)
{
    char err[512], shown[512];
    int rc = 0;
    config_redact(cfg->pg_url, shown, sizeof(shown));
    PGconn *conn = pg_source_connect_blocking(cfg, err, sizeof(err));
    if (conn == NULL) {
        fprintf(out, "FAIL postgresql: cannot connect (OUTBOX_PG_URL=%s): %s\n",
                shown[0] ? shown : "(libpq defaults)", err);
        rc = 1;
    } else {
        fprintf(out, "ok   postgresql %d.%d reached\n", PQserverVersion(conn) / 10000,
                PQserverVersion(conn) % 10000);
        rc |= admin_check_table(conn, cfg, out);
        PQfinish(conn);
    }

    struct js_sink *sink = NULL;
    config_redact(cfg->nats_url, shown, sizeof(shown));
    if (js_sink_create(&sink, cfg, NULL, false, err, sizeof(err)) < 0) {
        fprintf(out, "FAIL nats: %s (%s)\n", err, shown);
        return 1;
    }
    fprintf(out, "ok   nats reached (%s), max_payload %lld\n", shown,
            (long long)js_sink_max_payload(sink));
    if (cfg->stream[0] != '\0') {
        if (js_sink_ensure_stream(sink, err, sizeof(err)) < 0) {
            fprintf(out, "FAIL stream: %s\n", err);
            rc = 1;
        } else {
            fprintf(out, "ok   stream %s exists\n", cfg->stream);
        }
    }
    js_sink_destroy(sink);
    return rc;
}

int admin_requeue_dead(const struct relay_config *cfg, FILE *out)
{
    char err[512], t[160], sql[512];
    PGconn *conn = pg_source_connect_blocking(cfg, err, sizeof(err));
    if (conn == NULL) {
        fprintf(out, "cannot connect to PostgreSQL (OUTBOX_PG_URL): %s\n", err);
        return 1;
    }
    config_table_sql(cfg, t, sizeof(t));
    snprintf(sql, sizeof(sql),
             "WITH requeued AS (UPDATE %s SET status = 'pending', attempts = 0, "
             "next_attempt_at = NULL WHERE status = 'dead' RETURNING 1), "
             "wake AS (SELECT pg_notify('%s', '')) "
             "SELECT count(*) FROM requeued, (SELECT 1 FROM wake) AS w",
             t, cfg->channel);
    PGresult *res = PQexec(conn, sql);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(out, "requeue failed: %s", PQresultErrorMessage(res));
        rc = 1;
    } else {
        fprintf(out, "requeued %s dead rows of %s\n", PQgetvalue(res, 0, 0), cfg->table);
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}
