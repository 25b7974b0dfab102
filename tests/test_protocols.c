/* test_protocols.c: a client of the serving ecosystem's protocols written
 * from their specifications (Open Inference Protocol v2 REST with Triton's
 * binary tensor and classification extensions; TorchServe's inference API;
 * KServe v1), driving build/imgclassd over HTTP with libcurl: every
 * endpoint, each request form and each error status in the protocol's own
 * error shape. Answers are held to POST /classify on the same image. */
#include "test.h"
#include "server_harness.h"

static struct server g_srv;
static int g_srv_up;
static unsigned char *g_jpeg, *g_jpeg2; /* two synthetic photos */
static size_t g_jpeg_len, g_jpeg2_len;
static unsigned char *g_big; /* one whose decode outlasts a 1 ms deadline */
static size_t g_big_len;
static const unsigned char png_body[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02";

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (!g_srv_up) CHECK(0, "the shared server did not start");                                \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Client helpers                                                           */
/* ------------------------------------------------------------------------ */

/* Standard base64 with padding (RFC 4648); malloc'd, NUL-terminated. */
static char *b64(const unsigned char *p, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc((n + 2) / 3 * 4 + 1), *w = o;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *w++ = a[v >> 18 & 63];
        *w++ = a[v >> 12 & 63];
        *w++ = i + 1 < n ? a[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? a[v & 63] : '=';
    }
    *w = 0;
    return o;
}

/* POST body with extra headers (NULL-terminated), no Content-Type unless given. */
static void post_h(struct resp *r, const struct server *s, const char *path, const void *body,
                   size_t len, const char *const *hdrs) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    const char *none[] = {"Content-Type:", NULL};
    struct req_opts o = {.body = body, .len = len, .hdrs = hdrs ? hdrs : none};
    do_request(r, url, &o);
}

/* POST a JSON document (reference stolen). */
static void post_json(struct resp *r, const struct server *s, const char *path, json_t *j) {
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    const char *h[] = {"Content-Type: application/json", NULL};
    post_h(r, s, path, t, strlen(t), h);
    free(t);
}

/* A v2 BYTES input of n base64 JPEGs, shape [n] (or [n,1]). */
static json_t *v2_bytes_request(const unsigned char *const *imgs, const size_t *lens, int n,
                                int column) {
    json_t *data = json_array();
    for (int i = 0; i < n; i++) {
        char *e = b64(imgs[i], lens[i]);
        json_array_append_new(data, json_string(e));
        free(e);
    }
    json_t *shape = column ? json_pack("[ii]", n, 1) : json_pack("[i]", n);
    return json_pack("{ss s[{ss ss so so}]}", "id", "req-42", "inputs", "name", "image",
                     "datatype", "BYTES", "shape", shape, "data", data);
}

/* {"error": "<text>"} with nothing else: v2 and KServe v1's error shape. */
static const char *check_v2_error(const struct resp *r, long status) {
    static char why[400];
    json_t *j = resp_json(r);
    int ok = r->status == status && j && json_is_string(json_object_get(j, "error")) &&
             json_object_size(j) == 1 && strlen(json_string_value(json_object_get(j, "error")));
    snprintf(why, sizeof why, "status %ld (expected %ld), body %.200s", r->status, status,
             r->body ? r->body : "");
    json_decref(j);
    return ok ? NULL : why;
}

/* TorchServe's {"code": status, "type": "...Exception", "message": "..."}. */
static const char *check_ts_error(const struct resp *r, long status) {
    static char why[400];
    json_t *j = resp_json(r);
    const char *type = json_string_value(json_object_get(j, "type"));
    int ok = r->status == status && json_integer_value(json_object_get(j, "code")) == status &&
             type && strstr(type, "Exception") &&
             json_is_string(json_object_get(j, "message"));
    snprintf(why, sizeof why, "status %ld (expected %ld), body %.200s", r->status, status,
             r->body ? r->body : "");
    json_decref(j);
    return ok ? NULL : why;
}

/* The top-5 of /classify for img: indices and scores. */
static int classify_top5(const unsigned char *img, size_t len, int idx[5], double score[5]) {
    struct resp r;
    post(&r, &g_srv, "/classify", img, len, "image/jpeg");
    json_t *j = resp_json(&r);
    json_t *p = json_object_get(j, "predictions");
    int n = r.status == 200 ? (int)json_array_size(p) : 0;
    for (int i = 0; i < n && i < 5; i++) {
        idx[i] = (int)json_integer_value(json_object_get(json_array_get(p, i), "index"));
        score[i] = json_real_value(json_object_get(json_array_get(p, i), "score"));
    }
    json_decref(j);
    resp_free(&r);
    return n == 5 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Open Inference Protocol v2                                               */
/* ------------------------------------------------------------------------ */

static void test_v2_server_and_health(void) {
    NEED_SERVER();
    struct resp r;
    get(&r, &g_srv, "/v2");
    json_t *j = resp_json(&r);
    CHECK(r.status == 200 && json_is_string(json_object_get(j, "name")) &&
              json_is_string(json_object_get(j, "version")) &&
              json_is_array(json_object_get(j, "extensions")),
          "%ld %.200s", r.status, r.body);
    int bin = 0, cls = 0;
    json_t *e;
    size_t i;
    json_array_foreach(json_object_get(j, "extensions"), i, e) {
        bin |= !strcmp(json_string_value(e) ?: "", "binary_tensor_data");
        cls |= !strcmp(json_string_value(e) ?: "", "classification");
    }
    json_decref(j);
    resp_free(&r);
    CHECK(bin && cls, "extensions lack binary_tensor_data or classification");
    static const struct {
        const char *path, *key;
    } h[] = {{"/v2/health/live", "live"},
             {"/v2/health/ready", "ready"},
             {"/v2/models/resnet18/ready", "ready"},
             {"/v2/models/resnet18/versions/1/ready", "ready"}};
    for (size_t k = 0; k < sizeof h / sizeof h[0]; k++) {
        get(&r, &g_srv, h[k].path);
        char ct[128] = "";
        resp_header(&r, "Content-Type", ct, sizeof ct);
        j = resp_json(&r);
        int ok = r.status == 200 && json_is_true(json_object_get(j, h[k].key)) &&
                 strstr(ct, "application/json");
        json_decref(j);
        char body[200];
        snprintf(body, sizeof body, "%.150s", r.body ? r.body : "");
        resp_free(&r);
        CHECK(ok, "%s: %ld %s", h[k].path, r.status, body);
    }
    get(&r, &g_srv, "/v2/models/nope/ready");
    const char *why = check_v2_error(&r, 404);
    resp_free(&r);
    CHECK(!why, "unknown model ready: %s", why);
}

static void test_v2_model_metadata(void) {
    NEED_SERVER();
    struct resp r;
    const char *paths[] = {"/v2/models/resnet18", "/v2/models/resnet18/versions/1"};
    for (int k = 0; k < 2; k++) {
        get(&r, &g_srv, paths[k]);
        json_t *j = resp_json(&r);
        json_t *in = json_array_get(json_object_get(j, "inputs"), 0);
        json_t *out = json_array_get(json_object_get(j, "outputs"), 0);
        json_t *ish = json_object_get(in, "shape"), *osh = json_object_get(out, "shape");
        int ok = r.status == 200 &&
                 !strcmp(json_string_value(json_object_get(j, "name")) ?: "", "resnet18") &&
                 json_is_array(json_object_get(j, "versions")) &&
                 json_is_string(json_object_get(j, "platform")) &&
                 !strcmp(json_string_value(json_object_get(in, "datatype")) ?: "", "FP32") &&
                 json_integer_value(json_array_get(ish, 0)) == -1 && json_array_size(ish) == 4 &&
                 json_integer_value(json_array_get(ish, 2)) == 224 &&
                 json_integer_value(json_array_get(osh, 0)) == -1 &&
                 json_integer_value(json_array_get(osh, 1)) == 1000;
        json_decref(j);
        char body[300];
        snprintf(body, sizeof body, "%.250s", r.body ? r.body : "");
        resp_free(&r);
        CHECK(ok, "%s: %s", paths[k], body);
    }
    get(&r, &g_srv, "/v2/models/resnet18/config");
    json_t *j = resp_json(&r);
    int ok = r.status == 200 && json_integer_value(json_object_get(j, "max_batch_size")) > 0 &&
             json_array_size(json_object_get(j, "input")) == 1 &&
             json_array_size(json_object_get(j, "output")) >= 1 &&
             json_is_object(json_object_get(j, "dynamic_batching"));
    json_decref(j);
    resp_free(&r);
    CHECK(ok, "config: %.300s", r.body);
    static const char *missing[] = {"/v2/models/nope", "/v2/models/resnet18/versions/7",
                                    "/v2/models/nope/config"};
    for (size_t k = 0; k < sizeof missing / sizeof missing[0]; k++) {
        get(&r, &g_srv, missing[k]);
        const char *why = check_v2_error(&r, 404);
        resp_free(&r);
        CHECK(!why, "%s: %s", missing[k], why);
    }
}

/* The JSON form: base64 BYTES [n] and [n,1]; the id echoed; probabilities
 * agree with /classify; the classification extension; logits. */
static void test_v2_infer_json(void) {
    NEED_SERVER();
    int idx[5];
    double score[5];
    CHECK(classify_top5(g_jpeg, g_jpeg_len, idx, score) == 0);
    const unsigned char *imgs[] = {g_jpeg, g_jpeg2};
    size_t lens[] = {g_jpeg_len, g_jpeg2_len};
    for (int column = 0; column < 2; column++) {
        struct resp r;
        post_json(&r, &g_srv, "/v2/models/resnet18/infer", v2_bytes_request(imgs, lens, 2, column));
        json_t *j = resp_json(&r);
        json_t *o = json_array_get(json_object_get(j, "outputs"), 0);
        json_t *data = json_object_get(o, "data");
        json_t *shape = json_object_get(o, "shape");
        int ok = r.status == 200 &&
                 !strcmp(json_string_value(json_object_get(j, "id")) ?: "", "req-42") &&
                 !strcmp(json_string_value(json_object_get(j, "model_name")) ?: "", "resnet18") &&
                 !strcmp(json_string_value(json_object_get(o, "datatype")) ?: "", "FP32") &&
                 json_integer_value(json_array_get(shape, 0)) == 2 &&
                 json_integer_value(json_array_get(shape, 1)) == 1000 &&
                 json_array_size(data) == 2000;
        double sum = 0, worst = 0;
        for (int i = 0; ok && i < 1000; i++)
            sum += json_number_value(json_array_get(data, (size_t)i));
        for (int i = 0; ok && i < 5; i++) {
            double d = fabs(json_number_value(json_array_get(data, (size_t)idx[i])) - score[i]);
            if (d > worst) worst = d;
        }
        json_decref(j);
        char body[200];
        snprintf(body, sizeof body, "%.150s", r.body ? r.body : "");
        resp_free(&r);
        CHECK(ok, "shape [2%s]: %ld %s", column ? ",1" : "", r.status, body);
        CHECK(fabs(sum - 1) < 1e-3, "probabilities sum to %g", sum);
        CHECK(worst < 1e-5, "v2 and /classify differ by %g", worst);
    }

    /* classification: K=3 as "score:index:label"; logits alongside. */
    json_t *req = v2_bytes_request(imgs, lens, 1, 0);
    json_object_set_new(req, "outputs",
                        json_pack("[{ss s{si}}, {ss}]", "name", "probabilities", "parameters",
                                  "classification", 3, "name", "logits"));
    struct resp r;
    post_json(&r, &g_srv, "/v2/models/resnet18/versions/1/infer", req);
    json_t *j = resp_json(&r);
    json_t *c = json_array_get(json_object_get(j, "outputs"), 0);
    json_t *lg = json_array_get(json_object_get(j, "outputs"), 1);
    const char *first = json_string_value(json_array_get(json_object_get(c, "data"), 0));
    char want[32];
    snprintf(want, sizeof want, ":%d:", idx[0]);
    int ok = r.status == 200 &&
             !strcmp(json_string_value(json_object_get(c, "datatype")) ?: "", "BYTES") &&
             json_integer_value(json_array_get(json_object_get(c, "shape"), 1)) == 3 && first &&
             strstr(first, want) &&
             !strcmp(json_string_value(json_object_get(lg, "name")) ?: "", "logits") &&
             json_array_size(json_object_get(lg, "data")) == 1000;
    json_decref(j);
    resp_free(&r);
    CHECK(ok, "classification + logits: %.300s", r.body);
}

/* The binary tensor extension both ways, and the raw form. */
static void test_v2_infer_binary_and_raw(void) {
    NEED_SERVER();
    int idx[5];
    double score[5];
    CHECK(classify_top5(g_jpeg, g_jpeg_len, idx, score) == 0);
    size_t el = 4 + g_jpeg_len;
    json_t *hdr = json_pack("{s[{ss ss s[i] s{si}}] s[{ss s{sb}}]}", "inputs", "name", "image",
                            "datatype", "BYTES", "shape", 1, "parameters", "binary_data_size",
                            (json_int_t)el, "outputs", "name", "probabilities", "parameters",
                            "binary_data", 1);
    char *h = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t hl = strlen(h);
    unsigned char *body = malloc(hl + el);
    memcpy(body, h, hl);
    uint32_t n32 = (uint32_t)g_jpeg_len; /* little-endian on every machine this runs on */
    memcpy(body + hl, &n32, 4);
    memcpy(body + hl + 4, g_jpeg, g_jpeg_len);
    free(h);
    char ihcl[80];
    snprintf(ihcl, sizeof ihcl, "Inference-Header-Content-Length: %zu", hl);
    const char *hdrs[] = {ihcl, "Content-Type: application/octet-stream", NULL};
    struct resp r;
    post_h(&r, &g_srv, "/v2/models/resnet18/infer", body, hl + el, hdrs);
    free(body);
    char rh[32] = "";
    resp_header(&r, "Inference-Header-Content-Length", rh, sizeof rh);
    size_t rhl = (size_t)atol(rh);
    CHECK(r.status == 200 && rh[0] && rhl < r.len && r.len - rhl == 4000, "%ld, header '%s', %zu bytes",
          r.status, rh, r.len);
    json_error_t e;
    json_t *j = json_loadb(r.body, rhl, 0, &e);
    json_t *o = json_array_get(json_object_get(j, "outputs"), 0);
    long long bds = json_integer_value(json_object_get(json_object_get(o, "parameters"),
                                                       "binary_data_size"));
    json_decref(j);
    float probs[1000];
    memcpy(probs, r.body + rhl, sizeof probs);
    resp_free(&r);
    CHECK(bds == 4000, "binary_data_size %lld", bds);
    CHECK(fabs(probs[idx[0]] - score[0]) < 1e-5, "binary top-1 %g vs /classify %g", probs[idx[0]],
          score[0]);

    /* Raw: Inference-Header-Content-Length: 0, the body is the JPEG. */
    const char *raw[] = {"Inference-Header-Content-Length: 0", "Content-Type: image/jpeg", NULL};
    post_h(&r, &g_srv, "/v2/models/resnet18/infer", g_jpeg, g_jpeg_len, raw);
    j = resp_json(&r);
    o = json_array_get(json_object_get(j, "outputs"), 0);
    double p = json_number_value(json_array_get(json_object_get(o, "data"), (size_t)idx[0]));
    json_decref(j);
    resp_free(&r);
    CHECK(r.status == 200 && fabs(p - score[0]) < 1e-5, "raw: %ld, top-1 %g vs %g", r.status, p,
          score[0]);
}

/* FP32 [1,3,224,224] the client preprocessed, as Triton's image_client
 * sends it: the same answer as the JPEG it came from. */
static void test_v2_infer_fp32(void) {
    NEED_SERVER();
    int idx[5];
    double score[5];
    CHECK(classify_top5(g_jpeg, g_jpeg_len, idx, score) == 0);
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    struct eng_image_limits lim;
    eng_image_limits_default(&lim);
    size_t nf = (size_t)3 * 224 * 224;
    float *t = malloc(nf * sizeof *t);
    CHECK(eng_image_preprocess(g_jpeg, g_jpeg_len, &pp, &lim, t, NULL, 0) == ENG_OK);
    /* As binary data: JSON numbers for 150528 floats would pass the
     * body limit, and tritonclient sends binary anyway. */
    json_t *hdr = json_pack("{s[{ss ss s[iiii] s{si}}]}", "inputs", "name", "input", "datatype",
                            "FP32", "shape", 1, 3, 224, 224, "parameters", "binary_data_size",
                            (json_int_t)(nf * sizeof(float)));
    char *h = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t hl = strlen(h), total = hl + nf * sizeof(float);
    unsigned char *body = malloc(total);
    memcpy(body, h, hl);
    memcpy(body + hl, t, nf * sizeof(float));
    free(h);
    free(t);
    char ihcl[80];
    snprintf(ihcl, sizeof ihcl, "Inference-Header-Content-Length: %zu", hl);
    const char *hdrs[] = {ihcl, NULL};
    struct resp r;
    post_h(&r, &g_srv, "/v2/models/resnet18/infer", body, total, hdrs);
    free(body);
    json_t *j = resp_json(&r);
    json_t *o = json_array_get(json_object_get(j, "outputs"), 0);
    double p = json_number_value(json_array_get(json_object_get(o, "data"), (size_t)idx[0]));
    json_decref(j);
    resp_free(&r);
    CHECK(r.status == 200 && fabs(p - score[0]) < 1e-4, "%ld: top-1 %g vs /classify %g",
          r.status, p, score[0]);
}

static void test_v2_errors(void) {
    NEED_SERVER();
    struct resp r;
    const char *why;
    const char *json_h[] = {"Content-Type: application/json", NULL};
    static const struct {
        const char *body;
        long status;
    } bad[] = {
        {"{not json", 400},
        {"{\"inputs\": []}", 400},
        {"{\"inputs\":[{\"name\":\"i\",\"datatype\":\"INT64\",\"shape\":[1],\"data\":[1]}]}", 400},
        {"{\"inputs\":[{\"name\":\"i\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"@@@\"]}]}",
         400},
        {"{\"inputs\":[{\"name\":\"i\",\"datatype\":\"BYTES\",\"shape\":[2],\"data\":[\"AAAA\"]}]}",
         400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        post_h(&r, &g_srv, "/v2/models/resnet18/infer", bad[i].body, strlen(bad[i].body), json_h);
        why = check_v2_error(&r, bad[i].status);
        resp_free(&r);
        CHECK(!why, "body %s: %s", bad[i].body, why);
    }
    /* 400: a bad Inference-Header-Content-Length. */
    const char *badh[] = {"Inference-Header-Content-Length: 99999", NULL};
    post_h(&r, &g_srv, "/v2/models/resnet18/infer", "{}", 2, badh);
    why = check_v2_error(&r, 400);
    resp_free(&r);
    CHECK(!why, "header longer than the body: %s", why);
    /* 404: unknown model and version, on infer. */
    const unsigned char *imgs[] = {g_jpeg};
    size_t lens[] = {g_jpeg_len};
    post_json(&r, &g_srv, "/v2/models/nope/infer", v2_bytes_request(imgs, lens, 1, 0));
    why = check_v2_error(&r, 404);
    resp_free(&r);
    CHECK(!why, "unknown model: %s", why);
    post_json(&r, &g_srv, "/v2/models/resnet18/versions/9/infer",
              v2_bytes_request(imgs, lens, 1, 0));
    why = check_v2_error(&r, 404);
    resp_free(&r);
    CHECK(!why, "unknown version: %s", why);
    /* 405 in v2's shape, with Allow. */
    get(&r, &g_srv, "/v2/models/resnet18/infer");
    char allow[64] = "";
    resp_header(&r, "Allow", allow, sizeof allow);
    why = check_v2_error(&r, 405);
    resp_free(&r);
    CHECK(!why && !strcmp(allow, "POST"), "GET infer: %s (Allow %s)", why ? why : "", allow);
    /* 413: more images than --max-files (4), and a body over --max-body-bytes. */
    const unsigned char *five[] = {g_jpeg, g_jpeg, g_jpeg, g_jpeg, g_jpeg};
    size_t fl[] = {g_jpeg_len, g_jpeg_len, g_jpeg_len, g_jpeg_len, g_jpeg_len};
    post_json(&r, &g_srv, "/v2/models/resnet18/infer", v2_bytes_request(five, fl, 5, 0));
    why = check_v2_error(&r, 413);
    resp_free(&r);
    CHECK(!why, "5 images: %s", why);
    size_t big = 2500000;
    char *huge = calloc(1, big);
    post_h(&r, &g_srv, "/v2/models/resnet18/infer", huge, big, badh + 1);
    free(huge);
    why = check_v2_error(&r, 413);
    resp_free(&r);
    CHECK(!why, "body over --max-body-bytes: %s", why);
    /* 415: a PNG, in both forms. */
    const unsigned char *png[] = {png_body};
    size_t pl[] = {sizeof png_body - 1};
    post_json(&r, &g_srv, "/v2/models/resnet18/infer", v2_bytes_request(png, pl, 1, 0));
    why = check_v2_error(&r, 415);
    resp_free(&r);
    CHECK(!why, "PNG in JSON: %s", why);
    const char *raw[] = {"Inference-Header-Content-Length: 0", NULL};
    post_h(&r, &g_srv, "/v2/models/resnet18/infer", png_body, sizeof png_body - 1, raw);
    why = check_v2_error(&r, 415);
    resp_free(&r);
    CHECK(!why, "raw PNG: %s", why);
    /* An unknown path under /v2 */
    get(&r, &g_srv, "/v2/models/resnet18/versions/1/infer");
    why = check_v2_error(&r, 405);
    resp_free(&r);
    CHECK(!why, "GET versioned infer: %s", why);
}

/* ------------------------------------------------------------------------ */
/* TorchServe                                                               */
/* ------------------------------------------------------------------------ */

static void test_torchserve(void) {
    NEED_SERVER();
    struct resp r;
    get(&r, &g_srv, "/ping");
    CHECK(r.status == 200 && r.body && strstr(r.body, "\"Healthy\""), "%ld %.100s", r.status,
          r.body);
    resp_free(&r);
    get(&r, &g_srv, "/models");
    json_t *j = resp_json(&r);
    json_t *m = json_array_get(json_object_get(j, "models"), 0);
    int ok = r.status == 200 &&
             !strcmp(json_string_value(json_object_get(m, "modelName")) ?: "", "resnet18") &&
             json_is_string(json_object_get(m, "modelUrl"));
    json_decref(j);
    resp_free(&r);
    CHECK(ok, "/models: %.200s", r.body);

    int idx[5];
    double score[5];
    CHECK(classify_top5(g_jpeg, g_jpeg_len, idx, score) == 0);
    /* raw body, versioned path, multipart "data" and "file" */
    for (int form = 0; form < 4; form++) {
        char url[256];
        snprintf(url, sizeof url, "%s/predictions/resnet18%s", g_srv.base,
                 form == 1 ? "/1.0" : "");
        curl_mime *mime = NULL;
        CURL *easy = curl_easy_init();
        if (form >= 2) {
            mime = curl_mime_init(easy);
            curl_mimepart *part = curl_mime_addpart(mime);
            curl_mime_name(part, form == 2 ? "data" : "file");
            curl_mime_filename(part, "cat.jpg");
            curl_mime_data(part, (const char *)g_jpeg, g_jpeg_len);
        }
        const char *hdrs[] = {"Content-Type: application/octet-stream", NULL};
        struct req_opts o = {.body = g_jpeg, .len = g_jpeg_len, .hdrs = mime ? NULL : hdrs,
                             .mime = mime, .easy = easy};
        do_request(&r, url, &o);
        curl_mime_free(mime);
        curl_easy_cleanup(easy);
        j = resp_json(&r);
        /* The image classifier's shape: label -> probability, 5, descending. */
        double prev = 2, first = -1;
        int n = 0, sorted = 1;
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            double s = json_number_value(v);
            if (s > prev) sorted = 0;
            if (n++ == 0) first = s;
            prev = s;
        }
        json_decref(j);
        char body[200];
        snprintf(body, sizeof body, "%.150s", r.body ? r.body : "");
        resp_free(&r);
        CHECK(r.status == 200 && n == 5 && sorted && fabs(first - score[0]) < 1e-6,
              "form %d: %ld %s", form, r.status, body);
    }

    /* Errors: 404 model and version, 400 empty body and no image part, 415, 413, 405. */
    const char *why;
    post(&r, &g_srv, "/predictions/nope", g_jpeg, g_jpeg_len, "image/jpeg");
    why = check_ts_error(&r, 404);
    resp_free(&r);
    CHECK(!why, "unknown model: %s", why);
    post(&r, &g_srv, "/predictions/resnet18/3.0", g_jpeg, g_jpeg_len, "image/jpeg");
    why = check_ts_error(&r, 404);
    resp_free(&r);
    CHECK(!why, "unknown version: %s", why);
    post(&r, &g_srv, "/predictions/resnet18", "", 0, "image/jpeg");
    why = check_ts_error(&r, 400);
    resp_free(&r);
    CHECK(!why, "empty body: %s", why);
    static const char mp[] = "--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\n"
                             "hello\r\n--XyZ--\r\n";
    post(&r, &g_srv, "/predictions/resnet18", mp, sizeof mp - 1,
         "multipart/form-data; boundary=XyZ");
    why = check_ts_error(&r, 400);
    resp_free(&r);
    CHECK(!why, "no data/file part: %s", why);
    post(&r, &g_srv, "/predictions/resnet18", png_body, sizeof png_body - 1, "image/png");
    why = check_ts_error(&r, 415);
    resp_free(&r);
    CHECK(!why, "PNG: %s", why);
    size_t big = 2500000;
    char *huge = calloc(1, big);
    post(&r, &g_srv, "/predictions/resnet18", huge, big, "image/jpeg");
    free(huge);
    why = check_ts_error(&r, 413);
    resp_free(&r);
    CHECK(!why, "body over --max-body-bytes: %s", why);
    get(&r, &g_srv, "/predictions/resnet18");
    why = check_ts_error(&r, 405);
    resp_free(&r);
    CHECK(!why, "GET predictions: %s", why);
}

/* ------------------------------------------------------------------------ */
/* KServe v1                                                                */
/* ------------------------------------------------------------------------ */

static void test_kserve_v1(void) {
    NEED_SERVER();
    struct resp r;
    get(&r, &g_srv, "/v1/models");
    json_t *j = resp_json(&r);
    int ok = r.status == 200 && json_array_size(json_object_get(j, "models")) == 1 &&
             !strcmp(json_string_value(json_array_get(json_object_get(j, "models"), 0)) ?: "",
                     "resnet18");
    json_decref(j);
    resp_free(&r);
    CHECK(ok, "/v1/models: %.200s", r.body);
    get(&r, &g_srv, "/v1/models/resnet18");
    j = resp_json(&r);
    ok = r.status == 200 && json_is_true(json_object_get(j, "ready")) &&
         !strcmp(json_string_value(json_object_get(j, "name")) ?: "", "resnet18") &&
         json_is_object(json_object_get(j, "preprocessing")) &&
         json_is_object(json_object_get(j, "batching")) &&
         json_is_object(json_object_get(j, "limits")) &&
         json_is_string(json_object_get(j, "weights")) &&
         json_is_string(json_object_get(j, "precision"));
    json_decref(j);
    resp_free(&r);
    CHECK(ok, "/v1/models/resnet18: %.300s", r.body);

    int idx[5];
    double score[5];
    CHECK(classify_top5(g_jpeg, g_jpeg_len, idx, score) == 0);
    char *e = b64(g_jpeg, g_jpeg_len);
    json_t *req = json_pack("{s[{ss} {s{ss}} s]}", "instances", "b64", e, "image", "b64", e, e);
    free(e);
    post_json(&r, &g_srv, "/v1/models/resnet18:predict", req);
    j = resp_json(&r);
    json_t *p = json_object_get(j, "predictions");
    ok = r.status == 200 && json_array_size(p) == 3;
    for (size_t i = 0; ok && i < 3; i++) {
        json_t *top = json_array_get(json_array_get(p, i), 0);
        ok = json_array_size(json_array_get(p, i)) == 5 &&
             json_integer_value(json_object_get(top, "index")) == idx[0] &&
             json_is_string(json_object_get(top, "label")) &&
             fabs(json_number_value(json_object_get(top, "score")) - score[0]) < 1e-6;
    }
    json_decref(j);
    resp_free(&r);
    CHECK(ok, "predict, three instance forms: %.300s", r.body);

    const char *why;
    const char *jh[] = {"Content-Type: application/json", NULL};
    static const char *bad[] = {"[1,2]", "{\"instances\": 5}", "{\"instances\": [{\"b64\": 7}]}",
                                "{\"instances\": [\"%%%\"]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        post_h(&r, &g_srv, "/v1/models/resnet18:predict", bad[i], strlen(bad[i]), jh);
        why = check_v2_error(&r, 400);
        resp_free(&r);
        CHECK(!why, "%s: %s", bad[i], why);
    }
    post_h(&r, &g_srv, "/v1/models/nope:predict", "{\"instances\":[\"AAAA\"]}", 22, jh);
    why = check_v2_error(&r, 404);
    resp_free(&r);
    CHECK(!why, "unknown model: %s", why);
    get(&r, &g_srv, "/v1/models/nope");
    why = check_v2_error(&r, 404);
    resp_free(&r);
    CHECK(!why, "unknown model details: %s", why);
    e = b64(g_jpeg, 16);
    req = json_pack("{s[sssss]}", "instances", e, e, e, e, e);
    free(e);
    post_json(&r, &g_srv, "/v1/models/resnet18:predict", req);
    why = check_v2_error(&r, 413);
    resp_free(&r);
    CHECK(!why, "5 instances: %s", why);
    e = b64(png_body, sizeof png_body - 1);
    post_json(&r, &g_srv, "/v1/models/resnet18:predict", json_pack("{s[s]}", "instances", e));
    free(e);
    why = check_v2_error(&r, 415);
    resp_free(&r);
    CHECK(!why, "PNG: %s", why);
    get(&r, &g_srv, "/v1/models/resnet18:predict");
    CHECK(r.status == 404, "GET :predict names no model: %ld", r.status);
    resp_free(&r);
    post_h(&r, &g_srv, "/v1/models/resnet18", "{}", 2, jh);
    why = check_v2_error(&r, 405);
    resp_free(&r);
    CHECK(!why, "POST model details: %s", why);
}

/* ------------------------------------------------------------------------ */
/* 503 (queue full, not ready) and 504, in each protocol's shape            */
/* ------------------------------------------------------------------------ */

enum proto { P_V2, P_TS, P_V1, P_COUNT };

/* One inference request of the protocol for img. */
static void proto_request(struct resp *r, const struct server *s, enum proto p,
                          const unsigned char *img, size_t len) {
    const unsigned char *imgs[] = {img};
    size_t lens[] = {len};
    if (p == P_V2) {
        post_json(r, s, "/v2/models/resnet18/infer", v2_bytes_request(imgs, lens, 1, 0));
    } else if (p == P_TS) {
        post(r, s, "/predictions/resnet18", img, len, "image/jpeg");
    } else {
        char *e = b64(img, len);
        post_json(r, s, "/v1/models/resnet18:predict", json_pack("{s[s]}", "instances", e));
        free(e);
    }
}

static const char *proto_error(const struct resp *r, enum proto p, long status) {
    return p == P_TS ? check_ts_error(r, status) : check_v2_error(r, status);
}

struct burst {
    const struct server *s;
    enum proto p;
    long status;
    char retry[16];
    const char *why;
};

static void *burst_main(void *arg) {
    struct burst *b = arg;
    struct resp r;
    proto_request(&r, b->s, b->p, g_jpeg, g_jpeg_len);
    b->status = r.status;
    resp_header(&r, "Retry-After", b->retry, sizeof b->retry);
    b->why = r.status == 503 ? proto_error(&r, b->p, 503) : NULL;
    resp_free(&r);
    return NULL;
}

static void test_queue_full_503(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--queue-limit",      "1", "--max-batch",  "1",   "--workers", "1",
                          "--batch-timeout-us", "0", "--access-log", "off", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    enum { N = 24 };
    int full[P_COUNT] = {0}, bad = 0;
    char odd[300] = "";
    for (int p = 0; p < P_COUNT; p++) {
        pthread_t th[N];
        struct burst b[N];
        for (int i = 0; i < N; i++) {
            b[i] = (struct burst){.s = &s, .p = (enum proto)p};
            pthread_create(&th[i], NULL, burst_main, &b[i]);
        }
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            if (b[i].status == 503 && !b[i].why && atoi(b[i].retry) >= 1) {
                full[p]++;
            } else if (b[i].status != 200) {
                bad++;
                snprintf(odd, sizeof odd, "protocol %d: %ld retry '%s' %s", p, b[i].status,
                         b[i].retry, b[i].why ? b[i].why : "");
            }
        }
    }
    int rc = server_stop(&s);
    CHECK(bad == 0, "%d odd answers, e.g. %s", bad, odd);
    CHECK(full[P_V2] && full[P_TS] && full[P_V1], "503s: v2 %d, TorchServe %d, KServe %d",
          full[P_V2], full[P_TS], full[P_V1]);
    CHECK(rc == 0, "exit %d: %s", rc, log_tail(&s));
}

/* While draining: readiness is 503 (v2), 500 Unhealthy (TorchServe). */
static void test_not_ready(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--drain-seconds", "60", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    kill(s.pid, SIGTERM);
    char url[128];
    snprintf(url, sizeof url, "%s/readyz", s.base);
    for (int i = 0; i < 200 && http_status(url, NULL, 0) != 503; i++)
        sleep_ms(10);
    struct resp r;
    get(&r, &s, "/v2/health/ready");
    json_t *j = resp_json(&r);
    int v2 = r.status == 503 && json_is_false(json_object_get(j, "ready"));
    json_decref(j);
    resp_free(&r);
    get(&r, &s, "/v2/models/resnet18/ready");
    int v2m = r.status == 503;
    resp_free(&r);
    get(&r, &s, "/ping");
    int ts = r.status == 500 && r.body && strstr(r.body, "Unhealthy");
    resp_free(&r);
    get(&r, &s, "/v2/health/live");
    int live = r.status == 200;
    resp_free(&r);
    kill(s.pid, SIGTERM); /* a second signal ends the drain */
    int rc = server_wait(&s, 60);
    CHECK(v2 && v2m, "v2 readiness while draining");
    CHECK(ts, "TorchServe ping while draining");
    CHECK(live, "v2 liveness while draining");
    CHECK(rc == 0, "exit %d", rc);
}

static void test_deadline_504(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--request-timeout-ms", "1", "--max-body-bytes", "8000000", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    const char *bad = NULL;
    for (int p = 0; p < P_COUNT && !bad; p++) {
        struct resp r;
        proto_request(&r, &s, (enum proto)p, g_big, g_big_len);
        bad = proto_error(&r, (enum proto)p, 504);
        resp_free(&r);
    }
    int rc = server_stop(&s);
    CHECK(!bad, "%s", bad);
    CHECK(rc == 0, "exit %d", rc);
}

/* Several models (issue 12.4): the same weights as fp32 and int8 under two
 * names, each reachable by every protocol and by /classify?model=. */
static void test_several_models(void) {
    char e[256];
    if (eng_precision_supported(ENG_PRECISION_INT8, e, sizeof e) != ENG_OK)
        SKIP("this CPU has no int8 kernels: %s", e);
    struct server s;
    char why[512];
    const char *args[] = {"--model", "random:resnet18", "--model", "r18q=random:resnet18@int8",
                          NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    struct resp r;
    get(&r, &s, "/v1/models");
    int names = r.body && strstr(r.body, "[\"resnet18\",\"r18q\"]");
    resp_free(&r);
    get(&r, &s, "/v1/models/r18q");
    json_t *j = resp_json(&r);
    int prec = !strcmp(json_string_value(json_object_get(j, "precision")) ?: "", "int8");
    json_decref(j);
    resp_free(&r);
    post(&r, &s, "/classify?model=r18q", g_jpeg, g_jpeg_len, "image/jpeg");
    j = resp_json(&r);
    int picked = r.status == 200 &&
                 !strcmp(json_string_value(json_object_get(j, "model")) ?: "", "r18q");
    json_decref(j);
    resp_free(&r);
    post(&r, &s, "/classify?model=nope", g_jpeg, g_jpeg_len, "image/jpeg");
    const char *unknown = check_error(&r, 404, "unknown_model");
    resp_free(&r);
    const char *raw[] = {"Inference-Header-Content-Length: 0", NULL};
    post_h(&r, &s, "/v2/models/r18q/infer", g_jpeg, g_jpeg_len, raw);
    int v2 = r.status == 200 && r.body && strstr(r.body, "\"model_name\":\"r18q\"");
    resp_free(&r);
    get(&r, &s, "/metrics");
    int info = r.body && strstr(r.body, "model=\"r18q\",precision=\"int8\"} 1") &&
               strstr(r.body, "model=\"resnet18\",precision=\"fp32\"} 1") &&
               strstr(r.body, "imgclassd_model_queue_depth{model=\"r18q\"}");
    resp_free(&r);
    int rc = server_stop(&s);
    CHECK(names, "/v1/models does not list both");
    CHECK(prec, "/v1/models/r18q precision");
    CHECK(picked, "/classify?model=r18q");
    CHECK(!unknown, "/classify?model=nope: %s", unknown);
    CHECK(v2, "v2 infer on r18q");
    CHECK(info, "imgclassd_model_info per model");
    CHECK(rc == 0, "exit %d", rc);
}

int main(int argc, char **argv) {
    (void)argc;
    t_suite = "protocols";
    if (harness_init(argv[0]) != 0) return 1;
    g_jpeg = gen_jpeg(320, 240, 3, 0, &g_jpeg_len);
    g_jpeg2 = gen_jpeg(200, 300, 8, 0, &g_jpeg2_len);
    g_big = gen_jpeg(1800, 1400, 5, 0, &g_big_len);
    char why[512];
    g_case = "setup";
    alarm(600);
    const char *args[] = {"--max-batch", "4", "--max-files", "4", "--max-body-bytes", "2000000",
                          NULL};
    if (server_spawn(&g_srv, args, NULL, 1, why, sizeof why) == 0)
        g_srv_up = 1;
    else
        printf("# shared server: %s\n", why);
    alarm(0);

    RUN_T(test_v2_server_and_health, 120);
    RUN_T(test_v2_model_metadata, 120);
    RUN_T(test_v2_infer_json, 300);
    RUN_T(test_v2_infer_binary_and_raw, 300);
    RUN_T(test_v2_infer_fp32, 300);
    RUN_T(test_v2_errors, 300);
    RUN_T(test_torchserve, 300);
    RUN_T(test_kserve_v1, 300);
    int rc = server_stop(&g_srv);
    if (g_srv_up && rc != 0) {
        printf("FAIL protocols.shared_server_exit: exit status %d; log: %s\n", rc,
               log_tail(&g_srv));
        t_nfail++;
    }
    RUN_T(test_queue_full_503, 600);
    RUN_T(test_not_ready, 300);
    RUN_T(test_deadline_504, 300);
    RUN_T(test_several_models, 300);
    free(g_jpeg);
    free(g_jpeg2);
    free(g_big);
    curl_global_cleanup();
    return t_done();
}
