/* Error texts that end up in last_error, logs and replies: valid UTF-8, one line, readable. Pure.
 */
#ifndef OUTBOX_RELAY_ERROR_TEXT_H
#define OUTBOX_RELAY_ERROR_TEXT_H

#include <stddef.h>

/* A buffer that always holds error_text_quote's result. */
#define ERROR_TEXT_QUOTED_SIZE (64 * 4 + 16)

/* Replaces every byte that starts no valid UTF-8 sequence with '?'. */
void error_text_utf8_repair(char *s);

/* snprintf into err (nothing when err is NULL or errlen 0), then repaired as UTF-8. */
void error_text_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * s in double quotes: control characters escaped so the text stays on one
 * line, cut after 64 bytes (never inside a character) with "...". Returns buf.
 */
const char *error_text_quote(const char *s, char *buf, size_t len);

#endif
