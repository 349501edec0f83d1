/* Integration-test harness: HTTP client for the relay's probes and metrics (127.0.0.1 only). */
#ifndef OUTBOX_RELAY_IT_HARNESS_HTTP_H
#define OUTBOX_RELAY_IT_HARNESS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prom_text.h"

/* ---- HTTP client for the relay's probes and metrics (127.0.0.1 only) ---- */

struct it_http {
    int status; /* as returned below */
    char *head; /* status line and headers, without the empty line; NULL without an answer */
    char *body; /* NUL-terminated, never NULL after a call */
    size_t body_len;
};

/*
 * Connects to 127.0.0.1:port, sends the request bytes as they are, shuts
 * down its sending side (so an incomplete head ends there), reads
 * until the server closes or timeout_ms passes. Returns the HTTP status of a
 * complete answer (a head and exactly Content-Length bytes of body); 0 if the
 * server closed without sending a byte; -1 if the connect failed or the
 * deadline passed; -2 for bytes that are not a complete answer. Uses no
 * Check calls, so threads may use it. Free with it_http_free().
 */
int it_http_raw(int port, const void *request, size_t len, int timeout_ms, struct it_http *out);
int it_http_get(int port, const char *path, int timeout_ms, struct it_http *out);
int it_http_status(int port, const char *path); /* GET, 5 s timeout, status as above */
/* A response header's value (first match, case-insensitive name) copied into buf, or NULL. */
const char *it_http_header(const struct it_http *r, const char *name, char *buf, size_t len);
void it_http_free(struct it_http *r);

/*
 * The value of the unlabelled sample `name` (e.g. "outbox_relay_leader") of
 * GET /metrics on 127.0.0.1:port; -1 when the relay does not answer 200 or
 * the sample is missing.
 */
double it_metric(int port, const char *name);

/* outbox_relay_<family>{reason="<reason>"} (e.g. "failed_total", "timeout"); -1 if missing. */
double it_metric_reason(int port, const char *family, const char *reason);

/* Waits until it_metric(port, name) == want; true if it does. */
bool it_wait_metric(int port, const char *name, double want, int timeout_ms);

/* One GET /metrics, parsed strictly (prom_text.h); the samples point into `text`. */
struct it_scrape {
    struct prom_exposition e;
    char *text;
};
/* Scrapes into *s, freeing the text of its previous scrape. */
void it_scrape_metrics(int port, struct it_scrape *s);
/* The value of `family`'s sample whose label `label` is `value` (the test fails without one). */
double it_scraped(const struct it_scrape *s, const char *family, const char *label,
                  const char *value);

/*
 * GETs each of `paths` (NULL-terminated) from 127.0.0.1:port in turn, a
 * request every ~10 ms, for duration_ms; each request may take up to 10 s.
 * Returns the slowest answer in ms; *requests receives how many were made,
 * *failed how many did not answer 200. For "the loop never blocks" checks.
 */
int64_t it_http_slowest_ms(int port, const char *const *paths, int duration_ms, int *requests,
                           int *failed);

#endif
