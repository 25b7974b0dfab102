/* cpus.c: how many CPUs the server may use: the affinity mask, capped by
 * the cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us/cpu.cfs_period_us),
 * so that default thread counts fit a container's limit, not the host. */
#include "server.h"

#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Reading cgroup files                                                     */
/* ------------------------------------------------------------------------ */

/* Reads the first line of path into buf. Returns 0, or -1 if unreadable. */
static int read_line(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *ok = fgets(buf, (int)n, f);
    fclose(f);
    if (!ok) return -1;
    buf[strcspn(buf, "\n")] = 0;
    return 0;
}

/* Strict non-negative decimal. Returns 0, or -1. */
static int parse_u64(const char *s, unsigned long long *out) {
    if (*s < '0' || *s > '9') return -1;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end && *end != ' ') return -1;
    *out = v;
    return 0;
}

/* CPUs allowed by one directory's quota (rounded up), or INT_MAX when it
 * sets none or cannot be read. v2: "cpu.max" holds "max PERIOD" or
 * "QUOTA PERIOD"; v1: cpu.cfs_quota_us (-1 = none) and cpu.cfs_period_us. */
static int dir_quota(const char *dir, int v2) {
    char path[PATH_MAX], line[128];
    unsigned long long quota, period;
    if (v2) {
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        if (read_line(path, line, sizeof line) != 0) return INT_MAX;
        char *sp = strchr(line, ' ');
        if (!sp || parse_u64(line, &quota) != 0 || parse_u64(sp + 1, &period) != 0)
            return INT_MAX; /* "max ..." or garbage */
    } else {
        snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
        if (read_line(path, line, sizeof line) != 0 || parse_u64(line, &quota) != 0)
            return INT_MAX; /* "-1" or absent */
        snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
        if (read_line(path, line, sizeof line) != 0 || parse_u64(line, &period) != 0)
            return INT_MAX;
    }
    if (period == 0 || quota == 0) return INT_MAX;
    unsigned long long cpus = (quota + period - 1) / period;
    return cpus > INT_MAX ? INT_MAX : (int)cpus;
}

/* Smallest quota from mount/rel up to mount: a parent's limit binds its
 * children. When mount/rel does not exist (a container that sees the host's
 * cgroup path but has its own cgroup mounted at the root), mount alone. */
static int tree_quota(const char *mount, const char *rel, int v2) {
    char dir[PATH_MAX];
    int best = dir_quota(mount, v2);
    if (!rel || !*rel || !strcmp(rel, "/")) return best;
    if (snprintf(dir, sizeof dir, "%s%s%s", mount, rel[0] == '/' ? "" : "/", rel) >=
            (int)sizeof dir ||
        strstr(rel, "..") || access(dir, F_OK) != 0)
        return best;
    size_t base = strlen(mount);
    for (;;) {
        int q = dir_quota(dir, v2);
        if (q < best) best = q;
        char *slash = strrchr(dir + base, '/');
        if (!slash) break;
        *slash = 0;
        if (strlen(dir) <= base) break;
    }
    return best;
}

/* Finds the process's cgroup paths in a /proc/self/cgroup file: the v2
 * entry "0::PATH" and the v1 entry whose controller list has "cpu". */
static void self_paths(const char *self_cgroup, char *v2, char *v1, size_t n) {
    v2[0] = v1[0] = 0;
    FILE *f = self_cgroup ? fopen(self_cgroup, "r") : NULL;
    if (!f) return;
    char line[PATH_MAX + 128];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = 0;
        const char *ctrl = c1 + 1, *path = c2 + 1;
        if (!strcmp(line, "0") && !*ctrl) {
            snprintf(v2, n, "%s", path);
            continue;
        }
        /* ctrl is a comma-separated list: "cpu", "cpu,cpuacct", ... */
        for (const char *p = ctrl; *p;) {
            size_t len = strcspn(p, ",");
            if (len == 3 && !strncmp(p, "cpu", 3)) snprintf(v1, n, "%s", path);
            p += len;
            if (*p == ',') p++;
        }
    }
    fclose(f);
}

/* ------------------------------------------------------------------------ */
/* Public                                                                   */
/* ------------------------------------------------------------------------ */

static int affinity_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int srv_cpu_count_at(const char *cgroup_root, const char *self_cgroup) {
    char v2[PATH_MAX], v1[PATH_MAX], mount[PATH_MAX];
    self_paths(self_cgroup, v2, v1, sizeof v2);
    int cpus = affinity_count();
    /* cgroup v2: cpu.max in the unified hierarchy at the root. */
    int q = tree_quota(cgroup_root, v2, 1);
    if (q < cpus) cpus = q;
    /* cgroup v1: the cpu controller's own mount, under whichever name the
     * distribution gives it. */
    static const char *const v1_dirs[] = {"cpu", "cpu,cpuacct", "cpuacct,cpu"};
    for (size_t i = 0; i < sizeof v1_dirs / sizeof v1_dirs[0]; i++) {
        snprintf(mount, sizeof mount, "%s/%s", cgroup_root, v1_dirs[i]);
        if (access(mount, F_OK) != 0) continue;
        q = tree_quota(mount, v1, 0);
        if (q < cpus) cpus = q;
        break;
    }
    return cpus > 0 ? cpus : 1;
}

int srv_cpu_count(void) {
    return srv_cpu_count_at("/sys/fs/cgroup", "/proc/self/cgroup");
}
