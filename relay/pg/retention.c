/* Retention: deletes old published rows in small batches when the relay leads. */
#include "outbox_relay/pg/retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/util.h"

/* Between two full batches: other queries of the relay (marks, claims) get
 * the connection and the table's locks in between. */
#define RETENTION_PAUSE_S 0.2
/* The first round after gaining leadership. */
#define RETENTION_FIRST_S 5.0
/* A failure that lasts is logged again this often. */
#define RETENTION_REMIND_S 3600.0

struct retention {
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct pg_source *pg;
    ev_timer timer;
    bool leader;
    bool running; /* a statement is queued or running */
    uint64_t pruned_total;
    uint64_t failures_total;
    bool failing;          /* the last round failed */
    double failing_logged; /* ev_now of the last RETENTION_FAILING_MSG */
    char *failing_error;   /* its error */
    char *sql;
};

char *retention_build_sql(const struct relay_config *cfg)
{
    char *t = config_table_sql(cfg);
    if (t == NULL)
        return NULL;
    /*
     * The oldest published rows first, found through the partial index on
     * published_at (sql/002): a round that finds nothing reads one index
     * page. An id-ordered walk of the primary key would read every row still
     * too young before giving up. The ids go to the delete as an array, so
     * it finds them by the primary key (a join here was planned as a hash
     * join over a sequential scan of the whole table). Dead rows are never
     * matched; the outer status test is rechecked on rows changed meanwhile.
     */
    char *sql =
        str_printf("DELETE FROM %s AS o WHERE o.id = ANY (ARRAY(SELECT id FROM %s "
                   "WHERE status = 'published' AND published_at < now() - $1::bigint * interval "
                   "'1 second' ORDER BY published_at LIMIT $2::int)) AND o.status = 'published'",
                   t, t);
    free(t);
    return sql;
}

static void retention_arm(struct retention *r, double after)
{
    ev_timer_stop(r->loop, &r->timer);
    if (!r->leader || r->cfg->retention_s <= 0)
        return;
    ev_timer_set(&r->timer, after, 0.);
    ev_timer_start(r->loop, &r->timer);
}

/*
 * Every round fails alike until the cause is fixed (typically a role
 * without DELETE, which --check reports): one error line, not one a round.
 */
static void retention_failed(struct retention *r, PGresult *res)
{
    const char *error = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    error = error ? error : "unknown error";
    double now = ev_now(r->loop);
    bool same = r->failing && r->failing_error && !strcmp(r->failing_error, error);
    r->failures_total++;
    r->failing = true;
    if (same && now - r->failing_logged < RETENTION_REMIND_S)
        return;
    free(r->failing_error);
    r->failing_error = strdup(error);
    r->failing_logged = now;
    log_error(RETENTION_FAILING_MSG, "{s:s, s:s, s:s, s:s}", "table", r->cfg->table, "error", error,
              "sqlstate", state ? state : "", "hint",
              state && !strcmp(state, "42501")
                  ? "GRANT DELETE on the table to the relay's role, or set OUTBOX_RETENTION=0"
                  : "see outbox_relay_retention_failing; set OUTBOX_RETENTION=0 to turn it off");
}

static void retention_on_result(void *arg, PGresult *res)
{
    struct retention *r = arg;
    double interval = r->cfg->retention_interval_ms / 1000.0;
    r->running = false;
    if (res == NULL) { /* connection lost: the relay reconnects, we try later */
        retention_arm(r, interval);
        return;
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        retention_failed(r, res);
        retention_arm(r, interval);
        return;
    }
    if (r->failing)
        log_info("retention works again", "{s:s, s:I}", "table", r->cfg->table, "failed_rounds",
                 (json_int_t)r->failures_total);
    r->failing = false;
    free(r->failing_error);
    r->failing_error = NULL;
    long n = atol(PQcmdTuples(res));
    r->pruned_total += (uint64_t)n;
    if (n > 0)
        log_debug("retention: pruned", "{s:i}", "rows", (int)n);
    /* A full batch: more is due; go on soon. */
    retention_arm(r, n >= r->cfg->retention_batch ? RETENTION_PAUSE_S : interval);
}

static void retention_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct retention *r = w->data;
    if (!r->leader || r->running)
        return;
    char *params[2] = {NULL, NULL};
    if (asprintf(&params[0], "%lld", (long long)r->cfg->retention_s) < 0 ||
        asprintf(&params[1], "%d", r->cfg->retention_batch) < 0) {
        free(params[0]); /* out of memory: the next round */
        retention_arm(r, r->cfg->retention_interval_ms / 1000.0);
        return;
    }
    r->running = true;
    if (!pg_source_query(r->pg, r->sql, 2, params, false, retention_on_result, r)) {
        r->running = false;
        retention_arm(r, r->cfg->retention_interval_ms / 1000.0);
    }
}

struct retention *retention_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct pg_source *pg, char *err, size_t errlen)
{
    struct retention *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "retention: out of memory");
        return NULL;
    }
    r->loop = loop;
    r->cfg = cfg;
    r->pg = pg;
    r->sql = retention_build_sql(cfg);
    if (r->sql == NULL) {
        free(r);
        snprintf(err, errlen, "retention: out of memory");
        return NULL;
    }
    ev_timer_init(&r->timer, retention_on_timer, 0., 0.);
    r->timer.data = r;
    pg_source_statement_kind(pg, r->sql, STATEMENT_RETENTION);
    return r;
}

void retention_destroy(struct retention *r)
{
    if (r == NULL)
        return;
    ev_timer_stop(r->loop, &r->timer);
    free(r->sql);
    free(r->failing_error);
    free(r);
}

void retention_set_leader(struct retention *r, bool leader)
{
    if (r->leader == leader)
        return;
    r->leader = leader;
    if (leader) {
        double first = r->cfg->retention_interval_ms / 1000.0;
        retention_arm(r, first < RETENTION_FIRST_S ? first : RETENTION_FIRST_S);
    } else {
        ev_timer_stop(r->loop, &r->timer);
    }
}

uint64_t retention_pruned_total(const struct retention *r)
{
    return r->pruned_total;
}

uint64_t retention_failures_total(const struct retention *r)
{
    return r->failures_total;
}

bool retention_failing(const struct retention *r)
{
    return r->failing;
}

const char *retention_sql(const struct retention *r)
{
    return r->sql;
}
