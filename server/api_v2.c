/* api_v2.c: the Open Inference Protocol v2 (KServe v2 / Triton) over REST,
 * with Triton's binary tensor data and classification extensions: parsing
 * an infer request into the internal job, rendering its answer and the
 * server and model metadata. */
#include "api.h"
#include "http_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Binary tensor data is little-endian; the floats are copied as they are. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "binary tensors assume little-endian");

#define FAIL(st, ...) srv_api_fail(st, err, errlen, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Request: the header, outputs and the input's description                 */
/* ------------------------------------------------------------------------ */

/* Inference-Header-Content-Length: decimal digits only, at most len. */
static enum srv_api_status header_length(const char *v, size_t len, size_t *out, char *err,
                                         size_t errlen) {
    size_t n = strlen(v);
    if (n == 0 || n > 19 || strspn(v, "0123456789") != n)
        return FAIL(SRV_API_ERR_BAD_REQUEST,
                    "Inference-Header-Content-Length must be a decimal byte count");
    unsigned long long h = strtoull(v, NULL, 10);
    if (h > len)
        return FAIL(SRV_API_ERR_BAD_REQUEST,
                    "Inference-Header-Content-Length is %llu but the body has %zu bytes", h, len);
    *out = (size_t)h;
    return SRV_API_OK;
}

/* A boolean parameter: absent leaves *out alone; present must be a bool. */
static enum srv_api_status bool_param(json_t *params, const char *key, int *out, const char *where,
                                      char *err, size_t errlen) {
    json_t *v = params ? json_object_get(params, key) : NULL;
    if (!v) return SRV_API_OK;
    if (!json_is_boolean(v))
        return FAIL(SRV_API_ERR_BAD_REQUEST, "%s: parameter %s must be true or false", where, key);
    *out = json_is_true(v);
    return SRV_API_OK;
}

/* "parameters" of an object: absent is NULL; present must be an object. */
static enum srv_api_status params_of(json_t *o, json_t **out, const char *where, char *err,
                                     size_t errlen) {
    *out = json_object_get(o, "parameters");
    if (*out && !json_is_object(*out))
        return FAIL(SRV_API_ERR_BAD_REQUEST, "%s: \"parameters\" must be an object", where);
    return SRV_API_OK;
}

static enum srv_api_status parse_outputs(json_t *root, const struct srv_api_model *m,
                                         struct srv_api_request *r, char *err, size_t errlen) {
    json_t *params;
    enum srv_api_status st = params_of(root, &params, "the request", err, errlen);
    int binary_all = 0;
    if (st == SRV_API_OK)
        st = bool_param(params, "binary_data_output", &binary_all, "the request", err, errlen);
    if (st != SRV_API_OK) return st;
    json_t *outs = json_object_get(root, "outputs");
    if (outs && !json_is_array(outs))
        return FAIL(SRV_API_ERR_BAD_REQUEST, "\"outputs\" must be an array");
    if (!outs || json_array_size(outs) == 0) {
        r->noutputs = 1;
        r->outputs[0] = (struct srv_api_output){SRV_API_OUT_PROBS, 0, binary_all};
        return SRV_API_OK;
    }
    size_t i;
    json_t *o;
    json_array_foreach(outs, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        if (!json_is_object(o) || !name)
            return FAIL(SRV_API_ERR_BAD_REQUEST, "output %zu must be an object with a \"name\"", i);
        struct srv_api_output out = {0, 0, binary_all};
        if (!strcmp(name, SRV_V2_OUTPUT_PROBS))
            out.kind = SRV_API_OUT_PROBS;
        else if (!strcmp(name, SRV_V2_OUTPUT_LOGITS))
            out.kind = SRV_API_OUT_LOGITS;
        else
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "unknown output '%.64s'; model '%s' has outputs '%s' and '%s'", name,
                        m->name, SRV_V2_OUTPUT_PROBS, SRV_V2_OUTPUT_LOGITS);
        for (int k = 0; k < r->noutputs; k++)
            if (r->outputs[k].kind == out.kind)
                return FAIL(SRV_API_ERR_BAD_REQUEST, "output '%s' is requested twice", name);
        char where[96];
        snprintf(where, sizeof where, "output '%s'", name);
        if ((st = params_of(o, &params, where, err, errlen)) != SRV_API_OK ||
            (st = bool_param(params, "binary_data", &out.binary, where, err, errlen)) != SRV_API_OK)
            return st;
        json_t *cls = params ? json_object_get(params, "classification") : NULL;
        if (cls) {
            json_int_t k = json_integer_value(cls);
            if (!json_is_integer(cls) || k < 0 || k > m->classes)
                return FAIL(SRV_API_ERR_BAD_REQUEST,
                            "%s: classification must be an integer in 0..%d (the classes)", where,
                            m->classes);
            out.classification = (int)k;
        }
        r->outputs[r->noutputs++] = out;
    }
    return SRV_API_OK;
}

/* The one input, described before its data is read. */
struct v2_input {
    const char *name;
    int is_bytes; /* BYTES (JPEGs), else FP32 */
    json_int_t shape[4];
    int rank;
    size_t count;       /* elements: the shape's product */
    int n;              /* images: shape[0] */
    int binary;         /* data follows the JSON */
    size_t binary_size; /* its bytes */
    json_t *data;       /* JSON data when not binary */
};

/* Formats shape as "[a,b,c]" into buf. */
static const char *shape_str(const struct v2_input *in, char *buf, size_t buflen) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < in->rank && o < buflen; i++)
        o +=
            (size_t)snprintf(buf + o, buflen - o, "%s%lld", i ? "," : "[", (long long)in->shape[i]);
    if (o < buflen) snprintf(buf + o, buflen - o, "%s]", in->rank ? "" : "[");
    return buf;
}

/* Name, datatype, shape (with an overflow-checked element count) and
 * where the data is. */
static enum srv_api_status describe_input(json_t *in, struct v2_input *d, char *err,
                                          size_t errlen) {
    d->name = json_string_value(json_object_get(in, "name"));
    if (!d->name) return FAIL(SRV_API_ERR_BAD_REQUEST, "the input needs a string \"name\"");
    char where[96];
    snprintf(where, sizeof where, "input '%.64s'", d->name);
    const char *dt = json_string_value(json_object_get(in, "datatype"));
    if (!dt) return FAIL(SRV_API_ERR_BAD_REQUEST, "%s needs a string \"datatype\"", where);
    if (!strcmp(dt, "BYTES"))
        d->is_bytes = 1;
    else if (strcmp(dt, "FP32"))
        return FAIL(SRV_API_ERR_BAD_REQUEST,
                    "%s: datatype %.16s is not supported; send BYTES (JPEG images) or FP32", where,
                    dt);
    json_t *shape = json_object_get(in, "shape");
    if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > 4)
        return FAIL(SRV_API_ERR_BAD_REQUEST, "%s: \"shape\" must be an array of 1 to 4 integers",
                    where);
    d->rank = (int)json_array_size(shape);
    d->count = 1;
    for (int i = 0; i < d->rank; i++) {
        json_t *v = json_array_get(shape, (size_t)i);
        d->shape[i] = json_integer_value(v);
        if (!json_is_integer(v) || d->shape[i] < 0)
            return FAIL(SRV_API_ERR_BAD_REQUEST, "%s: shape dimension %d must be an integer >= 0",
                        where, i);
        if (__builtin_mul_overflow(d->count, d->shape[i], &d->count))
            return FAIL(SRV_API_ERR_TOO_LARGE, "%s: the shape has too many elements", where);
    }
    json_t *params;
    enum srv_api_status st = params_of(in, &params, where, err, errlen);
    if (st != SRV_API_OK) return st;
    json_t *bds = params ? json_object_get(params, "binary_data_size") : NULL;
    d->data = json_object_get(in, "data");
    if (bds) {
        if (!json_is_integer(bds) || json_integer_value(bds) < 0)
            return FAIL(SRV_API_ERR_BAD_REQUEST, "%s: binary_data_size must be an integer >= 0",
                        where);
        if (d->data)
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "%s has both \"data\" and binary_data_size; send one", where);
        d->binary = 1;
        d->binary_size = (size_t)json_integer_value(bds);
    } else if (!d->data) {
        return FAIL(SRV_API_ERR_BAD_REQUEST, "%s has no \"data\" and no binary_data_size", where);
    }
    return SRV_API_OK;
}

/* The shape must be [n] or [n,1] (BYTES) or [n,3,S,S] (FP32), 1 <= n <=
 * max_images. */
static enum srv_api_status check_shape(struct v2_input *d, const struct srv_api_model *m,
                                       int max_images, char *err, size_t errlen) {
    char got[96];
    int ok = d->is_bytes ? (d->rank == 1 || (d->rank == 2 && d->shape[1] == 1))
                         : (d->rank == 4 && d->shape[1] == 3 && d->shape[2] == m->input_size &&
                            d->shape[3] == m->input_size);
    if (!ok) {
        if (d->is_bytes)
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "input '%.64s': BYTES shape must be [n] or [n,1] (n JPEG images), got %s",
                        d->name, shape_str(d, got, sizeof got));
        return FAIL(SRV_API_ERR_BAD_REQUEST,
                    "input '%.64s': FP32 shape must be [n,3,%d,%d], got %s", d->name, m->input_size,
                    m->input_size, shape_str(d, got, sizeof got));
    }
    if (d->shape[0] < 1)
        return FAIL(SRV_API_ERR_BAD_REQUEST, "input '%.64s' holds no image (shape %s)", d->name,
                    shape_str(d, got, sizeof got));
    if (d->shape[0] > max_images)
        return FAIL(SRV_API_ERR_TOO_LARGE,
                    "input '%.64s' holds %lld images; at most %d per request", d->name,
                    (long long)d->shape[0], max_images);
    d->n = (int)d->shape[0];
    return SRV_API_OK;
}

/* ------------------------------------------------------------------------ */
/* Request: the input's data                                                */
/* ------------------------------------------------------------------------ */

/* Where flattened JSON data goes: strings (BYTES) or floats (FP32). */
struct sink {
    json_t **strs;
    float *floats;
    size_t cap, n;
};

/* Appends the leaves of v (flat or nested at most depth arrays deep), in
 * row-major order. Returns 0, or -1 on a wrong leaf type or more than
 * cap leaves. */
static int flatten(json_t *v, int depth, struct sink *s) {
    if (json_is_array(v)) {
        if (depth == 0) return -1;
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (flatten(e, depth - 1, s)) return -1;
        }
        return 0;
    }
    if (s->n >= s->cap) return -1;
    if (s->strs) {
        if (!json_is_string(v)) return -1;
        s->strs[s->n++] = v;
        return 0;
    }
    if (!json_is_number(v)) return -1;
    s->floats[s->n++] = (float)json_number_value(v);
    return 0;
}

static enum srv_api_status check_finite(const float *x, size_t n, const char *name, char *err,
                                        size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "input '%.64s': element %zu is not a finite number", name, i);
    return SRV_API_OK;
}

static enum srv_api_status read_fp32(const struct v2_input *d, const unsigned char *bin,
                                     struct srv_api_request *r, char *err, size_t errlen) {
    r->tensors = malloc(d->count * sizeof(float));
    if (!r->tensors) return FAIL(SRV_API_ERR_NOMEM, "out of memory");
    if (d->binary) {
        if (d->binary_size != d->count * sizeof(float))
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "input '%.64s': binary_data_size is %zu; shape needs %zu bytes", d->name,
                        d->binary_size, d->count * sizeof(float));
        memcpy(r->tensors, bin, d->binary_size);
    } else {
        struct sink s = {NULL, r->tensors, d->count, 0};
        if (!json_is_array(d->data) || flatten(d->data, d->rank, &s) || s.n != d->count)
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "input '%.64s': \"data\" must hold exactly %zu numbers, flat or nested",
                        d->name, d->count);
    }
    enum srv_api_status st = check_finite(r->tensors, d->count, d->name, err, errlen);
    if (st != SRV_API_OK) return st;
    size_t per = d->count / (size_t)d->n;
    for (int i = 0; i < d->n; i++) {
        r->images[i].kind = SRV_API_IMAGE_TENSOR;
        r->images[i].tensor = r->tensors + (size_t)i * per;
    }
    return SRV_API_OK;
}

/* Binary BYTES: n elements, each a 4-byte little-endian length and its
 * bytes, filling binary_size exactly. */
static enum srv_api_status read_bytes_binary(const struct v2_input *d, const unsigned char *bin,
                                             struct srv_api_request *r, char *err, size_t errlen) {
    size_t off = 0;
    for (int i = 0; i < d->n; i++) {
        if (d->binary_size - off < 4)
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "input '%.64s': binary data ends before element %d's length", d->name, i);
        size_t l = (size_t)bin[off] | (size_t)bin[off + 1] << 8 | (size_t)bin[off + 2] << 16 |
                   (size_t)bin[off + 3] << 24;
        off += 4;
        if (l > d->binary_size - off)
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "input '%.64s': element %d claims %zu bytes; %zu remain", d->name, i, l,
                        d->binary_size - off);
        if (l == 0)
            return FAIL(SRV_API_ERR_BAD_REQUEST, "input '%.64s': element %d is empty", d->name, i);
        r->images[i] = (struct srv_api_image){SRV_API_IMAGE_JPEG, bin + off, l, NULL};
        off += l;
    }
    if (off != d->binary_size)
        return FAIL(SRV_API_ERR_BAD_REQUEST,
                    "input '%.64s': %zu bytes of binary data after its %d elements", d->name,
                    d->binary_size - off, d->n);
    return SRV_API_OK;
}

static enum srv_api_status read_bytes_json(const struct v2_input *d, struct srv_api_request *r,
                                           char *err, size_t errlen) {
    json_t **strs = malloc((size_t)d->n * sizeof *strs);
    if (!strs) return FAIL(SRV_API_ERR_NOMEM, "out of memory");
    struct sink s = {strs, NULL, (size_t)d->n, 0};
    enum srv_api_status st;
    if (!json_is_array(d->data) || flatten(d->data, d->rank, &s) || s.n != (size_t)d->n) {
        st = FAIL(SRV_API_ERR_BAD_REQUEST,
                  "input '%.64s': \"data\" must hold exactly %d base64 strings", d->name, d->n);
    } else {
        char what[96];
        snprintf(what, sizeof what, "input '%.64s' element", d->name);
        st = srv_api_decode_images(r, strs, what, err, errlen);
    }
    free(strs);
    return st;
}

/* The raw form: Inference-Header-Content-Length 0, the body one JPEG. */
static enum srv_api_status parse_raw(const unsigned char *body, size_t len,
                                     struct srv_api_request *r, char *err, size_t errlen) {
    if (len == 0) return FAIL(SRV_API_ERR_BAD_REQUEST, "the request body is empty");
    enum srv_api_status st = srv_api_request_images(r, 1, err, errlen);
    if (st != SRV_API_OK) return st;
    r->images[0] = (struct srv_api_image){SRV_API_IMAGE_JPEG, body, len, NULL};
    r->noutputs = 1;
    r->outputs[0] = (struct srv_api_output){SRV_API_OUT_PROBS, 0, 0};
    return SRV_API_OK;
}

static enum srv_api_status parse_json(json_t *root, const unsigned char *bin, size_t bin_len,
                                      const struct srv_api_model *m, int max_images,
                                      struct srv_api_request *r, char *err, size_t errlen) {
    if (!json_is_object(root))
        return FAIL(SRV_API_ERR_BAD_REQUEST, "the request must be a JSON object");
    json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id)) return FAIL(SRV_API_ERR_BAD_REQUEST, "\"id\" must be a string");
        if (!(r->id = strdup(json_string_value(id))))
            return FAIL(SRV_API_ERR_NOMEM, "out of memory");
    }
    enum srv_api_status st = parse_outputs(root, m, r, err, errlen);
    if (st != SRV_API_OK) return st;
    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1)
        return FAIL(SRV_API_ERR_BAD_REQUEST,
                    "\"inputs\" must be an array of exactly one input (got %zu)",
                    json_array_size(inputs));
    json_t *in = json_array_get(inputs, 0);
    if (!json_is_object(in)) return FAIL(SRV_API_ERR_BAD_REQUEST, "the input must be an object");
    struct v2_input d = {0};
    if ((st = describe_input(in, &d, err, errlen)) != SRV_API_OK ||
        (st = check_shape(&d, m, max_images, err, errlen)) != SRV_API_OK)
        return st;
    /* Every byte after the JSON belongs to the input, and no more. */
    size_t claimed = d.binary ? d.binary_size : 0;
    if (claimed != bin_len)
        return FAIL(SRV_API_ERR_BAD_REQUEST,
                    "input '%.64s' claims %zu bytes of binary data; %zu follow the JSON header",
                    d.name, claimed, bin_len);
    if (!(r->input_name = strdup(d.name))) return FAIL(SRV_API_ERR_NOMEM, "out of memory");
    if ((st = srv_api_request_images(r, d.n, err, errlen)) != SRV_API_OK) return st;
    if (!d.is_bytes) return read_fp32(&d, bin, r, err, errlen);
    if (d.binary) return read_bytes_binary(&d, bin, r, err, errlen);
    return read_bytes_json(&d, r, err, errlen);
}

enum srv_api_status srv_v2_parse_infer(const unsigned char *body, size_t len,
                                       const char *header_len, const struct srv_api_model *m,
                                       int max_images, struct srv_api_request *out, char *err,
                                       size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = 0;
    size_t jlen = len;
    if (header_len) {
        enum srv_api_status st = header_length(header_len, len, &jlen, err, errlen);
        if (st != SRV_API_OK) return st;
        if (jlen == 0) return parse_raw(body, len, out, err, errlen);
    }
    json_t *root;
    enum srv_api_status st = srv_api_load_json(body, jlen, &root, err, errlen);
    if (st != SRV_API_OK) return st;
    st = parse_json(root, body + jlen, len - jlen, m, max_images, out, err, errlen);
    json_decref(root);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Response                                                                 */
/* ------------------------------------------------------------------------ */

/* Binary output data gathered while the JSON is built, appended after it. */
struct blobs {
    unsigned char *data;
    size_t len, cap;
};

static int blob_add(struct blobs *b, const void *p, size_t n) {
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static json_t *shape2(int a, int b) {
    return json_pack("[ii]", a, b);
}

/* A JSON number of a float; non-finite values (never from a valid input)
 * become null rather than invalid JSON. */
static json_t *jfloat(float v) {
    return isfinite(v) ? json_real(v) : json_null();
}

/* The FP32 tensor [n, classes] of one output, as JSON data or a blob. */
static int render_tensor(const struct srv_api_model *m, const struct srv_api_request *req,
                         const struct srv_api_result *res, const struct srv_api_output *o,
                         json_t *data, struct blobs *b, float *tmp) {
    for (int i = 0; i < req->n; i++) {
        const float *v = res[i].logits;
        if (o->kind == SRV_API_OUT_PROBS) {
            eng_softmax(v, m->classes, tmp);
            v = tmp;
        }
        if (b) {
            if (blob_add(b, v, (size_t)m->classes * sizeof(float))) return -1;
            continue;
        }
        for (int c = 0; c < m->classes; c++)
            if (json_array_append_new(data, jfloat(v[c]))) return -1;
    }
    return 0;
}

/* The classification BYTES [n, K] of "value:index:label", the value being
 * the output's (probability or logit), as Triton formats it. */
static int render_classes(const struct srv_api_model *m, const struct srv_api_request *req,
                          const struct srv_api_result *res, const struct srv_api_output *o,
                          json_t *data, struct blobs *b, struct eng_pred *preds) {
    for (int i = 0; i < req->n; i++) {
        int k = eng_topk(res[i].logits, m->classes, o->classification, preds);
        for (int j = 0; j < k; j++) {
            char lbuf[256], s[320];
            const char *label = srv_api_label(m, preds[j].index, lbuf, sizeof lbuf);
            float v = o->kind == SRV_API_OUT_PROBS ? preds[j].score : preds[j].logit;
            int n = snprintf(s, sizeof s, "%f:%d:%s", v, preds[j].index, label);
            uint32_t l = n < (int)sizeof s ? (uint32_t)n : (uint32_t)sizeof s - 1;
            if (b) {
                unsigned char le[4] = {(unsigned char)l, (unsigned char)(l >> 8),
                                       (unsigned char)(l >> 16), (unsigned char)(l >> 24)};
                if (blob_add(b, le, 4) || blob_add(b, s, l)) return -1;
            } else if (json_array_append_new(data, srv_api_jstr(s))) {
                return -1;
            }
        }
    }
    return 0;
}

/* One output object; binary data goes to b. Returns NULL on OOM. */
static json_t *render_output(const struct srv_api_model *m, const struct srv_api_request *req,
                             const struct srv_api_result *res, const struct srv_api_output *o,
                             struct blobs *b, float *tmp, struct eng_pred *preds) {
    json_t *j = json_object();
    json_t *data = json_array();
    int cls = o->classification;
    size_t before = b->len;
    int bad = !j || !data;
    bad = bad ||
          json_object_set_new(j, "name",
                              json_string(o->kind == SRV_API_OUT_PROBS ? SRV_V2_OUTPUT_PROBS
                                                                       : SRV_V2_OUTPUT_LOGITS));
    bad = bad || json_object_set_new(j, "datatype", json_string(cls ? "BYTES" : "FP32"));
    bad = bad || json_object_set_new(j, "shape", shape2(req->n, cls ? cls : m->classes));
    struct blobs *dst = o->binary ? b : NULL;
    if (!bad)
        bad = cls ? render_classes(m, req, res, o, data, dst, preds)
                  : render_tensor(m, req, res, o, data, dst, tmp);
    if (!bad && o->binary)
        bad = json_object_set_new(
            j, "parameters", json_pack("{sI}", "binary_data_size", (json_int_t)(b->len - before)));
    else if (!bad)
        bad = json_object_set(j, "data", data);
    json_decref(data);
    if (bad) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Header and blobs into one body. Takes json. */
static enum srv_api_status finish_binary(json_t *j, struct blobs *b, struct srv_api_body *out) {
    char *h = json_dumps(j, SRV_API_JSON_FLAGS);
    json_decref(j);
    if (!h) return SRV_API_ERR_NOMEM;
    size_t hl = strlen(h);
    char *d = malloc(hl + b->len + 1);
    if (!d) {
        free(h);
        return SRV_API_ERR_NOMEM;
    }
    memcpy(d, h, hl);
    if (b->len) memcpy(d + hl, b->data, b->len);
    d[hl + b->len] = 0;
    free(h);
    *out = (struct srv_api_body){200, d, hl + b->len, "application/octet-stream", 1, hl};
    return SRV_API_OK;
}

enum srv_api_status srv_v2_render_infer(const struct srv_api_model *m,
                                        const struct srv_api_request *req,
                                        const struct srv_api_result *res,
                                        struct srv_api_body *out) {
    memset(out, 0, sizeof *out);
    /* The raw form has no input name, and one image. */
    char what[96], msg[512];
    snprintf(what, sizeof what, "input '%.64s' image", req->input_name ? req->input_name : "");
    int status = srv_api_failure(res, req->n, req->input_name ? what : NULL, msg, sizeof msg);
    if (status) return srv_v2_render_error(status, msg, out);
    json_t *j = json_pack("{ss ss}", "model_name", m->name, "model_version", m->version);
    json_t *outs = json_array();
    float *tmp = malloc((size_t)m->classes * sizeof *tmp);
    struct eng_pred *preds = malloc((size_t)m->classes * sizeof *preds);
    struct blobs b = {0};
    int any_binary = 0;
    int fail = !j || !outs || !tmp || !preds;
    if (!fail && req->id) fail = json_object_set_new(j, "id", srv_api_jstr(req->id));
    for (int i = 0; !fail && i < req->noutputs; i++) {
        any_binary |= req->outputs[i].binary;
        fail = json_array_append_new(outs,
                                     render_output(m, req, res, &req->outputs[i], &b, tmp, preds));
    }
    free(tmp);
    free(preds);
    if (!fail) fail = json_object_set(j, "outputs", outs);
    json_decref(outs);
    enum srv_api_status st = SRV_API_ERR_NOMEM;
    if (fail)
        json_decref(j);
    else if (any_binary)
        st = finish_binary(j, &b, out);
    else
        st = srv_api_body_json(j, 200, out);
    free(b.data);
    return st;
}

enum srv_api_status srv_v2_render_error(int status, const char *msg, struct srv_api_body *out) {
    return srv_api_body_json(json_pack("{so}", "error", srv_api_jstr(msg)), status, out);
}

/* ------------------------------------------------------------------------ */
/* Metadata                                                                 */
/* ------------------------------------------------------------------------ */

enum srv_api_status srv_v2_render_server(const char *name, const char *version,
                                         struct srv_api_body *out) {
    return srv_api_body_json(json_pack("{ss ss s[sss]}", "name", name, "version", version,
                                       "extensions", "binary_tensor_data", "classification",
                                       "model_configuration"),
                             200, out);
}

enum srv_api_status srv_v2_render_health(const char *key, int ok, struct srv_api_body *out) {
    return srv_api_body_json(json_pack("{sb}", key, ok), ok ? 200 : 503, out);
}

enum srv_api_status srv_v2_render_model(const struct srv_api_model *m, struct srv_api_body *out) {
    int s = m->input_size;
    return srv_api_body_json(json_pack("{ss s[s] ss s[{ss ss s[iiii]}] s[{ss ss s[ii]}]}", "name",
                                       m->name, "versions", m->version, "platform", m->platform,
                                       "inputs", "name", SRV_V2_INPUT, "datatype", "FP32", "shape",
                                       -1, 3, s, s, "outputs", "name", SRV_V2_OUTPUT_PROBS,
                                       "datatype", "FP32", "shape", -1, m->classes),
                             200, out);
}

enum srv_api_status srv_v2_render_config(const struct srv_api_model *m, struct srv_api_body *out) {
    int s = m->input_size;
    /* Dims leave out the batch dimension, as Triton's configuration does
     * whenever max_batch_size > 0. */
    return srv_api_body_json(
        json_pack("{ss ss ss si"
                  " s[{ss ss ss s[iii]}]"
                  " s[{ss ss s[i]}]"
                  " s{s[i] si}"
                  " s[{ss si ss}]"
                  " s{sb}"
                  " s{s{ss}}}",
                  "name", m->name, "platform", m->platform, "backend", "imgclassd",
                  "max_batch_size", m->max_batch, "input", "name", SRV_V2_INPUT, "data_type",
                  "TYPE_FP32", "format", "FORMAT_NCHW", "dims", 3, s, s, "output", "name",
                  SRV_V2_OUTPUT_PROBS, "data_type", "TYPE_FP32", "dims", m->classes,
                  "dynamic_batching", "preferred_batch_size", m->max_batch,
                  "max_queue_delay_microseconds", m->batch_timeout_us, "instance_group", "name",
                  m->name, "count", m->instances, "kind", "KIND_CPU", "model_transaction_policy",
                  "decoupled", 0, "parameters", "precision", "string_value", m->precision),
        200, out);
}

/* ------------------------------------------------------------------------ */
/* HTTP handlers (named by routes.c)                                        */
/* ------------------------------------------------------------------------ */

enum MHD_Result srv_v2_error(struct srv_req *r, int status, const char *code, const char *msg,
                             const char *hname, const char *hval) {
    struct srv_api_body b = {0};
    if (srv_v2_render_error(status, msg, &b) != SRV_API_OK) return MHD_NO;
    return srv_send_api_body(r, &b, hname, hval);
}

enum MHD_Result srv_v2_server_get(struct srv_req *r) {
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_v2_render_server("imgclassd", SRV_VERSION, &b), &b);
}

enum MHD_Result srv_v2_live_get(struct srv_req *r) {
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_v2_render_health("live", 1, &b), &b);
}

/* Ready while the models are loaded and the server is not draining, like
 * /readyz: a load balancer probing either sees the same answer. */
static int server_ready(const struct srv_http *h) {
    return atomic_load_explicit(&h->ready, memory_order_acquire) && !atomic_load(&h->draining);
}

enum MHD_Result srv_v2_ready_get(struct srv_req *r) {
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_v2_render_health("ready", server_ready(r->h), &b), &b);
}

/* The model of /v2/models/{m}[/versions/{v}]/...; NULL after answering
 * (503 while loading, 404 unknown). */
static const struct srv_model *url_model(struct srv_req *r, enum MHD_Result *ret) {
    if (!atomic_load_explicit(&r->h->ready, memory_order_acquire)) {
        *ret = srv_send_503_retry(r, "not_ready", 1, "the models are still loading");
        return NULL;
    }
    return srv_req_model(r, r->param[0], r->param[1][0] ? r->param[1] : NULL, ret);
}

enum MHD_Result srv_v2_model_get(struct srv_req *r) {
    enum MHD_Result ret;
    const struct srv_model *md = url_model(r, &ret);
    if (!md) return ret;
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_v2_render_model(&md->api, &b), &b);
}

enum MHD_Result srv_v2_model_ready_get(struct srv_req *r) {
    struct srv_api_body b = {0};
    if (!server_ready(r->h))
        return srv_send_rendered(r, srv_v2_render_health("ready", 0, &b), &b);
    enum MHD_Result ret;
    if (!url_model(r, &ret)) return ret;
    return srv_send_rendered(r, srv_v2_render_health("ready", 1, &b), &b);
}

enum MHD_Result srv_v2_config_get(struct srv_req *r) {
    enum MHD_Result ret;
    const struct srv_model *md = url_model(r, &ret);
    if (!md) return ret;
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_v2_render_config(&md->api, &b), &b);
}

enum MHD_Result srv_v2_infer_start(struct srv_req *r) {
    return srv_infer_start(r, r->param[0], r->param[1][0] ? r->param[1] : NULL);
}

enum MHD_Result srv_v2_infer_body(struct srv_req *r) {
    const char *hl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 "Inference-Header-Content-Length");
    struct srv_api_request req;
    char err[256];
    enum srv_api_status st = srv_v2_parse_infer(r->body, r->len, hl, &r->model->api,
                                                srv_infer_max_images(r), &req, err, sizeof err);
    if (st != SRV_API_OK) {
        srv_api_request_free(&req);
        return srv_send_error(r, srv_api_http_status(st), "invalid_request", "%s", err);
    }
    return srv_infer_submit_api(r, &req);
}

enum MHD_Result srv_v2_infer_resumed(struct srv_req *r) {
    struct srv_api_result res[r->nimg];
    srv_infer_results(r, res);
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_v2_render_infer(&r->model->api, r->api, res, &b), &b);
}
