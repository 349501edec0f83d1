/* Rate-limited "publish failed" warnings: a misconfigured stream shows within seconds, not as a
 * line per row. */
#include "outbox_relay/pipeline/fail_log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"

struct fail_log {
    double interval_s;
    fail_log_emit_fn emit;
    void *arg;
    struct fail_log_report pending[PUBLISH_REASONS];
    double last_line[PUBLISH_REASONS];
    bool ever[PUBLISH_REASONS]; /* a line was emitted for the reason */
};

struct fail_log *fail_log_create(double interval_s, fail_log_emit_fn emit, void *arg, char *err,
                                 size_t errlen)
{
    struct fail_log *fl = calloc(1, sizeof(*fl));
    if (fl == NULL) {
        snprintf(err, errlen, "fail_log: out of memory");
        return NULL;
    }
    fl->interval_s = interval_s;
    fl->emit = emit ? emit : fail_log_warn;
    fl->arg = emit ? arg : fl;
    for (int r = 0; r < PUBLISH_REASONS; r++)
        fl->pending[r].reason = (enum publish_reason)r;
    return fl;
}

void fail_log_destroy(struct fail_log *fl)
{
    free(fl);
}

void fail_log_record(struct fail_log *fl, enum publish_reason reason, int64_t id, const char *error)
{
    if (fl == NULL)
        return;
    if ((unsigned)reason >= PUBLISH_REASONS)
        reason = PUBLISH_OTHER;
    struct fail_log_report *p = &fl->pending[reason];
    if (p->count == 0)
        snprintf(p->error, sizeof(p->error), "%s", error ? error : "");
    if (p->nids < FAIL_LOG_IDS)
        p->ids[p->nids++] = id;
    p->count++;
}

size_t fail_log_flush(struct fail_log *fl, double now)
{
    if (fl == NULL)
        return 0;
    size_t emitted = 0;
    for (int r = 0; r < PUBLISH_REASONS; r++) {
        struct fail_log_report *p = &fl->pending[r];
        if (p->count == 0 || (fl->ever[r] && now - fl->last_line[r] < fl->interval_s))
            continue;
        fl->emit(fl->arg, p);
        fl->ever[r] = true;
        fl->last_line[r] = now;
        memset(p, 0, sizeof(*p));
        p->reason = (enum publish_reason)r;
        emitted++;
    }
    return emitted;
}

void fail_log_warn(void *arg, const struct fail_log_report *report)
{
    const struct fail_log *fl = arg;
    if (!log_enabled(LOG_WARN))
        return; /* "o" below hands the array to the event: build it only when it is written */
    json_t *ids = json_array();
    for (size_t i = 0; i < report->nids; i++)
        json_array_append_new(ids, json_integer((json_int_t)report->ids[i]));
    log_warn("publish failed", "{s:s, s:I, s:o, s:s, s:f}", "reason",
             publish_reason_name(report->reason), "count", (json_int_t)report->count, "first_ids",
             ids, "error", report->error, "interval_s", fl->interval_s);
}
