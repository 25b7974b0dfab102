/* api_static.c: the web page and other files under --static-dir (GET of
 * any path no other route names), with ETag/Last-Modified revalidation and
 * a built-in page when the directory has no index.html. */
#include "http_impl.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *content_type_for(const char *path) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".wasm", "application/wasm"},
        {".woff2", "font/woff2"},
        {".woff", "font/woff"},
    };
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcasecmp(dot, types[i].ext)) return types[i].type;
    return "application/octet-stream";
}

static const char builtin_index[] =
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>imgclassd</title></head>\n"
    "<body><h1>imgclassd</h1>\n<p>ResNet image classification.</p>\n<pre>\n"
    "curl -H 'Content-Type: image/jpeg' --data-binary @cat.jpg http://HOST/classify\n"
    "curl -F file=@cat.jpg -F file=@dog.jpg 'http://HOST/classify?topk=3'\n"
    "</pre>\n<p><a href=\"/v1/models\">/v1/models</a> &middot; <a href=\"/metrics\">/metrics</a>"
    " &middot; <a href=\"/healthz\">/healthz</a> &middot; <a href=\"/readyz\">/readyz</a></p>\n"
    "</body></html>\n";

/* The page for GET / when --static-dir has no index.html. */
static enum MHD_Result send_builtin_index(struct srv_req *r) {
    struct MHD_Response *b = MHD_create_response_from_buffer(
        sizeof builtin_index - 1, (void *)builtin_index, MHD_RESPMEM_PERSISTENT);
    if (!b) return MHD_NO;
    MHD_add_response_header(b, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    srv_add_common_headers(r, b, 0);
    return srv_queue(r, 200, b, sizeof builtin_index - 1);
}

/* 1 when the client's copy is current (RFC 9110 13.1): If-None-Match,
 * when present, decides alone (a list of entity tags or "*", compared
 * weakly); else If-Modified-Since against the file's mtime. */
static int not_modified(struct srv_req *r, const char *etag, time_t mtime) {
    const char *inm = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm) {
        size_t el = strlen(etag);
        for (const char *p = inm; *p;) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            if (*p == '*') return 1;
            if (p[0] == 'W' && p[1] == '/') p += 2;
            if (!strncmp(p, etag, el) && (p[el] == 0 || p[el] == ',' || p[el] == ' ')) return 1;
            while (*p && *p != ',')
                p++;
        }
        return 0;
    }
    const char *ims = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_IF_MODIFIED_SINCE);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!ims) return 0;
    const char *end = strptime(ims, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return end && !*end && mtime <= timegm(&tm);
}

/* Serves url from the static root. The path must resolve (symlinks
 * followed) to a regular file inside the root: "..", symlinks that lead out
 * and anything not a regular file are refused. Dotfiles are not served. */
static enum MHD_Result serve_file(struct srv_req *r, const char *url) {
    struct srv_http *h = r->h;
    char rel[PATH_MAX];
    size_t ul = strlen(url);
    if (url[0] != '/' || ul >= sizeof rel - 16)
        return srv_send_error(r, 404, "not_found", "no such path");
    /* "/" and "/dir/" mean the index page. */
    snprintf(rel, sizeof rel, "%s%s", url, url[ul - 1] == '/' ? "index.html" : "");
    int is_index = url[ul - 1] == '/';

    /* Segment checks before touching the file system: no "..", no
     * dotfiles, no backslashes or empty segments that could confuse. */
    for (const char *s = rel; *s;) {
        while (*s == '/')
            s++;
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 2 && s[0] == '.' && s[1] == '.')
            return srv_send_error(r, 403, "forbidden", "path escapes the static directory");
        if (n > 0 && s[0] == '.') return srv_send_error(r, 404, "not_found", "no such path");
        s += n;
    }
    if (strchr(rel, '\\')) return srv_send_error(r, 404, "not_found", "no such path");

    if (!h->static_root[0]) {
        if (!strcmp(rel, "/index.html")) return send_builtin_index(r);
        return srv_send_error(r, 404, "not_found", "no such path");
    }
    char full[PATH_MAX * 2], real[PATH_MAX];
    snprintf(full, sizeof full, "%s%s", h->static_root, rel);
    if (!realpath(full, real)) {
        if (is_index && !strcmp(rel, "/index.html")) return send_builtin_index(r);
        return srv_send_error(r, 404, "not_found", "no such path");
    }
    size_t rl = strlen(h->static_root);
    if (strncmp(real, h->static_root, rl) != 0 || real[rl] != '/')
        return srv_send_error(r, 403, "forbidden", "path escapes the static directory");
    /* O_NONBLOCK: opening a FIFO (or a device) would block this HTTP
     * thread until a writer appears; the type check below refuses it. */
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return srv_send_error(r, 404, "not_found", "no such path");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return srv_send_error(r, 404, "not_found", "no such path");
    }
    /* Validators, so that a revalidation (Cache-Control: no-cache makes
     * browsers revalidate every time) costs a 304 instead of the file. */
    char etag[64], modified[64];
    snprintf(etag, sizeof etag, "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st.st_mtim.tv_nsec);
    struct tm tm;
    gmtime_r(&st.st_mtim.tv_sec, &tm);
    strftime(modified, sizeof modified, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int fresh = not_modified(r, etag, st.st_mtim.tv_sec);
    struct MHD_Response *resp =
        fresh ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
              : MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
    if (fresh || !resp) close(fd);
    if (!resp) return MHD_NO;
    if (!fresh) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type_for(real));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_LAST_MODIFIED, modified);
    srv_add_common_headers(r, resp, 0);
    return srv_queue(r, fresh ? 304 : 200, resp, fresh ? 0 : (uint64_t)st.st_size);
}


enum MHD_Result srv_static_get(struct srv_req *r) {
    enum MHD_Result q = serve_file(r, r->url);
    /* Counted as "other" rather than "static" when nothing was there. */
    if (r->status == 404) r->route = SRV_ROUTE_OTHER;
    return q;
}
