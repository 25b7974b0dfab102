/* conv_int8_ref.c: the plain C half of the int8 path: per-channel weight
 * quantization and packing (at load), and the reference convolution and
 * quantizer that the VNNI kernels in conv_int8.c must match bit for bit. */
#include "engine_impl.h"

#include <math.h>
#include <string.h>

#define NR ENG_PACK_NR

/* Per output channel, symmetric in [-top, top] (so negating a weight is
 * exact); q[o][k] for k < kdim. */
static void quantize_channel(int32_t *q, float *wscale, const float *wo, int kdim, int top) {
    double maxabs = 0;
    for (int k = 0; k < kdim; k++) maxabs = fmax(maxabs, fabs((double)wo[k]));
    *wscale = (float)(maxabs / top);
    const double inv = maxabs > 0 ? top / maxabs : 0.0;
    for (int k = 0; k < kdim; k++) {
        long v = lrint((double)wo[k] * inv);
        q[k] = (int32_t)(v > top ? top : v < -top ? -top : v);
    }
}

void eng_i8_quantize_weights(int8_t *wq, float *wscale, const float *w, int cout, int kdim) {
    const int kdim4 = (kdim + 3) & ~3;
    int32_t q[kdim];
    for (int o = 0; o < cout; o++) {
        quantize_channel(q, &wscale[o], w + (size_t)o * kdim, kdim, 127);
        for (int k = 0; k < kdim4; k++) /* [p][k / 4][r][k % 4] */
            wq[(((size_t)(o / NR) * (kdim4 / 4) + k / 4) * NR + o % NR) * 4 + k % 4] =
                (int8_t)(k < kdim ? q[k] : 0);
    }
}

/* 16 bits: the most that 256 hi + lo (hi, lo s8) covers both ways */
#define WIDE_TOP (127 * 256 + 127)

/* Where channel o's hi (or lo) of a wide AMX conv sits: panel o / 16,
 * column o % 16 (+ 16 for lo). */
static size_t split_at(int kdim4, int o, int k, bool lo) {
    const int p = o / 16, r = o % 16 + (lo ? 16 : 0);
    return (((size_t)p * (kdim4 / 4) + k / 4) * NR + r) * 4 + k % 4;
}

void eng_i16_quantize_weights(int8_t *wq, float *wscale, const float *w, int cout, int kdim,
                              bool amx) {
    int32_t q[kdim];
    const int kdim2 = (kdim + 1) & ~1, kdim4 = (kdim + 63) & ~63;
    for (int o = 0; o < cout; o++) {
        quantize_channel(q, &wscale[o], w + (size_t)o * kdim, kdim, WIDE_TOP);
        if (amx) {
            for (int k = 0; k < kdim4; k++) {
                const int v = k < kdim ? q[k] : 0;
                const int hi = (v + 128 + 32768 * 2) / 256 - 256; /* floor((v + 128) / 256) */
                wq[split_at(kdim4, o, k, false)] = (int8_t)hi;
                wq[split_at(kdim4, o, k, true)] = (int8_t)(v - 256 * hi); /* [-128, 127] */
            }
        } else {
            for (int k = 0; k < kdim2; k++) /* [p][k / 2][r][k % 2] */
                ((int16_t *)wq)[(((size_t)(o / NR) * (kdim2 / 2) + k / 2) * NR + o % NR) * 2 + k % 2] =
                    (int16_t)(k < kdim ? q[k] : 0);
        }
    }
}

int eng_i8_weight_at(const struct eng_conv *cv, int o, int k) {
    const int kdim4 = eng_i8_kdim4(cv);
    if (cv->wide && cv->amx)
        return 256 * cv->wq[split_at(kdim4, o, k, false)] + cv->wq[split_at(kdim4, o, k, true)];
    if (cv->wide) {
        const int16_t *q = (const int16_t *)cv->wq;
        return q[(((size_t)(o / NR) * (kdim4 / 4) + k / 2) * NR + o % NR) * 2 + k % 2];
    }
    return cv->wq[(((size_t)(o / NR) * (kdim4 / 4) + k / 4) * NR + o % NR) * 4 + k % 4];
}

void eng_conv_int8_ref(float *out, const uint8_t *in, const struct eng_conv *cv, int n, int h,
                       int w, const struct eng_i8_epi *e) {
    const int ho = eng_out_dim(h, cv->k, cv->stride, cv->pad);
    const int wo = eng_out_dim(w, cv->k, cv->stride, cv->pad);
    const int k = cv->k, cin = cv->cin, cout = cv->cout;
    const float lo = e->relu ? 0.0f : -INFINITY;
    for (int img = 0; img < n; img++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++)
                for (int o = 0; o < cout; o++) {
                    int32_t acc = 0;
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = oy * cv->stride - cv->pad + ky;
                            int ix = ox * cv->stride - cv->pad + kx;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                            const uint8_t *x = in + (((size_t)img * h + iy) * w + ix) * cin;
                            for (int c = 0; c < cin; c++)
                                acc += (int32_t)x[c] * eng_i8_weight_at(cv, o, (ky * k + kx) * cin + c);
                        }
                    /* the kernel's epilogue, operation for operation */
                    size_t at = (((size_t)img * ho + oy) * wo + ox) * cout + o;
                    float s = cv->wscale[o] * e->ascale[img];
                    float v = fmaf((float)acc, s, cv->bias[o]);
                    if (e->res) v = v + e->res[at];
                    v = v > lo ? v : lo;
                    out[at] = v;
                    if (e->tmax && v > e->tmax[img]) e->tmax[img] = v;
                }
}

void eng_quantize_u8_ref(uint8_t *q, const float *x, size_t count, float inv) {
    for (size_t i = 0; i < count; i++) {
        float t = x[i] * inv;
        long r = lrintf(t); /* nearest, ties to even, as vcvtps2dq */
        q[i] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    }
}

float eng_i8_requant_max(const int32_t *accmax, const struct eng_conv *cv, float ascale) {
    float mx = 0.0f;
    for (int o = 0; o < cv->cout; o++) {
        float v = fmaf((float)accmax[o], cv->wscale[o] * ascale, cv->bias[o]);
        mx = v > mx ? v : mx;
    }
    return mx;
}

void eng_i8_requant_ref(uint8_t *q, const int32_t *acc, const struct eng_conv *cv,
                        const float *ascale, const float *inv, int m0, int m1, int hw) {
    const int cout = cv->cout;
    for (int m = m0; m < m1; m++)
        for (int o = 0; o < cout; o++) {
            const size_t at = (size_t)m * cout + o;
            float v = fmaf((float)acc[at], cv->wscale[o] * ascale[m / hw], cv->bias[o]);
            v = v > 0.0f ? v : 0.0f;
            eng_quantize_u8_ref(q + at, &v, 1, inv[m / hw]);
        }
}

void eng_maxpool3x3s2_u8_ref(uint8_t *out, const uint8_t *in, int n, int h, int w, int c) {
    const int ho = eng_out_dim(h, 3, 2, 1), wo = eng_out_dim(w, 3, 2, 1);
    for (int img = 0; img < n; img++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                uint8_t *o = out + (((size_t)img * ho + oy) * wo + ox) * c;
                /* 0 is the least u8, and every window holds a pixel: padding
                 * taps are skipped, as torch pads max pool with -inf */
                memset(o, 0, (size_t)c);
                for (int iy = oy * 2 - 1; iy <= oy * 2 + 1; iy++)
                    for (int ix = ox * 2 - 1; ix <= ox * 2 + 1; ix++) {
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                        const uint8_t *q = in + (((size_t)img * h + iy) * w + ix) * c;
                        for (int j = 0; j < c; j++) o[j] = q[j] > o[j] ? q[j] : o[j];
                    }
            }
}
