/*
 * Connection settings as logs and --check show them: every password masked
 * as "***", whatever characters it holds.
 */
#ifndef OUTBOX_RELAY_REDACT_H
#define OUTBOX_RELAY_REDACT_H

#include <stddef.h>

/*
 * OUTBOX_PG_URL (URI or key=value) as libpq reads it, rebuilt from
 * PQconninfoParse as key=value pairs: the value of every option libpq marks
 * secret (password, sslpassword) is "***", and no byte of the original
 * text is copied, so no quoting or encoding can carry a secret through.
 * An empty string stays empty; a string libpq cannot parse is shown as
 * "(malformed)".
 */
void redact_pg_conninfo(const char *conninfo, char *buf, size_t len);

/*
 * OUTBOX_NATS_URL, a comma-separated server list: the userinfo of each
 * server, up to its last '@' (nats.c's reading), keeps its user name and
 * masks the password; a user name alone is a token and is masked whole.
 * A password holding ',' (which splits the list) is masked too.
 */
void redact_nats_urls(const char *urls, char *buf, size_t len);

#endif
