/*
 * The user JWT of a .creds file (OUTBOX_NATS_CREDS), read only to explain a
 * refusal: the server answers every refused JWT with the same
 * "Authorization Violation", while the JWT itself says whether it expired
 * and which user and account the operator should look at.
 */
#ifndef OUTBOX_RELAY_NATS_CREDS_H
#define OUTBOX_RELAY_NATS_CREDS_H

#include <stddef.h>
#include <time.h>

/*
 * Why the server, at `now`, refused the user JWT in the .creds file at
 * `path`: "user authentication expired: ..." when its exp has passed, "not
 * valid yet: ..." before its nbf, otherwise that the account revoked the
 * user or the server does not know the account. Returns 0, or -1 (buf "")
 * when the file holds no readable user JWT. Never reads past the JWT: the
 * seed stays in the file.
 */
int nats_creds_explain_refusal(const char *path, time_t now, char *buf, size_t len);

#endif
