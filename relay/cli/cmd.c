/* Operator subcommands: dispatch, flag parsing on top of the settings table, connections. */
#include "outbox_relay/cli/cmd.h"
#include "outbox_relay/nats/nats_options.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/pg/pg_connect.h"
#include "outbox_relay/lib/suggest.h"

struct cmd_def {
    const char *name;
    const char *summary;
    const struct cmd_option *options;
    int (*run)(struct cmd_ctx *ctx);
    bool daemon_rules;      /* the settings are validated as the daemon's (check, probe) */
    const char *positional; /* the one word the command takes after its name ("PATH"), or NULL */
};

static const struct cmd_def commands[] = {
    {"status", "counts, oldest unfinished row, dead rows by reason, held keys, leader",
     cmd_status_options, cmd_status, false, NULL},
    {"requeue", "put dead (and failed) rows back to pending, by filter", cmd_requeue_options,
     cmd_requeue, false, NULL},
    {"replay", "publish already-published rows again", cmd_replay_options, cmd_replay, false, NULL},
    {"audit", "check published rows against the stream", cmd_audit_options, cmd_audit, false, NULL},
    {"migrate", "create or upgrade the outbox schema under OUTBOX_TABLE/OUTBOX_CHANNEL",
     cmd_migrate_options, cmd_migrate, false, NULL},
    {"check",
     "validate the settings, reach both ends, verify the table, privileges and streams; "
     "changes nothing",
     cmd_check_options, cmd_check, true, NULL},
    {"probe",
     "GET PATH (default /healthz) from OUTBOX_HTTP_ADDR: exit 0 on 200, 1 otherwise (a container "
     "HEALTHCHECK without curl or a shell)",
     cmd_probe_options, cmd_probe, true, "PATH"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/*
 * The older flags, kept as other names of commands: each runs the command
 * with the same result. --check and --requeue-dead may stand anywhere among
 * the settings; --probe only first, as its PATH follows it.
 */
static const struct cmd_alias {
    const char *flag;
    const char *command;
    const char *extra; /* a flag of the command the alias implies, or NULL */
    bool anywhere;
} aliases[] = {
    {"--check", "check", NULL, true},
    {"--probe", "probe", NULL, false},
    /* Every dead row but the permanent ones, which would only die again: requeue --all. */
    {"--requeue-dead", "requeue", "--all", true},
};
#define NALIASES (sizeof(aliases) / sizeof(aliases[0]))

static void cmd_usage(const struct cmd_def *c, FILE *out)
{
    fprintf(out, "Usage: outbox-relay %s%s%s%s [flags] [--setting=value ...]\n\n%s.\n\n", c->name,
            c->positional ? " [" : "", c->positional ? c->positional : "", c->positional ? "]" : "",
            c->summary);
    fprintf(out, "  --%-24s %s\n", "json", "print one JSON document instead of text");
    for (const struct cmd_option *o = c->options; o->name != NULL; o++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "%s%s", o->name, o->takes_value ? "=VALUE" : "");
        fprintf(out, "  --%-24s %s\n", flag, o->help);
    }
    fprintf(out, "\nEvery setting of the daemon applies (OUTBOX_* or --flag; see outbox-relay "
                 "--help).\nExit codes: 0 ok, 1 findings, 2 usage or settings, 3 PostgreSQL or "
                 "NATS unreachable or refusing.\n");
}

static int cmd_option_index(const struct cmd_option *opts, const char *name, size_t n)
{
    for (int i = 0; opts[i].name != NULL; i++)
        if (strlen(opts[i].name) == n && !strncmp(opts[i].name, name, n))
            return i;
    return -1;
}

/* The daemon logs unknown variables; a command says so on stderr, and goes on. */
static void cmd_warn_unknown_variable(void *arg, const char *name, const char *suggestion)
{
    const struct cmd_ctx *ctx = arg;
    fprintf(stderr, "outbox-relay %s: %s is not a setting (ignored)", ctx->name, name);
    if (suggestion != NULL)
        fprintf(stderr, "; did you mean %s?", suggestion);
    fputc('\n', stderr);
}

static size_t cmd_option_count(const struct cmd_def *c)
{
    size_t n = 0;
    while (c->options[n].name != NULL)
        n++;
    return n;
}

static int cmd_run(const struct cmd_def *c, int argc, char **argv);

/* The alias among argv[1..], or NULL; *at is its index. */
static const struct cmd_alias *cmd_find_alias(int argc, char **argv, int *at)
{
    for (int i = 1; i < argc; i++) {
        for (size_t k = 0; k < NALIASES; k++) {
            if (strcmp(argv[i], aliases[k].flag) == 0 && (i == 1 || aliases[k].anywhere)) {
                *at = i;
                return &aliases[k];
            }
        }
    }
    return NULL;
}

static const struct cmd_def *cmd_by_name(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(name, commands[i].name))
            return &commands[i];
    return NULL;
}

int cmd_main(int argc, char **argv)
{
    int at = 0;
    const struct cmd_alias *alias = argc > 1 ? cmd_find_alias(argc, argv, &at) : NULL;
    if (alias != NULL) {
        /* outbox-relay [settings] --alias [settings] = outbox-relay command [extra] [settings] */
        char **args = calloc((size_t)argc + 2, sizeof(*args));
        if (args == NULL) {
            fprintf(stderr, "outbox-relay: out of memory\n");
            return CMD_USAGE;
        }
        int n = 0;
        args[n++] = argv[0];
        args[n++] = (char *)alias->command;
        if (alias->extra != NULL)
            args[n++] = (char *)alias->extra;
        for (int i = 1; i < argc; i++)
            if (i != at)
                args[n++] = argv[i];
        int rc = cmd_run(cmd_by_name(alias->command), n, args);
        free(args);
        return rc;
    }
    if (argc < 2 || argv[1][0] == '-')
        return -1;
    const struct cmd_def *c = cmd_by_name(argv[1]);
    if (c == NULL) {
        /* The daemon takes no words, only flags: a word is a command, maybe mistyped. */
        const char *near = suggest_closest(argv[1], strlen(argv[1]), &commands[0].name, NCOMMANDS,
                                           sizeof(commands[0]));
        if (near != NULL) {
            fprintf(stderr, "outbox-relay: unknown command \"%s\"; did you mean %s?\n", argv[1],
                    near);
        } else {
            fprintf(stderr, "outbox-relay: unknown command \"%s\"; commands:", argv[1]);
            for (size_t i = 0; i < NCOMMANDS; i++)
                fprintf(stderr, " %s", commands[i].name);
            fprintf(stderr, " (see --help)\n");
        }
        return CMD_USAGE;
    }
    return cmd_run(c, argc, argv);
}

static int cmd_run(const struct cmd_def *c, int argc, char **argv)
{
    struct cmd_ctx ctx = {.name = c->name, .options = c->options, .out = stdout};
    /* The command's flags are taken out; the rest goes to the settings parser. */
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    if (rest == NULL)
        return CMD_USAGE;
    int nrest = 0;
    rest[nrest++] = argv[0];
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            cmd_usage(c, stdout);
            free(rest);
            return CMD_OK;
        }
        if (!strcmp(arg, "--json")) {
            ctx.json = true;
            continue;
        }
        if (c->positional != NULL && ctx.positional == NULL && strncmp(arg, "--", 2) != 0) {
            ctx.positional = arg;
            continue;
        }
        int idx = -1;
        const char *eq = NULL;
        if (!strncmp(arg, "--", 2)) {
            eq = strchr(arg + 2, '=');
            idx = cmd_option_index(c->options, arg + 2,
                                   eq ? (size_t)(eq - arg - 2) : strlen(arg + 2));
        }
        if (idx < 0) {
            /* Not the command's and not a setting: say which flag was meant. */
            size_t n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
            const char *near = NULL;
            if (!strncmp(arg, "--", 2) && !config_has_flag(arg + 2, n) &&
                (near = suggest_closest(arg + 2, n, &c->options[0].name, cmd_option_count(c),
                                        sizeof(c->options[0]))) != NULL) {
                fprintf(stderr, "outbox-relay %s: unknown flag \"--%.*s\"; did you mean --%s?\n",
                        c->name, (int)n, arg + 2, near);
                free(rest);
                return CMD_USAGE;
            }
            rest[nrest++] = argv[i];
            continue;
        }
        if (!c->options[idx].takes_value) {
            if (eq != NULL) {
                fprintf(stderr, "outbox-relay %s: --%s takes no value\n", c->name,
                        c->options[idx].name);
                free(rest);
                return CMD_USAGE;
            }
            ctx.values[idx] = "";
        } else if (eq != NULL) {
            ctx.values[idx] = eq + 1;
        } else if (i + 1 < argc) {
            ctx.values[idx] = argv[++i];
        } else {
            fprintf(stderr, "outbox-relay %s: --%s needs a value\n", c->name, c->options[idx].name);
            free(rest);
            return CMD_USAGE;
        }
    }
    char err[512];
    int rc;
    int loaded = c->daemon_rules ? config_load(&ctx.cfg, nrest, rest, err, sizeof(err))
                                 : config_load_command(&ctx.cfg, nrest, rest, err, sizeof(err));
    if (loaded < 0) {
        rc = cmd_fail(&ctx, CMD_USAGE, "%s", err);
    } else {
        log_setup(LOG_WARN, ctx.cfg.log_format);
        config_unknown_env(environ, cmd_warn_unknown_variable, &ctx);
        rc = c->run(&ctx);
    }
    config_free(&ctx.cfg);
    free(rest);
    return rc;
}

const char *cmd_value(const struct cmd_ctx *ctx, const char *name)
{
    int i = cmd_option_index(ctx->options, name, strlen(name));
    return i < 0 ? NULL : ctx->values[i];
}

bool cmd_flag(const struct cmd_ctx *ctx, const char *name)
{
    return cmd_value(ctx, name) != NULL;
}

int cmd_fail(const struct cmd_ctx *ctx, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    fprintf(stderr, "outbox-relay %s: %s\n", ctx->name, msg ? msg : "out of memory");
    /* --json promises one JSON document on stdout, failures included. */
    if (ctx->json)
        cmd_print_json(ctx, json_pack("{s:s, s:s, s:i}", "command", ctx->name, "error",
                                      msg ? msg : "out of memory", "exit_code", code));
    free(msg);
    return code;
}

PGconn *cmd_pg_connect(const struct cmd_ctx *ctx)
{
    char err[512];
    PGconn *conn = pg_connect_blocking(&ctx->cfg, err, sizeof(err));
    if (conn == NULL) {
        cmd_fail(ctx, CMD_CONNECT, "cannot connect to PostgreSQL (OUTBOX_PG_URL): %s", err);
        return NULL;
    }
    const char *params[] = {ctx->name};
    PQclear(PQexecParams(conn,
                         "SELECT set_config('application_name', 'outbox-relay ' || $1, false)", 1,
                         NULL, params, NULL, NULL, 0));
    return conn;
}

PGresult *cmd_pg_exec(struct cmd_ctx *ctx, PGconn *conn, const char *sql, int nparams,
                      const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    /* Class 22, data exception: a value the operator gave could not be read. */
    ctx->pg_failure = state != NULL && strncmp(state, "22", 2) == 0 ? CMD_USAGE : CMD_CONNECT;
    /* 42P01, undefined_table: most often a database nobody migrated yet. */
    bool no_table = state != NULL && strcmp(state, "42P01") == 0;
    cmd_fail(ctx, ctx->pg_failure, "PostgreSQL: %s%s", msg ? msg : PQerrorMessage(conn),
             no_table ? " (create the table with `outbox-relay migrate`)" : "");
    PQclear(res);
    return NULL;
}

PGresult *cmd_pg_once(struct cmd_ctx *ctx, const char *sql, int nparams, const char *const *params)
{
    PGconn *conn = cmd_pg_connect(ctx);
    ctx->pg_failure = CMD_CONNECT;
    if (conn == NULL)
        return NULL;
    PGresult *res = cmd_pg_exec(ctx, conn, sql, nparams, params);
    PQfinish(conn);
    return res;
}

/* The relay's NATS settings, for a short synchronous session. */
int cmd_nats_connect(const struct cmd_ctx *ctx, natsConnection **nc, jsCtx **js)
{
    char err[640];
    if (nats_connect_once(&ctx->cfg, ctx->name, nc, js, err, sizeof(err)) < 0) {
        cmd_fail(ctx, CMD_CONNECT, "%s", err);
        return -1;
    }
    return 0;
}

static bool cmd_is_id_list(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s) && *s != ',' && *s != ' ')
            return false;
    return true;
}

int cmd_select_rows(const struct cmd_ctx *ctx, struct strbuf *where, const char **params,
                    int *nparams)
{
    const char *ids = cmd_value(ctx, "ids"), *range = cmd_value(ctx, "id-range");
    const char *from = cmd_value(ctx, "created-from"), *to = cmd_value(ctx, "created-to");
    if (ids != NULL) {
        if (!cmd_is_id_list(ids))
            return cmd_fail(ctx, -1, "--ids: \"%s\" is not a comma-separated list of ids", ids);
        params[*nparams] = ids;
        sb_printf(where, " AND o.id = ANY (string_to_array(replace($%d, ' ', ''), ',')::bigint[])",
                  ++*nparams);
    }
    if (range != NULL) {
        char *end;
        long long a = strtoll(range, &end, 10), b = 0;
        bool ok = end != range && *end == '-';
        if (ok) {
            const char *p = end + 1;
            b = strtoll(p, &end, 10);
            ok = end != p && *end == '\0' && a <= b && a >= 0;
        }
        if (!ok)
            return cmd_fail(ctx, -1, "--id-range: \"%s\" is not FIRST-LAST (e.g. 100-250)", range);
        sb_printf(where, " AND o.id BETWEEN %lld AND %lld", a, b);
    }
    if (from != NULL) {
        params[*nparams] = from;
        sb_printf(where, " AND o.created_at >= $%d::timestamptz", ++*nparams);
    }
    if (to != NULL) {
        params[*nparams] = to;
        sb_printf(where, " AND o.created_at < $%d::timestamptz", ++*nparams);
    }
    return where->oom ? cmd_fail(ctx, -1, "out of memory") : 0;
}

void cmd_print_json(const struct cmd_ctx *ctx, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text != NULL) {
        fprintf(ctx->out, "%s\n", text);
        free(text);
    }
    json_decref(doc);
}
