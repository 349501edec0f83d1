/* The WAL the relay's statements write, by kind, read from pg_stat_statements on a timer. */
#include "outbox_relay/pg/statement_wal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/log_events.h"
#include "outbox_relay/lib/util.h"

/* The relay's entries are found by their text once in this many reads; the reads between
 * ask for those entries by queryid, without the texts (see below). */
#define WAL_FIND_EVERY 12
/* While unavailable or failing: look again this often (an extension created, a grant). */
#define WAL_RETRY_S 60.0
/* Entries followed: each statement text, under each role that ran it. */
#define WAL_MAX_ENTRIES 64

/* Why the figures cannot be read, or NULL. pg_stat_statements(false) below needs 1.8. */
static const char probe_sql[] =
    "SELECT CASE WHEN to_regclass('pg_stat_statements') IS NULL"
    " THEN 'the extension pg_stat_statements is not installed in this database"
    " (or not on the search_path)'"
    " WHEN NOT EXISTS (SELECT FROM pg_attribute"
    "  WHERE attrelid = to_regclass('pg_stat_statements') AND attname = 'wal_bytes')"
    " THEN 'pg_stat_statements has no wal_bytes here (PostgreSQL 13 and extension 1.8 or later)'"
    " END";

/*
 * The relay's entries, found by the label pg_source puts in front of every
 * statement (PG_STATEMENT_LABEL). Showing the texts makes PostgreSQL read
 * pg_stat_statements' whole text file, which can hold megabytes on a busy
 * primary: done once in WAL_FIND_EVERY reads. Every relay session on this
 * database adds to the same entries.
 */
static const char find_sql[] =
    "SELECT substring(query from '^/\\* outbox-relay ([a-z_]+) \\*/'), calls, wal_bytes, queryid"
    " FROM pg_stat_statements(true)"
    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND query LIKE '" PG_STATEMENT_LABEL "%'";

/* The entries found, by queryid ($1) with their kinds ($2): no texts read. */
static const char read_sql[] =
    "SELECT k.kind, s.calls, s.wal_bytes"
    " FROM pg_stat_statements(false) AS s"
    " JOIN unnest($1::bigint[], $2::text[]) AS k(queryid, kind) USING (queryid)"
    " WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())";

enum wal_step {
    WAL_PROBE,       /* next: ask whether pg_stat_statements can be read */
    WAL_FIND,        /* next: find the relay's entries by their text */
    WAL_READ,        /* next: read the entries found */
    WAL_UNAVAILABLE, /* not installed, or the last read failed: probe again at retry_at */
};

struct statement_wal {
    ev_timer timer;
    struct ev_loop *loop;
    struct pg_source *pg;
    enum wal_step step;
    bool running;
    uint64_t session; /* pg_source_lost_total when probed: a new session probes anew */
    double retry_at;  /* WAL_UNAVAILABLE: when to probe again */
    int reads_left;   /* WAL_READ: reads before the entries are found anew */
    bool told;        /* the unavailability or failure is logged (once, until a read works) */
    int nentries;     /* the entries found, distinct queryids */
    char queryid[WAL_MAX_ENTRIES][24];
    enum statement_kind kind[WAL_MAX_ENTRIES];
    struct wal_figures figures;
};

static bool wal_kind_of(const char *name, enum statement_kind *kind)
{
    for (int k = 0; k < STATEMENT_KINDS; k++)
        if (!strcmp(name, statement_kind_name((enum statement_kind)k))) {
            *kind = (enum statement_kind)k;
            return true;
        }
    return false;
}

/* Rows of (kind, calls, wal_bytes[, queryid]): summed by kind; with queryid, remembered. */
static void wal_take(struct statement_wal *sw, const PGresult *res, bool found)
{
    struct wal_figures f = {.known = true};
    if (found)
        sw->nentries = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        enum statement_kind kind;
        if (PQgetisnull(res, i, 0) || !wal_kind_of(PQgetvalue(res, i, 0), &kind))
            continue;
        f.calls[kind] += strtoull(PQgetvalue(res, i, 1), NULL, 10);
        f.bytes[kind] += strtoull(PQgetvalue(res, i, 2), NULL, 10);
        if (!found || PQgetisnull(res, i, 3))
            continue;
        const char *id = PQgetvalue(res, i, 3);
        bool seen = false;
        for (int e = 0; e < sw->nentries && !seen; e++)
            seen = !strcmp(sw->queryid[e], id);
        if (!seen && sw->nentries < WAL_MAX_ENTRIES && strlen(id) < sizeof(sw->queryid[0])) {
            strcpy(sw->queryid[sw->nentries], id);
            sw->kind[sw->nentries++] = kind;
        }
    }
    sw->figures = f;
}

/* Not readable, or a read failed: unknown figures, one log line, another look later. */
static void wal_unavailable(struct statement_wal *sw, bool failed, const char *why)
{
    sw->figures.known = false;
    sw->step = WAL_UNAVAILABLE;
    sw->retry_at = ev_now(sw->loop) + WAL_RETRY_S;
    if (sw->told)
        return;
    sw->told = true;
    if (failed)
        log_warn(LOG_MSG_STATEMENT_WAL_FAILED, "{s:s, s:f}", "error", why, "retry_in_s",
                 WAL_RETRY_S);
    else
        log_info(LOG_MSG_STATEMENT_WAL_UNAVAILABLE, "{s:s, s:s}", "reason", why, "metric",
                 "outbox_relay_pg_wal_bytes_total is not exported");
}

static const char *wal_error(const PGresult *res)
{
    const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    return m != NULL ? m : "?";
}

static void wal_on_probe(void *arg, PGresult *res)
{
    struct statement_wal *sw = arg;
    sw->running = false;
    if (res == NULL)
        return; /* the session was lost: the next one probes */
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        wal_unavailable(sw, true, wal_error(res));
    else if (!PQgetisnull(res, 0, 0))
        wal_unavailable(sw, false, PQgetvalue(res, 0, 0));
    else
        sw->step = WAL_FIND;
}

static void wal_on_figures(void *arg, PGresult *res)
{
    struct statement_wal *sw = arg;
    sw->running = false;
    if (res == NULL)
        return;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wal_unavailable(sw, true, wal_error(res));
        return;
    }
    bool found = sw->step == WAL_FIND;
    wal_take(sw, res, found);
    sw->told = false;
    if (found) {
        sw->step = WAL_READ;
        sw->reads_left = WAL_FIND_EVERY - 1;
    } else if (--sw->reads_left <= 0) {
        sw->step = WAL_FIND;
    }
}

/* The entries found as two array literals: queryids and their kinds. */
static bool wal_read(struct statement_wal *sw)
{
    struct strbuf ids = {0}, kinds = {0};
    sb_putc(&ids, '{');
    sb_putc(&kinds, '{');
    for (int e = 0; e < sw->nentries; e++) {
        sb_printf(&ids, "%s%s", e ? "," : "", sw->queryid[e]);
        sb_printf(&kinds, "%s%s", e ? "," : "", statement_kind_name(sw->kind[e]));
    }
    sb_putc(&ids, '}');
    sb_putc(&kinds, '}');
    char *params[2] = {sb_take(&ids), sb_take(&kinds)};
    if (params[0] == NULL || params[1] == NULL) {
        free(params[0]);
        free(params[1]);
        return false;
    }
    return pg_source_query(sw->pg, read_sql, 2, params, false, wal_on_figures, sw);
}

static void wal_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct statement_wal *sw = container_of(w, struct statement_wal, timer);
    if (sw->running || pg_source_state(sw->pg) != PG_READY)
        return;
    /* A new session may be on another server (a failover): its figures start anew. */
    uint64_t session = pg_source_lost_total(sw->pg);
    if (session != sw->session) {
        sw->session = session;
        sw->step = WAL_PROBE;
    }
    if (sw->step == WAL_UNAVAILABLE && ev_now(loop) >= sw->retry_at)
        sw->step = WAL_PROBE;
    switch (sw->step) {
    case WAL_PROBE:
        sw->running = pg_source_query(sw->pg, probe_sql, 0, NULL, false, wal_on_probe, sw);
        break;
    case WAL_FIND:
        sw->running = pg_source_query(sw->pg, find_sql, 0, NULL, false, wal_on_figures, sw);
        break;
    case WAL_READ:
        sw->running = wal_read(sw);
        break;
    case WAL_UNAVAILABLE:
        break;
    }
}

struct statement_wal *statement_wal_create(struct ev_loop *loop, const struct relay_config *cfg,
                                           struct pg_source *pg, char *err, size_t errlen)
{
    struct statement_wal *sw = calloc(1, sizeof(*sw));
    if (sw == NULL) {
        snprintf(err, errlen, "statement_wal: out of memory");
        return NULL;
    }
    sw->loop = loop;
    sw->pg = pg;
    sw->step = WAL_PROBE;
    ev_timer_init(&sw->timer, wal_on_timer, 0.1, cfg->metrics_interval_ms / 1000.0);
    /* Like the table sample: the relay looking at itself. */
    pg_source_statement_kind(pg, probe_sql, STATEMENT_SAMPLE);
    pg_source_statement_kind(pg, find_sql, STATEMENT_SAMPLE);
    pg_source_statement_kind(pg, read_sql, STATEMENT_SAMPLE);
    return sw;
}

void statement_wal_start(struct statement_wal *sw)
{
    ev_timer_start(sw->loop, &sw->timer);
}

void statement_wal_destroy(struct statement_wal *sw)
{
    if (sw == NULL)
        return;
    ev_timer_stop(sw->loop, &sw->timer);
    free(sw);
}

const struct wal_figures *statement_wal_figures(const struct statement_wal *sw)
{
    return &sw->figures;
}
