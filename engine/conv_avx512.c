/* conv_avx512.c: the convolution kernels for CPUs with AVX-512: weights
 * pre-packed at load into 32-channel panels, activations gathered per block
 * (implicit im2col), a 14x32 register tile with bias/residual/ReLU fused into
 * its final store, and Winograd F(4x4,3x3) on the same tile for stride-1 3x3
 * convs. conv.c decides when they run; OpenBLAS is the portable path.
 *
 * Only this file is compiled with -mavx512f; nothing here runs unless
 * eng_avx512_available() (cpu.c) said yes. */
#include "engine_impl.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* Register tile: MR output pixels x NR output channels = 28 accumulators,
 * two weight vectors and one broadcast in the 32 zmm registers. */
#define MR 14
#define NR ENG_PACK_NR
/* Reduction depth per pass: a 128 x 32 weight panel (16 KB) stays in L1
 * while every row tile of the block streams past it. */
#define KC 128
/* Output rows gathered per block: MC x KC floats (168 KB) stay in L2 while
 * every weight panel of the layer passes over them. */
#define MC (MR * 24)

size_t eng_avx512_scratch_floats(void) {
    return (size_t)MC * KC;
}

void eng_pack_weights(float *dst, const float *w, int cout, int kdim) {
    /* dst[p][k][r] = w[p * NR + r][k]: one panel of NR channels is read as
     * contiguous 128-byte rows, k after k */
    for (int p = 0; p < cout / NR; p++)
        for (int k = 0; k < kdim; k++)
            for (int r = 0; r < NR; r++)
                dst[((size_t)p * kdim + k) * NR + r] = w[((size_t)p * NR + r) * kdim + k];
}

/* ------------------------------------------------------------------------ */
/* Microkernel                                                              */
/* ------------------------------------------------------------------------ */

/* What the last pass over k does before storing: NULL bias = not the last
 * pass (store the partial sums). */
struct epi {
    const float *bias; /* [NR] */
    const float *res;  /* NULL or [mr][ldc] at the tile */
    bool relu;
};

/* c[mr][NR] (rows ldc apart) = (acc ? c : 0) + a[mr][kc] x b[kc][NR], a's
 * rows KC floats apart; then the epilogue when e->bias is set. mr is a
 * compile-time constant at every call site, so the accumulators are
 * registers and the loops unroll. */
static inline __attribute__((always_inline)) void tile(const int mr, const float *restrict a,
                                                       const float *restrict b, int kc,
                                                       float *restrict c, size_t ldc, bool acc,
                                                       const struct epi *e) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
        if (acc) {
            c0[i] = _mm512_loadu_ps(c + i * ldc);
            c1[i] = _mm512_loadu_ps(c + i * ldc + 16);
        } else {
            c0[i] = _mm512_setzero_ps();
            c1[i] = _mm512_setzero_ps();
        }
    }
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            const __m512 av = _mm512_set1_ps(a[i * KC]);
            c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
        }
        a++;
        b += NR;
    }
    if (e->bias) {
        const __m512 bias0 = _mm512_loadu_ps(e->bias), bias1 = _mm512_loadu_ps(e->bias + 16);
        /* no ReLU is a max with -inf: one branch-free store path */
        const __m512 lo = _mm512_set1_ps(e->relu ? 0.0f : -__builtin_inff());
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            __m512 v0 = _mm512_add_ps(c0[i], bias0), v1 = _mm512_add_ps(c1[i], bias1);
            if (e->res) {
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(e->res + i * ldc));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(e->res + i * ldc + 16));
            }
            c0[i] = _mm512_max_ps(v0, lo);
            c1[i] = _mm512_max_ps(v1, lo);
        }
    }
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
        _mm512_storeu_ps(c + i * ldc, c0[i]);
        _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
    }
}

#define TILE_CASE(n)                                                                               \
    case n:                                                                                        \
        tile(n, a, b, kc, c, ldc, acc, e);                                                         \
        break;

static void tile_any(int mr, const float *a, const float *b, int kc, float *c, size_t ldc,
                     bool acc, const struct epi *e) {
    switch (mr) {
        TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6) TILE_CASE(7)
        TILE_CASE(8) TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12) TILE_CASE(13)
        TILE_CASE(14)
    }
}

/* ------------------------------------------------------------------------ */
/* Gathering activations (implicit im2col)                                  */
/* ------------------------------------------------------------------------ */

/* The im2col rows come from eng_gather_row (conv.c), shared with the int8
 * kernels. */

/* ------------------------------------------------------------------------ */
/* Driver                                                                   */
/* ------------------------------------------------------------------------ */

void eng_conv_avx512(float *out, const float *in, const struct eng_conv *cv, int h, int w,
                     const float *res, bool relu, int m0, int m1, int p0, int p1, float *abuf) {
    const int ho = eng_out_dim(h, cv->k, cv->stride, cv->pad);
    const int wo = eng_out_dim(w, cv->k, cv->stride, cv->pad);
    const int kdim = cv->k * cv->k * cv->cin, cout = cv->cout;
    const size_t img_floats = (size_t)h * w * cv->cin;
    struct eng_rowsrc src[MC];
    for (int mb = m0; mb < m1; mb += MC) {
        const int rows = m1 - mb < MC ? m1 - mb : MC;
        for (int r = 0; r < rows; r++) {
            int m = mb + r, img = m / (ho * wo), rem = m % (ho * wo);
            src[r].img = (const unsigned char *)(in + (size_t)img * img_floats);
            src[r].iy0 = (rem / wo) * cv->stride - cv->pad;
            src[r].ix0 = (rem % wo) * cv->stride - cv->pad;
        }
        for (int k0 = 0; k0 < kdim; k0 += KC) {
            const int kc = kdim - k0 < KC ? kdim - k0 : KC;
            for (int r = 0; r < rows; r++)
                eng_gather_row(abuf + (size_t)r * KC, &src[r], cv, h, w, k0, k0 + kc,
                               sizeof(float));
            const bool acc = k0 > 0, last = k0 + kc == kdim;
            for (int p = p0; p < p1; p++) {
                const float *b = cv->w + ((size_t)p * kdim + k0) * NR;
                struct epi e = {.bias = last ? cv->bias + p * NR : NULL, .relu = relu};
                for (int i = 0; i < rows; i += MR) {
                    const int mr = rows - i < MR ? rows - i : MR;
                    const size_t at = (size_t)(mb + i) * cout + (size_t)p * NR;
                    e.res = res && last ? res + at : NULL;
                    /* the next tile's outputs (and shortcut) are rows a whole
                     * layer apart: fetch them while this tile computes */
                    if (i + MR < rows) {
                        const float *nc = out + at + (size_t)MR * cout;
                        const float *nr = e.res ? e.res + (size_t)MR * cout : NULL;
                        int nm = rows - i - MR < MR ? rows - i - MR : MR;
                        for (int r = 0; r < nm; r++) {
                            if (acc) {
                                _mm_prefetch((const char *)(nc + (size_t)r * cout), _MM_HINT_T0);
                                _mm_prefetch((const char *)(nc + (size_t)r * cout + 16), _MM_HINT_T0);
                            }
                            if (nr) {
                                _mm_prefetch((const char *)(nr + (size_t)r * cout), _MM_HINT_T0);
                                _mm_prefetch((const char *)(nr + (size_t)r * cout + 16), _MM_HINT_T0);
                            }
                        }
                    }
                    tile_any(mr, abuf + (size_t)i * KC, b, kc, out + at, cout, acc, &e);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Winograd F(4x4, 3x3) for stride-1 3x3 convolutions                       */
/* ------------------------------------------------------------------------ */

/* Each 4x4 block of outputs ("tile") comes from a 6x6 input patch d as
 * Y = A^T [(G g G^T) . (B^T d B)] A, so the 3x3 conv becomes 36 independent
 * GEMMs over channels (one per position of the 6x6 transform), with 36
 * multiplies per 16 outputs instead of 144. The points 0, +-1, +-2 scale by
 * up to 8 and 1/24, so the rounding error is 5-10x the direct conv's (at
 * most 6e-6 of the output scale in test_conv; ResNet-152's logits use 12%
 * of the parity tolerance against torchvision). F(2x2, 3x3) was
 * measured too: 4-5% slower end to end, with 16/36 of the weight memory.
 *
 *   B^T = [4  0 -5  0  1  0]   G = [ 1/4     0     0 ]   A^T = [1  1  1  1  1  0]
 *         [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6 ]         [0  1 -1  2 -2  0]
 *         [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6 ]         [0  1  1  4  4  0]
 *         [0 -2 -1  2  1  0]       [1/24  1/12   1/6 ]         [0  1 -1  8 -8  1]
 *         [0  2 -1 -2  1  0]       [1/24 -1/12   1/6 ]
 *         [0  4  0 -5  0  1]       [  0     0     1  ]
 */
#define WT ENG_WINO_TILE /* output tile side */
#define WA (WT + 2)      /* input patch side */
#define WPOS (WA * WA) /* transform positions: GEMMs per layer */
_Static_assert(WT == 4, "the transform matrices below are those of F(4x4, 3x3)");

/* Tiles per block: the block's transformed inputs V and GEMM outputs M
 * (36 positions each) stay in L2/L3 between the three phases, and every
 * weight panel is used by TB / MR row tiles before it is evicted. 28 and 56
 * measured the same; 28 needs half the scratch. */
#define TB (MR * 2)

static int chunks_of(int cin) {
    return (cin + KC - 1) / KC;
}

size_t eng_winograd_scratch_floats(int cin, int cout) {
    /* V: [36][chunks][TB][KC], M: [36][TB][cout] */
    return (size_t)WPOS * TB * ((size_t)chunks_of(cin) * KC + (size_t)cout);
}

void eng_pack_winograd(float *dst, const float *w, int cout, int cin) {
    static const double G[WA][3] = {{1.0 / 4, 0, 0},
                                    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                    {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                    {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                    {0, 0, 1}};
    const int panels = cout / NR;
    /* dst[pos][p][ci][r] = U[pos] for output channel p * NR + r, input ci:
     * each position is a cin x cout GEMM operand in the panels of
     * eng_pack_weights. w: [cout][3][3][cin]. U = G g G^T in double. */
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            double gg[WA][3];
            for (int i = 0; i < WA; i++)
                for (int x = 0; x < 3; x++) {
                    gg[i][x] = 0;
                    for (int y = 0; y < 3; y++)
                        gg[i][x] += G[i][y] * w[(((size_t)co * 3 + y) * 3 + x) * cin + ci];
                }
            for (int i = 0; i < WA; i++)
                for (int j = 0; j < WA; j++) {
                    double u = 0;
                    for (int x = 0; x < 3; x++) u += gg[i][x] * G[j][x];
                    dst[(((size_t)(i * WA + j) * panels + co / NR) * cin + ci) * NR + co % NR] =
                        (float)u;
                }
        }
}

/* Where tile g of the layer sits: image, and output row/col of its corner. */
struct tilepos {
    int img, oy, ox;
};

static struct tilepos tile_at(int g, int th, int tw) {
    struct tilepos t = {g / (th * tw), (g % (th * tw)) / tw * WT, (g % tw) * WT};
    return t;
}

/* t = B^T d along one line of a patch: d[i * s] in, t[i * ts] out. */
static inline __attribute__((always_inline)) void bt_line(const __m512 *d, int s, __m512 *t,
                                                          int ts) {
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f),
                 two = _mm512_set1_ps(2.0f);
    const __m512 d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    const __m512 p = _mm512_fnmadd_ps(four, d2, d4); /* d4 - 4 d2 */
    const __m512 q = _mm512_fnmadd_ps(four, d1, d3); /* d3 - 4 d1 */
    const __m512 r = _mm512_sub_ps(d4, d2);
    const __m512 u = _mm512_mul_ps(two, _mm512_sub_ps(d3, d1));
    t[0] = _mm512_fnmadd_ps(five, d2, _mm512_fmadd_ps(four, d0, d4));
    t[ts] = _mm512_add_ps(p, q);
    t[2 * ts] = _mm512_sub_ps(p, q);
    t[3 * ts] = _mm512_add_ps(r, u);
    t[4 * ts] = _mm512_sub_ps(r, u);
    t[5 * ts] = _mm512_fnmadd_ps(five, d3, _mm512_fmadd_ps(four, d1, d5));
}

/* y = A^T v along one line: v[i * s] in (6), y[i * ys] out (4). */
static inline __attribute__((always_inline)) void at_line(const __m512 *v, int s, __m512 *y,
                                                          int ys) {
    const __m512 p = _mm512_add_ps(v[s], v[2 * s]), q = _mm512_sub_ps(v[s], v[2 * s]);
    const __m512 r = _mm512_add_ps(v[3 * s], v[4 * s]), u = _mm512_sub_ps(v[3 * s], v[4 * s]);
    y[0] = _mm512_add_ps(_mm512_add_ps(v[0], p), r);
    y[ys] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), u, q);
    y[2 * ys] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), r, p);
    y[3 * ys] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), u, q), v[5 * s]);
}

/* V[pos][c][t][0 .. kc) = B^T d B over 16 channels at a time, for the 6x6
 * patch of tile t whose top-left input pixel is (oy - 1, ox - 1); pixels in
 * the padding (or past an uneven edge) are zero. */
static void winograd_input(float *restrict v, const float *in, const struct eng_conv *cv, int h,
                           int w, struct tilepos tp, int t) {
    const int cin = cv->cin, nch = chunks_of(cin);
    const float *img = in + (size_t)tp.img * h * w * cin;
    const float *px[WA][WA];
    for (int y = 0; y < WA; y++)
        for (int x = 0; x < WA; x++) {
            int iy = tp.oy - 1 + y, ix = tp.ox - 1 + x;
            px[y][x] = iy >= 0 && iy < h && ix >= 0 && ix < w ? img + ((size_t)iy * w + ix) * cin : NULL;
        }
    const size_t pstride = (size_t)nch * TB * KC;
    for (int c = 0; c < cin; c += 16) {
        __m512 d[WA], tt[WA][WA];
        for (int y = 0; y < WA; y++) {
            for (int x = 0; x < WA; x++)
                d[x] = px[y][x] ? _mm512_loadu_ps(px[y][x] + c) : _mm512_setzero_ps();
            bt_line(d, 1, tt[y], 1); /* along x: d B */
        }
        float *o = v + ((size_t)(c / KC) * TB + t) * KC + c % KC;
        for (int x = 0; x < WA; x++) { /* along y: B^T (d B) */
            __m512 col[WA];
            bt_line(&tt[0][x], WA, col, 1);
            for (int y = 0; y < WA; y++) _mm512_storeu_ps(o + (size_t)(y * WA + x) * pstride, col[y]);
        }
    }
}

/* out (4x4 pixels of tile t, clipped at the edge; channels [c0, c1)) =
 * act(A^T M A + bias (+ res)), 16 channels at a time. */
static void winograd_output(float *out, const float *restrict mbuf, const struct eng_conv *cv,
                            int ho, int wo, const float *res, bool relu, struct tilepos tp, int t,
                            int c0, int c1) {
    const int cout = cv->cout;
    const __m512 lo = _mm512_set1_ps(relu ? 0.0f : -__builtin_inff());
    const size_t pstride = (size_t)TB * cout;
    const float *mt = mbuf + (size_t)t * cout;
    for (int c = c0; c < c1; c += 16) {
        __m512 ay[WT][WA];
        for (int x = 0; x < WA; x++) { /* A^T M, column by column */
            __m512 col[WA];
            for (int y = 0; y < WA; y++) col[y] = _mm512_loadu_ps(mt + (y * WA + x) * pstride + c);
            at_line(col, 1, &ay[0][x], WA);
        }
        const __m512 bias = _mm512_loadu_ps(cv->bias + c);
        for (int y = 0; y < WT; y++) {
            int oy = tp.oy + y;
            if (oy >= ho) break;
            __m512 r[WT];
            at_line(ay[y], 1, r, 1); /* (A^T M) A */
            for (int x = 0; x < WT; x++) {
                int ox = tp.ox + x;
                if (ox >= wo) break;
                size_t at = (((size_t)tp.img * ho + oy) * wo + ox) * cout + c;
                __m512 val = _mm512_add_ps(r[x], bias);
                if (res) val = _mm512_add_ps(val, _mm512_loadu_ps(res + at));
                _mm512_storeu_ps(out + at, _mm512_max_ps(val, lo));
            }
        }
    }
}

void eng_conv_winograd(float *out, const float *in, const struct eng_conv *cv, int h, int w,
                       const float *res, bool relu, int g0, int g1, int p0, int p1,
                       float *scratch) {
    const int cin = cv->cin, cout = cv->cout, panels = cout / NR, nch = chunks_of(cin);
    const int th = (h + WT - 1) / WT, tw = (w + WT - 1) / WT;
    float *vbuf = scratch, *mbuf = scratch + (size_t)WPOS * nch * TB * KC;
    const struct epi none = {0};
    for (int gb = g0; gb < g1; gb += TB) {
        const int nt = g1 - gb < TB ? g1 - gb : TB;
        for (int t = 0; t < nt; t++) winograd_input(vbuf, in, cv, h, w, tile_at(gb + t, th, tw), t);
        for (int pos = 0; pos < WPOS; pos++)
            for (int p = p0; p < p1; p++)
                for (int c = 0; c < nch; c++) {
                    const int kc = cin - c * KC < KC ? cin - c * KC : KC;
                    const float *b = cv->w + (((size_t)pos * panels + p) * cin + (size_t)c * KC) * NR;
                    const float *a = vbuf + ((size_t)pos * nch + c) * TB * KC;
                    for (int i = 0; i < nt; i += MR)
                        tile_any(nt - i < MR ? nt - i : MR, a + (size_t)i * KC, b, kc,
                                 mbuf + ((size_t)pos * TB + i) * cout + (size_t)p * NR, cout, c > 0,
                                 &none);
                }
        for (int t = 0; t < nt; t++)
            winograd_output(out, mbuf, cv, h, w, res, relu, tile_at(gb + t, th, tw), t, p0 * NR,
                            p1 * NR);
    }
}

void eng_dense_avx512(float *out, const float *in, const float *w, const float *b, int n, int cin,
                      int cout, int o0, int o1) {
    for (int o = o0; o < o1; o++) {
        const float *wo = w + (size_t)o * cin;
        for (int i = 0; i < n; i++) { /* wo stays in L1 across the images */
            const float *x = in + (size_t)i * cin;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int k = 0;
            for (; k + 64 <= cin; k += 64) {
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wo + k), _mm512_loadu_ps(x + k), a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(wo + k + 16), _mm512_loadu_ps(x + k + 16), a1);
                a2 = _mm512_fmadd_ps(_mm512_loadu_ps(wo + k + 32), _mm512_loadu_ps(x + k + 32), a2);
                a3 = _mm512_fmadd_ps(_mm512_loadu_ps(wo + k + 48), _mm512_loadu_ps(x + k + 48), a3);
            }
            for (; k + 16 <= cin; k += 16)
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wo + k), _mm512_loadu_ps(x + k), a0);
            float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
            for (; k < cin; k++) s = fmaf(wo[k], x[k], s);
            out[(size_t)i * cout + o] = s + b[o];
        }
    }
}

void eng_maxpool3x3s2_band(float *out, const float *in, int iy0, int h, int w, int c, int oy0,
                           int oy1) {
    const int wo = eng_out_dim(w, 3, 2, 1);
    for (int oy = oy0; oy < oy1; oy++) {
        /* padding taps are skipped: torch pads max pool with -inf */
        const int y0 = oy * 2 - 1 < 0 ? 0 : oy * 2 - 1, y1 = oy * 2 + 1 < h ? oy * 2 + 1 : h - 1;
        for (int ox = 0; ox < wo; ox++) {
            const int x0 = ox * 2 - 1 < 0 ? 0 : ox * 2 - 1, x1 = ox * 2 + 1 < w ? ox * 2 + 1 : w - 1;
            float *o = out + ((size_t)(oy - oy0) * wo + ox) * c;
            for (int j = 0; j < c; j += 16) {
                __m512 v = _mm512_set1_ps(-FLT_MAX);
                for (int iy = y0; iy <= y1; iy++)
                    for (int ix = x0; ix <= x1; ix++)
                        v = _mm512_max_ps(v, _mm512_loadu_ps(in + ((size_t)(iy - iy0) * w + ix) * c + j));
                _mm512_storeu_ps(o + j, v);
            }
        }
    }
}
