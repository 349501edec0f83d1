/* The sample, the sleep lock and retention fail, once and repeatedly: no crash, no row lost or
 * wrongly dead, per-key order, progress once the fault is gone (see statement_faults.h). */
#include "run_suite.h"
#include "statement_faults.h"

static const struct sf_fault faults[] = {
    {"sample: error once", "sample", "raise", 1, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS, false},
    {"sample: error repeatedly", "sample", "raise", 3, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS, false},
    {"sample: statement_timeout", "sample", "timeout", 2, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS,
     false},
    {"sample: backend terminated mid-statement", "sample", "terminate", 1, NULL, NULL, SF_BY_HITS,
     SF_WITH_ROWS, false},

    {"sleep lock: error once", "sleep_lock", "raise", 1, NULL, NULL, SF_BY_HITS, SF_BEFORE_ROWS,
     false},
    {"sleep lock: error repeatedly", "sleep_lock", "raise", 3, NULL, NULL, SF_BY_HITS,
     SF_BEFORE_ROWS, false},
    {"sleep lock: backend terminated mid-statement", "sleep_lock", "terminate", 1, NULL, NULL,
     SF_BY_HITS, SF_BEFORE_ROWS, false},

    {"retention: error once", "retention", "raise", 1, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS, false},
    {"retention: error repeatedly", "retention", "raise", 3, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS,
     false},
    {"retention: lock_timeout", "retention", "lock", 2, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS,
     false},
    /* From the example role too, which grants DELETE for retention. */
    {"retention: REVOKE DELETE", NULL, NULL, 2, "REVOKE DELETE ON outbox FROM relay, outbox_relay",
     "GRANT DELETE ON outbox TO relay, outbox_relay", SF_BY_ROLLBACKS, SF_WITH_ROWS, false},
};
#define FAULTS ((int)(sizeof faults / sizeof faults[0]))

START_TEST(test_sample_sleep_retention_faults)
{
    sf_run(&faults[_i]);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("statement_faults_sample");
    TCase *tc = it_tcase(suite, "sample_sleep_retention", it_start_servers, 120);
    sf_add_rows(tc, test_sample_sleep_retention_faults, faults, FAULTS);
    return run_suite(suite);
}
