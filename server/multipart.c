/* multipart.c: a strict, bounded multipart/form-data parser (RFC 7578 on
 * RFC 2046). Pure functions over a complete body held in memory: no
 * allocation, no reads outside the buffer, linear time; fuzzable alone. */
#include "server.h"

#include <ctype.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

static enum srv_mp_status fail(enum srv_mp_status st, char *err, size_t errlen, const char *fmt,
                               ...) __attribute__((format(printf, 4, 5)));
static enum srv_mp_status fail(enum srv_mp_status st, char *err, size_t errlen, const char *fmt,
                               ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Header parameters: `type; key=token; key2="quoted \" value"`             */
/* ------------------------------------------------------------------------ */

/* Copies n bytes of s into out (size outlen), truncating; always
 * NUL-terminates. */
static void copy_trunc(char *out, size_t outlen, const char *s, size_t n) {
    if (!outlen) return;
    if (n >= outlen) n = outlen - 1;
    memcpy(out, s, n);
    out[n] = 0;
}

/* Finds parameter key (case-insensitive) in the NUL-terminated header value
 * v and copies its value, unquoted, into out. *len (may be NULL) gets the
 * value's full length before truncation. Returns 1 when found. */
static int header_param(const char *v, const char *key, char *out, size_t outlen, size_t *len) {
    size_t klen = strlen(key);
    const char *p = strchr(v, ';'); /* parameters follow the type */
    while (p && *p) {
        p++; /* past ';' */
        while (*p == ' ' || *p == '\t')
            p++;
        const char *name = p;
        while (*p && *p != '=' && *p != ';')
            p++;
        const char *name_end = p;
        while (name_end > name && (name_end[-1] == ' ' || name_end[-1] == '\t'))
            name_end--;
        int match = (size_t)(name_end - name) == klen && !strncasecmp(name, key, klen);
        if (*p != '=') continue; /* a parameter with no value */
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        char val[1024];
        size_t n = 0, full = 0;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1]) p++;
                if (n + 1 < sizeof val) val[n++] = *p;
                full++;
                p++;
            }
            if (*p == '"') p++;
            while (*p && *p != ';')
                p++;
        } else {
            while (*p && *p != ';' && *p != ' ' && *p != '\t') {
                if (n + 1 < sizeof val) val[n++] = *p;
                full++;
                p++;
            }
            while (*p && *p != ';')
                p++;
        }
        if (match) {
            copy_trunc(out, outlen, val, n);
            if (len) *len = full;
            return 1;
        }
    }
    return 0;
}

enum srv_mp_status srv_multipart_boundary(const char *content_type, char *out, size_t outlen) {
    size_t len = 0;
    char b[SRV_MP_MAX_BOUNDARY + 2];
    if (!content_type || !header_param(content_type, "boundary", b, sizeof b, &len))
        return SRV_MP_ERR_BOUNDARY;
    if (len < 1 || len > SRV_MP_MAX_BOUNDARY || len + 1 > outlen) return SRV_MP_ERR_BOUNDARY;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)b[i] < 0x20 || (unsigned char)b[i] > 0x7e) return SRV_MP_ERR_BOUNDARY;
    if (b[len - 1] == ' ') return SRV_MP_ERR_BOUNDARY;
    memcpy(out, b, len + 1);
    return SRV_MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Parts                                                                    */
/* ------------------------------------------------------------------------ */

/* Parses a part's header block h[0..n) (lines separated by CRLF, no final
 * empty line) into p. */
static enum srv_mp_status parse_headers(const unsigned char *h, size_t n, struct srv_mp_part *p,
                                        int idx, char *err, size_t errlen) {
    size_t i = 0;
    while (i < n) {
        const unsigned char *eol = memmem(h + i, n - i, "\r\n", 2);
        size_t llen = eol ? (size_t)(eol - (h + i)) : n - i;
        char line[SRV_MP_MAX_HEADER + 1];
        copy_trunc(line, sizeof line, (const char *)h + i, llen);
        if (strlen(line) != llen)
            return fail(SRV_MP_ERR_SYNTAX, err, errlen, "part %d: NUL byte in a header", idx + 1);
        char *colon = strchr(line, ':');
        if (!colon || colon == line)
            return fail(SRV_MP_ERR_SYNTAX, err, errlen, "part %d: malformed header line", idx + 1);
        *colon = 0;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = 0;
        if (!strcasecmp(line, "Content-Disposition")) {
            size_t tl = strcspn(v, ";");
            while (tl && (v[tl - 1] == ' ' || v[tl - 1] == '\t'))
                tl--;
            if (tl != 9 || strncasecmp(v, "form-data", 9) != 0)
                return fail(SRV_MP_ERR_SYNTAX, err, errlen,
                            "part %d: Content-Disposition is not form-data", idx + 1);
            header_param(v, "name", p->name, sizeof p->name, NULL);
            if (header_param(v, "filename", p->filename, sizeof p->filename, NULL))
                p->has_filename = 1;
        } else if (!strcasecmp(line, "Content-Type")) {
            copy_trunc(p->content_type, sizeof p->content_type, v, vl);
        }
        i += llen + (eol ? 2 : 0);
    }
    return SRV_MP_OK;
}

/* The parser of both entry points; files_only keeps only file parts. */
static enum srv_mp_status parse_parts(const unsigned char *body, size_t len, const char *boundary,
                                      struct srv_mp_part *parts, int max_parts, int *nparts,
                                      int files_only, char *err, size_t errlen) {
    *nparts = 0;
    size_t blen = boundary ? strlen(boundary) : 0;
    if (blen < 1 || blen > SRV_MP_MAX_BOUNDARY)
        return fail(SRV_MP_ERR_BOUNDARY, err, errlen, "bad boundary");
    /* delim is CRLF "--" boundary; the first delimiter may lack the CRLF
     * when it opens the body. */
    char delim[SRV_MP_MAX_BOUNDARY + 5];
    size_t dlen = (size_t)snprintf(delim, sizeof delim, "\r\n--%s", boundary);

    size_t p;
    if (len >= dlen - 2 && !memcmp(body, delim + 2, dlen - 2)) {
        p = dlen - 2;
    } else {
        const unsigned char *d = memmem(body, len, delim, dlen);
        if (!d)
            return fail(SRV_MP_ERR_SYNTAX, err, errlen, "no boundary delimiter found in the body");
        p = (size_t)(d - body) + dlen;
    }
    int nfiles = 0;
    for (int idx = 0;; idx++) {
        /* p is just past a delimiter: "--" closes the body, else optional
         * transport padding then CRLF opens the next part. */
        if (len - p >= 2 && body[p] == '-' && body[p + 1] == '-') {
            if (idx == 0) return fail(SRV_MP_ERR_SYNTAX, err, errlen, "no parts in the body");
            return SRV_MP_OK; /* the epilogue is ignored */
        }
        while (p < len && (body[p] == ' ' || body[p] == '\t'))
            p++;
        if (len - p < 2)
            return fail(SRV_MP_ERR_UNTERMINATED, err, errlen,
                        "the body ends without a closing boundary");
        if (body[p] != '\r' || body[p + 1] != '\n')
            return fail(SRV_MP_ERR_SYNTAX, err, errlen, "junk after a boundary delimiter");
        p += 2;

        /* Headers end at the first empty line, looked for only within
         * SRV_MP_MAX_HEADER bytes so a huge header line costs nothing. */
        size_t hlen, ds;
        if (len - p >= 2 && body[p] == '\r' && body[p + 1] == '\n') {
            hlen = 0;
            ds = p + 2;
        } else {
            size_t window = len - p < SRV_MP_MAX_HEADER + 4 ? len - p : SRV_MP_MAX_HEADER + 4;
            const unsigned char *he = memmem(body + p, window, "\r\n\r\n", 4);
            if (!he) {
                if (len - p >= SRV_MP_MAX_HEADER + 4)
                    return fail(SRV_MP_ERR_HEADER_SIZE, err, errlen,
                                "part %d: headers longer than %d bytes", idx + 1,
                                SRV_MP_MAX_HEADER);
                return fail(SRV_MP_ERR_UNTERMINATED, err, errlen, "part %d: headers do not end",
                            idx + 1);
            }
            hlen = (size_t)(he - (body + p));
            ds = p + hlen + 4;
        }
        /* Every part is checked; with files_only only file parts are kept:
         * plain form fields then cost nothing here (the body limit bounds
         * them) and do not count against max_parts. */
        struct srv_mp_part tmp;
        memset(&tmp, 0, sizeof tmp);
        enum srv_mp_status st = parse_headers(body + p, hlen, &tmp, idx, err, errlen);
        if (st != SRV_MP_OK) return st;
        int keep = !files_only || srv_multipart_is_file(&tmp);
        if (keep && nfiles >= max_parts)
            return fail(SRV_MP_ERR_TOO_MANY, err, errlen, "more than %d %sparts", max_parts,
                        files_only ? "file " : "");
        struct srv_mp_part *part = keep ? &parts[nfiles] : &tmp;
        if (keep) *part = tmp;

        const unsigned char *end = memmem(body + ds, len - ds, delim, dlen);
        if (!end)
            return fail(SRV_MP_ERR_UNTERMINATED, err, errlen, "part %d has no closing boundary",
                        idx + 1);
        part->data = body + ds;
        part->len = (size_t)(end - (body + ds));
        if (keep) *nparts = ++nfiles;
        p = (size_t)(end - body) + dlen;
    }
}

enum srv_mp_status srv_multipart_parse(const unsigned char *body, size_t len, const char *boundary,
                                       struct srv_mp_part *parts, int max_parts, int *nparts,
                                       char *err, size_t errlen) {
    return parse_parts(body, len, boundary, parts, max_parts, nparts, 0, err, errlen);
}

enum srv_mp_status srv_multipart_parse_files(const unsigned char *body, size_t len,
                                             const char *boundary, struct srv_mp_part *parts,
                                             int max_files, int *nfiles, char *err,
                                             size_t errlen) {
    return parse_parts(body, len, boundary, parts, max_files, nfiles, 1, err, errlen);
}

int srv_multipart_is_file(const struct srv_mp_part *p) {
    if (p->has_filename) return 1;
    return p->content_type[0] && strncasecmp(p->content_type, "text/plain", 10) != 0;
}
