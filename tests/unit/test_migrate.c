/* Unit tests for migrate's template rewriting, the embedded files and OUTBOX_RETENTION parsing. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/migrate.h"
#include "run_suite.h"

static char *render(const char *text, const char *table, const char *channel)
{
    struct relay_config cfg = {.table = (char *)table, .channel = (char *)channel};
    char *out = migrate_render(text, &cfg);
    ck_assert_ptr_nonnull(out);
    return out;
}

START_TEST(test_names_are_rewritten_mechanically)
{
    char *out = render("CREATE INDEX outbox_x_idx ON outbox (id); -- outbox stays\n"
                       "SELECT pg_notify('outbox', 'outbox x'), Outbox_Enqueue(1), \"outbox\","
                       " outboxes, outbox_relay, outbox_writer, e'outbox' FROM outbox.id;",
                       "shop.Events", "wake");
    ck_assert_str_eq(out, "CREATE INDEX \"Events_x_idx\" ON \"shop\".\"Events\" (id); -- outbox "
                          "stays\n"
                          "SELECT pg_notify('wake', 'outbox x'), \"Events_enqueue\"(1), \"outbox\","
                          " outboxes, outbox_relay, outbox_writer, e'wake' FROM "
                          "\"shop\".\"Events\".id;");
    free(out);
    /* Dollar-quoted bodies are rewritten like the rest; quotes inside strings are kept. */
    out = render("AS $$ INSERT INTO outbox VALUES ('it''s', 'outbox') $$; /* outbox */", "t", "c");
    ck_assert_str_eq(out, "AS $$ INSERT INTO \"t\" VALUES ('it''s', 'c') $$; /* outbox */");
    free(out);
}
END_TEST

START_TEST(test_embedded_files_and_version)
{
    ck_assert_uint_ge(migrate_nfiles, 5);
    for (size_t i = 1; i < migrate_nfiles; i++)
        ck_assert_int_lt(strcmp(migrate_files[i - 1].name, migrate_files[i].name), 0);
    ck_assert_int_ge(migrate_schema_version(), 1);
    bool roles_skipped = false;
    for (size_t i = 0; i < migrate_nfiles; i++)
        if (strstr(migrate_files[i].name, "roles_example"))
            roles_skipped = !migrate_file_applied(&migrate_files[i]);
    ck_assert(roles_skipped);
    /* The default names render to the same statements, only quoted. */
    char *out = render(migrate_files[0].text, "outbox", "outbox");
    ck_assert_ptr_nonnull(strstr(out, "CREATE TABLE IF NOT EXISTS \"outbox\" ("));
    free(out);
}
END_TEST

START_TEST(test_retention_durations)
{
    static const struct {
        const char *value;
        long long seconds; /* -1: refused */
    } cases[] = {{"7d", 604800}, {"36h", 129600}, {"15m", 900}, {"90s", 90}, {"90", 90},
                 {"0", 0},       {"", -1},        {"7w", -1},   {"-1d", -1}, {"d", -1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct relay_config cfg;
        char err[256], arg[64];
        snprintf(arg, sizeof(arg), "--retention=%s", cases[i].value);
        char *argv[] = {"outbox-relay", arg, NULL};
        int rc = config_load(&cfg, 2, argv, err, sizeof(err));
        if (cases[i].seconds < 0) {
            ck_assert_msg(rc < 0, "%s accepted", cases[i].value);
            ck_assert_ptr_nonnull(strstr(err, "OUTBOX_RETENTION"));
        } else {
            ck_assert_msg(rc == 0, "%s: %s", cases[i].value, err);
            ck_assert_int_eq(cfg.retention_s, cases[i].seconds);
        }
        config_free(&cfg);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("migrate");
    TCase *tc = tcase_create("migrate");
    tcase_add_test(tc, test_names_are_rewritten_mechanically);
    tcase_add_test(tc, test_embedded_files_and_version);
    tcase_add_test(tc, test_retention_durations);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
