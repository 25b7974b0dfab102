/* test_api.c: the protocol parsers and renderers (server/api*.c): strict
 * base64; Open Inference Protocol v2 requests in every form (JSON base64,
 * binary tensors, raw, FP32) and every error; TorchServe and KServe v1;
 * the metadata bodies; and a mutation loop that must never read outside
 * the body (run it under ASan). */
#include "test.h"

#include "api.h"

#include <math.h>
#include <stdint.h>
#include <unistd.h>

static char err[512];

/* A small model: 5 classes, FP32 inputs [3][2][2]. */
static const struct srv_api_model small = {
    .name = "tiny",
    .version = "1",
    .platform = "imgclassd",
    .arch = "resnet18",
    .precision = "fp32",
    .source = "random:resnet18:0",
    .labels = NULL,
    .classes = 5,
    .input_size = 2,
    .max_batch = 8,
    .batch_timeout_us = 2000,
    .instances = 2,
    .ready = 1,
};

static const float logits5[2][5] = {{0.5f, 3.0f, -1.0f, 2.0f, 0.0f},
                                    {4.0f, 1.0f, 1.0f, 0.0f, -2.0f}};

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* Standard base64 of p[0..n) into out (NUL-terminated), padded or not. */
static void b64(const void *p, size_t n, char *out, int pad) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n) v |= s[i + 2];
        size_t chars = n - i >= 3 ? 4 : n - i + 1;
        for (size_t k = 0; k < 4; k++) {
            if (k < chars)
                out[o++] = a[(v >> (18 - 6 * k)) & 63];
            else if (pad)
                out[o++] = '=';
        }
    }
    out[o] = 0;
}

static enum srv_api_status v2(const char *body, size_t len, const char *hlen, int max,
                              struct srv_api_request *r) {
    err[0] = 0;
    return srv_v2_parse_infer((const unsigned char *)body, len, hlen, &small, max, r, err,
                              sizeof err);
}

/* Parses a v2 JSON body; returns its status, frees the request. */
static enum srv_api_status v2_status(const char *body) {
    struct srv_api_request r;
    enum srv_api_status st = v2(body, strlen(body), NULL, 4, &r);
    srv_api_request_free(&r);
    return st;
}

/* A request that must fail: its status and a word its message holds. */
struct bad_case {
    const char *body;
    enum srv_api_status st;
    const char *word;
};

/* Results for n images with the fixed logits. */
static void ok_results(struct srv_api_result *res, int n) {
    for (int i = 0; i < n; i++)
        res[i] = (struct srv_api_result){logits5[i % 2], 0, NULL};
}

/* The JSON part of a rendered body. */
static json_t *body_json(const struct srv_api_body *b) {
    size_t n = b->binary ? b->header_len : b->len;
    return json_loadb(b->data, n, 0, NULL);
}

/* ------------------------------------------------------------------------ */
/* Base64                                                                   */
/* ------------------------------------------------------------------------ */

static int dec(const char *s, char *out, size_t *n) {
    return srv_base64_decode(s, strlen(s), (unsigned char *)out, 64, n);
}

static void test_base64_good(void) {
    char out[64];
    size_t n = 99;
    CHECK(dec("", out, &n) == 0 && n == 0);
    CHECK(dec("TWFu", out, &n) == 0 && n == 3 && !memcmp(out, "Man", 3));
    CHECK(dec("TWE=", out, &n) == 0 && n == 2 && !memcmp(out, "Ma", 2));
    CHECK(dec("TWE", out, &n) == 0 && n == 2 && !memcmp(out, "Ma", 2), "no padding accepted");
    CHECK(dec("TQ==", out, &n) == 0 && n == 1 && out[0] == 'M');
    CHECK(dec("TQ", out, &n) == 0 && n == 1 && out[0] == 'M');
    CHECK(dec("+/+/", out, &n) == 0 && n == 3 && (unsigned char)out[0] == 0xfb);
    /* every length, every byte value, padded and not */
    unsigned char src[200];
    for (int i = 0; i < 200; i++)
        src[i] = (unsigned char)(i * 37 + 11);
    for (size_t len = 0; len <= 200; len++) {
        for (int pad = 0; pad < 2; pad++) {
            char enc[300];
            unsigned char back[200];
            b64(src, len, enc, pad);
            size_t got = 0;
            CHECK(srv_base64_decoded_max(strlen(enc)) >= len);
            CHECK(srv_base64_decode(enc, strlen(enc), back, sizeof back, &got) == 0, "len %zu",
                  len);
            CHECK(got == len && !memcmp(back, src, len), "len %zu", len);
        }
    }
}

static void test_base64_bad(void) {
    char out[64];
    size_t n;
    const char *bad[] = {
        "T",    "TWFuT", "TWE==", "TQ=",  "TQ===", "=TWF",  "TW=u", "TW E",     "TWFu\n",
        "TWF-", "TWF_",  "TR==",  "TWF=", "TWFu=", "TW\0u", "====", "TWFu====", "é"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(dec(bad[i], out, &n) == -1, "accepted \"%s\"", bad[i]);
    /* NUL inside is a bad character too */
    CHECK(srv_base64_decode("TW\0u", 4, (unsigned char *)out, sizeof out, &n) == -1);
    /* a buffer too small is refused, not overrun */
    CHECK(srv_base64_decode("TWFuTWFu", 8, (unsigned char *)out, 5, &n) == -1);
}

/* ------------------------------------------------------------------------ */
/* v2: requests                                                             */
/* ------------------------------------------------------------------------ */

static void test_v2_json_bytes(void) {
    char a[16], b[16], body[512];
    b64("\xff\xd8jpeg-1", 8, a, 1);
    b64("\xff\xd8img2!", 7, b, 0);
    snprintf(
        body, sizeof body,
        "{\"id\":\"req-7\",\"inputs\":[{\"name\":\"image\",\"shape\":[2],\"datatype\":\"BYTES\","
        "\"data\":[\"%s\",\"%s\"]}]}",
        a, b);
    struct srv_api_request r;
    CHECK(v2(body, strlen(body), NULL, 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.n == 2 && r.id && !strcmp(r.id, "req-7") && !strcmp(r.input_name, "image"));
    CHECK(r.images[0].kind == SRV_API_IMAGE_JPEG && r.images[0].len == 8 &&
          !memcmp(r.images[0].data, "\xff\xd8jpeg-1", 8));
    CHECK(r.images[1].len == 7 && !memcmp(r.images[1].data, "\xff\xd8img2!", 7));
    CHECK(r.noutputs == 1 && r.outputs[0].kind == SRV_API_OUT_PROBS &&
          r.outputs[0].classification == 0 && !r.outputs[0].binary);
    srv_api_request_free(&r);
    /* [n,1], nested data, the KServe convention */
    snprintf(body, sizeof body,
             "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,1],\"datatype\":\"BYTES\","
             "\"data\":[[\"%s\"],[\"%s\"]]}]}",
             a, b);
    CHECK(v2(body, strlen(body), NULL, 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.n == 2 && !r.id && r.images[1].len == 7);
    srv_api_request_free(&r);
}

/* Two binary BYTES elements, "abc" and "de" (13 bytes). */
static const unsigned char abc_de[13] = {3, 0, 0, 0, 'a', 'b', 'c', 2, 0, 0, 0, 'd', 'e'};

/* Builds JSON header + binary into buf; returns the total length and
 * writes the header length as text into hl. */
static size_t with_binary(char *buf, const char *json, const void *bin, size_t binlen, char *hl) {
    size_t j = strlen(json);
    memcpy(buf, json, j);
    memcpy(buf + j, bin, binlen);
    sprintf(hl, "%zu", j);
    return j + binlen;
}

static void test_v2_binary_bytes(void) {
    const char *json = "{\"inputs\":[{\"name\":\"in\",\"shape\":[2],\"datatype\":\"BYTES\","
                       "\"parameters\":{\"binary_data_size\":13}}],"
                       "\"outputs\":[{\"name\":\"probabilities\","
                       "\"parameters\":{\"classification\":3,\"binary_data\":true}}]}";
    char buf[512], hl[32];
    size_t len = with_binary(buf, json, abc_de, sizeof abc_de, hl);
    struct srv_api_request r;
    CHECK(v2(buf, len, hl, 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.n == 2 && r.images[0].len == 3 && !memcmp(r.images[0].data, "abc", 3));
    /* binary elements are borrowed from the body */
    CHECK(r.images[1].data == (const unsigned char *)buf + len - 2 && r.images[1].len == 2);
    CHECK(r.outputs[0].classification == 3 && r.outputs[0].binary == 1);
    srv_api_request_free(&r);
}

static void test_v2_raw(void) {
    struct srv_api_request r;
    CHECK(v2("\xff\xd8\xff raw jpeg", 13, "0", 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.n == 1 && r.images[0].len == 13 && r.noutputs == 1);
    srv_api_request_free(&r);
    CHECK(v2("", 0, "0", 4, &r) == SRV_API_ERR_BAD_REQUEST && strstr(err, "empty"));
    srv_api_request_free(&r);
}

static void test_v2_fp32(void) {
    /* flat JSON */
    const char *flat = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                       "\"data\":[0,1,2,3,4,5,6,7,8,9,10,-11.5]}]}";
    struct srv_api_request r;
    CHECK(v2(flat, strlen(flat), NULL, 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.n == 1 && r.images[0].kind == SRV_API_IMAGE_TENSOR && r.images[0].tensor[11] == -11.5f);
    srv_api_request_free(&r);
    /* nested JSON, two images */
    const char *nested =
        "{\"inputs\":[{\"name\":\"input\",\"shape\":[2,3,2,2],\"datatype\":\"FP32\",\"data\":"
        "[[[[1,2],[3,4]],[[5,6],[7,8]],[[9,10],[11,12]]],"
        "[[[13,14],[15,16]],[[17,18],[19,20]],[[21,22],[23,24]]]]}]}";
    CHECK(v2(nested, strlen(nested), NULL, 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.n == 2 && r.images[1].tensor[0] == 13.0f && r.images[1].tensor[11] == 24.0f);
    srv_api_request_free(&r);
    /* binary */
    float x[12];
    for (int i = 0; i < 12; i++)
        x[i] = (float)i / 4;
    const char *json = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                       "\"parameters\":{\"binary_data_size\":48}}],\"parameters\":"
                       "{\"binary_data_output\":true}}";
    char buf[512], hl[32];
    size_t len = with_binary(buf, json, x, sizeof x, hl);
    CHECK(v2(buf, len, hl, 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.images[0].tensor[5] == 1.25f && r.outputs[0].binary == 1);
    srv_api_request_free(&r);
    /* a non-finite value is refused */
    x[3] = NAN;
    len = with_binary(buf, json, x, sizeof x, hl);
    CHECK(v2(buf, len, hl, 4, &r) == SRV_API_ERR_BAD_REQUEST && strstr(err, "element 3"), "%s",
          err);
    srv_api_request_free(&r);
}

static void test_v2_outputs(void) {
    const char *body =
        "{\"inputs\":[{\"name\":\"i\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"QUJD\"]}],"
        "\"parameters\":{\"binary_data_output\":true},"
        "\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"binary_data\":false}},"
        "{\"name\":\"probabilities\",\"parameters\":{\"classification\":2}}]}";
    struct srv_api_request r;
    CHECK(v2(body, strlen(body), NULL, 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.noutputs == 2);
    CHECK(r.outputs[0].kind == SRV_API_OUT_LOGITS && !r.outputs[0].binary);
    CHECK(r.outputs[1].kind == SRV_API_OUT_PROBS && r.outputs[1].binary &&
          r.outputs[1].classification == 2);
    srv_api_request_free(&r);
}

/* Each bad request, its status and a word its message must contain. */
static void test_v2_errors(void) {
    const char *in1 = "{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"QUJD\"]}";
    char body[1024];
    const struct bad_case cases[] = {
        {"{", SRV_API_ERR_BAD_REQUEST, "invalid JSON"},
        {"[1]", SRV_API_ERR_BAD_REQUEST, "JSON object"},
        {"{}", SRV_API_ERR_BAD_REQUEST, "\"inputs\""},
        {"{\"inputs\":[]}", SRV_API_ERR_BAD_REQUEST, "exactly one"},
        {"{\"inputs\":[1]}", SRV_API_ERR_BAD_REQUEST, "object"},
        {"{\"id\":5,\"inputs\":[%s]}", SRV_API_ERR_BAD_REQUEST, "\"id\""},
        {"{\"inputs\":[%s,%s]}", SRV_API_ERR_BAD_REQUEST, "got 2"},
        {"{\"inputs\":[{\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"QUJD\"]}]}",
         SRV_API_ERR_BAD_REQUEST, "\"name\""},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"INT8\",\"data\":[1]}]}",
         SRV_API_ERR_BAD_REQUEST, "INT8"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[2,2],\"datatype\":\"BYTES\",\"data\":[]}]}",
         SRV_API_ERR_BAD_REQUEST, "got [2,2]"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[0],\"datatype\":\"BYTES\",\"data\":[]}]}",
         SRV_API_ERR_BAD_REQUEST, "no image"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[5],\"datatype\":\"BYTES\",\"data\":[]}]}",
         SRV_API_ERR_TOO_LARGE, "at most 4"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1,-1],\"datatype\":\"BYTES\",\"data\":[]}]}",
         SRV_API_ERR_BAD_REQUEST, ">= 0"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[4294967296,4294967296,4294967296],"
         "\"datatype\":\"BYTES\",\"data\":[]}]}",
         SRV_API_ERR_TOO_LARGE, "too many"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":\"1\",\"datatype\":\"BYTES\",\"data\":[]}]}",
         SRV_API_ERR_BAD_REQUEST, "shape"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[2],\"datatype\":\"BYTES\","
         "\"data\":[\"QUJD\"]}]}",
         SRV_API_ERR_BAD_REQUEST, "exactly 2"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\","
         "\"data\":[\"QUJD\",\"QUJD\"]}]}",
         SRV_API_ERR_BAD_REQUEST, "exactly 1"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[7]}]}",
         SRV_API_ERR_BAD_REQUEST, "base64 strings"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[2],\"datatype\":\"BYTES\","
         "\"data\":[\"QUJD\",\"QU JD\"]}]}",
         SRV_API_ERR_BAD_REQUEST, "input 'img' element 1: invalid base64"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"\"]}]}",
         SRV_API_ERR_BAD_REQUEST, "empty"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\"}]}",
         SRV_API_ERR_BAD_REQUEST, "no \"data\""},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"QUJD\"],"
         "\"parameters\":{\"binary_data_size\":0}}]}",
         SRV_API_ERR_BAD_REQUEST, "both"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\","
         "\"parameters\":{\"binary_data_size\":4}}]}",
         SRV_API_ERR_BAD_REQUEST, "claims 4 bytes"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\","
         "\"parameters\":{\"binary_data_size\":-4}}]}",
         SRV_API_ERR_BAD_REQUEST, ">= 0"},
        {"{\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\","
         "\"parameters\":[]}]}",
         SRV_API_ERR_BAD_REQUEST, "\"parameters\""},
        {"{\"inputs\":[{\"name\":\"t\",\"shape\":[1,3,4,4],\"datatype\":\"FP32\",\"data\":[]}]}",
         SRV_API_ERR_BAD_REQUEST, "[n,3,2,2], got [1,3,4,4]"},
        {"{\"inputs\":[{\"name\":\"t\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
         "\"data\":[1,2,3]}]}",
         SRV_API_ERR_BAD_REQUEST, "exactly 12 numbers"},
        {"{\"inputs\":[{\"name\":\"t\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
         "\"data\":[[[[[1]]]]]}]}",
         SRV_API_ERR_BAD_REQUEST, "exactly 12"},
        {"{\"inputs\":[{\"name\":\"t\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
         "\"data\":[1,2,3,4,5,6,7,8,9,10,11,\"x\"]}]}",
         SRV_API_ERR_BAD_REQUEST, "numbers"},
        {"{\"inputs\":[%s],\"outputs\":{}}", SRV_API_ERR_BAD_REQUEST, "\"outputs\""},
        {"{\"inputs\":[%s],\"outputs\":[{\"name\":\"scores\"}]}", SRV_API_ERR_BAD_REQUEST,
         "unknown output 'scores'"},
        {"{\"inputs\":[%s],\"outputs\":[{}]}", SRV_API_ERR_BAD_REQUEST, "\"name\""},
        {"{\"inputs\":[%s],\"outputs\":[{\"name\":\"logits\"},{\"name\":\"logits\"}]}",
         SRV_API_ERR_BAD_REQUEST, "twice"},
        {"{\"inputs\":[%s],\"outputs\":[{\"name\":\"logits\",\"parameters\":"
         "{\"classification\":6}}]}",
         SRV_API_ERR_BAD_REQUEST, "0..5"},
        {"{\"inputs\":[%s],\"outputs\":[{\"name\":\"logits\",\"parameters\":"
         "{\"classification\":\"2\"}}]}",
         SRV_API_ERR_BAD_REQUEST, "classification"},
        {"{\"inputs\":[%s],\"outputs\":[{\"name\":\"logits\",\"parameters\":"
         "{\"binary_data\":1}}]}",
         SRV_API_ERR_BAD_REQUEST, "binary_data must be"},
        {"{\"inputs\":[%s],\"parameters\":{\"binary_data_output\":\"yes\"}}",
         SRV_API_ERR_BAD_REQUEST, "binary_data_output"},
        {"{\"inputs\":[%s],\"inputs\":[%s]}", SRV_API_ERR_BAD_REQUEST, "duplicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(body, sizeof body, cases[i].body, in1, in1);
        enum srv_api_status st = v2_status(body);
        CHECK(st == cases[i].st, "case %zu: status %d, want %d (%s)", i, st, cases[i].st, err);
        CHECK(strstr(err, cases[i].word), "case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].word);
    }
    CHECK(v2_status(in1) == SRV_API_ERR_BAD_REQUEST); /* an input is not a request */
}

static void test_v2_binary_errors(void) {
    char buf[512], hl[32];
    struct srv_api_request r;
    const char *json = "{\"inputs\":[{\"name\":\"in\",\"shape\":[2],\"datatype\":\"BYTES\","
                       "\"parameters\":{\"binary_data_size\":9}}]}";
    struct {
        unsigned char bin[9];
        const char *word;
    } cases[] = {
        {{3, 0, 0, 0, 'a', 'b', 'c', 1, 0}, "before element 1"},
        {{3, 0, 0, 0, 'a', 'b', 'c', 0, 0}, "before element 1"},
        {{9, 0, 0, 0, 'a', 'b', 'c', 1, 0}, "claims 9 bytes"},
        {{0, 0, 0, 0, 1, 0, 0, 0, 'x'}, "element 0 is empty"},
        {{1, 0, 0, 0, 'a', 0xff, 0xff, 0xff, 0xff}, "claims 4294967295"},
        {{1, 0, 0, 0, 'a', 0, 0, 0, 0}, "element 1 is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len = with_binary(buf, json, cases[i].bin, 9, hl);
        CHECK(v2(buf, len, hl, 4, &r) == SRV_API_ERR_BAD_REQUEST, "case %zu", i);
        CHECK(strstr(err, cases[i].word), "case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].word);
        srv_api_request_free(&r);
    }
    /* left-over bytes after the elements */
    const unsigned char extra[9] = {1, 0, 0, 0, 'a', 1, 0, 0, 0};
    const char *json1 = "{\"inputs\":[{\"name\":\"in\",\"shape\":[1],\"datatype\":\"BYTES\","
                        "\"parameters\":{\"binary_data_size\":9}}]}";
    size_t len = with_binary(buf, json1, extra, 9, hl);
    CHECK(v2(buf, len, hl, 4, &r) == SRV_API_ERR_BAD_REQUEST && strstr(err, "4 bytes of binary"),
          "%s", err);
    srv_api_request_free(&r);
    /* the header length itself */
    len = with_binary(buf, json, cases[0].bin, 9, hl);
    const char *bad_hl[] = {"", "-1", "12a", " 12", "99999999999999999999999", "0x10"};
    for (size_t i = 0; i < sizeof bad_hl / sizeof *bad_hl; i++) {
        CHECK(v2(buf, len, bad_hl[i], 4, &r) == SRV_API_ERR_BAD_REQUEST, "\"%s\"", bad_hl[i]);
        CHECK(strstr(err, "Inference-Header-Content-Length"), "%s", err);
        srv_api_request_free(&r);
    }
    char big[32];
    snprintf(big, sizeof big, "%zu", len + 1);
    CHECK(v2(buf, len, big, 4, &r) == SRV_API_ERR_BAD_REQUEST && strstr(err, "body has"), "%s",
          err);
    srv_api_request_free(&r);
    /* bytes after a JSON body that no input claims */
    CHECK(v2(buf, len, "40", 4, &r) == SRV_API_ERR_BAD_REQUEST);
    srv_api_request_free(&r);
    /* FP32 binary of the wrong size */
    const char *fj = "{\"inputs\":[{\"name\":\"t\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                     "\"parameters\":{\"binary_data_size\":44}}]}";
    float x[11] = {0};
    len = with_binary(buf, fj, x, sizeof x, hl);
    CHECK(v2(buf, len, hl, 4, &r) == SRV_API_ERR_BAD_REQUEST && strstr(err, "needs 48 bytes"), "%s",
          err);
    srv_api_request_free(&r);
}

/* ------------------------------------------------------------------------ */
/* v2: responses                                                            */
/* ------------------------------------------------------------------------ */

static void test_v2_render_json(void) {
    const char *body =
        "{\"id\":\"abc\",\"inputs\":[{\"name\":\"i\",\"shape\":[2],\"datatype\":\"BYTES\","
        "\"data\":[\"QUJD\",\"QUJD\"]}],\"outputs\":[{\"name\":\"logits\"},"
        "{\"name\":\"probabilities\",\"parameters\":{\"classification\":2}}]}";
    struct srv_api_request r;
    CHECK(v2(body, strlen(body), NULL, 4, &r) == SRV_API_OK, "%s", err);
    struct srv_api_result res[2];
    ok_results(res, 2);
    struct srv_api_body b;
    CHECK(srv_v2_render_infer(&small, &r, res, &b) == SRV_API_OK);
    srv_api_request_free(&r);
    CHECK(b.status == 200 && !b.binary && !strcmp(b.content_type, "application/json"));
    json_t *j = body_json(&b);
    srv_api_body_free(&b);
    CHECK(j);
    int ok = !strcmp(json_string_value(json_object_get(j, "id")), "abc") &&
             !strcmp(json_string_value(json_object_get(j, "model_name")), "tiny") &&
             !strcmp(json_string_value(json_object_get(j, "model_version")), "1");
    json_t *outs = json_object_get(j, "outputs");
    json_t *lg = json_array_get(outs, 0), *cl = json_array_get(outs, 1);
    ok = ok && json_array_size(outs) == 2 &&
         !strcmp(json_string_value(json_object_get(lg, "name")), "logits") &&
         !strcmp(json_string_value(json_object_get(lg, "datatype")), "FP32") &&
         json_integer_value(json_array_get(json_object_get(lg, "shape"), 1)) == 5 &&
         json_array_size(json_object_get(lg, "data")) == 10 &&
         json_real_value(json_array_get(json_object_get(lg, "data"), 6)) == 1.0;
    ok = ok && !strcmp(json_string_value(json_object_get(cl, "datatype")), "BYTES") &&
         json_integer_value(json_array_get(json_object_get(cl, "shape"), 0)) == 2 &&
         json_integer_value(json_array_get(json_object_get(cl, "shape"), 1)) == 2 &&
         json_array_size(json_object_get(cl, "data")) == 4;
    char first[128] = "", third[128] = "";
    if (ok) {
        snprintf(first, sizeof first, "%s",
                 json_string_value(json_array_get(json_object_get(cl, "data"), 0)));
        snprintf(third, sizeof third, "%s",
                 json_string_value(json_array_get(json_object_get(cl, "data"), 2)));
    }
    json_decref(j);
    CHECK(ok, "response shape");
    /* image 0: logit 3.0 at index 1 is the top class */
    float p[5];
    eng_softmax(logits5[0], 5, p);
    char want[128];
    snprintf(want, sizeof want, "%f:1:class_1", p[1]);
    CHECK(!strcmp(first, want), "%s vs %s", first, want);
    CHECK(!strncmp(third, "0.", 2) && strstr(third, ":0:class_0"), "%s", third);
}

static void test_v2_render_binary(void) {
    const char *body =
        "{\"inputs\":[{\"name\":\"i\",\"shape\":[2],\"datatype\":\"BYTES\","
        "\"data\":[\"QUJD\",\"QUJD\"]}],\"parameters\":{\"binary_data_output\":true},"
        "\"outputs\":[{\"name\":\"logits\"},"
        "{\"name\":\"probabilities\",\"parameters\":{\"classification\":1}},"
        "]}";
    struct srv_api_request r;
    CHECK(v2(body, strlen(body), NULL, 4, &r) == SRV_API_ERR_BAD_REQUEST); /* trailing comma */
    srv_api_request_free(&r);
    const char *good =
        "{\"inputs\":[{\"name\":\"i\",\"shape\":[2],\"datatype\":\"BYTES\","
        "\"data\":[\"QUJD\",\"QUJD\"]}],\"parameters\":{\"binary_data_output\":true},"
        "\"outputs\":[{\"name\":\"logits\"},"
        "{\"name\":\"probabilities\",\"parameters\":{\"classification\":1}}]}";
    CHECK(v2(good, strlen(good), NULL, 4, &r) == SRV_API_OK, "%s", err);
    struct srv_api_result res[2];
    ok_results(res, 2);
    struct srv_api_body b;
    CHECK(srv_v2_render_infer(&small, &r, res, &b) == SRV_API_OK);
    srv_api_request_free(&r);
    CHECK(b.status == 200 && b.binary && !strcmp(b.content_type, "application/octet-stream"));
    CHECK(b.header_len < b.len && b.data[b.header_len - 1] == '}');
    json_t *j = body_json(&b);
    json_t *outs = json_object_get(j, "outputs");
    json_int_t s0 = json_integer_value(json_object_get(
        json_object_get(json_array_get(outs, 0), "parameters"), "binary_data_size"));
    json_int_t s1 = json_integer_value(json_object_get(
        json_object_get(json_array_get(outs, 1), "parameters"), "binary_data_size"));
    int has_data = json_object_get(json_array_get(outs, 0), "data") != NULL;
    json_decref(j);
    CHECK(!has_data && s0 == 40 && (size_t)(b.header_len + s0 + s1) == b.len,
          "sizes %lld %lld, body %zu, header %zu", (long long)s0, (long long)s1, b.len,
          b.header_len);
    float back[10];
    memcpy(back, b.data + b.header_len, sizeof back);
    CHECK(!memcmp(back, logits5, sizeof back), "logits differ");
    /* BYTES elements: 4-byte length + "score:1:class_1", then image 1's */
    const unsigned char *e = (const unsigned char *)b.data + b.header_len + 40;
    uint32_t l = e[0] | e[1] << 8 | e[2] << 16 | (uint32_t)e[3] << 24;
    char s[64];
    snprintf(s, sizeof s, "%.*s", (int)l, (const char *)e + 4);
    CHECK(strstr(s, ":1:class_1") && 4 + l < (size_t)s1, "%s", s);
    e += 4 + l;
    uint32_t l2 = e[0] | e[1] << 8 | e[2] << 16 | (uint32_t)e[3] << 24;
    CHECK(8 + l + l2 == (size_t)s1 && !memcmp(e + 4 + l2 - 10, ":0:class_0", 10));
    srv_api_body_free(&b);
}

static void test_v2_render_labels(void) {
    /* Labels from a file; classes 1 and 3 share a name. */
    char path[] = "/tmp/test_api_labelsXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char text[] = "tench\ncrane\nx\ncrane\ny\n";
    int wrote = write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1);
    close(fd);
    struct eng_labels *labels = NULL;
    enum eng_status ls = eng_labels_load(path, 5, &labels, err, sizeof err);
    unlink(path);
    CHECK(wrote && ls == ENG_OK, "%s", err);
    struct srv_api_model m = small;
    m.labels = labels;
    struct srv_api_request r = {0};
    struct srv_api_result res = {logits5[0], 0, NULL};
    struct srv_api_image im = {SRV_API_IMAGE_JPEG, (const unsigned char *)"x", 1, NULL};
    r.n = 1;
    r.images = &im;
    r.noutputs = 1;
    r.outputs[0] = (struct srv_api_output){SRV_API_OUT_LOGITS, 3, 0};
    struct srv_api_body b;
    enum srv_api_status st = srv_v2_render_infer(&m, &r, &res, &b);
    int ok = st == SRV_API_OK && strstr(b.data, "[\"3.000000:1:crane\",\"2.000000:3:crane\","
                                                "\"0.500000:0:tench\"]");
    if (!ok) printf("# %s\n", st == SRV_API_OK ? b.data : "render failed");
    srv_api_body_free(&b);
    /* TorchServe keeps the first "crane" only, with its higher score */
    r.topk = 3;
    st = srv_torchserve_render_predict(&m, &r, &res, &b);
    json_t *j = st == SRV_API_OK ? body_json(&b) : NULL;
    srv_api_body_free(&b);
    eng_labels_free(labels);
    CHECK(ok, "v2 classification with labels");
    float p[5];
    eng_softmax(logits5[0], 5, p);
    CHECK(j && json_object_size(j) == 2 &&
          fabs(json_real_value(json_object_get(j, "crane")) - p[1]) < 1e-6 &&
          json_object_get(j, "tench"));
    json_decref(j);
}

static void test_v2_render_failure(void) {
    struct srv_api_request r;
    CHECK(v2("abc", 3, "0", 4, &r) == SRV_API_OK);
    struct srv_api_result res = {NULL, 415, "the body is not a JPEG image"};
    struct srv_api_body b;
    CHECK(srv_v2_render_infer(&small, &r, &res, &b) == SRV_API_OK);
    srv_api_request_free(&r);
    CHECK(b.status == 415 && !strcmp(b.data, "{\"error\":\"the body is not a JPEG image\"}"),
          "%d %s", b.status, b.data);
    srv_api_body_free(&b);
}

static void test_v2_metadata(void) {
    struct srv_api_body b;
    CHECK(srv_v2_render_server("imgclassd", "0.1", &b) == SRV_API_OK);
    CHECK(!strcmp(b.data, "{\"name\":\"imgclassd\",\"version\":\"0.1\",\"extensions\":"
                          "[\"binary_tensor_data\",\"classification\",\"model_configuration\"]}"),
          "%s", b.data);
    srv_api_body_free(&b);
    CHECK(srv_v2_render_health("ready", 0, &b) == SRV_API_OK);
    CHECK(b.status == 503 && !strcmp(b.data, "{\"ready\":false}"));
    srv_api_body_free(&b);
    CHECK(srv_v2_render_health("live", 1, &b) == SRV_API_OK);
    CHECK(b.status == 200 && !strcmp(b.data, "{\"live\":true}"));
    srv_api_body_free(&b);
    CHECK(srv_v2_render_model(&small, &b) == SRV_API_OK);
    CHECK(!strcmp(b.data, "{\"name\":\"tiny\",\"versions\":[\"1\"],\"platform\":\"imgclassd\","
                          "\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\","
                          "\"shape\":[-1,3,2,2]}],\"outputs\":[{\"name\":\"probabilities\","
                          "\"datatype\":\"FP32\",\"shape\":[-1,5]}]}"),
          "%s", b.data);
    srv_api_body_free(&b);
    CHECK(srv_v2_render_config(&small, &b) == SRV_API_OK);
    json_t *j = body_json(&b);
    srv_api_body_free(&b);
    json_t *in = json_array_get(json_object_get(j, "input"), 0);
    int ok =
        json_integer_value(json_object_get(j, "max_batch_size")) == 8 &&
        !strcmp(json_string_value(json_object_get(in, "format")), "FORMAT_NCHW") &&
        json_array_size(json_object_get(in, "dims")) == 3 &&
        json_object_get(json_object_get(j, "dynamic_batching"), "max_queue_delay_microseconds") &&
        json_integer_value(
            json_object_get(json_array_get(json_object_get(j, "instance_group"), 0), "count")) == 2;
    json_decref(j);
    CHECK(ok, "config fields");
}

/* ------------------------------------------------------------------------ */
/* TorchServe                                                               */
/* ------------------------------------------------------------------------ */

static enum srv_api_status ts(const char *body, const char *ct, struct srv_api_request *r) {
    err[0] = 0;
    return srv_torchserve_parse_predict((const unsigned char *)body, strlen(body), ct, r, err,
                                        sizeof err);
}

static void test_torchserve_parse(void) {
    struct srv_api_request r;
    CHECK(ts("\xff\xd8raw", "image/jpeg", &r) == SRV_API_OK && r.n == 1 && r.images[0].len == 5);
    srv_api_request_free(&r);
    CHECK(ts("\xff\xd8raw", NULL, &r) == SRV_API_OK && r.n == 1);
    srv_api_request_free(&r);
    const char *mp = "--B\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nzz\r\n"
                     "--B\r\nContent-Disposition: form-data; name=\"data\"; filename=\"k.jpg\"\r\n"
                     "Content-Type: image/jpeg\r\n\r\nJPEGBYTES\r\n--B--\r\n";
    CHECK(ts(mp, "multipart/form-data; boundary=B", &r) == SRV_API_OK, "%s", err);
    CHECK(r.n == 1 && r.images[0].len == 9 && !memcmp(r.images[0].data, "JPEGBYTES", 9));
    srv_api_request_free(&r);
    const char *mpf = "--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nF\r\n--B--\r\n";
    CHECK(ts(mpf, "Multipart/Form-Data; boundary=B", &r) == SRV_API_OK && r.images[0].len == 1);
    srv_api_request_free(&r);
    const char *mpx = "--B\r\nContent-Disposition: form-data; name=\"img\"\r\n\r\nF\r\n--B--\r\n";
    CHECK(ts(mpx, "multipart/form-data; boundary=B", &r) == SRV_API_ERR_BAD_REQUEST &&
          strstr(err, "\"data\" or \"file\""));
    srv_api_request_free(&r);
    CHECK(ts(mpx, "multipart/form-data", &r) == SRV_API_ERR_BAD_REQUEST && strstr(err, "boundary"));
    srv_api_request_free(&r);
    CHECK(ts("--B\r\nbroken", "multipart/form-data; boundary=B", &r) == SRV_API_ERR_BAD_REQUEST &&
          strstr(err, "multipart"));
    srv_api_request_free(&r);
    CHECK(ts("", "image/jpeg", &r) == SRV_API_ERR_BAD_REQUEST && strstr(err, "empty"));
    srv_api_request_free(&r);
}

static void test_torchserve_render(void) {
    struct srv_api_request r;
    CHECK(ts("x", NULL, &r) == SRV_API_OK);
    struct srv_api_result res = {logits5[0], 0, NULL};
    struct srv_api_body b;
    CHECK(srv_torchserve_render_predict(&small, &r, &res, &b) == SRV_API_OK);
    /* all five classes of the small model, by descending score */
    const char *order[] = {"\"class_1\"", "\"class_3\"", "\"class_0\"", "\"class_4\"",
                           "\"class_2\""};
    const char *prev = b.data;
    for (int i = 0; i < 5; i++) {
        const char *at = strstr(b.data, order[i]);
        CHECK(at && at >= prev, "%s not in order in %s", order[i], b.data);
        prev = at;
    }
    srv_api_body_free(&b);
    r.topk = 2;
    CHECK(srv_torchserve_render_predict(&small, &r, &res, &b) == SRV_API_OK);
    json_t *j = body_json(&b);
    srv_api_body_free(&b);
    CHECK(json_object_size(j) == 2);
    json_decref(j);
    res = (struct srv_api_result){NULL, 504, "waited too long"};
    CHECK(srv_torchserve_render_predict(&small, &r, &res, &b) == SRV_API_OK);
    srv_api_request_free(&r);
    CHECK(b.status == 504 && !strcmp(b.data, "{\"code\":504,\"type\":\"RequestTimeoutException\","
                                             "\"message\":\"waited too long\"}"),
          "%s", b.data);
    srv_api_body_free(&b);
    CHECK(srv_torchserve_render_error(404, "Model not found: x", &b) == SRV_API_OK);
    CHECK(b.status == 404 && strstr(b.data, "\"ModelNotFoundException\""));
    srv_api_body_free(&b);
    CHECK(srv_torchserve_render_ping(1, &b) == SRV_API_OK);
    CHECK(b.status == 200 && !strcmp(b.data, "{\"status\":\"Healthy\"}"));
    srv_api_body_free(&b);
    CHECK(srv_torchserve_render_ping(0, &b) == SRV_API_OK);
    CHECK(b.status == 500 && !strcmp(b.data, "{\"status\":\"Unhealthy\"}"));
    srv_api_body_free(&b);
    struct srv_api_model two[2] = {small, small};
    two[1].name = "int8";
    CHECK(srv_torchserve_render_models(two, 2, &b) == SRV_API_OK);
    CHECK(!strcmp(b.data,
                  "{\"models\":[{\"modelName\":\"tiny\",\"modelUrl\":\"random:resnet18:0\"},"
                  "{\"modelName\":\"int8\",\"modelUrl\":\"random:resnet18:0\"}]}"),
          "%s", b.data);
    srv_api_body_free(&b);
}

/* ------------------------------------------------------------------------ */
/* KServe v1                                                                */
/* ------------------------------------------------------------------------ */

static enum srv_api_status kv1(const char *body, int max, struct srv_api_request *r) {
    err[0] = 0;
    return srv_kserve_v1_parse_predict((const unsigned char *)body, strlen(body), max, r, err,
                                       sizeof err);
}

static void test_kserve_v1_parse(void) {
    struct srv_api_request r;
    const char *body =
        "{\"instances\":[\"QUJD\",{\"b64\":\"REVG\"},{\"image\":{\"b64\":\"R0g\"}}]}";
    CHECK(kv1(body, 4, &r) == SRV_API_OK, "%s", err);
    CHECK(r.n == 3 && r.images[0].len == 3 && !memcmp(r.images[0].data, "ABC", 3) &&
          !memcmp(r.images[1].data, "DEF", 3) && r.images[2].len == 2 &&
          !memcmp(r.images[2].data, "GH", 2));
    srv_api_request_free(&r);
    const struct bad_case cases[] = {
        {"", SRV_API_ERR_BAD_REQUEST, "empty"},
        {"{\"instances\":", SRV_API_ERR_BAD_REQUEST, "invalid JSON"},
        {"[]", SRV_API_ERR_BAD_REQUEST, "instances"},
        {"{\"instances\":[]}", SRV_API_ERR_BAD_REQUEST, "at least one"},
        {"{\"instances\":{}}", SRV_API_ERR_BAD_REQUEST, "at least one"},
        {"{\"instances\":[\"QUJD\",\"QUJD\",\"QUJD\",\"QUJD\",\"QUJD\"]}", SRV_API_ERR_TOO_LARGE,
         "at most 4"},
        {"{\"instances\":[\"QUJD\",7]}", SRV_API_ERR_BAD_REQUEST, "instance 1 must be"},
        {"{\"instances\":[{\"image\":\"QUJD\"}]}", SRV_API_ERR_BAD_REQUEST, "instance 0 must be"},
        {"{\"instances\":[{\"b64\":[\"QUJD\"]}]}", SRV_API_ERR_BAD_REQUEST, "instance 0 must be"},
        {"{\"instances\":[\"QUJD\",\"QU*D\"]}", SRV_API_ERR_BAD_REQUEST,
         "instance 1: invalid base64"},
        {"{\"instances\":[{\"b64\":\"\"}]}", SRV_API_ERR_BAD_REQUEST,
         "instance 0: the image is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        enum srv_api_status st = kv1(cases[i].body, 4, &r);
        srv_api_request_free(&r);
        CHECK(st == cases[i].st, "case %zu: status %d (%s)", i, st, err);
        CHECK(strstr(err, cases[i].word), "case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].word);
    }
}

static void test_kserve_v1_render(void) {
    struct srv_api_request r;
    CHECK(kv1("{\"instances\":[\"QUJD\",\"QUJD\"]}", 4, &r) == SRV_API_OK);
    struct srv_api_result res[2];
    ok_results(res, 2);
    struct srv_api_body b;
    r.topk = 2;
    CHECK(srv_kserve_v1_render_predict(&small, &r, res, &b) == SRV_API_OK);
    json_t *j = body_json(&b);
    srv_api_body_free(&b);
    json_t *preds = json_object_get(j, "predictions");
    json_t *p0 = json_array_get(json_array_get(preds, 0), 0);
    json_t *p1 = json_array_get(json_array_get(preds, 1), 0);
    int ok = json_array_size(preds) == 2 && json_array_size(json_array_get(preds, 0)) == 2 &&
             json_integer_value(json_object_get(p0, "index")) == 1 &&
             !strcmp(json_string_value(json_object_get(p0, "label")), "class_1") &&
             json_real_value(json_object_get(p0, "score")) > 0.5 &&
             json_integer_value(json_object_get(p1, "index")) == 0;
    json_decref(j);
    CHECK(ok, "predictions");
    res[1] = (struct srv_api_result){NULL, 413, "image is 9000x9000"};
    CHECK(srv_kserve_v1_render_predict(&small, &r, res, &b) == SRV_API_OK);
    srv_api_request_free(&r);
    CHECK(b.status == 413 && !strcmp(b.data, "{\"error\":\"instance 1: image is 9000x9000\"}"),
          "%s", b.data);
    srv_api_body_free(&b);
    struct srv_api_model two[2] = {small, small};
    two[1].name = "b";
    CHECK(srv_kserve_v1_render_models(two, 2, &b) == SRV_API_OK);
    CHECK(!strcmp(b.data, "{\"models\":[\"tiny\",\"b\"]}"), "%s", b.data);
    srv_api_body_free(&b);
    json_t *extra = json_pack("{s{si}}", "batching", "max_batch", 8);
    CHECK(srv_kserve_v1_render_model(&small, extra, &b) == SRV_API_OK);
    json_decref(extra);
    j = body_json(&b);
    srv_api_body_free(&b);
    ok = json_is_true(json_object_get(j, "ready")) &&
         !strcmp(json_string_value(json_object_get(j, "name")), "tiny") &&
         !strcmp(json_string_value(json_object_get(j, "precision")), "fp32") &&
         json_object_get(json_object_get(j, "batching"), "max_batch");
    json_decref(j);
    CHECK(ok, "model details");
}

/* ------------------------------------------------------------------------ */
/* Robustness                                                               */
/* ------------------------------------------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Parses a mutated copy in its own allocation, renders whatever parses:
 * under ASan a read past the body or a leak fails the run. */
static void mutate_parse(const char *seed, size_t seed_len, const char *hl) {
    for (int it = 0; it < 3000; it++) {
        size_t len = seed_len;
        unsigned char *buf = malloc(len + 8);
        memcpy(buf, seed, len);
        int muts = 1 + (int)(rnd() % 4);
        for (int k = 0; k < muts && len; k++) {
            switch (rnd() % 4) {
            case 0:
                buf[rnd() % len] = (unsigned char)rnd();
                break;
            case 1:
                len = rnd() % len; /* truncate */
                break;
            case 2:
                buf[rnd() % len] = "{}[]\",:0123456789"[rnd() % 17];
                break;
            default:
                buf[rnd() % len] ^= (unsigned char)(1u << (rnd() % 8));
            }
        }
        unsigned char *body = malloc(len ? len : 1);
        memcpy(body, buf, len);
        free(buf);
        struct srv_api_request r;
        char hlbuf[32];
        const char *h = hl;
        if (hl && rnd() % 4 == 0) {
            snprintf(hlbuf, sizeof hlbuf, "%u", rnd() % (unsigned)(len + 2));
            h = hlbuf;
        }
        if (srv_v2_parse_infer(body, len, h, &small, 4, &r, err, sizeof err) == SRV_API_OK) {
            struct srv_api_result res[4];
            ok_results(res, r.n);
            struct srv_api_body b;
            if (srv_v2_render_infer(&small, &r, res, &b) == SRV_API_OK) srv_api_body_free(&b);
        }
        srv_api_request_free(&r);
        if (srv_kserve_v1_parse_predict(body, len, 4, &r, err, sizeof err) == SRV_API_OK) {
            for (int i = 0; i < r.n; i++)
                CHECK(r.images[i].len > 0 && r.images[i].data >= r.bytes);
        }
        srv_api_request_free(&r);
        free(body);
    }
}

static void test_mutations(void) {
    const char *json =
        "{\"id\":\"m\",\"inputs\":[{\"name\":\"in\",\"shape\":[2,1],\"datatype\":\"BYTES\","
        "\"parameters\":{\"binary_data_size\":13}}],\"parameters\":{\"binary_data_output\":true},"
        "\"outputs\":[{\"name\":\"logits\"},{\"name\":\"probabilities\","
        "\"parameters\":{\"classification\":3,\"binary_data\":false}}]}";
    char buf[1024], hl[32];
    size_t len = with_binary(buf, json, abc_de, sizeof abc_de, hl);
    mutate_parse(buf, len, hl);
    const char *fp = "{\"inputs\":[{\"name\":\"t\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                     "\"data\":[[[[1,2],[3,4]],[[5,6],[7,8]],[[9,10],[11,12]]]]}]}";
    mutate_parse(fp, strlen(fp), NULL);
    const char *v1 = "{\"instances\":[\"QUJD\",{\"b64\":\"REVG\"},{\"image\":{\"b64\":\"R0g=\"}}]}";
    mutate_parse(v1, strlen(v1), NULL);
}

static void test_status_codes(void) {
    CHECK(srv_api_http_status(SRV_API_OK) == 200);
    CHECK(srv_api_http_status(SRV_API_ERR_BAD_REQUEST) == 400);
    CHECK(srv_api_http_status(SRV_API_ERR_NOT_FOUND) == 404);
    CHECK(srv_api_http_status(SRV_API_ERR_TOO_LARGE) == 413);
    CHECK(srv_api_http_status(SRV_API_ERR_MEDIA) == 415);
    CHECK(srv_api_http_status(SRV_API_ERR_NOMEM) == 503);
    struct srv_api_body b;
    CHECK(srv_v2_render_error(404, "unknown model 'x'", &b) == SRV_API_OK);
    CHECK(b.status == 404 && !strcmp(b.data, "{\"error\":\"unknown model 'x'\"}"));
    srv_api_body_free(&b);
    CHECK(srv_v2_render_error(400, "bad \xff byte", &b) == SRV_API_OK &&
              strstr(b.data, "bad ? byte"),
          "invalid UTF-8 is replaced");
    srv_api_body_free(&b);
}

int main(void) {
    t_suite = "api";
    RUN(test_base64_good);
    RUN(test_base64_bad);
    RUN(test_v2_json_bytes);
    RUN(test_v2_binary_bytes);
    RUN(test_v2_raw);
    RUN(test_v2_fp32);
    RUN(test_v2_outputs);
    RUN(test_v2_errors);
    RUN(test_v2_binary_errors);
    RUN(test_v2_render_json);
    RUN(test_v2_render_binary);
    RUN(test_v2_render_labels);
    RUN(test_v2_render_failure);
    RUN(test_v2_metadata);
    RUN(test_torchserve_parse);
    RUN(test_torchserve_render);
    RUN(test_kserve_v1_parse);
    RUN(test_kserve_v1_render);
    RUN(test_mutations);
    RUN(test_status_codes);
    return t_done();
}
