/* outbox-relay: the command line, wiring and signals. The work happens in the core library. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>

#include "outbox_relay/cli/cmd.h"
#include "outbox_relay/lib/config.h"
#include "outbox_relay/ops/http.h"
#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/log_events.h"
#include "outbox_relay/ops/probes.h"
#include "outbox_relay/lib/redact.h"
#include "outbox_relay/pipeline/relay.h"
#include "outbox_relay/ops/service_status.h"

struct signals {
    ev_signal term, intr, hup;
    struct relay *relay;
    const struct relay_config *cfg;
    struct service_status *status; /* systemd notifications; NULL when not run by systemd */
};

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct signals *s = w->data;
    log_info("signal received", "{s:s}", "signal", w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
    service_status_stopping(s->status);
    relay_shutdown(s->relay);
}

/* SIGHUP: the log level is the one setting that changes without a restart;
 * it is read again from OUTBOX_LOG_LEVEL_FILE when that names a file. */
static void reload_log_level(const struct signals *s)
{
    const char *path = s->cfg->log_level_file;
    char err[256];
    if (path == NULL || path[0] == '\0') {
        log_info("SIGHUP: nothing to reload (OUTBOX_LOG_LEVEL_FILE is not set)", NULL);
        return;
    }
    char *name = config_read_secret(path, err, sizeof(err));
    enum log_level level;
    if (name != NULL && log_level_parse(name, &level)) {
        log_set_level(level);
        log_info("SIGHUP: log level changed", "{s:s}", "log_level", log_level_name(level));
    } else {
        log_warn("SIGHUP: log level not changed", "{s:s}", "reason",
                 name ? "not one of debug, info, warn, error" : err);
    }
    free(name);
}

/* systemctl reload: RELOADING=1, the reload, READY=1 again. */
static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    const struct signals *s = w->data;
    service_status_reloading(s->status, false);
    reload_log_level(s);
    service_status_reloading(s->status, true);
}

static void log_startup(const struct relay_config *cfg)
{
    char pg[512], nats[512];
    redact_pg_conninfo(cfg->pg_url, pg, sizeof(pg));
    redact_nats_urls(cfg->nats_url, nats, sizeof(nats));
    char libpq[16], libev[16];
    snprintf(libpq, sizeof(libpq), "%d.%d", PQlibVersion() / 10000, PQlibVersion() % 10000);
    snprintf(libev, sizeof(libev), "%d.%d", ev_version_major(), ev_version_minor());
    log_info("outbox-relay starting", "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i}",
             "version", OUTBOX_RELAY_VERSION, "libpq", libpq, "nats_c", nats_GetVersion(), "libev",
             libev, "jansson", jansson_version_str(), "table", cfg->table, "pg_url",
             pg[0] ? pg : "(libpq defaults)", "nats_url", nats, "batch_size", cfg->batch_size,
             "max_inflight", cfg->max_inflight);
}

/*
 * libev's answer to a failed system call is abort(), and if this returns it
 * goes on with what the call did not create. It fails when the relay starts
 * with too few file descriptors (ulimit -n, systemd's LimitNOFILE) for its
 * signal pipe: a bad setting, so exit 2 with the cause, like the others.
 */
static void on_libev_error(const char *what)
{
    const char *cause = strerror(errno);
    log_error("cannot start", "{s:s, s:s}", "error", what, "cause", cause);
    fprintf(stderr, "outbox-relay: %s: %s (the open-files limit: ulimit -n, LimitNOFILE)\n", what,
            cause);
    exit(2);
}

static int run(const struct relay_config *cfg)
{
    char err[512];
    ev_set_syserr_cb(on_libev_error);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (loop == NULL) {
        log_error("cannot start", "{s:s}", "error", "no event loop backend (libev)");
        fprintf(stderr, "outbox-relay: no event loop backend (libev)\n");
        return 2;
    }
    struct relay *relay = relay_create(loop, cfg, err, sizeof(err));
    if (relay == NULL) {
        log_error("cannot start", "{s:s}", "error", err);
        fprintf(stderr, "outbox-relay: %s\n", err);
        return 2;
    }
    struct http_route routes[PROBES_ROUTES];
    struct http_server *http = NULL;
    probes_routes(relay, routes);
    if (cfg->http_addr[0] != '\0' && (http = http_start(loop, cfg->http_addr, routes, PROBES_ROUTES,
                                                        err, sizeof(err))) == NULL) {
        log_error("cannot start", "{s:s}", "error", err);
        fprintf(stderr, "outbox-relay: OUTBOX_HTTP_ADDR: %s\n", err);
        relay_destroy(relay);
        return 2;
    }

    struct signals sig = {.relay = relay, .cfg = cfg};
    ev_signal_init(&sig.term, on_stop_signal, SIGTERM);
    ev_signal_init(&sig.intr, on_stop_signal, SIGINT);
    ev_signal_init(&sig.hup, on_hup, SIGHUP);
    sig.term.data = sig.intr.data = sig.hup.data = &sig;
    ev_signal_start(loop, &sig.term);
    ev_signal_start(loop, &sig.intr);
    ev_signal_start(loop, &sig.hup);

    relay_start(relay);
    sig.status = service_status_start(loop, relay);
    ev_run(loop, 0);
    service_status_stop(sig.status);

    int rc = relay_exit_code(relay);
    http_stop(http);
    relay_destroy(relay);
    log_info("stopped", "{s:i}", "exit_code", rc);
    return rc;
}

extern char **environ;

static void warn_unknown_variable(void *arg, const char *name, const char *suggestion)
{
    if (suggestion != NULL)
        log_warn(LOG_MSG_UNKNOWN_SETTING, "{s:s, s:s}", "variable", name, "did_you_mean",
                 suggestion);
    else
        log_warn(LOG_MSG_UNKNOWN_SETTING, "{s:s}", "variable", name);
}

/* --help and --version answer whatever else is on the line, before any setting is checked. */
static bool asks_for(int argc, char **argv, const char *flag, const char *short_flag)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], flag) || !strcmp(argv[i], short_flag))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    struct relay_config cfg;
    char err[512];
    signal(SIGPIPE, SIG_IGN);

    /* `outbox-relay check|probe|requeue|status|replay|audit|migrate ...` and the older
     * --check, --probe, --requeue-dead: operator commands. */
    int cmd_rc = cmd_main(argc, argv);
    if (cmd_rc >= 0)
        return cmd_rc;
    if (asks_for(argc, argv, "--help", "-h")) {
        config_print_help(stdout);
        return 0;
    }
    if (asks_for(argc, argv, "--version", "-V")) {
        printf("outbox-relay %s (libpq %d, nats.c %s, libev %d.%d, jansson %s)\n",
               OUTBOX_RELAY_VERSION, PQlibVersion(), nats_GetVersion(), ev_version_major(),
               ev_version_minor(), jansson_version_str());
        return 0;
    }
    if (config_load(&cfg, argc, argv, err, sizeof(err)) < 0) {
        fprintf(stderr, "outbox-relay: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    log_setup(cfg.log_level, cfg.log_format);
    log_startup(&cfg);
    config_unknown_env(environ, warn_unknown_variable, NULL);
    int rc = run(&cfg);
    config_free(&cfg);
    return rc;
}
