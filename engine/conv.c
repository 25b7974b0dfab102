/* conv.c: convolutions on NHWC activations, split into tasks for the compute
 * pool: packed ones go to the AVX-512 kernels (conv_avx512.c), the rest to
 * the portable path here, (im2col +) OpenBLAS sgemm with a fused
 * bias/residual/ReLU epilogue; plus max pool, average pool and the
 * classifier. Nothing allocates. */
#include "engine_impl.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* im2col is done in row chunks so its scratch stays bounded (and warm in
 * cache for the epilogue) whatever the batch: ~8 MB of floats per chunk. */
#define COL_BUDGET_FLOATS ((size_t)1 << 21)
/* Rows per sgemm call on the direct (1x1, stride 1) path: the output chunk
 * stays in L2 for the epilogue that follows. */
#define DIRECT_CHUNK_ROWS 1024
/* Below this many output rows per task a convolution is split by output
 * channels instead: sgemm is inefficient on a handful of rows. */
#define MIN_ROWS_PER_TASK 64

static bool conv_is_direct(const struct eng_conv *cv) {
    return cv->k == 1 && cv->stride == 1 && cv->pad == 0;
}

static int col_chunk_rows(const struct eng_conv *cv, int m) {
    size_t kdim = (size_t)cv->k * cv->k * cv->cin;
    size_t rows = COL_BUDGET_FLOATS / kdim;
    if (rows < 64) rows = 64;
    return rows < (size_t)m ? (int)rows : m;
}

size_t eng_conv_col_floats(const struct eng_conv *cv, int n, int h, int w, int ntasks) {
    if (cv->wino) return (size_t)ntasks * eng_winograd_scratch_floats(cv->cin, cv->cout);
    if (cv->packed) return (size_t)ntasks * eng_avx512_scratch_floats();
    if (conv_is_direct(cv)) return 0;
    int m = n * eng_out_dim(h, cv->k, cv->stride, cv->pad) * eng_out_dim(w, cv->k, cv->stride, cv->pad);
    return (size_t)ntasks * col_chunk_rows(cv, m) * cv->k * cv->k * cv->cin;
}

/* col[r][ky][kx][cin] for output rows m0 .. m0+rows; taps outside the image
 * are zero (the convolution's padding). */
static void im2col(float *col, const float *in, const struct eng_conv *cv, int h, int w, int ho,
                   int wo, int m0, int rows) {
    const int k = cv->k, s = cv->stride, p = cv->pad, cin = cv->cin;
    const size_t row_len = (size_t)k * k * cin;
    for (int r = 0; r < rows; r++) {
        int m = m0 + r;
        int img = m / (ho * wo), rem = m % (ho * wo);
        int oy = rem / wo, ox = rem % wo;
        float *dst = col + (size_t)r * row_len;
        int ix0 = ox * s - p;
        /* taps kx in [kx0, kx1) fall inside the row: one contiguous copy */
        int kx0 = ix0 < 0 ? -ix0 : 0;
        int kx1 = ix0 + k > w ? w - ix0 : k;
        for (int ky = 0; ky < k; ky++, dst += (size_t)k * cin) {
            int iy = oy * s - p + ky;
            if (iy < 0 || iy >= h || kx1 <= kx0) {
                memset(dst, 0, sizeof(float) * (size_t)k * cin);
                continue;
            }
            if (kx0 > 0) memset(dst, 0, sizeof(float) * (size_t)kx0 * cin);
            const float *src = in + (((size_t)img * h + iy) * w + ix0 + kx0) * cin;
            memcpy(dst + (size_t)kx0 * cin, src, sizeof(float) * (size_t)(kx1 - kx0) * cin);
            if (kx1 < k) memset(dst + (size_t)kx1 * cin, 0, sizeof(float) * (size_t)(k - kx1) * cin);
        }
    }
}

/* out = act(out + bias (+ res)) over rows x c, rows ld floats apart (out
 * and res alike): one branch-free pass over the output while it is still
 * in cache (no ReLU is a clamp at -inf). */
static void epilogue(float *restrict out, const float *restrict res, const float *restrict bias,
                     int rows, int c, int ld, bool relu) {
    const float lo = relu ? 0.0f : -INFINITY;
    for (int r = 0; r < rows; r++) {
        float *restrict o = out + (size_t)r * ld;
        if (res) {
            const float *restrict q = res + (size_t)r * ld;
            for (int j = 0; j < c; j++) {
                float v = o[j] + bias[j] + q[j];
                o[j] = v > lo ? v : lo;
            }
        } else {
            for (int j = 0; j < c; j++) {
                float v = o[j] + bias[j];
                o[j] = v > lo ? v : lo;
            }
        }
    }
}

/* One convolution, split into tasks for the pool: by output rows when there
 * are enough of them, else (deep layers of small batches) by output channels
 * over an im2col matrix built once. */
struct conv_job {
    float *out;
    const float *in, *res;
    const struct eng_conv *cv;
    float *col;
    size_t col_slice; /* floats of col per task (row split) */
    int h, w, ho, wo, m, kdim;
    int chunk, nchunks; /* row split: rows per chunk; task t takes t, t+T, ... */
    int ntasks;
    int cols_per_task; /* channel split: output channels per task; 0 = row split */
    bool relu;
};

static void conv_task(void *arg, int t) {
    const struct conv_job *j = arg;
    const struct eng_conv *cv = j->cv;
    const int cout = cv->cout, kdim = j->kdim;
    if (j->cols_per_task) {
        int n0 = t * j->cols_per_task;
        int nc = cout - n0 < j->cols_per_task ? cout - n0 : j->cols_per_task;
        if (nc <= 0) return;
        const float *a = j->col ? j->col : j->in;
        /* out[m][n0 .. n0+nc) = a[m][kdim] x w[n0 .. n0+nc)[kdim]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, nc, kdim, 1.0f, a, kdim,
                    cv->w + (size_t)n0 * kdim, kdim, 0.0f, j->out + n0, cout);
        epilogue(j->out + n0, j->res ? j->res + n0 : NULL, cv->bias + n0, j->m, nc, cout, j->relu);
        return;
    }
    for (int c = t; c < j->nchunks; c += j->ntasks) {
        int m0 = c * j->chunk;
        int rows = j->m - m0 < j->chunk ? j->m - m0 : j->chunk;
        const float *a;
        if (j->col) {
            float *col = j->col + (size_t)t * j->col_slice;
            im2col(col, j->in, cv, j->h, j->w, j->ho, j->wo, m0, rows);
            a = col;
        } else {
            a = j->in + (size_t)m0 * kdim;
        }
        float *o = j->out + (size_t)m0 * cout;
        /* o[rows][cout] = a[rows][kdim] x w[cout][kdim]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cout, kdim, 1.0f, a, kdim,
                    cv->w, kdim, 0.0f, o, cout);
        epilogue(o, j->res ? j->res + (size_t)m0 * cout : NULL, cv->bias, rows, cout, cout,
                 j->relu);
    }
}

/* A packed conv on the AVX-512 kernels: each task takes a share of the
 * output rows (Winograd: tiles) or, when the layer has more channels than
 * rows (deep layers, small batches), a share of the weight panels, so that
 * no task streams more weights than it must. */
struct packed_job {
    float *out;
    const float *in, *res;
    const struct eng_conv *cv;
    float *scratch;
    int h, w, m, ntasks;
    bool relu, by_rows;
};

/* Start of task t's share when n items are split evenly over `tasks`. */
static int share_start(int n, int t, int tasks) {
    return (int)((int64_t)n * t / tasks);
}

/* Task t's output rows (Winograd: tiles) [*m0, *m1) and panels [*p0, *p1). */
static void packed_share(const struct packed_job *j, int t, int *m0, int *m1, int *p0, int *p1) {
    const int panels = j->cv->cout / ENG_PACK_NR;
    *m0 = 0, *m1 = j->m, *p0 = 0, *p1 = panels;
    if (j->by_rows) {
        *m0 = share_start(j->m, t, j->ntasks);
        *m1 = share_start(j->m, t + 1, j->ntasks);
    } else {
        *p0 = share_start(panels, t, j->ntasks);
        *p1 = share_start(panels, t + 1, j->ntasks);
    }
}

static void winograd_task(void *arg, int t) {
    const struct packed_job *j = arg;
    const struct eng_conv *cv = j->cv;
    float *scratch = j->scratch + (size_t)t * eng_winograd_scratch_floats(cv->cin, cv->cout);
    int m0, m1, p0, p1;
    packed_share(j, t, &m0, &m1, &p0, &p1);
    eng_conv_winograd(j->out, j->in, cv, j->h, j->w, j->res, j->relu, m0, m1, p0, p1, scratch);
}

static void packed_task(void *arg, int t) {
    const struct packed_job *j = arg;
    float *abuf = j->scratch + (size_t)t * eng_avx512_scratch_floats();
    int m0, m1, p0, p1;
    packed_share(j, t, &m0, &m1, &p0, &p1);
    eng_conv_avx512(j->out, j->in, j->cv, j->h, j->w, j->res, j->relu, m0, m1, p0, p1, abuf);
}

void eng_conv_forward(float *out, const float *in, const struct eng_conv *cv, int n, int h, int w,
                      const float *res, bool relu, float *col, int ntasks) {
    if (cv->packed) {
        struct packed_job pj = {.out = out, .in = in, .res = res, .cv = cv, .scratch = col,
                                .h = h, .w = w, .relu = relu, .ntasks = ntasks > 0 ? ntasks : 1};
        if (cv->wino) {
            const int t = ENG_WINO_TILE;
            pj.m = n * ((h + t - 1) / t) * ((w + t - 1) / t); /* output tiles */
        } else {
            pj.m = n * eng_out_dim(h, cv->k, cv->stride, cv->pad) *
                   eng_out_dim(w, cv->k, cv->stride, cv->pad);
        }
        pj.by_rows = pj.m >= cv->cout || cv->cout / ENG_PACK_NR < pj.ntasks;
        if (pj.by_rows && pj.ntasks > pj.m) pj.ntasks = pj.m;
        eng_pool_run(cv->wino ? winograd_task : packed_task, &pj, pj.ntasks);
        return;
    }
    struct conv_job j = {.out = out, .in = in, .res = res, .cv = cv, .h = h, .w = w,
                         .relu = relu, .ntasks = ntasks > 0 ? ntasks : 1};
    j.ho = eng_out_dim(h, cv->k, cv->stride, cv->pad);
    j.wo = eng_out_dim(w, cv->k, cv->stride, cv->pad);
    j.m = n * j.ho * j.wo;
    j.kdim = cv->k * cv->k * cv->cin;
    const bool direct = conv_is_direct(cv);
    j.col = direct ? NULL : col;
    if (j.m < MIN_ROWS_PER_TASK * j.ntasks && j.ntasks > 1) {
        /* channel split; the im2col matrix (m is small) fits the scratch */
        if (j.col) im2col(j.col, in, cv, h, w, j.ho, j.wo, 0, j.m);
        int per = (cv->cout + j.ntasks - 1) / j.ntasks;
        j.cols_per_task = (per + 15) & ~15;
        eng_pool_run(conv_task, &j, j.ntasks);
        return;
    }
    int cap = direct ? DIRECT_CHUNK_ROWS : col_chunk_rows(cv, j.m);
    int even = (j.m + j.ntasks - 1) / j.ntasks; /* so every task gets rows */
    j.chunk = even < cap ? even : cap;
    j.nchunks = (j.m + j.chunk - 1) / j.chunk;
    j.col_slice = direct ? 0 : (size_t)col_chunk_rows(cv, j.m) * j.kdim;
    eng_pool_run(conv_task, &j, j.ntasks < j.nchunks ? j.ntasks : j.nchunks);
}

/* ------------------------------------------------------------------------ */
/* Pooling and the classifier                                               */
/* ------------------------------------------------------------------------ */

void eng_maxpool3x3s2(float *out, const float *in, int n, int h, int w, int c) {
    const int ho = eng_out_dim(h, 3, 2, 1), wo = eng_out_dim(w, 3, 2, 1);
    for (int img = 0; img < n; img++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float *o = out + (((size_t)img * ho + oy) * wo + ox) * c;
                for (int j = 0; j < c; j++) o[j] = -FLT_MAX;
                /* padding taps are skipped: torch pads max pool with -inf */
                for (int iy = oy * 2 - 1; iy <= oy * 2 + 1; iy++) {
                    if (iy < 0 || iy >= h) continue;
                    for (int ix = ox * 2 - 1; ix <= ox * 2 + 1; ix++) {
                        if (ix < 0 || ix >= w) continue;
                        const float *q = in + (((size_t)img * h + iy) * w + ix) * c;
                        for (int j = 0; j < c; j++) o[j] = q[j] > o[j] ? q[j] : o[j];
                    }
                }
            }
}

void eng_avgpool(float *out, const float *in, int n, int hw, int c) {
    for (int img = 0; img < n; img++) {
        float *o = out + (size_t)img * c;
        memset(o, 0, sizeof(float) * (size_t)c);
        for (int i = 0; i < hw; i++) {
            const float *q = in + ((size_t)img * hw + i) * c;
            for (int j = 0; j < c; j++) o[j] += q[j];
        }
        for (int j = 0; j < c; j++) o[j] /= (float)hw;
    }
}

void eng_linear(float *out, const float *in, const float *w, const float *b, int n, int cin,
                int cout) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, cout, cin, 1.0f, in, cin, w, cin,
                0.0f, out, cout);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < cout; j++) out[(size_t)i * cout + j] += b[j];
}
