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

/* ------------------------------------------------------------------------ */
/* conv_avx512.c: the AVX-512 microkernel (used when packed)                */
/* ------------------------------------------------------------------------ */

/* Output channels per weight panel. */
#define ENG_PACK_NR 32
/* Output tile side of the Winograd kernel: F(4x4, 3x3). */
#define ENG_WINO_TILE 4

/* True when the CPU (and OS) run AVX-512F code. */
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

/* 3x3 stride-2 pad-1 max pool. out: [n][ho][wo][c], in: [n][h][w][c]. */
void eng_maxpool3x3s2(float *out, const float *in, int n, int h, int w, int c);

/* Global average pool. out: [n][c], in: [n][hw][c]. */
void eng_avgpool(float *out, const float *in, int n, int hw, int c);

/* Fully connected. out: [n][cout] = in [n][cin] x w^T + b; w: [cout][cin]. */
void eng_linear(float *out, const float *in, const float *w, const float *b, int n, int cin,
                int cout);

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
