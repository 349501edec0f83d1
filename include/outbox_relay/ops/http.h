/* A small, strict HTTP/1.x listener on the libev loop for probes and metrics. */
#ifndef OUTBOX_RELAY_HTTP_H
#define OUTBOX_RELAY_HTTP_H

#include <stddef.h>

#include <ev.h>

struct http_server;

#define HTTP_MAX_HEAD 8192 /* request line + headers; more is answered 431 */
#define HTTP_MAX_CONNECTIONS                                                                       \
    256 /* past this, a new connection displaces the oldest silent one, or is closed at once */

/* What a route answers. body is malloc'ed by the route and freed by the server. */
struct http_reply {
    int status;               /* 200, 503, ... */
    const char *content_type; /* static string */
    char *body;
    size_t body_len;
};

typedef void (*http_route_fn)(void *arg, struct http_reply *reply);

struct http_route {
    const char *path; /* exact match, e.g. "/metrics" */
    http_route_fn fn;
    void *arg;
};

/*
 * Listens on addr ("host:port", ":port" = all interfaces, "[v6]:port") and
 * answers GET <path> for the given routes (HEAD too, without a body); any
 * other path is 404, any other method 405, a malformed request 400, a
 * request head over 8 KiB 431; a connection idle or unfinished after 5 s is
 * closed. Every answer closes the connection. routes must outlive the server.
 * NULL with err on failure (bad address, port in use).
 */
struct http_server *http_start(struct ev_loop *loop, const char *addr,
                               const struct http_route *routes, size_t nroutes, char *err,
                               size_t errlen);
/* Closes the listener and every open connection. Accepts NULL. */
void http_stop(struct http_server *srv);

/* The bound port, useful after listening on port 0 (tests); -1 if unknown. */
int http_port(const struct http_server *srv);

/* Per-connection deadline (default 5 s) for connections accepted from now on. */
void http_set_timeout(struct http_server *srv, double seconds);

enum http_parse {
    HTTP_PARSE_INCOMPLETE, /* need more bytes */
    HTTP_PARSE_OK,         /* method and path filled */
    HTTP_PARSE_BAD,        /* not a valid HTTP/1.x request head */
    HTTP_PARSE_TOO_LARGE,  /* head longer than max_head */
};

/*
 * Parses a request head from buf[0..len): request line "METHOD SP target SP
 * HTTP/1.x" followed by header lines and an empty line. Copies the method
 * and the path (target without ?query) into the given buffers. Pure.
 * Lines may end in CRLF or a bare LF. The method is a case-sensitive token and
 * is passed through as is ("get" parses; the server then answers 405). A
 * method or path that does not fit its buffer is BAD.
 */
enum http_parse http_parse_request(const char *buf, size_t len, size_t max_head, char *method,
                                   size_t method_len, char *path, size_t path_len);

/*
 * "host:port" etc. → host ("" = any, brackets removed) and port (0..65535,
 * 0 = any free port); -1 on a malformed address.
 */
int http_parse_addr(const char *addr, char *host, size_t host_len, int *port);

#endif
