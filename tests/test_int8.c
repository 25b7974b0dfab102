/* test_int8.c: the int8 path. The AVX-512 VNNI kernels (engine/conv_int8.c)
 * against the plain C integer reference (engine/conv_int8_ref.c), bit for
 * bit, on shapes that hit every edge (odd sizes, stride 1 and 2, padding,
 * 1x1 read in place or gathered, 3x3, 7x7, several reduction passes,
 * partial row tiles, splits by rows and by panels, shortcut and ReLU); the
 * quantizer likewise; batch invariance of both precisions (one image gives
 * the same logits whatever its batch, its place in it and the thread
 * count); and end to end, int8's agreement with fp32 on the reference photos
 * against PyTorch onednn int8's on the same weights (build/ref). */
#include "engine_impl.h"
#include "test.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define CANARY 4096 /* bytes of guard after the scratch */

/* Skips the running case, naming what is missing, unless the kernels of
 * level isa may run here (a CPU without them, or IMGCLASS_MAX_ISA below
 * them: a CI machine is checked for skips, never for failures). */
#define SKIP_UNLESS(isa)                                                                           \
    do {                                                                                           \
        const char *why_;                                                                          \
        if (!eng_isa_available((isa), &why_)) SKIP("%s", why_);                                    \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_u64(void) { /* xorshift64 */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static float frand(void) { /* uniform in [-1, 1) */
    return (float)((next_u64() >> 11) * (1.0 / 9007199254740992.0) * 2 - 1);
}

/* ------------------------------------------------------------------------ */
/* Kernels vs the integer reference                                         */
/* ------------------------------------------------------------------------ */

struct shape {
    const char *name;
    int n, h, w, cin, cout, k, stride, residual, relu;
    int wide; /* s16 weights, unpadded: the int8 stem on its padded input */
};

static const struct shape shapes[] = {
    {"1x1 in place, shortcut", 3, 7, 7, 64, 64, 1, 1, 1, 1, 0},
    {"1x1 cin 6 (gathered)", 2, 5, 3, 6, 32, 1, 1, 0, 1, 0},
    {"1x1 stride 2, odd, no ReLU", 2, 9, 9, 64, 128, 1, 2, 0, 0, 0},
    {"3x3 odd map", 2, 13, 13, 64, 64, 3, 1, 0, 1, 0},
    {"3x3 stride 2", 3, 11, 11, 32, 32, 3, 2, 0, 1, 0},
    {"3x3 cin 3 (k padded to 4)", 1, 5, 7, 3, 32, 3, 1, 1, 1, 0},
    {"3x3 several passes, shortcut", 2, 7, 7, 256, 64, 3, 1, 1, 1, 0},
    {"7x7 stride 2 (stem shape)", 1, 23, 23, 3, 64, 7, 2, 0, 1, 0},
    {"7x7 stride 2 wide (the int8 stem), odd", 2, 29, 27, 3, 64, 7, 2, 0, 1, 1},
    {"7x7 stride 2 wide, no ReLU, shortcut", 1, 16, 16, 3, 32, 7, 2, 1, 0, 1},
    {"1x1 deep, several passes", 5, 3, 3, 1024, 96, 1, 1, 1, 1, 0},
    {"3x3 deep, 1.2 MB of weights (AMX: panels outer)", 2, 5, 4, 512, 256, 3, 1, 1, 1, 0},
    {"rows past one block", 2, 20, 20, 32, 32, 3, 1, 0, 1, 0},
    {"1x1 in place, no ReLU, shortcut", 1, 14, 14, 128, 256, 1, 1, 1, 0, 0},
};

struct i8_case {
    struct eng_conv cv;
    int ho, wo;
    size_t in_len, out_len;
    uint8_t *in;
    float *res, *ascale;
    float *wfloat; /* [cout][kdim] */
};

static void case_free(struct i8_case *c) {
    free(c->cv.wq);
    free(c->cv.wscale);
    free(c->cv.bias);
    free(c->in);
    free(c->res);
    free(c->ascale);
    free(c->wfloat);
}

/* amx: pack a wide shape's weights for the AMX kernel (hi and lo). */
static bool case_make_for(struct i8_case *c, const struct shape *s, bool amx) {
    memset(c, 0, sizeof *c);
    const int pad = s->wide ? 0 : s->k / 2;
    c->cv = (struct eng_conv){.cin = s->cin, .cout = s->cout, .k = s->k, .stride = s->stride,
                              .pad = pad, .int8 = true, .wide = s->wide, .amx = amx && s->wide};
    c->ho = eng_out_dim(s->h, s->k, s->stride, pad);
    c->wo = eng_out_dim(s->w, s->k, s->stride, pad);
    const int kdim = s->k * s->k * s->cin, kdim4 = eng_i8_kdim4(&c->cv);
    c->in_len = (size_t)s->n * s->h * s->w * s->cin;
    c->out_len = (size_t)s->n * c->ho * c->wo * s->cout;
    c->cv.wq = aligned_alloc(64, ((size_t)eng_i8_panels(&c->cv) * ENG_PACK_NR * kdim4 + 63) / 64 * 64);
    c->cv.wscale = malloc(sizeof(float) * s->cout);
    c->cv.bias = malloc(sizeof(float) * s->cout);
    c->in = malloc(c->in_len);
    c->res = malloc(sizeof(float) * c->out_len);
    c->ascale = malloc(sizeof(float) * s->n);
    c->wfloat = malloc(sizeof(float) * s->cout * kdim);
    if (!c->cv.wq || !c->cv.wscale || !c->cv.bias || !c->in || !c->res || !c->ascale || !c->wfloat)
        return false;
    for (size_t i = 0; i < (size_t)s->cout * kdim; i++) c->wfloat[i] = frand() * 0.1f;
    if (s->wide)
        eng_i16_quantize_weights(c->cv.wq, c->cv.wscale, c->wfloat, s->cout, kdim, c->cv.amx);
    else
        eng_i8_quantize_weights(c->cv.wq, c->cv.wscale, c->wfloat, s->cout, kdim);
    for (int o = 0; o < s->cout; o++) c->cv.bias[o] = frand();
    /* the full u8 range, with the extremes common */
    for (size_t i = 0; i < c->in_len; i++) {
        uint64_t r = next_u64() >> 40;
        c->in[i] = r % 8 == 0 ? 255 : r % 8 == 1 ? 0 : (uint8_t)(r >> 3);
    }
    for (size_t i = 0; i < c->out_len; i++) c->res[i] = frand() * 4;
    for (int i = 0; i < s->n; i++) c->ascale[i] = (0.5f + (float)i) / 255.0f;
    return true;
}

static bool case_make(struct i8_case *c, const struct shape *s) {
    return case_make_for(c, s, false);
}

/* Runs the kernel split into `tasks` ranges of rows (or of panels) and
 * compares output and per-image maxima with the reference, bit for bit. */
static bool run_case(const struct shape *s, int tasks, bool by_panels, bool amx, char *why,
                     size_t whylen) {
    struct i8_case c;
    bool ok = false;
    float *want = NULL, *got = NULL;
    uint8_t *scratch = NULL;
    if (!case_make_for(&c, s, amx)) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    want = malloc(sizeof(float) * c.out_len);
    got = malloc(sizeof(float) * c.out_len);
    const size_t sbytes = ((amx ? eng_amx_scratch_bytes(&c.cv) : eng_i8_scratch_bytes()) + 63) / 64 * 64;
    scratch = aligned_alloc(64, sbytes + CANARY);
    if (!want || !got || !scratch) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    float tmax_want[8] = {0}, tmax_got[8] = {0};
    struct eng_i8_epi e = {.ascale = c.ascale, .res = s->residual ? c.res : NULL,
                           .tmax = s->relu ? tmax_want : NULL, .relu = s->relu};
    eng_conv_int8_ref(want, c.in, &c.cv, s->n, s->h, s->w, &e);
    e.tmax = s->relu ? tmax_got : NULL;
    memset(scratch + sbytes, 0xa5, CANARY);
    const int m = s->n * c.ho * c.wo, panels = eng_i8_panels(&c.cv);
    for (int t = 0; t < tasks; t++) {
        int m0 = 0, m1 = m, p0 = 0, p1 = panels;
        if (by_panels) {
            p0 = panels * t / tasks;
            p1 = panels * (t + 1) / tasks;
        } else {
            m0 = (int)((int64_t)m * t / tasks);
            m1 = (int)((int64_t)m * (t + 1) / tasks);
        }
        if (amx)
            eng_conv_amx(got, c.in, &c.cv, s->h, s->w, &e, m0, m1, p0, p1, scratch);
        else
            eng_conv_int8(got, c.in, &c.cv, s->h, s->w, &e, m0, m1, p0, p1, scratch);
    }
    for (int i = 0; i < CANARY; i++)
        if (scratch[sbytes + i] != 0xa5) {
            snprintf(why, whylen, "%s: scratch canary overwritten at +%d", s->name, i);
            goto out;
        }
    for (size_t i = 0; i < c.out_len; i++)
        if (memcmp(&got[i], &want[i], sizeof(float))) {
            snprintf(why, whylen, "%s%s, %d task(s) by %s: output %zu is %.9g, reference %.9g",
                     amx ? "AMX " : "", s->name, tasks, by_panels ? "panels" : "rows", i, (double)got[i],
                     (double)want[i]);
            goto out;
        }
    for (int i = 0; i < s->n; i++)
        if (memcmp(&tmax_got[i], &tmax_want[i], sizeof(float))) {
            snprintf(why, whylen, "%s: image %d max %.9g, reference %.9g", s->name, i,
                     (double)tmax_got[i], (double)tmax_want[i]);
            goto out;
        }
    ok = true;
out:
    case_free(&c);
    free(want);
    free(got);
    free(scratch);
    return ok;
}

static void test_kernel_matches_reference(void) {
    SKIP_UNLESS(ENG_ISA_AVX512_VNNI);
    char why[512];
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const struct shape *s = &shapes[i];
        CHECK(run_case(s, 1, false, false, why, sizeof why), "%s", why);
        CHECK(run_case(s, 3, false, false, why, sizeof why), "%s", why);
        if (s->cout / ENG_PACK_NR >= 2)
            CHECK(run_case(s, 2, true, false, why, sizeof why), "%s", why);
    }
}

/* The AMX kernel gives the same bits, on the shapes it takes (reduction a
 * multiple of 64 bytes: every conv of a ResNet's blocks). */
static void test_amx_matches_reference(void) {
    SKIP_UNLESS(ENG_ISA_AMX);
    char why[512];
    int ran = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const struct shape *s = &shapes[i];
        struct eng_conv cv = {.cin = s->cin, .cout = s->cout, .k = s->k};
        if (!s->wide && !eng_amx_fits(&cv)) continue; /* wide: hi and lo, on any shape */
        CHECK(run_case(s, 1, false, true, why, sizeof why), "%s", why);
        CHECK(run_case(s, 3, false, true, why, sizeof why), "%s", why);
        if (s->cout / ENG_PACK_NR >= 2)
            CHECK(run_case(s, 2, true, true, why, sizeof why), "%s", why);
        ran++;
    }
    CHECK(ran >= 5, "only %d shapes fit", ran);
}

/* A whole int8 model gives the same logits on AMX as on VNNI. */
static void test_amx_model_same_bits(void) {
    SKIP_UNLESS(ENG_ISA_AMX);
    struct eng_model *m[2] = {NULL, NULL};
    const int size = 96, n = 2;
    const size_t img = (size_t)3 * size * size;
    float x[2 * 3 * 96 * 96], l[2][2 * 1000];
    for (size_t i = 0; i < img * n; i++) x[i] = frand() * 2;
    bool ok = true;
    for (int k = 0; k < 2 && ok; k++) {
        eng_int8_allow_amx(k == 0);
        struct eng_ctx *c = NULL;
        ok = eng_model_load_ex("random:resnet50:9", ENG_PRECISION_INT8, &m[k], NULL, 0) == ENG_OK &&
             eng_ctx_new(m[k], n, size, &c, NULL, 0) == ENG_OK && eng_ctx_forward(c, x, n, l[k]) == ENG_OK;
        eng_ctx_free(c);
    }
    eng_int8_allow_amx(true);
    bool kinds = ok && !strcmp(eng_model_get_info(m[0])->kernel, "amx") &&
                 !strcmp(eng_model_get_info(m[1])->kernel, "avx512vnni");
    eng_model_free(m[0]);
    eng_model_free(m[1]);
    CHECK(ok && kinds, "load or forward failed");
    CHECK(!memcmp(l[0], l[1], sizeof l[0]), "AMX and VNNI logits differ");
}

/* The layer driver in conv.c (task split, maxima over tasks) gives the
 * reference too. */
static void test_layer_driver(void) {
    SKIP_UNLESS(ENG_ISA_AVX512_VNNI);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const struct shape *s = &shapes[si];
        if (!s->relu) continue;
        struct i8_case c;
        CHECK(case_make(&c, s), "out of memory");
        float *want = malloc(sizeof(float) * c.out_len), *got = malloc(sizeof(float) * c.out_len);
        const int tasks = 3;
        float *col = aligned_alloc(64, sizeof(float) * eng_conv_col_floats(&c.cv, s->n, s->h, s->w, tasks));
        float tslots[3 * 8], mw[8] = {0}, mg[8] = {0};
        struct eng_i8_epi e = {.ascale = c.ascale, .res = s->residual ? c.res : NULL, .tmax = mw,
                               .relu = true};
        eng_conv_int8_ref(want, c.in, &c.cv, s->n, s->h, s->w, &e);
        e.tmax = mg;
        eng_conv_forward_int8(got, c.in, &c.cv, s->n, s->h, s->w, &e, col, tslots, tasks);
        bool same = !memcmp(want, got, sizeof(float) * c.out_len) && !memcmp(mw, mg, sizeof mw);
        /* a 1x1 stride-1 conv whose tasks make their input's u8 copy from
         * fp32 (eng_i8_epi.src): by rows or, when deep, all of it first */
        bool made = true;
        if (same && s->k == 1 && s->stride == 1) {
            float *x = malloc(sizeof(float) * c.in_len), inv[8];
            uint8_t *q = malloc(c.in_len);
            const size_t img_len = c.in_len / s->n;
            for (size_t i = 0; i < c.in_len; i++) x[i] = (float)c.in[i] * 0.37f + 0.2f * frand();
            for (int i = 0; i < s->n; i++) {
                inv[i] = 1.0f / (0.37f + 0.01f * (float)i);
                eng_quantize_u8_ref(c.in + i * img_len, x + i * img_len, img_len, inv[i]);
            }
            memset(mw, 0, sizeof mw);
            memset(mg, 0, sizeof mg);
            e.tmax = mw;
            eng_conv_int8_ref(want, c.in, &c.cv, s->n, s->h, s->w, &e);
            memset(q, 0xee, c.in_len);
            e.tmax = mg;
            e.src = x;
            e.srcinv = inv;
            eng_conv_forward_int8(got, q, &c.cv, s->n, s->h, s->w, &e, col, tslots, tasks);
            made = !memcmp(q, c.in, c.in_len) && !memcmp(want, got, sizeof(float) * c.out_len) &&
                   !memcmp(mw, mg, sizeof mw);
            free(x);
            free(q);
        }
        free(want);
        free(got);
        free(col);
        case_free(&c);
        CHECK(same, "%s: eng_conv_forward_int8 differs from the reference", s->name);
        CHECK(made, "%s: with its u8 input made by its tasks, differs from the reference", s->name);
    }
}

/* A ReLU conv whose only reader is the next conv (struct eng_i8_epi
 * accmax): s32 sums and per-channel maxima, then the epilogue and the
 * quantizer in one pass (eng_requant_images) give the u8 and the scale that
 * the reference conv followed by eng_quantize_u8_ref give, on the VNNI and
 * the AMX kernels, over several task counts. */
static void test_fused_requant(void) {
    SKIP_UNLESS(ENG_ISA_AVX512_VNNI);
    int ran = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const struct shape *s = &shapes[si];
        if (!s->relu || s->residual || s->n > 8) continue;
        for (int amx = 0; amx < 2; amx++) {
            struct i8_case c;
            CHECK(case_make(&c, s), "out of memory");
            c.cv.amx = amx && eng_amx_available() && eng_amx_fits(&c.cv);
            if (amx && !c.cv.amx) {
                case_free(&c);
                continue;
            }
            const int hw = c.ho * c.wo, tasks = 1 + ran % 3;
            float *want = malloc(sizeof(float) * c.out_len), *acc = malloc(sizeof(float) * c.out_len);
            uint8_t *qw = malloc(c.out_len), *qg = malloc(c.out_len);
            float *col = aligned_alloc(64, sizeof(float) * eng_conv_col_floats(&c.cv, s->n, s->h, s->w, tasks) + 64);
            void *slots = malloc(eng_i8_slot_bytes(tasks, s->n, s->cout));
            int32_t *accmax = malloc(sizeof(int32_t) * s->n * s->cout);
            float mw[8] = {0}, sw[8], sg[8], inv;
            struct eng_i8_epi e = {.ascale = c.ascale, .tmax = mw, .relu = true};
            eng_conv_int8_ref(want, c.in, &c.cv, s->n, s->h, s->w, &e);
            for (int i = 0; i < s->n; i++) {
                eng_i8_scale(mw[i], &sw[i], &inv);
                eng_quantize_u8_ref(qw + (size_t)i * hw * s->cout, want + (size_t)i * hw * s->cout,
                                    (size_t)hw * s->cout, inv);
            }
            e = (struct eng_i8_epi){.ascale = c.ascale, .accmax = accmax, .relu = true};
            eng_conv_forward_int8(acc, c.in, &c.cv, s->n, s->h, s->w, &e, col, slots, tasks);
            eng_requant_images(qg, sg, (const int32_t *)acc, accmax, &c.cv, c.ascale, s->n, hw, tasks);
            bool same = !memcmp(qw, qg, c.out_len) && !memcmp(sw, sg, sizeof(float) * s->n);
            /* and the plain C requant on the same sums */
            float ascale_inv[8];
            for (int i = 0; i < s->n; i++) eng_i8_scale(mw[i], &sw[i], &ascale_inv[i]);
            eng_i8_requant_ref(qg, (const int32_t *)acc, &c.cv, c.ascale, ascale_inv, 0, s->n * hw, hw);
            same = same && !memcmp(qw, qg, c.out_len);
            free(want);
            free(acc);
            free(qw);
            free(qg);
            free(col);
            free(slots);
            free(accmax);
            case_free(&c);
            CHECK(same, "%s%s, %d task(s): fused requant differs from conv + quantize", amx ? "AMX " : "",
                  s->name, tasks);
            ran++;
        }
    }
    CHECK(ran >= 5, "only %d cases ran", ran);
}

/* The reference itself against a double-precision conv on the dequantized
 * values: what it computes is the convolution, within float rounding. */
static void test_reference_is_a_convolution(void) {
    const struct shape *s = &shapes[3];
    struct i8_case c;
    CHECK(case_make(&c, s), "out of memory");
    float *got = malloc(sizeof(float) * c.out_len);
    struct eng_i8_epi e = {.ascale = c.ascale, .relu = false};
    eng_conv_int8_ref(got, c.in, &c.cv, s->n, s->h, s->w, &e);
    const int kdim = s->k * s->k * s->cin, p = s->k / 2;
    double worst = 0;
    for (int img = 0; img < s->n; img++)
        for (int oy = 0; oy < c.ho; oy++)
            for (int ox = 0; ox < c.wo; ox++)
                for (int o = 0; o < s->cout; o++) {
                    double acc = 0, scale = 0;
                    for (int ky = 0; ky < s->k; ky++)
                        for (int kx = 0; kx < s->k; kx++) {
                            int iy = oy - p + ky, ix = ox - p + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            for (int ci = 0; ci < s->cin; ci++) {
                                double x = c.in[(((size_t)img * s->h + iy) * s->w + ix) * s->cin + ci] *
                                           (double)c.ascale[img];
                                double wv = c.wfloat[(size_t)o * kdim + (ky * s->k + kx) * s->cin + ci];
                                acc += x * wv;
                                scale += fabs(x * wv);
                            }
                        }
                    acc += c.cv.bias[o];
                    double g = got[(((size_t)img * c.ho + oy) * c.wo + ox) * s->cout + o];
                    /* weights rounded to 1/254 of their channel's range */
                    double err = fabs(g - acc) / (1 + scale);
                    if (err > worst) worst = err;
                }
    free(got);
    case_free(&c);
    CHECK(worst < 0.01, "worst error %g of the sum of |terms|", worst);
}

static void test_quantizer(void) {
    SKIP_UNLESS(ENG_ISA_AVX512_VNNI);
    enum { N = 1000 };
    float x[N];
    uint8_t a[N], b[N];
    for (int i = 0; i < N; i++) x[i] = fabsf(frand()) * 3.0f;
    /* exact halves, to hold both to ties-to-even */
    for (int i = 0; i < 40; i++) x[i] = (float)i * 0.5f / 85.0f * 3.0f;
    x[40] = 0.0f;
    x[41] = 3.0f;
    for (int i = 42; i < N; i += 7) x[i] = i % 2 ? -x[i] : x[i] * 40.0f; /* both saturations */
    float scale, inv;
    eng_i8_scale(3.0f, &scale, &inv);
    for (size_t len = 1; len <= N; len += len < 40 ? 1 : 97) {
        eng_quantize_u8(a, x, len, inv);
        eng_quantize_u8_ref(b, x, len, inv);
        CHECK(!memcmp(a, b, len), "length %zu differs", len);
    }
    CHECK(b[41] == 255 && b[40] == 0, "range ends: %d %d", b[40], b[41]);
    CHECK(eng_max_f32(x, 42) == 3.0f, "max %g", (double)eng_max_f32(x, 42));
}

/* Pooling the u8 copy gives the u8 copy of the pooled floats (the int8
 * stem's path), on odd and even sizes, 64 channels (AVX-512BW) and 24 (C). */
static void test_maxpool_u8(void) {
    SKIP_UNLESS(ENG_ISA_AVX512_VNNI);
    static const int dims[][4] = {{2, 11, 9, 64}, {1, 16, 16, 64}, {2, 7, 8, 24}, {3, 9, 10, 80}};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        const int n = dims[d][0], h = dims[d][1], w = dims[d][2], c = dims[d][3];
        const int ho = eng_out_dim(h, 3, 2, 1), wo = eng_out_dim(w, 3, 2, 1);
        const size_t in_len = (size_t)h * w * c, out_len = (size_t)ho * wo * c;
        float *x = malloc(sizeof(float) * n * in_len), *px = malloc(sizeof(float) * n * out_len);
        uint8_t *qx = malloc(n * in_len), *want = malloc(n * out_len), *got = malloc(n * out_len);
        CHECK(x && px && qx && want && got, "out of memory");
        for (size_t i = 0; i < n * in_len; i++) x[i] = fmaxf(0.0f, frand() * 3.0f);
        eng_maxpool3x3s2(px, x, n, h, w, c);
        bool same = true;
        if (c % 16 == 0) { /* the fp32 pool by bands of 2 rows, from the rows each needs */
            float *band = malloc(sizeof(float) * out_len);
            CHECK(band, "out of memory");
            for (int i = 0; i < n; i++)
                for (int oy0 = 0; oy0 < ho; oy0 += 2) {
                    const int oy1 = oy0 + 2 < ho ? oy0 + 2 : ho, iy0 = oy0 * 2 - 1 > 0 ? oy0 * 2 - 1 : 0;
                    eng_maxpool3x3s2_band(band, x + i * in_len + (size_t)iy0 * w * c, iy0, h, w, c, oy0, oy1);
                    same = same && !memcmp(band, px + i * out_len + (size_t)oy0 * wo * c,
                                           sizeof(float) * (oy1 - oy0) * wo * c);
                }
            free(band);
        }
        for (int i = 0; i < n; i++) {
            float scale, inv, mx = eng_max_f32(x + i * in_len, in_len);
            same = same && mx == eng_max_f32(px + i * out_len, out_len);
            eng_i8_scale(mx, &scale, &inv);
            eng_quantize_u8_ref(qx + i * in_len, x + i * in_len, in_len, inv);
            eng_quantize_u8_ref(want + i * out_len, px + i * out_len, out_len, inv);
        }
        eng_maxpool3x3s2_u8(got, qx, n, h, w, c);
        same = same && !memcmp(want, got, n * out_len);
        eng_maxpool3x3s2_u8_ref(got, qx, n, h, w, c);
        same = same && !memcmp(want, got, n * out_len);
        memset(got, 0xee, n * out_len);
        eng_maxpool3x3s2_u8_tasks(got, qx, n, h, w, c, 4); /* row ranges, in the caller */
        same = same && !memcmp(want, got, n * out_len);
        free(x);
        free(px);
        free(qx);
        free(want);
        free(got);
        CHECK(same, "%dx%dx%dx%d: the u8 pool differs from the u8 of the pooled floats", n, h, w, c);
    }
}

/* ------------------------------------------------------------------------ */
/* Batch invariance                                                         */
/* ------------------------------------------------------------------------ */

#define INV_SIZE 64 /* small images: the whole graph runs, quickly */
#define INV_BATCH 5

/* logits[n][classes] for images x[0..n) run in one forward pass of a new
 * context made while the pool has `threads` threads. */
static bool forward_with(const struct eng_model *m, int threads, const float *x, int n,
                         float *logits) {
    eng_set_threads(threads);
    struct eng_ctx *c = NULL;
    bool ok = eng_ctx_new(m, INV_BATCH, INV_SIZE, &c, NULL, 0) == ENG_OK &&
              eng_ctx_forward(c, x, n, logits) == ENG_OK;
    eng_ctx_free(c);
    return ok;
}

struct inv_thread {
    const struct eng_model *m;
    const float *x;
    float *logits; /* [INV_BATCH][classes], every image in batches of 3, 2 */
    bool ok;
};

static void *inv_worker(void *arg) {
    struct inv_thread *t = arg;
    const int classes = eng_model_get_info(t->m)->num_classes;
    const size_t img = (size_t)3 * INV_SIZE * INV_SIZE;
    struct eng_ctx *c = NULL;
    t->ok = eng_ctx_new(t->m, INV_BATCH, INV_SIZE, &c, NULL, 0) == ENG_OK;
    for (int round = 0; round < 4 && t->ok; round++)
        t->ok = eng_ctx_forward(c, t->x, 3, t->logits) == ENG_OK &&
                eng_ctx_forward(c, t->x + 3 * img, 2, t->logits + (size_t)3 * classes) == ENG_OK;
    eng_ctx_free(c);
    return NULL;
}

/* Each image alone on one thread is the reference; in batches of 1 ..
 * INV_BATCH at every place, on 1 and 2 pool threads, and in two contexts
 * running at once, it must give the same bits. */
static void check_invariance(const char *spec, enum eng_precision prec) {
    char err[512];
    struct eng_model *m = NULL;
    CHECK(eng_model_load_ex(spec, prec, &m, err, sizeof err) == ENG_OK, "%s", err);
    const int classes = eng_model_get_info(m)->num_classes;
    const size_t img = (size_t)3 * INV_SIZE * INV_SIZE, nl = (size_t)INV_BATCH * classes;
    float *x = malloc(sizeof(float) * img * INV_BATCH), *want = malloc(sizeof(float) * nl);
    float *got = malloc(sizeof(float) * nl), *got2 = malloc(sizeof(float) * nl);
    for (size_t i = 0; i < img * INV_BATCH; i++) x[i] = frand() * 2;
    bool ok = true;
    char why[256] = "";
    for (int i = 0; i < INV_BATCH && ok; i++)
        ok = forward_with(m, 1, x + i * img, 1, want + (size_t)i * classes);
    for (int threads = 1; threads <= 2 && ok; threads++)
        for (int n = 1; n <= INV_BATCH && ok; n++)
            for (int first = 0; first + n <= INV_BATCH && ok; first++) {
                ok = forward_with(m, threads, x + first * img, n, got);
                if (ok && memcmp(got, want + (size_t)first * classes, sizeof(float) * n * classes)) {
                    snprintf(why, sizeof why, "%d thread(s), images %d..%d in one batch", threads,
                             first, first + n - 1);
                    ok = false;
                }
            }
    if (ok) { /* two contexts at once on a 2-thread pool */
        eng_set_threads(2);
        struct inv_thread t[2] = {{m, x, got, false}, {m, x, got2, false}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, inv_worker, &t[i]);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        ok = t[0].ok && t[1].ok;
        if (ok && (memcmp(got, want, sizeof(float) * nl) || memcmp(got2, want, sizeof(float) * nl))) {
            snprintf(why, sizeof why, "two contexts at once");
            ok = false;
        }
    }
    eng_shutdown();
    free(x);
    free(want);
    free(got);
    free(got2);
    eng_model_free(m);
    CHECK(ok, "%s %s: %s", spec, eng_precision_name(prec), *why ? why : "forward failed");
    printf("  int8.batch_invariance: %s %s: bit-identical over batches 1..%d, every place, "
           "1 and 2 threads, two contexts\n",
           spec, eng_precision_name(prec), INV_BATCH);
}

static void test_batch_invariance_fp32(void) {
    check_invariance("random:resnet50:3", ENG_PRECISION_FP32);
    check_invariance("random:resnet18:3", ENG_PRECISION_FP32);
}

static void test_batch_invariance_int8(void) {
    SKIP_UNLESS(ENG_ISA_AVX512_VNNI);
    check_invariance("random:resnet50:3", ENG_PRECISION_INT8);
    check_invariance("random:resnet18:3", ENG_PRECISION_INT8);
}

/* int8 on a CPU without VNNI is refused with a message, never run slowly. */
static void test_precision_api(void) {
    char err[256] = "";
    enum eng_precision p;
    CHECK(eng_precision_parse("int8", &p, err, sizeof err) == ENG_OK && p == ENG_PRECISION_INT8);
    CHECK(eng_precision_parse("fp16", &p, err, sizeof err) == ENG_ERR_ARG && strstr(err, "fp32"));
    enum eng_status st = eng_precision_supported(ENG_PRECISION_INT8, err, sizeof err);
    CHECK(st == (eng_vnni_available() ? ENG_OK : ENG_ERR_UNSUPPORTED));
    struct eng_model *m = NULL;
    st = eng_model_load_ex("random:resnet18", ENG_PRECISION_INT8, &m, err, sizeof err);
    if (st == ENG_OK) {
        CHECK(!strcmp(eng_model_get_info(m)->precision, "int8"));
        eng_model_free(m);
    } else {
        CHECK(st == ENG_ERR_UNSUPPORTED && strstr(err, "VNNI"), "%s", err);
    }
    CHECK(eng_model_load("random:resnet18", &m, err, sizeof err) == ENG_OK);
    CHECK(!strcmp(eng_model_get_info(m)->precision, "fp32"));
    eng_model_free(m);
}

/* ------------------------------------------------------------------------ */
/* End to end: agreement with fp32, against PyTorch onednn int8's           */
/* ------------------------------------------------------------------------ */

static json_t *load_json(const char *dir, const char *name) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return json_load_file(path, 0, NULL);
}

static float *load_f32(const char *dir, const char *name, size_t count) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    float *buf = f ? malloc(sizeof(float) * count) : NULL;
    bool ok = buf && fread(buf, sizeof(float), count, f) == count;
    if (f) fclose(f);
    if (!ok) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* On the shared photos, the engine's int8 agrees with its fp32 (top-1 and
 * mean logit cosine) at least as well as PyTorch's onednn int8 agrees with
 * PyTorch's fp32, on the same random ResNet-50 weights (the tensors and the
 * PyTorch figures come from tests/gen_reference.py and
 * tests/gen_int8_reference.py). */
static void test_agreement_vs_pytorch(void) {
    SKIP_UNLESS(ENG_ISA_AVX512_VNNI);
    const char *env = getenv("IMGCLASS_REF");
    const char *dir = env && *env ? env : "build/ref";
    json_t *man = load_json(dir, "manifest.json"), *tq = load_json(dir, "int8_manifest.json");
    if (!man || !tq) {
        json_decref(man);
        json_decref(tq);
        SKIP("no %s/manifest.json or int8_manifest.json: `make build/ref/int8_stamp` makes them",
             dir);
    }
    const char *why = json_string_value(json_object_get(tq, "skipped"));
    if (why) {
        char reason[512];
        snprintf(reason, sizeof reason, "%s", why);
        json_decref(man);
        json_decref(tq);
        SKIP("no PyTorch int8 reference: %s", reason);
    }
    json_t *shared = json_object_get(tq, "shared");
    json_t *images = json_object_get(man, "images");
    const int n = (int)json_array_size(images);
    int idx[256], ns = 0;
    for (int i = 0; i < n && ns < 256; i++) {
        const char *kind = json_string_value(json_object_get(json_array_get(images, i), "kind"));
        if (kind && !strcmp(kind, "shared")) idx[ns++] = i;
    }
    if (!ns || !json_object_size(shared)) {
        json_decref(man);
        json_decref(tq);
        SKIP("the shared photos (../shared/images) were absent when the references were made");
    }
    const double torch_top1 = json_number_value(json_object_get(shared, "top1"));
    const double torch_cos = json_number_value(json_object_get(shared, "mean_cosine"));
    const double torch_top5 = json_number_value(json_object_get(shared, "top5"));
    const size_t img = (size_t)3 * 224 * 224;
    float *x = load_f32(dir, json_string_value(json_object_get(man, "logits_preproc")), img * n);
    char path[1200];
    snprintf(path, sizeof path, "%s/resnet50.safetensors", dir);
    json_decref(man);
    json_decref(tq);
    CHECK(x, "cannot read the preprocessed images in %s", dir);
    float *lg[2] = {malloc(sizeof(float) * 1000 * ns), malloc(sizeof(float) * 1000 * ns)};
    float *batch = malloc(sizeof(float) * img * 8);
    bool ok = lg[0] && lg[1] && batch;
    eng_set_threads(2);
    for (int p = 0; p < 2 && ok; p++) {
        struct eng_model *m = NULL;
        struct eng_ctx *c = NULL;
        ok = eng_model_load_ex(path, p ? ENG_PRECISION_INT8 : ENG_PRECISION_FP32, &m, NULL, 0) == ENG_OK &&
             eng_ctx_new(m, 8, 224, &c, NULL, 0) == ENG_OK;
        for (int i0 = 0; i0 < ns && ok; i0 += 8) {
            int k = ns - i0 < 8 ? ns - i0 : 8;
            for (int i = 0; i < k; i++) memcpy(batch + i * img, x + idx[i0 + i] * img, sizeof(float) * img);
            ok = eng_ctx_forward(c, batch, k, lg[p] + (size_t)i0 * 1000) == ENG_OK;
        }
        eng_ctx_free(c);
        eng_model_free(m);
    }
    eng_shutdown();
    int top1 = 0, top5 = 0;
    double cos = 0;
    for (int i = 0; ok && i < ns; i++) {
        const float *a = lg[0] + (size_t)i * 1000, *b = lg[1] + (size_t)i * 1000;
        struct eng_pred pa[1], pb[5];
        eng_topk(a, 1000, 1, pa);
        eng_topk(b, 1000, 5, pb);
        top1 += pa[0].index == pb[0].index;
        for (int j = 0; j < 5; j++) top5 += pa[0].index == pb[j].index;
        double dot = 0, na = 0, nb = 0;
        for (int j = 0; j < 1000; j++) {
            dot += (double)a[j] * b[j];
            na += (double)a[j] * a[j];
            nb += (double)b[j] * b[j];
        }
        cos += dot / sqrt(na * nb);
    }
    free(x);
    free(lg[0]);
    free(lg[1]);
    free(batch);
    CHECK(ok, "loading %s or a forward pass failed", path);
    printf("  int8.agreement_vs_pytorch: %d shared photos: engine int8 vs fp32 top-1 %.1f%%, "
           "top-5 %.1f%%, mean cosine %.5f; PyTorch onednn int8 vs fp32 top-1 %.1f%%, top-5 "
           "%.1f%%, mean cosine %.5f\n",
           ns, 100.0 * top1 / ns, 100.0 * top5 / ns, cos / ns, 100 * torch_top1, 100 * torch_top5,
           torch_cos);
    CHECK((double)top1 / ns >= torch_top1 - 1e-9 && cos / ns >= torch_cos,
          "engine int8 agrees less with fp32 than PyTorch's int8 does");
}

/* The stem's input quantizer gives back the 8-bit pixels of tensors made
 * as torchvision makes them ((u8 / 255 - mean) / std in fp32), with the
 * border at the mean, saturating values outside the pixel range. */
static void test_input_pixels(void) {
    SKIP_UNLESS(ENG_ISA_AVX512_VNNI);
    enum { N = 2, S = 19, PAD = 3, SIDE = S + 2 * PAD };
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    static float x[N * 3 * S * S];
    static uint8_t px[N * 3 * S * S], q[N * SIDE * SIDE * 3];
    for (int i = 0; i < N * 3 * S * S; i++) {
        const int c = i / (S * S) % 3;
        px[i] = (uint8_t)(next_u64() >> 56);
        x[i] = ((float)px[i] / 255.0f - mean[c]) / std[c];
    }
    x[5] = 40.0f; /* far above white, and below black */
    x[S * S + 7] = -40.0f;
    eng_quantize_input(q, x, N, S, PAD, mean, std, 3); /* three row ranges, in the caller */
    int bad = 0;
    for (int img = 0; img < N; img++)
        for (int y = 0; y < SIDE; y++)
            for (int xx = 0; xx < SIDE; xx++)
                for (int c = 0; c < 3; c++) {
                    const int iy = y - PAD, ix = xx - PAD;
                    const bool in = iy >= 0 && iy < S && ix >= 0 && ix < S;
                    const size_t src = (((size_t)img * 3 + c) * S + (in ? iy : 0)) * S + (in ? ix : 0);
                    int want = !in ? (int)lrintf(255.0f * mean[c])
                               : img == 0 && src == 5 ? 255
                               : img == 0 && src == (size_t)S * S + 7 ? 0 : px[src];
                    bad += q[(((size_t)img * SIDE + y) * SIDE + xx) * 3 + c] != want;
                }
    CHECK(bad == 0, "%d of %d bytes differ from the pixels", bad, N * SIDE * SIDE * 3);
}

int main(void) {
    t_suite = "int8";
    RUN(test_kernel_matches_reference);
    RUN(test_amx_matches_reference);
    RUN(test_amx_model_same_bits);
    RUN(test_layer_driver);
    RUN(test_fused_requant);
    RUN(test_reference_is_a_convolution);
    RUN(test_quantizer);
    RUN(test_input_pixels);
    RUN(test_maxpool_u8);
    RUN(test_precision_api);
    RUN(test_batch_invariance_fp32);
    RUN(test_batch_invariance_int8);
    RUN(test_agreement_vs_pytorch);
    return t_done();
}
