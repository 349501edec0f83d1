/* The end of every test executable's main(): run a Check suite, answer CTest. */
#ifndef OUTBOX_RELAY_TEST_RUN_SUITE_H
#define OUTBOX_RELAY_TEST_RUN_SUITE_H

#include <check.h>
#include <stdlib.h>

/* Runs every test of `suite` (CK_NORMAL output); EXIT_SUCCESS if none failed. */
static inline int run_suite(Suite *suite)
{
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
