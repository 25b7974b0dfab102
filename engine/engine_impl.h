/* engine_impl.h: internals shared by the engine's files (safetensors reader,
 * ResNet graph, convolution kernels). Not part of the public API. */
#ifndef ENGINE_IMPL_H
#define ENGINE_IMPL_H

#include "engine.h"

#include <stdbool.h>

/* printf into a caller's optional error buffer; returns st so callers can
 * write `return eng_errf(ENG_ERR_IO, err, errlen, "...", ...)`. */
enum eng_status eng_errf(enum eng_status st, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------------------------ */
/* safetensors.c                                                            */
/* ------------------------------------------------------------------------ */

enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_OTHER };

#define ST_MAX_DIMS 8

struct st_tensor {
    char *name;
    enum st_dtype dtype;
    char dtype_name[8]; /* as written in the header, e.g. "I64" */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const unsigned char *data; /* inside the mapping */
    size_t nbytes;
};

/* An open safetensors file: header parsed and validated, data mmapped
 * read-only. Owns the mapping and the tensor table. */
struct st_file {
    char path[512];
    void *map;
    size_t map_size;
    int ntensors;
    struct st_tensor *tensors; /* sorted by name */
};

/* Opens and validates path: header length within the file, JSON well
 * formed, every entry with a known layout, offsets inside the data and not
 * overlapping. On success f owns its resources; release with st_close. */
enum eng_status st_open(const char *path, struct st_file *f, char *err, size_t errlen);

void st_close(struct st_file *f);

/* Borrowed pointer to the tensor called name, or NULL. */
const struct st_tensor *st_find(const struct st_file *f, const char *name);

/* Copies tensor name into dst (float32, numel floats) converting F16/BF16,
 * after checking that its shape is exactly shape[0..ndim). */
enum eng_status st_read_f32(const struct st_file *f, const char *name, int ndim,
                            const int64_t *shape, float *dst, char *err, size_t errlen);

float eng_f16_to_f32(uint16_t h);
float eng_bf16_to_f32(uint16_t h);

/* ------------------------------------------------------------------------ */
/* cpu.c: instruction sets                                                  */
/* ------------------------------------------------------------------------ */

/* Kernel levels, each including the ones before it. */
enum eng_isa { ENG_ISA_AVX2, ENG_ISA_AVX512, ENG_ISA_AVX512_VNNI, ENG_ISA_AMX };

/* True when the kernels of level isa may run: the CPU and the OS have it and
 * the environment variable IMGCLASS_MAX_ISA (avx2, avx512, avx512_vnni or
 * amx; read once) does not cap below it. Else *why (when why is set) names
 * what is missing, in a static string. Thread-safe. */
bool eng_isa_available(enum eng_isa isa, const char **why);

/* ------------------------------------------------------------------------ */
/* conv.c: kernels on NHWC activations                                      */
/* ------------------------------------------------------------------------ */

/* A convolution with batch norm folded in. */
struct eng_conv {
    int cin, cout, k, stride, pad;
    float *w;    /* [cout][k][k][cin], BN scale folded in; when packed,
                    [cout / ENG_PACK_NR][k * k * cin][ENG_PACK_NR] */
    float *bias; /* [cout], BN shift folded in */
    bool packed; /* w is in panels for the AVX-512 kernel (conv_avx512.c) */
    bool wino;   /* packed for Winograd F(4x4,3x3):
                    w is [36][cout / ENG_PACK_NR][cin][ENG_PACK_NR] */
    bool int8;   /* runs on the VNNI kernels (conv_int8.c): reads u8
                    activations, uses wq and wscale below */
    bool amx;    /* int8 on AMX tiles (conv_amx.c) rather than VNNI */
    int8_t *wq;  /* [cout / ENG_PACK_NR][kdim4 / 4][ENG_PACK_NR][4], kdim4 =
                    k * k * cin rounded up to 4 (zeros past the end); inside w */
    float *wscale; /* [cout]: weight of channel o = wq * wscale[o] */
    /* int8's stem: 16-bit weights q in [-32639, 32639] on u8 pixels. An
     * 8-bit stem weight measured 0.004 of logit cosine against fp32 on the
     * shared photos; 16 bits cost nothing. On VNNI, s16 pairs (vpdpwssd
     * where vpdpbusd takes quads; rows and panels keep their bytes, so wq
     * is [cout / NR][kdim2 / 2][NR][2] s16); on AMX (amx set), q = 256 hi
     * + lo with hi, lo s8, as 2 cout s8 channels: panel p holds hi of
     * channels 16p..16p+15, then their lo, and the kernel combines them
     * (both give the same sums). Unpadded (its input comes padded),
     * k * cin <= 32. */
    bool wide;
};

/* Output size of a conv/pool along one axis. */
static inline int eng_out_dim(int in, int k, int stride, int pad) {
    return (in + 2 * pad - k) / stride + 1;
}

/* Floats of im2col scratch eng_conv_forward needs for this conv at this
 * input size and batch, split into ntasks; 0 when it feeds sgemm directly. */
size_t eng_conv_col_floats(const struct eng_conv *cv, int n, int h, int w, int ntasks);

/* out[n][ho][wo][cout] = act(conv(in) + bias (+ res)), run as ntasks tasks
 * on the compute pool. in: [n][h][w][cin]; res: NULL or shaped like out;
 * col: scratch of eng_conv_col_floats() floats. Allocates nothing. */
void eng_conv_forward(float *out, const float *in, const struct eng_conv *cv, int n, int h, int w,
                      const float *res, bool relu, float *col, int ntasks);

struct eng_i8_epi; /* conv_int8.c section below */

/* The int8 conv (cv->int8) on u8 input in: [n][h][w][cin], quantized with
 * e->ascale per image; out as eng_conv_forward. When e->tmax is set it gets
 * each image's maximum output; when e->accmax is set, see struct
 * eng_i8_epi. tslots: eng_i8_slot_bytes(ntasks, n, cout) of scratch for the
 * tasks' partial maxima. Allocates nothing. */
void eng_conv_forward_int8(float *out, const uint8_t *in, const struct eng_conv *cv, int n, int h,
                           int w, const struct eng_i8_epi *e, float *col, float *tslots,
                           int ntasks);

/* Quantizes n images of img_len floats each (x: [n][img_len], values >= 0)
 * to q with the scales their maxima max[n] give; writes each image's scale
 * to scale[n]. Runs on the pool. */
void eng_quantize_images(uint8_t *q, float *scale, const float *x, const float *max, int n,
                         size_t img_len, int ntasks);

/* Where output row m of a conv reads from: its image's first pixel and the
 * top-left input tap (possibly in the padding). */
struct eng_rowsrc {
    const unsigned char *img; /* [h][w][cin] elements of esize bytes */
    int iy0, ix0;
};

/* dst[0 .. k1-k0) = the im2col row of r for reduction indices [k0, k1)
 * (k < k * k * cin), k ordered (ky, kx, c), elements of esize bytes. Along
 * one ky the taps are contiguous in NHWC, so this is a memcpy per ky plus
 * zeros for the padding. Used by the fp32 and the int8 kernels. */
void eng_gather_row(void *restrict dst, const struct eng_rowsrc *r, const struct eng_conv *cv,
                    int h, int w, int k0, int k1, size_t esize);

/* ------------------------------------------------------------------------ */
/* conv_avx512.c: the AVX-512 microkernel (used when packed)                */
/* ------------------------------------------------------------------------ */

/* Output channels per weight panel. */
#define ENG_PACK_NR 32
/* Output tile side of the Winograd kernel: F(4x4, 3x3). */
#define ENG_WINO_TILE 4

/* eng_isa_available(ENG_ISA_AVX512, NULL) */
bool eng_avx512_available(void);

/* dst: [cout / ENG_PACK_NR][kdim][ENG_PACK_NR] from w: [cout][kdim];
 * cout must be a multiple of ENG_PACK_NR. */
void eng_pack_weights(float *dst, const float *w, int cout, int kdim);

/* Floats of scratch one task of eng_conv_avx512 needs. */
size_t eng_avx512_scratch_floats(void);

/* The part of eng_conv_forward for output rows [m0, m1) (pixels, all
 * images flattened) and weight panels [p0, p1) of a packed conv. abuf:
 * this task's scratch. Needs eng_avx512_available(). */
void eng_conv_avx512(float *out, const float *in, const struct eng_conv *cv, int h, int w,
                     const float *res, bool relu, int m0, int m1, int p0, int p1, float *abuf);

/* Winograd F(4x4,3x3) for 3x3 stride-1 pad-1 convs (cin a multiple of 16,
 * cout of ENG_PACK_NR): dst gets the 36 transformed weight matrices,
 * [36][cout / ENG_PACK_NR][cin][ENG_PACK_NR], from w: [cout][3][3][cin]. */
void eng_pack_winograd(float *dst, const float *w, int cout, int cin);

/* Scratch floats one task of eng_conv_winograd needs. */
size_t eng_winograd_scratch_floats(int cin, int cout);

/* The part of eng_conv_forward for ENG_WINO_TILE x ENG_WINO_TILE output
 * tiles [g0, g1) (row-major over images, then tile rows) and weight panels
 * [p0, p1) of a Winograd-packed conv. */
void eng_conv_winograd(float *out, const float *in, const struct eng_conv *cv, int h, int w,
                       const float *res, bool relu, int g0, int g1, int p0, int p1,
                       float *scratch);

/* ------------------------------------------------------------------------ */
/* conv_int8.c: AVX-512 VNNI kernels; conv_ref.c: their plain C reference   */
/* ------------------------------------------------------------------------ */

/* How an int8 conv's output leaves the kernel: fp32 out = act(acc * wscale[o]
 * * ascale[img] + bias[o] (+ res)), the per-image maximum of the stored
 * values folded into tmax[img] when tmax is set (the next layer's scale). */
struct eng_i8_epi {
    const float *ascale; /* [images]: activation scale of each input image */
    const float *res;    /* NULL or [m][cout] like out */
    float *tmax;         /* NULL or [images]: running max, >= 0 on entry */
    /* NULL, or [images][cout]: the kernel stores the raw s32 sums in out's
     * place instead of the epilogue, and folds each image's largest sum per
     * channel into accmax (INT32_MIN on entry); eng_i8_requant then applies
     * the epilogue (no res, relu) and quantizes, in one pass. The maximum
     * of act(sum * s + bias) over an image is act(max sum * s + bias) per
     * channel (s >= 0, every step monotone), so the next layer's scale is
     * known before any output is written, with the same bits. */
    int32_t *accmax;
    /* NULL, or the fp32 tensor whose u8 copy the input is to be, for a 1x1
     * stride-1 conv (input row m is output row m): each task quantizes its
     * own rows into the input buffer first (eng_quantize_u8 with
     * srcinv[image]) and convolves them while they are in cache, instead
     * of a pass over the whole copy before the conv. Same bits. */
    const float *src;
    const float *srcinv;
    bool relu;
};

/* Bytes of the tslots scratch eng_conv_forward_int8 needs: per task, n
 * floats of maxima, then n x cout s32 of per-channel maxima. */
static inline size_t eng_i8_slot_bytes(int ntasks, int n, int cout) {
    return (size_t)ntasks * n * (sizeof(float) + sizeof(int32_t) * (size_t)cout);
}

/* Stores mr rows of s32 sums (rows lds apart) to out (rows ldc apart; NULL:
 * they are there already) and folds them into accmax: [images][ld_max],
 * offset to the panel's first channel; row r belongs to image (m0 + r) / hw. */
void eng_i8_store_sums(int32_t *out, size_t ldc, const int32_t *sums, size_t lds, int mr,
                       int32_t *accmax, size_t ld_max, int m0, int hw);

/* The largest u8-bound output of one image of a conv run with accmax: the
 * max over channels o of max(0, fma(accmax[o], wscale[o] * ascale, bias[o])). */
float eng_i8_requant_max(const int32_t *accmax, const struct eng_conv *cv, float ascale);

/* q[m][cout] = u8 of max(0, fma(acc, wscale * ascale[img], bias)) * inv[img]
 * (round to nearest even, saturated) for rows m in [m0, m1), row m of image
 * m / hw: the epilogue and eng_quantize_u8 in one pass. */
void eng_i8_requant(uint8_t *q, const int32_t *acc, const struct eng_conv *cv,
                    const float *ascale, const float *inv, int m0, int m1, int hw);
void eng_i8_requant_ref(uint8_t *q, const int32_t *acc, const struct eng_conv *cv,
                        const float *ascale, const float *inv, int m0, int m1, int hw);

/* Runs eng_i8_requant over n images on the pool: scale[n] (which may be
 * ascale) gets each image's scale (eng_i8_requant_max / 255) for the next
 * layer. */
void eng_requant_images(uint8_t *q, float *scale, const int32_t *acc, const int32_t *accmax,
                        const struct eng_conv *cv, const float *ascale, int n, int hw,
                        int ntasks);

/* Bytes of one output channel's quantized weights, and of one gathered
 * row of activations: per output channel, symmetric, s8 in [-127, 127],
 * k * k * cin rounded up to 4; wide on VNNI: s16 (u8 rows widened to
 * s16), rounded up to 2, twice the bytes; wide on AMX: s8 hi and lo
 * channels, rounded up to 64 (a tile row). */
static inline int eng_i8_kdim4(const struct eng_conv *cv) {
    const int kdim = cv->k * cv->k * cv->cin;
    if (cv->wide) return cv->amx ? (kdim + 63) & ~63 : ((kdim + 1) & ~1) * 2;
    return (kdim + 3) & ~3;
}

/* eng_isa_available(ENG_ISA_AVX512_VNNI, NULL): AVX-512 VNNI with AVX-512BW */
bool eng_vnni_available(void);

/* dst[0 .. k1-k0) = row r's u8 activations for reduction indices [k0, k1),
 * zeros past k * k * cin (up to kdim4). */
void eng_i8_gather(uint8_t *dst, const struct eng_rowsrc *r, const struct eng_conv *cv, int h,
                   int w, int k0, int k1);

/* The int8 epilogue on mr rows of s32 sums ([mr][ENG_PACK_NR]) of one
 * weight panel: out (rows ldc floats apart) = act(sum * wscale * rowscale
 * + bias (+ res)); tmax: NULL or [images] running maxima, row i of
 * image (m0 + i) / hw. */
void eng_i8_epilogue(float *out, size_t ldc, const int32_t *sums, int mr, const float *bias,
                     const float *wscale, const float *rowscale, const float *res, float *tmax,
                     int m0, int hw, bool relu);

/* tmax[image of row m0 + r] = max(itself, max of rowmax[r][0..16)), r < rows. */
void eng_i8_fold_max(float *tmax, const float *rowmax, int m0, int rows, int hw);

/* conv_amx.c: the same convolution on AMX tiles, when the CPU has AMX-INT8
 * and Linux grants the tile state (eng_isa_available(ENG_ISA_AMX), asked
 * once). Same bits as eng_conv_int8. */
bool eng_amx_available(void);
bool eng_amx_fits(const struct eng_conv *cv); /* kdim4 a multiple of 64 */
size_t eng_amx_scratch_bytes(const struct eng_conv *cv);
void eng_conv_amx(float *out, const uint8_t *in, const struct eng_conv *cv, int h, int w,
                  const struct eng_i8_epi *e, int m0, int m1, int p0, int p1, uint8_t *abuf);

/* Whether int8 models loaded from now on may use AMX (default yes; the
 * tests and the benchmark turn it off to run the VNNI kernels). */
void eng_int8_allow_amx(bool allow);

/* Quantizes w: [cout][kdim] (fp32, BN folded) per output channel into
 * wq (packed as struct eng_conv says) and wscale: [cout]. cout must be a
 * multiple of ENG_PACK_NR. Plain C, used by the kernel and the reference. */
void eng_i8_quantize_weights(int8_t *wq, float *wscale, const float *w, int cout, int kdim);
/* The same in 16 bits for a wide conv, packed for cv->amx (wq: kdim4
 * bytes per channel, 2 cout channels' worth on AMX). */
void eng_i16_quantize_weights(int8_t *wq, float *wscale, const float *w, int cout, int kdim,
                              bool amx);
/* The quantized weight of output channel o at reduction index k, any
 * packing (wide ones combined). */
int eng_i8_weight_at(const struct eng_conv *cv, int o, int k);

/* Weight panels of an int8 conv (a wide AMX one has hi and lo channels). */
static inline int eng_i8_panels(const struct eng_conv *cv) {
    return cv->cout * (cv->wide && cv->amx ? 2 : 1) / ENG_PACK_NR;
}

/* Whether eng_conv_int8 can run cv wide (its kernel, rows and strips). */
bool eng_i8_wide_fits(const struct eng_conv *cv);

/* Bytes of scratch one task of eng_conv_int8 needs. */
size_t eng_i8_scratch_bytes(void);

/* Output rows [m0, m1) (images flattened) and weight panels [p0, p1) of
 * an int8 conv. out: [n][ho][wo][cout] fp32; in: [n][h][w][cin] u8.
 * abuf: this task's scratch. Needs eng_vnni_available(). */
void eng_conv_int8(float *out, const uint8_t *in, const struct eng_conv *cv, int h, int w,
                   const struct eng_i8_epi *e, int m0, int m1, int p0, int p1, uint8_t *abuf);

/* The same, whole layer, in plain C (conv_ref.c): bit for bit what
 * eng_conv_int8 writes, for the tests. */
void eng_conv_int8_ref(float *out, const uint8_t *in, const struct eng_conv *cv, int n, int h,
                       int w, const struct eng_i8_epi *e);

/* Activation scale of an image whose largest value is max: max / 255, and
 * the factor that maps values to u8 (0 when max is 0: all zeros). */
static inline void eng_i8_scale(float max, float *scale, float *inv) {
    *scale = max > 0 ? max / 255.0f : 0.0f;
    *inv = max > 0 ? 255.0f / max : 0.0f;
}

/* The stem's input in int8, back to the 8-bit pixels it came from: n
 * images CHW fp32 (size x size, normalized with mean and std) into
 * q: [n][size + 2 pad][size + 2 pad][3] u8 = clamp(rint((x * std + mean)
 * * 255), 0, 255), the border rint(255 * mean) (a normalized zero, to a
 * third of a level). Exact for torchvision's tensors, whose pixels are
 * u8 / 255; the stem's weights take 1 / (255 std) and its bias the mean
 * (model_pack in resnet.c). Runs on ntasks tasks of the pool (conv.c);
 * _rows does padded rows [r0, r1) of the n x (size + 2 pad) (conv_int8.c:
 * AVX-512; int8 runs only with VNNI). */
void eng_quantize_input(uint8_t *q, const float *x, int n, int size, int pad, const float mean[3],
                        const float std[3], int ntasks);
void eng_quantize_input_rows(uint8_t *q, const float *x, int size, int pad, const float mean[3],
                             const float std[3], int r0, int r1);

/* q[i] = clamp(rint(x[i] * inv), 0, 255) for i < count. */
void eng_quantize_u8(uint8_t *q, const float *x, size_t count, float inv);
void eng_quantize_u8_ref(uint8_t *q, const float *x, size_t count, float inv);

/* max(0, x[0 .. count)) */
float eng_max_f32(const float *x, size_t count);

/* 3x3 stride-2 pad-1 max pool. out: [n][ho][wo][c], in: [n][h][w][c]. */
void eng_maxpool3x3s2(float *out, const float *in, int n, int h, int w, int c);

/* Rows [oy0, oy1) of the same pool of one h x w image, from the input
 * rows [iy0, ...) it needs, held at in (in: row iy0); out: row oy0.
 * AVX-512F, c a multiple of 16 (conv_avx512.c). */
void eng_maxpool3x3s2_band(float *out, const float *in, int iy0, int h, int w, int c, int oy0,
                           int oy1);

/* The same on u8 (AVX-512BW when c is a multiple of 64, else the plain C
 * _ref). Quantizing is monotone and the pool's windows cover every input
 * pixel, so pooling the u8 copy gives the u8 of the pooled floats, with the
 * same per-image scale: the stem's output is pooled so in int8. */
void eng_maxpool3x3s2_u8(uint8_t *out, const uint8_t *in, int n, int h, int w, int c);
void eng_maxpool3x3s2_u8_ref(uint8_t *out, const uint8_t *in, int n, int h, int w, int c);
/* Output rows [r0, r1) of the n x ho, and the whole on ntasks tasks of the
 * pool (conv.c). */
void eng_maxpool3x3s2_u8_rows(uint8_t *out, const uint8_t *in, int h, int w, int c, int r0, int r1);
void eng_maxpool3x3s2_u8_tasks(uint8_t *out, const uint8_t *in, int n, int h, int w, int c,
                               int ntasks);

/* Global average pool. out: [n][c], in: [n][hw][c]. */
void eng_avgpool(float *out, const float *in, int n, int hw, int c);

/* Fully connected. out: [n][cout] = in [n][cin] x w^T + b; w: [cout][cin].
 * avx512: eng_dense_avx512 on ntasks tasks of the pool, else OpenBLAS sgemv
 * image by image; either way an image's logits do not depend on its batch. */
void eng_linear(float *out, const float *in, const float *w, const float *b, int n, int cin,
                int cout, bool avx512, int ntasks);

/* Outputs [o0, o1) of eng_linear, every image, each a dot product in one
 * fixed order (conv_avx512.c; needs eng_avx512_available()). Each weight
 * row is read from memory once for all n images. */
void eng_dense_avx512(float *out, const float *in, const float *w, const float *b, int n, int cin,
                      int cout, int o0, int o1);

/* ------------------------------------------------------------------------ */
/* pool.c                                                                   */
/* ------------------------------------------------------------------------ */

/* Runs fn(arg, 0 .. ntasks-1) on the compute pool and returns when all are
 * done; runs them in the caller when there is no pool. Thread-safe: tasks
 * of concurrent callers interleave on the pool's threads. */
void eng_pool_run(void (*fn)(void *arg, int task), void *arg, int ntasks);

/* A forward pass brackets itself with these, so that each of its
 * convolutions can ask for its share of the pool: all of it when it runs
 * alone (lowest latency), one thread when every thread has its own forward
 * (no splitting overhead at saturation). */
void eng_pool_enter(void);
void eng_pool_leave(void);
int eng_pool_share(int max_tasks);

#endif
