/* `outbox-relay probe [PATH]` (also `--probe`): the binary asks its own HTTP endpoint. */
#include "outbox_relay/cli/cmd.h"
#include "outbox_relay/ops/http_probe.h"

const struct cmd_option cmd_probe_options[] = {
    {NULL, false, NULL},
};

/* A container HEALTHCHECK reads 0 as healthy and 1 as not: nothing else is returned for an
 * answer or its absence. */
#define PROBE_UNHEALTHY  1
#define PROBE_TIMEOUT_MS 3000

int cmd_probe(struct cmd_ctx *ctx)
{
    const char *path = ctx->positional != NULL ? ctx->positional : "/healthz";
    if (path[0] != '/')
        return cmd_fail(ctx, CMD_USAGE, "\"%s\" is not a path (e.g. /readyz)", path);
    if (ctx->cfg.http_addr[0] == '\0')
        return cmd_fail(ctx, CMD_USAGE, "OUTBOX_HTTP_ADDR is empty: nothing to probe");
    char err[512];
    int status = http_probe(ctx->cfg.http_addr, path, PROBE_TIMEOUT_MS, err, sizeof(err));
    if (status < 0)
        return cmd_fail(ctx, PROBE_UNHEALTHY, "%s", err);
    if (status != 200)
        return cmd_fail(ctx, PROBE_UNHEALTHY, "GET %s: %d", path, status);
    return CMD_OK;
}
