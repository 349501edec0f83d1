/* Connection settings with their passwords masked, for logs and --check. */
#include "outbox_relay/lib/redact.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "outbox_relay/lib/util.h"

#define REDACTED "***"

/* The buffer's text into buf, "(redacted)" if building it ran out of memory; frees it. */
static void text_copy_out(struct strbuf *t, char *buf, size_t len)
{
    if (len > 0)
        snprintf(buf, len, "%s", t->oom ? "(redacted)" : t->s ? t->s : "");
    sb_free(t);
}

/* A key=value value, quoted as libpq reads it when it is empty or holds a blank, quote or
 * backslash. */
static void text_conninfo_value(struct strbuf *t, const char *v)
{
    if (v[0] != '\0' && strpbrk(v, " \t\n\r\f\v'\\") == NULL) {
        sb_puts(t, v);
        return;
    }
    sb_puts(t, "'");
    for (const char *p = v; *p; p++) {
        if (*p == '\'' || *p == '\\')
            sb_puts(t, "\\");
        sb_putc(t, *p);
    }
    sb_puts(t, "'");
}

/* A URI host list such as "ss@db" comes from a password holding '@' that libpq cut short:
 * the part before the last '@' of each host is the rest of that password. */
static void text_host_list(struct strbuf *t, const char *hosts)
{
    const char *at = strrchr(hosts, '@');
    if (at == NULL) {
        text_conninfo_value(t, hosts);
        return;
    }
    char *shown = NULL;
    if (asprintf(&shown, REDACTED "%s", at) < 0) {
        t->oom = true;
        return;
    }
    text_conninfo_value(t, shown);
    free(shown);
}

void redact_pg_conninfo(const char *conninfo, char *buf, size_t len)
{
    if (conninfo == NULL || conninfo[0] == '\0') {
        if (len > 0)
            buf[0] = '\0';
        return;
    }
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err); /* it may quote the string */
    if (opts == NULL) {
        snprintf(buf, len, "(malformed)");
        return;
    }
    struct strbuf t = {0};
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (t.n > 0)
            sb_puts(&t, " ");
        sb_puts(&t, o->keyword);
        sb_puts(&t, "=");
        /* dispchar "*": libpq's own mark of a value to hide. */
        if (o->dispchar != NULL && o->dispchar[0] == '*')
            sb_puts(&t, REDACTED);
        else if (strcmp(o->keyword, "host") == 0)
            text_host_list(&t, o->val);
        else
            text_conninfo_value(&t, o->val);
    }
    PQconninfoFree(opts);
    text_copy_out(&t, buf, len);
}

/* The start of the next "scheme://" at or after p, or NULL. */
static const char *next_scheme(const char *p, const char **after)
{
    const char *sep = strstr(p, "://");
    if (sep == NULL)
        return NULL;
    const char *start = sep;
    while (start > p && start[-1] != ',' && start[-1] != ' ')
        start--;
    *after = sep + 3;
    return start;
}

/*
 * One server's userinfo runs from after its "scheme://" to the last '@'
 * before the next server's scheme: nats.c takes the last '@' of a server,
 * and a ',' in a password splits the list but must not unmask the rest.
 */
void redact_nats_urls(const char *urls, char *buf, size_t len)
{
    struct strbuf t = {0};
    const char *p = urls ? urls : "";
    const char *after;
    sb_puts(&t, ""); /* an empty list shows as "" */
    for (;;) {
        /* Text up to this server's userinfo: the scheme, or the list's start without one. */
        const char *scheme = next_scheme(p, &after);
        const char *info;
        if (p == urls && (scheme == NULL || scheme != p))
            info = p; /* a first server without a scheme */
        else if (scheme != NULL)
            info = after;
        else
            break;
        sb_putn(&t, p, (size_t)(info - p));
        const char *next_after;
        const char *next = next_scheme(info, &next_after);
        const char *end = next ? next : info + strlen(info);
        const char *at = NULL;
        for (const char *q = info; q < end; q++)
            if (*q == '@')
                at = q;
        if (at != NULL) {
            const char *colon = memchr(info, ':', (size_t)(at - info));
            if (colon != NULL) {
                sb_putn(&t, info, (size_t)(colon + 1 - info));
                sb_puts(&t, REDACTED);
            } else {
                sb_puts(&t, REDACTED); /* a token */
            }
            info = at;
        }
        sb_putn(&t, info, (size_t)(end - info));
        p = end;
        if (next == NULL)
            break;
    }
    text_copy_out(&t, buf, len);
}
