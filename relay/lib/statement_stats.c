/* Statement kinds: their label names. */
#include "outbox_relay/lib/statement_stats.h"

const char *statement_kind_name(enum statement_kind kind)
{
    switch (kind) {
    case STATEMENT_OTHER:
        return "other";
    case STATEMENT_CLAIM:
        return "claim";
    case STATEMENT_MARK:
        return "mark";
    case STATEMENT_LOCK:
        return "lock";
    case STATEMENT_WAKEUP:
        return "wakeup";
    case STATEMENT_SAMPLE:
        return "sample";
    case STATEMENT_RETENTION:
        return "retention";
    case STATEMENT_DEAD_LETTER:
        return "dead_letter";
    case STATEMENT_KINDS:
        break;
    }
    return "other";
}
