/* The table as a whole, sampled on a timer: unfinished and dead rows, the oldest age, any due. */
#include "outbox_relay/pg/table_sample.h"

#include <stdlib.h>

#include "outbox_relay/lib/util.h"

struct table_sample {
    ev_timer timer;
    struct ev_loop *loop;
    struct pg_source *pg;
    const char *sql;
    bool running;
    void (*sampled)(void *arg, const struct table_figures *f);
    void *arg;
};

static void table_sample_on_result(void *arg, PGresult *res)
{
    struct table_sample *ts = arg;
    ts->running = false;
    /* A failed sample is skipped: the next one comes within the interval. */
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        return;
    struct table_figures f = {
        .unfinished = strtoll(PQgetvalue(res, 0, 0), NULL, 10),
        .any_due = strtoll(PQgetvalue(res, 0, 1), NULL, 10) > 0,
        .oldest_age_s = strtod(PQgetvalue(res, 0, 2), NULL),
        .dead = strtoll(PQgetvalue(res, 0, 3), NULL, 10),
    };
    ts->sampled(ts->arg, &f);
}

static void table_sample_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct table_sample *ts = container_of(w, struct table_sample, timer);
    /* One at a time; a lost connection answers the one in flight with NULL. */
    if (ts->running || pg_source_state(ts->pg) != PG_READY)
        return;
    if (pg_source_query(ts->pg, ts->sql, 0, NULL, false, table_sample_on_result, ts))
        ts->running = true;
}

struct table_sample *table_sample_create(struct ev_loop *loop, const struct relay_config *cfg,
                                         struct pg_source *pg, const char *sql,
                                         void (*sampled)(void *arg, const struct table_figures *f),
                                         void *arg, char *err, size_t errlen)
{
    struct table_sample *ts = calloc(1, sizeof(*ts));
    if (ts == NULL) {
        snprintf(err, errlen, "table_sample: out of memory");
        return NULL;
    }
    *ts = (struct table_sample){.loop = loop, .pg = pg, .sql = sql, .sampled = sampled, .arg = arg};
    ev_timer_init(&ts->timer, table_sample_on_timer, 0.05, cfg->metrics_interval_ms / 1000.0);
    pg_source_statement_kind(pg, sql, STATEMENT_SAMPLE);
    return ts;
}

void table_sample_start(struct table_sample *ts)
{
    ev_timer_start(ts->loop, &ts->timer);
}

void table_sample_destroy(struct table_sample *ts)
{
    if (ts == NULL)
        return;
    ev_timer_stop(ts->loop, &ts->timer);
    free(ts);
}
