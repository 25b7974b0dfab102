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
            "                [--precision fp32|int8] [--decode fast|exact] [--json] IMAGE...\n"
            "       imgclass --compare fp32,int8 --model M [--decode fast|exact] IMAGE...\n"
            "       imgclass --bench [--model M] [--batch B] [--seconds S] [--workers W]\n"
            "                [--threads T] [--kernel K] [--precision P] [--json]\n"
            "       imgclass --peak [--json]\n"
            "\n"
            "Prints the top-k ImageNet classes of each JPEG image.\n"
            "  --model M    safetensors weights (torchvision/timm ResNet-18/34/50/101/152),\n"
            "               or random:resnetD[:SEED] for seeded random weights\n"
            "  --labels F   class names, one per line (default: built-in ImageNet-1k)\n"
            "  --topk K     classes per image (default 5)\n"
            "  --json       one JSON object per image and line\n"
            "  --kernel K   convolution kernels: auto (default: avx512 when the CPU has\n"
            "               AVX-512F, else openblas), avx512 or openblas\n"
            "  --precision P  fp32 (default) or int8 (AVX-512 VNNI, or AMX where present;\n"
            "               activations quantized per image at run time, no calibration)\n"
            "  --decode D   how JPEGs become pixels: fast (default, or the sidecar's\n"
            "               \"decode\"): large photos decoded at a reduced DCT scale, EXIF\n"
            "               orientation applied; exact: torchvision's own pipeline, every\n"
            "               pixel at full size, EXIF orientation ignored\n"
            "  --compare fp32,int8  runs both on the images and prints how int8 agrees\n"
            "               with fp32: top-1 agreement, fp32 top-1 within int8's top 5,\n"
            "               mean cosine of the logits, worst relative logit error\n"
            "  --peak       measures the FMA (fp32) and VNNI (int8) peaks: each core alone\n"
            "               and all at once, best of 3 runs of 0.25 s\n"
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
    struct eng_preproc pp; /* the model's, with --decode applied */
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
    const struct eng_preproc *pp = &c->pp;
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
    if (!(b->worst < 1e-4)) { /* batch invariance makes this 0 */
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

/* Peak arithmetic of one core: twelve independent accumulator chains in
 * named registers, so the loop is bound by the execution units, not by
 * latency or spills; iters iterations, returns G operations/s (a
 * multiply-add counts two). */
#define CHAIN12(op, m, a)                                                                          \
    do {                                                                                           \
        x0 = op(x0, m, a), x1 = op(x1, m, a), x2 = op(x2, m, a), x3 = op(x3, m, a);                \
        x4 = op(x4, m, a), x5 = op(x5, m, a), x6 = op(x6, m, a), x7 = op(x7, m, a);                \
        x8 = op(x8, m, a), x9 = op(x9, m, a), x10 = op(x10, m, a), x11 = op(x11, m, a);            \
    } while (0)

#define PEAK_LOOP(type, init, op, m, a, sum, lanes_ops)                                            \
    type x0 = init(0), x1 = init(1), x2 = init(2), x3 = init(3), x4 = init(4), x5 = init(5),       \
         x6 = init(6), x7 = init(7), x8 = init(8), x9 = init(9), x10 = init(10), x11 = init(11);   \
    double t = now_s();                                                                            \
    for (long k = 0; k < iters; k++) CHAIN12(op, m, a);                                            \
    t = now_s() - t;                                                                               \
    type s_ = sum(sum(sum(x0, x1), sum(x2, x3)), sum(sum(x4, x5), sum(x6, x7)));                   \
    s_ = sum(s_, sum(sum(x8, x9), sum(x10, x11)));                                                 \
    char sink[64];                                                                                 \
    memcpy(sink, &s_, sizeof sink < sizeof s_ ? sizeof sink : sizeof s_);                          \
    /* distinct starting values, and the sum used, so no chain is dropped */                      \
    return sink[0] == 123 && sink[1] == 45 ? 0 : (double)iters * 12 * (lanes_ops) / t / 1e9;

#define F512(i) _mm512_set1_ps(0.01f * (i))
#define F256(i) _mm256_set1_ps(0.01f * (i))
#define I512(i) _mm512_set1_epi32(i)

__attribute__((target("avx512f"))) static double fp32_peak_avx512(long iters) {
    __m512 m = _mm512_set1_ps(0.999f), a = _mm512_set1_ps(1e-3f);
    PEAK_LOOP(__m512, F512, _mm512_fmadd_ps, m, a, _mm512_add_ps, 16 * 2)
}

__attribute__((target("avx2,fma"))) static double fp32_peak_avx2(long iters) {
    __m256 m = _mm256_set1_ps(0.999f), a = _mm256_set1_ps(1e-3f);
    PEAK_LOOP(__m256, F256, _mm256_fmadd_ps, m, a, _mm256_add_ps, 8 * 2)
}

/* vpdpbusd: 64 u8 x s8 products summed into 16 s32, 128 operations */
#define DPBUSD(acc, u, s) _mm512_dpbusd_epi32(acc, u, s)
__attribute__((target("avx512f,avx512vnni"))) static double int8_peak_vnni(long iters) {
    __m512i m = _mm512_set1_epi32(0x01020304), a = _mm512_set1_epi32(0x01010101);
    PEAK_LOOP(__m512i, I512, DPBUSD, m, a, _mm512_add_epi32, 64 * 2)
}

struct peak_run {
    int int8;
    long iters;
    double gops;
};

static void *peak_thread(void *arg) {
    struct peak_run *r = arg;
    if (r->int8)
        r->gops = __builtin_cpu_supports("avx512vnni") ? int8_peak_vnni(r->iters) : 0;
    else if (__builtin_cpu_supports("avx512f"))
        r->gops = fp32_peak_avx512(r->iters);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        r->gops = fp32_peak_avx2(r->iters);
    return NULL;
}

struct peak {
    double core; /* best of the runs of one thread alone */
    double sum;  /* best of the runs of one thread per CPU at once, summed */
    int cpus;
};

/* The peak of fp32 FMA or int8 VNNI: long runs (PEAK_SECONDS), repeated,
 * the best reported, each core alone and all at once. A shared VM's speed
 * drifts, so one short run says little. */
#define PEAK_SECONDS 0.25
#define PEAK_REPEATS 3
static struct peak measure_peak(int int8) {
    struct peak p = {0};
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    p.cpus = (int)(n < 1 ? 1 : n > 256 ? 256 : n);
    struct peak_run probe = {.int8 = int8, .iters = 1000000};
    peak_thread(&probe);
    if (!(probe.gops > 0)) return p;
    /* iterations for PEAK_SECONDS at the probe's rate */
    long iters = (long)(PEAK_SECONDS * probe.gops * 1e9 / (12.0 * (int8 ? 128 : 32)));
    for (int r = 0; r < PEAK_REPEATS; r++) {
        struct peak_run one = {.int8 = int8, .iters = iters};
        peak_thread(&one);
        p.core = fmax(p.core, one.gops);
        pthread_t th[256];
        struct peak_run all[256];
        double sum = 0;
        for (int i = 0; i < p.cpus; i++) {
            all[i] = (struct peak_run){.int8 = int8, .iters = iters};
            pthread_create(&th[i], NULL, peak_thread, &all[i]);
        }
        for (int i = 0; i < p.cpus; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < p.cpus; i++) sum += all[i].gops;
        p.sum = fmax(p.sum, sum);
    }
    return p;
}

static int run_peak(int json) {
    struct peak f = measure_peak(0), q = measure_peak(1);
    if (json)
        printf("{\"cpus\": %d, \"fp32_fma_core_gflops\": %.1f, \"fp32_fma_sum_gflops\": %.1f, "
               "\"int8_vnni_core_gops\": %.1f, \"int8_vnni_sum_gops\": %.1f}\n",
               f.cpus, f.core, f.sum, q.core, q.sum);
    else
        printf("peak over %d CPUs (best of %d runs of %.2f s): fp32 FMA %.0f GFLOP/s per core, "
               "%.0f all at once; int8 VNNI %.0f GOP/s per core, %.0f all at once\n",
               f.cpus, PEAK_REPEATS, PEAK_SECONDS, f.core, f.sum, q.core, q.sum);
    return 0;
}

static int run_bench(const char *spec, enum eng_precision prec, int batch, double seconds,
                     int workers, int threads, int json) {
    char err[512];
    /* the peak of the arithmetic this precision uses (int8 on AMX may pass it) */
    struct peak pk = measure_peak(prec == ENG_PRECISION_INT8);
    double peak = pk.sum;
    int ncpu = pk.cpus;
    struct eng_model *m = NULL;
    if (eng_model_load_ex(spec, prec, &m, err, sizeof err) != ENG_OK) {
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
               "\"peak_core\": %.2f, \"cpus\": %d, \"max_rel_error\": %.3g, \"kernel\": \"%s\", "
               "\"precision\": \"%s\"}\n",
               info->arch, info->random ? "true" : "false", batch, workers, threads, wall, images,
               ips, p50, p90, gflops, peak, peak > 0 ? gflops / peak : 0, pk.core, ncpu, worst,
               info->kernel, info->precision);
    else
        printf("%s %s batch %d, %d worker(s) on %d pool thread(s), %s kernels: %.2f images/s, "
               "batch latency p50 %.1f ms p90 %.1f ms, %.1f G op/s = %.0f%% of the %.0f G op/s %s "
               "peak of %d CPUs (outputs checked, max relative error %.2g)\n",
               info->arch, info->precision, batch, workers, threads, info->kernel, ips, p50, p90,
               gflops, peak > 0 ? 100 * gflops / peak : 0, peak,
               prec == ENG_PRECISION_INT8 ? "VNNI" : "FMA", ncpu, worst);
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

/* ------------------------------------------------------------------------ */
/* Fidelity check: two precisions on the same images                        */
/* ------------------------------------------------------------------------ */

struct agreement {
    int images, top1, top5;   /* images; same top-1; reference top-1 in the other's top 5 */
    double cos_sum, worst_rel; /* sum of logit cosines; worst max|b - a| / max|a| */
};

/* Folds image pair a (reference) / b into g; n classes. */
static void agree_add(struct agreement *g, const float *a, const float *b, int n) {
    struct eng_pred pa[1], pb[5];
    eng_topk(a, n, 1, pa);
    int k = eng_topk(b, n, 5, pb);
    double dot = 0, na = 0, nb = 0, scale = 0, d = 0;
    for (int j = 0; j < n; j++) {
        dot += (double)a[j] * b[j];
        na += (double)a[j] * a[j];
        nb += (double)b[j] * b[j];
        scale = fmax(scale, fabs(a[j]));
        d = fmax(d, fabs((double)b[j] - a[j]));
    }
    g->images++;
    g->top1 += pa[0].index == pb[0].index;
    for (int i = 0; i < k; i++) g->top5 += pa[0].index == pb[i].index;
    g->cos_sum += na > 0 && nb > 0 ? dot / sqrt(na * nb) : (na == nb);
    g->worst_rel = fmax(g->worst_rel, scale > 0 ? d / scale : d);
}

/* imgclass --compare A,B: every image through both precisions; prints the
 * agreement of B with A. */
/* --decode, or -1 for the model's own (its sidecar's, else fast). */
static int decode_choice = -1;

/* The preprocessing of the model, with --decode applied. */
static struct eng_preproc preproc_of(const struct eng_model_info *info) {
    struct eng_preproc pp = info->preproc;
    if (decode_choice >= 0) pp.decode = (enum eng_decode)decode_choice;
    return pp;
}

static int run_compare(const char *pair, const char *spec, char **files, int nfiles, int json) {
    char err[512], a_name[16] = "", b_name[16] = "";
    enum eng_precision prec[2];
    if (sscanf(pair, "%15[^,],%15s", a_name, b_name) != 2 ||
        eng_precision_parse(a_name, &prec[0], err, sizeof err) != ENG_OK ||
        eng_precision_parse(b_name, &prec[1], err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: --compare wants two precisions such as fp32,int8, got \"%s\"\n",
                pair);
        return 2;
    }
    eng_set_threads(0);
    struct eng_model *m[2] = {NULL, NULL};
    struct eng_ctx *c[2] = {NULL, NULL};
    float *in = NULL, *lg[2] = {NULL, NULL};
    int rc = 2;
    for (int i = 0; i < 2; i++)
        if (eng_model_load_ex(spec, prec[i], &m[i], err, sizeof err) != ENG_OK ||
            eng_ctx_new(m[i], CLI_BATCH, eng_model_get_info(m[i])->preproc.crop, &c[i], err,
                        sizeof err) != ENG_OK) {
            fprintf(stderr, "imgclass: %s\n", err);
            goto out;
        }
    const struct eng_model_info *info = eng_model_get_info(m[0]);
    const struct eng_preproc pp = preproc_of(info);
    const int crop = info->preproc.crop, classes = info->num_classes;
    const size_t img = (size_t)3 * crop * crop;
    in = malloc(sizeof(float) * img * CLI_BATCH);
    for (int i = 0; i < 2; i++) lg[i] = malloc(sizeof(float) * (size_t)classes * CLI_BATCH);
    if (!in || !lg[0] || !lg[1]) goto out;
    struct agreement g = {0};
    int failed = 0;
    for (int f0 = 0; f0 < nfiles; f0 += CLI_BATCH) {
        int k = 0;
        for (int f = f0; f < nfiles && f < f0 + CLI_BATCH; f++) {
            size_t len = 0;
            unsigned char *data = read_file(files[f], &len, err, sizeof err);
            enum eng_status st = data ? eng_image_preprocess(data, len, &pp, NULL,
                                                             in + (size_t)k * img, err, sizeof err)
                                      : ENG_ERR_IO;
            free(data);
            if (st == ENG_OK)
                k++;
            else {
                fprintf(stderr, "imgclass: %s: %s\n", files[f], err);
                failed++;
            }
        }
        if (!k) continue;
        for (int i = 0; i < 2; i++) eng_ctx_forward(c[i], in, k, lg[i]);
        for (int i = 0; i < k; i++)
            agree_add(&g, lg[0] + (size_t)i * classes, lg[1] + (size_t)i * classes, classes);
    }
    if (!g.images) {
        fprintf(stderr, "imgclass: --compare: no image could be read\n");
        goto out;
    }
    if (json)
        printf("{\"model\": \"%s\", \"reference\": \"%s\", \"other\": \"%s\", \"kernel\": \"%s\", "
               "\"images\": %d, \"top1_agreement\": %.4f, \"ref_top1_in_top5\": %.4f, "
               "\"mean_cosine\": %.6f, \"worst_rel_logit_error\": %.4g}\n",
               info->source, a_name, b_name, eng_model_get_info(m[1])->kernel, g.images,
               (double)g.top1 / g.images, (double)g.top5 / g.images, g.cos_sum / g.images,
               g.worst_rel);
    else
        printf("%s: %s against %s (%s kernels) on %d images:\n"
               "  top-1 agreement          %d/%d (%.1f%%)\n"
               "  %s top-1 in %s top-5   %d/%d (%.1f%%)\n"
               "  mean cosine of logits    %.6f\n"
               "  worst relative logit err %.4g (max |%s - %s| / max |%s|, worst image)\n",
               info->source, b_name, a_name, eng_model_get_info(m[1])->kernel, g.images, g.top1,
               g.images, 100.0 * g.top1 / g.images, a_name, b_name, g.top5, g.images,
               100.0 * g.top5 / g.images, g.cos_sum / g.images, g.worst_rel, b_name, a_name, a_name);
    rc = failed ? 1 : 0;
out:
    for (int i = 0; i < 2; i++) {
        eng_ctx_free(c[i]);
        eng_model_free(m[i]);
        free(lg[i]);
    }
    free(in);
    eng_shutdown();
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
    int bench = 0, peak = 0, batch = 8, seconds = 10, workers = 1, threads = 0;
    enum eng_precision prec = ENG_PRECISION_FP32;
    const char *compare = NULL;
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
        } else if (!strcmp(a, "--peak")) {
            peak = 1;
        } else if (!strcmp(a, "--compare") && v) {
            compare = argv[++i];
        } else if (!strcmp(a, "--precision") && v) {
            char err[256];
            if (eng_precision_parse(argv[++i], &prec, err, sizeof err) != ENG_OK ||
                eng_precision_supported(prec, err, sizeof err) != ENG_OK) {
                fprintf(stderr, "imgclass: --precision: %s\n", err);
                ok = 0;
            }
        } else if (!strcmp(a, "--decode") && v) {
            const char *d = argv[++i];
            decode_choice = !strcmp(d, "fast") ? ENG_DECODE_FAST : !strcmp(d, "exact") ? ENG_DECODE_EXACT : -1;
            if (decode_choice < 0) {
                fprintf(stderr, "imgclass: --decode must be fast or exact, got \"%s\"\n", d);
                ok = 0;
            }
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
    if (peak) {
        free(files);
        return run_peak(c.json);
    }
    if (bench) {
        free(files);
        return run_bench(c.model_spec ? c.model_spec : "random:resnet50", prec, batch, seconds,
                         workers, threads, c.json);
    }
    if (compare) {
        int rc = 2;
        if (!c.model_spec || nfiles == 0)
            usage(stderr);
        else
            rc = run_compare(compare, c.model_spec, files, nfiles, c.json);
        free(files);
        return rc;
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
    if (eng_model_load_ex(c.model_spec, prec, &c.model, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: %s\n", err);
        goto out;
    }
    c.info = eng_model_get_info(c.model);
    c.pp = preproc_of(c.info);
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
