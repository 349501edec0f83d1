/* `outbox-relay check`: verify both ends, read-only. */
#include "outbox_relay/cli/admin.h"
#include "outbox_relay/nats/nats_options.h"
#include "outbox_relay/lib/stream_spec.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <nats/nats.h>

#include "outbox_relay/nats/js_stream.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pg/pg_connect.h"
#include "outbox_relay/lib/redact.h"
#include "outbox_relay/lib/util.h"

/* How many of the newest rows --check looks at for subjects and payload sizes. */
#define CHECK_RECENT_ROWS  1000
#define CHECK_MAX_SUBJECTS 64

/*
 * The outage budget docs/guarantees.md documents: a re-publish after the relay was
 * down (acked but not yet marked) is dropped by JetStream only inside the
 * stream's duplicate window; 2 minutes is JetStream's default window and
 * the longest relay outage (restart, failover, PostgreSQL away) the
 * deduplication then covers.
 */
#define CHECK_OUTAGE_BUDGET_S 120

/* The columns the relay writes when it marks a row. */
static const char *const bookkeeping_columns[] = {
    "status", "attempts", "next_attempt_at", "last_error", "published_at", "stream_seq",
};

enum check_level { CHECK_OK, CHECK_WARN, CHECK_FAIL };

struct check {
    FILE *out;
    json_t *checks; /* --json: the lines as {level, message}, printed as one document at the end */
    int failed;     /* a FAIL line was printed */
};

static void say(struct check *c, enum check_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(struct check *c, enum check_level level, const char *fmt, ...)
{
    static const char *const tags[] = {"ok   ", "warn ", "FAIL "};
    static const char *const levels[] = {"ok", "warn", "fail"};
    va_list ap;
    va_start(ap, fmt);
    char *line = NULL;
    if (vasprintf(&line, fmt, ap) < 0)
        line = NULL;
    va_end(ap);
    if (c->checks != NULL)
        json_array_append_new(c->checks, json_pack("{s:s, s:s}", "level", levels[level], "message",
                                                   line ? line : "out of memory"));
    else
        fprintf(c->out, "%s%s\n", tags[level], line ? line : "out of memory");
    free(line);
    if (level == CHECK_FAIL)
        c->failed = 1;
}

/* What --check learnt from the table for the NATS side. */
struct recent_rows {
    int nsubjects;
    char *subjects[CHECK_MAX_SUBJECTS];
    long long rows[CHECK_MAX_SUBJECTS];
    long long max_payload; /* largest payload of the recent rows, bytes */
};

static void recent_rows_free(struct recent_rows *r)
{
    for (int i = 0; i < r->nsubjects; i++)
        free(r->subjects[i]);
    r->nsubjects = 0;
}

static PGresult *query(PGconn *conn, const char *sql, const char *param)
{
    const char *params[] = {param};
    return PQexecParams(conn, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);
}

/* Runs a statement of any length, built printf-style; NULL when out of memory. */
static PGresult *exec_fmt(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static PGresult *exec_fmt(PGconn *conn, const char *fmt, ...)
{
    char *sql = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&sql, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    PGresult *res = PQexec(conn, sql);
    free(sql);
    return res;
}

static bool check_table_columns(struct check *c, PGconn *conn, const struct relay_config *cfg)
{
    char *t = config_table_sql(cfg), *check_sql = outbox_table_check_sql(cfg);
    if (t == NULL || check_sql == NULL) {
        free(t);
        free(check_sql);
        say(c, CHECK_FAIL, "table: out of memory");
        return false;
    }
    PGresult *res = PQexec(conn, check_sql);
    free(check_sql);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!ok && state != NULL && !strcmp(state, "42501")) /* insufficient_privilege */
        say(c, CHECK_FAIL,
            "privileges: the role may not SELECT the columns of %s the relay reads (every claim "
            "needs them): %s",
            cfg->table, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    else if (!ok && state != NULL && !strcmp(state, "42P01")) /* undefined_table */
        say(c, CHECK_FAIL,
            "table: OUTBOX_TABLE: table %s does not exist: create it with `outbox-relay migrate`",
            cfg->table);
    else if (!ok)
        say(c, CHECK_FAIL, "table: OUTBOX_TABLE: table %s is not usable: %s", cfg->table,
            res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "out of memory");
    PQclear(res);
    if (ok) {
        res = exec_fmt(conn,
                       "SELECT count(*) FILTER (WHERE status IN ('pending', 'failed')), "
                       "count(*) FILTER (WHERE status = 'dead') FROM %s",
                       t);
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            say(c, CHECK_OK, "table %s: %s unfinished, %s dead", cfg->table, PQgetvalue(res, 0, 0),
                PQgetvalue(res, 0, 1));
        PQclear(res);
    }
    free(t);
    return ok;
}

/* Retention (on unless OUTBOX_RETENTION=0) deletes published rows. */
static void check_delete_privilege(struct check *c, PGconn *conn, const struct relay_config *cfg,
                                   const char *t, const char *user)
{
    if (cfg->retention_s <= 0)
        return;
    PGresult *res = query(conn, "SELECT has_table_privilege($1::regclass, 'DELETE')", t);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        say(c, CHECK_FAIL, "privileges: cannot check DELETE on %s: %s", cfg->table,
            PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        say(c, CHECK_FAIL,
            "privileges: role %s may not DELETE from %s, which retention needs "
            "(OUTBOX_RETENTION=%" PRId64 "s): GRANT DELETE ON %s TO %s, or set OUTBOX_RETENTION=0",
            user, cfg->table, cfg->retention_s, cfg->table, user);
    else
        say(c, CHECK_OK, "privileges: role %s may DELETE published rows of %s (OUTBOX_RETENTION)",
            user, cfg->table);
    PQclear(res);
}

static void check_privileges(struct check *c, PGconn *conn, const struct relay_config *cfg)
{
    char *t = config_table_sql(cfg);
    if (t == NULL)
        return;
    struct strbuf missing = {0};
    for (size_t i = 0; i < sizeof(bookkeeping_columns) / sizeof(bookkeeping_columns[0]); i++) {
        PGresult *res =
            PQexecParams(conn, "SELECT has_column_privilege($1::regclass, $2, 'UPDATE')", 2, NULL,
                         (const char *[]){t, bookkeeping_columns[i]}, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            say(c, CHECK_FAIL, "privileges: cannot check UPDATE on %s.%s: %s", cfg->table,
                bookkeeping_columns[i], PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
            PQclear(res);
            free(t);
            sb_free(&missing);
            return;
        }
        if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
            sb_printf(&missing, "%s%s", missing.n ? ", " : "", bookkeeping_columns[i]);
        PQclear(res);
    }
    PGresult *who = PQexec(conn, "SELECT current_user");
    const char *user = PQresultStatus(who) == PGRES_TUPLES_OK ? PQgetvalue(who, 0, 0) : "?";
    if (missing.n > 0)
        say(c, CHECK_FAIL,
            "privileges: role %s may not UPDATE %s (%s): the relay could not mark rows "
            "(GRANT UPDATE (status, attempts, next_attempt_at, last_error, published_at, "
            "stream_seq) ON %s TO %s)",
            user, cfg->table, missing.s, cfg->table, user);
    else
        say(c, CHECK_OK, "privileges: role %s may UPDATE the bookkeeping columns of %s", user,
            cfg->table);
    check_delete_privilege(c, conn, cfg, t, user);
    PQclear(who);
    free(t);
    sb_free(&missing);
}

/*
 * The NOTIFY trigger: an enabled AFTER INSERT trigger on the table whose
 * function notifies. sql/003 passes the channel as the trigger's first
 * argument (the function falls back to 'outbox'); a hand-written function
 * may name it in its body instead.
 */
static void check_trigger(struct check *c, PGconn *conn, const struct relay_config *cfg)
{
    char *t = config_table_sql(cfg);
    PGresult *res =
        query(conn,
              "SELECT t.tgname, CASE WHEN t.tgnargs > 0 THEN convert_from(substring(t.tgargs FROM 1"
              "  FOR position('\\x00'::bytea IN t.tgargs) - 1), 'UTF8') END,"
              " p.prosrc ~* 'TG_ARGV\\s*\\[\\s*0\\s*\\]',"
              " coalesce(substring(p.prosrc FROM '(?i)pg_notify\\s*\\(\\s*(?:COALESCE\\s*\\(\\s*"
              "TG_ARGV\\s*\\[\\s*0\\s*\\]\\s*,\\s*)?''([^'']*)'''),"
              "  substring(p.prosrc FROM '(?i)\\mNOTIFY\\s+\"?([A-Za-z0-9_]+)')),"
              " p.prosrc ~* '(pg_notify|\\mnotify\\M)'"
              " FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
              " WHERE t.tgrelid = $1::regclass AND NOT t.tgisinternal AND t.tgenabled <> 'D'"
              "   AND (t.tgtype & 4) <> 0 AND (t.tgtype & 2) = 0"
              " ORDER BY t.tgname",
              t);
    free(t);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        say(c, CHECK_WARN, "trigger: cannot inspect the triggers of %s: %s", cfg->table,
            PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        PQclear(res);
        return;
    }
    int found = -1, other = -1;
    const char *other_channel = NULL;
    for (int i = 0; i < PQntuples(res) && found < 0; i++) {
        if (strcmp(PQgetvalue(res, i, 4), "t") != 0)
            continue; /* does not notify */
        const char *arg = PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1);
        bool uses_arg = strcmp(PQgetvalue(res, i, 2), "t") == 0;
        const char *literal = PQgetisnull(res, i, 3) ? "" : PQgetvalue(res, i, 3);
        const char *channel = uses_arg && arg != NULL ? arg : literal;
        if (strcmp(channel, cfg->channel) == 0) {
            found = i;
        } else if (channel[0] != '\0') {
            other = i;
            other_channel = channel;
        }
    }
    if (found >= 0)
        say(c, CHECK_OK, "trigger %s notifies channel %s (OUTBOX_CHANNEL) on insert",
            PQgetvalue(res, found, 0), cfg->channel);
    else if (other >= 0)
        say(c, CHECK_FAIL,
            "trigger %s notifies channel %s, the relay listens on %s (OUTBOX_CHANNEL): rows "
            "would wait for the poll (OUTBOX_POLL_INTERVAL_MS=%d)",
            PQgetvalue(res, other, 0), other_channel, cfg->channel, cfg->poll_interval_ms);
    else
        say(c, CHECK_WARN,
            "trigger: no AFTER INSERT trigger on %s notifies channel %s (OUTBOX_CHANNEL): rows "
            "wait for the poll (OUTBOX_POLL_INTERVAL_MS=%d); see sql/003_outbox_notify.sql",
            cfg->table, cfg->channel, cfg->poll_interval_ms);
    PQclear(res);
}

static void read_recent_rows(struct check *c, PGconn *conn, const struct relay_config *cfg,
                             struct recent_rows *r)
{
    char *t = config_table_sql(cfg);
    PGresult *res = t == NULL ? NULL
                              : exec_fmt(conn,
                                         "SELECT subject, count(*), "
                                         "max(max(octet_length(payload))) OVER ()"
                                         " FROM (SELECT subject, payload FROM %s "
                                         "ORDER BY id DESC LIMIT %d) recent GROUP BY "
                                         "subject ORDER BY count(*) DESC, subject LIMIT %d",
                                         t, CHECK_RECENT_ROWS, CHECK_MAX_SUBJECTS);
    free(t);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        say(c, CHECK_WARN, "recent rows: cannot read them: %s",
            PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        PQclear(res);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        r->subjects[r->nsubjects] = strdup(PQgetvalue(res, i, 0));
        if (r->subjects[r->nsubjects] == NULL)
            break;
        r->rows[r->nsubjects++] = atoll(PQgetvalue(res, i, 1));
        r->max_payload = atoll(PQgetvalue(res, i, 2));
    }
    PQclear(res);
}

/* Duplicate window, seal and message size of one stream the relay publishes to. */
static void check_stream_config(struct check *c, jsCtx *js, const struct relay_config *cfg,
                                const char *stream, long long max_payload)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = cfg->publish_timeout_ms;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, stream, &jo, &jerr);
    if (s != NATS_OK) {
        say(c, CHECK_WARN, "stream %s: cannot read its configuration: %s (JetStream error %d)",
            stream, natsStatus_GetText(s), (int)jerr);
        return;
    }
    const jsStreamConfig *sc = si->Config;
    double window_s = (double)sc->Duplicates / 1e9;
    if (sc->Sealed)
        say(c, CHECK_FAIL, "stream %s is sealed: it takes no more messages", stream);
    if (window_s < CHECK_OUTAGE_BUDGET_S)
        say(c, CHECK_WARN,
            "stream %s: duplicate window %.0f s is shorter than the %d s outage budget: a row "
            "published but not yet marked when the relay stops is published again after the "
            "restart, and past the window consumers see it twice",
            stream, window_s, CHECK_OUTAGE_BUDGET_S);
    else
        say(c, CHECK_OK, "stream %s: duplicate window %.0f s covers the %d s outage budget", stream,
            window_s, CHECK_OUTAGE_BUDGET_S);
    /* The stream the relay would create: does the existing one match the settings? */
    struct stream_spec want, have;
    char why[512];
    if (strcmp(stream, cfg->stream) == 0 &&
        stream_spec_from_config(cfg, &want, why, sizeof(why)) == 0) {
        stream_spec_from_stream(sc, &have);
        if (stream_spec_diff(&want, &have, why, sizeof(why)) > 0)
            say(c, CHECK_WARN,
                "stream %s differs from OUTBOX_STREAM_* (the relay creates, never alters): %s",
                stream, why);
    }
    if (sc->MaxMsgSize > 0 && max_payload > sc->MaxMsgSize)
        say(c, CHECK_WARN,
            "stream %s: max_msg_size %d is below the largest recent payload (%lld bytes): such "
            "rows go dead",
            stream, (int)sc->MaxMsgSize, max_payload);
    jsStreamInfo_Destroy(si);
}

/* Dead letters are retried, never lost, while no stream takes their subject: still a failure. */
static void check_dead_letter_subject(struct check *c, jsCtx *js, const struct relay_config *cfg)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = cfg->publish_timeout_ms;
    jo.Stream.Info.SubjectsFilter = cfg->dead_letter_subject;
    jsStreamNamesList *names = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_StreamNames(&names, js, &jo, &jerr);
    if (s == NATS_NOT_FOUND || (s == NATS_OK && (names == NULL || names->Count == 0)))
        say(c, CHECK_FAIL,
            "dead-letter subject %s (OUTBOX_DEAD_LETTER_SUBJECT): no stream takes it; dead "
            "letters are retried until one does",
            cfg->dead_letter_subject);
    else if (s != NATS_OK)
        say(c, CHECK_WARN, "dead-letter subject %s: cannot ask JetStream: %s (JetStream error %d)",
            cfg->dead_letter_subject, natsStatus_GetText(s), (int)jerr);
    else
        say(c, CHECK_OK, "dead-letter subject %s goes to stream %s", cfg->dead_letter_subject,
            names->List[0]);
    jsStreamNamesList_Destroy(names);
}

/* Which stream takes each recent subject (and the dead-letter subject); their configuration. */
static void check_streams(struct check *c, jsCtx *js, const struct relay_config *cfg,
                          const struct recent_rows *r, bool configured_exists)
{
    char *checked[CHECK_MAX_SUBJECTS + 1];
    int nchecked = 0;
    if (configured_exists) {
        check_stream_config(c, js, cfg, cfg->stream, r->max_payload);
        checked[nchecked++] = strdup(cfg->stream);
    }
    for (int i = 0; i < r->nsubjects; i++) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = cfg->publish_timeout_ms;
        jo.Stream.Info.SubjectsFilter = r->subjects[i];
        jsStreamNamesList *names = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_StreamNames(&names, js, &jo, &jerr);
        if (s == NATS_NOT_FOUND || (s == NATS_OK && (names == NULL || names->Count == 0))) {
            say(c, CHECK_FAIL,
                "subject %s (%lld of the last %d rows): no stream takes it; its rows fail until "
                "one does",
                r->subjects[i], r->rows[i], CHECK_RECENT_ROWS);
        } else if (s != NATS_OK) {
            say(c, CHECK_WARN, "subject %s: cannot ask JetStream: %s (JetStream error %d)",
                r->subjects[i], natsStatus_GetText(s), (int)jerr);
        } else {
            const char *stream = names->List[0];
            say(c, CHECK_OK, "subject %s (%lld of the last %d rows) goes to stream %s",
                r->subjects[i], r->rows[i], CHECK_RECENT_ROWS, stream);
            bool known = false;
            for (int k = 0; k < nchecked && !known; k++)
                known = checked[k] != NULL && strcmp(checked[k], stream) == 0;
            if (!known) {
                check_stream_config(c, js, cfg, stream, r->max_payload);
                checked[nchecked++] = strdup(stream);
            }
        }
        jsStreamNamesList_Destroy(names);
    }
    if (cfg->dead_letter_subject[0] != '\0')
        check_dead_letter_subject(c, js, cfg);
    for (int k = 0; k < nchecked; k++)
        free(checked[k]);
}

static int admin_check_lines(struct check *c, const struct relay_config *cfg);

int admin_check(const struct relay_config *cfg, FILE *out, bool json)
{
    struct check c = {.out = out, .checks = json ? json_array() : NULL};
    admin_check_lines(&c, cfg);
    if (c.checks != NULL) {
        json_t *doc = json_pack("{s:b, s:o}", "ok", !c.failed, "checks", c.checks);
        char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text != NULL)
            fprintf(out, "%s\n", text);
        free(text);
        json_decref(doc);
    }
    return c.failed;
}

static int admin_check_lines(struct check *c, const struct relay_config *cfg)
{
    struct recent_rows recent = {0};
    char err[512], shown[512];
    redact_pg_conninfo(cfg->pg_url, shown, sizeof(shown));
    PGconn *conn = pg_connect_blocking(cfg, err, sizeof(err));
    if (conn == NULL) {
        say(c, CHECK_FAIL, "postgresql: cannot connect (OUTBOX_PG_URL=%s): %s",
            shown[0] ? shown : "(libpq defaults)", err);
    } else {
        say(c, CHECK_OK, "postgresql %d.%d reached", PQserverVersion(conn) / 10000,
            PQserverVersion(conn) % 10000);
        if (check_table_columns(c, conn, cfg)) {
            check_privileges(c, conn, cfg);
            check_trigger(c, conn, cfg);
            read_recent_rows(c, conn, cfg, &recent);
        }
        PQfinish(conn);
    }

    /* One connection for every NATS check. */
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    char why[640];
    redact_nats_urls(cfg->nats_url, shown, sizeof(shown));
    if (nats_connect_once(cfg, "outbox-relay check", &nc, &js, why, sizeof(why)) < 0) {
        say(c, CHECK_FAIL, "nats: %s (%s)", why, shown);
        recent_rows_free(&recent);
        return 1;
    }
    long long max_payload = (long long)natsConnection_GetMaxPayload(nc);
    say(c, CHECK_OK, "nats reached (%s), max_payload %lld", shown, max_payload);
    if (recent.max_payload > max_payload)
        say(c, CHECK_WARN,
            "max_payload: a recent row's payload is %lld bytes, over the server's max_payload "
            "%lld: such rows go dead",
            recent.max_payload, max_payload);
    bool configured_exists = false;
    if (cfg->stream[0] != '\0') {
        /* Read-only: --check never creates the stream the relay would create. */
        jsStreamInfo *si = NULL;
        int exists = js_stream_lookup(js, cfg, cfg->stream, &si, err, sizeof(err));
        jsStreamInfo_Destroy(si);
        if (exists < 0)
            say(c, CHECK_FAIL, "stream %s (OUTBOX_STREAM): %s", cfg->stream, err);
        else if (exists == 0)
            say(c, CHECK_FAIL,
                "stream %s (OUTBOX_STREAM) does not exist; the relay would create it with "
                "subjects %s (--check changes nothing)",
                cfg->stream, cfg->stream_subjects);
        else
            say(c, CHECK_OK, "stream %s (OUTBOX_STREAM) exists", cfg->stream);
        configured_exists = exists > 0;
    }
    if (recent.nsubjects > 0 || configured_exists || cfg->dead_letter_subject[0] != '\0')
        check_streams(c, js, cfg, &recent, configured_exists);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    recent_rows_free(&recent);
    return c->failed;
}
