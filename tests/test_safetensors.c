/* test_safetensors.c: the weights loader on good and broken files: every bad
 * file fails with a message naming the file and the tensor, never a crash. */
#include "engine.h"
#include "engine_impl.h"
#include "test.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>

static char tmpdir[256];

/* ------------------------------------------------------------------------ */
/* Writing test files                                                       */
/* ------------------------------------------------------------------------ */

struct wt {
    char name[128];
    int ndim;
    int64_t shape[4];
};

/* The key set of a torchvision ResNet-18 (1000 classes), in file order. */
static int resnet18_keys(struct wt *out) {
    int n = 0;
#define ADD(nm, nd, a, b, c, d)                                                                    \
    do {                                                                                           \
        snprintf(out[n].name, sizeof out[n].name, "%s", nm);                                       \
        out[n].ndim = nd;                                                                          \
        out[n].shape[0] = a, out[n].shape[1] = b, out[n].shape[2] = c, out[n].shape[3] = d;        \
        n++;                                                                                       \
    } while (0)
#define ADD_BN(prefix, ch)                                                                         \
    do {                                                                                           \
        static const char *sfx[] = {"weight", "bias", "running_mean", "running_var"};              \
        for (int s_ = 0; s_ < 4; s_++) {                                                           \
            char nm_[128];                                                                          \
            snprintf(nm_, sizeof nm_, "%s.%s", prefix, sfx[s_]);                                   \
            ADD(nm_, 1, ch, 0, 0, 0);                                                              \
        }                                                                                          \
    } while (0)
    ADD("conv1.weight", 4, 64, 3, 7, 7);
    ADD_BN("bn1", 64);
    int cin = 64;
    for (int s = 0; s < 4; s++) {
        int planes = 64 << s;
        for (int b = 0; b < 2; b++) {
            char p[96];
            snprintf(p, sizeof p, "layer%d.%d.conv1.weight", s + 1, b);
            ADD(p, 4, planes, b ? planes : cin, 3, 3);
            snprintf(p, sizeof p, "layer%d.%d.bn1", s + 1, b);
            ADD_BN(p, planes);
            snprintf(p, sizeof p, "layer%d.%d.conv2.weight", s + 1, b);
            ADD(p, 4, planes, planes, 3, 3);
            snprintf(p, sizeof p, "layer%d.%d.bn2", s + 1, b);
            ADD_BN(p, planes);
            if (s > 0 && b == 0) {
                snprintf(p, sizeof p, "layer%d.0.downsample.0.weight", s + 1);
                ADD(p, 4, planes, cin, 1, 1);
                snprintf(p, sizeof p, "layer%d.0.downsample.1", s + 1);
                ADD_BN(p, planes);
            }
        }
        cin = planes;
    }
    ADD("fc.weight", 2, 1000, 512, 0, 0);
    ADD("fc.bias", 1, 1000, 0, 0, 0);
#undef ADD
#undef ADD_BN
    return n;
}

/* How to spoil a file: skip a tensor, change its shape or dtype. */
struct spoil {
    const char *skip;
    const char *reshape; /* first dim + 1 */
    const char *dtype_of;
    const char *dtype;
    const char *nan_in;
};

/* Writes a ResNet-18 safetensors file with small deterministic weights
 * (variances 1) in dtype F32, F16 or BF16. Returns 0 on success. */
static int write_resnet18(const char *path, const char *dtype, const struct spoil *sp) {
    static struct wt keys[200];
    int n = resnet18_keys(keys);
    json_t *hdr = json_object();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        struct wt *k = &keys[i];
        if (sp && sp->skip && !strcmp(sp->skip, k->name)) continue;
        int64_t numel = 1;
        json_t *shape = json_array();
        for (int d = 0; d < k->ndim; d++) {
            int64_t v = k->shape[d] + (d == 0 && sp && sp->reshape && !strcmp(sp->reshape, k->name));
            json_array_append_new(shape, json_integer(v));
            numel *= v;
        }
        const char *dt = (sp && sp->dtype_of && !strcmp(sp->dtype_of, k->name)) ? sp->dtype : dtype;
        size_t bytes = (size_t)numel * (size_t)(!strcmp(dt, "F32") || !strcmp(dt, "I32") ? 4 : 2);
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(dt));
        json_object_set_new(e, "shape", shape);
        json_t *offs = json_array();
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + bytes)));
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(hdr, k->name, e);
        off += bytes;
    }
    /* torchvision also writes this buffer; the loader must ignore it */
    json_t *e = json_object();
    json_object_set_new(e, "dtype", json_string("I64"));
    json_object_set_new(e, "shape", json_array());
    json_t *offs = json_array();
    json_array_append_new(offs, json_integer((json_int_t)off));
    json_array_append_new(offs, json_integer((json_int_t)off + 8));
    json_object_set_new(e, "data_offsets", offs);
    json_object_set_new(hdr, "bn1.num_batches_tracked", e);
    off += 8;
    char *h = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    FILE *f = fopen(path, "wb");
    if (!f || !h) return -1;
    uint64_t hl = strlen(h);
    for (int i = 0; i < 8; i++) fputc((int)((hl >> (8 * i)) & 0xff), f);
    fwrite(h, 1, hl, f);
    free(h);
    /* data: a fixed pseudo-random sequence; var = 1 keeps BN foldable */
    uint32_t s = 12345;
    for (int i = 0; i < n; i++) {
        struct wt *k = &keys[i];
        if (sp && sp->skip && !strcmp(sp->skip, k->name)) continue;
        int64_t numel = 1;
        for (int d = 0; d < k->ndim; d++)
            numel *= k->shape[d] + (d == 0 && sp && sp->reshape && !strcmp(sp->reshape, k->name));
        bool var = strstr(k->name, "running_var") != NULL;
        const char *dt = (sp && sp->dtype_of && !strcmp(sp->dtype_of, k->name)) ? sp->dtype : dtype;
        for (int64_t j = 0; j < numel; j++) {
            s = s * 1103515245u + 12345u;
            float v = var ? 1.0f : ((float)((s >> 9) & 0xffff) / 65536.0f - 0.5f) * 0.1f;
            if (sp && sp->nan_in && !strcmp(sp->nan_in, k->name) && j == 3) v = NAN;
            uint32_t bits;
            memcpy(&bits, &v, 4);
            if (!strcmp(dt, "F32") || !strcmp(dt, "I32")) {
                fwrite(&v, 4, 1, f);
            } else {
                /* BF16 truncation is fine for test data; F16 via a simple
                 * conversion of values well inside its normal range */
                uint16_t hv;
                if (!strcmp(dt, "BF16")) {
                    hv = (uint16_t)(bits >> 16);
                } else {
                    uint32_t sign = (bits >> 16) & 0x8000;
                    int exp = (int)((bits >> 23) & 0xff) - 127 + 15;
                    uint32_t man = (bits >> 13) & 0x3ff;
                    hv = v == 0.0f || exp <= 0 ? (uint16_t)sign : (uint16_t)(sign | (uint32_t)exp << 10 | man);
                }
                fwrite(&hv, 2, 1, f);
            }
        }
    }
    uint64_t nbt = 0;
    fwrite(&nbt, 8, 1, f);
    return fclose(f);
}

/* Writes raw bytes: an 8-byte length, a header text, then data_len zero
 * bytes. hlen_override != 0 replaces the length field. */
static int write_raw(const char *path, const char *header, uint64_t hlen_override,
                     size_t data_len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint64_t hl = hlen_override ? hlen_override : strlen(header);
    for (int i = 0; i < 8; i++) fputc((int)((hl >> (8 * i)) & 0xff), f);
    fputs(header, f);
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    return fclose(f);
}

static void path_in_tmp(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* Loads path expecting failure with status want and a message containing
 * every string in needles (NULL-terminated). */
static int expect_fail(const char *path, enum eng_status want, const char **needles, char *why,
                       size_t whylen) {
    struct eng_model *m = NULL;
    char err[512] = "";
    enum eng_status st = eng_model_load(path, &m, err, sizeof err);
    if (st == ENG_OK) {
        eng_model_free(m);
        snprintf(why, whylen, "loaded a bad file");
        return 0;
    }
    if (m) {
        snprintf(why, whylen, "model pointer set on failure");
        return 0;
    }
    if (st != want) {
        snprintf(why, whylen, "status %s, expected %s (%s)", eng_status_name(st),
                 eng_status_name(want), err);
        return 0;
    }
    for (int i = 0; needles[i]; i++)
        if (!strstr(err, needles[i])) {
            snprintf(why, whylen, "message \"%s\" does not name \"%s\"", err, needles[i]);
            return 0;
        }
    return 1;
}

#define EXPECT_FAIL(path, st, ...)                                                                 \
    do {                                                                                           \
        const char *needles_[] = {path, __VA_ARGS__, NULL};                                        \
        char why_[700];                                                                            \
        CHECK(expect_fail(path, st, needles_, why_, sizeof why_), "%s", why_);                     \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Cases                                                                    */
/* ------------------------------------------------------------------------ */

static void test_half_conversion(void) {
    CHECK(eng_f16_to_f32(0x3c00) == 1.0f);
    CHECK(eng_f16_to_f32(0xc000) == -2.0f);
    CHECK(eng_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(eng_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "smallest subnormal");
    CHECK(eng_f16_to_f32(0x0200) == ldexpf(1.0f, -15), "subnormal");
    CHECK(isinf(eng_f16_to_f32(0x7c00)));
    CHECK(isnan(eng_f16_to_f32(0x7e00)));
    CHECK(eng_f16_to_f32(0x8000) == 0.0f && signbit(eng_f16_to_f32(0x8000)));
    CHECK(eng_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(eng_bf16_to_f32(0x4049) == 3.140625f);
}

static void test_good_file_loads(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "good.safetensors");
    CHECK(write_resnet18(p, "F32", NULL) == 0);
    struct eng_model *m = NULL;
    char err[512];
    CHECK(eng_model_load(p, &m, err, sizeof err) == ENG_OK, "%s", err);
    const struct eng_model_info *info = eng_model_get_info(m);
    char got[160];
    snprintf(got, sizeof got, "%s depth %d bottleneck %d classes %d params %lld random %d %s",
             info->arch, info->depth, info->bottleneck, info->num_classes,
             (long long)info->num_params, info->random, info->dtype);
    eng_model_free(m);
    CHECK(!strcmp(got, "resnet18 depth 18 bottleneck 0 classes 1000 params 11689512 random 0 F32"),
          "got %s", got);
}

/* The same weights as F32, F16 and BF16 give close logits: the half
 * formats are converted at load. */
static void test_half_files_load(void) {
    const char *dts[3] = {"F32", "F16", "BF16"};
    float logits[3][1000];
    static float in[3 * 224 * 224];
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) in[i] = (float)((i * 7919) % 255) / 128.0f - 1.0f;
    for (int d = 0; d < 3; d++) {
        char p[300], err[512];
        snprintf(p, sizeof p, "%s/half_%s.safetensors", tmpdir, dts[d]);
        CHECK(write_resnet18(p, dts[d], NULL) == 0);
        struct eng_model *m = NULL;
        struct eng_ctx *c = NULL;
        CHECK(eng_model_load(p, &m, err, sizeof err) == ENG_OK, "%s", err);
        int ok = !strcmp(eng_model_get_info(m)->dtype, dts[d]);
        if (ok) ok = eng_ctx_new(m, 1, 224, &c, err, sizeof err) == ENG_OK;
        if (ok) ok = eng_ctx_forward(c, in, 1, logits[d]) == ENG_OK;
        eng_ctx_free(c);
        eng_model_free(m);
        unlink(p);
        CHECK(ok, "%s: %s", dts[d], err);
    }
    double scale = 0, d16 = 0, dbf = 0;
    for (int i = 0; i < 1000; i++) {
        scale = fmax(scale, fabs(logits[0][i]));
        d16 = fmax(d16, fabs(logits[1][i] - logits[0][i]));
        dbf = fmax(dbf, fabs(logits[2][i] - logits[0][i]));
    }
    CHECK(scale > 0, "logits are all zero");
    CHECK(d16 < 0.01 * (1 + scale) && dbf < 0.05 * (1 + scale), "f16 diff %g, bf16 diff %g, scale %g",
          d16, dbf, scale);
}

static void test_missing_file(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "does-not-exist.safetensors");
    EXPECT_FAIL(p, ENG_ERR_IO, "No such file");
}

static void test_too_short(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "short.safetensors");
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite("abc", 1, 3, f) == 3 && fclose(f) == 0);
    EXPECT_FAIL(p, ENG_ERR_FORMAT, "too short");
}

static void test_header_past_eof(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "hlen.safetensors");
    CHECK(write_raw(p, "{}", 1000000, 0) == 0);
    EXPECT_FAIL(p, ENG_ERR_FORMAT, "past the end");
}

static void test_broken_json(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "json.safetensors");
    CHECK(write_raw(p, "{\"conv1.weight\": {\"dtype\": \"F32\", \"shape\": [1]", 0, 4) == 0);
    EXPECT_FAIL(p, ENG_ERR_FORMAT, "not valid JSON");
}

static void test_truncated(void) {
    char p[300], q[300];
    path_in_tmp(p, sizeof p, "full.safetensors");
    path_in_tmp(q, sizeof q, "truncated.safetensors");
    CHECK(write_resnet18(p, "F32", NULL) == 0);
    size_t len;
    unsigned char *buf = t_read_file(p, &len);
    CHECK(buf != NULL);
    FILE *f = fopen(q, "wb");
    int ok = f && fwrite(buf, 1, len / 2, f) == len / 2;
    if (f) ok = fclose(f) == 0 && ok;
    free(buf);
    unlink(p);
    CHECK(ok);
    /* the first tensor whose bytes are cut off is named */
    EXPECT_FAIL(q, ENG_ERR_FORMAT, "outside the");
}

static void test_offsets_out_of_range(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "range.safetensors");
    CHECK(write_raw(p, "{\"fc.bias\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}",
                    0, 8) == 0);
    EXPECT_FAIL(p, ENG_ERR_FORMAT, "fc.bias", "outside");
}

static void test_offsets_overlap(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "overlap.safetensors");
    CHECK(write_raw(p,
                    "{\"fc.weight\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]},"
                    " \"fc.bias\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
                    0, 16) == 0);
    EXPECT_FAIL(p, ENG_ERR_FORMAT, "fc.weight", "fc.bias", "overlap");
}

static void test_size_mismatch(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "size.safetensors");
    CHECK(write_raw(p, "{\"fc.bias\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 12]}}",
                    0, 12) == 0);
    EXPECT_FAIL(p, ENG_ERR_FORMAT, "fc.bias", "12 bytes for 4 elements");
}

static void test_unknown_dtype(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "dtype.safetensors");
    CHECK(write_raw(p, "{\"fc.bias\": {\"dtype\": \"Q4\", \"shape\": [4], \"data_offsets\": [0, 4]}}",
                    0, 4) == 0);
    EXPECT_FAIL(p, ENG_ERR_DTYPE, "fc.bias", "Q4");
}

static void test_not_a_resnet(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "other.safetensors");
    CHECK(write_raw(p, "{\"__metadata__\": {\"format\": \"pt\"}}", 0, 0) == 0);
    EXPECT_FAIL(p, ENG_ERR_MISSING, "conv1.weight");
}

static void test_missing_tensor(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "missing.safetensors");
    struct spoil sp = {.skip = "layer3.1.bn2.running_mean"};
    CHECK(write_resnet18(p, "F32", &sp) == 0);
    EXPECT_FAIL(p, ENG_ERR_MISSING, "layer3.1.bn2.running_mean");
    unlink(p);
}

static void test_wrong_shape(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "shape.safetensors");
    struct spoil sp = {.reshape = "layer2.0.downsample.0.weight"};
    CHECK(write_resnet18(p, "F32", &sp) == 0);
    EXPECT_FAIL(p, ENG_ERR_SHAPE, "layer2.0.downsample.0.weight", "[129, 64, 1, 1]",
                "[128, 64, 1, 1]");
    unlink(p);
}

static void test_unsupported_dtype(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "i32.safetensors");
    struct spoil sp = {.dtype_of = "layer4.1.conv2.weight", .dtype = "I32"};
    CHECK(write_resnet18(p, "F32", &sp) == 0);
    EXPECT_FAIL(p, ENG_ERR_DTYPE, "layer4.1.conv2.weight", "I32");
    unlink(p);
}

static void test_nan_weight(void) {
    char p[300];
    path_in_tmp(p, sizeof p, "nan.safetensors");
    struct spoil sp = {.nan_in = "layer1.0.conv1.weight"};
    CHECK(write_resnet18(p, "F32", &sp) == 0);
    EXPECT_FAIL(p, ENG_ERR_FORMAT, "layer1.0.conv1.weight", "non-finite");
    unlink(p);
}

static void test_garbage_never_crashes(void) {
    /* random bytes after a plausible length: always an error, never a crash */
    char p[300];
    path_in_tmp(p, sizeof p, "garbage.safetensors");
    uint32_t s = 7;
    for (int round = 0; round < 200; round++) {
        FILE *f = fopen(p, "wb");
        CHECK(f);
        size_t n = 8 + (size_t)(round * 37 % 400);
        uint64_t hl = (uint64_t)(round % 50);
        for (int i = 0; i < 8; i++) fputc((int)((hl >> (8 * i)) & 0xff), f);
        for (size_t i = 8; i < n; i++) {
            s = s * 1664525u + 1013904223u;
            fputc(round % 3 ? (int)(s >> 24) : "{\"a\":[]}"[i % 8], f);
        }
        CHECK(fclose(f) == 0);
        struct eng_model *m = NULL;
        char err[512];
        enum eng_status st = eng_model_load(p, &m, err, sizeof err);
        eng_model_free(m);
        CHECK(st != ENG_OK, "round %d loaded garbage", round);
    }
    unlink(p);
}

int main(void) {
    t_suite = "safetensors";
    snprintf(tmpdir, sizeof tmpdir, "/tmp/imgclass-st-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_half_conversion);
    RUN(test_good_file_loads);
    RUN(test_half_files_load);
    RUN(test_missing_file);
    RUN(test_too_short);
    RUN(test_header_past_eof);
    RUN(test_broken_json);
    RUN(test_truncated);
    RUN(test_offsets_out_of_range);
    RUN(test_offsets_overlap);
    RUN(test_size_mismatch);
    RUN(test_unknown_dtype);
    RUN(test_not_a_resnet);
    RUN(test_missing_tensor);
    RUN(test_wrong_shape);
    RUN(test_unsupported_dtype);
    RUN(test_nan_weight);
    RUN(test_garbage_never_crashes);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return t_done();
}
