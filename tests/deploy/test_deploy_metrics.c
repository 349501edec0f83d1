/* The dashboard and the alerts use only metrics the relay exports, and chart every one of them. */
#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/metrics.h"
#include "run_suite.h"

#define MAX_NAMES 64

struct family {
    char name[128];
    char type[32];
};

struct families {
    struct family f[MAX_NAMES];
    int n;
};

/* The families the relay renders, from its own "# TYPE name type" lines; the WAL families too,
 * which it renders where pg_stat_statements can be read. */
static void exported_families(struct families *out)
{
    struct metrics m;
    metrics_init(&m);
    m.wal.known = true;
    size_t len = 0;
    char *text = metrics_render(&m, "test", &len);
    ck_assert_ptr_nonnull(text);

    out->n = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        struct family fam;
        if (sscanf(line, "# TYPE %127s %31s", fam.name, fam.type) != 2)
            continue;
        ck_assert_int_lt(out->n, MAX_NAMES);
        out->f[out->n++] = fam;
    }
    free(text);
    ck_assert_int_gt(out->n, 0);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    buf[size] = '\0';
    fclose(f);
    return buf;
}

/* A series name used in a query belongs to a family: itself, or a histogram's _bucket/_sum/_count.
 */
static const struct family *family_of(const struct families *fams, const char *series)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < fams->n; i++) {
        const struct family *fam = &fams->f[i];
        size_t n = strlen(fam->name);
        if (strcmp(series, fam->name) == 0)
            return fam;
        if (strcmp(fam->type, "histogram") != 0 || strncmp(series, fam->name, n) != 0)
            continue;
        for (size_t s = 0; s < sizeof(suffixes) / sizeof(suffixes[0]); s++)
            if (strcmp(series + n, suffixes[s]) == 0)
                return fam;
    }
    return NULL;
}

/* Every outbox_relay_* word of the file must be an exported series; marks the families used. */
static void check_file(const struct families *fams, bool *used, const char *relpath)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", SOURCE_DIR, relpath);
    char *text = read_file(path);
    int found = 0;

    for (char *p = text; (p = strstr(p, "outbox_relay_")) != NULL;) {
        /* Only whole words: OutboxRelayDown or outbox-relay are not series. */
        if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_')) {
            p++;
            continue;
        }
        char series[128];
        size_t n = 0;
        while ((isalnum((unsigned char)p[n]) || p[n] == '_') && n < sizeof(series) - 1) {
            series[n] = p[n];
            n++;
        }
        series[n] = '\0';
        p += n;

        const struct family *fam = family_of(fams, series);
        ck_assert_msg(fam != NULL, "%s uses %s, which the relay does not export", relpath, series);
        used[fam - fams->f] = true;
        found++;
    }
    ck_assert_msg(found > 0, "%s uses no outbox_relay_ metric at all", relpath);
    free(text);
}

START_TEST(dashboard_uses_exported_metrics_and_shows_them_all)
{
    struct families fams;
    exported_families(&fams);
    bool used[MAX_NAMES] = {false};

    check_file(&fams, used, "deploy/grafana/outbox-relay.json");
    for (int i = 0; i < fams.n; i++)
        ck_assert_msg(used[i], "the dashboard does not show %s", fams.f[i].name);
}
END_TEST

START_TEST(alerts_use_exported_metrics)
{
    struct families fams;
    exported_families(&fams);
    bool used[MAX_NAMES] = {false};

    check_file(&fams, used, "deploy/prometheus/alerts.yaml");
    /* The four conditions the alerts exist for. */
    static const char *const needed[] = {
        "outbox_relay_oldest_pending_age_seconds", /* growing lag */
        "outbox_relay_dead_rows",                  /* dead rows */
        "outbox_relay_leader",                     /* no leader */
        "outbox_relay_published_total",            /* stalled relay */
    };
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        const struct family *fam = family_of(&fams, needed[i]);
        ck_assert_msg(fam != NULL, "the relay no longer exports %s", needed[i]);
        ck_assert_msg(used[fam - fams.f], "no alert uses %s", needed[i]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("deploy_metrics");
    TCase *tc = tcase_create("names");
    tcase_add_test(tc, dashboard_uses_exported_metrics_and_shows_them_all);
    tcase_add_test(tc, alerts_use_exported_metrics);
    suite_add_tcase(s, tc);

    return run_suite(s);
}
