/* Operator subcommands (`outbox-relay <command> [flags]`): shared parsing, connections, output. */
#ifndef OUTBOX_RELAY_CMD_H
#define OUTBOX_RELAY_CMD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/lib/util.h"

/* Exit codes every command uses; scripts rely on them. */
enum cmd_exit {
    CMD_OK = 0,       /* done; nothing wrong found */
    CMD_FINDINGS = 1, /* done, and something needs attention (audit missing, replay failures) */
    CMD_USAGE = 2,    /* bad flags or settings */
    CMD_CONNECT = 3,  /* PostgreSQL or NATS could not be reached or refused a statement */
};

#define CMD_MAX_OPTIONS 16

/* A flag of one command (the settings of the daemon are accepted too). */
struct cmd_option {
    const char *name; /* "dry-run" for --dry-run */
    bool takes_value; /* --name=VALUE or --name VALUE */
    const char *help;
};

struct cmd_ctx {
    const char *name;                    /* the command */
    struct relay_config cfg;             /* the daemon's settings: env, then flags */
    bool json;                           /* --json: one JSON document on stdout */
    const char *values[CMD_MAX_OPTIONS]; /* by option index; "" for a given flag; NULL absent */
    const struct cmd_option *options;
    const char *positional; /* the word after the command's name, if it takes one (probe's PATH) */
    FILE *out;
    /* The exit code for the last failed statement: CMD_USAGE when PostgreSQL
       refused a value the operator gave (a malformed --created-from), else CMD_CONNECT. */
    int pg_failure;
};

/*
 * Runs `outbox-relay <command> ...` when argv[1] names a command, or argv
 * holds one of the older flags that name one (--check, --probe,
 * --requeue-dead), and returns its exit code; returns -1 otherwise (the
 * daemon's own parsing applies).
 */
int cmd_main(int argc, char **argv);

/* The value of --name (NULL when absent, "" for a flag given without value). */
const char *cmd_value(const struct cmd_ctx *ctx, const char *name);
bool cmd_flag(const struct cmd_ctx *ctx, const char *name);

/* Prints "outbox-relay <cmd>: <message>" on stderr and returns code. */
int cmd_fail(const struct cmd_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A blocking connection with the daemon's connection settings; the session
 * is named "outbox-relay <command>" (application_name) so status never takes
 * it for a relay. NULL after printing why (exit with CMD_CONNECT).
 */
PGconn *cmd_pg_connect(const struct cmd_ctx *ctx);

/*
 * Runs one statement with text parameters; prints the error and returns NULL
 * unless it succeeded (PGRES_TUPLES_OK or PGRES_COMMAND_OK).
 */
PGresult *cmd_pg_exec(struct cmd_ctx *ctx, PGconn *conn, const char *sql, int nparams,
                      const char *const *params);

/* One statement on a connection of its own (connect, run, close); NULL as cmd_pg_exec. */
PGresult *cmd_pg_once(struct cmd_ctx *ctx, const char *sql, int nparams, const char *const *params);

/*
 * A synchronous NATS connection and JetStream context with the daemon's NATS
 * settings (servers, credentials, TLS). -1 after printing why.
 */
int cmd_nats_connect(const struct cmd_ctx *ctx, natsConnection **nc, jsCtx **js);

/*
 * Row selection shared by requeue, replay and audit: --ids 1,2,3,
 * --id-range A-B, --created-from/--created-to (timestamps PostgreSQL
 * reads). Appends " AND ..." conditions on alias o to where (params are
 * numbered from *nparams + 1 and appended to params). -1 on a malformed value.
 */
int cmd_select_rows(const struct cmd_ctx *ctx, struct strbuf *where, const char **params,
                    int *nparams);

/* Prints a JSON value (compact, one line) to ctx->out and releases it. */
void cmd_print_json(const struct cmd_ctx *ctx, json_t *doc);

/* The commands. */
int cmd_status(struct cmd_ctx *ctx);
int cmd_requeue(struct cmd_ctx *ctx);
int cmd_replay(struct cmd_ctx *ctx);
int cmd_audit(struct cmd_ctx *ctx);
int cmd_migrate(struct cmd_ctx *ctx);
int cmd_check(struct cmd_ctx *ctx);
int cmd_probe(struct cmd_ctx *ctx);

extern const struct cmd_option cmd_status_options[];
extern const struct cmd_option cmd_requeue_options[];
extern const struct cmd_option cmd_replay_options[];
extern const struct cmd_option cmd_audit_options[];
extern const struct cmd_option cmd_migrate_options[];
extern const struct cmd_option cmd_check_options[];
extern const struct cmd_option cmd_probe_options[];

#endif
