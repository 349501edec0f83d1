/* One-shot commands: --check and --requeue-dead. Blocking; never on the relay's loop. */
#ifndef OUTBOX_RELAY_ADMIN_H
#define OUTBOX_RELAY_ADMIN_H

#include <stdio.h>

#include "outbox_relay/config.h"

/*
 * Connects to PostgreSQL and NATS, verifies the table (columns, indexes are
 * not required) and, when OUTBOX_STREAM is set, that the stream exists or
 * can be created. Prints one line per check to out. Returns the exit code:
 * 0 when everything is usable, 1 otherwise.
 */
int admin_check(const struct relay_config *cfg, FILE *out);

/* Puts every dead row back to pending and wakes the relay. Prints the count. */
int admin_requeue_dead(const struct relay_config *cfg, FILE *out);

#endif
