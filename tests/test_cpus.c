/* test_cpus.c: srv_cpu_count_at on fake cgroup trees: v2 cpu.max, v1
 * cfs quota/period, nesting, rounding, garbage, and the minimum with the
 * affinity mask (narrowed with sched_setaffinity). */
#include "server.h"
#include "test.h"

#include <limits.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

/* Writes text to root/rel, creating the directories on the way. */
static int put(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* A fresh, empty fake cgroup root. */
static void fresh(void) {
    char cmd[300];
    if (root[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", root);
    }
    snprintf(root, sizeof root, "/tmp/test_cpus.XXXXXX");
    if (!mkdtemp(root)) root[0] = 0;
}

static int affinity(void) {
    cpu_set_t s;
    CPU_ZERO(&s);
    return sched_getaffinity(0, sizeof s, &s) == 0 ? CPU_COUNT(&s) : 1;
}

static int min_aff(int n) {
    int a = affinity();
    return n < a ? n : a;
}

/* srv_cpu_count_at with a /proc/self/cgroup file holding self (or NULL). */
static int count(const char *self) {
    if (!self) return srv_cpu_count_at(root, NULL);
    put("self_cgroup", self);
    char p[300];
    snprintf(p, sizeof p, "%s/self_cgroup", root);
    return srv_cpu_count_at(root, p);
}

static void test_no_cgroup(void) {
    fresh();
    CHECK(root[0]);
    CHECK(count(NULL) == affinity(), "got %d", count(NULL));
    CHECK(srv_cpu_count_at("/nonexistent", "/nonexistent") == affinity());
}

static void test_v2_quota(void) {
    static const struct {
        const char *cpu_max;
        int want; /* before the affinity minimum; INT_MAX = no limit */
    } cases[] = {
        {"max 100000\n", INT_MAX}, {"200000 100000\n", 2},
        {"100000 100000\n", 1},    {"150000 100000\n", 2},
        {"50000 100000\n", 1},     {"1 100000\n", 1},
        {"400000 100000", 4},      {"100000000 100000\n", 1000},
        {"garbage\n", INT_MAX},    {"100000 0\n", INT_MAX},
        {"\n", INT_MAX},           {"-5 100000\n", INT_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fresh();
        put("cpu.max", cases[i].cpu_max);
        int got = count("0::/\n"), want = min_aff(cases[i].want);
        CHECK(got == want, "cpu.max '%s': got %d, want %d", cases[i].cpu_max, got, want);
    }
}

static void test_v1_quota(void) {
    fresh();
    put("cpu/cpu.cfs_quota_us", "-1\n");
    put("cpu/cpu.cfs_period_us", "100000\n");
    CHECK(count(NULL) == affinity(), "unlimited: got %d", count(NULL));
    put("cpu/cpu.cfs_quota_us", "100000\n");
    CHECK(count(NULL) == 1, "1 CPU: got %d", count(NULL));
    put("cpu/cpu.cfs_quota_us", "250000\n");
    CHECK(count(NULL) == min_aff(3), "2.5 CPUs round up: got %d", count(NULL));
    put("cpu/cpu.cfs_period_us", "50000\n");
    put("cpu/cpu.cfs_quota_us", "50000\n");
    CHECK(count(NULL) == 1, "period 50 ms: got %d", count(NULL));
    /* Debian and others mount it as cpu,cpuacct. */
    fresh();
    put("cpu,cpuacct/cpu.cfs_quota_us", "100000\n");
    put("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    CHECK(count("4:cpu,cpuacct:/\n") == 1, "cpu,cpuacct: got %d", count(NULL));
    /* No period file: no limit rather than a guess. */
    fresh();
    put("cpu/cpu.cfs_quota_us", "100000\n");
    CHECK(count(NULL) == affinity());
}

static void test_nested(void) {
    /* The process sits in /a/b; the parent /a is limited to 1 CPU. */
    fresh();
    put("a/b/cpu.max", "max 100000\n");
    put("a/cpu.max", "100000 100000\n");
    put("cpu.max", "max 100000\n");
    CHECK(count("0::/a/b\n") == 1, "parent limit ignored: got %d", count("0::/a/b\n"));
    /* The limit on the process's own group. */
    fresh();
    put("a/b/cpu.max", "100000 100000\n");
    CHECK(count("0::/a/b\n") == 1);
    /* A sibling's limit does not apply. */
    fresh();
    put("a/c/cpu.max", "100000 100000\n");
    put("a/b/cpu.max", "max 100000\n");
    CHECK(count("0::/a/b\n") == affinity());
    /* A path that does not exist here (a container seeing the host's path
     * with its own cgroup mounted at the root): the root's file counts. */
    fresh();
    put("cpu.max", "100000 100000\n");
    CHECK(count("0::/docker/0123abcd\n") == 1, "got %d", count("0::/docker/0123abcd\n"));
    /* v1 nesting, found through the line naming the cpu controller. */
    fresh();
    put("cpu/kubepods/pod1/cpu.cfs_quota_us", "100000\n");
    put("cpu/kubepods/pod1/cpu.cfs_period_us", "100000\n");
    CHECK(count("12:memory:/x\n3:cpu,cpuacct:/kubepods/pod1\n0::/\n") == 1, "v1 nested");
    CHECK(count("12:cpuacct:/kubepods/pod1\n") == affinity(), "cpuacct is not cpu");
}

static void test_affinity_min(void) {
    /* Narrow the mask to one CPU: a 4-CPU quota then gives 1. */
    cpu_set_t old, one;
    CHECK(sched_getaffinity(0, sizeof old, &old) == 0);
    int first = -1;
    for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
        if (CPU_ISSET(i, &old)) first = i;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    CHECK(sched_setaffinity(0, sizeof one, &one) == 0);
    fresh();
    put("cpu.max", "400000 100000\n");
    int got = count(NULL);
    put("cpu.max", "max 100000\n");
    int got_max = count(NULL);
    sched_setaffinity(0, sizeof old, &old);
    CHECK(got == 1 && got_max == 1, "one CPU allowed: got %d and %d", got, got_max);
}

static void test_this_machine(void) {
    int n = srv_cpu_count();
    CHECK(n >= 1 && n <= affinity(), "srv_cpu_count() = %d, affinity %d", n, affinity());
}

int main(void) {
    t_suite = "cpus";
    RUN(test_no_cgroup);
    RUN(test_v2_quota);
    RUN(test_v1_quota);
    RUN(test_nested);
    RUN(test_affinity_min);
    RUN(test_this_machine);
    fresh(); /* removes the last tree */
    if (root[0]) rmdir(root);
    return t_done();
}
