/* resnet.c: the ResNet family (18/34 basic blocks, 50/101/152 bottlenecks) as
 * torchvision builds it: loading and folding weights, contexts, forward pass. */
#include "engine_impl.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* torchvision's BatchNorm2d default. */
#define BN_EPS 1e-5

/* ------------------------------------------------------------------------ */
/* Model                                                                    */
/* ------------------------------------------------------------------------ */

/* One residual block. The tutorial's four modules map onto this: basic
 * (a), basic with projection (b), bottleneck (c), bottleneck with
 * projection (d). Stride sits on conv1 of a basic block and on the 3x3
 * conv2 of a bottleneck, as in torchvision (ResNet v1.5). */
struct eng_block {
    struct eng_conv c1, c2, c3; /* c3 only in bottlenecks */
    struct eng_conv ds;         /* 1x1 projection + BN; valid when has_ds */
    bool has_ds;
};

struct eng_model {
    struct eng_model_info info;
    struct eng_conv stem; /* 7x7/2, 3 -> 64 */
    int nblocks[4];       /* blocks per stage */
    int total_blocks;
    struct eng_block *blocks; /* [total_blocks], stage by stage */
    int feat;                 /* channels into the classifier: 512 or 2048 */
    float *fc_w;              /* [num_classes][feat] */
    float *fc_b;              /* [num_classes] */
    float *arena;             /* every folded weight, one allocation */
};

static const struct {
    int depth, bottleneck, blocks[4];
} resnet_table[] = {
    {18, 0, {2, 2, 2, 2}},  {34, 0, {3, 4, 6, 3}},  {50, 1, {3, 4, 6, 3}},
    {101, 1, {3, 4, 23, 3}}, {152, 1, {3, 8, 36, 3}},
};

/* ------------------------------------------------------------------------ */
/* Weight sources: a safetensors file, or seeded random numbers             */
/* ------------------------------------------------------------------------ */

enum wkind { W_CONV, W_BN_GAMMA, W_BN_GAMMA_LAST, W_BN_BETA, W_BN_MEAN, W_BN_VAR, W_FC_W, W_FC_B };

struct wsrc {
    const struct st_file *file; /* NULL: random weights from rng */
    const char *what;           /* the file path or random spec, for messages */
    uint64_t rng;
    float *scratch; /* staging for one raw conv weight */
};

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rand_uniform(uint64_t *s) { /* (0, 1) */
    return ((double)(splitmix64(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double rand_normal(uint64_t *s) {
    double u = rand_uniform(s), v = rand_uniform(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Random values shaped like trained ones: He-normal convs, batch norm close
 * to identity, the last BN of each block small so a deep residual stack
 * keeps its activations bounded and the logits differ per image. */
static void random_fill(uint64_t *rng, enum wkind kind, float *dst, int64_t n, int64_t fan_in) {
    for (int64_t i = 0; i < n; i++) {
        double x;
        switch (kind) {
        case W_CONV: x = rand_normal(rng) * sqrt(2.0 / (double)fan_in); break;
        case W_BN_GAMMA: x = 0.5 + rand_uniform(rng); break;
        case W_BN_GAMMA_LAST: x = 0.25 * rand_uniform(rng); break;
        case W_BN_BETA: x = 0.1 * rand_normal(rng); break;
        case W_BN_MEAN: x = 0.1 * rand_normal(rng); break;
        case W_BN_VAR: x = 0.5 + rand_uniform(rng); break;
        case W_FC_W: x = rand_normal(rng) * sqrt(1.0 / (double)fan_in); break;
        default: x = 0.01 * rand_normal(rng); break;
        }
        dst[i] = (float)x;
    }
}

static enum eng_status src_read(struct wsrc *s, const char *name, enum wkind kind, int ndim,
                                const int64_t *shape, float *dst, char *err, size_t errlen) {
    if (s->file) return st_read_f32(s->file, name, ndim, shape, dst, err, errlen);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    random_fill(&s->rng, kind, dst, n, ndim > 1 ? n / shape[0] : 1);
    return ENG_OK;
}

/* ------------------------------------------------------------------------ */
/* Planning: shapes, parameter and FLOP counts, weight arena size           */
/* ------------------------------------------------------------------------ */

static void conv_plan(struct eng_conv *cv, int cin, int cout, int k, int stride) {
    cv->cin = cin;
    cv->cout = cout;
    cv->k = k;
    cv->stride = stride;
    cv->pad = k / 2;
}

static size_t conv_floats(const struct eng_conv *cv) {
    return (size_t)cv->cout * cv->k * cv->k * cv->cin + (size_t)cv->cout;
}

/* n floats rounded up to a whole number of 64-byte lines, so that arrays
 * laid end to end in one aligned allocation each start 64-byte aligned. */
static size_t align16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

/* Floats of cv->w as the chosen kernel lays it out (Winograd: 36 per 3x3). */
static size_t conv_w_floats(const struct eng_conv *cv) {
    const int wa = ENG_WINO_TILE + 2;
    return (size_t)cv->cout * cv->cin * (cv->wino ? wa * wa : cv->k * cv->k);
}

/* Fills every conv's shape from the block counts; returns false on OOM. */
static bool model_plan(struct eng_model *m) {
    m->total_blocks = m->nblocks[0] + m->nblocks[1] + m->nblocks[2] + m->nblocks[3];
    m->blocks = calloc((size_t)m->total_blocks, sizeof *m->blocks);
    if (!m->blocks) return false;
    const int expansion = m->info.bottleneck ? 4 : 1;
    conv_plan(&m->stem, 3, 64, 7, 2);
    int cin = 64, b = 0;
    for (int s = 0; s < 4; s++) {
        int planes = 64 << s;
        for (int i = 0; i < m->nblocks[s]; i++, b++) {
            struct eng_block *blk = &m->blocks[b];
            int stride = (s > 0 && i == 0) ? 2 : 1;
            if (m->info.bottleneck) {
                conv_plan(&blk->c1, cin, planes, 1, 1);
                conv_plan(&blk->c2, planes, planes, 3, stride);
                conv_plan(&blk->c3, planes, planes * 4, 1, 1);
            } else {
                conv_plan(&blk->c1, cin, planes, 3, stride);
                conv_plan(&blk->c2, planes, planes, 3, 1);
            }
            blk->has_ds = stride != 1 || cin != planes * expansion;
            if (blk->has_ds) conv_plan(&blk->ds, cin, planes * expansion, 1, stride);
            cin = planes * expansion;
        }
    }
    m->feat = cin;
    return true;
}

/* Visits every conv of the model in load order. */
#define FOR_EACH_CONV(m, cv, body)                                                                 \
    do {                                                                                           \
        struct eng_conv *cv = &(m)->stem;                                                          \
        body;                                                                                      \
        for (int b_ = 0; b_ < (m)->total_blocks; b_++) {                                           \
            struct eng_block *blk_ = &(m)->blocks[b_];                                             \
            struct eng_conv *list_[4] = {&blk_->c1, &blk_->c2,                                     \
                                         (m)->info.bottleneck ? &blk_->c3 : NULL,                  \
                                         blk_->has_ds ? &blk_->ds : NULL};                         \
            for (int i_ = 0; i_ < 4; i_++)                                                         \
                if ((cv = list_[i_])) {                                                            \
                    body;                                                                          \
                }                                                                                  \
        }                                                                                          \
    } while (0)

static void model_count(struct eng_model *m, int size) {
    int64_t params = 0;
    double flop = 0;
    int h = eng_out_dim(size, 7, 2, 3);
    /* conv params + BN gamma/beta; FLOPs need each conv's output size, so
     * walk the stages with the spatial size alongside. */
    params += (int64_t)conv_floats(&m->stem) - m->stem.cout + 2 * m->stem.cout;
    flop += 2.0 * h * h * m->stem.cout * m->stem.k * m->stem.k * m->stem.cin;
    h = eng_out_dim(h, 3, 2, 1);
    for (int b = 0; b < m->total_blocks; b++) {
        struct eng_block *blk = &m->blocks[b];
        struct eng_conv *list[4] = {&blk->c1, &blk->c2, m->info.bottleneck ? &blk->c3 : NULL,
                                    blk->has_ds ? &blk->ds : NULL};
        int hin = h;
        for (int i = 0; i < 4; i++) {
            struct eng_conv *cv = list[i];
            if (!cv) continue;
            int hi = (i == 3) ? hin : h;
            int ho = eng_out_dim(hi, cv->k, cv->stride, cv->pad);
            params += (int64_t)cv->cout * cv->k * cv->k * cv->cin + 2 * cv->cout;
            flop += 2.0 * ho * ho * cv->cout * cv->k * cv->k * cv->cin;
            if (i < 3) h = ho;
        }
    }
    params += (int64_t)m->info.num_classes * m->feat + m->info.num_classes;
    flop += 2.0 * m->info.num_classes * m->feat;
    m->info.num_params = params;
    m->info.gflop = flop / 1e9;
}

/* ------------------------------------------------------------------------ */
/* Loading: read, fold batch norm, check                                    */
/* ------------------------------------------------------------------------ */

/* Reads conv `wname` and batch norm `bn` and folds them:
 * w'[o][ky][kx][i] = w[o][i][ky][kx] * g[o] / sqrt(var[o] + eps),
 * b'[o] = beta[o] - mean[o] * g[o] / sqrt(var[o] + eps). */
static enum eng_status load_conv_bn(struct wsrc *s, struct eng_conv *cv, const char *wname,
                                    const char *bn, bool last_bn, char *err, size_t errlen) {
    const int co = cv->cout, ci = cv->cin, k = cv->k;
    int64_t wshape[4] = {co, ci, k, k}, vshape[1] = {co};
    float *raw = s->scratch;
    float *vec[4] = {cv->bias, raw + (size_t)co * ci * k * k, raw + (size_t)co * ci * k * k + co,
                     raw + (size_t)co * ci * k * k + 2 * (size_t)co};
    static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    const enum wkind kinds[4] = {last_bn ? W_BN_GAMMA_LAST : W_BN_GAMMA, W_BN_BETA, W_BN_MEAN,
                                 W_BN_VAR};
    enum eng_status st = src_read(s, wname, W_CONV, 4, wshape, raw, err, errlen);
    /* gamma is staged in cv->bias, the rest after the raw weight */
    for (int i = 0; i < 4 && st == ENG_OK; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s.%s", bn, suffix[i]);
        st = src_read(s, name, kinds[i], 1, vshape, vec[i], err, errlen);
    }
    if (st != ENG_OK) return st;
    const float *gamma = cv->bias, *beta = vec[1], *mean = vec[2], *var = vec[3];
    for (int o = 0; o < co; o++) {
        if (!(var[o] >= 0.0f) || !isfinite(var[o]))
            return eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: tensor %s.running_var[%d] is %g",
                            s->what, bn, o, (double)var[o]);
        double scale = (double)gamma[o] / sqrt((double)var[o] + BN_EPS);
        for (int i = 0; i < ci; i++)
            for (int y = 0; y < k; y++)
                for (int x = 0; x < k; x++) {
                    double v = raw[(((size_t)o * ci + i) * k + y) * k + x] * scale;
                    cv->w[(((size_t)o * k + y) * k + x) * ci + i] = (float)v;
                }
        double b = (double)beta[o] - (double)mean[o] * scale;
        cv->bias[o] = (float)b;
        if (!isfinite(cv->bias[o]))
            return eng_errf(ENG_ERR_FORMAT, err, errlen,
                            "%s: tensors %s / %s: folded bias %d is not finite", s->what, wname,
                            bn, o);
    }
    for (size_t i = 0, n = (size_t)co * ci * k * k; i < n; i++)
        if (!isfinite(cv->w[i]))
            return eng_errf(ENG_ERR_FORMAT, err, errlen,
                            "%s: tensor %s: non-finite weight after folding %s", s->what, wname,
                            bn);
    return ENG_OK;
}

static enum eng_status model_load_weights(struct eng_model *m, struct wsrc *s, char *err,
                                          size_t errlen) {
    enum eng_status st = load_conv_bn(s, &m->stem, "conv1.weight", "bn1", false, err, errlen);
    int b = 0;
    for (int stage = 0; stage < 4 && st == ENG_OK; stage++) {
        for (int i = 0; i < m->nblocks[stage] && st == ENG_OK; i++, b++) {
            struct eng_block *blk = &m->blocks[b];
            struct eng_conv *convs[3] = {&blk->c1, &blk->c2, &blk->c3};
            int nconv = m->info.bottleneck ? 3 : 2;
            char wn[96], bn[96];
            for (int c = 0; c < nconv && st == ENG_OK; c++) {
                snprintf(wn, sizeof wn, "layer%d.%d.conv%d.weight", stage + 1, i, c + 1);
                snprintf(bn, sizeof bn, "layer%d.%d.bn%d", stage + 1, i, c + 1);
                st = load_conv_bn(s, convs[c], wn, bn, c == nconv - 1, err, errlen);
            }
            if (st == ENG_OK && blk->has_ds) {
                snprintf(wn, sizeof wn, "layer%d.%d.downsample.0.weight", stage + 1, i);
                snprintf(bn, sizeof bn, "layer%d.%d.downsample.1", stage + 1, i);
                st = load_conv_bn(s, &blk->ds, wn, bn, false, err, errlen);
            }
        }
    }
    if (st != ENG_OK) return st;
    int64_t fw[2] = {m->info.num_classes, m->feat}, fb[1] = {m->info.num_classes};
    st = src_read(s, "fc.weight", W_FC_W, 2, fw, m->fc_w, err, errlen);
    if (st == ENG_OK) st = src_read(s, "fc.bias", W_FC_B, 1, fb, m->fc_b, err, errlen);
    return st;
}

/* Detects block type and counts from the key names of a torchvision/timm
 * state dict. */
static enum eng_status detect_arch(const struct st_file *f, struct eng_model *m, char *err,
                                   size_t errlen) {
    static const char *required[] = {"conv1.weight", "bn1.weight", "fc.weight", "fc.bias"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!st_find(f, required[i]))
            return eng_errf(ENG_ERR_MISSING, err, errlen,
                            "%s: missing tensor %s (not a torchvision/timm ResNet?)", f->path,
                            required[i]);
    m->info.bottleneck = st_find(f, "layer1.0.conv3.weight") != NULL;
    for (int s = 0; s < 4; s++) {
        char name[64];
        int n = 0;
        for (;; n++) {
            snprintf(name, sizeof name, "layer%d.%d.conv1.weight", s + 1, n);
            if (!st_find(f, name) || n > 1000) break;
        }
        if (n == 0) {
            snprintf(name, sizeof name, "layer%d.0.conv1.weight", s + 1);
            return eng_errf(ENG_ERR_MISSING, err, errlen, "%s: missing tensor %s", f->path, name);
        }
        m->nblocks[s] = n;
    }
    m->info.depth = 2 + (m->nblocks[0] + m->nblocks[1] + m->nblocks[2] + m->nblocks[3]) *
                            (m->info.bottleneck ? 3 : 2);
    const struct st_tensor *fc = st_find(f, "fc.weight");
    if (fc->ndim != 2 || fc->shape[0] < 1 || fc->shape[0] > 1000000)
        return eng_errf(ENG_ERR_SHAPE, err, errlen, "%s: tensor fc.weight has %d dims, expected 2",
                        f->path, fc->ndim);
    m->info.num_classes = (int)fc->shape[0];
    snprintf(m->info.dtype, sizeof m->info.dtype, "%s", st_find(f, "conv1.weight")->dtype_name);
    return ENG_OK;
}

/* Reads the preprocessing recorded beside the weights ("x.json" for
 * "x.safetensors"), when there is such a file. */
static enum eng_status load_sidecar(const char *weights, struct eng_preproc *pp, char *err,
                                    size_t errlen) {
    char path[600];
    size_t n = strlen(weights);
    const char *ext = ".safetensors";
    size_t el = strlen(ext);
    if (n > el && !strcmp(weights + n - el, ext))
        snprintf(path, sizeof path, "%.*s.json", (int)(n - el), weights);
    else
        snprintf(path, sizeof path, "%s.json", weights);
    FILE *fp = fopen(path, "rb");
    if (!fp) return ENG_OK;
    json_error_t jerr;
    json_t *root = json_loadf(fp, 0, &jerr);
    fclose(fp);
    if (!root)
        return eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: %s (line %d)", path, jerr.text, jerr.line);
    enum eng_status st = ENG_OK;
    json_t *v;
    if ((v = json_object_get(root, "resize"))) pp->resize = (int)json_integer_value(v);
    if ((v = json_object_get(root, "crop"))) pp->crop = (int)json_integer_value(v);
    /* the two-valued string keys: the key, its values (as enum 0 and 1) */
    static const struct {
        const char *key, *value[2];
    } choices[2] = {{"interpolation", {"bilinear", "bicubic"}}, {"decode", {"fast", "exact"}}};
    int chosen[2] = {(int)pp->interp, (int)pp->decode};
    for (int k = 0; k < 2 && st == ENG_OK; k++) {
        if (!(v = json_object_get(root, choices[k].key))) continue;
        const char *s = json_string_value(v);
        if (s && !strcmp(s, choices[k].value[0]))
            chosen[k] = 0;
        else if (s && !strcmp(s, choices[k].value[1]))
            chosen[k] = 1;
        else
            st = eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: %s must be \"%s\" or \"%s\"", path,
                          choices[k].key, choices[k].value[0], choices[k].value[1]);
    }
    pp->interp = chosen[0] ? ENG_INTERP_BICUBIC : ENG_INTERP_BILINEAR;
    pp->decode = chosen[1] ? ENG_DECODE_EXACT : ENG_DECODE_FAST;
    static const char *keys[2] = {"mean", "std"};
    float *dst[2] = {pp->mean, pp->std};
    for (int k = 0; k < 2 && st == ENG_OK; k++) {
        if (!(v = json_object_get(root, keys[k]))) continue;
        if (json_array_size(v) != 3) {
            st = eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: %s needs 3 numbers", path, keys[k]);
            break;
        }
        for (int c = 0; c < 3; c++) dst[k][c] = (float)json_number_value(json_array_get(v, (size_t)c));
    }
    if (st == ENG_OK && (pp->resize < 1 || pp->resize > 4096 || pp->crop < 32 ||
                         pp->crop > pp->resize || !(pp->std[0] > 0 && pp->std[1] > 0 && pp->std[2] > 0)))
        st = eng_errf(ENG_ERR_FORMAT, err, errlen,
                      "%s: needs 32 <= crop <= resize <= 4096 and positive std", path);
    json_decref(root);
    return st;
}

static enum eng_status parse_random_spec(const char *spec, struct eng_model *m, char *err,
                                         size_t errlen) {
    const char *p = spec + strlen("random:");
    int depth = 0, used = 0;
    unsigned long long seed = 0;
    if (sscanf(p, "resnet%d%n", &depth, &used) != 1)
        goto bad;
    p += used;
    if (*p == ':') {
        char *end;
        if (p[1] < '0' || p[1] > '9') goto bad;
        seed = strtoull(p + 1, &end, 10);
        if (*end) goto bad;
    } else if (*p) {
        goto bad;
    }
    for (size_t i = 0; i < sizeof resnet_table / sizeof resnet_table[0]; i++)
        if (resnet_table[i].depth == depth) {
            m->info.depth = depth;
            m->info.bottleneck = resnet_table[i].bottleneck;
            memcpy(m->nblocks, resnet_table[i].blocks, sizeof m->nblocks);
            m->info.num_classes = 1000;
            m->info.random = 1;
            m->info.seed = seed;
            snprintf(m->info.dtype, sizeof m->info.dtype, "F32");
            snprintf(m->info.source, sizeof m->info.source, "random:resnet%d:%llu", depth, seed);
            return ENG_OK;
        }
bad:
    return eng_errf(ENG_ERR_ARG, err, errlen,
                    "model \"%s\": expected random:resnetD[:SEED] with D one of 18, 34, 50, 101, "
                    "152",
                    spec);
}

static enum eng_kernel kernel_choice = ENG_KERNEL_AUTO;
static bool int8_amx = true;

void eng_int8_allow_amx(bool allow) {
    int8_amx = allow;
}

const char *eng_precision_name(enum eng_precision p) {
    return p == ENG_PRECISION_FP32 ? "fp32" : p == ENG_PRECISION_INT8 ? "int8" : "?";
}

enum eng_status eng_precision_parse(const char *s, enum eng_precision *out, char *err,
                                    size_t errlen) {
    if (s && !strcmp(s, "fp32")) {
        *out = ENG_PRECISION_FP32;
    } else if (s && !strcmp(s, "int8")) {
        *out = ENG_PRECISION_INT8;
    } else {
        return eng_errf(ENG_ERR_ARG, err, errlen, "precision must be fp32 or int8, got \"%s\"",
                        s ? s : "");
    }
    return ENG_OK;
}

enum eng_status eng_precision_supported(enum eng_precision p, char *err, size_t errlen) {
    if (p == ENG_PRECISION_FP32) return ENG_OK;
    if (p != ENG_PRECISION_INT8) return eng_errf(ENG_ERR_ARG, err, errlen, "unknown precision %d", (int)p);
    const char *why;
    if (!eng_isa_available(ENG_ISA_AVX512_VNNI, &why))
        return eng_errf(ENG_ERR_UNSUPPORTED, err, errlen,
                        "int8 needs a CPU with AVX-512 VNNI (cpuid avx512_vnni and avx512bw), "
                        "and %s; there is no slower int8 path: use fp32",
                        why);
    return ENG_OK;
}

enum eng_status eng_set_kernel(enum eng_kernel k) {
    if (k != ENG_KERNEL_AUTO && k != ENG_KERNEL_OPENBLAS && k != ENG_KERNEL_AVX512)
        return ENG_ERR_ARG;
    if (k == ENG_KERNEL_AVX512 && !eng_avx512_available()) return ENG_ERR_UNSUPPORTED;
    kernel_choice = k;
    return ENG_OK;
}

/* Picks each conv's kernel before the weight arena is laid out: the AVX-512
 * kernel when chosen and present (Winograd for stride-1 3x3 convs), else
 * OpenBLAS; in int8, the VNNI or AMX kernels for every conv, the stem
 * reading its input back as 8-bit pixels (eng_quantize_input). */
static void model_choose_kernels(struct eng_model *m, enum eng_precision prec) {
    bool avx512 = kernel_choice != ENG_KERNEL_OPENBLAS && eng_avx512_available();
    bool amx = prec == ENG_PRECISION_INT8 && int8_amx && eng_amx_available();
    snprintf(m->info.kernel, sizeof m->info.kernel, "%s",
             prec == ENG_PRECISION_INT8 ? (amx ? "amx" : "avx512vnni")
             : avx512                   ? "avx512"
                                        : "openblas");
    FOR_EACH_CONV(m, cv, {
        cv->int8 = prec == ENG_PRECISION_INT8 && (cv != &m->stem || eng_i8_wide_fits(cv));
        cv->wide = cv->int8 && cv == &m->stem;
        cv->amx = cv->int8 && amx && (cv->wide || eng_amx_fits(cv));
        cv->packed = !cv->int8 && avx512 && cv->cout % ENG_PACK_NR == 0;
        cv->wino = cv->packed && cv->k == 3 && cv->stride == 1 && cv->pad == 1 &&
                   cv->cin % 16 == 0;
    });
}

/* An int8 conv's quantized weights and scales, in place of its fp32
 * weights: [cout][kdim4] bytes, then [cout] floats, fit in [cout][kdim]
 * floats for every kdim >= 4. */
static size_t int8_bytes(const struct eng_conv *cv) {
    const size_t channels = (size_t)cv->cout * (cv->wide && cv->amx ? 2 : 1); /* hi and lo */
    return (channels * eng_i8_kdim4(cv) + 63) / 64 * 64 + sizeof(float) * cv->cout;
}

/* The int8 stem reads 8-bit pixels q = 255 (x std + mean), not the
 * normalized x (eng_quantize_input): x = (q - 255 mean) / (255 std). Before
 * quantizing (after = false), each weight takes 1 / (255 std) of its input
 * channel (w: [cout][k][k][3], the loaded weights); after, the bias takes
 * - sum of w' * 255 mean over the quantized w': with the exact weights
 * instead, every channel would keep their rounding times the mean pixel
 * (about 120) as an offset, where now it multiplies a centered x. */
static void stem_reads_pixels(struct eng_conv *cv, float *w, const struct eng_preproc *pp,
                              bool after) {
    const int taps = cv->k * cv->k;
    for (int o = 0; o < cv->cout; o++) {
        double shift = 0;
        for (int t = 0; t < taps; t++)
            for (int c = 0; c < 3; c++) {
                const int k = t * 3 + c;
                if (!after)
                    w[(size_t)o * taps * 3 + k] /= 255.0f * pp->std[c];
                else
                    shift += (double)eng_i8_weight_at(cv, o, k) * cv->wscale[o] * (255.0 * pp->mean[c]);
            }
        if (after) cv->bias[o] = (float)(cv->bias[o] - shift);
    }
}

/* Re-lays the loaded weights (cv->w: [cout][k][k][cin]) as the chosen kernel
 * reads them; scratch holds at least one conv's weights. */
static void model_pack(struct eng_model *m, float *scratch) {
    FOR_EACH_CONV(m, cv, {
        if (cv->int8) {
            size_t kdim = (size_t)cv->k * cv->k * cv->cin;
            memcpy(scratch, cv->w, sizeof(float) * cv->cout * kdim);
            if (cv == &m->stem) stem_reads_pixels(cv, scratch, &m->info.preproc, false);
            cv->wq = (int8_t *)cv->w;
            cv->wscale = (float *)((char *)cv->w + int8_bytes(cv) - sizeof(float) * cv->cout);
            if (cv->wide)
                eng_i16_quantize_weights(cv->wq, cv->wscale, scratch, cv->cout, (int)kdim, cv->amx);
            else
                eng_i8_quantize_weights(cv->wq, cv->wscale, scratch, cv->cout, (int)kdim);
            if (cv == &m->stem) stem_reads_pixels(cv, scratch, &m->info.preproc, true);

        } else if (cv->packed) {
            size_t kdim = (size_t)cv->k * cv->k * cv->cin;
            memcpy(scratch, cv->w, sizeof(float) * cv->cout * kdim);
            if (cv->wino)
                eng_pack_winograd(cv->w, scratch, cv->cout, cv->cin);
            else
                eng_pack_weights(cv->w, scratch, cv->cout, (int)kdim);
        }
    });
}

enum eng_status eng_model_load(const char *spec, struct eng_model **out, char *err,
                               size_t errlen) {
    return eng_model_load_ex(spec, ENG_PRECISION_FP32, out, err, errlen);
}

enum eng_status eng_model_load_ex(const char *spec, enum eng_precision prec,
                                  struct eng_model **out, char *err, size_t errlen) {
    *out = NULL;
    if (!spec || !*spec) return eng_errf(ENG_ERR_ARG, err, errlen, "no model given");
    enum eng_status pst = eng_precision_supported(prec, err, errlen);
    if (pst != ENG_OK) return pst;
    struct eng_model *m = calloc(1, sizeof *m);
    if (!m) return eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory");
    eng_preproc_default(&m->info.preproc);
    struct st_file file = {0};
    struct wsrc src = {.what = spec};
    enum eng_status st;
    if (!strncmp(spec, "random:", 7)) {
        st = parse_random_spec(spec, m, err, errlen);
        src.rng = m->info.seed ^ 0x5eed5eed5eed5eedull;
    } else {
        st = st_open(spec, &file, err, errlen);
        if (st == ENG_OK) st = detect_arch(&file, m, err, errlen);
        if (st == ENG_OK) st = load_sidecar(spec, &m->info.preproc, err, errlen);
        snprintf(m->info.source, sizeof m->info.source, "%s", spec);
        src.file = &file;
    }
    if (st != ENG_OK) goto fail;
    snprintf(m->info.arch, sizeof m->info.arch, "resnet%d", m->info.depth);
    if (!model_plan(m)) {
        st = eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory");
        goto fail;
    }
    /* One arena for every folded weight; scratch sized for the largest raw
     * conv weight plus its three BN vectors. */
    size_t total = 0, scratch = 0;
    model_choose_kernels(m, prec);
    snprintf(m->info.precision, sizeof m->info.precision, "%s", eng_precision_name(prec));
    FOR_EACH_CONV(m, cv, {
        if (cv->int8 && (cv->cout % ENG_PACK_NR ||
                         int8_bytes(cv) > sizeof(float) * align16(conv_w_floats(cv)))) {
            st = eng_errf(ENG_ERR_UNSUPPORTED, err, errlen,
                          "%s: int8 needs output channels in multiples of %d (a conv has %d)",
                          spec, ENG_PACK_NR, cv->cout);
            goto fail;
        }
        /* each conv's w and bias 64-byte aligned */
        total += align16(conv_w_floats(cv)) + align16((size_t)cv->cout);
        size_t need = conv_floats(cv) + 3 * (size_t)cv->cout;
        if (need > scratch) scratch = need;
    });
    total += (size_t)m->info.num_classes * m->feat + m->info.num_classes;
    total = align16(total);
    m->arena = aligned_alloc(64, total * sizeof(float));
    src.scratch = malloc(scratch * sizeof(float));
    if (!m->arena || !src.scratch) {
        st = eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory for %zu weights", total);
        goto fail;
    }
    float *p = m->arena;
    FOR_EACH_CONV(m, cv, {
        cv->w = p;
        p += align16(conv_w_floats(cv));
        cv->bias = p;
        p += align16((size_t)cv->cout);
    });
    m->fc_w = p;
    m->fc_b = p + (size_t)m->info.num_classes * m->feat;
    st = model_load_weights(m, &src, err, errlen);
    if (st != ENG_OK) goto fail;
    model_pack(m, src.scratch);
    model_count(m, m->info.preproc.crop);
    free(src.scratch);
    st_close(&file);
    *out = m;
    return ENG_OK;
fail:
    free(src.scratch);
    if (file.map) st_close(&file);
    eng_model_free(m);
    return st;
}

void eng_model_free(struct eng_model *m) {
    if (!m) return;
    free(m->arena);
    free(m->blocks);
    free(m);
}

const struct eng_model_info *eng_model_get_info(const struct eng_model *m) {
    return &m->info;
}

/* ------------------------------------------------------------------------ */
/* Contexts                                                                 */
/* ------------------------------------------------------------------------ */

/* Four rotating activation buffers, plus the handoff buffer between the
 * early and the late stages (see eng_ctx_forward), plus the place in it
 * where the early stages write the image they run. */
#define NBUF 4
#define HANDOFF NBUF
#define HANDOFF_AT (NBUF + 1)
/* Images per pass through the early stages: one keeps their large
 * activations in cache instead of streaming a whole batch through memory. */
#define EARLY_IMAGES 1

struct eng_ctx {
    const struct eng_model *m;
    int max_batch, size;
    int ntasks;          /* tasks per convolution: the pool size at creation */
    int late;            /* first block of the late stages (layer3) */
    size_t handoff_img;  /* floats per image of the early stages' output */
    float *buf[NBUF + 2]; /* rotating activations (NHWC), the handoff, a place in it */
    float *col;          /* im2col scratch */
    float *pooled;       /* [max_batch][feat] */
    /* int8 only (NULL in fp32): u8 copies of activation buffers, made when
     * a conv needs one; the block input keeps its copy while the convs of
     * its block run, so two suffice. */
    uint8_t *q[2];       /* [act] each: buf[qof[i]] quantized per image */
    int qof[2];          /* which buf q[i] holds, -1 for none */
    float *qscale[2];    /* [max_batch]: per-image scale of q[i] */
    float *qmax;         /* [max_batch]: per-image maxima of buf[max_of] */
    float *hmax;         /* [max_batch]: the handoff's, as the early stages left them */
    int max_of;          /* the buffer the last int8 conv wrote, -1 for none */
    int32_t *accmax;     /* [max_batch][feat]: per-channel maxima of s32 sums */
    float *tslots;       /* eng_i8_slot_bytes(ntasks, max_batch, feat): tasks' maxima */
    float *mem;          /* the single allocation behind all of the above */
    size_t bytes;
};

/* Workspace sizes for batches of n at input size x size: the largest
 * activation of the early stages for EARLY_IMAGES images and of the late
 * stages for n (floats per rotating buffer), the early output per image,
 * and the largest im2col scratch. */
static void ctx_measure(const struct eng_model *m, int late, int n, int size, int ntasks,
                        size_t *act, size_t *handoff_img, size_t *col) {
    size_t early_max = (size_t)3 * size * size, late_max = 0, c = 0;
    int batch = EARLY_IMAGES < n ? EARLY_IMAGES : n;
#define NOTE(cv, hin, hout)                                                                        \
    do {                                                                                           \
        size_t o_ = (size_t)(cv)->cout * (hout) * (hout);                                          \
        size_t *mx_ = b_ < late ? &early_max : &late_max;                                          \
        if (o_ > *mx_) *mx_ = o_;                                                                  \
        size_t c_ = eng_conv_col_floats((cv), batch, (hin), (hin), ntasks);                        \
        if (c_ > c) c = c_;                                                                        \
    } while (0)
    int b_ = -1;
    int h = eng_out_dim(size, 7, 2, 3);
    NOTE(&m->stem, size, h);
    h = eng_out_dim(h, 3, 2, 1);
    *handoff_img = (size_t)m->stem.cout * h * h; /* when every block is late */
    for (b_ = 0; b_ < m->total_blocks; b_++) {
        const struct eng_block *blk = &m->blocks[b_];
        const struct eng_conv *list[3] = {&blk->c1, &blk->c2, m->info.bottleneck ? &blk->c3 : NULL};
        if (b_ == late) batch = n;
        int hin = h;
        for (int i = 0; i < 3 && list[i]; i++) {
            int ho = eng_out_dim(h, list[i]->k, list[i]->stride, list[i]->pad);
            NOTE(list[i], h, ho);
            h = ho;
        }
        if (blk->has_ds) NOTE(&blk->ds, hin, h);
        if (b_ == late - 1) *handoff_img = (size_t)(m->info.bottleneck ? blk->c3.cout : blk->c2.cout) * h * h;
    }
#undef NOTE
    size_t e = early_max * (size_t)(EARLY_IMAGES < n ? EARLY_IMAGES : n), l = late_max * (size_t)n;
    *act = e > l ? e : l;
    *col = c;
}

enum eng_status eng_ctx_new(const struct eng_model *m, int max_batch, int size,
                            struct eng_ctx **out, char *err, size_t errlen) {
    *out = NULL;
    if (!m || max_batch < 1 || max_batch > 4096 || size < 32 || size > 4096)
        return eng_errf(ENG_ERR_ARG, err, errlen,
                        "context: need 1 <= max_batch <= 4096 (got %d) and 32 <= size <= 4096 "
                        "(got %d)",
                        max_batch, size);
    struct eng_ctx *c = calloc(1, sizeof *c);
    if (!c) return eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory");
    c->m = m;
    c->max_batch = max_batch;
    c->size = size;
    c->ntasks = eng_get_threads() > 1 ? eng_get_threads() : 1;
    /* the late stages (layer3, layer4) hold most weights and small
     * activations: they gain from batching; the early ones do not */
    c->late = m->nblocks[0] + m->nblocks[1];
    size_t act_floats, col_floats;
    ctx_measure(m, c->late, max_batch, size, c->ntasks, &act_floats, &c->handoff_img, &col_floats);
    /* round each region to 16 floats so every buffer is 64-byte aligned */
    size_t act = align16(act_floats), col = align16(col_floats);
    size_t handoff = align16(c->handoff_img * max_batch);
    size_t pooled = align16((size_t)max_batch * m->feat);
    const bool int8 = !strcmp(m->info.precision, "int8");
    /* int8: two u8 buffers (for any activation buffer, the handoff too), two
     * scale vectors, the maxima and the task slots */
    size_t qelems = act_floats > c->handoff_img * max_batch ? act_floats : c->handoff_img * max_batch;
    size_t qbuf = int8 ? align16((qelems + 3) / 4) : 0;
    size_t qvec = int8 ? align16((size_t)max_batch) : 0;
    size_t slots = int8 ? align16(eng_i8_slot_bytes(c->ntasks, max_batch, m->feat) / 4) : 0;
    size_t accmax = int8 ? align16((size_t)max_batch * m->feat) : 0;
    size_t floats = NBUF * act + handoff + col + pooled + 2 * qbuf + 4 * qvec + slots + accmax;
    c->bytes = floats * sizeof(float);
    c->mem = aligned_alloc(64, c->bytes);
    if (!c->mem) {
        free(c);
        return eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory for a %zu MB workspace",
                        (floats * sizeof(float)) >> 20);
    }
    for (int i = 0; i < NBUF; i++) c->buf[i] = c->mem + (size_t)i * act;
    c->buf[HANDOFF] = c->mem + NBUF * act;
    c->col = c->buf[HANDOFF] + handoff;
    c->pooled = c->col + col;
    float *p = c->pooled + pooled;
    for (int i = 0; i < 2 && int8; i++) {
        c->q[i] = (uint8_t *)p;
        p += qbuf;
        c->qscale[i] = p;
        p += qvec;
    }
    if (int8) {
        c->qmax = p;
        c->hmax = p + qvec;
        c->tslots = p + 2 * qvec;
        c->accmax = (int32_t *)(c->tslots + slots);
    }
    *out = c;
    return ENG_OK;
}

void eng_ctx_free(struct eng_ctx *c) {
    if (!c) return;
    free(c->mem);
    free(c);
}

size_t eng_ctx_workspace_bytes(const struct eng_ctx *c) {
    return c->bytes;
}

/* ------------------------------------------------------------------------ */
/* Forward pass                                                             */
/* ------------------------------------------------------------------------ */

/* Index of the first rotating buffer not in the used mask (the handoff
 * buffer is never scratch). */
static int free_buf(unsigned used) {
    for (int i = 0; i < NBUF; i++)
        if (!(used & (1u << i))) return i;
    return -1; /* unreachable: a block holds at most three live buffers */
}

/* The u8 copy of buf[in] (n images of img_len values) for an int8 conv,
 * made now unless one is current; it never replaces the copy of buf[keep]
 * (the block input, which its projection shortcut still reads). The
 * maxima come from the conv that wrote buf[in] when it was int8. Returns
 * the slot. */
/* The u8 slot to overwrite for a copy of buf[in]: never the block input's. */
static int spare_slot(const struct eng_ctx *c, int in, int keep) {
    return c->qof[0] == keep && keep != in ? 1 : 0;
}

/* defer: NULL, or [n] for the inverse scales when the copy is to be made
 * by the conv's own tasks (eng_i8_epi.src); *deferred says whether it is. */
static int quantized(struct eng_ctx *c, int in, int keep, int n, size_t img_len, float *defer,
                     bool *deferred) {
    *deferred = false;
    for (int i = 0; i < 2; i++)
        if (c->qof[i] == in) return i;
    int s = spare_slot(c, in, keep);
    if (c->max_of != in) {
        for (int i = 0; i < n; i++) c->qmax[i] = eng_max_f32(c->buf[in] + i * img_len, img_len);
        c->max_of = in;
    }
    if (defer) {
        for (int i = 0; i < n; i++) eng_i8_scale(c->qmax[i], &c->qscale[s][i], &defer[i]);
        *deferred = true;
    } else {
        eng_quantize_images(c->q[s], c->qscale[s], c->buf[in], c->qmax, n, img_len,
                            eng_pool_share(c->ntasks));
    }
    c->qof[s] = in; /* complete once the conv has run, when deferred */
    return s;
}

/* buf[out] = act(conv(buf[in]) + bias (+ buf[res] when res >= 0)), n images
 * of hin x hin, in the model's precision; keep: the block input. u8_only:
 * the next conv is the output's only reader (a ReLU conv without shortcut):
 * in int8 it gets the output as u8 only, quantized in the same pass that
 * applies the epilogue, and buf[out] holds s32 sums, not floats. */
static void block_conv(struct eng_ctx *c, int n, int out, int in, const struct eng_conv *cv,
                       int hin, int res, bool relu, int keep, bool u8_only) {
    float **buf = c->buf;
    const float *r = res >= 0 ? buf[res] : NULL;
    if (!cv->int8) {
        eng_conv_forward(buf[out], buf[in], cv, n, hin, hin, r, relu, c->col,
                         eng_pool_share(c->ntasks));
        return;
    }
    /* a 1x1 stride-1 conv makes its input's u8 copy in its own tasks */
    const bool direct = cv->k == 1 && cv->stride == 1 && cv->pad == 0;
    float inv[n];
    bool deferred;
    int s = quantized(c, in, keep, n, (size_t)cv->cin * hin * hin, direct ? inv : NULL, &deferred);
    const bool fused = u8_only && relu && res < 0;
    /* maxima only where a next conv reads the output as u8 (after ReLU) */
    struct eng_i8_epi e = {.ascale = c->qscale[s], .res = r,
                           .tmax = relu && !fused ? c->qmax : NULL,
                           .accmax = fused ? c->accmax : NULL,
                           .src = deferred ? buf[in] : NULL, .srcinv = inv, .relu = relu};
    eng_conv_forward_int8(buf[out], c->q[s], cv, n, hin, hin, &e, c->col, c->tslots,
                          eng_pool_share(c->ntasks));
    for (int i = 0; i < 2; i++)
        if (c->qof[i] == out) c->qof[i] = -1; /* its copy is stale now */
    if (fused) {
        const int ho = eng_out_dim(hin, cv->k, cv->stride, cv->pad);
        /* any slot but the block input's (its shortcut may still read it);
         * this conv's own input is read no more */
        const int d = c->qof[0] == keep ? 1 : 0;
        eng_requant_images(c->q[d], c->qscale[d], (const int32_t *)buf[out], c->accmax, cv,
                           c->qscale[s], n, ho * ho, eng_pool_share(c->ntasks));
        c->qof[d] = out;
        if (c->max_of == out) c->max_of = -1;
        return;
    }
    if (relu)
        c->max_of = out;
    else if (c->max_of == out)
        c->max_of = -1;
}

/* Runs blocks [b0, b1) on n images whose input (h x h) is in buffer x (its
 * u8 copies as c->qof says); returns the buffer holding the output (the
 * last block writes to buffer last_out when >= 0) and updates *h. */
static int run_blocks(struct eng_ctx *c, int b0, int b1, int n, int x, int last_out, int *h) {
    const struct eng_model *m = c->m;
    int hh = *h;
#define CONV(out, in, cv, hin, res, relu) block_conv(c, n, out, in, cv, hin, res, relu, x, false)
    /* a conv whose output only the next conv reads */
#define CONV_U8(out, in, cv, hin) block_conv(c, n, out, in, cv, hin, -1, true, x, true)
    for (int b = b0; b < b1; b++) {
        const struct eng_block *blk = &m->blocks[b];
        unsigned used = 1u << x;
        int t1 = free_buf(used);
        used |= 1u << t1;
        int ho = eng_out_dim(hh, blk->c1.k, blk->c1.stride, blk->c1.pad);
        CONV_U8(t1, x, &blk->c1, hh);
        int y;
        if (m->info.bottleneck) {
            /* 1x1 reduce, 3x3 (strided), then 1x1 expand + shortcut + ReLU */
            int t2 = free_buf(used);
            used |= 1u << t2;
            int h2 = eng_out_dim(ho, blk->c2.k, blk->c2.stride, blk->c2.pad);
            CONV_U8(t2, t1, &blk->c2, ho);
            int id = x;
            if (blk->has_ds) {
                id = free_buf(used);
                CONV(id, x, &blk->ds, hh, -1, false);
            }
            /* t1 is dead once conv2 has run; on AMX, conv3 writes over
             * its shortcut instead (each output read, then written, by one
             * task: the lines are in cache already, no write-allocate;
             * the VNNI kernel keeps partial sums in its output's place) */
            y = b == b1 - 1 && last_out >= 0 ? last_out : blk->c3.amx ? id : t1;
            CONV(y, t2, &blk->c3, h2, id, true);
            hh = h2;
        } else {
            /* 3x3 (strided), then 3x3 + shortcut + ReLU */
            int id = x;
            if (blk->has_ds) {
                id = free_buf(used);
                used |= 1u << id;
                CONV(id, x, &blk->ds, hh, -1, false);
            }
            y = b == b1 - 1 && last_out >= 0 ? last_out : free_buf(used);
            CONV(y, t1, &blk->c2, ho, id, true);
            hh = ho;
        }
        x = y;
    }
#undef CONV
#undef CONV_U8
    *h = hh;
    return x;
}

/* Pooled rows per band of the int8 stem: 8 need 17 conv rows, 490 KB of
 * fp32 at 224 x 224, which stay in L2 from the conv to the pool. */
#define STEM_BAND 8

/* The int8 stem and its max pool on k images CHW: buf[0] = the pooled
 * fp32 output, qmax = each image's maximum. The input goes back to 8-bit
 * pixels, padded here (the pad is the mean, not a u8 zero), and the conv
 * runs unpadded with scale 1 in bands of output rows, each pooled while in
 * cache: the stem's 3.2 MB of fp32 output per image never goes to memory.
 * A band's first conv row is its previous band's last, computed twice. */
static void stem_int8(struct eng_ctx *c, const float *x, int k) {
    const struct eng_model *m = c->m;
    struct eng_conv stem = m->stem;
    const int size = c->size, side = size + 2 * stem.pad, cout = stem.cout;
    const int h = eng_out_dim(size, stem.k, stem.stride, stem.pad), hp = eng_out_dim(h, 3, 2, 1);
    const int share = eng_pool_share(c->ntasks);
    eng_quantize_input(c->q[0], x, k, size, stem.pad, m->info.preproc.mean, m->info.preproc.std,
                       share);
    stem.pad = 0;
    float one = 1.0f;
    for (int i = 0; i < k; i++) {
        const uint8_t *qi = c->q[0] + (size_t)i * side * side * 3;
        float *pooled = c->buf[0] + (size_t)i * hp * hp * cout, mx = 0.0f;
        for (int py0 = 0; py0 < hp; py0 += STEM_BAND) {
            const int py1 = py0 + STEM_BAND < hp ? py0 + STEM_BAND : hp;
            /* conv rows [cy0, cy1): the pool windows' rows 2py - 1 .. 2py + 1 */
            const int cy0 = 2 * py0 - 1 > 0 ? 2 * py0 - 1 : 0;
            const int cy1 = 2 * py1 < h ? 2 * py1 : h;
            float bmax = 0.0f;
            struct eng_i8_epi e = {.ascale = &one, .tmax = &bmax, .relu = true};
            eng_conv_forward_int8(c->buf[1], qi + (size_t)cy0 * stem.stride * side * 3, &stem, 1,
                                  (cy1 - cy0 - 1) * stem.stride + stem.k, side, &e, c->col,
                                  c->tslots, share);
            eng_maxpool3x3s2_band(pooled + (size_t)py0 * hp * cout, c->buf[1], cy0, h, h, cout, py0,
                                  py1);
            mx = bmax > mx ? bmax : mx; /* every conv row is in some window */
        }
        c->qmax[i] = mx;
    }
}

/* The early stages (stem, layer1, layer2) run EARLY_IMAGES at a time and
 * leave their output in the handoff buffer; the late stages (layer3,
 * layer4), whose weights dominate, then run on the whole batch. */
enum eng_status eng_ctx_forward(struct eng_ctx *c, const float *in, int n, float *logits) {
    if (!c || !in || !logits || n < 1 || n > c->max_batch) return ENG_ERR_ARG;
    const struct eng_model *m = c->m;
    const int size = c->size;
    const size_t plane = (size_t)size * size;
    float **buf = c->buf;
    int h = 0;
    const bool pool_u8 = m->blocks[0].c1.int8 && m->blocks[0].has_ds && c->late > 0;
    bool hmax_ok = m->blocks[0].c1.int8;
    eng_pool_enter();
    for (int i0 = 0; i0 < n; i0 += EARLY_IMAGES) {
        int k = n - i0 < EARLY_IMAGES ? n - i0 : EARLY_IMAGES;
        const float *x0 = in + (size_t)i0 * 3 * plane;
        /* stem: conv 7x7/2 + BN + ReLU, then max pool 3x3/2 */
        h = eng_out_dim(size, 7, 2, 3);
        if (m->stem.int8) {
            stem_int8(c, x0, k);
        } else {
            /* input CHW per image -> NHWC */
            for (int i = 0; i < k; i++) {
                const float *src = x0 + (size_t)i * 3 * plane;
                float *dst = buf[0] + (size_t)i * 3 * plane;
                for (size_t p = 0; p < plane; p++) {
                    dst[3 * p + 0] = src[p];
                    dst[3 * p + 1] = src[plane + p];
                    dst[3 * p + 2] = src[2 * plane + p];
                }
            }
            eng_conv_forward(buf[1], buf[0], &m->stem, k, size, size, NULL, true, c->col,
                             eng_pool_share(c->ntasks));
        }
        c->qof[0] = c->qof[1] = c->max_of = -1;
        if (m->stem.int8) {
            /* pooled already (buf[0]), with its maxima */
            c->max_of = 0;
        } else if (pool_u8) {
            /* only int8 convs read the pool's output (the first block has a
             * projection): pool the stem's u8 copy; buf[0] stays unwritten */
            const size_t len = (size_t)m->stem.cout * h * h;
            for (int i = 0; i < k; i++) c->qmax[i] = eng_max_f32(buf[1] + i * len, len);
            eng_quantize_images(c->q[0], c->qscale[1], buf[1], c->qmax, k, len,
                                eng_pool_share(c->ntasks));
            eng_maxpool3x3s2_u8_tasks(c->q[1], c->q[0], k, h, h, m->stem.cout,
                                      eng_pool_share(c->ntasks));
            c->qof[1] = 0;
        } else {
            eng_maxpool3x3s2(buf[0], buf[1], k, h, h, m->stem.cout);
        }
        h = eng_out_dim(h, 3, 2, 1);
        /* the last early block writes straight into the handoff */
        buf[HANDOFF_AT] = buf[HANDOFF] + (size_t)i0 * c->handoff_img;
        int x = run_blocks(c, 0, c->late, k, 0, HANDOFF_AT, &h);
        if (x != HANDOFF_AT) /* no early blocks: the pool's output */
            memcpy(buf[HANDOFF_AT], buf[x], sizeof(float) * c->handoff_img * k);
        hmax_ok = hmax_ok && x == HANDOFF_AT && c->max_of == HANDOFF_AT;
        if (hmax_ok) memcpy(c->hmax + i0, c->qmax, sizeof(float) * k);
    }
    c->qof[0] = c->qof[1] = c->max_of = -1;
    if (hmax_ok) { /* the late stages' input maxima, kept: no pass over it */
        memcpy(c->qmax, c->hmax, sizeof(float) * n);
        c->max_of = HANDOFF;
    }
    int x = run_blocks(c, c->late, m->total_blocks, n, HANDOFF, -1, &h);
    eng_avgpool(c->pooled, buf[x], n, h * h, m->feat);
    eng_linear(logits, c->pooled, m->fc_w, m->fc_b, n, m->feat, m->info.num_classes,
               strcmp(m->info.kernel, "openblas") != 0, eng_pool_share(c->ntasks));
    eng_pool_leave();
    return ENG_OK;
}
