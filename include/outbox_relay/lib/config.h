/* Settings: OUTBOX_* environment variables and --kebab-case flags, validated. */
#ifndef OUTBOX_RELAY_CONFIG_H
#define OUTBOX_RELAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "outbox_relay/lib/log.h"

/* The settings only: what to do (run, a command, --help) is the command line's business. */
struct relay_config {
    /* Loaded for an operator command: the daemon's stream management rules do not apply. */
    bool for_command;

    char *pg_url;          /* libpq conninfo or URI; "" = libpq defaults / PG* env */
    char *nats_url;        /* comma-separated server list */
    char *table;           /* [schema.]table, validated identifier(s) */
    char *channel;         /* LISTEN channel */
    char *stream;          /* stream to create when missing; "" = don't manage */
    char *stream_subjects; /* comma-separated subjects for a created stream */
    char *allow_subjects;  /* other subject patterns rows may publish to, comma-separated */

    int batch_size;            /* rows per claim query */
    int max_inflight;          /* rows held by the relay (publishing or waiting on their key) */
    int max_inflight_bytes;    /* payload + header bytes held by the relay */
    int poll_interval_ms;      /* fallback scan when no notification arrives */
    int tail_poll_us;          /* while rows flow, the pause between tail looks; 0: adaptive */
    int mark_gather_ms;        /* how long published outcomes wait to be recorded together */
    int publish_timeout_ms;    /* PubAck wait per message */
    int retry_base_ms;         /* backoff for the first retry */
    int retry_max_ms;          /* backoff cap */
    int max_attempts;          /* attempts before a row goes dead */
    char *dead_letter_subject; /* dead rows are also published here; "" = off */
    bool dead_holds_key;       /* a dead row keeps holding later rows of its ordering_key */
    int shutdown_timeout_ms;   /* how long SIGTERM waits for in-flight acks */
    int stall_timeout_ms;      /* /healthz fails when due work made no progress this long */
    int leader_retry_ms;       /* how often a standby tries to become leader */
    int leader_lease_ms;       /* a leader silent this long is ended by a standby */
    int nats_lost_ms;          /* a leader without NATS this long gives up leadership */
    int pg_timeout_ms;         /* connect and query deadline on PostgreSQL */
    int reconnect_max_ms;      /* cap of the reconnect backoff */
    int metrics_interval_ms;   /* how often pending count / oldest age are sampled */

    char *http_addr; /* [host]:port for /healthz /readyz /metrics; "" disables */
    enum log_level log_level;
    enum log_format log_format;
    char *log_level_file; /* SIGHUP reads the log level from this file, if set */

    char *nats_creds;           /* path of a .creds file (JWT + nkey seed) */
    char *nats_nkey_seed;       /* path of a file holding an nkey seed */
    char *nats_user;            /* user name; password from nats_password_file */
    char *nats_password_file;   /* path of a file holding the password */
    char *nats_token_file;      /* path of a file holding a token */
    char *nats_tls_ca;          /* CA bundle; setting any TLS option enables TLS */
    char *nats_tls_cert;        /* client certificate */
    char *nats_tls_key;         /* client key */
    char *nats_tls_server_name; /* expected server name, when it differs from the URL host */

    /* Used only when the relay creates OUTBOX_STREAM (see stream_spec.h). */
    int stream_replicas;
    char *stream_storage;          /* file | memory */
    char *stream_max_age;          /* duration, "0" = unlimited */
    char *stream_duplicate_window; /* duration */

    int64_t retention_s;       /* published rows older than this are deleted; 0 = never */
    int retention_batch;       /* rows per retention DELETE */
    int retention_interval_ms; /* how often retention looks for old rows */

    char *pipeline; /* auto | off: pipelining a key's publishes (see pub_chain.h) */

    char *cloudevents;        /* off | binary: CloudEvents ce- headers (see cloudevents.h) */
    char *cloudevents_source; /* ce-source; required with binary */
};

/* Whether a key's publishes are pipelined: OUTBOX_PIPELINE=auto and OUTBOX_STREAM set. */
bool config_pipelined(const struct relay_config *cfg);

/* ce-source when OUTBOX_CLOUDEVENTS=binary; NULL when messages carry no CloudEvents headers. */
const char *config_cloudevents_source(const struct relay_config *cfg);

/*
 * Fill cfg from defaults, then OUTBOX_* variables, then flags (flags win),
 * and validate. On error, writes one line naming the setting into err and
 * returns -1. cfg must be released with config_free() either way.
 */
int config_load(struct relay_config *cfg, int argc, char **argv, char *err, size_t errlen);
/* The same for an operator command, which creates no stream: OUTBOX_STREAM alone is fine. */
int config_load_command(struct relay_config *cfg, int argc, char **argv, char *err, size_t errlen);
void config_free(struct relay_config *cfg);

/* Whether --name[0..n) is a setting's flag; the nearest flag to a mistyped one, or NULL. */
bool config_has_flag(const char *name, size_t n);
const char *config_suggest_flag(const char *name, size_t n);

/* --help: every setting with its variable, flag, default and meaning. */
void config_print_help(FILE *out);

/*
 * The deadline of each statement the relay runs (ms): OUTBOX_PG_TIMEOUT_MS,
 * but at most half the lease. A standby ends a leader session whose
 * statement has run longer than the lease; a live leader never lets one run
 * that long, so only a frozen or vanished leader is ended.
 */
int config_statement_deadline_ms(const struct relay_config *cfg);

/* The table name quoted for SQL ("schema"."table"), malloc'ed (caller frees); NULL when out of
 * memory. */
char *config_table_sql(const struct relay_config *cfg);

/*
 * Free text that may quote a connection string (a nats.c error message),
 * with any password it recognises replaced by "***". The settings
 * themselves are shown with redact.h, which parses them as libpq and nats.c do.
 */
void config_redact(const char *conn, char *buf, size_t len);

/*
 * Calls unknown(arg, name, suggestion) for each OUTBOX_* variable of envp
 * ("NAME=value", NULL-terminated, e.g. environ) that no setting reads, in
 * order; suggestion is the closest setting's variable when the name looks
 * like a typo of it, else NULL. Kubernetes service links of a Service whose
 * name starts with "outbox" (OUTBOX_RELAY_SERVICE_HOST, OUTBOX_RELAY_PORT_9841_TCP, ...)
 * are not settings and are skipped. Returns how many were found.
 */
size_t config_unknown_env(char *const *envp,
                          void (*unknown)(void *arg, const char *name, const char *suggestion),
                          void *arg);

/* Reads a secret file's first line (trailing newline removed). NULL + err on failure. */
char *config_read_secret(const char *path, char *err, size_t errlen);

#endif
