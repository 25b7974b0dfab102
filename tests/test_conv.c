/* test_conv.c: the AVX-512 convolution kernels (engine/conv_avx512.c) against
 * a naive double-precision convolution, on shapes that hit every edge: left
 * and right padding, a reduction chunk ending inside the padding, stride 2,
 * 1x1, a 7x7 stem on 3 channels, partial row tiles, Winograd on maps whose
 * sides are not multiples of its 4x4 tile.
 * Each call's scratch is followed by a canary that must survive. */
#include "engine_impl.h"
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define CANARY 4096 /* floats of guard after the scratch */

static uint64_t rng = 88172645463325252ull;

static float frand(void) { /* xorshift64, uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0) * 2 - 1);
}

struct shape {
    const char *name;
    int n, h, w, cin, cout, k, stride, residual, relu;
};

/* out[n][ho][wo][cout] in double from in (NHWC), w ([cout][k][k][cin]). */
static void naive(double *out, const float *in, const float *w, const float *bias,
                  const float *res, const struct shape *s, int ho, int wo) {
    const int p = s->k / 2;
    for (int img = 0; img < s->n; img++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++)
                for (int co = 0; co < s->cout; co++) {
                    double acc = bias[co];
                    for (int ky = 0; ky < s->k; ky++)
                        for (int kx = 0; kx < s->k; kx++) {
                            int iy = oy * s->stride - p + ky, ix = ox * s->stride - p + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            const float *x = in + (((size_t)img * s->h + iy) * s->w + ix) * s->cin;
                            const float *g = w + (((size_t)co * s->k + ky) * s->k + kx) * s->cin;
                            for (int c = 0; c < s->cin; c++) acc += (double)x[c] * g[c];
                        }
                    size_t at = (((size_t)img * ho + oy) * wo + ox) * s->cout + co;
                    if (res) acc += res[at];
                    if (s->relu && acc < 0) acc = 0;
                    out[at] = acc;
                }
}

/* Runs one shape through the direct kernel or Winograd, split over `tasks`
 * ranges of output rows (Winograd: tiles) or, with by_panels, of weight
 * panels, as conv.c splits layers; returns the worst error relative to the
 * output scale, or -1 when a canary was overwritten. */
static double run_shape(const struct shape *s, int winograd, int tasks, bool by_panels, char *why,
                        size_t whylen) {
    const int p = s->k / 2, kdim = s->k * s->k * s->cin;
    const int ho = eng_out_dim(s->h, s->k, s->stride, p), wo = eng_out_dim(s->w, s->k, s->stride, p);
    const size_t nin = (size_t)s->n * s->h * s->w * s->cin, nout = (size_t)s->n * ho * wo * s->cout;
    const int wt = ENG_WINO_TILE, wa = wt + 2;
    const size_t wfl = (size_t)s->cout * (winograd ? (size_t)wa * wa * s->cin : (size_t)kdim);
    const size_t scr = winograd ? eng_winograd_scratch_floats(s->cin, s->cout)
                                : eng_avx512_scratch_floats();
    float *in = malloc(nin * sizeof(float)), *w = malloc((size_t)s->cout * kdim * sizeof(float));
    float *bias = malloc(s->cout * sizeof(float)), *res = malloc(nout * sizeof(float));
    float *out = malloc(nout * sizeof(float)), *packed = aligned_alloc(64, (wfl + 15) / 16 * 64);
    float *scratch = aligned_alloc(64, ((size_t)tasks * (scr + CANARY) + 15) / 16 * 64);
    double *want = malloc(nout * sizeof(double));
    double worst = -1;
    if (!in || !w || !bias || !res || !out || !packed || !scratch || !want) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nin; i++) in[i] = frand();
    for (size_t i = 0; i < (size_t)s->cout * kdim; i++) w[i] = frand() / sqrtf((float)kdim);
    for (int i = 0; i < s->cout; i++) bias[i] = 0.1f * frand();
    for (size_t i = 0; i < nout; i++) res[i] = frand();
    for (size_t i = 0; i < (size_t)tasks * (scr + CANARY); i++) scratch[i] = NAN;
    naive(want, in, w, bias, s->residual ? res : NULL, s, ho, wo);
    struct eng_conv cv = {.cin = s->cin, .cout = s->cout, .k = s->k, .stride = s->stride,
                          .pad = p, .w = packed, .bias = bias, .packed = true, .wino = winograd};
    if (winograd)
        eng_pack_winograd(packed, w, s->cout, s->cin);
    else
        eng_pack_weights(packed, w, s->cout, kdim);
    /* tasks take disjoint ranges with scratch slices back to back, each
     * followed by its canary */
    const int total = winograd ? s->n * ((ho + wt - 1) / wt) * ((wo + wt - 1) / wt) : s->n * ho * wo;
    const int panels = s->cout / ENG_PACK_NR;
    for (int t = 0; t < tasks; t++) {
        int a = 0, b = total, p0 = 0, p1 = panels;
        if (by_panels) {
            p0 = (int)((int64_t)panels * t / tasks), p1 = (int)((int64_t)panels * (t + 1) / tasks);
        } else {
            a = (int)((int64_t)total * t / tasks), b = (int)((int64_t)total * (t + 1) / tasks);
        }
        float *slice = scratch + (size_t)t * (scr + CANARY);
        if (winograd)
            eng_conv_winograd(out, in, &cv, s->h, s->w, s->residual ? res : NULL, s->relu, a, b, p0,
                              p1, slice);
        else
            eng_conv_avx512(out, in, &cv, s->h, s->w, s->residual ? res : NULL, s->relu, a, b, p0,
                            p1, slice);
    }
    for (int t = 0; t < tasks; t++)
        for (size_t i = 0; i < CANARY; i++)
            if (!isnan(scratch[(size_t)t * (scr + CANARY) + scr + i])) {
                snprintf(why, whylen, "%s: task %d wrote %zu floats past its scratch", s->name, t,
                         i + 1);
                goto done;
            }
    double scale = 0, err = 0;
    for (size_t i = 0; i < nout; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < nout; i++) err = fmax(err, fabs(out[i] - want[i]));
    worst = err / (1 + scale);
done:
    free(in);
    free(w);
    free(bias);
    free(res);
    free(out);
    free(packed);
    free(scratch);
    free(want);
    return worst;
}

static const struct shape shapes[] = {
    /* 336 output rows per block: row 335 starts an image row (ox 0) whose
     * first reduction chunk (128 of 256 channels) lies in the left padding */
    {"3x3/2 cin256 14x10x10", 14, 10, 10, 256, 32, 3, 2, 0, 1},
    {"3x3/2 cin512 3x7x7", 3, 7, 7, 512, 64, 3, 2, 1, 1},
    {"7x7/2 stem 2x35x33", 2, 35, 33, 3, 64, 7, 2, 0, 1},
    {"1x1 cin64 3x9x9 + shortcut", 3, 9, 9, 64, 96, 1, 1, 1, 1},
    {"1x1/2 cin192 2x9x9", 2, 9, 9, 192, 32, 1, 2, 0, 0},
    {"3x3 cin144 3x7x5 + shortcut", 3, 7, 5, 144, 64, 3, 1, 1, 1},
    {"3x3 cin64 1x1x1", 1, 1, 1, 64, 32, 3, 1, 0, 0},
    {"3x3 cin64 2x14x14", 2, 14, 14, 64, 64, 3, 1, 0, 1},
    {"3x3 cin256 3x6x11 + shortcut", 3, 6, 11, 256, 32, 3, 1, 1, 0},
    {"3x3 cin16 1x9x13", 1, 9, 13, 16, 32, 3, 1, 0, 1},
};

static void check_shapes(int winograd) {
    if (!eng_avx512_available()) SKIP("this CPU has no AVX-512F");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const struct shape *s = &shapes[i];
        if (winograd && (s->k != 3 || s->stride != 1)) continue;
        /* 1 task; 3 over rows or tiles; 3 over panels (some get none) */
        static const struct {
            int tasks;
            bool by_panels;
        } splits[] = {{1, false}, {3, false}, {3, true}};
        for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
            const int tasks = splits[k].tasks;
            char why[256] = "";
            double worst = run_shape(s, winograd, tasks, splits[k].by_panels, why, sizeof why);
            printf("  %s %s, %d task(s)%s: max |err| / (1 + max|out|) %.3g\n",
                   winograd ? "winograd" : "direct", s->name, tasks,
                   splits[k].by_panels ? " by panels" : "", worst);
            CHECK(worst >= 0, "%s", why);
            /* direct: 3e-8..1e-6; Winograd F(4x4): 6e-8..6e-6 (its
             * transforms scale by up to 8 and 1/24) */
            CHECK(worst < 2e-5, "%s: %d task(s): error %g", s->name, tasks, worst);
        }
    }
}

static void test_direct_matches_naive(void) {
    check_shapes(0);
}

static void test_winograd_matches_naive(void) {
    check_shapes(1);
}

int main(void) {
    t_suite = "conv";
    RUN(test_direct_matches_naive);
    RUN(test_winograd_matches_naive);
    return t_done();
}
