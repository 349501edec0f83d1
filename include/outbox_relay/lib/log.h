/* Structured logging: one JSON object (or key=value text) per line on stderr. */
#ifndef OUTBOX_RELAY_LOG_H
#define OUTBOX_RELAY_LOG_H

#include <stdbool.h>

#include <jansson.h> /* json_int_t for "I" fields */

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };

void log_setup(enum log_level level, enum log_format format);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);

/* "debug" → LOG_DEBUG etc.; returns false on an unknown name. */
bool log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);

/*
 * Writes one line: ts, level, msg, then the fields. `fields` is a jansson
 * json_pack() format that builds an object ("{s:i, s:s}", "key", 1, ...), or
 * NULL. Safe from any thread: the line is written with a single write(2).
 * Never pass payloads or secrets.
 */
void log_event(enum log_level level, const char *msg, const char *fields, ...);

#define log_debug(...) log_event(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_event(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_event(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_event(LOG_ERROR, __VA_ARGS__)

#endif
