/* test_resnet.c: the model and context API on random models, plus top-k,
 * softmax and labels (the parts that need no reference data). */
#include "engine.h"
#include "test.h"

#include <math.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

static float *test_input(int n, int size, unsigned seed) {
    size_t len = (size_t)n * 3 * size * size;
    float *x = malloc(len * sizeof *x);
    if (!x) return NULL;
    /* smooth, image-like values: a few sinusoids per channel */
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < size; y++)
                for (int xx = 0; xx < size; xx++)
                    x[(((size_t)i * 3 + c) * size + y) * size + xx] =
                        (float)(sin(0.05 * (xx + 3 * c + seed + 7 * i)) +
                                cos(0.031 * (y * (1 + (int)seed % 3) + 11 * i)));
    return x;
}

/* ------------------------------------------------------------------------ */
/* Random models                                                            */
/* ------------------------------------------------------------------------ */

static void test_random_specs(void) {
    static const struct {
        const char *spec;
        int depth, bottleneck;
        long long params;
    } ok[] = {
        {"random:resnet18", 18, 0, 11689512},   {"random:resnet34:7", 34, 0, 21797672},
        {"random:resnet50:1", 50, 1, 25557032}, {"random:resnet101", 101, 1, 44549160},
        {"random:resnet152:3", 152, 1, 60192808},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct eng_model *m = NULL;
        char err[256];
        CHECK(eng_model_load(ok[i].spec, &m, err, sizeof err) == ENG_OK, "%s: %s", ok[i].spec, err);
        const struct eng_model_info *info = eng_model_get_info(m);
        int good = info->depth == ok[i].depth && info->bottleneck == ok[i].bottleneck &&
                   info->num_params == ok[i].params && info->random && info->num_classes == 1000;
        long long params = info->num_params;
        int rnd = info->random;
        eng_model_free(m);
        CHECK(good, "%s: params %lld random %d", ok[i].spec, params, rnd);
    }
    static const char *bad[] = {"random:", "random:resnet", "random:resnet20", "random:resnet50:",
                                "random:resnet50:x", "random:resnet50:1:2", "random:vgg16", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct eng_model *m = NULL;
        char err[256] = "";
        enum eng_status st = eng_model_load(bad[i], &m, err, sizeof err);
        eng_model_free(m);
        CHECK(st == ENG_ERR_ARG && m == NULL && *err, "\"%s\" gave %s", bad[i], eng_status_name(st));
    }
}

static void test_resnet50_flops(void) {
    struct eng_model *m = NULL;
    char err[256];
    CHECK(eng_model_load("random:resnet50", &m, err, sizeof err) == ENG_OK, "%s", err);
    double g = eng_model_get_info(m)->gflop;
    eng_model_free(m);
    /* 4.09 G multiply-adds (the paper's "3.8 x 10^9 FLOPs" counts v1) */
    CHECK(g > 8.15 && g < 8.25, "gflop %.3f", g);
}

/* Same seed, same logits; other seed, other logits; logits finite and
 * different per image. */
static void test_random_deterministic(void) {
    const int size = 64;
    float *x = test_input(2, size, 1);
    float a[2][1000], b[2][1000], c[2][1000];
    const char *specs[3] = {"random:resnet18:5", "random:resnet18:5", "random:resnet18:6"};
    float(*outs[3])[1000] = {a, b, c};
    CHECK(x != NULL);
    for (int i = 0; i < 3; i++) {
        struct eng_model *m = NULL;
        struct eng_ctx *ctx = NULL;
        char err[256];
        int ok = eng_model_load(specs[i], &m, err, sizeof err) == ENG_OK &&
                 eng_ctx_new(m, 2, size, &ctx, err, sizeof err) == ENG_OK &&
                 eng_ctx_forward(ctx, x, 2, &outs[i][0][0]) == ENG_OK;
        eng_ctx_free(ctx);
        eng_model_free(m);
        if (!ok) free(x);
        CHECK(ok, "%s: %s", specs[i], err);
    }
    free(x);
    CHECK(!memcmp(a, b, sizeof a), "same seed gave different logits");
    CHECK(memcmp(a, c, sizeof a) != 0, "different seeds gave the same logits");
    int finite = 1, differ = 0;
    for (int j = 0; j < 1000; j++) {
        finite &= isfinite(a[0][j]) && isfinite(a[1][j]);
        differ |= a[0][j] != a[1][j];
    }
    CHECK(finite && differ, "finite %d, images differ %d", finite, differ);
}

/* A batch gives each image the logits it gets alone. */
static void test_batch_matches_single(void) {
    const int n = 4, size = 96;
    float *x = test_input(n, size, 2);
    float *batch = malloc(sizeof(float) * n * 1000), single[1000];
    struct eng_model *m = NULL;
    struct eng_ctx *ctx = NULL;
    char err[256];
    int ok = x && batch && eng_model_load("random:resnet50:2", &m, err, sizeof err) == ENG_OK &&
             eng_ctx_new(m, n, size, &ctx, err, sizeof err) == ENG_OK &&
             eng_ctx_forward(ctx, x, n, batch) == ENG_OK;
    double worst = 0;
    for (int i = 0; ok && i < n; i++) {
        ok = eng_ctx_forward(ctx, x + (size_t)i * 3 * size * size, 1, single) == ENG_OK;
        double scale = 0;
        for (int j = 0; j < 1000; j++) scale = fmax(scale, fabs(single[j]));
        for (int j = 0; j < 1000; j++)
            worst = fmax(worst, fabs(single[j] - batch[i * 1000 + j]) / (1 + scale));
    }
    eng_ctx_free(ctx);
    eng_model_free(m);
    free(x);
    free(batch);
    CHECK(ok, "%s", err);
    CHECK(worst < 1e-5, "batch vs single relative difference %g", worst);
}

/* The AVX-512 kernels (direct GEMM and Winograd) give OpenBLAS's logits,
 * at sizes whose stages have odd heights (Winograd's clipped edge tiles)
 * and a batch that leaves partial row tiles. */
static double kernel_logits(enum eng_kernel k, const char *spec, int n, int size,
                            const float *x, float *out, char *err, size_t errlen) {
    struct eng_model *m = NULL;
    struct eng_ctx *ctx = NULL;
    double ok = eng_set_kernel(k) == ENG_OK &&
                eng_model_load(spec, &m, err, errlen) == ENG_OK &&
                !strcmp(eng_model_get_info(m)->kernel, k == ENG_KERNEL_AVX512 ? "avx512" : "openblas") &&
                eng_ctx_new(m, n, size, &ctx, err, errlen) == ENG_OK &&
                eng_ctx_forward(ctx, x, n, out) == ENG_OK;
    eng_ctx_free(ctx);
    eng_model_free(m);
    eng_set_kernel(ENG_KERNEL_AUTO);
    return ok;
}

static void test_kernels_agree(void) {
    if (eng_set_kernel(ENG_KERNEL_AVX512) != ENG_OK) SKIP("this CPU has no AVX-512F");
    eng_set_kernel(ENG_KERNEL_AUTO);
    static const struct {
        const char *spec;
        int n, size;
    } runs[] = {{"random:resnet18:4", 3, 97}, {"random:resnet50:4", 3, 160}, {"random:resnet50:5", 1, 224}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        const int n = runs[r].n, size = runs[r].size;
        float *x = test_input(n, size, 5), *a = malloc(sizeof(float) * n * 1000),
              *b = malloc(sizeof(float) * n * 1000);
        char err[256] = "";
        int ok = x && a && b &&
                 kernel_logits(ENG_KERNEL_AVX512, runs[r].spec, n, size, x, a, err, sizeof err) &&
                 kernel_logits(ENG_KERNEL_OPENBLAS, runs[r].spec, n, size, x, b, err, sizeof err);
        double worst = 0;
        for (int i = 0; ok && i < n; i++) {
            double scale = 0;
            for (int j = 0; j < 1000; j++) scale = fmax(scale, fabs(b[i * 1000 + j]));
            for (int j = 0; j < 1000; j++)
                worst = fmax(worst, fabs(a[i * 1000 + j] - b[i * 1000 + j]) / (1 + scale));
        }
        printf("  resnet.kernels_agree: %s, %d x %dpx: max |avx512 - openblas| / (1 + max|logit|) %.3g\n",
               runs[r].spec, n, size, worst);
        free(x);
        free(a);
        free(b);
        CHECK(ok, "%s", err);
        CHECK(worst < 1e-4, "%s at %dpx: kernels differ by %g", runs[r].spec, size, worst);
    }
}

static void test_ctx_arguments(void) {
    struct eng_model *m = NULL;
    struct eng_ctx *ctx = NULL;
    char err[256];
    CHECK(eng_model_load("random:resnet18", &m, err, sizeof err) == ENG_OK, "%s", err);
    int bad_new = eng_ctx_new(m, 0, 224, &ctx, err, sizeof err) == ENG_ERR_ARG && !ctx &&
                  eng_ctx_new(m, 1, 8, &ctx, err, sizeof err) == ENG_ERR_ARG && !ctx;
    int made = eng_ctx_new(m, 2, 64, &ctx, err, sizeof err) == ENG_OK;
    float x[3 * 64 * 64] = {0}, out[1000];
    int bad_fwd = made && eng_ctx_forward(ctx, x, 3, out) == ENG_ERR_ARG &&
                  eng_ctx_forward(ctx, x, 0, out) == ENG_ERR_ARG &&
                  eng_ctx_forward(ctx, NULL, 1, out) == ENG_ERR_ARG;
    size_t ws = made ? eng_ctx_workspace_bytes(ctx) : 0;
    eng_ctx_free(ctx);
    eng_model_free(m);
    CHECK(bad_new, "bad eng_ctx_new arguments accepted");
    CHECK(made && bad_fwd, "bad forward arguments accepted");
    CHECK(ws > 0);
}

/* The compute pool: one forward alone (split over every thread) and several
 * at once (sharing the threads) give the logits of a run without the pool. */
struct pool_arg {
    struct eng_ctx *ctx;
    const float *x;
    float out[2][1000];
    int rounds;
    int ok;
};

static void *pool_worker(void *p) {
    struct pool_arg *a = p;
    a->ok = 1;
    for (int r = 0; r < a->rounds; r++) a->ok &= eng_ctx_forward(a->ctx, a->x, 2, &a->out[0][0]) == ENG_OK;
    return NULL;
}

static double max_rel(const float *a, const float *b, int n) {
    double scale = 0, d = 0;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i]));
    return d / (1 + scale);
}

static void test_compute_pool(void) {
    const int size = 128;
    float *x = test_input(2, size, 3);
    float serial[2][1000];
    struct eng_model *m = NULL;
    struct eng_ctx *c0 = NULL;
    struct pool_arg a[3] = {{0}};
    char err[256];
    int ok = x && eng_model_load("random:resnet50:4", &m, err, sizeof err) == ENG_OK &&
             eng_ctx_new(m, 2, size, &c0, err, sizeof err) == ENG_OK &&
             eng_ctx_forward(c0, x, 2, &serial[0][0]) == ENG_OK;
    int started = ok ? eng_set_threads(2) : 0;
    for (int i = 0; ok && i < 3; i++) {
        a[i].x = x;
        a[i].rounds = 2;
        ok = eng_ctx_new(m, 2, size, &a[i].ctx, err, sizeof err) == ENG_OK;
    }
    double alone = 1, shared = 0;
    if (ok && started == 2) {
        pool_worker(&a[0]); /* alone: every convolution split over the pool */
        alone = max_rel(&a[0].out[0][0], &serial[0][0], 2000);
        pthread_t th[3];
        for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, pool_worker, &a[i]);
        for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 3; i++) {
            ok &= a[i].ok;
            shared = fmax(shared, max_rel(&a[i].out[0][0], &serial[0][0], 2000));
        }
    }
    for (int i = 0; i < 3; i++) eng_ctx_free(a[i].ctx);
    eng_ctx_free(c0);
    eng_shutdown();
    eng_model_free(m);
    free(x);
    CHECK(ok, "%s", err);
    CHECK(started == 2, "pool started %d threads", started);
    CHECK(eng_get_threads() == 0, "pool still running after eng_shutdown");
    CHECK(alone < 1e-5 && shared < 1e-5, "relative difference alone %g, shared %g", alone, shared);
}

/* ------------------------------------------------------------------------ */
/* Softmax and top-k                                                        */
/* ------------------------------------------------------------------------ */

static void test_softmax(void) {
    float l[4] = {1000.0f, 1000.0f, -1000.0f, 999.0f}, p[4];
    eng_softmax(l, 4, p);
    double e = exp(-1.0), z = 2 + e;
    CHECK(fabs(p[0] - 1 / z) < 1e-6 && fabs(p[1] - 1 / z) < 1e-6 && p[2] == 0.0f &&
              fabs(p[3] - e / z) < 1e-6,
          "%g %g %g %g", p[0], p[1], p[2], p[3]);
}

static void test_topk_order_and_ties(void) {
    float l[8] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 7.0f, 2.0f, -9.0f};
    struct eng_pred p[8];
    CHECK(eng_topk(l, 8, 5, p) == 5);
    int want[5] = {5, 1, 3, 4, 6};
    for (int i = 0; i < 5; i++) CHECK(p[i].index == want[i], "rank %d: %d", i, p[i].index);
    float probs[8];
    eng_softmax(l, 8, probs);
    for (int i = 0; i < 5; i++)
        CHECK(fabsf(p[i].score - probs[p[i].index]) < 1e-7 && p[i].logit == l[p[i].index]);
    CHECK(eng_topk(l, 8, 20, p) == 8 && p[7].index == 7, "k larger than n");
    CHECK(eng_topk(l, 8, 0, p) == 0);
}

/* ------------------------------------------------------------------------ */
/* Labels                                                                   */
/* ------------------------------------------------------------------------ */

static void test_builtin_labels(void) {
    struct eng_labels *l = NULL;
    char err[256];
    CHECK(eng_labels_load(NULL, 1000, &l, err, sizeof err) == ENG_OK, "%s", err);
    int n = eng_labels_count(l);
    const char *a = eng_labels_get(l, 0), *b = eng_labels_get(l, 281), *c = eng_labels_get(l, 954);
    int ok = n == 1000 && !strcmp(a, "tench") && !strcmp(b, "tabby") && !strcmp(c, "banana") &&
             eng_labels_get(l, 1000) == NULL && eng_labels_get(l, -1) == NULL;
    eng_labels_free(l);
    CHECK(ok, "count %d", n);
}

static void test_labels_file(void) {
    char p[] = "/tmp/imgclass-labels-XXXXXX";
    int fd = mkstemp(p);
    CHECK(fd >= 0);
    const char *text = "cat\r\ndog\n\"quoted\" bird";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    struct eng_labels *l = NULL;
    char err[256];
    enum eng_status st = eng_labels_load(p, 3, &l, err, sizeof err);
    int ok = st == ENG_OK && !strcmp(eng_labels_get(l, 0), "cat") &&
             !strcmp(eng_labels_get(l, 1), "dog") && !strcmp(eng_labels_get(l, 2), "\"quoted\" bird");
    eng_labels_free(l);
    l = NULL;
    enum eng_status st2 = eng_labels_load(p, 1000, &l, err, sizeof err);
    int names_count = st2 == ENG_ERR_FORMAT && strstr(err, p) && strstr(err, "3 labels");
    unlink(p);
    enum eng_status st3 = eng_labels_load(p, 0, &l, err, sizeof err);
    CHECK(ok, "status %s", eng_status_name(st));
    CHECK(names_count, "count mismatch: %s", err);
    CHECK(st3 == ENG_ERR_IO && strstr(err, p), "missing file: %s", err);
}

int main(void) {
    t_suite = "resnet";
    RUN(test_random_specs);
    RUN(test_resnet50_flops);
    RUN(test_random_deterministic);
    RUN(test_batch_matches_single);
    RUN(test_kernels_agree);
    RUN(test_ctx_arguments);
    RUN(test_compute_pool);
    RUN(test_softmax);
    RUN(test_topk_order_and_ties);
    RUN(test_builtin_labels);
    RUN(test_labels_file);
    return t_done();
}
