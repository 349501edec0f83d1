/* The HTTP routes: /healthz, /readyz and /metrics answered from the relay's state. */
#ifndef OUTBOX_RELAY_PROBES_H
#define OUTBOX_RELAY_PROBES_H

#include <stddef.h>

#include "outbox_relay/ops/http.h"
#include "outbox_relay/pipeline/relay.h"

#define PROBES_ROUTES 3

/* Fills routes[PROBES_ROUTES] bound to r. */
void probes_routes(struct relay *r, struct http_route *routes);

#endif
