/* The benchmark's results: recorded rows, the conditions of the run, the table and the CSV. */
/* _GNU_SOURCE comes from the build. */
#include "bench.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

/* ---- results: one CSV row each, printed as the table ---- */

struct result {
    char section[16];
    char metric[40];
    char value[160]; /* formatted number, or text for conditions */
    char unit[16];
};

static struct result results[MAX_RESULTS];
static int nresults;

void bench_record_text(const char *section, const char *metric, const char *unit, const char *fmt,
                       ...)
{
    ck_assert_int_lt(nresults, MAX_RESULTS);
    struct result *r = &results[nresults++];
    snprintf(r->section, sizeof r->section, "%s", section);
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->value, sizeof r->value, fmt, ap);
    va_end(ap);
    /* CSV without quoting: keep text free of separators. */
    for (char *p = r->value; *p; p++)
        if (*p == ',' || *p == '\n' || *p == '"')
            *p = ';';
}

void bench_record(const char *section, const char *metric, const char *unit, double value)
{
    int decimals = fabs(value) >= 100 || value == floor(value) ? 0 : fabs(value) >= 1 ? 2 : 4;
    bench_record_text(section, metric, unit, "%.*f", decimals, value);
}

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double percentile(const double *sorted, size_t n, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return sorted[rank > 0 ? rank - 1 : 0];
}

/*
 * Latency under a steady load of `rate` rows/s from `producers` connections
 * for `seconds`, reported in `section` (also the event id tag and the
 * subject's last token), with the ratio of its p99 to issue 11's goal for
 * that load. `with_idle`: measure the idle window first.
 */

/* ---- conditions, table, CSV ---- */

void bench_conditions(PGconn *conn, const char *section_suffix)
{
    char buf[256], line[512];
    if (section_suffix) {
        FILE *f = fopen("/proc/loadavg", "r");
        if (f && fgets(line, sizeof line, f))
            line[strcspn(line, "\n")] = '\0';
        if (f)
            fclose(f);
        bench_record_text("conditions", section_suffix, "", "%s", f ? line : "?");
        return;
    }
    bench_record_text("conditions", "cores", "", "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    text_of_file_line("/proc/cpuinfo", "model name", buf, sizeof buf);
    bench_record_text("conditions", "cpu", "", "%s", buf);
    struct utsname u;
    uname(&u);
    bench_record_text("conditions", "kernel", "", "%s %s", u.sysname, u.release);
    bench_record_text("conditions", "postgresql", "", "%s",
                      pg_show(conn, "server_version", buf, sizeof buf));
    snprintf(line, sizeof line, "%s/nats.log", it_dir());
    text_of_file_line(line, "Version:", buf, sizeof buf);
    bench_record_text("conditions", "nats_server", "", "%s", buf);
    bench_record_text("conditions", "nats_c", "", "%s", nats_GetVersion());
    bench_record_text("conditions", "payload_bytes", "B", "%d", opt.payload_bytes);
    bench_record_text("conditions", "fsync", "", "%s", pg_show(conn, "fsync", buf, sizeof buf));
    bench_record_text("conditions", "synchronous_commit", "", "%s",
                      pg_show(conn, "synchronous_commit", buf, sizeof buf));
    bench_record_text("conditions", "full_page_writes", "", "%s",
                      pg_show(conn, "full_page_writes", buf, sizeof buf));
    bench_record_text("conditions", "nats_storage", "", "file");
    bench_record_text("conditions", "build", "", "%s", BENCH_BUILD_TYPE);
    line[0] = '\0';
    for (int i = 0; i < opt.nrelay_env; i++)
        snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s", i ? " " : "",
                 opt.relay_env[i]);
    bench_record_text("conditions", "relay_env", "", "%s", line[0] ? line : "defaults");
    bench_record_text("conditions", "perf_during_drain", "", "%s", opt.perf_drain ? "yes" : "no");
}

void bench_write_outputs(void)
{
    FILE *f = fopen(opt.csv, "w");
    ck_assert_msg(f != NULL, "%s: %s", opt.csv, strerror(errno));
    fprintf(f, "section,metric,value,unit\n");
    printf("\n%-11s %-24s %16s  %s\n", "section", "metric", "value", "unit");
    /* Grouped by section, sections in the order they first appear. */
    for (int i = 0; i < nresults; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(results[j].section, results[i].section) == 0;
        if (seen)
            continue;
        for (int k = i; k < nresults; k++) {
            const struct result *r = &results[k];
            if (strcmp(r->section, results[i].section) != 0)
                continue;
            fprintf(f, "%s,%s,%s,%s\n", r->section, r->metric, r->value, r->unit);
            printf("%-11s %-24s %16s  %s\n", r->section, r->metric, r->value, r->unit);
        }
    }
    ck_assert_int_eq(fclose(f), 0);
    printf("\nCSV: %s\n", opt.csv);
    fflush(stdout);
}
