/*
 * The NATS settings every connection of the relay shares: the server list,
 * the credentials and TLS. js_sink's long-lived connection adds its
 * reconnect policy and callbacks; operator commands (check among them) open short
 * synchronous connections with nats_connect_once.
 */
#ifndef OUTBOX_RELAY_NATS_OPTIONS_H
#define OUTBOX_RELAY_NATS_OPTIONS_H

#include <stddef.h>

#include <nats/nats.h>

#include "outbox_relay/lib/config.h"

/*
 * Applies OUTBOX_NATS_URL, the connect timeout, the credentials and the TLS
 * settings to o. A password or token is read from its file, handed to
 * nats.c (which copies it) and wiped. Returns 0, or -1 with err naming the
 * setting at fault.
 */
int nats_options_apply(natsOptions *o, const struct relay_config *cfg, char *err, size_t errlen);

/*
 * A short synchronous connection with those settings and no reconnects
 * (operator commands, check). js may be NULL when no JetStream context is
 * wanted. Returns 0, or -1 with err saying why.
 */
int nats_connect_once(const struct relay_config *cfg, const char *name, natsConnection **nc,
                      jsCtx **js, char *err, size_t errlen);

#endif
