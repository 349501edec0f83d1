/* The claim and the published mark fail, once and repeatedly: no crash, no row lost or wrongly
 * dead, per-key order, progress once the fault is gone (see statement_faults.h). */
#include "run_suite.h"
#include "statement_faults.h"

static const char revoke_payload[] =
    "REVOKE SELECT ON outbox FROM outbox_relay;"
    "DO $$ BEGIN EXECUTE (SELECT 'GRANT SELECT (' || string_agg(quote_ident(column_name), ', ')"
    " || ') ON outbox TO outbox_relay' FROM information_schema.columns"
    " WHERE table_name = 'outbox' AND column_name <> 'payload'); END $$";

static const struct sf_fault faults[] = {
    {"claim: error once", "claim", "raise", 1, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS, false},
    {"claim: error repeatedly", "claim", "raise", 3, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS, false},
    {"claim: statement_timeout", "claim", "timeout", 2, NULL, NULL, SF_BY_HITS, SF_WITH_ROWS,
     false},
    {"claim: backend terminated mid-statement", "claim", "terminate", 1, NULL, NULL, SF_BY_HITS,
     SF_WITH_ROWS, false},
    {"claim: REVOKE SELECT (payload)", NULL, NULL, 2, revoke_payload,
     "GRANT SELECT ON outbox TO outbox_relay", SF_BY_ROLLBACKS, SF_WITH_ROWS, false},

    {"mark published: error once", "mark_published", "raise", 1, NULL, NULL, SF_BY_HITS,
     SF_WITH_ROWS, false},
    {"mark published: error repeatedly", "mark_published", "raise", 3, NULL, NULL, SF_BY_HITS,
     SF_WITH_ROWS, false},
    {"mark published: CHECK NOT VALID", NULL, NULL, 2,
     "ALTER TABLE outbox ADD CONSTRAINT fault_no_pub CHECK (status <> 'published') NOT VALID",
     "ALTER TABLE outbox DROP CONSTRAINT fault_no_pub", SF_BY_ROLLBACKS, SF_WITH_ROWS, false},
    {"mark published: lock_timeout", "mark_published", "lock", 2, NULL, NULL, SF_BY_HITS,
     SF_WITH_ROWS, false},
    {"mark published: backend terminated mid-statement", "mark_published", "terminate", 1, NULL,
     NULL, SF_BY_HITS, SF_WITH_ROWS, false},
};
#define FAULTS ((int)(sizeof faults / sizeof faults[0]))

START_TEST(test_claim_and_published_mark_faults)
{
    sf_run(&faults[_i]);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("statement_faults");
    TCase *tc = it_tcase(suite, "claim_and_published_mark", it_start_servers, 120);
    sf_add_rows(tc, test_claim_and_published_mark_faults, faults, FAULTS);
    return run_suite(suite);
}
