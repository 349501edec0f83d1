/* outbox-relay: flags, wiring and signals. The work happens in the core library. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>

#include "outbox_relay/admin.h"
#include "outbox_relay/cmd.h"
#include "outbox_relay/config.h"
#include "outbox_relay/http.h"
#include "outbox_relay/log.h"
#include "outbox_relay/probes.h"
#include "outbox_relay/relay.h"

struct signals {
    ev_signal term, intr, hup;
    struct relay *relay;
    const struct relay_config *cfg;
};

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct signals *s = w->data;
    log_info("signal received", "{s:s}", "signal", w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
    relay_shutdown(s->relay);
}

/* SIGHUP: the log level is the one setting that changes without a restart;
 * it is read again from OUTBOX_LOG_LEVEL_FILE when that names a file. */
static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    const struct signals *s = w->data;
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

static void log_startup(const struct relay_config *cfg)
{
    char pg[512], nats[512];
    config_redact(cfg->pg_url, pg, sizeof(pg));
    config_redact(cfg->nats_url, nats, sizeof(nats));
    char libpq[16], libev[16];
    snprintf(libpq, sizeof(libpq), "%d.%d", PQlibVersion() / 10000, PQlibVersion() % 10000);
    snprintf(libev, sizeof(libev), "%d.%d", ev_version_major(), ev_version_minor());
    log_info("outbox-relay starting", "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i}",
             "version", OUTBOX_RELAY_VERSION, "libpq", libpq, "nats_c", nats_GetVersion(), "libev",
             libev, "jansson", jansson_version_str(), "table", cfg->table, "pg_url",
             pg[0] ? pg : "(libpq defaults)", "nats_url", nats, "batch_size", cfg->batch_size,
             "max_inflight", cfg->max_inflight);
}

static int run(const struct relay_config *cfg)
{
    char err[512];
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct relay *relay = relay_create(loop, cfg, err, sizeof(err));
    if (relay == NULL) {
        log_error("cannot start", "{s:s}", "error", err);
        fprintf(stderr, "outbox-relay: %s\n", err);
        return 2;
    }
    struct http_route routes[PROBES_ROUTES];
    struct http_server *http = NULL;
    probes_routes(relay, routes);
    if (cfg->http_addr[0] != '\0' &&
        http_start(&http, loop, cfg->http_addr, routes, PROBES_ROUTES, err, sizeof(err)) < 0) {
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
    ev_run(loop, 0);

    int rc = relay_exit_code(relay);
    http_stop(http);
    relay_destroy(relay);
    log_info("stopped", "{s:i}", "exit_code", rc);
    return rc;
}

int main(int argc, char **argv)
{
    struct relay_config cfg;
    char err[512];
    signal(SIGPIPE, SIG_IGN);
    /* `outbox-relay status|requeue|replay|audit|migrate ...`: operator commands. */
    int cmd_rc = cmd_main(argc, argv);
    if (cmd_rc >= 0)
        return cmd_rc;
    if (config_load(&cfg, argc, argv, err, sizeof(err)) < 0) {
        fprintf(stderr, "outbox-relay: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    int rc = 0;
    switch (cfg.action) {
    case CONFIG_HELP:
        config_print_help(stdout);
        break;
    case CONFIG_VERSION:
        printf("outbox-relay %s (libpq %d, nats.c %s, libev %d.%d, jansson %s)\n",
               OUTBOX_RELAY_VERSION, PQlibVersion(), nats_GetVersion(), ev_version_major(),
               ev_version_minor(), jansson_version_str());
        break;
    case CONFIG_CHECK:
        log_setup(LOG_WARN, cfg.log_format);
        rc = admin_check(&cfg, stderr);
        break;
    case CONFIG_REQUEUE_DEAD:
        log_setup(LOG_WARN, cfg.log_format);
        rc = admin_requeue_dead(&cfg, stdout);
        break;
    case CONFIG_RUN:
        log_setup(cfg.log_level, cfg.log_format);
        log_startup(&cfg);
        rc = run(&cfg);
        break;
    }
    config_free(&cfg);
    return rc;
}
