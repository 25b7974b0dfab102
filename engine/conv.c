/* conv.c: convolutions on NHWC activations, split into tasks for the compute
 * pool: packed ones go to the AVX-512 kernels (conv_avx512.c), the rest to
 * the portable path here, (im2col +) OpenBLAS sgemm with a fused
 * bias/residual/ReLU epilogue; plus max pool, average pool and the
 * classifier. Nothing allocates. */
#include "engine_impl.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* im2col is done in row chunks so its scratch stays bounded (and warm in
 * cache for the epilogue) whatever the batch: ~8 MB of floats per chunk. */
#define COL_BUDGET_FLOATS ((size_t)1 << 21)
/* Rows per sgemm call on the direct (1x1, stride 1) path: the output chunk
 * stays in L2 for the epilogue that follows. */
#define DIRECT_CHUNK_ROWS 1024
/* Below this many output rows per image a convolution is also split by
 * output channels, in blocks of CHANNEL_BLOCK, so that the pool's threads
 * share a layer of a single image. */
#define MIN_ROWS_PER_TASK 64
#define CHANNEL_BLOCK 64

static bool conv_is_direct(const struct eng_conv *cv) {
    return cv->k == 1 && cv->stride == 1 && cv->pad == 0;
}

static int col_chunk_rows(const struct eng_conv *cv, int m) {
    size_t kdim = (size_t)cv->k * cv->k * cv->cin;
    size_t rows = COL_BUDGET_FLOATS / kdim;
    if (rows < 64) rows = 64;
    return rows < (size_t)m ? (int)rows : m;
}

/* Scratch bytes of one int8 task, a multiple of 64. */
static size_t i8_task_bytes(const struct eng_conv *cv) {
    size_t b = cv->amx ? eng_amx_scratch_bytes(cv) : eng_i8_scratch_bytes();
    return (b + 63) / 64 * 64;
}

size_t eng_conv_col_floats(const struct eng_conv *cv, int n, int h, int w, int ntasks) {
    if (cv->int8) return (size_t)ntasks * (i8_task_bytes(cv) / 4);
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

void eng_gather_row(void *restrict dst_, const struct eng_rowsrc *r, const struct eng_conv *cv,
                    int h, int w, int k0, int k1, size_t esize) {
    unsigned char *restrict dst = dst_;
    const int cin = cv->cin, strip = cv->k * cin;
    /* the part of a ky strip inside the image, in elements */
    const int v0 = (r->ix0 < 0 ? -r->ix0 : 0) * cin;
    const int v1 = (r->ix0 + cv->k > w ? w - r->ix0 : cv->k) * cin;
    int ky = k0 / strip, off = k0 % strip;
    while (k0 < k1) {
        int len = k1 - k0 < strip - off ? k1 - k0 : strip - off;
        int iy = r->iy0 + ky;
        if (iy < 0 || iy >= h || v1 <= v0) {
            memset(dst, 0, esize * (size_t)len);
        } else {
            const unsigned char *row = r->img + esize * ((size_t)iy * w) * cin; /* pixel (iy, 0) */
            /* [off, off + len) = zeros [off, a) + image [a, b) + zeros [b, off + len);
             * a chunk may end inside the left padding, so a is clamped too */
            const int end = off + len;
            int a = off > v0 ? off : v0, b = end < v1 ? end : v1;
            if (a > end) a = end;
            if (b < a) b = a;
            if (a > off) memset(dst, 0, esize * (size_t)(a - off));
            if (b > a)
                memcpy(dst + esize * (size_t)(a - off),
                       row + (ptrdiff_t)esize * ((ptrdiff_t)r->ix0 * cin + a),
                       esize * (size_t)(b - a));
            if (end > b) memset(dst + esize * (size_t)(b - off), 0, esize * (size_t)(end - b));
        }
        dst += esize * (size_t)len;
        k0 += len;
        ky++;
        off = 0;
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

/* One convolution on OpenBLAS, cut into units of (image, chunk of that
 * image's output rows, block of output channels) that the pool's tasks take
 * in turn. A unit's sgemm shape depends only on the layer and the image
 * size, never on the batch or the thread count: OpenBLAS picks its kernels,
 * and so its order of summation, by shape, and an image's logits must not
 * depend on its batch or on the pool (int8.batch_invariance_fp32). */
struct conv_job {
    float *out;
    const float *in, *res;
    const struct eng_conv *cv;
    float *col;       /* NULL for direct convs */
    size_t col_slice; /* floats of col per task */
    int h, w, ho, wo, kdim;
    int chunk, chunks; /* output rows per chunk, chunks per image */
    int nb, blocks;    /* output channels per block, blocks per chunk */
    int units, ntasks;
    bool relu;
};

static void conv_task(void *arg, int t) {
    const struct conv_job *j = arg;
    const struct eng_conv *cv = j->cv;
    const int cout = cv->cout, kdim = j->kdim, hw = j->ho * j->wo;
    for (int u = t; u < j->units; u += j->ntasks) {
        const int blk = u % j->blocks, c = u / j->blocks % j->chunks, img = u / j->blocks / j->chunks;
        const int r0 = c * j->chunk, rows = hw - r0 < j->chunk ? hw - r0 : j->chunk;
        const int m0 = img * hw + r0, n0 = blk * j->nb, nc = cout - n0 < j->nb ? cout - n0 : j->nb;
        const float *a;
        if (j->col) {
            float *col = j->col + (size_t)t * j->col_slice;
            im2col(col, j->in, cv, j->h, j->w, j->ho, j->wo, m0, rows);
            a = col;
        } else {
            a = j->in + (size_t)m0 * kdim;
        }
        float *o = j->out + (size_t)m0 * cout + n0;
        /* o[rows][n0 .. n0+nc) = a[rows][kdim] x w[n0 .. n0+nc)[kdim]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nc, kdim, 1.0f, a, kdim,
                    cv->w + (size_t)n0 * kdim, kdim, 0.0f, o, cout);
        epilogue(o, j->res ? j->res + (size_t)m0 * cout + n0 : NULL, cv->bias + n0, rows, nc, cout,
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

/* Task t's output rows (Winograd: tiles) [*m0, *m1) of m and panels
 * [*p0, *p1) of a conv with cout channels, split over ntasks. */
static void split_share(int m, int cout, bool by_rows, int ntasks, int t, int *m0, int *m1, int *p0,
                        int *p1) {
    const int panels = cout / ENG_PACK_NR;
    *m0 = 0, *m1 = m, *p0 = 0, *p1 = panels;
    if (by_rows) {
        *m0 = share_start(m, t, ntasks);
        *m1 = share_start(m, t + 1, ntasks);
    } else {
        *p0 = share_start(panels, t, ntasks);
        *p1 = share_start(panels, t + 1, ntasks);
    }
}

static void packed_share(const struct packed_job *j, int t, int *m0, int *m1, int *p0, int *p1) {
    split_share(j->m, j->cv->cout, j->by_rows, j->ntasks, t, m0, m1, p0, p1);
}

/* Splits a layer of m output rows (tiles) as the AVX-512 paths do: by rows
 * when there are enough, else by weight panels. Returns the task count. */
static int split_tasks(int m, int cout, int ntasks, bool *by_rows) {
    ntasks = ntasks > 0 ? ntasks : 1;
    *by_rows = m >= cout || cout / ENG_PACK_NR < ntasks;
    if (*by_rows && ntasks > m) ntasks = m;
    return ntasks;
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
        pj.ntasks = split_tasks(pj.m, cv->cout, pj.ntasks, &pj.by_rows);
        eng_pool_run(cv->wino ? winograd_task : packed_task, &pj, pj.ntasks);
        return;
    }
    struct conv_job j = {.out = out, .in = in, .res = res, .cv = cv, .h = h, .w = w,
                         .relu = relu, .ntasks = ntasks > 0 ? ntasks : 1};
    j.ho = eng_out_dim(h, cv->k, cv->stride, cv->pad);
    j.wo = eng_out_dim(w, cv->k, cv->stride, cv->pad);
    const int hw = j.ho * j.wo;
    j.kdim = cv->k * cv->k * cv->cin;
    const bool direct = conv_is_direct(cv);
    j.col = direct ? NULL : col;
    /* chunks cut each image alike; eng_conv_col_floats sized the scratch
     * for chunks of col_chunk_rows(cv, n * hw) >= col_chunk_rows(cv, hw) */
    j.chunk = direct ? (hw < DIRECT_CHUNK_ROWS ? hw : DIRECT_CHUNK_ROWS) : col_chunk_rows(cv, hw);
    j.chunks = (hw + j.chunk - 1) / j.chunk;
    j.col_slice = direct ? 0 : (size_t)j.chunk * j.kdim;
    /* small maps (deep layers) have too few rows to share out: their
     * channels are cut into blocks too, whatever the pool's size */
    j.nb = hw < MIN_ROWS_PER_TASK ? CHANNEL_BLOCK : cv->cout;
    j.blocks = (cv->cout + j.nb - 1) / j.nb;
    j.units = n * j.chunks * j.blocks;
    if (j.ntasks > j.units) j.ntasks = j.units;
    eng_pool_run(conv_task, &j, j.ntasks);
}

/* ------------------------------------------------------------------------ */
/* int8: the VNNI kernels (conv_int8.c) and the quantizer                   */
/* ------------------------------------------------------------------------ */

/* An int8 conv split as packed_job splits fp32 ones. Each task folds its
 * outputs' per-image maxima into its own row of tslots; integer sums and a
 * max are exact, so the result does not depend on the split. */
struct i8_job {
    float *out;
    const uint8_t *in;
    const struct eng_conv *cv;
    const struct eng_i8_epi *e;
    uint8_t *scratch;
    float *tslots; /* [ntasks][n] */
    size_t scratch_stride;
    int n, h, w, m, ntasks;
    bool by_rows;
};

/* Task t's per-channel maxima: [n][cout] s32 after every task's floats. */
static int32_t *i8_task_accmax(const struct i8_job *j, int t) {
    return (int32_t *)(j->tslots + (size_t)j->ntasks * j->n) + (size_t)t * j->n * j->cv->cout;
}

static void i8_task(void *arg, int t) {
    const struct i8_job *j = arg;
    struct eng_i8_epi e = *j->e;
    if (e.tmax) {
        e.tmax = j->tslots + (size_t)t * j->n;
        for (int i = 0; i < j->n; i++) e.tmax[i] = 0.0f;
    }
    if (e.accmax) {
        e.accmax = i8_task_accmax(j, t);
        for (size_t i = 0; i < (size_t)j->n * j->cv->cout; i++) e.accmax[i] = INT32_MIN;
    }
    int m0, m1, p0, p1;
    split_share(j->m, eng_i8_panels(j->cv) * ENG_PACK_NR, j->by_rows, j->ntasks, t, &m0, &m1, &p0,
                &p1);
    if (e.src && j->by_rows) { /* this task's input rows, image by image */
        const size_t cin = (size_t)j->cv->cin, img_len = (size_t)j->h * j->w * cin;
        uint8_t *q = (uint8_t *)j->in; /* the caller's u8 buffer, written first */
        for (size_t a = (size_t)m0 * cin, b = (size_t)m1 * cin; a < b;) {
            const size_t img = a / img_len, end = (img + 1) * img_len < b ? (img + 1) * img_len : b;
            eng_quantize_u8(q + a, e.src + a, end - a, e.srcinv[img]);
            a = end;
        }
    }
    uint8_t *scratch = j->scratch + (size_t)t * j->scratch_stride;
    if (j->cv->amx)
        eng_conv_amx(j->out, j->in, j->cv, j->h, j->w, &e, m0, m1, p0, p1, scratch);
    else
        eng_conv_int8(j->out, j->in, j->cv, j->h, j->w, &e, m0, m1, p0, p1, scratch);
}

static void quantize_with(const uint8_t *q, const float *x, const float *inv, int n, size_t img_len,
                          int ntasks);

void eng_conv_forward_int8(float *out, const uint8_t *in, const struct eng_conv *cv, int n, int h,
                           int w, const struct eng_i8_epi *e, float *col, float *tslots,
                           int ntasks) {
    struct i8_job j = {.out = out, .in = in, .cv = cv, .e = e, .scratch = (uint8_t *)col,
                       .tslots = tslots, .n = n, .h = h, .w = w};
    j.scratch_stride = i8_task_bytes(cv);
    j.m = n * eng_out_dim(h, cv->k, cv->stride, cv->pad) * eng_out_dim(w, cv->k, cv->stride, cv->pad);
    j.ntasks = split_tasks(j.m, eng_i8_panels(cv) * ENG_PACK_NR, ntasks, &j.by_rows);
    if (e->src && !j.by_rows) /* every task reads every row: copy them first */
        quantize_with(in, e->src, e->srcinv, n, (size_t)h * w * cv->cin, ntasks);
    eng_pool_run(i8_task, &j, j.ntasks);
    if (e->accmax) { /* a max over tasks is exact: the split does not show */
        const size_t len = (size_t)n * cv->cout;
        memcpy(e->accmax, i8_task_accmax(&j, 0), sizeof(int32_t) * len);
        for (int t = 1; t < j.ntasks; t++) {
            const int32_t *a = i8_task_accmax(&j, t);
            for (size_t i = 0; i < len; i++) e->accmax[i] = a[i] > e->accmax[i] ? a[i] : e->accmax[i];
        }
    }
    if (e->tmax)
        for (int i = 0; i < n; i++) {
            float mx = 0.0f;
            for (int t = 0; t < j.ntasks; t++) mx = fmaxf(mx, tslots[(size_t)t * n + i]);
            e->tmax[i] = mx;
        }
}

struct quant_job {
    uint8_t *q;
    const float *x;
    const float *inv; /* [n] */
    size_t img_len, total;
    int ntasks;
};

static void quant_task(void *arg, int t) {
    const struct quant_job *j = arg;
    /* an even share of all elements, cut at 64 so the vector loop runs whole */
    size_t a = j->total * (size_t)t / (size_t)j->ntasks & ~(size_t)63;
    size_t b = t + 1 == j->ntasks ? j->total : j->total * (size_t)(t + 1) / (size_t)j->ntasks & ~(size_t)63;
    while (a < b) {
        size_t img = a / j->img_len, end = (img + 1) * j->img_len;
        if (end > b) end = b;
        eng_quantize_u8(j->q + a, j->x + a, end - a, j->inv[img]);
        a = end;
    }
}

struct requant_job {
    uint8_t *q;
    const int32_t *acc;
    const struct eng_conv *cv;
    const float *ascale, *inv;
    int m, hw, ntasks;
};

static void requant_task(void *arg, int t) {
    const struct requant_job *j = arg;
    eng_i8_requant(j->q, j->acc, j->cv, j->ascale, j->inv, share_start(j->m, t, j->ntasks),
                   share_start(j->m, t + 1, j->ntasks), j->hw);
}

void eng_requant_images(uint8_t *q, float *scale, const int32_t *acc, const int32_t *accmax,
                        const struct eng_conv *cv, const float *ascale, int n, int hw,
                        int ntasks) {
    /* scale may be ascale itself (the u8 slot the input came from) */
    float inv[n], as[n];
    memcpy(as, ascale, sizeof as);
    for (int i = 0; i < n; i++)
        eng_i8_scale(eng_i8_requant_max(accmax + (size_t)i * cv->cout, cv, as[i]), &scale[i],
                     &inv[i]);
    struct requant_job j = {.q = q, .acc = acc, .cv = cv, .ascale = as, .inv = inv,
                            .m = n * hw, .hw = hw, .ntasks = ntasks > 0 ? ntasks : 1};
    if ((size_t)j.m * cv->cout < (size_t)1 << 14) j.ntasks = 1; /* not worth waking the pool */
    eng_pool_run(requant_task, &j, j.ntasks);
}

/* q (the caller's buffer) = u8 of x, image i at inv[i], on the pool. */
static void quantize_with(const uint8_t *q, const float *x, const float *inv, int n, size_t img_len,
                          int ntasks) {
    struct quant_job j = {.q = (uint8_t *)q, .x = x, .inv = inv, .img_len = img_len,
                          .total = img_len * (size_t)n, .ntasks = ntasks > 0 ? ntasks : 1};
    if (j.total < (size_t)1 << 14) j.ntasks = 1; /* not worth waking the pool */
    eng_pool_run(quant_task, &j, j.ntasks);
}

void eng_quantize_images(uint8_t *q, float *scale, const float *x, const float *max, int n,
                         size_t img_len, int ntasks) {
    float inv[n];
    for (int i = 0; i < n; i++) eng_i8_scale(max[i], &scale[i], &inv[i]);
    quantize_with(q, x, inv, n, img_len, ntasks);
}

/* The stem's input and its pooled output in int8, by rows on the pool. */
struct u8_rows_job {
    uint8_t *q;
    const uint8_t *in;
    const float *x, *mean, *std;
    int size, pad, h, w, c, rows, ntasks;
};

static void input_task(void *arg, int t) {
    const struct u8_rows_job *j = arg;
    eng_quantize_input_rows(j->q, j->x, j->size, j->pad, j->mean, j->std,
                            share_start(j->rows, t, j->ntasks), share_start(j->rows, t + 1, j->ntasks));
}

void eng_quantize_input(uint8_t *q, const float *x, int n, int size, int pad, const float mean[3],
                        const float std[3], int ntasks) {
    struct u8_rows_job j = {.q = q, .x = x, .mean = mean, .std = std, .size = size, .pad = pad,
                            .rows = n * (size + 2 * pad), .ntasks = ntasks > 0 ? ntasks : 1};
    eng_pool_run(input_task, &j, j.ntasks);
}

static void pool_u8_task(void *arg, int t) {
    const struct u8_rows_job *j = arg;
    eng_maxpool3x3s2_u8_rows(j->q, j->in, j->h, j->w, j->c, share_start(j->rows, t, j->ntasks),
                             share_start(j->rows, t + 1, j->ntasks));
}

void eng_maxpool3x3s2_u8_tasks(uint8_t *out, const uint8_t *in, int n, int h, int w, int c,
                               int ntasks) {
    struct u8_rows_job j = {.q = out, .in = in, .h = h, .w = w, .c = c,
                            .rows = n * eng_out_dim(h, 3, 2, 1), .ntasks = ntasks > 0 ? ntasks : 1};
    eng_pool_run(pool_u8_task, &j, j.ntasks);
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

struct dense_job {
    float *out;
    const float *in, *w, *b;
    int n, cin, cout, ntasks;
};

static void dense_task(void *arg, int t) {
    const struct dense_job *j = arg;
    eng_dense_avx512(j->out, j->in, j->w, j->b, j->n, j->cin, j->cout,
                     share_start(j->cout, t, j->ntasks), share_start(j->cout, t + 1, j->ntasks));
}

void eng_linear(float *out, const float *in, const float *w, const float *b, int n, int cin,
                int cout, bool avx512, int ntasks) {
    if (avx512) {
        /* the weights (8 MB for ResNet-50) read once per batch, not once
         * per image, on every core */
        struct dense_job j = {out, in, w, b, n, cin, cout, ntasks > 0 ? ntasks : 1};
        eng_pool_run(dense_task, &j, j.ntasks);
        return;
    }
    /* one image at a time: sgemm picks its kernels (and so its order of
     * summation) by the batch size, and an image's logits must not depend
     * on its batch; the weights stay in cache from one image to the next */
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * cout;
        memcpy(o, b, sizeof(float) * (size_t)cout);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, cout, cin, 1.0f, w, cin, in + (size_t)i * cin, 1,
                    1.0f, o, 1);
    }
}
