/* conv_int8.c: the int8 convolution kernels for CPUs with AVX-512 VNNI:
 * vpdpbusd multiplies u8 activations by s8 weights (per output channel,
 * packed at load) into s32 on a 14x32 register tile, with the scale, bias,
 * shortcut, ReLU and the per-image maximum (the next layer's scale) fused
 * into its final store; plus the u8 quantizer. conv.c decides when they run;
 * conv_int8_ref.c holds the plain C reference they must match bit for bit.
 *
 * Only this file is compiled with -mavx512vnni; nothing here runs unless
 * eng_vnni_available() (cpu.c) said yes. */
#include "engine_impl.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* Register tile: MR output pixels x NR output channels = 28 s32
 * accumulators, two weight vectors and one broadcast in 32 zmm registers. */
#define MR 14
#define NR ENG_PACK_NR
/* Reduction bytes per pass (a multiple of 4): a 512 x 32 weight panel
 * (16 KB) stays in L1 while every row tile of the block streams past it. */
#define KC 512
/* Output rows per block: MC x KC bytes (168 KB) of gathered activations
 * stay in L2 while every weight panel of the layer passes over them. */
#define MC (MR * 24)

_Static_assert(KC % 64 == 0, "the row maxima after the gather buffer must stay 64-byte aligned");

bool eng_i8_wide_fits(const struct eng_conv *cv) {
    /* a strip in one masked move, the whole row in one pass */
    struct eng_conv w = *cv;
    w.wide = true;
    return cv->k * cv->cin <= 32 && eng_i8_kdim4(&w) <= KC;
}

size_t eng_i8_scratch_bytes(void) {
    /* gathered rows [MC][KC] u8, then each row's running max [MC][16] */
    return (size_t)MC * KC + (size_t)MC * 16 * sizeof(float);
}

/* ------------------------------------------------------------------------ */
/* Microkernel                                                              */
/* ------------------------------------------------------------------------ */

/* What the last pass over k does before storing; bias NULL = not the last
 * pass (store the s32 partial sums in the output's place). */
struct tepi {
    const float *bias;     /* [NR] at the panel */
    const float *wscale;   /* [NR] at the panel */
    const float *rowscale; /* [mr]: activation scale of each row's image */
    const float *res;      /* NULL or [mr][ldc] at the tile */
    float *rowmax;         /* NULL or [mr][16]: running max of each row's outputs */
    bool relu;
};

/* c[mr][NR] (rows ldc floats apart) = (acc ? c : 0) + a[mr][4 kq] x b, a's
 * rows lda bytes apart, b: [kq][NR][4]; then the epilogue when e->bias is
 * set. Partial sums are s32 in c's place. mr is a compile-time constant at
 * every call site, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void tile(const int mr, const bool wide,
                                                       const uint8_t *restrict a, size_t lda,
                                                       const int8_t *restrict b, int kq,
                                                       float *restrict c, size_t ldc, bool acc,
                                                       const struct tepi *e) {
    __m512i c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
        if (acc) {
            c0[i] = _mm512_loadu_si512(c + i * ldc);
            c1[i] = _mm512_loadu_si512(c + i * ldc + 16);
        } else {
            c0[i] = _mm512_setzero_si512();
            c1[i] = _mm512_setzero_si512();
        }
    }
    for (int q = 0; q < kq; q++) {
        const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            int32_t quad;
            memcpy(&quad, a + i * lda, 4); /* four u8 (wide: two s16), broadcast */
            const __m512i av = _mm512_set1_epi32(quad);
            if (wide) {
                c0[i] = _mm512_dpwssd_epi32(c0[i], av, b0);
                c1[i] = _mm512_dpwssd_epi32(c1[i], av, b1);
            } else {
                c0[i] = _mm512_dpbusd_epi32(c0[i], av, b0);
                c1[i] = _mm512_dpbusd_epi32(c1[i], av, b1);
            }
        }
        a += 4;
        b += 4 * NR;
    }
    if (!e->bias) {
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            _mm512_storeu_si512(c + i * ldc, c0[i]);
            _mm512_storeu_si512(c + i * ldc + 16, c1[i]);
        }
        return;
    }
    const __m512 bias0 = _mm512_loadu_ps(e->bias), bias1 = _mm512_loadu_ps(e->bias + 16);
    const __m512 ws0 = _mm512_loadu_ps(e->wscale), ws1 = _mm512_loadu_ps(e->wscale + 16);
    /* no ReLU is a max with -inf: one branch-free store path */
    const __m512 lo = _mm512_set1_ps(e->relu ? 0.0f : -__builtin_inff());
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
        const __m512 s = _mm512_set1_ps(e->rowscale[i]);
        __m512 v0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c0[i]), _mm512_mul_ps(ws0, s), bias0);
        __m512 v1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c1[i]), _mm512_mul_ps(ws1, s), bias1);
        if (e->res) {
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(e->res + i * ldc));
            v1 = _mm512_add_ps(v1, _mm512_loadu_ps(e->res + i * ldc + 16));
        }
        v0 = _mm512_max_ps(v0, lo);
        v1 = _mm512_max_ps(v1, lo);
        _mm512_storeu_ps(c + i * ldc, v0);
        _mm512_storeu_ps(c + i * ldc + 16, v1);
        if (e->rowmax) {
            float *rm = e->rowmax + i * 16;
            _mm512_store_ps(rm, _mm512_max_ps(_mm512_load_ps(rm), _mm512_max_ps(v0, v1)));
        }
    }
}

#define TILE_CASE(n, wide)                                                                         \
    case n:                                                                                        \
        tile(n, wide, a, lda, b, kq, c, ldc, acc, e);                                              \
        break;
#define TILE_CASES(wide)                                                                           \
    TILE_CASE(1, wide) TILE_CASE(2, wide) TILE_CASE(3, wide) TILE_CASE(4, wide) TILE_CASE(5, wide) \
    TILE_CASE(6, wide) TILE_CASE(7, wide) TILE_CASE(8, wide) TILE_CASE(9, wide)                    \
    TILE_CASE(10, wide) TILE_CASE(11, wide) TILE_CASE(12, wide) TILE_CASE(13, wide)                \
    TILE_CASE(14, wide)

static void tile_any(int mr, bool wide, const uint8_t *a, size_t lda, const int8_t *b, int kq,
                     float *c, size_t ldc, bool acc, const struct tepi *e) {
    if (wide) {
        switch (mr) { TILE_CASES(true) }
    } else {
        switch (mr) { TILE_CASES(false) }
    }
}

/* ------------------------------------------------------------------------ */
/* Gathering activations (implicit im2col, u8)                              */
/* ------------------------------------------------------------------------ */

/* dst[0 .. k1-k0) = row r's activations (eng_gather_row) for reduction
 * indices [k0, k1), zeros from k * k * cin on up to kdim4. */
static void gather_row(uint8_t *restrict dst, const struct eng_rowsrc *r,
                       const struct eng_conv *cv, int h, int w, int k0, int k1) {
    const int kdim = cv->k * cv->k * cv->cin, strip = cv->k * cv->cin;
    if (cv->wide) {
        /* the stem on its padded input (k0 = 0, k1 = the row: one pass of
         * KC): k strips of k * cin pixels' u8 (21 for 7x7x3), each one
         * masked move (widened to s16 on VNNI), not a memcpy call */
        const __mmask32 mask = (__mmask32)((1ull << strip) - 1);
        const uint8_t *src = r->img + ((size_t)r->iy0 * w + r->ix0) * cv->cin;
        if (cv->amx) {
            for (int ky = 0; ky < cv->k; ky++)
                _mm256_mask_storeu_epi8(dst + ky * strip, mask,
                                        _mm256_maskz_loadu_epi8(mask, src + (size_t)ky * w * cv->cin));
            memset(dst + kdim, 0, (size_t)(k1 - kdim));
            return;
        }
        for (int ky = 0; ky < cv->k; ky++) {
            const __m256i px = _mm256_maskz_loadu_epi8(mask, src + (size_t)ky * w * cv->cin);
            _mm512_mask_storeu_epi16(dst + 2 * ky * strip, mask, _mm512_cvtepu8_epi16(px));
        }
        memset(dst + 2 * kdim, 0, (size_t)(k1 - 2 * kdim));
        return;
    }
    if (k1 > kdim) {
        int z0 = k0 > kdim ? k0 : kdim;
        memset(dst + (z0 - k0), 0, (size_t)(k1 - z0));
        k1 = z0;
    }
    if (k1 > k0) eng_gather_row(dst, r, cv, h, w, k0, k1, 1);
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                   */
/* ------------------------------------------------------------------------ */

static float hmax(__m512 v) {
    return _mm512_reduce_max_ps(v);
}

void eng_conv_int8(float *out, const uint8_t *in, const struct eng_conv *cv, int h, int w,
                   const struct eng_i8_epi *e, int m0, int m1, int p0, int p1, uint8_t *abuf) {
    const int ho = eng_out_dim(h, cv->k, cv->stride, cv->pad);
    const int wo = eng_out_dim(w, cv->k, cv->stride, cv->pad);
    const int hw = ho * wo, kdim4 = eng_i8_kdim4(cv), cout = cv->cout, cin = cv->cin;
    /* a 1x1 stride-1 conv reads its input rows in place */
    const bool direct = cv->k == 1 && cv->stride == 1 && cv->pad == 0 && cin % 4 == 0;
    const size_t img_bytes = (size_t)h * w * cin;
    float *rowmax = (float *)(abuf + (size_t)MC * KC); /* [MC][16] */
    struct eng_rowsrc src[MC];
    float rscale[MC];
    for (int mb = m0; mb < m1; mb += MC) {
        const int rows = m1 - mb < MC ? m1 - mb : MC;
        for (int r = 0; r < rows; r++) {
            int m = mb + r, img = m / hw, rem = m % hw;
            src[r].img = in + (size_t)img * img_bytes;
            src[r].iy0 = (rem / wo) * cv->stride - cv->pad;
            src[r].ix0 = (rem % wo) * cv->stride - cv->pad;
            rscale[r] = e->ascale[img];
            if (e->tmax) _mm512_store_ps(rowmax + (size_t)r * 16, _mm512_setzero_ps());
        }
        for (int k0 = 0; k0 < kdim4; k0 += KC) {
            const int kc = kdim4 - k0 < KC ? kdim4 - k0 : KC;
            const uint8_t *a;
            size_t lda;
            if (direct) {
                a = in + (size_t)mb * cin + k0;
                lda = (size_t)cin;
            } else {
                for (int r = 0; r < rows; r++)
                    gather_row(abuf + (size_t)r * KC, &src[r], cv, h, w, k0, k0 + kc);
                a = abuf;
                lda = KC;
            }
            const bool acc = k0 > 0, last = k0 + kc == kdim4;
            for (int p = p0; p < p1; p++) {
                const int8_t *b = cv->wq + ((size_t)p * kdim4 + k0) * NR;
                /* accmax: the sums stay s32 (eng_i8_requant finishes them) */
                struct tepi te = {.bias = last && !e->accmax ? cv->bias + p * NR : NULL,
                                  .wscale = cv->wscale + p * NR, .relu = e->relu};
                for (int i = 0; i < rows; i += MR) {
                    const int mr = rows - i < MR ? rows - i : MR;
                    const size_t at = (size_t)(mb + i) * cout + (size_t)p * NR;
                    te.rowscale = rscale + i;
                    te.res = e->res && last ? e->res + at : NULL;
                    te.rowmax = e->tmax && last ? rowmax + (size_t)i * 16 : NULL;
                    tile_any(mr, cv->wide, a + i * lda, lda, b, kc / 4, out + at, cout, acc, &te);
                    if (last && e->accmax)
                        eng_i8_store_sums(NULL, 0, (const int32_t *)(out + at), cout, mr,
                                          e->accmax + p * NR, cout, mb + i, hw);
                }
            }
        }
        if (e->tmax) eng_i8_fold_max(e->tmax, rowmax, mb, rows, hw);
    }
}

void eng_i8_gather(uint8_t *dst, const struct eng_rowsrc *r, const struct eng_conv *cv, int h,
                   int w, int k0, int k1) {
    const int k = cv->k, cin = cv->cin;
    if (k0 != 0 || k1 != k * k * cin || cin % 64) {
        gather_row(dst, r, cv, h, w, k0, k1);
        return;
    }
    /* a whole row of whole pixels (the AMX kernel's 3x3 convs): tap by tap
     * in zmm moves, instead of a memcpy call per kernel row */
    const __m512i zero = _mm512_setzero_si512();
    for (int ky = 0; ky < k; ky++) {
        const int iy = r->iy0 + ky;
        for (int kx = 0; kx < k; kx++, dst += cin) {
            const int ix = r->ix0 + kx;
            const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
            const uint8_t *src = inside ? r->img + ((size_t)iy * w + ix) * cin : NULL;
            for (int c = 0; c < cin; c += 64)
                _mm512_storeu_si512(dst + c, inside ? _mm512_loadu_si512(src + c) : zero);
        }
    }
}

void eng_i8_epilogue(float *out, size_t ldc, const int32_t *sums, int mr, const float *bias,
                     const float *wscale, const float *rowscale, const float *res, float *tmax,
                     int m0, int hw, bool relu) {
    const __m512 bias0 = _mm512_loadu_ps(bias), bias1 = _mm512_loadu_ps(bias + 16);
    const __m512 ws0 = _mm512_loadu_ps(wscale), ws1 = _mm512_loadu_ps(wscale + 16);
    const __m512 lo = _mm512_set1_ps(relu ? 0.0f : -__builtin_inff());
    __m512 f0 = ws0, f1 = ws1, mx = _mm512_setzero_ps();
    int img = m0 / hw, left = hw - m0 % hw; /* rows of this image still to come */
    /* the same operations as tile()'s epilogue, so both give the same bits;
     * the scale product is made again only when the image changes, and the
     * maximum is kept in a register until then */
    for (int i = 0; i < mr; i++, left--) {
        if (!left) {
            if (tmax) tmax[img] = fmaxf(tmax[img], hmax(mx));
            mx = _mm512_setzero_ps();
            img++;
            left = hw;
        }
        if (i == 0 || rowscale[i] != rowscale[i - 1]) {
            const __m512 s = _mm512_set1_ps(rowscale[i]);
            f0 = _mm512_mul_ps(ws0, s);
            f1 = _mm512_mul_ps(ws1, s);
        }
        const int32_t *q = sums + (size_t)i * NR;
        __m512 v0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(q)), f0, bias0);
        __m512 v1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(q + 16)), f1, bias1);
        if (res) {
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(res + i * ldc));
            v1 = _mm512_add_ps(v1, _mm512_loadu_ps(res + i * ldc + 16));
        }
        v0 = _mm512_max_ps(v0, lo);
        v1 = _mm512_max_ps(v1, lo);
        _mm512_storeu_ps(out + i * ldc, v0);
        _mm512_storeu_ps(out + i * ldc + 16, v1);
        mx = _mm512_max_ps(mx, _mm512_max_ps(v0, v1));
    }
    if (tmax) tmax[img] = fmaxf(tmax[img], hmax(mx));
}

void eng_i8_fold_max(float *tmax, const float *rowmax, int m0, int rows, int hw) {
    for (int r = 0; r < rows; r++) {
        float v = hmax(_mm512_loadu_ps(rowmax + (size_t)r * 16));
        float *t = &tmax[(m0 + r) / hw];
        if (v > *t) *t = v;
    }
}

void eng_i8_store_sums(int32_t *out, size_t ldc, const int32_t *sums, size_t lds, int mr,
                       int32_t *accmax, size_t ld_max, int m0, int hw) {
    int img = m0 / hw, left = hw - m0 % hw; /* rows of this image still to come */
    int32_t *am = accmax + (size_t)img * ld_max;
    __m512i a0 = _mm512_loadu_si512(am), a1 = _mm512_loadu_si512(am + 16);
    for (int r = 0; r < mr; r++, left--) {
        if (!left) { /* the rows move on to the next image */
            _mm512_storeu_si512(am, a0);
            _mm512_storeu_si512(am + 16, a1);
            am += ld_max;
            a0 = _mm512_loadu_si512(am);
            a1 = _mm512_loadu_si512(am + 16);
            left = hw;
        }
        const __m512i v0 = _mm512_loadu_si512(sums + r * lds), v1 = _mm512_loadu_si512(sums + r * lds + 16);
        if (out) {
            _mm512_storeu_si512(out + r * ldc, v0);
            _mm512_storeu_si512(out + r * ldc + 16, v1);
        }
        a0 = _mm512_max_epi32(a0, v0);
        a1 = _mm512_max_epi32(a1, v1);
    }
    _mm512_storeu_si512(am, a0);
    _mm512_storeu_si512(am + 16, a1);
}

void eng_i8_requant(uint8_t *q, const int32_t *acc, const struct eng_conv *cv,
                    const float *ascale, const float *inv, int m0, int m1, int hw) {
    const int cout = cv->cout;
    const __m512i zero = _mm512_setzero_si512();
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    float ws[cout]; /* wscale * the image's ascale, made once per image */
    int img = -1;
    __m512 f = _mm512_setzero_ps();
    for (int m = m0; m < m1; m++) {
        if (m / hw != img) {
            img = m / hw;
            const __m512 s = _mm512_set1_ps(ascale[img]);
            for (int c = 0; c < cout; c += 16)
                _mm512_storeu_ps(ws + c, _mm512_mul_ps(_mm512_loadu_ps(cv->wscale + c), s));
            f = _mm512_set1_ps(inv[img]);
        }
        const int32_t *a = acc + (size_t)m * cout;
        uint8_t *o = q + (size_t)m * cout;
        /* the operations of tile()'s epilogue with ReLU, then of
         * eng_quantize_u8: the same bits as the two passes; 64 channels
         * through two saturating packs, as eng_quantize_u8 */
#define REQ(c) _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_max_ps(_mm512_fmadd_ps(                      \
                   _mm512_cvtepi32_ps(_mm512_loadu_si512(a + (c))), _mm512_loadu_ps(ws + (c)),      \
                   _mm512_loadu_ps(cv->bias + (c))), _mm512_setzero_ps()), f))
        int c = 0;
        for (; c + 64 <= cout; c += 64) {
            const __m512i u = _mm512_packus_epi16(_mm512_packs_epi32(REQ(c), REQ(c + 16)),
                                                  _mm512_packs_epi32(REQ(c + 32), REQ(c + 48)));
            _mm512_storeu_si512(o + c, _mm512_permutexvar_epi32(order, u));
        }
        for (; c < cout; c += 16)
            _mm_storeu_si128((__m128i *)(o + c), _mm512_cvtusepi32_epi8(_mm512_max_epi32(REQ(c), zero)));
#undef REQ
    }
}

/* ------------------------------------------------------------------------ */
/* Quantizing activations                                                   */
/* ------------------------------------------------------------------------ */

void eng_quantize_input_rows(uint8_t *q, const float *x, int size, int pad, const float mean[3],
                             const float std[3], int r0, int r1) {
    const int side = size + 2 * pad;
    const size_t plane = (size_t)size * size;
    const __m512i zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
    uint8_t border[3];
    for (int c = 0; c < 3; c++) border[c] = (uint8_t)lrintf(255.0f * mean[c]);
    for (int r = r0; r < r1; r++) {
        const int img = r / side, y = r % side - pad;
        uint8_t *row = q + (size_t)r * side * 3;
        const bool inside = y >= 0 && y < size;
        /* the whole row as border, the image's part overwritten below */
        for (int p = 0; p < side; p++)
            if (!inside || p < pad || p >= pad + size) memcpy(row + 3 * p, border, 3);
        if (!inside) continue;
        const float *xi = x + (size_t)img * 3 * plane;
        row += 3 * pad;
        for (int x0 = 0; x0 < size; x0 += 16) {
            const int len = size - x0 < 16 ? size - x0 : 16;
            const __mmask16 k = (__mmask16)((1u << len) - 1);
            uint8_t ch[3][16];
            for (int c = 0; c < 3; c++) {
                __m512 v = _mm512_maskz_loadu_ps(k, xi + c * plane + (size_t)y * size + x0);
                v = _mm512_mul_ps(_mm512_fmadd_ps(v, _mm512_set1_ps(std[c]), _mm512_set1_ps(mean[c])),
                                  _mm512_set1_ps(255.0f));
                /* nearest even, then saturate to [0, 255] */
                __m512i t = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(v), zero), top);
                _mm_storeu_si128((__m128i *)ch[c], _mm512_cvtepi32_epi8(t));
            }
            for (int j = 0; j < len; j++) { /* planes -> pixels */
                row[3 * (x0 + j) + 0] = ch[0][j];
                row[3 * (x0 + j) + 1] = ch[1][j];
                row[3 * (x0 + j) + 2] = ch[2][j];
            }
        }
    }
}

void eng_quantize_u8(uint8_t *q, const float *x, size_t count, float inv) {
    const __m512 f = _mm512_set1_ps(inv);
    const __m512i zero = _mm512_setzero_si512();
    /* the dwords of two in-lane packs back in order: a0-3 a4-7 ... d12-15 */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    size_t i = 0;
    /* round to nearest even (the default mode), then saturate to [0, 255]:
     * 64 at a time with two saturating packs (s32 -> s16 -> u8, the same
     * clamps), which cost less than four vpmovusdb */
    for (; i + 64 <= count; i += 64) {
        const __m512i a = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), f));
        const __m512i b = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i + 16), f));
        const __m512i c = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i + 32), f));
        const __m512i d = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i + 48), f));
        const __m512i u = _mm512_packus_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
        _mm512_storeu_si512(q + i, _mm512_permutexvar_epi32(order, u));
    }
    for (; i + 16 <= count; i += 16) {
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), f));
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtusepi32_epi8(_mm512_max_epi32(v, zero)));
    }
    if (i < count) eng_quantize_u8_ref(q + i, x + i, count - i, inv);
}

float eng_max_f32(const float *x, size_t count) {
    __m512 m = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= count; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    float r = hmax(m);
    for (; i < count; i++) r = x[i] > r ? x[i] : r;
    return r;
}

void eng_maxpool3x3s2_u8(uint8_t *out, const uint8_t *in, int n, int h, int w, int c) {
    eng_maxpool3x3s2_u8_rows(out, in, h, w, c, 0, n * eng_out_dim(h, 3, 2, 1));
}

void eng_maxpool3x3s2_u8_rows(uint8_t *out, const uint8_t *in, int h, int w, int c, int r0,
                              int r1) {
    const int ho = eng_out_dim(h, 3, 2, 1), wo = eng_out_dim(w, 3, 2, 1);
    for (int r = r0; r < r1; r++) {
        const int img = r / ho, oy = r % ho;
        const int y0 = oy * 2 - 1 < 0 ? 0 : oy * 2 - 1, y1 = oy * 2 + 1 < h ? oy * 2 + 1 : h - 1;
        for (int ox = 0; ox < wo; ox++) {
            const int x0 = ox * 2 - 1 < 0 ? 0 : ox * 2 - 1, x1 = ox * 2 + 1 < w ? ox * 2 + 1 : w - 1;
            uint8_t *o = out + ((size_t)r * wo + ox) * c;
            /* 0 is the least u8 and every window holds a pixel; 64
             * channels a vector, the rest one by one */
            int j = 0;
            for (; j + 64 <= c; j += 64) {
                __m512i v = _mm512_setzero_si512();
                for (int iy = y0; iy <= y1; iy++)
                    for (int ix = x0; ix <= x1; ix++)
                        v = _mm512_max_epu8(
                            v, _mm512_loadu_si512(in + (((size_t)img * h + iy) * w + ix) * c + j));
                _mm512_storeu_si512(o + j, v);
            }
            for (; j < c; j++) {
                uint8_t v = 0;
                for (int iy = y0; iy <= y1; iy++)
                    for (int ix = x0; ix <= x1; ix++) {
                        const uint8_t p = in[(((size_t)img * h + iy) * w + ix) * c + j];
                        v = p > v ? p : v;
                    }
                o[j] = v;
            }
        }
    }
}
