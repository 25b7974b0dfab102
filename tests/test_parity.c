/* test_parity.c: the engine against torchvision on the reference data that
 * tests/gen_reference.py writes (build/ref, or $IMGCLASS_REF): logits of every
 * reference model on torchvision's preprocessed tensors, end to end from the
 * JPEG files, two contexts on two threads, and batch size 1 vs 8. */
#include "engine.h"
#include "test.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

/* Pass criteria: every logit within LOGIT_REL_TOL * (1 + max|logit|) of
 * torchvision's (max over that image's reference logits), and the same
 * top-5 classes wherever neighbouring reference logits are further apart
 * than that tolerance. */
#define LOGIT_REL_TOL 1e-3
#define BATCH_REL_TOL 1e-5 /* batch 1 vs 8, one context vs two threads */
#define MAX_BATCH 8
#define TOPK 5

#define DIR_LEN 1024  /* the reference directory */
#define PATH_LEN 1280 /* a file under it */
#define ERR_LEN 512   /* an engine message */
#define WHY_LEN 4096  /* a failure message */

/* ------------------------------------------------------------------------ */
/* Reference data                                                           */
/* ------------------------------------------------------------------------ */

static struct {
    char dir[DIR_LEN];
    char missing[WHY_LEN + 128]; /* why the reference is unusable; "" when loaded */
    json_t *root;                /* manifest.json */
    json_t *images;              /* borrowed from root */
    json_t *models;              /* borrowed from root */
    int n;                       /* images */
    int size;                    /* crop size of the logits' preprocessing, 224 */
    float *x;                    /* [n][3][size][size], the logits' preprocessing */
    struct eng_preproc pp;       /* that preprocessing */
} ref;

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A manifest path: absolute as is, otherwise relative to the ref dir. */
static void ref_path(const char *p, char *out, size_t outlen) {
    if (p[0] == '/')
        snprintf(out, outlen, "%s", p);
    else
        snprintf(out, outlen, "%s/%s", ref.dir, p);
}

/* Reads exactly count little-endian float32 values (every target we run on
 * is little-endian). Returns a new malloc'd array, or NULL with why set. */
static float *read_f32(const char *path, size_t count, char *why, size_t whylen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whylen, "cannot open %s", path);
        return NULL;
    }
    float *buf = malloc(count * sizeof *buf + 1);
    size_t got = buf ? fread(buf, sizeof *buf, count, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (!buf || got != count || extra) {
        snprintf(why, whylen, "%s: want exactly %zu float32 values (got %zu%s)", path, count, got,
                 extra ? " and more" : "");
        free(buf);
        return NULL;
    }
    return buf;
}

static const char *image_name(int i) {
    const char *s = json_string_value(json_object_get(json_array_get(ref.images, i), "name"));
    return s ? s : "?";
}

/* Loads the manifest and the preprocessed tensors once; on any problem
 * leaves ref.root NULL and ref.missing saying why. */
static void ref_open(void) {
    const char *dir = getenv("IMGCLASS_REF");
    snprintf(ref.dir, sizeof ref.dir, "%s", dir && *dir ? dir : "build/ref");
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/manifest.json", ref.dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        snprintf(ref.missing, sizeof ref.missing,
                 "no %s; generate the torchvision references with `make build/ref/stamp` "
                 "(or point IMGCLASS_REF at a reference directory)",
                 path);
        return;
    }
    fclose(probe);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        snprintf(ref.missing, sizeof ref.missing, "%s:%d: %s", path, jerr.line, jerr.text);
        return;
    }
    json_t *images = json_object_get(root, "images"), *models = json_object_get(root, "models");
    json_t *pre = json_object_get(root, "preproc");
    if (!json_array_size(images) || !json_array_size(models) || !json_array_size(pre)) {
        snprintf(ref.missing, sizeof ref.missing, "%s: no images, models or preproc", path);
        json_decref(root);
        return;
    }
    /* The logits were computed on "logits_preproc" (default: the first). */
    const char *want = json_string_value(json_object_get(root, "logits_preproc"));
    json_t *pv = json_array_get(pre, 0);
    for (size_t v = 0; want && v < json_array_size(pre); v++) {
        const char *f = json_string_value(json_object_get(json_array_get(pre, v), "file"));
        if (f && !strcmp(f, want)) pv = json_array_get(pre, v);
    }
    const char *file = json_string_value(json_object_get(pv, "file"));
    const char *interp = json_string_value(json_object_get(pv, "interp"));
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    pp.resize = (int)json_integer_value(json_object_get(pv, "resize"));
    pp.crop = (int)json_integer_value(json_object_get(pv, "crop"));
    pp.interp = interp && !strcmp(interp, "bicubic") ? ENG_INTERP_BICUBIC : ENG_INTERP_BILINEAR;
    for (int c = 0; c < 3; c++) {
        pp.mean[c] = (float)json_number_value(json_array_get(json_object_get(pv, "mean"), c));
        pp.std[c] = (float)json_number_value(json_array_get(json_object_get(pv, "std"), c));
    }
    if (!file || !interp || pp.resize <= 0 || pp.crop <= 0) {
        snprintf(ref.missing, sizeof ref.missing, "%s: malformed preproc entry", path);
        json_decref(root);
        return;
    }
    int n = (int)json_array_size(images);
    char fpath[PATH_LEN], why[WHY_LEN];
    ref_path(file, fpath, sizeof fpath);
    float *x = read_f32(fpath, (size_t)n * 3 * pp.crop * pp.crop, why, sizeof why);
    if (!x) {
        snprintf(ref.missing, sizeof ref.missing, "%s (rerun `make build/ref/stamp`)", why);
        json_decref(root);
        return;
    }
    ref.root = root;
    ref.images = images;
    ref.models = models;
    ref.n = n;
    ref.size = pp.crop;
    ref.x = x;
    ref.pp = pp;
}

static void ref_close(void) {
    free(ref.x);
    json_decref(ref.root);
    memset(&ref, 0, sizeof ref);
}

/* One reference model: manifest entry index -> fields. */
struct ref_model {
    const char *arch, *path, *dtype, *logits;
    int depth, num_classes;
};

static int ref_model_get(int i, struct ref_model *rm) {
    json_t *e = json_array_get(ref.models, i);
    rm->arch = json_string_value(json_object_get(e, "arch"));
    rm->path = json_string_value(json_object_get(e, "path"));
    rm->dtype = json_string_value(json_object_get(e, "dtype"));
    rm->logits = json_string_value(json_object_get(e, "logits"));
    rm->depth = (int)json_integer_value(json_object_get(e, "depth"));
    rm->num_classes = (int)json_integer_value(json_object_get(e, "num_classes"));
    return rm->arch && rm->path && rm->dtype && rm->logits && rm->num_classes > 0;
}

/* Index of the manifest model with this arch and dtype, or -1. */
static int ref_model_find(const char *arch, const char *dtype) {
    for (int i = 0; i < (int)json_array_size(ref.models); i++) {
        struct ref_model rm;
        if (ref_model_get(i, &rm) && !strcmp(rm.arch, arch) && !strcmp(rm.dtype, dtype)) return i;
    }
    return -1;
}

/* Loads model i and its reference logits ([n][num_classes], new array).
 * Returns 0 with why set on failure. */
static int load_model(int i, struct ref_model *rm, struct eng_model **m, float **want, char *why,
                      size_t whylen) {
    *m = NULL;
    *want = NULL;
    if (!ref_model_get(i, rm)) {
        snprintf(why, whylen, "manifest model %d is malformed", i);
        return 0;
    }
    char path[PATH_LEN], err[ERR_LEN];
    ref_path(rm->path, path, sizeof path);
    if (eng_model_load(path, m, err, sizeof err) != ENG_OK) {
        snprintf(why, whylen, "eng_model_load(%s): %s", path, err);
        return 0;
    }
    const struct eng_model_info *info = eng_model_get_info(*m);
    if (info->depth != rm->depth || info->num_classes != rm->num_classes ||
        strcmp(info->dtype, rm->dtype)) {
        snprintf(why, whylen, "%s: engine sees depth %d, %d classes, dtype %s; want %d, %d, %s",
                 path, info->depth, info->num_classes, info->dtype, rm->depth, rm->num_classes,
                 rm->dtype);
        goto fail;
    }
    ref_path(rm->logits, path, sizeof path);
    *want = read_f32(path, (size_t)ref.n * rm->num_classes, why, whylen);
    if (!*want) goto fail;
    return 1;
fail:
    eng_model_free(*m);
    *m = NULL;
    return 0;
}

/* Runs n images of x through one context of max_batch images, batch by batch. */
static int forward_all(const struct eng_model *m, const float *x, int n, int batch, float *logits,
                       int nc, char *why, size_t whylen) {
    struct eng_ctx *ctx = NULL;
    char err[ERR_LEN];
    if (eng_ctx_new(m, batch, ref.size, &ctx, err, sizeof err) != ENG_OK) {
        snprintf(why, whylen, "eng_ctx_new(max_batch %d, size %d): %s", batch, ref.size, err);
        return 0;
    }
    size_t per = (size_t)3 * ref.size * ref.size;
    for (int i = 0; i < n; i += batch) {
        int b = n - i < batch ? n - i : batch;
        enum eng_status st = eng_ctx_forward(ctx, x + i * per, b, logits + (size_t)i * nc);
        if (st != ENG_OK) {
            snprintf(why, whylen, "eng_ctx_forward(images %d..%d): %s", i, i + b - 1,
                     eng_status_name(st));
            eng_ctx_free(ctx);
            return 0;
        }
    }
    eng_ctx_free(ctx);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Comparison                                                               */
/* ------------------------------------------------------------------------ */

struct cmp {
    double max_abs;     /* max |got - want| over all logits */
    double worst_ratio; /* max |got - want| / tol over images */
    int worst;          /* image of worst_ratio */
    double tol_min, tol_max;
    int top_checked, top_total; /* top-5 positions compared / possible */
    int bad_logits, bad_top;    /* images failing each criterion */
    char first_bad[512];
};

/* Compares logits of the images idx[0..n) (idx NULL: 0..n-1); got and want
 * are [n][nc] in that order. */
static void compare(const float *got, const float *want, int n, const int *idx, int nc,
                    struct cmp *r) {
    memset(r, 0, sizeof *r);
    r->tol_min = INFINITY;
    for (int k = 0; k < n; k++) {
        int img = idx ? idx[k] : k;
        const float *g = got + (size_t)k * nc, *w = want + (size_t)k * nc;
        double maxw = 0, err = 0;
        int at = 0;
        for (int j = 0; j < nc; j++)
            if (fabs(w[j]) > maxw) maxw = fabs(w[j]);
        double tol = LOGIT_REL_TOL * (1 + maxw);
        for (int j = 0; j < nc; j++) {
            double d = fabs((double)g[j] - w[j]);
            if (!(d <= err)) err = d, at = j; /* NaN counts as worst */
        }
        if (!(err <= r->max_abs)) r->max_abs = err;
        if (tol < r->tol_min) r->tol_min = tol;
        if (tol > r->tol_max) r->tol_max = tol;
        if (!(err / tol <= r->worst_ratio)) r->worst_ratio = err / tol, r->worst = img;
        if (!(err <= tol)) {
            if (!r->bad_logits++)
                snprintf(r->first_bad, sizeof r->first_bad,
                         "%s: logit %d is %.6g, torchvision %.6g (|diff| %.3g > tol %.3g)",
                         image_name(img), at, g[at], w[at], err, tol);
        }

        /* Top-5: position p must match where the reference logit there is
         * further than tol from both neighbours. */
        struct eng_pred pw[TOPK + 1], pg[TOPK];
        int kw = eng_topk(w, nc, TOPK + 1, pw), kg = eng_topk(g, nc, TOPK, pg);
        int bad = 0;
        for (int p = 0; p < TOPK && p < kw && p < kg; p++) {
            r->top_total++;
            int sep_above = p == 0 || pw[p - 1].logit - pw[p].logit > tol;
            int sep_below = p + 1 >= kw || pw[p].logit - pw[p + 1].logit > tol;
            if (!sep_above || !sep_below) continue;
            r->top_checked++;
            if (pg[p].index == pw[p].index || bad++) continue; /* count an image once */
            if (!r->bad_top++ && !r->bad_logits)
                snprintf(r->first_bad, sizeof r->first_bad,
                         "%s: rank %d is class %d (logit %.6g), torchvision class %d (%.6g)",
                         image_name(img), p + 1, pg[p].index, pg[p].logit, pw[p].index,
                         pw[p].logit);
        }
    }
}

static void print_cmp(const char *label, int n, const struct cmp *r, double secs) {
    printf("  parity.%s: %d images, max |err| %.3g, tol %g*(1+max|logit|) = %.3g..%.3g, "
           "worst err/tol %.3g (%s), top-5 positions checked %d/%d, %.1f ms/image\n",
           label, n, r->max_abs, LOGIT_REL_TOL, r->tol_min, r->tol_max, r->worst_ratio,
           image_name(r->worst), r->top_checked, r->top_total, 1e3 * secs / (n ? n : 1));
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                    */
/* ------------------------------------------------------------------------ */

static int cur_model; /* manifest index for the running per-model case */
static char cur_label[64];

static void test_reference(void) {
    if (!ref.root) SKIP("%s", ref.missing);
    printf("  parity.reference: %s: %d images, %zu models, torch %s, torchvision %s\n", ref.dir,
           ref.n, json_array_size(ref.models),
           json_string_value(json_object_get(ref.root, "torch")),
           json_string_value(json_object_get(ref.root, "torchvision")));
}

/* Engine logits on torchvision's preprocessed tensors vs torchvision's. */
static void case_logits(void) {
    if (!ref.root) SKIP("%s", ref.missing);
    struct ref_model rm;
    struct eng_model *m;
    float *want, *got = NULL;
    char why[WHY_LEN] = "";
    CHECK(load_model(cur_model, &rm, &m, &want, why, sizeof why), "%s", why);
    got = malloc(sizeof(float) * ref.n * rm.num_classes);
    double t0 = now_sec();
    int ok = got && forward_all(m, ref.x, ref.n, MAX_BATCH, got, rm.num_classes, why, sizeof why);
    double secs = now_sec() - t0;
    struct cmp r = {0};
    if (ok) {
        compare(got, want, ref.n, NULL, rm.num_classes, &r);
        print_cmp(cur_label, ref.n, &r, secs);
    }
    free(got);
    free(want);
    eng_model_free(m);
    CHECK(ok, "%s", why);
    CHECK(!r.bad_logits && !r.bad_top, "%d images off in logits, %d in top-5; first: %s",
          r.bad_logits, r.bad_top, r.first_bad);
}

/* JPEG file -> engine decode (full scale) + transform -> engine, vs
 * torchvision's logits from PIL. */
static void case_end_to_end(void) {
    if (!ref.root) SKIP("%s", ref.missing);
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    int same_pp =
        pp.resize == ref.pp.resize && pp.crop == ref.pp.crop && pp.interp == ref.pp.interp;
    for (int c = 0; c < 3; c++)
        same_pp &=
            fabsf(pp.mean[c] - ref.pp.mean[c]) < 1e-7f && fabsf(pp.std[c] - ref.pp.std[c]) < 1e-7f;
    CHECK(same_pp, "eng_preproc_default differs from the reference logits' preprocessing");

    struct ref_model rm;
    struct eng_model *m;
    float *want;
    char why[WHY_LEN] = "";
    CHECK(load_model(cur_model, &rm, &m, &want, why, sizeof why), "%s", why);
    size_t per = (size_t)3 * ref.size * ref.size;
    float *x = malloc(sizeof(float) * per * ref.n);
    float *got = malloc(sizeof(float) * (size_t)ref.n * rm.num_classes);
    float *want_sub = malloc(sizeof(float) * (size_t)ref.n * rm.num_classes);
    int *idx = malloc(sizeof(int) * ref.n);
    int n = 0, skipped = 0, ok = x && got && want_sub && idx;
    double max_in = 0; /* |engine preprocessing - torchvision's|, for information */
    double t0 = now_sec();
    for (int i = 0; ok && i < ref.n; i++) {
        json_t *e = json_array_get(ref.images, i);
        const char *p = json_string_value(json_object_get(e, "path"));
        const char *kind = json_string_value(json_object_get(e, "kind"));
        char path[PATH_LEN], err[ERR_LEN];
        ref_path(p ? p : "", path, sizeof path);
        size_t len = 0;
        unsigned char *data = p ? t_read_file(path, &len) : NULL;
        if (!data) {
            if (kind && !strcmp(kind, "shared")) { /* ../shared/images may be absent here */
                skipped++;
                continue;
            }
            snprintf(why, sizeof why, "cannot read %s", path);
            ok = 0;
            break;
        }
        struct eng_rgb img = {0};
        enum eng_status st = eng_image_decode(data, len, NULL, 0, &img, err, sizeof err);
        if (st == ENG_OK) st = eng_image_transform(&img, &pp, x + n * per, err, sizeof err);
        eng_rgb_free(&img);
        free(data);
        if (st != ENG_OK) {
            snprintf(why, sizeof why, "%s: %s: %s", path, eng_status_name(st), err);
            ok = 0;
            break;
        }
        const float *xr = ref.x + i * per;
        for (size_t k = 0; k < per; k++) {
            double d = fabs((double)x[n * per + k] - xr[k]);
            if (d > max_in) max_in = d;
        }
        memcpy(want_sub + (size_t)n * rm.num_classes, want + (size_t)i * rm.num_classes,
               sizeof(float) * rm.num_classes);
        idx[n++] = i;
    }
    if (ok) ok = forward_all(m, x, n, MAX_BATCH, got, rm.num_classes, why, sizeof why);
    double secs = now_sec() - t0;
    struct cmp r = {0};
    if (ok) {
        compare(got, want_sub, n, idx, rm.num_classes, &r);
        print_cmp(cur_label, n, &r, secs);
        printf("  parity.%s: max |engine preprocessing - torchvision's| %.3g%s\n", cur_label,
               max_in, skipped ? " (shared images absent, skipped)" : "");
    }
    free(x);
    free(got);
    free(want_sub);
    free(idx);
    free(want);
    eng_model_free(m);
    CHECK(ok, "%s", why);
    CHECK(!r.bad_logits && !r.bad_top, "%d images off in logits, %d in top-5; first: %s",
          r.bad_logits, r.bad_top, r.first_bad);
}

/* The command-line tool end to end: build/imgclass --json on the JPEG files
 * (its own decoding, preprocessing and batching) against torchvision. The
 * CLI prints the top 5, so those five logits are checked, and each rank must
 * be torchvision's class there or one within the tolerance of it. Large
 * photos are left out: the CLI decodes them at a reduced DCT scale, which
 * PIL does not. */
static void case_cli(void) {
    if (!ref.root) SKIP("%s", ref.missing);
    const char *bin = getenv("IMGCLASS_BIN");
    if (!bin || !*bin) bin = "build/imgclass";
    CHECK(access(bin, X_OK) == 0, "%s is not built", bin);
    struct ref_model rm;
    CHECK(ref_model_get(cur_model, &rm), "manifest model %d is malformed", cur_model);
    char path[PATH_LEN];
    size_t cap = 1 << 16, len = 0;
    char *cmd = malloc(cap);
    int *idx = malloc(sizeof(int) * ref.n);
    CHECK(cmd && idx);
    ref_path(rm.path, path, sizeof path);
    len += (size_t)snprintf(cmd, cap, "'%s' --json --topk 5 --model '%s'", bin, path);
    int n = 0;
    for (int i = 0; i < ref.n && len + PATH_LEN + 4 < cap; i++) {
        json_t *e = json_array_get(ref.images, i);
        const char *p = json_string_value(json_object_get(e, "path"));
        const char *kind = json_string_value(json_object_get(e, "kind"));
        if (!p || (kind && !strcmp(kind, "large"))) continue;
        ref_path(p, path, sizeof path);
        if (access(path, R_OK) != 0) continue; /* ../shared/images may be absent */
        len += (size_t)snprintf(cmd + len, cap - len, " '%s'", path);
        idx[n++] = i;
    }
    float *want = NULL;
    char why[WHY_LEN] = "";
    ref_path(rm.logits, path, sizeof path);
    want = read_f32(path, (size_t)ref.n * rm.num_classes, why, sizeof why);
    FILE *f = want ? popen(cmd, "r") : NULL;
    int lines = 0, bad = 0;
    double worst = 0;
    char line[8192];
    while (f && fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        json_t *preds = json_object_get(o, "predictions");
        int img = lines < n ? idx[lines] : -1;
        lines++;
        if (img < 0 || json_array_size(preds) != 5) {
            if (!bad++) snprintf(why, sizeof why, "line %d: %.300s", lines, line);
            json_decref(o);
            continue;
        }
        const float *w = want + (size_t)img * rm.num_classes;
        /* torchvision's top 5 and the tolerance for this image */
        struct eng_pred tw[5];
        eng_topk(w, rm.num_classes, 5, tw);
        double mx = 0;
        for (int j = 0; j < rm.num_classes; j++) mx = fmax(mx, fabs(w[j]));
        double tol = LOGIT_REL_TOL * (1 + mx);
        for (int p = 0; p < 5; p++) {
            json_t *e = json_array_get(preds, (size_t)p);
            int cls = (int)json_integer_value(json_object_get(e, "index"));
            double logit = json_number_value(json_object_get(e, "logit"));
            int in_range = cls >= 0 && cls < rm.num_classes;
            double err = in_range ? fabs(logit - w[cls]) : INFINITY;
            worst = fmax(worst, err / tol);
            /* same class as torchvision at this rank, or a near-tie of it */
            int rank_ok = in_range && fabs(w[cls] - tw[p].logit) <= tol;
            if ((err > tol || !rank_ok) && !bad++)
                snprintf(why, sizeof why,
                         "%s: rank %d is class %d (logit %.6g, torchvision %.6g), torchvision's "
                         "rank %d is class %d (%.6g), tol %.3g",
                         image_name(img), p + 1, cls, logit, in_range ? w[cls] : 0.0, p + 1,
                         tw[p].index, tw[p].logit, tol);
        }
        json_decref(o);
    }
    int rc = f ? pclose(f) : -1;
    free(cmd);
    free(idx);
    free(want);
    CHECK(*why == 0 || bad, "%s", why);
    CHECK(rc == 0, "%s exited with status %d", bin, rc);
    CHECK(lines == n, "%d lines for %d images", lines, n);
    CHECK(!bad, "%d mismatches; first: %s", bad, why);
    printf("  parity.%s: %d images through %s, worst logit err/tol %.3g\n", cur_label, n, bin,
           worst);
}

/* Max over images of max_j |a - b| / (1 + max_j |a|); [n][nc] each. */
static double rel_diff(const float *a, const float *b, int n, int nc, int *bitwise) {
    double worst = 0;
    *bitwise = !memcmp(a, b, sizeof(float) * n * nc);
    for (int i = 0; i < n; i++) {
        double maxa = 0, d = 0;
        for (int j = 0; j < nc; j++) {
            const size_t k = (size_t)i * nc + j;
            if (fabs(a[k]) > maxa) maxa = fabs(a[k]);
            double dj = fabs((double)a[k] - b[k]);
            if (!(dj <= d)) d = dj;
        }
        if (!(d / (1 + maxa) <= worst)) worst = d / (1 + maxa);
    }
    return worst;
}

/* The model for the thread and batch cases: resnet50 (bottleneck blocks,
 * downsampling), else whatever the manifest has first. */
static int pick_model(void) {
    int i = ref_model_find("resnet50", "F32");
    return i >= 0 ? i : 0;
}

/* Batch of 8 vs 8 single-image forward passes on one context. */
static void test_batch_1_vs_8(void) {
    if (!ref.root) SKIP("%s", ref.missing);
    struct ref_model rm;
    struct eng_model *m;
    float *want;
    char why[WHY_LEN] = "";
    CHECK(load_model(pick_model(), &rm, &m, &want, why, sizeof why), "%s", why);
    int n = ref.n < MAX_BATCH ? ref.n : MAX_BATCH, nc = rm.num_classes;
    float *a = malloc(sizeof(float) * n * nc), *b = malloc(sizeof(float) * n * nc);
    int ok = a && b && forward_all(m, ref.x, n, n, a, nc, why, sizeof why) &&
             forward_all(m, ref.x, n, 1, b, nc, why, sizeof why);
    int bitwise = 0;
    double d = ok ? rel_diff(a, b, n, nc, &bitwise) : 0;
    if (ok)
        printf("  parity.batch_1_vs_8: %s, %d images: max |diff|/(1+max|logit|) %.3g%s\n", rm.arch,
               n, d, bitwise ? " (bitwise identical)" : "");
    free(a);
    free(b);
    free(want);
    eng_model_free(m);
    CHECK(ok, "%s", why);
    CHECK(d <= BATCH_REL_TOL, "%s: batch 1 and batch %d differ by %.3g (relative)", rm.arch, n, d);
}

struct worker {
    struct eng_ctx *ctx;
    const float *in; /* [n][3][size][size] */
    int n, rounds;
    float *out; /* [rounds][n][nc] */
    int nc;
    enum eng_status st;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    for (int r = 0; r < w->rounds && w->st == ENG_OK; r++)
        w->st = eng_ctx_forward(w->ctx, w->in, w->n, w->out + (size_t)r * w->n * w->nc);
    return NULL;
}

/* Two contexts on one model, forward passes concurrently in two threads,
 * give what one context gives for the same images one after the other. */
static void test_two_threads(void) {
    if (!ref.root) SKIP("%s", ref.missing);
    enum { THREADS = 2, ROUNDS = 2 };
    struct ref_model rm;
    struct eng_model *m;
    float *want;
    char why[WHY_LEN] = "", err[ERR_LEN];
    CHECK(load_model(pick_model(), &rm, &m, &want, why, sizeof why), "%s", why);
    int k = ref.n / THREADS < MAX_BATCH ? ref.n / THREADS : MAX_BATCH, nc = rm.num_classes;
    size_t per = (size_t)3 * ref.size * ref.size;
    float *seq = malloc(sizeof(float) * THREADS * k * nc);
    float *par = malloc(sizeof(float) * THREADS * ROUNDS * k * nc);
    struct worker w[THREADS];
    memset(w, 0, sizeof w);
    int ok = seq && par && k > 0 && forward_all(m, ref.x, THREADS * k, k, seq, nc, why, sizeof why);
    for (int t = 0; ok && t < THREADS; t++) {
        w[t] = (struct worker){.in = ref.x + (size_t)t * k * per,
                               .n = k,
                               .rounds = ROUNDS,
                               .out = par + (size_t)t * ROUNDS * k * nc,
                               .nc = nc,
                               .st = ENG_OK};
        if (eng_ctx_new(m, k, ref.size, &w[t].ctx, err, sizeof err) != ENG_OK) {
            snprintf(why, sizeof why, "eng_ctx_new: %s", err);
            ok = 0;
        }
    }
    pthread_t th[THREADS];
    /* Each thread runs ROUNDS full batches, seconds of work, so the passes
     * overlap without further synchronisation. */
    int started = 0;
    while (ok && started < THREADS && !pthread_create(&th[started], NULL, worker_main, &w[started]))
        started++;
    if (ok && started < THREADS) {
        snprintf(why, sizeof why, "pthread_create failed");
        ok = 0;
    }
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    double worst = 0;
    int all_bitwise = 1;
    for (int t = 0; ok && t < THREADS; t++) {
        if (w[t].st != ENG_OK) {
            snprintf(why, sizeof why, "thread %d: eng_ctx_forward: %s", t,
                     eng_status_name(w[t].st));
            ok = 0;
            break;
        }
        for (int r = 0; r < ROUNDS; r++) {
            int bitwise;
            double d =
                rel_diff(seq + (size_t)t * k * nc, w[t].out + (size_t)r * k * nc, k, nc, &bitwise);
            if (d > worst) worst = d;
            all_bitwise &= bitwise;
        }
    }
    if (ok)
        printf("  parity.two_threads: %s, %d threads x %d rounds x %d images: "
               "max |diff|/(1+max|logit|) %.3g%s\n",
               rm.arch, THREADS, ROUNDS, k, worst,
               all_bitwise ? " (bitwise identical)" : " (not bitwise identical)");
    for (int t = 0; t < THREADS; t++)
        eng_ctx_free(w[t].ctx);
    free(seq);
    free(par);
    free(want);
    eng_model_free(m);
    CHECK(ok, "%s", why);
    CHECK(worst <= BATCH_REL_TOL, "%s: two threads differ from one context by %.3g (relative)",
          rm.arch, worst);
}

/* The decode modes on the photos FAST treats differently from torchvision:
 * the large one (decoded at a reduced DCT scale) and the EXIF-rotated ones.
 * On the large photo EXACT must match torchvision's logits as closely as
 * the end-to-end case; FAST's logit cosine is printed, for the README.
 * (torchvision rotates neither way: the reference logits are computed on
 * the EXIF-transposed image, which FAST reproduces; EXACT is checked on
 * those files against the unrotated reference tensors in image.pil_parity.) */
static double cosine(const float *a, const float *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int k = 0; k < n; k++)
        ab += (double)a[k] * b[k], aa += (double)a[k] * a[k], bb += (double)b[k] * b[k];
    return ab / sqrt(aa * bb + 1e-300);
}

static void case_decode_modes(void) {
    if (!ref.root) SKIP("%s", ref.missing);
    struct ref_model rm;
    struct eng_model *m;
    float *want;
    char why[WHY_LEN] = "";
    CHECK(load_model(cur_model, &rm, &m, &want, why, sizeof why), "%s", why);
    size_t per = (size_t)3 * ref.size * ref.size;
    float *x = malloc(sizeof(float) * per * 2), *got = malloc(sizeof(float) * 2 * rm.num_classes);
    int checked = 0, ok = x && got;
    for (int i = 0; ok && i < ref.n; i++) {
        json_t *e = json_array_get(ref.images, i);
        const char *kind = json_string_value(json_object_get(e, "kind"));
        if (!kind || strcmp(kind, "large")) continue;
        char path[PATH_LEN], err[ERR_LEN];
        ref_path(json_string_value(json_object_get(e, "path")), path, sizeof path);
        size_t len = 0;
        unsigned char *data = t_read_file(path, &len);
        struct eng_preproc pp = ref.pp;
        ok = data != NULL;
        double best[2] = {INFINITY, INFINITY}; /* decode + preprocess, best of 5 */
        for (int rep = 0; ok && rep < 5; rep++)
            for (int mode = 0; ok && mode < 2; mode++) {
                pp.decode = mode ? ENG_DECODE_EXACT : ENG_DECODE_FAST;
                double t0 = now_sec();
                ok = eng_image_preprocess(data, len, &pp, NULL, x + mode * per, err, sizeof err) ==
                     ENG_OK;
                if (now_sec() - t0 < best[mode]) best[mode] = now_sec() - t0;
            }
        free(data);
        if (!ok || !forward_all(m, x, 2, 2, got, rm.num_classes, why, sizeof why)) {
            if (!why[0]) snprintf(why, sizeof why, "%s: %s", path, err);
            ok = 0;
            break;
        }
        const float *w = want + (size_t)i * rm.num_classes;
        double cf = cosine(got, w, rm.num_classes), ce = cosine(got + rm.num_classes, w,
                                                                 rm.num_classes);
        printf("  parity.decode_modes: %s %s: logit cosine vs torchvision: fast %.4f, exact "
               "%.7f; decode + preprocess: fast %.1f ms, exact %.1f ms\n",
               rm.arch, json_string_value(json_object_get(e, "name")), cf, ce, best[0] * 1e3,
               best[1] * 1e3);
        struct cmp r;
        int idx = i;
        compare(got + rm.num_classes, w, 1, &idx, rm.num_classes, &r);
        if (r.bad_logits || r.bad_top) {
            snprintf(why, sizeof why, "EXACT off torchvision: %s", r.first_bad);
            ok = 0;
        }
        checked++;
    }
    free(x);
    free(got);
    free(want);
    eng_model_free(m);
    CHECK(ok, "%s", why);
    CHECK(checked > 0, "no large photo in the reference set");
}

/* ------------------------------------------------------------------------ */
/* Runner                                                                   */
/* ------------------------------------------------------------------------ */

/* Runs fn as case "<prefix>_<arch>_<dtype>" for manifest model i. */
static void run_model_case(const char *prefix, void (*fn)(void), int i) {
    struct ref_model rm;
    cur_model = i;
    if (ref_model_get(i, &rm))
        snprintf(cur_label, sizeof cur_label, "%s_%s_%s", prefix, rm.arch, rm.dtype);
    else
        snprintf(cur_label, sizeof cur_label, "%s_model%d", prefix, i);
    t_run(cur_label, fn);
}

int main(void) {
    t_suite = "parity";
    ref_open();
    RUN(test_reference);
    if (ref.root) {
        int nm = (int)json_array_size(ref.models);
        for (int i = 0; i < nm; i++)
            run_model_case("logits", case_logits, i);
        /* End to end: the engine's own JPEG decoding and preprocessing. */
        static const char *e2e[] = {"resnet18", "resnet50"};
        for (size_t j = 0; j < sizeof e2e / sizeof e2e[0]; j++) {
            int i = ref_model_find(e2e[j], "F32");
            if (i >= 0) run_model_case("end_to_end", case_end_to_end, i);
        }
        int i50 = ref_model_find("resnet50", "F32");
        if (i50 >= 0) run_model_case("decode_modes", case_decode_modes, i50);
        /* The CLI on every depth. */
        for (int i = 0; i < nm; i++) {
            struct ref_model rm;
            if (ref_model_get(i, &rm) && !strcmp(rm.dtype, "F32")) run_model_case("cli", case_cli, i);
        }
        RUN(test_batch_1_vs_8);
        RUN(test_two_threads);
    }
    ref_close();
    return t_done();
}
