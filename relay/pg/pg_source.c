/* The PostgreSQL connection state machine and its FIFO of asynchronous queries. */
#include "outbox_relay/pg/pg_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outbox_relay/lib/backoff.h"
#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/log_events.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pg/pg_connect.h"
#include "outbox_relay/lib/util.h"

#define PG_MAX_STATEMENTS 32
#define PG_MAX_KINDS      24

/* While the outbox table is missing: warn once, then again at this interval. */
#define PG_TABLE_WARN_EVERY_S 60.0

struct pg_query {
    const char *sql;
    int nparams;
    char **params;
    bool binary;
    int stmt; /* index into pg_source.stmts, or -1: sent unprepared */
    enum statement_kind kind;
    double sent_at; /* monotonic seconds when first sent; 0: not yet */
    pg_result_fn fn;
    void *arg;
    struct pg_query *next;
};

struct pg_source {
    ev_io io; /* first member: the callback casts back */
    ev_timer deadline;
    ev_timer reconnect;
    ev_timer recheck; /* PG_WAITING_TABLE: the next table check */
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct pg_source_events ev;

    PGconn *conn;
    enum pg_state state;
    struct pg_query *head, *tail; /* head is running when `running` */
    int queued;
    bool running;
    PGresult *result;    /* first result of the running query */
    int reconnects;      /* consecutive failures, for the backoff */
    uint64_t lost_total; /* sessions lost after they were up (a metric) */

    /* Prepared statements, by SQL text pointer (callers pass static
     * strings). Parsing and planning were most of the relay backend's CPU at
     * steady load; a statement is prepared once per connection instead. */
    const char *stmts[PG_MAX_STATEMENTS];
    bool prepared[PG_MAX_STATEMENTS]; /* on the current connection */
    int nstmts;
    bool preparing; /* the running step is the head query's PREPARE */

    /* Statement kinds, by SQL text pointer, as their modules named them. */
    const char *kind_sql[PG_MAX_KINDS];
    enum statement_kind kind_of[PG_MAX_KINDS];
    int nkinds;
    struct statement_stats stats;

    char *check_sql;
    char *listen_sql;
    char *deadline_sql; /* the server's statement_timeout: the same deadline */

    struct strbuf labeled; /* the text being sent, behind its label (pg_labeled) */

    char table_missing[384]; /* why the table is not usable; "" once it is */
    double table_warned_at;  /* last warning about it; 0: none since it was found */
    bool closing;            /* pg_source_destroy: closing is no loss */
};

static void pg_lost(struct pg_source *src, const char *why);
static void pg_send_next(struct pg_source *src);

static double pg_mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A statement's answer, counted under its kind: rows returned or changed, its time, an error. */
static void pg_count(struct pg_source *src, const struct pg_query *q, const PGresult *res)
{
    struct statement_stats *s = &src->stats;
    s->calls[q->kind]++;
    if (q->sent_at > 0)
        s->seconds[q->kind] += pg_mono_now() - q->sent_at;
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK)
        s->rows[q->kind] += (uint64_t)PQntuples(res);
    else if (st == PGRES_COMMAND_OK)
        s->rows[q->kind] += strtoull(PQcmdTuples((PGresult *)res), NULL, 10);
    else
        s->errors[q->kind]++;
}

/* Re-arms the watcher unconditionally: stop, set, start. */
static void pg_rearm(struct pg_source *src, int events)
{
    ev_io_stop(src->loop, &src->io);
    ev_io_set(&src->io, PQsocket(src->conn), events);
    ev_io_start(src->loop, &src->io);
}

/* Watches for `events` on an established connection, whose socket cannot change. */
static void pg_watch(struct pg_source *src, int events)
{
    if (ev_is_active(&src->io) && src->io.fd == PQsocket(src->conn) &&
        (src->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    pg_rearm(src, events);
}

/*
 * A statement's own deadline is the server's statement_timeout; the relay
 * waits half as long again before it gives the session up. So a statement
 * that runs too long comes back as an error on a session the relay keeps
 * (and with it the leader lock), and only a server or network that answers
 * nothing costs the session. Both end within three quarters of the lease.
 */
static int pg_deadline_ms(const struct pg_source *src)
{
    if (src->state == PG_CONNECTING)
        return src->cfg->pg_timeout_ms;
    int statement = config_statement_deadline_ms(src->cfg);
    return statement + statement / 2;
}

static void pg_deadline_arm(struct pg_source *src)
{
    ev_timer_stop(src->loop, &src->deadline);
    ev_timer_set(&src->deadline, pg_deadline_ms(src) / 1000.0, 0.);
    ev_timer_start(src->loop, &src->deadline);
}

static void pg_query_free(struct pg_query *q)
{
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q);
}

static struct pg_query *pg_query_new(const char *sql, int nparams, char **params, bool binary,
                                     pg_result_fn fn, void *arg)
{
    struct pg_query *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        for (int i = 0; i < nparams; i++)
            free(params[i]);
        return NULL;
    }
    q->sql = sql;
    q->nparams = nparams;
    if (nparams > 0) {
        q->params = malloc((size_t)nparams * sizeof(char *));
        if (q->params == NULL) {
            q->nparams = 0;
            for (int i = 0; i < nparams; i++)
                free(params[i]);
            free(q);
            return NULL;
        }
        memcpy(q->params, params, (size_t)nparams * sizeof(char *));
    }
    q->binary = binary;
    q->stmt = -1;
    q->fn = fn;
    q->arg = arg;
    return q;
}

static void pg_enqueue(struct pg_source *src, struct pg_query *q)
{
    if (src->tail != NULL)
        src->tail->next = q;
    else
        src->head = q;
    src->tail = q;
    src->queued++;
}

/* ---- setup: session settings, table check, then LISTEN ---- */

/* A setup step's result: true when it succeeded; otherwise the connection is dropped. */
static bool pg_setup_ok(struct pg_source *src, PGresult *res, ExecStatusType want)
{
    if (res == NULL)
        return false;
    if (PQresultStatus(res) != want) {
        pg_lost(src, PQresultErrorMessage(res));
        return false;
    }
    return true;
}

/* Queues the next setup step. */
static void pg_setup_then(struct pg_source *src, const char *sql, pg_result_fn fn)
{
    struct pg_query *q = pg_query_new(sql, 0, NULL, false, fn, src);
    if (q == NULL) {
        pg_lost(src, "out of memory");
        return;
    }
    pg_enqueue(src, q);
}

static void pg_on_listen(void *arg, PGresult *res)
{
    struct pg_source *src = arg;
    if (!pg_setup_ok(src, res, PGRES_COMMAND_OK))
        return;
    src->state = PG_READY;
    src->reconnects = 0;
    if (src->ev.connected)
        src->ev.connected(src->ev.arg);
}

static void pg_on_table_check(void *arg, PGresult *res);

static void pg_on_recheck(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pg_source *src = (struct pg_source *)((char *)w - offsetof(struct pg_source, recheck));
    if (src->state == PG_WAITING_TABLE && src->head == NULL) {
        pg_setup_then(src, src->check_sql, pg_on_table_check);
        pg_send_next(src);
    }
}

/*
 * The table (or a column, or its schema) does not exist yet: a sidecar may
 * start before its application has run the migrations. Stay connected, not
 * ready, and look again every poll interval (at most a second); one warning
 * now and one a minute while it lasts.
 */
static void pg_wait_for_table(struct pg_source *src, const char *state, const char *message)
{
    if (!strcmp(state, "42703"))
        snprintf(src->table_missing, sizeof(src->table_missing),
                 "outbox table %s lacks a column the relay needs: %s", src->cfg->table, message);
    else
        snprintf(src->table_missing, sizeof(src->table_missing), "outbox table %s does not exist",
                 src->cfg->table);
    src->state = PG_WAITING_TABLE;
    double now = ev_now(src->loop);
    double every = src->cfg->poll_interval_ms < 1000 ? src->cfg->poll_interval_ms / 1000.0 : 1.0;
    if (src->table_warned_at == 0 || now - src->table_warned_at >= PG_TABLE_WARN_EVERY_S) {
        src->table_warned_at = now;
        log_warn(LOG_MSG_TABLE_WAITING, "{s:s, s:s, s:s, s:f}", "table", src->cfg->table, "reason",
                 src->table_missing, "error", message, "recheck_every_s", every);
    }
    ev_timer_stop(src->loop, &src->recheck);
    ev_timer_set(&src->recheck, every, 0.);
    ev_timer_start(src->loop, &src->recheck);
}

static void pg_on_table_check(void *arg, PGresult *res)
{
    struct pg_source *src = arg;
    if (res == NULL)
        return;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (src->table_missing[0] != '\0')
            log_info(LOG_MSG_TABLE_FOUND, "{s:s}", "table", src->cfg->table);
        src->table_missing[0] = '\0';
        src->table_warned_at = 0;
        src->state = PG_SETUP;
        pg_setup_then(src, src->listen_sql, pg_on_listen);
        return;
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (message == NULL)
        message = "?";
    /* Missing table, column or schema: the application's migrations may be on their way. */
    if (state != NULL &&
        (!strcmp(state, "42P01") || !strcmp(state, "42703") || !strcmp(state, "3F000"))) {
        pg_wait_for_table(src, state, message);
        return;
    }
    char why[512];
    snprintf(why, sizeof(why), "OUTBOX_TABLE: table %s is not usable: %s", src->cfg->table,
             message);
    /* No privilege: bad configuration, which no reconnect fixes. */
    if (state != NULL && !strcmp(state, "42501")) {
        if (src->ev.fatal)
            src->ev.fatal(src->ev.arg, why);
        pg_lost(src, why);
        return;
    }
    pg_lost(src, why);
}

/* Setup, step 2: the server ends a statement at the relay's own deadline too (one blocked on
 * a lock would otherwise run on after the relay dropped its session, holding the leader lock). */
static void pg_on_deadline_set(void *arg, PGresult *res)
{
    struct pg_source *src = arg;
    if (pg_setup_ok(src, res, PGRES_TUPLES_OK))
        pg_setup_then(src, src->check_sql, pg_on_table_check);
}

/* Setup, step 1: the session settings that fix the plans (outbox_table.c). */
static void pg_on_session_set(void *arg, PGresult *res)
{
    struct pg_source *src = arg;
    if (pg_setup_ok(src, res, PGRES_TUPLES_OK))
        pg_setup_then(src, src->deadline_sql, pg_on_deadline_set);
}

static void pg_begin_setup(struct pg_source *src)
{
    src->state = PG_SETUP;
    struct pg_query *q = pg_query_new(outbox_session_sql, 0, NULL, false, pg_on_session_set, src);
    if (q == NULL) {
        pg_lost(src, "out of memory");
        return;
    }
    /* Setup runs before anything an earlier session left queued (nothing, as
     * pg_lost fails the queue, but keep the order explicit). */
    q->next = src->head;
    src->head = q;
    if (src->tail == NULL)
        src->tail = q;
    src->queued++;
    pg_send_next(src);
}

/* ---- connecting ---- */

/*
 * One PQconnectPoll step. Every step re-arms the watcher, even when the
 * descriptor number and events look unchanged: with several hosts (or
 * addresses) libpq closes a failed attempt's socket and opens the next
 * one, which usually gets the same number. epoll dropped the closed
 * descriptor, so a watcher left "unchanged" never fires again and the
 * connect hangs until its deadline (a multi-host failover would never
 * reconnect). libev re-registers a descriptor given anew by ev_io_set.
 */
static void pg_connect_poll(struct pg_source *src)
{
    switch (PQconnectPoll(src->conn)) {
    case PGRES_POLLING_READING:
        pg_rearm(src, EV_READ);
        break;
    case PGRES_POLLING_WRITING:
        pg_rearm(src, EV_WRITE);
        break;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(src->conn, 1) != 0) {
            pg_lost(src, PQerrorMessage(src->conn));
            return;
        }
        pg_rearm(src, EV_READ);
        ev_timer_stop(src->loop, &src->deadline);
        pg_begin_setup(src);
        break;
    default:
        pg_lost(src, PQerrorMessage(src->conn));
        break;
    }
}

/*
 * Server notices and warnings ("terminating connection due to administrator
 * command" at a restart) would otherwise go to stderr as raw text through
 * libpq's default processor, breaking the one-JSON-object-per-line log.
 */
static void pg_on_notice(void *arg, const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (severity == NULL)
        severity = PQresultErrorField(res, PG_DIAG_SEVERITY);
    bool serious =
        severity != NULL && (!strcmp(severity, "WARNING") || !strcmp(severity, "ERROR") ||
                             !strcmp(severity, "FATAL") || !strcmp(severity, "PANIC"));
    log_event(serious ? LOG_WARN : LOG_DEBUG, "postgresql notice", "{s:s, s:s}", "severity",
              severity ? severity : "?", "message", message ? message : "");
}

static void pg_connect_begin(struct pg_source *src)
{
    const char *keys[PG_CONNECT_MAX_PARAMS], *vals[PG_CONNECT_MAX_PARAMS];
    char tcp_timeout[16];
    pg_connect_params(src->cfg, keys, vals, tcp_timeout, sizeof(tcp_timeout));
    src->conn = PQconnectStartParams(keys, vals, 1);
    if (src->conn == NULL) {
        pg_lost(src, "out of memory");
        return;
    }
    PQsetNoticeReceiver(src->conn, pg_on_notice, src);
    if (PQstatus(src->conn) == CONNECTION_BAD) {
        pg_lost(src, PQerrorMessage(src->conn));
        return;
    }
    src->state = PG_CONNECTING;
    pg_deadline_arm(src);
    pg_rearm(src, EV_WRITE);
}

static void pg_on_reconnect(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pg_source *src = (struct pg_source *)((char *)w - offsetof(struct pg_source, reconnect));
    pg_connect_begin(src);
}

static void pg_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pg_source *src = (struct pg_source *)((char *)w - offsetof(struct pg_source, deadline));
    char why[256];
    snprintf(why, sizeof(why),
             LOG_REASON_PG_DEADLINE_FMT
             " (OUTBOX_PG_TIMEOUT_MS; a query: its statement "
             "deadline, at most half OUTBOX_LEADER_LEASE_MS, and half as long again)",
             src->state == PG_CONNECTING ? "connect" : "query", pg_deadline_ms(src));
    pg_lost(src, why);
}

/* ---- queries ---- */

/*
 * The statement's text behind a comment naming its kind. PostgreSQL keeps
 * the comment in pg_stat_activity and in the text pg_stat_statements stores,
 * so a DBA can tell the relay's statements from the application's, and
 * statement_wal.c finds the relay's own figures by it. Only a PREPARE or an
 * unprepared statement carries text; an execution by name carries none.
 */
static const char *pg_labeled(struct pg_source *src, const struct pg_query *q)
{
    src->labeled.n = 0;
    sb_printf(&src->labeled, PG_STATEMENT_LABEL_FMT "%s", statement_kind_name(q->kind), q->sql);
    return src->labeled.oom || src->labeled.s == NULL ? q->sql : src->labeled.s;
}

static void pg_send_next(struct pg_source *src)
{
    if (src->running || src->head == NULL || src->conn == NULL)
        return;
    struct pg_query *q = src->head;
    if (q->sent_at == 0)
        q->sent_at = pg_mono_now();
    char name[16];
    snprintf(name, sizeof(name), "outbox_%d", q->stmt);
    int sent;
    if (q->stmt >= 0 && !src->prepared[q->stmt]) {
        /* Prepare first; pg_complete then sends the execution. */
        sent = PQsendPrepare(src->conn, name, pg_labeled(src, q), q->nparams, NULL);
        src->preparing = true;
    } else if (q->stmt >= 0) {
        sent = PQsendQueryPrepared(src->conn, name, q->nparams, (const char *const *)q->params,
                                   NULL, NULL, q->binary ? 1 : 0);
    } else {
        sent = PQsendQueryParams(src->conn, pg_labeled(src, q), q->nparams, NULL,
                                 (const char *const *)q->params, NULL, NULL, q->binary ? 1 : 0);
    }
    if (!sent) {
        pg_lost(src, PQerrorMessage(src->conn));
        return;
    }
    if (!src->preparing) {
        /* libpq copied the parameters into its output buffer. */
        for (int i = 0; i < q->nparams; i++) {
            free(q->params[i]);
            q->params[i] = NULL;
        }
    }
    src->running = true;
    pg_deadline_arm(src);
    int r = PQflush(src->conn);
    if (r < 0)
        pg_lost(src, PQerrorMessage(src->conn));
    else
        pg_watch(src, r == 1 ? EV_READ | EV_WRITE : EV_READ);
}

/* The running query returned its last result: hand it over, start the next. */
static void pg_complete(struct pg_source *src)
{
    struct pg_query *q = src->head;
    PGresult *res = src->result;
    if (src->preparing) {
        src->preparing = false;
        if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
            /* Prepared: the same head query is now executed. */
            PQclear(res);
            src->result = NULL;
            src->running = false;
            src->prepared[q->stmt] = true;
            ev_timer_stop(src->loop, &src->deadline);
            pg_send_next(src);
            return;
        }
        /* The PREPARE failed: its error is the query's answer. */
    }
    src->head = q->next;
    if (src->head == NULL)
        src->tail = NULL;
    src->queued--;
    src->running = false;
    src->result = NULL;
    ev_timer_stop(src->loop, &src->deadline);
    if (res == NULL)
        res = PQmakeEmptyPGresult(src->conn, PGRES_FATAL_ERROR);
    pg_count(src, q, res);
    q->fn(q->arg, res);
    PQclear(res);
    pg_query_free(q);
    pg_send_next(src);
}

static void pg_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pg_source *src = (struct pg_source *)w;
    if (src->state == PG_CONNECTING) {
        pg_connect_poll(src);
        return;
    }
    if (revents & EV_WRITE) {
        /* A flush that cannot write reads what the server sent meanwhile
         * into libpq's buffer: the socket may no longer be readable, so that
         * input is handled below either way. */
        int r = PQflush(src->conn);
        if (r < 0) {
            pg_lost(src, PQerrorMessage(src->conn));
            return;
        }
        if (r == 0)
            pg_watch(src, EV_READ);
    }
    if ((revents & EV_READ) && !PQconsumeInput(src->conn)) {
        pg_lost(src, PQerrorMessage(src->conn));
        return;
    }
    while (src->conn != NULL && src->running && !PQisBusy(src->conn)) {
        PGresult *res = PQgetResult(src->conn);
        if (res == NULL) {
            pg_complete(src);
        } else if (src->result == NULL) {
            src->result = res;
        } else {
            PQclear(res);
        }
    }
    if (src->conn != NULL && PQstatus(src->conn) == CONNECTION_BAD) {
        pg_lost(src, PQerrorMessage(src->conn));
        return;
    }
    /* After the results: libpq parses a NOTIFY that came behind a result
     * only once that result is taken, and the socket, read empty, does not
     * fire again for it. */
    bool notified = false;
    PGnotify *n;
    while (src->conn != NULL && (n = PQnotifies(src->conn)) != NULL) {
        notified = true;
        PQfreemem(n);
    }
    if (notified && src->conn != NULL && src->ev.notified)
        src->ev.notified(src->ev.arg);
}

/* ---- losing the connection ---- */

static void pg_lost(struct pg_source *src, const char *why)
{
    if (src->state == PG_DISCONNECTED && src->conn == NULL)
        return;
    enum pg_state was = src->state;
    char reason[512];
    snprintf(reason, sizeof(reason), "%s", why ? why : "connection lost");
    reason[strcspn(reason, "\n")] = '\0';

    ev_io_stop(src->loop, &src->io);
    ev_timer_stop(src->loop, &src->deadline);
    ev_timer_stop(src->loop, &src->recheck);
    PQclear(src->result);
    src->result = NULL;
    PQfinish(src->conn);
    src->conn = NULL;
    src->state = PG_DISCONNECTED;
    src->running = false;
    src->preparing = false;
    memset(src->prepared, 0, sizeof(src->prepared));

    /* Fail every queued query; their owners decide what to retry. */
    struct pg_query *q = src->head;
    src->head = src->tail = NULL;
    src->queued = 0;
    while (q != NULL) {
        struct pg_query *next = q->next;
        q->fn(q->arg, NULL);
        pg_query_free(q);
        q = next;
    }

    if (src->closing) {
        log_debug("postgresql connection closed", NULL);
        return;
    }
    src->reconnects++;
    double delay =
        backoff_delay_ms(src->reconnects, 100, src->cfg->reconnect_max_ms, backoff_random()) /
        1000.0;
    /* "lost" only for a connection we had; a connect attempt that did not get one "failed". */
    bool had = was == PG_SETUP || was == PG_WAITING_TABLE || was == PG_READY;
    log_warn(had ? LOG_MSG_PG_CONNECTION_LOST : LOG_MSG_PG_CONNECT_FAILED, "{s:s, s:f}", "reason",
             reason, "retry_in_s", delay);
    if (had) {
        src->lost_total++;
        if (src->ev.disconnected)
            src->ev.disconnected(src->ev.arg, reason);
    }
    if (src->state == PG_DISCONNECTED && !ev_is_active(&src->reconnect)) {
        ev_timer_set(&src->reconnect, delay, 0.);
        ev_timer_start(src->loop, &src->reconnect);
    }
}

void pg_source_reset(struct pg_source *src, const char *why)
{
    pg_lost(src, why);
}

/* ---- public ---- */

struct pg_source *pg_source_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct pg_source_events events, char *err, size_t errlen)
{
    struct pg_source *src = calloc(1, sizeof(*src));
    if (src == NULL) {
        snprintf(err, errlen, "pg_source: out of memory");
        return NULL;
    }
    src->loop = loop;
    src->cfg = cfg;
    src->ev = events;
    src->state = PG_DISCONNECTED;
    ev_init(&src->io, pg_on_io);
    ev_init(&src->deadline, pg_on_deadline);
    ev_init(&src->reconnect, pg_on_reconnect);
    ev_init(&src->recheck, pg_on_recheck);
    struct strbuf listen = {0};
    sb_puts(&listen, "LISTEN ");
    sb_put_ident(&listen, cfg->channel, strlen(cfg->channel));
    src->listen_sql = sb_take(&listen);
    src->check_sql = outbox_table_check_sql(cfg);
    src->deadline_sql = str_printf("SELECT set_config('statement_timeout', '%d', false)",
                                   config_statement_deadline_ms(cfg));
    if (src->check_sql == NULL || src->listen_sql == NULL || src->deadline_sql == NULL) {
        free(src->check_sql);
        free(src->listen_sql);
        free(src->deadline_sql);
        free(src);
        snprintf(err, errlen, "pg_source: out of memory");
        return NULL;
    }
    return src;
}

void pg_source_start(struct pg_source *src)
{
    pg_connect_begin(src);
}

void pg_source_destroy(struct pg_source *src)
{
    if (src == NULL)
        return;
    ev_timer_stop(src->loop, &src->reconnect);
    src->ev.disconnected = NULL;
    src->ev.fatal = NULL;
    src->closing = true;
    pg_lost(src, "shutting down");
    ev_timer_stop(src->loop, &src->reconnect);
    free(src->check_sql);
    free(src->listen_sql);
    free(src->deadline_sql);
    sb_free(&src->labeled);
    free(src);
}

enum pg_state pg_source_state(const struct pg_source *src)
{
    return src->state;
}

const char *pg_source_not_ready_reason(const struct pg_source *src)
{
    switch (src->state) {
    case PG_READY:
        return NULL;
    case PG_WAITING_TABLE:
        return src->table_missing;
    case PG_SETUP:
        return "postgresql not connected: session setup running";
    default:
        return "postgresql not connected";
    }
}

bool pg_source_query(struct pg_source *src, const char *sql, int nparams, char **params,
                     bool binary, pg_result_fn fn, void *arg)
{
    if (src->state != PG_READY) {
        for (int i = 0; i < nparams; i++)
            free(params[i]);
        return false;
    }
    struct pg_query *q = pg_query_new(sql, nparams, params, binary, fn, arg);
    if (q == NULL)
        return false;
    for (int k = 0; k < src->nkinds; k++)
        if (src->kind_sql[k] == sql)
            q->kind = src->kind_of[k];
    for (q->stmt = 0; q->stmt < src->nstmts && src->stmts[q->stmt] != sql; q->stmt++)
        ;
    if (q->stmt == src->nstmts) {
        if (src->nstmts < PG_MAX_STATEMENTS)
            src->stmts[src->nstmts++] = sql;
        else
            q->stmt = -1; /* more texts than slots: send it unprepared */
    }
    pg_enqueue(src, q);
    pg_send_next(src);
    return true;
}

uint64_t pg_source_lost_total(const struct pg_source *src)
{
    return src->lost_total;
}

void pg_source_statement_kind(struct pg_source *src, const char *sql, enum statement_kind kind)
{
    if (src == NULL || sql == NULL)
        return;
    for (int k = 0; k < src->nkinds; k++)
        if (src->kind_sql[k] == sql) {
            src->kind_of[k] = kind;
            return;
        }
    if (src->nkinds < PG_MAX_KINDS) {
        src->kind_sql[src->nkinds] = sql;
        src->kind_of[src->nkinds++] = kind;
    }
}

const struct statement_stats *pg_source_statement_stats(const struct pg_source *src)
{
    return &src->stats;
}
