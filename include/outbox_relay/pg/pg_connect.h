/* How the relay connects to PostgreSQL: the connection keywords, and a blocking connect. */
#ifndef OUTBOX_RELAY_PG_CONNECT_H
#define OUTBOX_RELAY_PG_CONNECT_H

#include <stddef.h>

#include <libpq-fe.h>

#include "outbox_relay/lib/config.h"

/* Room for the keywords pg_connect_params writes, the NULL end included. */
#define PG_CONNECT_MAX_PARAMS 10

/*
 * The relay's connection keywords into keys/vals (NULL-terminated): its
 * own first (application_name, keepalives, tcp_user_timeout from
 * tcp_timeout, a buffer of len bytes), then OUTBOX_PG_URL, which wins.
 * Returns how many were written, the NULL end excluded.
 */
int pg_connect_params(const struct relay_config *cfg, const char **keys, const char **vals,
                      char *tcp_timeout, size_t len);

/*
 * A blocking connection with those keywords and a connect timeout (for the
 * operator commands; the daemon connects asynchronously, pg_source.c).
 * NULL with libpq's reason, on one line, in err.
 */
PGconn *pg_connect_blocking(const struct relay_config *cfg, char *err, size_t errlen);

#endif
