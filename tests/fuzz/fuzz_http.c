/* fuzz_http.c: libFuzzer target for the request-parsing helpers the
 * server applies to client-controlled text: the topk query value
 * (srv_parse_topk), the X-Request-Id check (srv_request_id_ok), the UTF-8
 * sanitizer used for paths, methods and file names (srv_utf8_sanitize),
 * the multipart boundary from a Content-Type (srv_multipart_boundary) and
 * the flag parser (srv_config_parse, argv split at NUL bytes) and the URL
 * unescaper (srv_url_unescape: never longer, never a NUL). The first
 * byte picks the function; the sanitizer's output must always be valid
 * UTF-8 (jansson accepts it) without control characters. */
#include "server.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned sel = data[0] % 6;
    data++;
    size--;
    /* A NUL-terminated copy in its own allocation (ASan bounds). */
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    switch (sel) {
    case 0: {
        int k = -1, classes = size ? 1 + data[0] * 8 : 1000;
        if (srv_parse_topk(s, size, classes, &k) == 0 && (k < 1 || k > classes)) __builtin_trap();
        break;
    }
    case 1: {
        size_t n = strlen(s);
        if (srv_request_id_ok(s) && (n < 1 || n > 64 || strpbrk(s, " \r\n\"<>\\")))
            __builtin_trap();
        break;
    }
    case 2: {
        size_t outlen = size ? (size_t)(data[0] % 64) : 16;
        char *out = malloc(outlen ? outlen : 1);
        if (!out) break;
        srv_utf8_sanitize(out, outlen, s, size);
        if (outlen) {
            size_t n = strnlen(out, outlen);
            if (n >= outlen) __builtin_trap(); /* not terminated */
            for (size_t i = 0; i < n; i++)
                if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f) __builtin_trap();
            json_t *j = json_stringn(out, n);
            if (!j) __builtin_trap(); /* not valid UTF-8 */
            json_decref(j);
        }
        free(out);
        break;
    }
    case 3: {
        char b[SRV_MP_MAX_BOUNDARY + 1];
        if (srv_multipart_boundary(s, b, sizeof b) == SRV_MP_OK &&
            (b[0] == 0 || strlen(b) > SRV_MP_MAX_BOUNDARY))
            __builtin_trap();
        break;
    }
    case 5: {
        size_t n = srv_url_unescape(s);
        if (n > size || n != strlen(s)) __builtin_trap();
        break;
    }
    default: {
        /* argv: the input split at NUL bytes, at most 16 arguments. */
        char *argv[18];
        int argc = 0;
        argv[argc++] = (char *)"imgclassd";
        char *p = s, *end = s + size;
        while (p < end && argc < 17) {
            argv[argc++] = p;
            p += strlen(p) + 1;
        }
        argv[argc] = NULL;
        struct srv_config c;
        char err[256];
        srv_config_default(&c);
        (void)srv_config_parse(&c, argc, argv, err, sizeof err);
        break;
    }
    }
    free(s);
    return 0;
}
