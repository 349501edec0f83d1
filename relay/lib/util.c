/* Small shared helpers: a growable string buffer. */
#include "outbox_relay/lib/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool sb_reserve(struct strbuf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->n + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (s == NULL) {
        b->oom = true;
        return false;
    }
    b->s = s;
    b->cap = cap;
    return true;
}

void sb_putc(struct strbuf *b, char c)
{
    if (!sb_reserve(b, 1))
        return;
    b->s[b->n++] = c;
    b->s[b->n] = '\0';
}

void sb_putn(struct strbuf *b, const char *s, size_t len)
{
    if (!sb_reserve(b, len))
        return;
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = '\0';
}

void sb_puts(struct strbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

/* Pieces are short (numbers): formatted once on the stack and copied, and
 * only a longer one is formatted again into room made for it, never copied
 * out of the 64-byte stack buffer. */
void sb_printf(struct strbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (len < 0 || !sb_reserve(b, (size_t)len))
        return;
    if ((size_t)len < sizeof(tmp)) {
        memcpy(b->s + b->n, tmp, (size_t)len + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(b->s + b->n, (size_t)len + 1, fmt, ap);
        va_end(ap);
    }
    b->n += (size_t)len;
}

void sb_put_array_text(struct strbuf *b, const char *s)
{
    sb_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_putc(b, '\\');
        sb_putc(b, *s);
    }
    sb_putc(b, '"');
}

void sb_put_ident(struct strbuf *b, const char *s, size_t n)
{
    sb_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            sb_putc(b, '"');
        sb_putc(b, s[i]);
    }
    sb_putc(b, '"');
}

char *str_printf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

char *sb_take(struct strbuf *b)
{
    char *s = b->oom ? NULL : b->s;
    if (b->oom)
        free(b->s);
    b->s = NULL;
    b->n = b->cap = 0;
    b->oom = false;
    return s;
}

void sb_free(struct strbuf *b)
{
    free(sb_take(b));
}
