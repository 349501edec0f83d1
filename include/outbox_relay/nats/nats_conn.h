/* Why a NATS connection failed, in words an operator can act on: every connection of the relay. */
#ifndef OUTBOX_RELAY_NATS_CONN_H
#define OUTBOX_RELAY_NATS_CONN_H

#include <stddef.h>

#include <nats/nats.h>

#include "outbox_relay/lib/config.h"

/*
 * A readable reason for a failed connect or a refusal: nats.c's text (detail,
 * or the status's text when detail is NULL or empty) without its source
 * location, with a hint naming the setting when the server refused the
 * credentials or TLS, and any URL password masked.
 */
void nats_conn_describe(const struct relay_config *cfg, natsStatus s, const char *detail, char *buf,
                        size_t len);

/* "what: status text: nats.c's last error" into err; returns -1. */
int nats_conn_fail(char *err, size_t errlen, const char *what, natsStatus s);

#endif
