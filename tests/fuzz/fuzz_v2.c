/* fuzz_v2.c: libFuzzer target for the Open Inference Protocol v2 parser
 * (server/api_v2.c): the JSON request, the binary tensor extension and the
 * raw form. The input is the Inference-Header-Content-Length value, a NUL
 * byte, then the body; an input starting with NUL has no such header.
 * Whatever parses is rendered too; every image must lie inside the body or
 * the request's own storage. */
#include "api.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 4 classes and [3][2][2] tensors keep FP32 requests small enough to find;
 * parsing and rendering read nothing else but the name and version. */
static const struct srv_api_model fuzz_v2_model = {
    .name = "m", .version = "1", .labels = NULL, .classes = 4, .input_size = 2};

static int inside(const void *p, size_t n, const void *base, size_t len) {
    const uint8_t *a = p, *b = base;
    return a >= b && n <= len && a - b <= (ptrdiff_t)(len - n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul || (size_t)(nul - data) > 32) return 0;
    char hl[33];
    size_t hlen = (size_t)(nul - data);
    memcpy(hl, data, hlen);
    hl[hlen] = 0;
    /* The body in its own allocation, so ASan sees any read past its end. */
    size_t blen = size - hlen - 1;
    unsigned char *body = malloc(blen ? blen : 1);
    if (!body) return 0;
    memcpy(body, nul + 1, blen);
    struct srv_api_request r;
    char err[256];
    enum srv_api_status st =
        srv_v2_parse_infer(body, blen, hlen ? hl : NULL, &fuzz_v2_model, 8, &r, err, sizeof err);
    if (st == SRV_API_OK) {
        if (r.n < 1 || r.n > 8 || r.noutputs < 1 || r.noutputs > SRV_API_MAX_OUTPUTS)
            __builtin_trap();
        static const float logits[4] = {0.5f, -1.0f, 2.0f, 0.0f};
        struct srv_api_result res[8];
        for (int i = 0; i < r.n; i++) {
            const struct srv_api_image *im = &r.images[i];
            if (im->kind == SRV_API_IMAGE_JPEG) {
                if (!im->len ||
                    (!inside(im->data, im->len, body, blen) && !(r.bytes && im->data >= r.bytes)))
                    __builtin_trap();
            } else if (!r.tensors || im->tensor != r.tensors + (size_t)i * 12) {
                __builtin_trap();
            }
            res[i] = (struct srv_api_result){logits, 0, NULL};
        }
        struct srv_api_body b;
        if (srv_v2_render_infer(&fuzz_v2_model, &r, res, &b) == SRV_API_OK) {
            if (b.status != 200 || (b.binary && b.header_len > b.len)) __builtin_trap();
            srv_api_body_free(&b);
        }
    } else if (srv_api_http_status(st) < 400 || !err[0]) {
        __builtin_trap(); /* every refusal says why */
    }
    srv_api_request_free(&r);
    free(body);
    return 0;
}
