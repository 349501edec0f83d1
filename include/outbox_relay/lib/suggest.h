/*
 * "Did you mean ...?" for a mistyped command, flag or setting name. Pure.
 *
 * The suggestion is the candidate nearest by edit distance (insertions,
 * deletions, substitutions, and swaps of two neighbours: the usual typos),
 * if it is near enough to be what was meant: at most 1 edit for names of up
 * to 4 characters, 2 up to 12, 3 beyond. Case is ignored.
 */
#ifndef OUTBOX_RELAY_SUGGEST_H
#define OUTBOX_RELAY_SUGGEST_H

#include <stddef.h>

/* Edit distance between a[0..alen) and b[0..blen), case-insensitive. */
size_t suggest_distance(const char *a, size_t alen, const char *b, size_t blen);

/*
 * The candidate closest to word[0..len), or NULL when none is near enough.
 * candidates is read as n strings, stride bytes apart starting at first
 * (so a table of structs whose first member is the name can be passed).
 */
const char *suggest_closest(const char *word, size_t len, const void *first, size_t n,
                            size_t stride);

#endif
