/* api.c: what the protocol APIs share: statuses, the parsed request and
 * rendered body, strict base64, and small JSON helpers. Pure functions. */
#include "api.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int srv_api_http_status(enum srv_api_status s) {
    switch (s) {
    case SRV_API_OK:
        return 200;
    case SRV_API_ERR_BAD_REQUEST:
        return 400;
    case SRV_API_ERR_NOT_FOUND:
        return 404;
    case SRV_API_ERR_TOO_LARGE:
        return 413;
    case SRV_API_ERR_MEDIA:
        return 415;
    case SRV_API_ERR_NOMEM:
        return 503;
    }
    return 500;
}

enum srv_api_status srv_api_fail(enum srv_api_status st, char *err, size_t errlen, const char *fmt,
                                 ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

void srv_api_request_free(struct srv_api_request *r) {
    if (!r) return;
    free(r->images);
    free(r->id);
    free(r->input_name);
    free(r->bytes);
    free(r->tensors);
    memset(r, 0, sizeof *r);
}

void srv_api_body_free(struct srv_api_body *b) {
    if (!b) return;
    free(b->data);
    memset(b, 0, sizeof *b);
}

enum srv_api_status srv_api_request_images(struct srv_api_request *r, int n, char *err,
                                           size_t errlen) {
    r->images = calloc((size_t)n, sizeof *r->images);
    if (!r->images) return srv_api_fail(SRV_API_ERR_NOMEM, err, errlen, "out of memory");
    r->n = n;
    return SRV_API_OK;
}

/* ------------------------------------------------------------------------ */
/* Base64                                                                   */
/* ------------------------------------------------------------------------ */

/* Value of a base64 character, -1 for any other byte. */
static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

size_t srv_base64_decoded_max(size_t n) {
    return n / 4 * 3 + 2;
}

int srv_base64_decode(const char *in, size_t n, unsigned char *out, size_t outcap, size_t *outlen) {
    /* Padding, when present, completes the last quantum exactly. */
    size_t pad = 0;
    while (pad < 2 && n > pad && in[n - 1 - pad] == '=')
        pad++;
    if (pad && n % 4) return -1;
    size_t chars = n - pad;
    if (chars % 4 == 1) return -1; /* 6 bits cannot end a byte */
    size_t need = chars / 4 * 3 + (chars % 4 ? chars % 4 - 1 : 0);
    if (need > outcap) return -1;
    uint32_t acc = 0;
    size_t o = 0;
    int bits = 0;
    for (size_t i = 0; i < chars; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* A canonical encoder leaves the unused low bits zero; anything else
     * is a different (corrupt or truncated) string. */
    if (acc != 0) return -1;
    *outlen = o;
    return 0;
}

enum srv_api_status srv_api_decode_images(struct srv_api_request *r, json_t *const *strs,
                                          const char *what, char *err, size_t errlen) {
    size_t total = 0;
    for (int i = 0; i < r->n; i++) {
        size_t cap = srv_base64_decoded_max(json_string_length(strs[i]));
        if (total > SIZE_MAX - cap)
            return srv_api_fail(SRV_API_ERR_TOO_LARGE, err, errlen, "the images are too large");
        total += cap;
    }
    r->bytes = malloc(total ? total : 1);
    if (!r->bytes) return srv_api_fail(SRV_API_ERR_NOMEM, err, errlen, "out of memory");
    size_t off = 0;
    for (int i = 0; i < r->n; i++) {
        size_t n = json_string_length(strs[i]), got = 0;
        if (srv_base64_decode(json_string_value(strs[i]), n, r->bytes + off, total - off, &got))
            return srv_api_fail(SRV_API_ERR_BAD_REQUEST, err, errlen,
                                "%s %d: invalid base64 (standard alphabet, no whitespace)", what,
                                i);
        if (got == 0)
            return srv_api_fail(SRV_API_ERR_BAD_REQUEST, err, errlen, "%s %d: the image is empty",
                                what, i);
        r->images[i].kind = SRV_API_IMAGE_JPEG;
        r->images[i].data = r->bytes + off;
        r->images[i].len = got;
        off += got;
    }
    return SRV_API_OK;
}

/* ------------------------------------------------------------------------ */
/* JSON helpers                                                             */
/* ------------------------------------------------------------------------ */

enum srv_api_status srv_api_load_json(const unsigned char *body, size_t len, json_t **root,
                                      char *err, size_t errlen) {
    if (len == 0)
        return srv_api_fail(SRV_API_ERR_BAD_REQUEST, err, errlen, "the request body is empty");
    json_error_t jerr;
    *root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root)
        return srv_api_fail(SRV_API_ERR_BAD_REQUEST, err, errlen,
                            "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                            jerr.text);
    return SRV_API_OK;
}

enum srv_api_status srv_api_body_json(json_t *j, int status, struct srv_api_body *out) {
    memset(out, 0, sizeof *out);
    if (!j) return SRV_API_ERR_NOMEM;
    char *s = json_dumps(j, SRV_API_JSON_FLAGS);
    json_decref(j);
    if (!s) return SRV_API_ERR_NOMEM;
    out->status = status;
    out->data = s;
    out->len = strlen(s);
    out->content_type = "application/json";
    return SRV_API_OK;
}

json_t *srv_api_jstr(const char *s) {
    if (!s) return json_null();
    json_t *j = json_string(s);
    if (j) return j;
    char buf[1024];
    srv_utf8_sanitize(buf, sizeof buf, s, strlen(s));
    return json_string(buf);
}

const char *srv_api_label(const struct srv_api_model *m, int i, char *buf, size_t buflen) {
    const char *l = m->labels ? eng_labels_get(m->labels, i) : NULL;
    if (l)
        srv_utf8_sanitize(buf, buflen, l, strlen(l));
    else
        snprintf(buf, buflen, "class_%d", i);
    return buf;
}

int srv_api_failure(const struct srv_api_result *res, int n, const char *what, char *msg,
                    size_t msglen) {
    for (int i = 0; i < n; i++) {
        if (res[i].status == 0 && res[i].logits) continue;
        const char *why = res[i].message ? res[i].message : "inference failed";
        if (what)
            snprintf(msg, msglen, "%s %d: %s", what, i, why);
        else
            snprintf(msg, msglen, "%s", why);
        return res[i].status ? res[i].status : 500;
    }
    return 0;
}

int srv_api_topk_count(const struct srv_api_model *m, const struct srv_api_request *req) {
    int k = req->topk > 0 ? req->topk : 5;
    return k < m->classes ? k : m->classes;
}
