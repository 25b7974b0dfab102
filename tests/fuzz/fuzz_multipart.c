/* fuzz_multipart.c: libFuzzer target for server/multipart.c. The input is
 * a Content-Type header value, a NUL byte, then the body; the boundary is
 * taken from the header as the server does, and the body split into at
 * most 24 parts (16 files + a few fields, the server's defaults). Every
 * part must lie inside the body. */
#include "server.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul) return 0;
    size_t hlen = (size_t)(nul - data);
    char *ctype = malloc(hlen + 1);
    if (!ctype) return 0;
    memcpy(ctype, data, hlen);
    ctype[hlen] = 0;
    char boundary[SRV_MP_MAX_BOUNDARY + 1];
    enum srv_mp_status st = srv_multipart_boundary(ctype, boundary, sizeof boundary);
    free(ctype);
    if (st != SRV_MP_OK) return 0;
    if (strlen(boundary) < 1 || strlen(boundary) > SRV_MP_MAX_BOUNDARY) __builtin_trap();
    /* The body in its own allocation, so ASan sees any read past its end. */
    size_t blen = size - hlen - 1;
    unsigned char *body = malloc(blen ? blen : 1);
    if (!body) return 0;
    memcpy(body, nul + 1, blen);
    struct srv_mp_part parts[24];
    int np = -1;
    char err[256];
    st = srv_multipart_parse(body, blen, boundary, parts, 24, &np, err, sizeof err);
    if (st == SRV_MP_OK) {
        if (np < 0 || np > 24) __builtin_trap();
        for (int i = 0; i < np; i++) {
            const struct srv_mp_part *p = &parts[i];
            if (p->data < body || p->len > blen || p->data + p->len > body + blen) __builtin_trap();
            if (memchr(p->name, 0, sizeof p->name) == NULL ||
                memchr(p->filename, 0, sizeof p->filename) == NULL ||
                memchr(p->content_type, 0, sizeof p->content_type) == NULL)
                __builtin_trap();
            (void)srv_multipart_is_file(p);
        }
    }
    free(body);
    return 0;
}
