/* Settings: one table drives defaults, OUTBOX_* variables, flags, validation and --help. */
#include "outbox_relay/lib/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "outbox_relay/lib/util.h"

#include "outbox_relay/lib/stream_spec.h"
#include "outbox_relay/lib/suggest.h"
#include "outbox_relay/lib/subject_pattern.h"

enum setting_type {
    SETTING_STRING,
    SETTING_INT,
    SETTING_BOOL,
    SETTING_LOG_LEVEL,
    SETTING_LOG_FORMAT,
    SETTING_DURATION /* seconds in an int64_t: 90, 90s, 15m, 12h, 7d; 0 allowed */
};

struct setting {
    const char *env;  /* OUTBOX_PG_URL */
    const char *flag; /* pg-url */
    enum setting_type type;
    size_t offset;
    const char *def;
    int min, max; /* for SETTING_INT */
    const char *help;
};

#define STR(f)  SETTING_STRING, offsetof(struct relay_config, f)
#define INT(f)  SETTING_INT, offsetof(struct relay_config, f)
#define BOOL(f) SETTING_BOOL, offsetof(struct relay_config, f)
#define DUR(f)  SETTING_DURATION, offsetof(struct relay_config, f)
#define DAY_MS  (24 * 3600 * 1000)

static const struct setting settings[] = {
    {"OUTBOX_PG_URL", "pg-url", STR(pg_url), "", 0, 0,
     "PostgreSQL connection string or URI (libpq; PG* variables apply). Needs a real session, "
     "not a transaction-pooled one"},
    {"OUTBOX_NATS_URL", "nats-url", STR(nats_url), "nats://127.0.0.1:4222", 0, 0,
     "NATS servers, comma-separated"},
    {"OUTBOX_TABLE", "table", STR(table), "outbox", 0, 0, "outbox table, may be schema-qualified"},
    {"OUTBOX_CHANNEL", "channel", STR(channel), "outbox", 0, 0,
     "LISTEN channel of the NOTIFY trigger"},
    {"OUTBOX_STREAM", "stream", STR(stream), "", 0, 0,
     "JetStream stream to create when missing (needs OUTBOX_STREAM_SUBJECTS); empty: not managed"},
    {"OUTBOX_STREAM_SUBJECTS", "stream-subjects", STR(stream_subjects), "", 0, 0,
     "subjects of a created stream, comma-separated"},
    {"OUTBOX_ALLOW_SUBJECTS", "allow-subjects", STR(allow_subjects), "", 0, 0,
     "subject patterns (* one token, > the rest) rows may publish to besides the subjects of "
     "OUTBOX_STREAM, comma-separated; without OUTBOX_STREAM, when set, the only ones. A row "
     "with another subject, or a system one ($..., _INBOX.), goes dead"},
    {"OUTBOX_BATCH_SIZE", "batch-size", INT(batch_size), "500", 1, 10000, "rows per claim query"},
    {"OUTBOX_MAX_INFLIGHT", "max-inflight", INT(max_inflight), "4000", 1, 1000000,
     "rows held by the relay at once, publishing or waiting on their key (backpressure)"},
    {"OUTBOX_MAX_INFLIGHT_BYTES", "max-inflight-bytes", INT(max_inflight_bytes), "33554432", 65536,
     1073741824,
     "payload and header bytes held at once, claimed to marked (a larger row still goes, alone)"},
    {"OUTBOX_POLL_INTERVAL_MS", "poll-interval-ms", INT(poll_interval_ms), "1000", 10, DAY_MS,
     "fallback scan interval when no notification arrives"},
    {"OUTBOX_TAIL_POLL_US", "tail-poll-us", INT(tail_poll_us), "0", 0, 1000000,
     "while rows flow, the pause between looks at the table's tail (microseconds); 0: 500 us "
     "after rows and every 500 us for 2 ms, then every 1 ms (the lowest latency). Longer pauses "
     "make fuller claims and marks: less PostgreSQL and relay CPU per row, for about half the "
     "pause in latency"},
    {"OUTBOX_MARK_GATHER_MS", "mark-gather-ms", INT(mark_gather_ms), "10", 0, 60000,
     "how long published rows wait to be marked together (milliseconds). Consumers have them "
     "already, so this costs no latency; one UPDATE for many rows costs the database far less "
     "per row. 0: marked at the next loop turn"},
    {"OUTBOX_PUBLISH_TIMEOUT_MS", "publish-timeout-ms", INT(publish_timeout_ms), "5000", 10, 600000,
     "how long to wait for a PubAck before the publish counts as failed"},
    {"OUTBOX_RETRY_BASE_MS", "retry-base-ms", INT(retry_base_ms), "1000", 1, DAY_MS,
     "backoff before the first retry; doubles per attempt, with jitter"},
    {"OUTBOX_RETRY_MAX_MS", "retry-max-ms", INT(retry_max_ms), "300000", 1, 7 * DAY_MS,
     "backoff cap"},
    {"OUTBOX_MAX_ATTEMPTS", "max-attempts", INT(max_attempts), "10", 1, 1000000,
     "publish attempts before a row goes dead"},
    {"OUTBOX_DEAD_LETTER_SUBJECT", "dead-letter-subject", STR(dead_letter_subject), "", 0, 0,
     "the leader also publishes each dead row here (payload, headers, Outbox-Dead-* headers); "
     "empty: off"},
    {"OUTBOX_DEAD_HOLDS_KEY", "dead-holds-key", BOOL(dead_holds_key), "false", 0, 0,
     "true: a dead row keeps holding later rows of its ordering_key until requeued; false: the "
     "key resumes"},
    {"OUTBOX_SHUTDOWN_TIMEOUT_MS", "shutdown-timeout-ms", INT(shutdown_timeout_ms), "10000", 0,
     600000, "on SIGTERM, how long to wait for in-flight acks"},
    {"OUTBOX_STALL_TIMEOUT_MS", "stall-timeout-ms", INT(stall_timeout_ms), "60000", 1000, DAY_MS,
     "/healthz fails when due work made no progress for this long"},
    {"OUTBOX_LEADER_RETRY_MS", "leader-retry-ms", INT(leader_retry_ms), "2000", 100, 600000,
     "how often a standby tries to take the leader lock"},
    {"OUTBOX_LEADER_LEASE_MS", "leader-lease-ms", INT(leader_lease_ms), "15000", 1000, 3600000,
     "a leader whose session is silent this long (frozen, partitioned, node gone) is ended by a "
     "standby"},
    {"OUTBOX_NATS_LOST_MS", "nats-lost-ms", INT(nats_lost_ms), "30000", 1000, DAY_MS,
     "a leader cut off from NATS this long releases leadership"},
    {"OUTBOX_PG_TIMEOUT_MS", "pg-timeout-ms", INT(pg_timeout_ms), "30000", 100, 3600000,
     "deadline for a PostgreSQL connect or query (a query's at most half the leader lease); past "
     "it the connection is dropped and remade"},
    {"OUTBOX_RECONNECT_MAX_MS", "reconnect-max-ms", INT(reconnect_max_ms), "10000", 10, 600000,
     "cap of the reconnect backoff"},
    {"OUTBOX_METRICS_INTERVAL_MS", "metrics-interval-ms", INT(metrics_interval_ms), "5000", 100,
     DAY_MS, "how often the pending count and oldest pending age are sampled"},
    {"OUTBOX_HTTP_ADDR", "http-addr", STR(http_addr), ":9841", 0, 0,
     "[host]:port for /healthz, /readyz, /metrics; empty disables"},
    {"OUTBOX_LOG_LEVEL", "log-level", SETTING_LOG_LEVEL, offsetof(struct relay_config, log_level),
     "info", 0, 0, "debug, info, warn or error"},
    {"OUTBOX_LOG_FORMAT", "log-format", SETTING_LOG_FORMAT,
     offsetof(struct relay_config, log_format), "json", 0, 0, "json or text"},
    {"OUTBOX_LOG_LEVEL_FILE", "log-level-file", STR(log_level_file), "", 0, 0,
     "file holding a log level, read again on SIGHUP (e.g. a mounted ConfigMap key)"},
    {"OUTBOX_NATS_CREDS", "nats-creds", STR(nats_creds), "", 0, 0,
     "path of a NATS .creds file (JWT + nkey seed)"},
    {"OUTBOX_NATS_NKEY_SEED", "nats-nkey-seed", STR(nats_nkey_seed), "", 0, 0,
     "file holding an nkey seed and, on the next line, its public key (nk -gen user -pubout)"},
    {"OUTBOX_NATS_USER", "nats-user", STR(nats_user), "", 0, 0,
     "NATS user (password from OUTBOX_NATS_PASSWORD_FILE)"},
    {"OUTBOX_NATS_PASSWORD_FILE", "nats-password-file", STR(nats_password_file), "", 0, 0,
     "path of a file holding the NATS password"},
    {"OUTBOX_NATS_TOKEN_FILE", "nats-token-file", STR(nats_token_file), "", 0, 0,
     "path of a file holding a NATS token"},
    {"OUTBOX_NATS_TLS_CA", "nats-tls-ca", STR(nats_tls_ca), "", 0, 0,
     "CA bundle to verify the NATS server; any TLS setting turns TLS on"},
    {"OUTBOX_NATS_TLS_CERT", "nats-tls-cert", STR(nats_tls_cert), "", 0, 0,
     "client certificate for NATS"},
    {"OUTBOX_NATS_TLS_KEY", "nats-tls-key", STR(nats_tls_key), "", 0, 0, "client key for NATS"},
    {"OUTBOX_NATS_TLS_SERVER_NAME", "nats-tls-server-name", STR(nats_tls_server_name), "", 0, 0,
     "expected name in the server certificate, when it differs from the URL host"},
    {"OUTBOX_STREAM_REPLICAS", "stream-replicas", INT(stream_replicas), "1", 1, 5,
     "replicas of a stream the relay creates (3 in a 3-node cluster)"},
    {"OUTBOX_STREAM_STORAGE", "stream-storage", STR(stream_storage), "file", 0, 0,
     "storage of a stream the relay creates: file or memory"},
    {"OUTBOX_STREAM_MAX_AGE", "stream-max-age", STR(stream_max_age), "0", 0, 0,
     "max age of messages in a stream the relay creates (e.g. 7d, 12h); 0: unlimited"},
    {"OUTBOX_STREAM_DUPLICATE_WINDOW", "stream-duplicate-window", STR(stream_duplicate_window),
     "2m", 0, 0,
     "duplicate window of a stream the relay creates (e.g. 2m, 1h): size it to the longest "
     "outage a retried publish must still be deduplicated across"},

    {"OUTBOX_RETENTION", "retention", DUR(retention_s), "7d", 0, 0,
     "the leader deletes published rows older than this (e.g. 36h, 7d); 0 keeps them forever. "
     "Dead rows are never deleted"},
    {"OUTBOX_RETENTION_BATCH", "retention-batch", INT(retention_batch), "2000", 1, 100000,
     "rows per retention window: each statement looks at this many rows by id and deletes the "
     "old published ones among them"},
    {"OUTBOX_RETENTION_INTERVAL_MS", "retention-interval-ms", INT(retention_interval_ms), "60000",
     100, DAY_MS,
     "how often a retention pass starts from the lowest id (its windows follow each other faster)"},

    {"OUTBOX_PIPELINE", "pipeline", STR(pipeline), "auto", 0, 0,
     "auto: publish many rows of one ordering_key at once, fenced by Nats-Expected-Last-Msg-Id, "
     "when OUTBOX_STREAM is set (the relay must be the stream's only writer); off: one publish "
     "per key at a time"},

    {"OUTBOX_CLOUDEVENTS", "cloudevents", STR(cloudevents), "off", 0, 0,
     "binary: each message carries CloudEvents ce- headers (ce-specversion, ce-id = event_id, "
     "ce-source, ce-type = subject, ce-time = created_at, ce-datacontenttype from the row's "
     "Content-Type); a header the row sets wins. off: none"},
    {"OUTBOX_CLOUDEVENTS_SOURCE", "cloudevents-source", STR(cloudevents_source), "", 0, 0,
     "ce-source of every message (a URI-reference, e.g. /orders-service); required when "
     "OUTBOX_CLOUDEVENTS=binary"},
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void *field(struct relay_config *cfg, const struct setting *s)
{
    return (char *)cfg + s->offset;
}

/* Applies one textual value; `source` names it in errors ("OUTBOX_X" or "--x"). */
static int setting_apply(struct relay_config *cfg, const struct setting *s, const char *value,
                         char *err, size_t errlen)
{
    switch (s->type) {
    case SETTING_STRING: {
        char **slot = field(cfg, s);
        char *copy = strdup(value);
        if (copy == NULL) {
            fail(err, errlen, "%s: out of memory", s->env);
            return -1;
        }
        free(*slot);
        *slot = copy;
        return 0;
    }
    case SETTING_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (value[0] == '\0' || *end != '\0' || errno != 0) {
            fail(err, errlen, "%s: \"%s\" is not a whole number", s->env, value);
            return -1;
        }
        if (v < s->min || v > s->max) {
            fail(err, errlen, "%s: %ld is out of range (%d..%d)", s->env, v, s->min, s->max);
            return -1;
        }
        *(int *)field(cfg, s) = (int)v;
        return 0;
    }
    case SETTING_BOOL:
        if (!strcasecmp(value, "true") || !strcmp(value, "1") || !strcasecmp(value, "yes")) {
            *(bool *)field(cfg, s) = true;
        } else if (!strcasecmp(value, "false") || !strcmp(value, "0") || !strcasecmp(value, "no")) {
            *(bool *)field(cfg, s) = false;
        } else {
            fail(err, errlen, "%s: \"%s\" is not true or false", s->env, value);
            return -1;
        }
        return 0;
    case SETTING_LOG_LEVEL:
        if (!log_level_parse(value, field(cfg, s))) {
            fail(err, errlen, "%s: \"%s\" is not one of debug, info, warn, error", s->env, value);
            return -1;
        }
        return 0;
    case SETTING_LOG_FORMAT:
        if (!strcmp(value, "json")) {
            *(enum log_format *)field(cfg, s) = LOG_FORMAT_JSON;
        } else if (!strcmp(value, "text")) {
            *(enum log_format *)field(cfg, s) = LOG_FORMAT_TEXT;
        } else {
            fail(err, errlen, "%s: \"%s\" is not json or text", s->env, value);
            return -1;
        }
        return 0;
    case SETTING_DURATION: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        long long unit = !strcmp(end, "") || !strcmp(end, "s") ? 1
                         : !strcmp(end, "m")                   ? 60
                         : !strcmp(end, "h")                   ? 3600
                         : !strcmp(end, "d")                   ? 86400
                                                               : -1;
        if (end == value || unit < 0 || errno != 0 || v < 0 || v > 100LL * 365 * 86400 / unit) {
            fail(err, errlen, "%s: \"%s\" is not a duration (e.g. 90s, 15m, 12h, 7d; 0 = off)",
                 s->env, value);
            return -1;
        }
        *(int64_t *)field(cfg, s) = v * unit;
        return 0;
    }
    }
    return -1;
}

/* A SQL identifier the relay accepts unquoted-style: letters, digits, _ and $. */
static bool identifier_valid(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '_' || c == '$'))
            return false;
    }
    return true;
}

static bool table_name_valid(const char *t)
{
    const char *dot = strchr(t, '.');
    if (dot == NULL)
        return identifier_valid(t, strlen(t));
    return identifier_valid(t, (size_t)(dot - t)) && identifier_valid(dot + 1, strlen(dot + 1));
}

/* nats://host:port, tls://host:port, host:port or host, comma-separated. */
static bool nats_url_valid(const char *list, char *why, size_t whylen)
{
    char *copy = strdup(list);
    bool ok = copy != NULL && list[0] != '\0';
    char *save = NULL;
    if (!ok)
        snprintf(why, whylen, "is empty");
    for (char *url = copy ? strtok_r(copy, ",", &save) : NULL; ok && url != NULL;
         url = strtok_r(NULL, ",", &save)) {
        while (*url == ' ')
            url++;
        char *rest = strstr(url, "://");
        if (rest != NULL) {
            size_t slen = (size_t)(rest - url);
            if (!((slen == 4 && !strncmp(url, "nats", 4)) ||
                  (slen == 3 && !strncmp(url, "tls", 3)))) {
                snprintf(why, whylen, "\"%.*s\" is not a nats:// or tls:// scheme", (int)slen, url);
                ok = false;
                break;
            }
            rest += 3;
        } else {
            rest = url;
        }
        char *at = strrchr(rest, '@');
        if (at != NULL)
            rest = at + 1;
        if (*rest == '\0' || *rest == ':' || strpbrk(rest, " /?#") != NULL) {
            snprintf(why, whylen, "has a malformed server address");
            ok = false;
            break;
        }
        char *colon = strrchr(rest, ':');
        if (colon != NULL && rest[0] != '[') {
            char *end;
            long port = strtol(colon + 1, &end, 10);
            if (*end != '\0' || port < 1 || port > 65535) {
                /* Not a number: likely the piece of a password a ',' cut off; never shown. */
                if (*end != '\0' || end == colon + 1)
                    snprintf(why, whylen, "has a bad port (not a number)");
                else
                    snprintf(why, whylen, "has a bad port \"%s\"", colon + 1);
                ok = false;
            }
        }
    }
    free(copy);
    return ok;
}

static bool readable_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    fclose(f);
    return true;
}

static int config_validate(struct relay_config *cfg, char *err, size_t errlen)
{
    if (!table_name_valid(cfg->table)) {
        fail(err, errlen,
             "OUTBOX_TABLE: \"%s\" is not a table name ([schema.]name of letters, digits, _)",
             cfg->table);
        return -1;
    }
    if (!identifier_valid(cfg->channel, strlen(cfg->channel))) {
        fail(err, errlen, "OUTBOX_CHANNEL: \"%s\" is not a channel name (letters, digits, _)",
             cfg->channel);
        return -1;
    }
    if (cfg->pg_url[0] != '\0') {
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(cfg->pg_url, &perr);
        if (opts == NULL) {
            /* libpq's message may quote the string: keep only its first line, no secrets. */
            char first[200] = "malformed";
            if (perr != NULL) {
                snprintf(first, sizeof(first), "%s", perr);
                first[strcspn(first, "\n")] = '\0';
                if (strstr(first, cfg->pg_url) != NULL)
                    snprintf(first, sizeof(first), "malformed connection string");
            }
            PQfreemem(perr);
            fail(err, errlen, "OUTBOX_PG_URL: %s", first);
            return -1;
        }
        PQconninfoFree(opts);
    }
    char why[160];
    if (!nats_url_valid(cfg->nats_url, why, sizeof(why))) {
        fail(err, errlen, "OUTBOX_NATS_URL: %s", why);
        return -1;
    }
    if (!cfg->for_command && cfg->stream[0] != '\0' && cfg->stream_subjects[0] == '\0') {
        fail(err, errlen, "OUTBOX_STREAM_SUBJECTS: must be set when OUTBOX_STREAM is set");
        return -1;
    }
    if (cfg->stream[0] != '\0' && strpbrk(cfg->stream, " .*>\t") != NULL) {
        fail(err, errlen, "OUTBOX_STREAM: \"%s\" may not contain spaces, '.', '*' or '>'",
             cfg->stream);
        return -1;
    }
    if (cfg->dead_letter_subject[0] != '\0' &&
        (!subject_valid(cfg->dead_letter_subject, why, sizeof(why)) ||
         cfg->dead_letter_subject[0] == '$' || !strncmp(cfg->dead_letter_subject, "_INBOX.", 7))) {
        if (cfg->dead_letter_subject[0] == '$' || !strncmp(cfg->dead_letter_subject, "_INBOX.", 7))
            snprintf(why, sizeof(why), "may not start with '$' or \"_INBOX.\"");
        fail(err, errlen, "OUTBOX_DEAD_LETTER_SUBJECT: \"%s\" is not a publishable subject: %s",
             cfg->dead_letter_subject, why);
        return -1;
    }
    if (strcmp(cfg->pipeline, "auto") != 0 && strcmp(cfg->pipeline, "off") != 0) {
        fail(err, errlen, "OUTBOX_PIPELINE: \"%s\" is not auto or off", cfg->pipeline);
        return -1;
    }
    if (strcmp(cfg->cloudevents, "off") != 0 && strcmp(cfg->cloudevents, "binary") != 0) {
        fail(err, errlen, "OUTBOX_CLOUDEVENTS: \"%s\" is not off or binary", cfg->cloudevents);
        return -1;
    }
    if (strcmp(cfg->cloudevents, "binary") == 0 && cfg->cloudevents_source[0] == '\0') {
        fail(err, errlen, "OUTBOX_CLOUDEVENTS_SOURCE: must be set when OUTBOX_CLOUDEVENTS=binary");
        return -1;
    }
    for (const char *p = cfg->cloudevents_source; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            fail(err, errlen, "OUTBOX_CLOUDEVENTS_SOURCE: contains a control character");
            return -1;
        }
    }
    struct stream_spec spec;
    if (stream_spec_from_config(cfg, &spec, err, errlen) < 0)
        return -1;
    struct subject_list allow;
    char bad[256];
    if (subject_list_parse(&allow, cfg->allow_subjects, true, bad, sizeof(bad)) < 0) {
        fail(err, errlen, "OUTBOX_ALLOW_SUBJECTS: %s", bad);
        return -1;
    }
    subject_list_free(&allow);
    if (cfg->retry_max_ms < cfg->retry_base_ms) {
        fail(err, errlen, "OUTBOX_RETRY_MAX_MS: %d is below OUTBOX_RETRY_BASE_MS %d",
             cfg->retry_max_ms, cfg->retry_base_ms);
        return -1;
    }
    if (cfg->batch_size > cfg->max_inflight) {
        fail(err, errlen, "OUTBOX_BATCH_SIZE: %d is above OUTBOX_MAX_INFLIGHT %d", cfg->batch_size,
             cfg->max_inflight);
        return -1;
    }
    if ((cfg->nats_user[0] != '\0') != (cfg->nats_password_file[0] != '\0')) {
        fail(err, errlen, "%s: OUTBOX_NATS_USER and OUTBOX_NATS_PASSWORD_FILE go together",
             cfg->nats_user[0] ? "OUTBOX_NATS_PASSWORD_FILE" : "OUTBOX_NATS_USER");
        return -1;
    }
    if ((cfg->nats_tls_cert[0] != '\0') != (cfg->nats_tls_key[0] != '\0')) {
        fail(err, errlen, "%s: OUTBOX_NATS_TLS_CERT and OUTBOX_NATS_TLS_KEY go together",
             cfg->nats_tls_cert[0] ? "OUTBOX_NATS_TLS_KEY" : "OUTBOX_NATS_TLS_CERT");
        return -1;
    }
    /* Files named by a setting must be readable now, not at the first reconnect. */
    for (size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        size_t n = strlen(s->env);
        bool is_path =
            (n > 5 && !strcmp(s->env + n - 5, "_FILE")) || !strcmp(s->env, "OUTBOX_NATS_CREDS") ||
            !strcmp(s->env, "OUTBOX_NATS_NKEY_SEED") || !strncmp(s->env, "OUTBOX_NATS_TLS_", 16);
        if (!is_path || !strcmp(s->env, "OUTBOX_NATS_TLS_SERVER_NAME"))
            continue;
        const char *path = *(char **)field(cfg, s);
        if (path[0] != '\0' && !readable_file(path)) {
            fail(err, errlen, "%s: cannot read \"%s\": %s", s->env, path, strerror(errno));
            return -1;
        }
    }
    int auth = (cfg->nats_creds[0] != '\0') + (cfg->nats_nkey_seed[0] != '\0') +
               (cfg->nats_user[0] != '\0') + (cfg->nats_token_file[0] != '\0');
    if (auth > 1) {
        fail(err, errlen,
             "OUTBOX_NATS_CREDS: set only one of OUTBOX_NATS_CREDS, OUTBOX_NATS_NKEY_SEED, "
             "OUTBOX_NATS_USER, OUTBOX_NATS_TOKEN_FILE");
        return -1;
    }
    return 0;
}

static const struct setting *setting_by_flag(const char *name, size_t n)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strlen(settings[i].flag) == n && !strncmp(settings[i].flag, name, n))
            return &settings[i];
    return NULL;
}

bool config_has_flag(const char *name, size_t n)
{
    return setting_by_flag(name, n) != NULL;
}

const char *config_suggest_flag(const char *name, size_t n)
{
    return suggest_closest(name, n, &settings[0].flag, NSETTINGS, sizeof(settings[0]));
}

static int config_load_as(struct relay_config *cfg, bool for_command, int argc, char **argv,
                          char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->for_command = for_command;
    for (size_t i = 0; i < NSETTINGS; i++)
        if (setting_apply(cfg, &settings[i], settings[i].def, err, errlen) < 0)
            return -1;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if (v != NULL && setting_apply(cfg, &settings[i], v, err, errlen) < 0)
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            fail(err, errlen, "unexpected argument \"%s\" (see --help)", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        const struct setting *s = setting_by_flag(name, n);
        if (s == NULL) {
            const char *near = config_suggest_flag(name, n);
            if (near != NULL)
                fail(err, errlen, "unknown option \"--%.*s\"; did you mean --%s?", (int)n, name,
                     near);
            else
                fail(err, errlen, "unknown option \"--%.*s\" (see --help)", (int)n, name);
            return -1;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL) {
            if (s->type == SETTING_BOOL) {
                value = "true";
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                fail(err, errlen, "%s: --%s needs a value", s->env, s->flag);
                return -1;
            }
        }
        if (setting_apply(cfg, s, value, err, errlen) < 0)
            return -1;
    }
    return config_validate(cfg, err, errlen);
}

int config_load(struct relay_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    return config_load_as(cfg, false, argc, argv, err, errlen);
}

int config_load_command(struct relay_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    return config_load_as(cfg, true, argc, argv, err, errlen);
}

void config_free(struct relay_config *cfg)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (settings[i].type == SETTING_STRING) {
            char **slot = field(cfg, &settings[i]);
            free(*slot);
            *slot = NULL;
        }
    }
}

void config_print_help(FILE *out)
{
    fprintf(out, "Usage: outbox-relay [--setting=value ...]       run the relay\n"
                 "       outbox-relay COMMAND [flags] [--setting=value ...]\n"
                 "       outbox-relay --help | --version\n\n"
                 "Relays rows of a PostgreSQL outbox table to NATS JetStream.\n\n"
                 "Commands (outbox-relay COMMAND --help): check, probe, status, requeue, replay, "
                 "audit, migrate\n"
                 "  --check, --probe and --requeue-dead are other names of check, probe and "
                 "requeue --all\n\n"
                 "Settings (environment variable, flag, default; flags win):\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        fprintf(out, "  %-28s --%-22s default: %s\n      %s\n", s->env, s->flag,
                s->def[0] ? s->def : "(empty)", s->help);
    }
}

/* Appends `"ident"` to buf (identifiers are validated, so no quotes to double). */
int config_statement_deadline_ms(const struct relay_config *cfg)
{
    int half_lease = cfg->leader_lease_ms / 2;
    return cfg->pg_timeout_ms < half_lease ? cfg->pg_timeout_ms : half_lease;
}

char *config_table_sql(const struct relay_config *cfg)
{
    struct strbuf b = {0};
    const char *name = cfg->table, *dot = strchr(name, '.');
    if (dot != NULL) {
        sb_put_ident(&b, name, (size_t)(dot - name));
        sb_putc(&b, '.');
        name = dot + 1;
    }
    sb_put_ident(&b, name, strlen(name));
    return sb_take(&b);
}

/* Replaces the password part of URI userinfo ("user:secret@") in place. */
static void redact_uri_userinfo(char *s)
{
    char *p = s;
    while ((p = strstr(p, "://")) != NULL) {
        char *scheme = p;
        while (scheme > s && (isalnum((unsigned char)scheme[-1]) || scheme[-1] == '+'))
            scheme--;
        size_t scheme_len = (size_t)(p - scheme);
        /* nats.c takes a user name without a password for a token: a secret. */
        bool token_scheme = (scheme_len == 4 && !strncasecmp(scheme, "nats", 4)) ||
                            (scheme_len == 3 && !strncasecmp(scheme, "tls", 3));
        p += 3;
        char *end = p + strcspn(p, "/,?# ");
        char *at = NULL;
        for (char *q = p; q < end; q++)
            if (*q == '@')
                at = q;
        if (at == NULL)
            continue;
        char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL && token_scheme && at > p) {
            memmove(p + 3, at, strlen(at) + 1);
            memcpy(p, "***", 3);
            continue;
        }
        if (colon == NULL || colon + 1 == at)
            continue;
        memmove(colon + 4, at, strlen(at) + 1);
        memcpy(colon + 1, "***", 3);
    }
}

void config_redact(const char *conn, char *buf, size_t len)
{
    /* Work on a copy with room to grow: "***" may be longer than a short secret. */
    size_t n = strlen(conn ? conn : "");
    char *tmp = malloc(n * 4 + 16);
    if (tmp == NULL) {
        snprintf(buf, len, "(redacted)");
        return;
    }
    memcpy(tmp, conn ? conn : "", n + 1);
    redact_uri_userinfo(tmp);
    /* key=value form and URI query parameters: password=..., sslpassword=...;
     * libpq allows blanks around the '=' of a key=value pair. */
    const char *keys[] = {"password", "sslpassword"};
    for (size_t k = 0; k < 2; k++) {
        char *p = tmp;
        while ((p = strstr(p, keys[k])) != NULL) {
            char *v = p + strlen(keys[k]);
            if (p != tmp && isalnum((unsigned char)p[-1])) {
                p = v;
                continue;
            }
            while (*v == ' ' || *v == '\t')
                v++;
            if (*v != '=') {
                p = v;
                continue;
            }
            v++;
            while (*v == ' ' || *v == '\t')
                v++;
            char *end;
            if (*v == '\'') {
                end = v + 1;
                while (*end && *end != '\'')
                    end += (*end == '\\' && end[1]) ? 2 : 1;
                if (*end)
                    end++;
            } else {
                end = v + strcspn(v, " &");
            }
            memmove(v + 3, end, strlen(end) + 1);
            memcpy(v, "***", 3);
            p = v + 3;
        }
    }
    snprintf(buf, len, "%s", tmp);
    free(tmp);
}

char *config_read_secret(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fail(err, errlen, "cannot read \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    fclose(f);
    if (n <= 0) {
        free(line);
        fail(err, errlen, "\"%s\" is empty", path);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* Variables Kubernetes injects for a Service: X_SERVICE_HOST, X_SERVICE_PORT[_NAME], X_PORT,
 * X_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]. */
static bool kubernetes_service_link(const char *name, size_t n)
{
    const char *p;
    for (p = name; (p = strstr(p, "_SERVICE_")) != NULL && (size_t)(p - name) < n; p++) {
        if (!strncmp(p, "_SERVICE_HOST", 13) && (size_t)(p - name) + 13 == n)
            return true;
        if (!strncmp(p, "_SERVICE_PORT", 13) && ((size_t)(p - name) + 13 == n || p[13] == '_'))
            return true;
    }
    if (n > 5 && !strncmp(name + n - 5, "_PORT", 5))
        return true;
    for (p = name; (p = strstr(p, "_PORT_")) != NULL && (size_t)(p - name) < n; p++) {
        const char *q = p + 6;
        if (!isdigit((unsigned char)*q))
            continue;
        while (isdigit((unsigned char)*q))
            q++;
        if (!strncmp(q, "_TCP", 4) || !strncmp(q, "_UDP", 4) || !strncmp(q, "_SCTP", 5))
            return true;
    }
    return false;
}

size_t config_unknown_env(char *const *envp,
                          void (*unknown)(void *arg, const char *name, const char *suggestion),
                          void *arg)
{
    size_t found = 0;
    for (char *const *e = envp; e != NULL && *e != NULL; e++) {
        const char *entry = *e;
        if (strncmp(entry, "OUTBOX_", 7) != 0)
            continue;
        size_t n = strcspn(entry, "=");
        bool known = false;
        const char *closest = NULL;
        size_t closest_distance = SIZE_MAX;
        for (size_t i = 0; i < NSETTINGS && !known; i++) {
            size_t len = strlen(settings[i].env);
            known = len == n && !strncmp(entry, settings[i].env, n);
            size_t d = suggest_distance(entry, n, settings[i].env, len);
            if (d < closest_distance) {
                closest_distance = d;
                closest = settings[i].env;
            }
        }
        if (known || kubernetes_service_link(entry, n))
            continue;
        /* A typo: a few letters off, relative to the name's length past "OUTBOX_". */
        size_t allowed = (n - 7) / 4 > 3 ? 3 : (n - 7) / 4;
        if (allowed < 1)
            allowed = 1;
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)n, entry);
        unknown(arg, name, closest_distance <= allowed ? closest : NULL);
        found++;
    }
    return found;
}

bool config_pipelined(const struct relay_config *cfg)
{
    return strcmp(cfg->pipeline, "auto") == 0 && cfg->stream[0] != '\0';
}

const char *config_cloudevents_source(const struct relay_config *cfg)
{
    return strcmp(cfg->cloudevents, "binary") == 0 ? cfg->cloudevents_source : NULL;
}
