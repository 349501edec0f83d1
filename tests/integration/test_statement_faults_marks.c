/* The failed and dead marks, and every mark at once, fail: no crash, no row lost or wrongly
 * dead, per-key order, progress once the fault is gone (see statement_faults.h). */
#include "run_suite.h"
#include "statement_faults.h"

static const struct sf_fault faults[] = {
    {"mark failed: error once", "mark_failed", "raise", 1, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS,
     false},
    {"mark failed: error repeatedly", "mark_failed", "raise", 3, NULL, NULL, SF_BY_HITS,
     SF_WITH_ROWS, false},
    {"mark failed: statement_timeout", "mark_failed", "timeout", 2, NULL, NULL, SF_BY_HITS,
     SF_WITH_ROWS, false},

    {"mark dead: error once", "mark_dead", "raise", 1, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS, false},
    {"mark dead: error repeatedly", "mark_dead", "raise", 3, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS,
     false},
    {"mark dead: backend terminated mid-statement", "mark_dead", "terminate", 1, NULL, NULL,
     SF_BY_HITS, SF_WITH_ROWS, false},

    {"marks: REVOKE UPDATE (status)", NULL, NULL, 2,
     "REVOKE UPDATE (status) ON outbox FROM outbox_relay",
     "GRANT UPDATE (status) ON outbox TO outbox_relay", SF_BY_ROLLBACKS, SF_WITH_ROWS, false},
    {"marks: read-only sessions", NULL, NULL, 2,
     "ALTER ROLE relay SET default_transaction_read_only = on",
     "ALTER ROLE relay RESET default_transaction_read_only", SF_BY_ROLLBACKS, SF_WITH_ROWS, true},
};
#define FAULTS ((int)(sizeof faults / sizeof faults[0]))

START_TEST(test_failed_and_dead_mark_faults)
{
    sf_run(&faults[_i]);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("statement_faults_marks");
    TCase *tc = it_tcase(suite, "failed_and_dead_marks", it_start_servers, 120);
    sf_add_rows(tc, test_failed_and_dead_mark_faults, faults, FAULTS);
    return run_suite(suite);
}
