/* Error texts that end up in last_error, logs and replies: valid UTF-8, one line, readable. */
#include "outbox_relay/lib/error_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define QUOTED_MAX 64

/* Length of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_seq_len(const unsigned char *p)
{
    size_t n;
    if (p[0] < 0x80)
        return 1;
    else if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    }
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
        return 0; /* overlong, surrogate or beyond U+10FFFF */
    return n;
}

/*
 * The error text ends up in the text column last_error, which PostgreSQL
 * rejects unless it is valid UTF-8; truncation (ours, snprintf's, or in
 * jansson's error text) can cut a character in half.
 */
void error_text_utf8_repair(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq_len(p);
        if (n == 0) {
            *p++ = '?';
        } else {
            p += n;
        }
    }
}

void error_text_set(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    error_text_utf8_repair(err);
}

/*
 * s in double quotes for an error text: control characters escaped so that
 * last_error stays on one line, long values cut so it stays readable.
 */
const char *error_text_quote(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    buf[o++] = '"';
    size_t i = 0;
    /* Past QUOTED_MAX, finish the character in progress: never cut one in half. */
    for (; (i < QUOTED_MAX || ((unsigned char)s[i] & 0xc0) == 0x80) && s[i] != '\0' && o + 6 < len;
         i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c == '\t') {
            buf[o++] = '\\';
            buf[o++] = 't';
        } else if (c == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else if (c == '\r') {
            buf[o++] = '\\';
            buf[o++] = 'r';
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    if (s[i] != '\0' && o + 5 < len) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
