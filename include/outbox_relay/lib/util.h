/*
 * Small shared helpers: a growable string buffer and container_of.
 *
 * The buffer is sticky on allocation failure: after the first failed
 * realloc every append is a no-op and sb_take() returns NULL, so a caller
 * builds a whole value and checks once.
 */
#ifndef OUTBOX_RELAY_UTIL_H
#define OUTBOX_RELAY_UTIL_H

#include <stdbool.h>
#include <stddef.h>

/* The struct that holds `ptr` as its member `member` (libev watchers). */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct strbuf {
    char *s; /* NUL-terminated once anything was appended */
    size_t n, cap;
    bool oom;
};

void sb_putc(struct strbuf *b, char c);
void sb_puts(struct strbuf *b, const char *s);
/* The n bytes at s (no NUL needed among them). */
void sb_putn(struct strbuf *b, const char *s, size_t n);
void sb_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An element of a PostgreSQL text[] literal: quoted, with " and \ escaped. */
void sb_put_array_text(struct strbuf *b, const char *s);
/* An SQL identifier, double-quoted, with " doubled: n bytes of s. */
void sb_put_ident(struct strbuf *b, const char *s, size_t n);
/* The malloc'ed string (caller frees), or NULL after an allocation failure. */
char *sb_take(struct strbuf *b);
/* A formatted string of any length, malloc'ed (caller frees); NULL when out of memory. */
char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void sb_free(struct strbuf *b);

#endif
