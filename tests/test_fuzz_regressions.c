/* test_fuzz_regressions.c: replays every kept fuzz input through the same
 * entry points the libFuzzer targets call, with no clang needed: each file
 * of tests/fuzz/regressions/<target>/ (inputs that once crashed or hung)
 * and of tests/fuzz/corpus/<target>/ (the seeds). A crash fails the binary;
 * under `make asan` the replay runs with AddressSanitizer, UBSan and leak
 * checking. Each target is one case that also checks its time budget. */
#include "test.h"

#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The targets, each entry point renamed. */
#define LLVMFuzzerTestOneInput fuzz_jpeg_one
#include "fuzz/fuzz_jpeg.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_multipart_one
#include "fuzz/fuzz_multipart.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_safetensors_one
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_http_one
#include "fuzz/fuzz_http.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_v2_one
#include "fuzz/fuzz_v2.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_kserve_v1_one
#include "fuzz/fuzz_kserve_v1.c"
#undef LLVMFuzzerTestOneInput

static char g_root[PATH_MAX];

/* The repository root: the nearest parent of this binary (or of the
 * working directory) that holds tests/fuzz. */
static int find_root(void) {
    char dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !getcwd(dir, sizeof dir)) return -1;
        if (pass == 0) {
            if (n <= 0) continue;
            dir[n] = 0;
        }
        for (int up = 0; up < 8; up++) {
            char probe[PATH_MAX + 32];
            snprintf(probe, sizeof probe, "%s/tests/fuzz", dir);
            struct stat st;
            if (stat(probe, &st) == 0 && S_ISDIR(st.st_mode)) {
                snprintf(g_root, sizeof g_root, "%s", dir);
                return 0;
            }
            char *s = strrchr(dir, '/');
            if (!s || s == dir) break;
            *s = 0;
        }
    }
    return -1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs fn on every regular file of dir; returns how many, -1 on a read
 * error. *slowest gets the longest single input's time. */
static int replay_dir(const char *dir, int (*fn)(const uint8_t *, size_t), double *slowest,
                      char *slow_name, size_t slow_len) {
    DIR *d = opendir(dir);
    if (!d) return 0; /* an absent directory holds nothing */
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX * 2];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (!strcmp(e->d_name, "README") || !strcmp(e->d_name, "README.md")) continue;
        size_t len = 0;
        unsigned char *buf = t_read_file(path, &len);
        if (!buf) {
            closedir(d);
            return -1;
        }
        double t0 = now_s();
        fn(buf, len);
        double dt = now_s() - t0;
        if (dt > *slowest) {
            *slowest = dt;
            snprintf(slow_name, slow_len, "%s", e->d_name);
        }
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void replay(const char *target, int (*fn)(const uint8_t *, size_t)) {
    char dir[PATH_MAX + 64], slow_name[256] = "";
    double slowest = 0;
    int total = 0;
    const char *kinds[] = {"regressions", "corpus"};
    for (int k = 0; k < 2; k++) {
        snprintf(dir, sizeof dir, "%s/tests/fuzz/%s/%s", g_root, kinds[k], target);
        int n = replay_dir(dir, fn, &slowest, slow_name, sizeof slow_name);
        CHECK(n >= 0, "cannot read an input in %s", dir);
        total += n;
    }
    CHECK(total > 0, "no inputs for %s under %s/tests/fuzz", target, g_root);
    /* libFuzzer's -timeout is 10 s; sanitized builds are ~3x slower. */
    CHECK(slowest < 30, "%s took %.1f s (a hang)", slow_name, slowest);
    printf("# fuzz replay %s: %d inputs, slowest %.3f s\n", target, total, slowest);
}

static void test_jpeg(void) {
    replay("jpeg", fuzz_jpeg_one);
}
static void test_multipart(void) {
    replay("multipart", fuzz_multipart_one);
}
static void test_safetensors(void) {
    replay("safetensors", fuzz_safetensors_one);
}
static void test_http(void) {
    replay("http", fuzz_http_one);
}
static void test_v2(void) {
    replay("v2", fuzz_v2_one);
}
static void test_kserve_v1(void) {
    replay("kserve_v1", fuzz_kserve_v1_one);
}

int main(void) {
    t_suite = "fuzz_regressions";
    if (find_root() != 0) {
        printf("FAIL fuzz_regressions.setup: tests/fuzz not found\n");
        return 1;
    }
    RUN(test_jpeg);
    RUN(test_multipart);
    RUN(test_safetensors);
    RUN(test_http);
    RUN(test_v2);
    RUN(test_kserve_v1);
    eng_shutdown();
    return t_done();
}
