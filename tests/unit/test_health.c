/* /readyz and /healthz: each answer, and its reason, from the pipeline's facts. */
#include <check.h>
#include <string.h>

#include "outbox_relay/pipeline/health.h"
#include "run_suite.h"

struct probe_case {
    const char *name;
    struct relay_facts facts;
    bool ready, healthy;
    const char *ready_why, *healthy_why; /* substrings of the reasons when the answer is no */
};

static const struct probe_case cases[] = {
    {"a leader making progress", {.nats_up = true, .leading = true}, true, true, NULL, NULL},
    {"a standby, all well", {.nats_up = true}, true, true, NULL, NULL},
    {"PostgreSQL down: not ready, still healthy (it reconnects)",
     {.pg_not_ready = "postgresql not connected", .nats_up = true, .leading = false},
     false,
     true,
     "postgresql not connected",
     NULL},
    {"NATS down", {.nats_up = false}, false, true, "nats not connected", NULL},
    {"stopped", {.stopped = true, .nats_up = true}, true, false, NULL, "stopped"},
    {"a leader with due rows and no progress",
     {.nats_up = true, .leading = true, .stalled_for_s = 31},
     true,
     false,
     NULL,
     "no progress for 31 s"},
    {"a standby that sees the leader silent past its lease",
     {.nats_up = true, .holder_stalled = true, .holder_silent_s = 16},
     true,
     false,
     NULL,
     "leader stalled: its session has been silent for 16 s"},
    {"a leader is not judged by the lease it holds itself",
     {.nats_up = true, .leading = true, .holder_stalled = true, .holder_silent_s = 16},
     true,
     true,
     NULL,
     NULL},
};

START_TEST(test_probe_answers)
{
    const struct probe_case *c = &cases[_i];
    char why[200] = "";
    bool ready = health_ready(&c->facts, why, sizeof why);
    ck_assert_msg(ready == c->ready, "%s: ready %d", c->name, ready);
    if (!ready)
        ck_assert_msg(strstr(why, c->ready_why) != NULL, "%s: readyz said \"%s\"", c->name, why);
    why[0] = '\0';
    bool healthy = health_healthy(&c->facts, why, sizeof why);
    ck_assert_msg(healthy == c->healthy, "%s: healthy %d", c->name, healthy);
    if (!healthy)
        ck_assert_msg(strstr(why, c->healthy_why) != NULL, "%s: healthz said \"%s\"", c->name, why);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("health");
    TCase *tc = tcase_create("probes");
    tcase_add_loop_test(tc, test_probe_answers, 0, (int)(sizeof cases / sizeof cases[0]));
    suite_add_tcase(s, tc);
    return run_suite(s);
}
