/* test.h: the tiny test harness every tests/test_*.c uses. Each case prints
 * one line, "PASS <suite>.<case>", "FAIL <suite>.<case>: why" or
 * "SKIP <suite>.<case>: why"; tests/run.sh counts them. */
#ifndef TEST_H
#define TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per-process state; each test binary includes this header once. */
static const char *t_suite = "test";
static int t_failed_case; /* set by CHECK failures inside the running case */
static int t_skipped_case;
static char t_msg[1024];
static int t_npass, t_nfail, t_nskip;

/* Marks the running case failed with a printf-style message and returns
 * from the case function. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            t_fail_at(__FILE__, __LINE__, #cond, "" __VA_ARGS__);                                  \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Skips the running case (counted and named by the runner) and returns. */
#define SKIP(...)                                                                                  \
    do {                                                                                           \
        t_skip_msg("" __VA_ARGS__);                                                                \
        return;                                                                                    \
    } while (0)

#define RUN(fn) t_run(#fn, fn)

__attribute__((unused)) static void t_fail_at(const char *file, int line, const char *expr, const char *fmt, ...) {
    char extra[768] = "";
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(extra, sizeof extra, fmt, ap);
        va_end(ap);
    }
    snprintf(t_msg, sizeof t_msg, "%s:%d: %s%s%s", file, line, expr, *extra ? ": " : "", extra);
    t_failed_case = 1;
}

__attribute__((unused)) static void t_skip_msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_msg, sizeof t_msg, fmt, ap);
    va_end(ap);
    t_skipped_case = 1;
}

static void t_run(const char *name, void (*fn)(void)) {
    if (!strncmp(name, "test_", 5)) name += 5;
    t_failed_case = t_skipped_case = 0;
    t_msg[0] = 0;
    fn();
    if (t_failed_case) {
        printf("FAIL %s.%s: %s\n", t_suite, name, t_msg);
        t_nfail++;
    } else if (t_skipped_case) {
        printf("SKIP %s.%s: %s\n", t_suite, name, t_msg);
        t_nskip++;
    } else {
        printf("PASS %s.%s\n", t_suite, name);
        t_npass++;
    }
    fflush(stdout);
}

/* Unsets every IMGCLASSD_* variable, so that a developer's own settings
 * cannot change what a test sees. */
extern char **environ;
__attribute__((unused)) static void t_clear_imgclassd_env(void) {
    for (char **e = environ; *e;) {
        if (!strncmp(*e, "IMGCLASSD_", 10)) {
            char name[128];
            size_t k = strcspn(*e, "=");
            snprintf(name, sizeof name, "%.*s", (int)k, *e);
            unsetenv(name);
        } else {
            e++;
        }
    }
}

/* Exit status of a test binary: non-zero when any case failed. */
__attribute__((unused)) static int t_done(void) {
    return t_nfail ? 1 : 0;
}

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL on error. */
__attribute__((unused)) static unsigned char *t_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    rewind(f);
    unsigned char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = (size_t)n;
    }
    return buf;
}

#endif
