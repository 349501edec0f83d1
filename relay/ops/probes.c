/* /healthz (progress), /readyz (both ends connected), /metrics (Prometheus text). */
#include "outbox_relay/ops/probes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/ops/process_stats.h"

static void probes_text(struct http_reply *reply, bool ok, const char *why)
{
    reply->status = ok ? 200 : 503;
    reply->content_type = "text/plain; charset=utf-8";
    if (asprintf(&reply->body, "%s\n", ok ? "ok" : why) < 0)
        reply->body = NULL;
    reply->body_len = reply->body ? strlen(reply->body) : 0;
}

static void probes_healthz(void *arg, struct http_reply *reply)
{
    char why[200] = "";
    struct relay_facts f;
    relay_facts(arg, &f);
    bool ok = health_healthy(&f, why, sizeof(why));
    probes_text(reply, ok, why);
}

static void probes_readyz(void *arg, struct http_reply *reply)
{
    char why[200] = "";
    struct relay_facts f;
    relay_facts(arg, &f);
    bool ok = health_ready(&f, why, sizeof(why));
    probes_text(reply, ok, why);
}

static void probes_metrics(void *arg, struct http_reply *reply)
{
    size_t len = 0;
    struct metrics snapshot = *relay_metrics(arg);
    process_stats_read(&snapshot.process);
    reply->body = metrics_render(&snapshot, OUTBOX_RELAY_VERSION, &len);
    reply->status = reply->body ? 200 : 500;
    reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
    reply->body_len = reply->body ? len : 0;
}

void probes_routes(struct relay *r, struct http_route *routes)
{
    routes[0] = (struct http_route){"/healthz", probes_healthz, r};
    routes[1] = (struct http_route){"/readyz", probes_readyz, r};
    routes[2] = (struct http_route){"/metrics", probes_metrics, r};
}
