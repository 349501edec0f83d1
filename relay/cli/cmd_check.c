/* `outbox-relay check` (also `--check`): the settings, both ends, the table and the stream; changes
 * nothing. */
#include "outbox_relay/cli/admin.h"
#include "outbox_relay/cli/cmd.h"

const struct cmd_option cmd_check_options[] = {
    {NULL, false, NULL},
};

int cmd_check(struct cmd_ctx *ctx)
{
    return admin_check(&ctx->cfg, ctx->out, ctx->json) == 0 ? CMD_OK : CMD_FINDINGS;
}
