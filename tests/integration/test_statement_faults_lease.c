/* The leader lock, the heartbeat and the watch of a silent leader fail, once and repeatedly:
 * no crash, no row lost or wrongly dead, per-key order, progress once the fault is gone (see
 * statement_faults.h). */
#include "run_suite.h"
#include "statement_faults.h"

static const struct sf_fault faults[] = {
    {"leader lock: error once", "leader_lock", "raise", 1, NULL, NULL, SF_BY_HITS, SF_BEFORE_START,
     false},
    {"leader lock: error repeatedly", "leader_lock", "raise", 3, NULL, NULL, SF_BY_HITS,
     SF_BEFORE_START, false},
    {"leader lock: backend terminated mid-statement", "leader_lock", "terminate", 1, NULL, NULL,
     SF_BY_HITS, SF_BEFORE_START, false},

    /* The heartbeat is SELECT 1: what fails it is the loss of the leader's session. */
    {"heartbeat: leader's session ended once", NULL, NULL, 1, NULL, NULL, SF_BY_TEST, SF_WITH_ROWS,
     false},
    {"heartbeat: leader's session ended repeatedly", NULL, NULL, 3, NULL, NULL, SF_BY_TEST,
     SF_WITH_ROWS, false},

    {"watch of a silent leader: error once", "watch", "raise", 1, NULL, NULL, SF_BY_HITS,
     SF_SILENT_LEADER, false},
    {"watch of a silent leader: error repeatedly", "watch", "raise", 3, NULL, NULL, SF_BY_HITS,
     SF_SILENT_LEADER, false},
    {"watch of a silent leader: statement_timeout", "watch", "timeout", 2, NULL, NULL, SF_BY_HITS,
     SF_SILENT_LEADER, false},
};
#define FAULTS ((int)(sizeof faults / sizeof faults[0]))

START_TEST(test_lease_faults)
{
    sf_run(&faults[_i]);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("statement_faults_lease");
    TCase *tc = it_tcase(suite, "lease", it_start_servers, 120);
    sf_add_rows(tc, test_lease_faults, faults, FAULTS);
    return run_suite(suite);
}
