/* A strict parser for Prometheus text format 0.0.4, shared by the metrics tests. */
#include "prom_text.h"

#include <check.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool full_match(const char *pattern, const char *text)
{
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

static bool is_metric_name(const char *s)
{
    return full_match("^[a-zA-Z_:][a-zA-Z0-9_:]*$", s);
}

static bool parse_value(const char *text, double *out)
{
    if (strcmp(text, "+Inf") == 0) {
        *out = INFINITY;
        return true;
    }
    if (strcmp(text, "-Inf") == 0) {
        *out = -INFINITY;
        return true;
    }
    if (strcmp(text, "NaN") == 0) {
        *out = NAN;
        return true;
    }
    if (!full_match("^[-+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?$", text))
        return false;
    char *end;
    *out = strtod(text, &end);
    return *end == '\0';
}

struct prom_family *prom_family_find(struct prom_exposition *e, const char *name)
{
    for (size_t k = 0; k < e->nfamilies; k++)
        if (strcmp(e->families[k].name, name) == 0)
            return &e->families[k];
    return NULL;
}

/* "name rest" after "# HELP " or "# TYPE ": copies name, returns rest. */
static const char *split_name(const char *line, char *name, size_t cap)
{
    const char *sp = strchr(line, ' ');
    ck_assert_msg(sp != NULL && sp != line, "no metric name in: %s", line);
    ck_assert_uint_lt((size_t)(sp - line), cap);
    memcpy(name, line, (size_t)(sp - line));
    name[sp - line] = '\0';
    ck_assert_msg(is_metric_name(name), "bad metric name: %s", name);
    return sp + 1;
}

/* Whether a sample name belongs to the family declared last. */
static bool sample_in_family(const struct prom_family *f, const char *name)
{
    size_t n = strlen(f->name);
    if (strcmp(name, f->name) == 0)
        return strcmp(f->type, "histogram") != 0;
    if (strcmp(f->type, "histogram") != 0 || strncmp(name, f->name, n) != 0)
        return false;
    const char *suffix = name + n;
    return strcmp(suffix, "_bucket") == 0 || strcmp(suffix, "_sum") == 0 ||
           strcmp(suffix, "_count") == 0;
}

static void parse_sample(struct prom_exposition *e, const char *line)
{
    ck_assert_uint_lt(e->nsamples, PROM_MAX_SAMPLES);
    struct prom_sample *s = &e->samples[e->nsamples];
    memset(s, 0, sizeof(*s));

    size_t n = strcspn(line, "{ ");
    ck_assert_uint_lt(n, sizeof(s->name));
    memcpy(s->name, line, n);
    ck_assert_msg(is_metric_name(s->name), "bad sample name in: %s", line);
    const char *p = line + n;

    if (*p == '{') {
        p++;
        for (;;) {
            ck_assert_int_lt(s->nlabels, PROM_MAX_LABELS);
            size_t ln = strcspn(p, "=");
            ck_assert_uint_lt(ln, sizeof(s->label_name[0]));
            memcpy(s->label_name[s->nlabels], p, ln);
            ck_assert_msg(full_match("^[a-zA-Z_][a-zA-Z0-9_]*$", s->label_name[s->nlabels]),
                          "bad label name in: %s", line);
            p += ln;
            ck_assert_msg(p[0] == '=' && p[1] == '"', "label without =\" in: %s", line);
            p += 2;
            char *v = s->label_value[s->nlabels];
            size_t vn = 0;
            for (; *p != '"'; p++) {
                ck_assert_msg(*p != '\0', "unterminated label value in: %s", line);
                char c = *p;
                if (c == '\\') {
                    p++;
                    ck_assert_msg(*p == '\\' || *p == '"' || *p == 'n', "bad escape in: %s", line);
                    c = *p == 'n' ? '\n' : *p;
                }
                ck_assert_uint_lt(vn + 1, sizeof(s->label_value[0]));
                v[vn++] = c;
            }
            p++;
            s->nlabels++;
            if (*p == ',') {
                p++;
                continue;
            }
            ck_assert_msg(*p == '}', "labels not closed in: %s", line);
            p++;
            break;
        }
    }
    ck_assert_msg(*p == ' ', "no single space before the value in: %s", line);
    p++;
    ck_assert_uint_lt(strlen(p), sizeof(s->value_text));
    strcpy(s->value_text, p);
    ck_assert_msg(parse_value(s->value_text, &s->value), "bad value in: %s", line);

    ck_assert_msg(e->nfamilies > 0, "sample before any TYPE: %s", line);
    struct prom_family *f = &e->families[e->nfamilies - 1];
    ck_assert_msg(sample_in_family(f, s->name), "sample %s outside its family %s", s->name,
                  f->name);
    s->family = e->nfamilies - 1;
    e->nsamples++;
}

void prom_parse(const char *text, size_t len, struct prom_exposition *e)
{
    memset(e, 0, sizeof(*e));
    ck_assert_uint_eq(strlen(text), len);
    ck_assert_msg(len > 0 && text[len - 1] == '\n', "output does not end in a newline");
    ck_assert_msg(strchr(text, '\r') == NULL, "carriage return in output");

    char *copy = strdup(text);
    ck_assert_ptr_nonnull(copy);
    char *save = NULL;
    bool pending_help = false;
    char help_name[128] = "";
    for (char *line = copy; *line; line = save) {
        char *nl = strchr(line, '\n');
        *nl = '\0';
        save = nl + 1;
        ck_assert_msg(*line != '\0', "empty line in output");

        if (strncmp(line, "# HELP ", 7) == 0) {
            ck_assert_msg(!pending_help, "two HELP lines in a row");
            const char *help = split_name(line + 7, help_name, sizeof(help_name));
            ck_assert_msg(*help != '\0', "empty help for %s", help_name);
            ck_assert_msg(prom_family_find(e, help_name) == NULL, "family %s declared twice",
                          help_name);
            pending_help = true;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128];
            const char *type = split_name(line + 7, name, sizeof(name));
            ck_assert_msg(pending_help && strcmp(name, help_name) == 0,
                          "TYPE %s without its HELP just before", name);
            ck_assert_msg(full_match("^(counter|gauge|histogram|summary|untyped)$", type),
                          "bad type %s", type);
            ck_assert_uint_lt(e->nfamilies, PROM_MAX_FAMILIES);
            struct prom_family *f = &e->families[e->nfamilies++];
            snprintf(f->name, sizeof(f->name), "%s", name);
            snprintf(f->type, sizeof(f->type), "%s", type);
            f->has_help = true;
            pending_help = false;
        } else {
            ck_assert_msg(line[0] != '#', "unexpected comment: %s", line);
            ck_assert_msg(!pending_help, "sample after HELP without TYPE: %s", line);
            parse_sample(e, line);
        }
    }
    ck_assert_msg(!pending_help, "dangling HELP at the end");
    free(copy);
}

const struct prom_sample *prom_sample_get(const struct prom_exposition *e, const char *name,
                                          const char *label, const char *label_value)
{
    const struct prom_sample *found = NULL;
    for (size_t k = 0; k < e->nsamples; k++) {
        const struct prom_sample *s = &e->samples[k];
        if (strcmp(s->name, name) != 0)
            continue;
        if (label != NULL) {
            bool match = false;
            for (int l = 0; l < s->nlabels; l++)
                if (strcmp(s->label_name[l], label) == 0 &&
                    strcmp(s->label_value[l], label_value) == 0)
                    match = true;
            if (!match)
                continue;
        }
        ck_assert_msg(found == NULL, "sample %s duplicated", name);
        found = s;
    }
    ck_assert_msg(found != NULL, "sample %s{%s=%s} missing", name, label ? label : "",
                  label_value ? label_value : "");
    return found;
}

double prom_value(const struct prom_exposition *e, const char *name)
{
    return prom_sample_get(e, name, NULL, NULL)->value;
}

double prom_sum(const struct prom_exposition *e, const char *name)
{
    double sum = 0;
    size_t found = 0;
    for (size_t k = 0; k < e->nsamples; k++) {
        if (strcmp(e->samples[k].name, name) == 0) {
            sum += e->samples[k].value;
            found++;
        }
    }
    ck_assert_msg(found > 0, "no sample %s", name);
    return sum;
}
