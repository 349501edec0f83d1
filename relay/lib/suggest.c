/* "Did you mean ...?": the nearest name by edit distance, for typos in commands and settings. */
#include "outbox_relay/lib/suggest.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Longer than any command, flag or setting name; longer words get no suggestion. */
#define SUGGEST_MAX_LEN 64

size_t suggest_distance(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen > SUGGEST_MAX_LEN || blen > SUGGEST_MAX_LEN)
        return (size_t)-1;
    /* Optimal string alignment: three rows of the Damerau-Levenshtein table. */
    size_t rows[3][SUGGEST_MAX_LEN + 1];
    size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= blen; j++)
        prev[j] = j;
    for (size_t i = 1; i <= alen; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= blen; j++) {
            char ca = (char)tolower((unsigned char)a[i - 1]);
            char cb = (char)tolower((unsigned char)b[j - 1]);
            size_t best = prev[j - 1] + (ca != cb);
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            cur[j] = best;
        }
        size_t *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[blen];
}

static size_t suggest_allowed(size_t len)
{
    return len <= 4 ? 1 : len <= 12 ? 2 : 3;
}

const char *suggest_closest(const char *word, size_t len, const void *first, size_t n,
                            size_t stride)
{
    const char *best = NULL;
    size_t best_d = suggest_allowed(len) + 1;
    for (size_t i = 0; i < n; i++) {
        const char *c = *(const char *const *)((const char *)first + i * stride);
        if (c == NULL)
            continue;
        size_t d = suggest_distance(word, len, c, strlen(c));
        if (d < best_d) {
            best_d = d;
            best = c;
        }
    }
    return best;
}
