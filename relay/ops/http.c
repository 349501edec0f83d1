/* Probe and metrics HTTP listener: strict HTTP/1.x, one request per connection, never blocks. */
/* _GNU_SOURCE (for accept4) comes from the build. */
#include "outbox_relay/ops/http.h"

#include "outbox_relay/lib/util.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX_LISTENERS   8
#define HTTP_ACCEPT_BURST    32   /* accepts per wake-up, so a flood cannot starve the loop */
#define HTTP_ACCEPT_PAUSE    0.25 /* seconds to stop accepting after EMFILE and friends */
#define HTTP_DEFAULT_TIMEOUT 5.0
/* A client that has not sent its first byte after this long is not a probe or a scraper
 * (both send their request with the connect): its slot goes back to the pool. */
#define HTTP_SILENT_TIMEOUT 1.0

enum conn_state {
    CONN_READING,  /* collecting the request head */
    CONN_WRITING,  /* answer partly sent; waiting for the socket to take more */
    CONN_DRAINING, /* answer sent and our side shut; discarding input until the peer closes */
};

struct http_conn {
    ev_io io; /* first: the callback casts back */
    ev_timer deadline;
    struct http_server *srv;
    struct http_conn *prev, *next;
    enum conn_state state;
    ev_tstamp accepted_at;
    size_t head_len;
    char *out;
    size_t out_len, out_off;
    char head[HTTP_MAX_HEAD];
};

struct http_listener {
    ev_io io; /* first: the callback casts back */
    struct http_server *srv;
};

struct http_server {
    struct ev_loop *loop;
    const struct http_route *routes;
    size_t nroutes;
    double timeout;
    struct http_listener listeners[HTTP_MAX_LISTENERS];
    size_t nlisteners;
    ev_timer accept_pause;
    struct http_conn *conns, *conns_tail; /* oldest first */
    size_t nconns;
};

/* ---- request parsing (pure) ---- */

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* origin-form: visible ASCII; '#' never belongs in a request target. */
static bool is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '#';
}

/* field-value: visible ASCII, obs-text, space and tab. */
static bool is_value_char(unsigned char c)
{
    return (c > 0x20 && c != 0x7f) || c == ' ' || c == '\t';
}

enum eol { EOL_NONE, EOL_FOUND, EOL_MORE, EOL_BAD };

/* A line ends in CRLF or a bare LF; a CR followed by anything else is an error. */
static enum eol scan_eol(const char *buf, size_t limit, size_t *i)
{
    if (*i >= limit)
        return EOL_MORE;
    if (buf[*i] == '\n') {
        *i += 1;
        return EOL_FOUND;
    }
    if (buf[*i] != '\r')
        return EOL_NONE;
    if (*i + 1 >= limit)
        return EOL_MORE;
    if (buf[*i + 1] != '\n')
        return EOL_BAD;
    *i += 2;
    return EOL_FOUND;
}

/*
 * One forward scan that rejects a byte as soon as it cannot be part of a
 * valid head, so garbage is answered 400 at once instead of waiting for the
 * deadline; running out of bytes is INCOMPLETE, or TOO_LARGE once max_head
 * bytes did not hold a whole head.
 */
enum http_parse http_parse_request(const char *buf, size_t len, size_t max_head, char *method,
                                   size_t method_len, char *path, size_t path_len)
{
    static const char version[] = "HTTP/1.";
    size_t limit = len < max_head ? len : max_head;
    size_t i = 0;
    enum eol e;

    /* RFC 9112 2.2: ignore empty lines before the request line. */
    while ((e = scan_eol(buf, limit, &i)) == EOL_FOUND)
        ;
    if (e == EOL_BAD)
        return HTTP_PARSE_BAD;
    if (e == EOL_MORE)
        goto more;

    size_t method_start = i;
    while (i < limit && is_tchar((unsigned char)buf[i]))
        i++;
    if (i == limit)
        goto more;
    if (buf[i] != ' ' || i == method_start)
        return HTTP_PARSE_BAD;
    size_t method_end = i++;

    size_t target_start = i;
    if (i == limit)
        goto more;
    if (buf[i] != '/')
        return HTTP_PARSE_BAD;
    size_t path_end = 0;
    while (i < limit && is_target_char((unsigned char)buf[i])) {
        if (buf[i] == '?' && path_end == 0)
            path_end = i;
        i++;
    }
    if (i == limit)
        goto more;
    if (buf[i] != ' ')
        return HTTP_PARSE_BAD;
    if (path_end == 0)
        path_end = i;
    i++;

    for (size_t k = 0; k < sizeof(version) - 1; k++, i++) {
        if (i == limit)
            goto more;
        if (buf[i] != version[k])
            return HTTP_PARSE_BAD;
    }
    if (i == limit)
        goto more;
    if (buf[i] < '0' || buf[i] > '9')
        return HTTP_PARSE_BAD;
    i++;
    e = scan_eol(buf, limit, &i);
    if (e == EOL_MORE)
        goto more;
    if (e != EOL_FOUND)
        return HTTP_PARSE_BAD;

    for (;;) {
        e = scan_eol(buf, limit, &i);
        if (e == EOL_FOUND)
            break; /* the empty line: head complete */
        if (e == EOL_MORE)
            goto more;
        if (e == EOL_BAD)
            return HTTP_PARSE_BAD;

        /* No whitespace before the name (obs-fold) or before the colon: RFC 9112 5.1, 5.2. */
        size_t name_start = i;
        while (i < limit && is_tchar((unsigned char)buf[i]))
            i++;
        if (i == limit)
            goto more;
        if (buf[i] != ':' || i == name_start)
            return HTTP_PARSE_BAD;
        i++;
        while (i < limit && is_value_char((unsigned char)buf[i]))
            i++;
        e = scan_eol(buf, limit, &i);
        if (e == EOL_MORE)
            goto more;
        if (e != EOL_FOUND)
            return HTTP_PARSE_BAD;
    }

    if (method_end - method_start >= method_len || path_end - target_start >= path_len)
        return HTTP_PARSE_BAD;
    memcpy(method, buf + method_start, method_end - method_start);
    method[method_end - method_start] = '\0';
    memcpy(path, buf + target_start, path_end - target_start);
    path[path_end - target_start] = '\0';
    return HTTP_PARSE_OK;

more:
    return len >= max_head ? HTTP_PARSE_TOO_LARGE : HTTP_PARSE_INCOMPLETE;
}

static bool is_host_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
           c == '.' || c == '_';
}

static bool is_v6_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
           c == '.' || c == '%' || is_host_char(c);
}

int http_parse_addr(const char *addr, char *host, size_t host_len, int *port)
{
    if (addr == NULL || host_len == 0)
        return -1;

    const char *host_start, *host_end, *colon;
    if (addr[0] == '[') {
        /* "[v6]:port"; a zone ("%eth0") may follow the address. */
        host_start = addr + 1;
        host_end = strchr(host_start, ']');
        if (host_end == NULL || host_end == host_start || host_end[1] != ':')
            return -1;
        for (const char *p = host_start; p < host_end; p++)
            if (!is_v6_char(*p))
                return -1;
        if (memchr(host_start, ':', (size_t)(host_end - host_start)) == NULL)
            return -1;
        colon = host_end + 1;
    } else {
        /* An unbracketed IPv6 address is ambiguous ("::1:80"): one colon only. */
        colon = strchr(addr, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -1;
        host_start = addr;
        host_end = colon;
        for (const char *p = host_start; p < host_end; p++)
            if (!is_host_char(*p))
                return -1;
    }

    const char *digits = colon + 1;
    size_t ndigits = strlen(digits);
    if (ndigits == 0 || ndigits > 5)
        return -1;
    long value = 0;
    for (size_t k = 0; k < ndigits; k++) {
        if (digits[k] < '0' || digits[k] > '9')
            return -1;
        value = value * 10 + (digits[k] - '0');
    }
    if (value > 65535)
        return -1;

    size_t n = (size_t)(host_end - host_start);
    if (n >= host_len)
        return -1;
    memcpy(host, host_start, n);
    host[n] = '\0';
    *port = (int)value;
    return 0;
}

/* ---- connections ---- */

static void conn_close(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    ev_io_stop(srv->loop, &c->io);
    ev_timer_stop(srv->loop, &c->deadline);
    close(c->io.fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->conns_tail = c->prev;
    srv->nconns--;
    free(c->out);
    free(c);
}

static const char *status_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/*
 * Our answer is out: shut our side and read until the peer closes. Closing
 * with unread input (a POST body, the rest of an oversized head) would send
 * an RST that can destroy the answer before the client reads it.
 */
static void conn_linger(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    shutdown(c->io.fd, SHUT_WR);
    c->state = CONN_DRAINING;
    ev_io_stop(srv->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, EV_READ);
    ev_io_start(srv->loop, &c->io);
}

static void conn_flush(struct http_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->io.fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->state != CONN_WRITING) {
                c->state = CONN_WRITING;
                ev_io_stop(c->srv->loop, &c->io);
                ev_io_set(&c->io, c->io.fd, EV_WRITE);
                ev_io_start(c->srv->loop, &c->io);
            }
            return;
        }
        conn_close(c); /* the peer is gone */
        return;
    }
    free(c->out);
    c->out = NULL;
    conn_linger(c);
}

static void conn_respond(struct http_conn *c, int status, const char *content_type,
                         const char *body, size_t body_len, bool head_only)
{
    const char *allow = status == 405 ? "Allow: GET, HEAD\r\n" : "";
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     status, status_reason(status), content_type, body_len, allow);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        conn_close(c);
        return;
    }
    size_t send_body = head_only ? 0 : body_len;
    c->out = malloc((size_t)n + send_body);
    if (c->out == NULL) {
        conn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    if (send_body)
        memcpy(c->out + n, body, send_body);
    c->out_len = (size_t)n + send_body;
    c->out_off = 0;
    conn_flush(c);
}

static void conn_respond_text(struct http_conn *c, int status, const char *text, bool head_only)
{
    conn_respond(c, status, "text/plain; charset=utf-8", text, strlen(text), head_only);
}

static void conn_dispatch(struct http_conn *c, const char *method, const char *path)
{
    struct http_server *srv = c->srv;
    bool head_only = strcmp(method, "HEAD") == 0;
    const struct http_route *route = NULL;
    for (size_t k = 0; k < srv->nroutes; k++) {
        if (strcmp(srv->routes[k].path, path) == 0) {
            route = &srv->routes[k];
            break;
        }
    }
    if (route == NULL) {
        conn_respond_text(c, 404, "not found\n", head_only);
        return;
    }
    if (!head_only && strcmp(method, "GET") != 0) {
        conn_respond_text(c, 405, "method not allowed\n", false);
        return;
    }

    struct http_reply reply = {
        .status = 200,
        .content_type = "text/plain; charset=utf-8",
        .body = NULL,
        .body_len = 0,
    };
    route->fn(route->arg, &reply);
    if (reply.body == NULL && reply.body_len > 0) /* the route ran out of memory */
        conn_respond_text(c, 500, "internal error\n", head_only);
    else
        conn_respond(c, reply.status, reply.content_type ? reply.content_type : "text/plain",
                     reply.body, reply.body_len, head_only);
    free(reply.body);
}

static void conn_on_readable(struct http_conn *c)
{
    size_t room = sizeof(c->head) - c->head_len;
    ssize_t n = recv(c->io.fd, c->head + c->head_len, room, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) { /* the client gave up before finishing its request */
        conn_close(c);
        return;
    }

    /*
     * A head can only complete on a newline, so re-scan only then (or when
     * the buffer is full, or on the first bytes to reject garbage early):
     * a client trickling one byte at a time costs a linear, not quadratic, scan.
     */
    size_t old_len = c->head_len;
    c->head_len += (size_t)n;
    if (old_len == 0 && c->srv->timeout > HTTP_SILENT_TIMEOUT) {
        /* No longer silent: the whole request deadline, counted from the accept. */
        struct ev_loop *loop = c->srv->loop;
        ev_timer_stop(loop, &c->deadline);
        double left = c->accepted_at + c->srv->timeout - ev_now(loop);
        ev_timer_set(&c->deadline, left > 0 ? left : 0., 0.);
        ev_timer_start(loop, &c->deadline);
    }
    if (old_len != 0 && c->head_len < sizeof(c->head) &&
        memchr(c->head + old_len, '\n', (size_t)n) == NULL)
        return;

    char method[16], path[HTTP_MAX_HEAD];
    switch (http_parse_request(c->head, c->head_len, HTTP_MAX_HEAD, method, sizeof(method), path,
                               sizeof(path))) {
    case HTTP_PARSE_INCOMPLETE:
        return;
    case HTTP_PARSE_OK:
        conn_dispatch(c, method, path);
        return;
    case HTTP_PARSE_BAD:
        conn_respond_text(c, 400, "bad request\n", false);
        return;
    case HTTP_PARSE_TOO_LARGE:
        conn_respond_text(c, 431, "request head too large\n", false);
        return;
    }
}

static void conn_on_drain(struct http_conn *c)
{
    char sink[4096];
    ssize_t n = recv(c->io.fd, sink, sizeof(sink), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0)
        conn_close(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct http_conn *c = (struct http_conn *)w;
    switch (c->state) {
    case CONN_READING:
        conn_on_readable(c);
        break;
    case CONN_WRITING:
        conn_flush(c);
        break;
    case CONN_DRAINING:
        conn_on_drain(c);
        break;
    }
}

static void conn_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_close(container_of(w, struct http_conn, deadline));
}

/* ---- listening ---- */

static bool conn_is_silent(const struct http_conn *c)
{
    return c->state == CONN_READING && c->head_len == 0;
}

/*
 * At the cap, the oldest connection that has sent nothing makes room: a
 * peer holding idle connections (reopening those we close) cannot keep a
 * probe, which sends its request with the connect, from being served.
 * Connections that sent bytes are left to their deadline.
 */
static bool conns_make_room(struct http_server *srv)
{
    for (struct http_conn *c = srv->conns; c; c = c->next) {
        if (conn_is_silent(c)) {
            conn_close(c);
            return true;
        }
    }
    return false;
}

static void listeners_start(struct http_server *srv)
{
    for (size_t k = 0; k < srv->nlisteners; k++)
        ev_io_start(srv->loop, &srv->listeners[k].io);
}

static void listeners_stop(struct http_server *srv)
{
    for (size_t k = 0; k < srv->nlisteners; k++)
        ev_io_stop(srv->loop, &srv->listeners[k].io);
}

static void accept_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    listeners_start(container_of(w, struct http_server, accept_pause));
}

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct http_listener *l = (struct http_listener *)w;
    struct http_server *srv = l->srv;

    for (int burst = 0; burst < HTTP_ACCEPT_BURST; burst++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The pending connection stays queued and the level-triggered
                 * watcher would fire again at once: back off instead of spinning. */
                listeners_stop(srv);
                ev_timer_set(&srv->accept_pause, HTTP_ACCEPT_PAUSE, 0.);
                ev_timer_start(loop, &srv->accept_pause);
            }
            return; /* EAGAIN, or an error we cannot act on */
        }
        if (srv->nconns >= HTTP_MAX_CONNECTIONS && !conns_make_room(srv)) {
            close(fd); /* accepting and dropping keeps the backlog from filling with stale peers */
            continue;
        }
        struct http_conn *c = malloc(sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->srv = srv;
        c->state = CONN_READING;
        c->head_len = 0;
        c->out = NULL;
        c->out_len = c->out_off = 0;
        c->accepted_at = ev_now(loop);
        c->next = NULL;
        c->prev = srv->conns_tail;
        if (srv->conns_tail)
            srv->conns_tail->next = c;
        else
            srv->conns = c;
        srv->conns_tail = c;
        srv->nconns++;
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        double silent = srv->timeout < HTTP_SILENT_TIMEOUT ? srv->timeout : HTTP_SILENT_TIMEOUT;
        ev_timer_init(&c->deadline, conn_deadline_cb, silent, 0.);
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->deadline);
    }
}

static int sockaddr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return -1;
}

static void sockaddr_set_port(struct sockaddr *sa, int port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

/* Returns the listening fd, or -1 with errno set. */
static int listen_one(struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* ":port" yields both 0.0.0.0 and ::; a v6-only socket lets both bind. */
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* The kernel's largest accept queue: a flood reconnecting as fast as we close must
     * not fill it, or a probe's SYN is dropped and retried only after a second. */
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/*
 * Resolving a host name may block, which is acceptable only because this
 * runs once at start, before the loop serves anything.
 */
struct http_server *http_start(struct ev_loop *loop, const char *addr,
                               const struct http_route *routes, size_t nroutes, char *err,
                               size_t errlen)
{
    char host[256];
    int port;
    if (http_parse_addr(addr, host, sizeof(host), &port) < 0) {
        snprintf(err, errlen, "invalid HTTP address \"%s\": want host:port, :port or [v6]:port",
                 addr ? addr : "");
        return NULL;
    }

    char service[8];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve HTTP address \"%s\": %s", addr, gai_strerror(rc));
        return NULL;
    }

    struct http_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        freeaddrinfo(res);
        snprintf(err, errlen, "HTTP server: out of memory");
        return NULL;
    }
    srv->loop = loop;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->timeout = HTTP_DEFAULT_TIMEOUT;
    ev_timer_init(&srv->accept_pause, accept_pause_cb, HTTP_ACCEPT_PAUSE, 0.);

    int bound_port = port;
    int fatal_errno = 0, skipped_errno = 0;
    for (struct addrinfo *ai = res; ai && srv->nlisteners < HTTP_MAX_LISTENERS; ai = ai->ai_next) {
        /* With port 0, every address must share the port the first one got. */
        if (port == 0 && bound_port != 0)
            sockaddr_set_port(ai->ai_addr, bound_port);
        /* A hosts file may list one address twice; binding it again would read as "in use". */
        bool seen = false;
        for (struct addrinfo *prev = res; prev != ai; prev = prev->ai_next)
            if (prev->ai_addrlen == ai->ai_addrlen &&
                memcmp(prev->ai_addr, ai->ai_addr, ai->ai_addrlen) == 0)
                seen = true;
        if (seen)
            continue;
        int fd = listen_one(ai);
        if (fd < 0) {
            /* A family or address this host lacks (IPv6 disabled) is skipped;
             * anything else, "port in use" above all, is the operator's to fix. */
            if (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL) {
                skipped_errno = errno;
                continue;
            }
            fatal_errno = errno;
            break;
        }
        if (bound_port == 0) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
                bound_port = sockaddr_port((struct sockaddr *)&ss);
            sockaddr_set_port(ai->ai_addr, bound_port); /* so duplicates below compare equal */
        }
        struct http_listener *l = &srv->listeners[srv->nlisteners++];
        l->srv = srv;
        ev_io_init(&l->io, listener_cb, fd, EV_READ);
    }
    freeaddrinfo(res);

    if (fatal_errno != 0 || srv->nlisteners == 0) {
        int e = fatal_errno ? fatal_errno : skipped_errno;
        snprintf(err, errlen, "cannot listen on HTTP address \"%s\": %s", addr,
                 e ? strerror(e) : "no usable address");
        http_stop(srv);
        return NULL;
    }
    listeners_start(srv);
    return srv;
}

void http_stop(struct http_server *srv)
{
    if (srv == NULL)
        return;
    ev_timer_stop(srv->loop, &srv->accept_pause);
    for (size_t k = 0; k < srv->nlisteners; k++) {
        ev_io_stop(srv->loop, &srv->listeners[k].io);
        close(srv->listeners[k].io.fd);
    }
    while (srv->conns)
        conn_close(srv->conns);
    free(srv);
}

int http_port(const struct http_server *srv)
{
    if (srv == NULL || srv->nlisteners == 0)
        return -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(srv->listeners[0].io.fd, (struct sockaddr *)&ss, &sl) < 0)
        return -1;
    return sockaddr_port((struct sockaddr *)&ss);
}

void http_set_timeout(struct http_server *srv, double seconds)
{
    if (srv != NULL && seconds > 0)
        srv->timeout = seconds;
}
