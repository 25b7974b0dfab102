/* imgclass.c: command-line tool: classify JPEG files with a ResNet, print the
 * top-k classes as text or one JSON object per line. */
#include "engine.h"

#include <errno.h>
#include <immintrin.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Images per forward pass: batching amortises the weight reads. */
#define CLI_BATCH 8

static void usage(FILE *f) {
    fprintf(f,
            "usage: imgclass --model PATH|random:resnetD[:SEED] [--labels FILE] [--topk K]\n"
            "                [--json] IMAGE...\n"
            "       imgclass --bench [--model M] [--batch B] [--seconds S] [--workers W]\n"
            "                [--threads T] [--kernel K] [--json]\n"
            "\n"
            "Prints the top-k ImageNet classes of each JPEG image.\n"
            "  --model M    safetensors weights (torchvision/timm ResNet-18/34/50/101/152),\n"
            "               or random:resnetD[:SEED] for seeded random weights\n"
            "  --labels F   class names, one per line (default: built-in ImageNet-1k)\n"
            "  --topk K     classes per image (default 5)\n"
            "  --json       one JSON object per image and line\n"
            "  --kernel K   convolution kernels: auto (default: avx512 when the CPU has\n"
            "               AVX-512F, else openblas), avx512 or openblas\n"
            "Benchmark mode (--bench) measures the engine's images/s for one layout:\n"
            "  W workers, each with its own context running batches of B, sharing a\n"
            "  compute pool of T threads (defaults: random:resnet50, B 8, S 10, W 1,\n"
            "  T = CPUs).\n"
            "  Results are checked against single-image runs before they are reported.\n"
            "Exit status: 0 when every image was classified, 1 when any failed, 2 on usage.\n");
}

static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) {
                snprintf(err, errlen, "out of memory");
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "read error");
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

struct cli {
    const char *model_spec, *labels_path;
    int topk, json;
    struct eng_model *model;
    struct eng_labels *labels;
    struct eng_ctx *ctx;
    const struct eng_model_info *info;
};

static void print_error(const struct cli *c, const char *file, enum eng_status st,
                        const char *msg) {
    if (c->json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(file));
        json_t *e = json_object();
        json_object_set_new(e, "code", json_string(eng_status_name(st)));
        json_object_set_new(e, "message", json_string(msg));
        json_object_set_new(o, "error", e);
        char *s = json_dumps(o, JSON_COMPACT);
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("%s: error: %s\n", file, msg);
    }
}

static void print_result(const struct cli *c, const char *file, const float *logits) {
    int n = c->info->num_classes;
    int k = c->topk < n ? c->topk : n;
    struct eng_pred pred[k];
    eng_topk(logits, n, k, pred);
    if (c->json) {
        json_t *o = json_object(), *arr = json_array();
        json_object_set_new(o, "file", json_string(file));
        for (int i = 0; i < k; i++) {
            json_t *p = json_object();
            const char *label = eng_labels_get(c->labels, pred[i].index);
            json_object_set_new(p, "index", json_integer(pred[i].index));
            json_object_set_new(p, "label", label ? json_string(label) : json_null());
            json_object_set_new(p, "score", json_real(pred[i].score));
            json_object_set_new(p, "logit", json_real(pred[i].logit));
            json_array_append_new(arr, p);
        }
        json_object_set_new(o, "predictions", arr);
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("%s:\n", file);
        for (int i = 0; i < k; i++)
            printf("  %4d  %-32s %7.3f%%  (logit %.4f)\n", pred[i].index,
                   eng_labels_get(c->labels, pred[i].index), 100.0 * pred[i].score,
                   pred[i].logit);
    }
}

/* Classifies files[0..n) (n <= CLI_BATCH) in one forward pass; returns the
 * number that failed. in: [CLI_BATCH][3][crop][crop] scratch. */
static int run_batch(struct cli *c, char **files, int n, float *in, float *logits) {
    const struct eng_preproc *pp = &c->info->preproc;
    const size_t img_floats = (size_t)3 * pp->crop * pp->crop;
    enum eng_status st[CLI_BATCH];
    char msg[CLI_BATCH][256];
    int slot[CLI_BATCH], nok = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        unsigned char *data = read_file(files[i], &len, msg[i], sizeof msg[i]);
        if (!data) {
            st[i] = ENG_ERR_IO;
            continue;
        }
        st[i] = eng_image_preprocess(data, len, pp, NULL, in + (size_t)nok * img_floats, msg[i],
                                     sizeof msg[i]);
        free(data);
        if (st[i] == ENG_OK) slot[i] = nok++;
    }
    enum eng_status fst = nok ? eng_ctx_forward(c->ctx, in, nok, logits) : ENG_OK;
    for (int i = 0; i < n; i++) {
        if (st[i] == ENG_OK && fst != ENG_OK) {
            st[i] = fst;
            snprintf(msg[i], sizeof msg[i], "inference failed");
        }
        if (st[i] != ENG_OK) {
            print_error(c, files[i], st[i], msg[i]);
            failed++;
        } else {
            print_result(c, files[i], logits + (size_t)slot[i] * c->info->num_classes);
        }
    }
    fflush(stdout);
    return failed;
}

/* ------------------------------------------------------------------------ */
/* Benchmark mode                                                           */
/* ------------------------------------------------------------------------ */

struct bench {
    const struct eng_model *model;
    int batch, size, classes;
    double seconds;
    const float *in;          /* [batch][3][size][size] */
    const float *ref;         /* [batch][classes]: each image run alone */
    struct eng_ctx *ctx;      /* this worker's */
    float *logits;            /* [batch][classes] */
    double *lat;              /* batch latencies in seconds */
    int nlat, cap;
    int mismatch;             /* first output differed from ref */
    double worst;             /* worst relative error seen */
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Largest |a-b| / (1 + max|b|) per image; the parity tests' criterion is
 * 1e-3, a reordering of the same sums stays far below it. */
static double rel_error(const float *a, const float *b, int n, int classes) {
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double scale = 0, d = 0;
        for (int j = 0; j < classes; j++) {
            scale = fmax(scale, fabs(b[(size_t)i * classes + j]));
            d = fmax(d, fabs(a[(size_t)i * classes + j] - b[(size_t)i * classes + j]));
        }
        worst = fmax(worst, d / (1 + scale));
    }
    return worst;
}

static void *bench_worker(void *arg) {
    struct bench *b = arg;
    /* the first pass is checked and not timed (it also warms the caches) */
    eng_ctx_forward(b->ctx, b->in, b->batch, b->logits);
    b->worst = rel_error(b->logits, b->ref, b->batch, b->classes);
    if (!(b->worst < 1e-4)) {
        b->mismatch = 1;
        return NULL;
    }
    double start = now_s(), t = start;
    while (t - start < b->seconds && b->nlat < b->cap) {
        eng_ctx_forward(b->ctx, b->in, b->batch, b->logits);
        double t2 = now_s();
        b->lat[b->nlat++] = t2 - t;
        t = t2;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* FMA throughput of one core, in GFLOP/s: twelve independent accumulator
 * chains in named registers, so the loop is bound by the FMA units, not by
 * latency or by spills. */
#define FMA12(fma, m, a)                                                                           \
    do {                                                                                           \
        x0 = fma(x0, m, a), x1 = fma(x1, m, a), x2 = fma(x2, m, a), x3 = fma(x3, m, a);            \
        x4 = fma(x4, m, a), x5 = fma(x5, m, a), x6 = fma(x6, m, a), x7 = fma(x7, m, a);            \
        x8 = fma(x8, m, a), x9 = fma(x9, m, a), x10 = fma(x10, m, a), x11 = fma(x11, m, a);        \
    } while (0)

__attribute__((target("avx512f"))) static double fma_peak_avx512(long iters) {
    __m512 m = _mm512_set1_ps(0.999f), a = _mm512_set1_ps(1e-3f);
    /* distinct starting values, or the compiler merges identical chains */
#define V(i) _mm512_set1_ps(0.01f * (i))
    __m512 x0 = V(0), x1 = V(1), x2 = V(2), x3 = V(3), x4 = V(4), x5 = V(5), x6 = V(6),
           x7 = V(7), x8 = V(8), x9 = V(9), x10 = V(10), x11 = V(11);
#undef V
    double t = now_s();
    for (long k = 0; k < iters; k++) FMA12(_mm512_fmadd_ps, m, a);
    t = now_s() - t;
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                             _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)));
    float sink[16];
    _mm512_storeu_ps(sink, s);
    return sink[0] == 12345.0f ? 0 : (double)iters * 12 * 16 * 2 / t / 1e9;
}

__attribute__((target("avx2,fma"))) static double fma_peak_avx2(long iters) {
    __m256 m = _mm256_set1_ps(0.999f), a = _mm256_set1_ps(1e-3f);
#define V(i) _mm256_set1_ps(0.01f * (i))
    __m256 x0 = V(0), x1 = V(1), x2 = V(2), x3 = V(3), x4 = V(4), x5 = V(5), x6 = V(6),
           x7 = V(7), x8 = V(8), x9 = V(9), x10 = V(10), x11 = V(11);
#undef V
    double t = now_s();
    for (long k = 0; k < iters; k++) FMA12(_mm256_fmadd_ps, m, a);
    t = now_s() - t;
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                             _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(x8, x9), _mm256_add_ps(x10, x11)));
    float sink[8];
    _mm256_storeu_ps(sink, s);
    return sink[0] == 12345.0f ? 0 : (double)iters * 12 * 8 * 2 / t / 1e9;
}

static void *peak_thread(void *arg) {
    double *out = arg;
    if (__builtin_cpu_supports("avx512f"))
        *out = fma_peak_avx512(50000000);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        *out = fma_peak_avx2(50000000);
    return NULL;
}

/* Sum over one thread per online CPU, all running at once. */
static double fma_peak_all_cores(int *ncpu) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 256) n = 256;
    pthread_t th[256];
    double g[256] = {0}, total = 0;
    for (long i = 0; i < n; i++) pthread_create(&th[i], NULL, peak_thread, &g[i]);
    for (long i = 0; i < n; i++) pthread_join(th[i], NULL);
    for (long i = 0; i < n; i++) total += g[i];
    *ncpu = (int)n;
    return total;
}

static int run_bench(const char *spec, int batch, double seconds, int workers, int threads,
                     int json) {
    char err[512];
    int ncpu = 0;
    double peak = fma_peak_all_cores(&ncpu);
    struct eng_model *m = NULL;
    if (eng_model_load(spec, &m, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: %s\n", err);
        return 2;
    }
    threads = eng_set_threads(threads);
    const struct eng_model_info *info = eng_model_get_info(m);
    const int size = info->preproc.crop, classes = info->num_classes;
    const size_t img = (size_t)3 * size * size;
    float *in = malloc(sizeof(float) * img * batch);
    float *ref = malloc(sizeof(float) * (size_t)classes * batch);
    struct bench *b = calloc((size_t)workers, sizeof *b);
    pthread_t *th = calloc((size_t)workers, sizeof *th);
    struct eng_ctx *one = NULL;
    int rc = 2;
    if (!in || !ref || !b || !th) goto out;
    /* distinct smooth inputs so a batch mix-up would show */
    for (int i = 0; i < batch; i++)
        for (size_t p = 0; p < img; p++)
            in[i * img + p] = (float)sin(0.001 * (double)p * (i + 1) + i);
    if (eng_ctx_new(m, 1, size, &one, err, sizeof err) != ENG_OK) goto fail;
    for (int i = 0; i < batch; i++) eng_ctx_forward(one, in + i * img, 1, ref + (size_t)i * classes);
    int cap = (int)(seconds * 2000) + 16;
    for (int w = 0; w < workers; w++) {
        b[w] = (struct bench){.model = m, .batch = batch, .size = size, .classes = classes,
                              .seconds = seconds, .in = in, .ref = ref, .cap = cap};
        b[w].logits = malloc(sizeof(float) * (size_t)classes * batch);
        b[w].lat = malloc(sizeof(double) * (size_t)cap);
        if (!b[w].logits || !b[w].lat) goto out;
        if (eng_ctx_new(m, batch, size, &b[w].ctx, err, sizeof err) != ENG_OK) goto fail;
    }
    double t0 = now_s();
    for (int w = 0; w < workers; w++) pthread_create(&th[w], NULL, bench_worker, &b[w]);
    for (int w = 0; w < workers; w++) pthread_join(th[w], NULL);
    double wall = now_s() - t0;
    long images = 0;
    double worst = 0;
    int nl = 0;
    for (int w = 0; w < workers; w++) {
        worst = fmax(worst, b[w].worst);
        if (b[w].mismatch) {
            fprintf(stderr,
                    "imgclass: bench: batch %d, workers %d, threads %d gives outputs that differ "
                    "from single-image runs (relative error %g); not reporting it\n",
                    batch, workers, threads, b[w].worst);
            rc = 1;
            goto out;
        }
        images += (long)b[w].nlat * batch;
        nl += b[w].nlat;
    }
    double *all = malloc(sizeof(double) * (size_t)(nl ? nl : 1));
    if (!all) goto out;
    for (int w = 0, k = 0; w < workers; w++)
        for (int i = 0; i < b[w].nlat; i++) all[k++] = b[w].lat[i];
    qsort(all, (size_t)nl, sizeof *all, cmp_double);
    double p50 = nl ? all[nl / 2] * 1e3 : 0, p90 = nl ? all[(nl * 9) / 10] * 1e3 : 0;
    free(all);
    double ips = images / wall, gflops = ips * info->gflop;
    if (json)
        printf("{\"model\": \"%s\", \"random\": %s, \"batch\": %d, \"workers\": %d, \"threads\": %d, "
               "\"seconds\": %.3f, \"images\": %ld, \"images_per_s\": %.3f, "
               "\"batch_latency_p50_ms\": %.3f, \"batch_latency_p90_ms\": %.3f, "
               "\"gflops\": %.2f, \"fma_peak_gflops\": %.2f, \"peak_share\": %.4f, "
               "\"cpus\": %d, \"max_rel_error\": %.3g, \"kernel\": \"%s\"}\n",
               info->arch, info->random ? "true" : "false", batch, workers, threads, wall, images,
               ips, p50, p90, gflops, peak, peak > 0 ? gflops / peak : 0, ncpu, worst, info->kernel);
    else
        printf("%s batch %d, %d worker(s) on %d pool thread(s), %s kernels: %.2f images/s, batch "
               "latency p50 %.1f ms p90 %.1f ms, %.1f GFLOP/s = %.0f%% of the %.0f GFLOP/s FMA peak "
               "of %d CPUs (outputs checked, max relative error %.2g)\n",
               info->arch, batch, workers, threads, info->kernel, ips, p50, p90, gflops,
               peak > 0 ? 100 * gflops / peak : 0, peak, ncpu, worst);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "imgclass: %s\n", err);
out:
    for (int w = 0; b && w < workers; w++) {
        eng_ctx_free(b[w].ctx);
        free(b[w].logits);
        free(b[w].lat);
    }
    eng_ctx_free(one);
    eng_shutdown();
    free(b);
    free(th);
    free(in);
    free(ref);
    eng_model_free(m);
    return rc;
}

/* Parses an integer option value in [lo, hi]; prints why and returns 0 on
 * a bad value. */
static int parse_int_opt(const char *name, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long k = strtol(v, &end, 10);
    if (errno || *end || end == v || k < lo || k > hi) {
        fprintf(stderr, "imgclass: %s must be an integer in [%ld, %ld], got \"%s\"\n", name, lo,
                hi, v);
        return 0;
    }
    *out = (int)k;
    return 1;
}

int main(int argc, char **argv) {
    struct cli c = {.topk = 5};
    char **files = calloc((size_t)argc, sizeof *files);
    int nfiles = 0;
    if (!files) return 2;
    int bench = 0, batch = 8, seconds = 10, workers = 1, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(files);
            return 0;
        } else if (!strcmp(a, "--json")) {
            c.json = 1;
        } else if (!strcmp(a, "--bench")) {
            bench = 1;
        } else if (!strcmp(a, "--model") && v) {
            c.model_spec = argv[++i];
        } else if (!strcmp(a, "--labels") && v) {
            c.labels_path = argv[++i];
        } else if (!strcmp(a, "--topk") && v) {
            ok = parse_int_opt(a, argv[++i], 1, 1000000, &c.topk);
        } else if (!strcmp(a, "--batch") && v) {
            ok = parse_int_opt(a, argv[++i], 1, 256, &batch);
        } else if (!strcmp(a, "--seconds") && v) {
            ok = parse_int_opt(a, argv[++i], 1, 3600, &seconds);
        } else if (!strcmp(a, "--workers") && v) {
            ok = parse_int_opt(a, argv[++i], 1, 64, &workers);
        } else if (!strcmp(a, "--threads") && v) {
            ok = parse_int_opt(a, argv[++i], 1, 256, &threads);
        } else if (!strcmp(a, "--kernel") && v) {
            const char *k = argv[++i];
            enum eng_kernel kind = !strcmp(k, "avx512")     ? ENG_KERNEL_AVX512
                                   : !strcmp(k, "openblas") ? ENG_KERNEL_OPENBLAS
                                                            : ENG_KERNEL_AUTO;
            if (strcmp(k, "auto") && kind == ENG_KERNEL_AUTO) {
                fprintf(stderr, "imgclass: --kernel must be auto, avx512 or openblas, got \"%s\"\n", k);
                ok = 0;
            } else if (eng_set_kernel(kind) != ENG_OK) {
                fprintf(stderr, "imgclass: --kernel %s: this CPU has no AVX-512F\n", k);
                ok = 0;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "imgclass: unknown or incomplete option %s\n", a);
            usage(stderr);
            ok = 0;
        } else {
            files[nfiles++] = argv[i];
        }
        if (!ok) {
            free(files);
            return 2;
        }
    }
    if (bench) {
        free(files);
        return run_bench(c.model_spec ? c.model_spec : "random:resnet50", batch, seconds, workers,
                         threads, c.json);
    }
    if (!c.model_spec || nfiles == 0) {
        usage(stderr);
        free(files);
        return 2;
    }
    eng_set_threads(0); /* a compute thread per CPU */

    char err[512];
    int rc = 2;
    float *in = NULL, *logits = NULL;
    if (eng_model_load(c.model_spec, &c.model, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: %s\n", err);
        goto out;
    }
    c.info = eng_model_get_info(c.model);
    if (c.info->random)
        fprintf(stderr, "imgclass: %s has RANDOM weights: its answers mean nothing\n",
                c.info->source);
    if (eng_labels_load(c.labels_path, c.info->num_classes, &c.labels, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: %s\n", err);
        goto out;
    }
    int crop = c.info->preproc.crop;
    if (eng_ctx_new(c.model, CLI_BATCH, crop, &c.ctx, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: %s\n", err);
        goto out;
    }
    in = malloc(sizeof(float) * CLI_BATCH * 3 * (size_t)crop * crop);
    logits = malloc(sizeof(float) * CLI_BATCH * (size_t)c.info->num_classes);
    if (!in || !logits) {
        fprintf(stderr, "imgclass: out of memory\n");
        goto out;
    }
    int failed = 0;
    for (int i = 0; i < nfiles; i += CLI_BATCH)
        failed += run_batch(&c, files + i, nfiles - i < CLI_BATCH ? nfiles - i : CLI_BATCH, in,
                            logits);
    rc = failed ? 1 : 0;
out:
    free(in);
    free(logits);
    eng_ctx_free(c.ctx);
    eng_labels_free(c.labels);
    eng_model_free(c.model);
    eng_shutdown();
    free(files);
    return rc;
}
