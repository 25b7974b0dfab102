/* conv_amx.c: the int8 convolution on Intel AMX tiles (tdpbusd: a 16x64 u8
 * tile times a 64x16 s8 tile into 16x16 s32, 16 times the work of one
 * vpdpbusd), for CPUs that have it; the same packed weights (but for the
 * stem's 16-bit ones, split in hi and lo s8 here), sums and epilogue as the
 * VNNI kernels in conv_int8.c, so the results are the same bits. conv.c
 * decides when it runs.
 *
 * Only this file is compiled with -mamx-tile -mamx-int8; nothing here runs
 * unless eng_amx_available() (cpu.c) said yes (cpuid and the kernel's
 * permission). */
#include "engine_impl.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define NR ENG_PACK_NR
/* Rows gathered per block, each with the whole reduction: every weight
 * panel is read from L2 once per MB rows (MB x kdim4 <= 576 KB in L2). */
#define MB 128
#define TR 16 /* tile rows */
#define TK 64 /* tile reduction bytes */

_Static_assert(NR == 2 * 16, "two 16-channel B tiles per weight panel");

bool eng_amx_fits(const struct eng_conv *cv) {
    return eng_i8_kdim4(cv) % TK == 0 && cv->cout % NR == 0 && !cv->wide; /* wide: the model's call */
}

size_t eng_amx_scratch_bytes(const struct eng_conv *cv) {
    /* gathered rows [MB][kdim4], sums [32][NR] s32 */
    return (size_t)MB * eng_i8_kdim4(cv) + 32 * NR * 4;
}

struct tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* A wide conv's epilogue (struct eng_conv): sums [mr][NR] hold the hi
 * and then the lo sums of 16 channels; the operations of eng_i8_epilogue
 * on 256 hi + lo (exact: |sum| < 2^31 for k * k * cin <= 256). */
static void epilogue_wide(float *out, size_t ldc, const int32_t *sums, int mr, const float *bias,
                          const float *wscale, const float *rowscale, const float *res,
                          float *tmax, int m0, int hw, bool relu) {
    const __m512 b = _mm512_loadu_ps(bias), ws = _mm512_loadu_ps(wscale);
    const __m512 lo = _mm512_set1_ps(relu ? 0.0f : -__builtin_inff());
    __m512 mx = _mm512_setzero_ps();
    int img = m0 / hw, left = hw - m0 % hw;
    for (int i = 0; i < mr; i++, left--) {
        if (!left) {
            if (tmax) tmax[img] = fmaxf(tmax[img], _mm512_reduce_max_ps(mx));
            mx = _mm512_setzero_ps();
            img++;
            left = hw;
        }
        const int32_t *q = sums + (size_t)i * NR;
        const __m512i acc = _mm512_add_epi32(_mm512_slli_epi32(_mm512_loadu_si512(q), 8),
                                             _mm512_loadu_si512(q + 16));
        __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(ws, _mm512_set1_ps(rowscale[i])), b);
        if (res) v = _mm512_add_ps(v, _mm512_loadu_ps(res + i * ldc));
        v = _mm512_max_ps(v, lo);
        _mm512_storeu_ps(out + i * ldc, v);
        mx = _mm512_max_ps(mx, v);
    }
    if (tmax) tmax[img] = fmaxf(tmax[img], _mm512_reduce_max_ps(mx));
}

void eng_conv_amx(float *out, const uint8_t *in, const struct eng_conv *cv, int h, int w,
                  const struct eng_i8_epi *e, int m0, int m1, int p0, int p1, uint8_t *abuf) {
    const int ho = eng_out_dim(h, cv->k, cv->stride, cv->pad);
    const int wo = eng_out_dim(w, cv->k, cv->stride, cv->pad);
    const int hw = ho * wo, kdim4 = eng_i8_kdim4(cv), cout = cv->cout;
    const size_t img_bytes = (size_t)h * w * cv->cin;
    int32_t *sums = (int32_t *)(abuf + (size_t)MB * kdim4);    /* [32][NR] */
    /* tiles 0-3: sums (2 row halves x 2 channel halves); 4-5: activations;
     * 6-7: weights; all 16 rows of 64 bytes */
    struct tilecfg cfg = {.palette = 1};
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = TR;
    }
    _tile_loadconfig(&cfg);
    /* a 1x1 stride-1 conv's input rows are its A rows: tiles load them in
     * place (stride cin), all but a last partial group of 32, which is
     * gathered so that no tile reads past the task's rows */
    const bool direct = cv->k == 1 && cv->stride == 1 && cv->pad == 0;
    float rscale[MB];
    for (int mb = m0; mb < m1; mb += MB) {
        const int rows = m1 - mb < MB ? m1 - mb : MB;
        const int whole = direct ? rows & ~31 : 0; /* rows read in place */
        for (int r = 0; r < rows; r++) {
            int m = mb + r, img = m / hw, rem = m % hw;
            rscale[r] = e->ascale[img];
            if (r < whole) continue;
            struct eng_rowsrc src = {in + (size_t)img * img_bytes,
                                     (rem / wo) * cv->stride - cv->pad,
                                     (rem % wo) * cv->stride - cv->pad};
            eng_i8_gather(abuf + (size_t)r * kdim4, &src, cv, h, w, 0, kdim4);
        }
        /* rows past the end feed tile rows whose sums are dropped */
        const int rows32 = (rows + 31) & ~31;
        memset(abuf + (size_t)rows * kdim4, 0, (size_t)(rows32 - rows) * kdim4);
        /* rows outer, panels inner: a row group's activations stay in L1
         * while the weights stream from L2, and the shortcut and output
         * rows are walked along, each panel's shortcut lines fetched one
         * panel ahead (they are cold: written a block or more ago; fetching
         * the output lines too measured no better) */
        for (int r0 = 0; r0 < rows; r0 += 32) {
            const bool inplace = r0 < whole;
            const uint8_t *a = inplace ? in + (size_t)(mb + r0) * kdim4 : abuf + (size_t)r0 * kdim4;
            const int mr = rows - r0 < 32 ? rows - r0 : 32;
            for (int p = p0; p < p1; p++) {
                const int8_t *b = cv->wq + (size_t)p * kdim4 * NR; /* [kdim4 / 4][NR][4] */
                if (p + 1 < p1) {
                    const size_t next = (size_t)(mb + r0) * cout + (size_t)(p + 1) * NR;
                    for (int r = 0; r < mr && e->res; r++) {
                        _mm_prefetch((const char *)(e->res + next + r * cout), _MM_HINT_T0);
                        _mm_prefetch((const char *)(e->res + next + r * cout + 16), _MM_HINT_T0);
                    }
                }
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                /* in place or gathered, rows are kdim4 (= cin) bytes apart */
                for (int k = 0; k < kdim4; k += TK) {
                    _tile_loadd(4, a + k, kdim4);
                    _tile_loadd(5, a + (size_t)TR * kdim4 + k, kdim4);
                    _tile_loadd(6, b + (size_t)k * NR, 4 * NR);
                    _tile_loadd(7, b + (size_t)k * NR + 64, 4 * NR);
                    _tile_dpbusd(0, 4, 6);
                    _tile_dpbusd(1, 4, 7);
                    _tile_dpbusd(2, 5, 6);
                    _tile_dpbusd(3, 5, 7);
                }
                _tile_stored(0, sums, 4 * NR);
                _tile_stored(1, sums + 16, 4 * NR);
                _tile_stored(2, sums + TR * NR, 4 * NR);
                _tile_stored(3, sums + TR * NR + 16, 4 * NR);
                if (cv->wide) { /* hi and lo of 16 channels: 256 hi + lo */
                    const size_t at16 = (size_t)(mb + r0) * cout + (size_t)p * 16;
                    epilogue_wide(out + at16, cout, sums, mr, cv->bias + p * 16, cv->wscale + p * 16,
                                  rscale + r0, e->res ? e->res + at16 : NULL, e->tmax, mb + r0, hw,
                                  e->relu);
                    continue;
                }
                const size_t at = (size_t)(mb + r0) * cout + (size_t)p * NR;
                if (e->accmax) {
                    eng_i8_store_sums((int32_t *)(out + at), cout, sums, NR, mr,
                                      e->accmax + p * NR, cout, mb + r0, hw);
                    continue;
                }
                eng_i8_epilogue(out + at, cout, sums, mr, cv->bias + p * NR, cv->wscale + p * NR,
                                rscale + r0, e->res ? e->res + at : NULL, e->tmax, mb + r0, hw,
                                e->relu);
            }
        }
    }
    _tile_release();
}
