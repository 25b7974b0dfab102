/* fuzz_kserve_v1.c: libFuzzer target for strict base64 (server/api.c) and
 * the KServe v1 predict parser (server/api_kserve_v1.c). The first byte
 * picks: even, the rest is one base64 string to decode; odd, the rest is a
 * {"instances": [...]} body, parsed and rendered. */
#include "api.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Rendering reads only the class count and the labels. */
static const struct srv_api_model fuzz_v1_model = {.name = "m", .classes = 4};

static void fuzz_base64(const uint8_t *in, size_t n) {
    char *s = malloc(n ? n : 1);
    size_t cap = srv_base64_decoded_max(n);
    unsigned char *out = malloc(cap);
    if (s && out) {
        memcpy(s, in, n);
        size_t got = 0;
        if (srv_base64_decode(s, n, out, cap, &got) == 0 && got > cap) __builtin_trap();
        /* one byte short of the exact size must be refused, not overrun */
        if (got > 0 && srv_base64_decode(s, n, out, got - 1, &got) == 0) __builtin_trap();
    }
    free(s);
    free(out);
}

static void fuzz_predict(const uint8_t *in, size_t n) {
    unsigned char *body = malloc(n ? n : 1);
    if (!body) return;
    memcpy(body, in, n);
    struct srv_api_request r;
    char err[256];
    if (srv_kserve_v1_parse_predict(body, n, 8, &r, err, sizeof err) == SRV_API_OK) {
        if (r.n < 1 || r.n > 8) __builtin_trap();
        static const float logits[4] = {0.5f, -1.0f, 2.0f, 0.0f};
        struct srv_api_result res[8];
        for (int i = 0; i < r.n; i++) {
            if (!r.images[i].len || r.images[i].data < r.bytes) __builtin_trap();
            res[i] = (struct srv_api_result){logits, 0, NULL};
        }
        r.topk = r.n; /* vary k with the input */
        struct srv_api_body b;
        if (srv_kserve_v1_render_predict(&fuzz_v1_model, &r, res, &b) == SRV_API_OK)
            srv_api_body_free(&b);
    }
    srv_api_request_free(&r);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (data[0] & 1)
        fuzz_predict(data + 1, size - 1);
    else
        fuzz_base64(data + 1, size - 1);
    return 0;
}
