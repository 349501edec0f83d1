/* The check command's work: both ends verified, read-only. Blocking; never on the relay's loop. */
#ifndef OUTBOX_RELAY_ADMIN_H
#define OUTBOX_RELAY_ADMIN_H

#include <stdbool.h>
#include <stdio.h>

#include "outbox_relay/lib/config.h"

/*
 * Read-only: changes nothing on either end (never creates a stream). Checks
 * the table's columns, UPDATE on the bookkeeping columns for the current
 * role, the NOTIFY trigger's channel against OUTBOX_CHANNEL, the server's
 * max_payload against the last 1000 rows' payloads, OUTBOX_STREAM exists,
 * a stream takes each subject of those rows, and each such stream's
 * duplicate window against the 2-minute outage budget. One line per check
 * ("ok   ", "warn ", "FAIL "); with json, one document instead:
 * {"ok": bool, "checks": [{"level": "ok|warn|fail", "message": ...}]}.
 * Returns 0 when no line is FAIL, 1 otherwise.
 */
int admin_check(const struct relay_config *cfg, FILE *out, bool json);

#endif
