/* A strict parser for Prometheus text format 0.0.4, shared by the metrics tests. */
#ifndef OUTBOX_RELAY_TEST_PROM_TEXT_H
#define OUTBOX_RELAY_TEST_PROM_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#define PROM_MAX_FAMILIES 64
#define PROM_MAX_SAMPLES  128
#define PROM_MAX_LABELS   4

struct prom_family {
    char name[128];
    char type[16];
    bool has_help;
};

struct prom_sample {
    char name[128];
    size_t family; /* index into prom_exposition.families */
    int nlabels;
    char label_name[PROM_MAX_LABELS][64];
    char label_value[PROM_MAX_LABELS][128]; /* unescaped */
    char value_text[64];
    double value;
};

struct prom_exposition {
    struct prom_family families[PROM_MAX_FAMILIES];
    size_t nfamilies;
    struct prom_sample samples[PROM_MAX_SAMPLES];
    size_t nsamples;
};

/*
 * Parses a whole exposition and fails the running Check test on the first
 * violation: every line is "# HELP name text", "# TYPE name type" (right
 * after its HELP, once per family) or a sample of the family declared last
 * (histograms: _bucket, _sum, _count); names, label names, escapes and
 * values are checked against the 0.0.4 grammar; no empty lines, no CR, a
 * final newline.
 */
void prom_parse(const char *text, size_t len, struct prom_exposition *e);

struct prom_family *prom_family_find(struct prom_exposition *e, const char *name);

/* The one sample with this name (and label=value, if label is not NULL); fails the test if it is
 * missing or duplicated. */
const struct prom_sample *prom_sample_get(const struct prom_exposition *e, const char *name,
                                          const char *label, const char *label_value);

/* The value of the one unlabelled sample `name`. */
double prom_value(const struct prom_exposition *e, const char *name);

/* The sum of every sample named `name`, whatever its labels (e.g. a counter split by reason);
 * fails the test if there is none. */
double prom_sum(const struct prom_exposition *e, const char *name);

#endif
