/* conv_int8_ref.c: the plain C half of the int8 path: per-channel weight
 * quantization and packing (at load), and the reference convolution and
 * quantizer that the VNNI kernels in conv_int8.c must match bit for bit. */
#include "engine_impl.h"

#include <math.h>
#include <string.h>

#define NR ENG_PACK_NR

/* Per output channel, symmetric in [-top, top] (so negating a weight is
 * exact), packed g to a group: s8 quads (top 127, g 4) or s16 pairs (top
 * 32767, g 2), [p][k / g][r][k % g] with zeros past kdim. */
static void quantize_weights(int8_t *wq, float *wscale, const float *w, int cout, int kdim,
                             int top, int g) {
    const int kdimg = (kdim + g - 1) / g * g;
    for (int o = 0; o < cout; o++) {
        const float *wo = w + (size_t)o * kdim;
        double maxabs = 0;
        for (int k = 0; k < kdim; k++) maxabs = fmax(maxabs, fabs((double)wo[k]));
        wscale[o] = (float)(maxabs / top);
        const double inv = maxabs > 0 ? top / maxabs : 0.0;
        const int p = o / NR, r = o % NR;
        for (int k = 0; k < kdimg; k++) {
            long v = k < kdim ? lrint((double)wo[k] * inv) : 0;
            v = v > top ? top : v < -top ? -top : v;
            const size_t at = (((size_t)p * (kdimg / g) + k / g) * NR + r) * g + k % g;
            if (g == 4)
                wq[at] = (int8_t)v;
            else
                ((int16_t *)wq)[at] = (int16_t)v;
        }
    }
}

void eng_i8_quantize_weights(int8_t *wq, float *wscale, const float *w, int cout, int kdim) {
    quantize_weights(wq, wscale, w, cout, kdim, 127, 4);
}

void eng_i16_quantize_weights(int8_t *wq, float *wscale, const float *w, int cout, int kdim) {
    quantize_weights(wq, wscale, w, cout, kdim, 32767, 2);
}

/* The quantized weight of output channel o at reduction index k. */
static int weight_at(const struct eng_conv *cv, int o, int k) {
    const int kdim4 = eng_i8_kdim4(cv);
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
                                acc += (int32_t)x[c] * weight_at(cv, o, (ky * k + kx) * cin + c);
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
