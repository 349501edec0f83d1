/* outbox-relay --probe: a GET of the relay's own /healthz, for HEALTHCHECK without curl or a shell.
 */
#ifndef OUTBOX_RELAY_HTTP_PROBE_H
#define OUTBOX_RELAY_HTTP_PROBE_H

#include <stddef.h>

/*
 * GETs path from addr (an OUTBOX_HTTP_ADDR value; a wildcard host such as
 * ":9841" or "0.0.0.0:9841" means this machine, 127.0.0.1) within
 * timeout_ms. Returns the HTTP status, or -1 with err (connect refused,
 * timeout, not HTTP).
 */
int http_probe(const char *addr, const char *path, int timeout_ms, char *err, size_t errlen);

#endif
