/* engine.h: public API of the imgclassd inference engine: ResNet models loaded
 * from safetensors, JPEG decoding and torchvision-exact preprocessing, top-k. */
#ifndef ENGINE_H
#define ENGINE_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Status                                                                   */
/* ------------------------------------------------------------------------ */

/* Every fallible function returns one of these and, when the caller passes a
 * buffer, writes a one-line message naming what is wrong (file, tensor,
 * expected and actual shape). Message buffers are caller-owned and may be
 * NULL. */
enum eng_status {
    ENG_OK = 0,
    ENG_ERR_ARG = -1,          /* invalid argument from the caller */
    ENG_ERR_NOMEM = -2,        /* allocation failed */
    ENG_ERR_IO = -3,           /* open, stat, read or mmap failed */
    ENG_ERR_FORMAT = -4,       /* malformed file: safetensors header, labels */
    ENG_ERR_MISSING = -5,      /* a required tensor is absent */
    ENG_ERR_SHAPE = -6,        /* a tensor has the wrong shape */
    ENG_ERR_DTYPE = -7,        /* unsupported tensor dtype */
    ENG_ERR_NOT_JPEG = -8,     /* input is not a JPEG (maybe PNG, GIF, ...) */
    ENG_ERR_IMAGE = -9,        /* corrupt, truncated or empty JPEG */
    ENG_ERR_TOO_LARGE = -10,   /* image dimensions exceed the limits */
    ENG_ERR_UNSUPPORTED = -11, /* a valid JPEG this decoder cannot handle */
    ENG_ERR_CANCELLED = -12,   /* the caller's check stopped the work */
    ENG_ERR_DECODE_LIMIT = -13, /* decoding would cost more than the limits allow */
};

/* Stable lower-case name of a status ("ok", "format", "not_jpeg", ...).
 * Returns a static string. */
const char *eng_status_name(enum eng_status s);

/* ------------------------------------------------------------------------ */
/* Image pipeline (engine/image.c)                                          */
/* ------------------------------------------------------------------------ */

enum eng_interp {
    ENG_INTERP_BILINEAR = 0, /* PIL Image.BILINEAR (antialiased when shrinking) */
    ENG_INTERP_BICUBIC = 1,  /* PIL Image.BICUBIC */
};

/* torchvision evaluation transform: Resize(resize) on the shorter side,
 * CenterCrop(crop), ToTensor, Normalize(mean, std). */
/* How a JPEG becomes pixels before the transform. FAST (the default): a
 * large photo is decoded at a reduced DCT scale (its shorter side kept at
 * least twice the resize target, so the resize still averages), and the
 * EXIF orientation is applied, so phone photos are classified upright.
 * EXACT: torchvision's own pipeline (PIL): every pixel decoded at full
 * size, the EXIF orientation ignored; slower on large photos. Both give
 * the same pixels for a photo that is neither large nor rotated. */
enum eng_decode { ENG_DECODE_FAST = 0, ENG_DECODE_EXACT = 1 };

struct eng_preproc {
    int resize;           /* shorter side after resize, e.g. 256 */
    int crop;             /* square center crop, e.g. 224 */
    enum eng_interp interp;
    float mean[3];        /* per RGB channel, on the [0,1] scale */
    float std[3];
    enum eng_decode decode;
};

/* Fills torchvision's ImageNet defaults: 256, 224, bilinear,
 * mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225). */
void eng_preproc_default(struct eng_preproc *pp);

/* Limits on one decode. The size limits are checked from the JPEG header
 * before any pixel is decoded. The work limits bound what a tiny crafted
 * file can cost: a progressive or arithmetic-coded JPEG may declare 40 MP
 * and hundreds of scans that each revisit every block, so the pixel count
 * alone does not bound CPU or memory. */
struct eng_image_limits {
    int max_width;      /* default 16384 */
    int max_height;     /* default 16384 */
    int64_t max_pixels; /* width * height; default 40000000 */
    /* DCT coefficient memory a multi-scan (progressive) file needs up
     * front, checked from the header; default 192 MiB. */
    int64_t max_coef_bytes;
    /* 8x8 blocks entropy-decoded, summed over every scan (a scan costs the
     * blocks of the components it covers, however few coefficients it
     * refines); default 16000000 (a 12 MP 4:2:0 baseline photo is 0.28 M,
     * its progressive form about 1.5 M). */
    int64_t max_scan_blocks;
    /* Optional: called between rows and scans with the block-scans decoded
     * so far; a non-zero return stops the decode with ENG_ERR_CANCELLED
     * (deadline passed, client gone, a per-request budget spent). Called
     * on the decoding thread; arg is the caller's. */
    int (*check)(void *arg, int64_t scan_blocks);
    void *check_arg;
};
void eng_image_limits_default(struct eng_image_limits *lim);

struct eng_image_info {
    int width, height; /* as stored, before EXIF orientation */
    int components;    /* 1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK */
    int progressive;
    int orientation;   /* EXIF orientation 1..8 (1 when absent) */
};

/* Names the format of a buffer from its magic bytes: "JPEG", "PNG", "GIF",
 * "WebP", "BMP", "TIFF", "HEIF", "AVIF", "ZIP", "PDF", or NULL when unknown.
 * Returns a static string. */
const char *eng_image_sniff(const void *data, size_t len);

/* Reads the JPEG header only. Returns ENG_ERR_NOT_JPEG (message names the
 * format it looks like), ENG_ERR_IMAGE for a broken header, ENG_ERR_TOO_LARGE
 * when over lim (lim may be NULL for the defaults). Thread-safe. */
enum eng_status eng_image_probe(const void *data, size_t len, const struct eng_image_limits *lim,
                                struct eng_image_info *info, char *err, size_t errlen);

/* An 8-bit RGB image. px is [h][w][3], malloc-owned by whoever holds the
 * struct; release with eng_rgb_free. */
struct eng_rgb {
    uint8_t *px;
    int w, h;
};

void eng_rgb_free(struct eng_rgb *img);

/* Decodes a JPEG (baseline or progressive; gray, YCbCr, CMYK, YCCK) to RGB
 * and applies its EXIF orientation. When min_short > 0 and the image is
 * large, it decodes at a reduced DCT scale, but only while the scaled
 * shorter side stays >= min_short. A corrupt or truncated stream is an
 * error, never a gray-filled image. On success *out owns new pixels.
 * Thread-safe. */
enum eng_status eng_image_decode(const void *data, size_t len, const struct eng_image_limits *lim,
                                 int min_short, struct eng_rgb *out, char *err, size_t errlen);

/* Resize + center crop + normalize an RGB image exactly as torchvision does
 * on a PIL image. out is caller-owned, [3][crop][crop] (CHW). Thread-safe. */
enum eng_status eng_image_transform(const struct eng_rgb *img, const struct eng_preproc *pp,
                                    float *out, char *err, size_t errlen);

/* Decode as pp->decode says (FAST: eng_image_decode with min_short =
 * 2 * pp->resize; EXACT: full size, EXIF orientation ignored), then
 * eng_image_transform. out: caller-owned [3][crop][crop]. Thread-safe. */
enum eng_status eng_image_preprocess(const void *data, size_t len, const struct eng_preproc *pp,
                                     const struct eng_image_limits *lim, float *out, char *err,
                                     size_t errlen);

/* ------------------------------------------------------------------------ */
/* Model (engine/safetensors.c, engine/resnet.c)                            */
/* ------------------------------------------------------------------------ */

/* A loaded ResNet: folded weights, read-only after load. One model may be
 * shared by any number of contexts on any number of threads. */
struct eng_model;

struct eng_model_info {
    char arch[16];          /* "resnet50" */
    int depth;              /* 18, 34, 50, 101, 152 */
    int bottleneck;         /* 1 for 50/101/152 */
    int num_classes;        /* from fc.weight */
    int64_t num_params;     /* parameters as stored (BN counted, buffers not) */
    double gflop;           /* multiply-adds x 2 per image at the input size */
    int random;             /* 1 when the weights are seeded random numbers */
    uint64_t seed;          /* the seed, when random */
    char dtype[8];          /* stored dtype of the weights: "F32", "F16", "BF16" */
    char source[512];       /* the path, or "random:resnet50:SEED" */
    struct eng_preproc preproc; /* from a sidecar "<weights>.json" or defaults */
    char kernel[16];        /* convolution kernels: "avx512" or "openblas" */
    char precision[8];      /* arithmetic of the convolutions: "fp32" or "int8" */
};

/* Loads spec: a safetensors path, or "random:resnetD[:SEED]" (D in 18, 34,
 * 50, 101, 152; SEED defaults to 0) for seeded random weights of the right
 * shapes. Detects depth and block type from the keys and the class count
 * from fc.weight; folds batch norm into the convolutions. On success *out
 * is a new model the caller frees with eng_model_free. */
enum eng_status eng_model_load(const char *spec, struct eng_model **out, char *err, size_t errlen);

/* Arithmetic of the convolutions in the residual blocks. FP32 (the
 * default): float throughout. INT8: AVX-512 VNNI kernels; weights quantized
 * per output channel (symmetric s8, after batch-norm folding) at load;
 * activations quantized to u8 per image at run time (scale = the image's
 * largest value / 255), so no calibration data is needed and an image's
 * result does not depend on its batch. The stem, pooling and classifier
 * stay fp32. */
enum eng_precision { ENG_PRECISION_FP32 = 0, ENG_PRECISION_INT8 = 1 };

/* "fp32" or "int8" (a static string; "?" when out of range). */
const char *eng_precision_name(enum eng_precision p);

/* Parses "fp32" or "int8" into *out; ENG_ERR_ARG (message lists the
 * choices) otherwise. */
enum eng_status eng_precision_parse(const char *s, enum eng_precision *out, char *err,
                                    size_t errlen);

/* ENG_OK when this CPU runs p; else ENG_ERR_UNSUPPORTED and a message
 * saying what is missing (int8 needs avx512_vnni and avx512bw; there is no
 * slower int8 fallback). Call at start-up to refuse early. */
enum eng_status eng_precision_supported(enum eng_precision p, char *err, size_t errlen);

/* eng_model_load in the given precision; info.precision tells which. In
 * int8 the stem reads its input back as the 8-bit pixels it was made from
 * (x * std + mean, the model's preprocessing, times 255, rounded): exact
 * for images, while values outside the pixel range [0, 1] saturate.
 * ENG_ERR_UNSUPPORTED (see eng_precision_supported) when the CPU cannot. */
enum eng_status eng_model_load_ex(const char *spec, enum eng_precision p, struct eng_model **out,
                                  char *err, size_t errlen);

/* Which convolution kernels models loaded from now on use. AUTO (the
 * default): the AVX-512 microkernels (weights pre-packed at load) when the
 * CPU has AVX-512F, else OpenBLAS sgemm. OPENBLAS: always sgemm (the portable
 * path). AVX512: ENG_ERR_UNSUPPORTED on a CPU without it. Process-wide; call
 * before loading. Both give the same results within float rounding. */
enum eng_kernel { ENG_KERNEL_AUTO = 0, ENG_KERNEL_OPENBLAS = 1, ENG_KERNEL_AVX512 = 2 };

enum eng_status eng_set_kernel(enum eng_kernel k);

/* Frees a model; every context made from it must be freed first. NULL ok. */
void eng_model_free(struct eng_model *m);

/* Borrowed pointer, valid while the model lives. */
const struct eng_model_info *eng_model_get_info(const struct eng_model *m);

/* ------------------------------------------------------------------------ */
/* Contexts and the forward pass (engine/resnet.c, engine/conv.c)           */
/* ------------------------------------------------------------------------ */

/* A context owns the workspace for batches of up to max_batch images of
 * size x size pixels. A context is used by one thread at a time; distinct
 * contexts on the same model run concurrently. */
struct eng_ctx;

/* Allocates a context (all of its workspace, once). On success *out is new;
 * free with eng_ctx_free before the model. */
enum eng_status eng_ctx_new(const struct eng_model *m, int max_batch, int size,
                            struct eng_ctx **out, char *err, size_t errlen);

void eng_ctx_free(struct eng_ctx *c);

/* Runs n images (1 <= n <= max_batch). in: [n][3][size][size] normalized CHW
 * (as eng_image_transform writes); logits: caller-owned [n][num_classes].
 * Allocates nothing. */
enum eng_status eng_ctx_forward(struct eng_ctx *c, const float *in, int n, float *logits);

/* Bytes of workspace the context holds. */
size_t eng_ctx_workspace_bytes(const struct eng_ctx *c);

/* Starts the engine's compute pool with n threads (n <= 0: one per CPU this
 * process may run on) and returns how many started. Every context's
 * convolutions run as tasks on this one pool, with single-threaded BLAS, so
 * a lone image uses every core and concurrent forward passes share them.
 * Contexts made before the pool exists run in their caller's thread. Call
 * at start-up, before creating contexts, not concurrently with forwards. */
int eng_set_threads(int n);

/* Threads in the compute pool (0 before eng_set_threads). */
int eng_get_threads(void);

/* Stops the pool's threads (for a clean exit); no forward may be running. */
void eng_shutdown(void);

/* ------------------------------------------------------------------------ */
/* Outputs and labels (engine/topk.c, engine/labels.c)                      */
/* ------------------------------------------------------------------------ */

/* probs[i] = softmax(logits)[i], computed stably in double; n classes. */
void eng_softmax(const float *logits, int n, float *probs);

struct eng_pred {
    int index;   /* class index */
    float score; /* softmax probability */
    float logit;
};

/* The k highest logits in descending order (ties: lower index first), with
 * their softmax scores. out: caller-owned [k]. Returns min(k, n). */
int eng_topk(const float *logits, int n, int k, struct eng_pred *out);

/* Class names, one per line. */
struct eng_labels;

/* path NULL: the built-in 1000 ImageNet-1k names. Otherwise one name per
 * line from a UTF-8 text file; expected > 0 requires exactly that many.
 * On success *out is new; free with eng_labels_free. */
enum eng_status eng_labels_load(const char *path, int expected, struct eng_labels **out,
                                char *err, size_t errlen);

void eng_labels_free(struct eng_labels *l);

int eng_labels_count(const struct eng_labels *l);

/* Borrowed string valid while l lives; NULL when i is out of range. */
const char *eng_labels_get(const struct eng_labels *l, int i);

#endif
