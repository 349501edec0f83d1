/* Unit tests for structured logging: JSON and text lines on stderr, levels, bad formats, threads.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "outbox_relay/lib/log.h"
#include "run_suite.h"
#include "text_match.h"

/* ---- capturing stderr ------------------------------------------------- */

struct capture {
    int saved_fd;
    FILE *file;
    char *text; /* everything written, after capture_end() */
};

/* A temporary file rather than a pipe: no reader thread, no pipe-buffer deadlock. */
static void capture_begin(struct capture *c)
{
    c->file = tmpfile();
    ck_assert_ptr_nonnull(c->file);
    c->saved_fd = dup(STDERR_FILENO);
    ck_assert_int_ge(c->saved_fd, 0);
    ck_assert_int_eq(dup2(fileno(c->file), STDERR_FILENO), STDERR_FILENO);
    c->text = NULL;
}

static char *capture_end(struct capture *c)
{
    ck_assert_int_eq(dup2(c->saved_fd, STDERR_FILENO), STDERR_FILENO);
    close(c->saved_fd);
    long size = lseek(fileno(c->file), 0, SEEK_END);
    ck_assert_int_ge(size, 0);
    c->text = malloc((size_t)size + 1);
    ck_assert_int_eq(pread(fileno(c->file), c->text, (size_t)size, 0), size);
    c->text[size] = '\0';
    fclose(c->file);
    return c->text;
}

static int count_lines(const char *text)
{
    int n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

/* Line i (0-based) of text, without its newline; caller frees. */
static char *nth_line(const char *text, int i)
{
    const char *start = text;
    for (; i > 0; i--) {
        start = strchr(start, '\n');
        ck_assert_ptr_nonnull(start);
        start++;
    }
    const char *end = strchr(start, '\n');
    ck_assert_ptr_nonnull(end);
    return strndup(start, (size_t)(end - start));
}

#define TS_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* Parses one JSON line and checks the fields every line carries. */
static json_t *parse_json_line(const char *line, const char *level, const char *msg)
{
    json_error_t jerr;
    json_t *obj = json_loads(line, 0, &jerr);
    ck_assert_msg(obj != NULL, "not JSON: %s (%s)", line, jerr.text);
    ck_assert(json_is_object(obj));
    const char *ts = json_string_value(json_object_get(obj, "ts"));
    ck_assert_ptr_nonnull(ts);
    ck_assert_msg(text_matches(ts, "^" TS_RE "$"), "ts: %s", ts);
    ck_assert_str_eq(json_string_value(json_object_get(obj, "level")), level);
    if (msg != NULL)
        ck_assert_str_eq(json_string_value(json_object_get(obj, "msg")), msg);
    /* ts, level, msg lead, so a human scanning raw lines sees them first */
    ck_assert_msg(strncmp(line, "{\"ts\":\"", 7) == 0, "line: %s", line);
    ck_assert_msg(text_matches(line, "^\\{\"ts\":\"" TS_RE "\",\"level\":\"[a-z]+\",\"msg\":"),
                  "line: %s", line);
    return obj;
}

/* ---- JSON lines ------------------------------------------------------- */

START_TEST(test_json_line_with_fields)
{
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    log_info("relay started", "{s:s, s:i, s:b, s:f, s:n}", "table", "outbox", "batch", 100,
             "leader", 1, "ratio", 0.5, "nothing");
    char *text = capture_end(&c);

    ck_assert_int_eq(count_lines(text), 1);
    char *line = nth_line(text, 0);
    json_t *obj = parse_json_line(line, "info", "relay started");
    ck_assert_int_eq(json_object_size(obj), 8);
    ck_assert_str_eq(json_string_value(json_object_get(obj, "table")), "outbox");
    ck_assert_int_eq(json_integer_value(json_object_get(obj, "batch")), 100);
    ck_assert(json_is_true(json_object_get(obj, "leader")));
    ck_assert(json_real_value(json_object_get(obj, "ratio")) == 0.5);
    ck_assert(json_is_null(json_object_get(obj, "nothing")));
    json_decref(obj);
    free(line);
    free(text);
}
END_TEST

START_TEST(test_json_reals_are_short)
{
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    log_warn("postgresql connection lost", "{s:f, s:f}", "retry_in_s", 5.422, "tiny", 0.1);
    char *text = capture_end(&c);
    /* Six significant digits, as a person reads them; not 5.4219999999999997. */
    ck_assert_msg(strstr(text, "\"retry_in_s\":5.422,") != NULL, "line: %s", text);
    ck_assert_msg(strstr(text, "\"tiny\":0.1}") != NULL, "line: %s", text);
    free(text);
}
END_TEST

START_TEST(test_json_line_without_fields)
{
    log_setup(LOG_DEBUG, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    log_debug("tick", NULL);
    log_error("boom", "");
    char *text = capture_end(&c);

    ck_assert_int_eq(count_lines(text), 2);
    char *line = nth_line(text, 0);
    json_t *obj = parse_json_line(line, "debug", "tick");
    ck_assert_int_eq(json_object_size(obj), 3);
    json_decref(obj);
    free(line);
    line = nth_line(text, 1);
    obj = parse_json_line(line, "error", "boom");
    ck_assert_int_eq(json_object_size(obj), 3);
    json_decref(obj);
    free(line);
    free(text);
}
END_TEST

START_TEST(test_json_escapes_stay_on_one_line)
{
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    log_warn("line one\nline \"two\"\t\\", "{s:s}", "error",
             "ERROR:  relation \"x\"\ndoes not exist");
    log_warn("bad utf-8 \xff\xfe here", NULL);
    char *text = capture_end(&c);

    ck_assert_int_eq(count_lines(text), 2);
    char *line = nth_line(text, 0);
    json_t *obj = parse_json_line(line, "warn", "line one\nline \"two\"\t\\");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "error")),
                     "ERROR:  relation \"x\"\ndoes not exist");
    json_decref(obj);
    free(line);

    /* invalid UTF-8 cannot be JSON: it is replaced, the event is kept */
    line = nth_line(text, 1);
    obj = parse_json_line(line, "warn", "bad utf-8 ?? here");
    json_decref(obj);
    free(line);
    free(text);
}
END_TEST

START_TEST(test_field_cannot_shadow_core_keys)
{
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    log_info("real", "{s:s, s:s, s:i}", "msg", "fake", "level", "fake", "ts", 3);
    char *text = capture_end(&c);
    char *line = nth_line(text, 0);
    json_t *obj = parse_json_line(line, "info", "real");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "field_msg")), "fake");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "field_level")), "fake");
    ck_assert_int_eq(json_integer_value(json_object_get(obj, "field_ts")), 3);
    json_decref(obj);
    free(line);
    free(text);
}
END_TEST

/* ---- bad field formats ------------------------------------------------ */

START_TEST(test_bad_fields_format_keeps_the_event)
{
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    log_info("unterminated", "{s:i", "a", 1);
    log_info("null string", "{s:s}", "a", (const char *)NULL);
    log_info("not an object", "i", 42);
    log_info("unknown spec", "{s:Q}", "a", 1);
    log_info("bad key utf-8", "{s:i}", "\xff", 1);
    char *text = capture_end(&c);

    static const char *msgs[] = {"unterminated", "null string", "not an object", "unknown spec",
                                 "bad key utf-8"};
    ck_assert_int_eq(count_lines(text), 5);
    for (int i = 0; i < 5; i++) {
        char *line = nth_line(text, i);
        json_t *obj = parse_json_line(line, "info", msgs[i]);
        const char *why = json_string_value(json_object_get(obj, "log_fields_error"));
        ck_assert_msg(why != NULL && strlen(why) > 0, "line: %s", line);
        json_decref(obj);
        free(line);
    }
    free(text);
}
END_TEST

/* ---- text lines ------------------------------------------------------- */

/* The line minus its timestamp, which is checked separately. */
static const char *after_ts(const char *line)
{
    ck_assert_msg(text_matches(line, "^" TS_RE " "), "line: %s", line);
    return strchr(line, ' ') + 1;
}

START_TEST(test_text_format)
{
    log_setup(LOG_DEBUG, LOG_FORMAT_TEXT);
    struct capture c;
    capture_begin(&c);
    log_info("relay started", "{s:s, s:i, s:s}", "table", "outbox", "batch", 100, "note",
             "quoted value");
    log_debug("d", NULL);
    log_warn("w", "{s:s, s:s, s:b, s:n}", "empty", "", "quote", "say \"hi\"", "ok", 0, "nil");
    log_error("e", "{s:{s:i}, s:[i,i]}", "obj", "a", 1, "arr", 1, 2);
    log_info("two\nlines", "{s:s}", "k", "v\nw");
    char *text = capture_end(&c);

    static const char *want[] = {
        "INFO relay started table=outbox batch=100 note=\"quoted value\"",
        "DEBUG d",
        "WARN w empty=\"\" quote=\"say \\\"hi\\\"\" ok=false nil=null",
        "ERROR e obj=\"{\\\"a\\\":1}\" arr=[1,2]",
        "INFO two\\nlines k=\"v\\nw\"",
    };
    ck_assert_int_eq(count_lines(text), 5);
    for (int i = 0; i < 5; i++) {
        char *line = nth_line(text, i);
        ck_assert_str_eq(after_ts(line), want[i]);
        free(line);
    }
    free(text);
}
END_TEST

START_TEST(test_text_bad_format)
{
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    struct capture c;
    capture_begin(&c);
    log_info("still here", "{s:i", "a", 1);
    char *text = capture_end(&c);
    ck_assert_int_eq(count_lines(text), 1);
    char *line = nth_line(text, 0);
    ck_assert_msg(text_matches(after_ts(line), "^INFO still here log_fields_error=\".+\"$"),
                  "line: %s", line);
    free(line);
    free(text);
}
END_TEST

/* ---- levels ----------------------------------------------------------- */

START_TEST(test_level_filtering)
{
    log_setup(LOG_WARN, LOG_FORMAT_JSON);
    ck_assert(!log_enabled(LOG_DEBUG));
    ck_assert(!log_enabled(LOG_INFO));
    ck_assert(log_enabled(LOG_WARN));
    ck_assert(log_enabled(LOG_ERROR));

    struct capture c;
    capture_begin(&c);
    log_debug("d", NULL);
    log_info("i", "{s:i}", "n", 1);
    log_warn("w", NULL);
    log_error("e", NULL);
    log_set_level(LOG_DEBUG);
    log_debug("d2", NULL);
    log_set_level(LOG_ERROR);
    log_warn("w2", NULL);
    log_error("e2", NULL);
    char *text = capture_end(&c);

    static const struct {
        const char *level, *msg;
    } want[] = {{"warn", "w"}, {"error", "e"}, {"debug", "d2"}, {"error", "e2"}};
    ck_assert_int_eq(count_lines(text), 4);
    for (int i = 0; i < 4; i++) {
        char *line = nth_line(text, i);
        json_decref(parse_json_line(line, want[i].level, want[i].msg));
        free(line);
    }
    free(text);
}
END_TEST

static const struct {
    const char *name;
    bool ok;
    enum log_level level;
} level_names[] = {
    {"debug", true, LOG_DEBUG}, {"info", true, LOG_INFO},   {"warn", true, LOG_WARN},
    {"error", true, LOG_ERROR}, {"INFO", true, LOG_INFO},   {"Warning", true, LOG_WARN},
    {"", false, LOG_INFO},      {"trace", false, LOG_INFO}, {"info ", false, LOG_INFO},
    {NULL, false, LOG_INFO},
};

START_TEST(test_level_parse_table)
{
    /* an out-of-range sentinel: a failed parse must leave *out alone */
    enum log_level got = (enum log_level)99;
    bool ok = log_level_parse(level_names[_i].name, &got);
    ck_assert_msg(ok == level_names[_i].ok, "name \"%s\"",
                  level_names[_i].name ? level_names[_i].name : "NULL");
    if (ok)
        ck_assert_int_eq(got, level_names[_i].level);
    else
        ck_assert_int_eq((int)got, 99);
}
END_TEST

START_TEST(test_level_names_round_trip)
{
    for (int l = LOG_DEBUG; l <= LOG_ERROR; l++) {
        enum log_level back;
        ck_assert(log_level_parse(log_level_name((enum log_level)l), &back));
        ck_assert_int_eq(back, l);
    }
    ck_assert_str_eq(log_level_name(LOG_WARN), "warn");
}
END_TEST

/* ---- threads and long lines ------------------------------------------- */

#define THREADS          4
#define LINES_PER_THREAD 500

static void *log_from_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    char filler[300];
    memset(filler, 'a' + id, sizeof(filler) - 1);
    filler[sizeof(filler) - 1] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++)
        log_info("from thread", "{s:i, s:i, s:s}", "thread", id, "seq", i, "filler", filler);
    return NULL;
}

START_TEST(test_threads_never_interleave)
{
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, log_from_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *text = capture_end(&c);

    ck_assert_int_eq(count_lines(text), THREADS * LINES_PER_THREAD);
    int next_seq[THREADS] = {0};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *obj = parse_json_line(line, "info", "from thread");
        int id = (int)json_integer_value(json_object_get(obj, "thread"));
        ck_assert(id >= 0 && id < THREADS);
        /* each thread's lines arrive whole and in its own order */
        ck_assert_int_eq(json_integer_value(json_object_get(obj, "seq")), next_seq[id]);
        next_seq[id]++;
        ck_assert_uint_eq(strlen(json_string_value(json_object_get(obj, "filler"))), 299);
        json_decref(obj);
    }
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(next_seq[i], LINES_PER_THREAD);
    free(text);
}
END_TEST

START_TEST(test_long_line_and_errno)
{
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    size_t n = 200000;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    struct capture c;
    capture_begin(&c);
    errno = EAGAIN;
    log_info("big", "{s:s}", "blob", big);
    /* callers log right after a failing call and then read errno */
    ck_assert_int_eq(errno, EAGAIN);
    char *text = capture_end(&c);
    ck_assert_int_eq(count_lines(text), 1);
    char *line = nth_line(text, 0);
    json_t *obj = parse_json_line(line, "info", "big");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "blob")), big);
    json_decref(obj);
    free(line);
    free(text);
    free(big);
}
END_TEST

static Suite *log_suite(void)
{
    Suite *s = suite_create("log");

    TCase *tc = tcase_create("json");
    tcase_add_test(tc, test_json_line_with_fields);
    tcase_add_test(tc, test_json_line_without_fields);
    tcase_add_test(tc, test_json_reals_are_short);
    tcase_add_test(tc, test_json_escapes_stay_on_one_line);
    tcase_add_test(tc, test_field_cannot_shadow_core_keys);
    tcase_add_test(tc, test_bad_fields_format_keeps_the_event);
    suite_add_tcase(s, tc);

    tc = tcase_create("text");
    tcase_add_test(tc, test_text_format);
    tcase_add_test(tc, test_text_bad_format);
    suite_add_tcase(s, tc);

    tc = tcase_create("level");
    tcase_add_test(tc, test_level_filtering);
    tcase_add_loop_test(tc, test_level_parse_table, 0,
                        (int)(sizeof(level_names) / sizeof(level_names[0])));
    tcase_add_test(tc, test_level_names_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("concurrency");
    /* Threads writing thousands of lines: seconds under the sanitizers on a loaded machine. */
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_threads_never_interleave);
    tcase_add_test(tc, test_long_line_and_errno);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(log_suite());
}
