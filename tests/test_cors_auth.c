/* test_cors_auth.c: issue 13 against the real server (build/imgclassd):
 * CORS preflights and headers on every protocol's routes, bearer tokens
 * (which routes need one, the 401 in each protocol's shape, the access log,
 * SIGHUP reloads), and lingering close: uploads refused mid-body, from
 * libcurl and from raw sockets that keep sending, still read their 413,
 * 503 or 401, and the linger bounds hold. */
#include "test.h"

#include "server_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#define TOKEN "cors-auth-test-token-0123456789"
#define TOKEN2 "second-token-abcdefghijklmnop"
#define ALLOWED "http://app.example.com:3000"

static struct server g_srv; /* CORS + tokens, small body limit */
static int g_srv_up;
static char g_tokens[600];
static unsigned char *g_jpeg;
static size_t g_jpeg_len;

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (!g_srv_up) SKIP("the shared server did not start");                                    \
    } while (0)

static void write_tokens(const char *text) {
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.new", g_tokens);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
    rename(tmp, g_tokens);
}

/* A request with extra headers (NULL-terminated list). */
static void req(struct resp *r, const char *method, const char *path, const char *const *hdrs,
                const void *body, size_t len) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", g_srv.base, path);
    struct req_opts o = {.method = method, .hdrs = hdrs, .body = body, .len = len};
    do_request(r, url, &o);
}

static int has_header(const struct resp *r, const char *name) {
    char b[8];
    return resp_header(r, name, b, sizeof b) != NULL;
}

/* 1 when any Access-Control-* header is present. */
static int any_cors(const struct resp *r) {
    for (const char *p = r->headers; (p = strcasestr(p, "\r\naccess-control-")); p += 2)
        return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* CORS                                                                     */
/* ------------------------------------------------------------------------ */

static void test_preflight_every_route(void) {
    NEED_SERVER();
    static const char *const paths[] = {
        "/classify",          "/v1/models",       "/v1/models/resnet18:predict",
        "/v2/models/resnet18/infer", "/predictions/resnet18", "/healthz", "/metrics",
    };
    const char *hdrs[] = {"Origin: " ALLOWED, "Access-Control-Request-Method: POST",
                          "Access-Control-Request-Headers: authorization,content-type", NULL};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct resp r;
        req(&r, "OPTIONS", paths[i], hdrs, NULL, 0);
        char o[128] = "", m[128] = "", h[256] = "", a[32] = "", v[64] = "";
        resp_header(&r, "Access-Control-Allow-Origin", o, sizeof o);
        resp_header(&r, "Access-Control-Allow-Methods", m, sizeof m);
        resp_header(&r, "Access-Control-Allow-Headers", h, sizeof h);
        resp_header(&r, "Access-Control-Max-Age", a, sizeof a);
        resp_header(&r, "Vary", v, sizeof v);
        long st = r.status;
        resp_free(&r);
        CHECK(st == 204, "%s: preflight status %ld", paths[i], st);
        CHECK(!strcmp(o, ALLOWED), "%s: Allow-Origin '%s'", paths[i], o);
        CHECK(m[0], "%s: no Allow-Methods", paths[i]);
        CHECK(strcasestr(h, "authorization") && strcasestr(h, "content-type") &&
                  strcasestr(h, "inference-header-content-length"),
              "%s: Allow-Headers '%s'", paths[i], h);
        CHECK(atoi(a) > 0 && strcasestr(v, "origin"), "%s: Max-Age '%s', Vary '%s'", paths[i], a,
              v);
    }
}

static void test_preflight_denied(void) {
    NEED_SERVER();
    static const char *const origins[] = {"Origin: https://evil.example",
                                          "Origin: http://app.example.com:3001", "Origin: null"};
    for (size_t i = 0; i < sizeof origins / sizeof origins[0]; i++) {
        const char *hdrs[] = {origins[i], "Access-Control-Request-Method: POST", NULL};
        struct resp r;
        req(&r, "OPTIONS", "/classify", hdrs, NULL, 0);
        int cors = any_cors(&r);
        const char *e = check_error(&r, 403, "origin_not_allowed");
        resp_free(&r);
        CHECK(!cors, "%s: CORS headers for a disallowed origin", origins[i]);
        CHECK(!e, "%s: %s", origins[i], e);
    }
}

static void test_actual_responses(void) {
    NEED_SERVER();
    const char *auth[] = {"Origin: " ALLOWED, "Authorization: Bearer " TOKEN,
                          "Content-Type: image/jpeg", NULL};
    struct resp r;
    req(&r, "POST", "/classify", auth, g_jpeg, g_jpeg_len);
    char o[128] = "", x[256] = "";
    resp_header(&r, "Access-Control-Allow-Origin", o, sizeof o);
    resp_header(&r, "Access-Control-Expose-Headers", x, sizeof x);
    long st = r.status;
    resp_free(&r);
    CHECK(st == 200, "classify: %ld", st);
    CHECK(!strcmp(o, ALLOWED) && strcasestr(x, "server-timing") && strcasestr(x, "retry-after") &&
              strcasestr(x, "x-request-id") && strcasestr(x, "www-authenticate"),
          "Allow-Origin '%s', Expose-Headers '%s'", o, x);
    /* Errors too: 401 without a token, 404, 405, 413. */
    const char *noauth[] = {"Origin: " ALLOWED, "Content-Type: image/jpeg", NULL};
    static const struct {
        const char *method, *path;
        long status;
        int token;
    } errs[] = {{"POST", "/classify", 401, 0},
                {"GET", "/no-such-file", 404, 1},
                {"DELETE", "/classify", 405, 1},
                {"POST", "/classify?topk=0", 400, 1}};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        req(&r, errs[i].method, errs[i].path, errs[i].token ? auth : noauth, "x", 1);
        o[0] = 0;
        resp_header(&r, "Access-Control-Allow-Origin", o, sizeof o);
        st = r.status;
        resp_free(&r);
        CHECK(st == errs[i].status, "%s %s: %ld", errs[i].method, errs[i].path, st);
        CHECK(!strcmp(o, ALLOWED), "%s %s: Allow-Origin '%s'", errs[i].method, errs[i].path, o);
    }
    /* A disallowed origin is served (the browser blocks the read) with no
     * CORS header; no Origin at all: none either. */
    const char *evil[] = {"Origin: https://evil.example", NULL};
    req(&r, "GET", "/healthz", evil, NULL, 0);
    int cors = any_cors(&r);
    st = r.status;
    resp_free(&r);
    CHECK(st == 200 && !cors, "disallowed origin: %ld, cors %d", st, cors);
    get(&r, &g_srv, "/healthz");
    cors = any_cors(&r);
    int vary = has_header(&r, "Vary");
    resp_free(&r);
    CHECK(!cors && vary, "no Origin: no CORS header, but Vary: Origin");
}

static void test_cors_off(void) {
    /* Without --cors-origins an OPTIONS is what it was: 405, no CORS. */
    struct server s;
    char why[512];
    CHECK(server_spawn(&s, NULL, NULL, 0, why, sizeof why) == 0, "%s", why);
    char url[128];
    snprintf(url, sizeof url, "%s/classify", s.base);
    const char *hdrs[] = {"Origin: " ALLOWED, "Access-Control-Request-Method: POST", NULL};
    struct req_opts o = {.method = "OPTIONS", .hdrs = hdrs};
    struct resp r;
    do_request(&r, url, &o);
    long st = r.status;
    int cors = any_cors(&r);
    resp_free(&r);
    server_stop(&s);
    CHECK(st == 405 && !cors, "status %ld, cors %d", st, cors);
}

/* ------------------------------------------------------------------------ */
/* Tokens                                                                   */
/* ------------------------------------------------------------------------ */

static void test_token_required(void) {
    NEED_SERVER();
    struct resp r;
    post(&r, &g_srv, "/classify", g_jpeg, g_jpeg_len, "image/jpeg");
    char wa[128] = "";
    resp_header(&r, "WWW-Authenticate", wa, sizeof wa);
    const char *e = check_error(&r, 401, "unauthorized");
    resp_free(&r);
    CHECK(!e, "no token: %s", e);
    CHECK(!strncmp(wa, "Bearer", 6), "WWW-Authenticate '%s'", wa);
    static const char *const wrong[] = {"Authorization: Bearer not-the-token-0123456789",
                                        "Authorization: Basic " TOKEN, "Authorization: " TOKEN,
                                        "Authorization: Bearer " TOKEN "x"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        const char *h[] = {wrong[i], "Content-Type: image/jpeg", NULL};
        req(&r, "POST", "/classify", h, g_jpeg, g_jpeg_len);
        wa[0] = 0;
        resp_header(&r, "WWW-Authenticate", wa, sizeof wa);
        e = check_error(&r, 401, "unauthorized");
        resp_free(&r);
        CHECK(!e, "%s: %s", wrong[i], e);
        CHECK(strstr(wa, "invalid_token"), "%s: WWW-Authenticate '%s'", wrong[i], wa);
    }
    const char *ok[] = {"Authorization: bearer " TOKEN, "Content-Type: image/jpeg", NULL};
    req(&r, "POST", "/classify", ok, g_jpeg, g_jpeg_len);
    long st = r.status;
    resp_free(&r);
    CHECK(st == 200, "with the token: %ld", st);
}

static void test_open_and_protected_routes(void) {
    NEED_SERVER();
    static const struct {
        const char *method, *path;
        int open;
    } routes[] = {
        {"GET", "/healthz", 1},
        {"GET", "/readyz", 1},
        {"GET", "/v2/health/live", 1},
        {"GET", "/v2/health/ready", 1},
        {"GET", "/ping", 1},
        {"GET", "/", 1},
        {"GET", "/app.js", 1},
        {"GET", "/metrics", 0},
        {"GET", "/v1/models", 0},
        {"GET", "/v1/models/resnet18", 0},
        {"GET", "/v2", 0},
        {"GET", "/v2/models/resnet18", 0},
        {"GET", "/models", 0},
        {"POST", "/classify", 0},
        {"POST", "/v2/models/resnet18/infer", 0},
        {"POST", "/predictions/resnet18", 0},
        {"POST", "/v1/models/resnet18:predict", 0},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        struct resp r;
        const char *h[] = {"Content-Type: application/json", NULL};
        req(&r, routes[i].method, routes[i].path, h, routes[i].method[0] == 'P' ? "{}" : NULL,
            routes[i].method[0] == 'P' ? 2 : 0);
        long st = r.status;
        int wa = has_header(&r, "WWW-Authenticate");
        json_t *j = resp_json(&r);
        resp_free(&r);
        int json_error = j && json_object_get(j, "error") != NULL;
        json_decref(j);
        if (routes[i].open) {
            CHECK(st != 401, "%s %s needs a token", routes[i].method, routes[i].path);
        } else {
            CHECK(st == 401 && wa, "%s %s without a token: %ld", routes[i].method, routes[i].path,
                  st);
            /* TorchServe's error shape has no "error" key; the others do. */
            CHECK(json_error || !strncmp(routes[i].path, "/predictions", 12) ||
                      !strcmp(routes[i].path, "/models"),
                  "%s: not a JSON error", routes[i].path);
        }
    }
}

static void test_metrics_public(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--auth-token-file", g_tokens, "--metrics-public", "on", NULL};
    CHECK(server_spawn(&s, args, NULL, 0, why, sizeof why) == 0, "%s", why);
    char url[128];
    snprintf(url, sizeof url, "%s/metrics", s.base);
    int st = http_status(url, NULL, 0);
    snprintf(url, sizeof url, "%s/v1/models", s.base);
    int st2 = http_status(url, NULL, 0);
    server_stop(&s);
    CHECK(st == 200, "/metrics with --metrics-public: %d", st);
    CHECK(st2 == 401, "/v1/models still needs a token: %d", st2);
}

static char *read_log(const struct server *s, size_t *n) {
    return (char *)t_read_file(s->log, n);
}

static void test_access_log_and_reload(void) {
    NEED_SERVER();
    struct resp r;
    const char *h[] = {"Authorization: Bearer " TOKEN2, "Content-Type: image/jpeg", NULL};
    req(&r, "POST", "/classify", h, g_jpeg, g_jpeg_len);
    long before = r.status;
    resp_free(&r);
    CHECK(before == 401, "TOKEN2 is not in the file yet: %ld", before);
    write_tokens("# rotated\n" TOKEN2 "\n");
    kill(g_srv.pid, SIGHUP);
    long after = 0;
    for (int i = 0; i < 100 && after != 200; i++) {
        sleep_ms(50);
        req(&r, "POST", "/classify", h, g_jpeg, g_jpeg_len);
        after = r.status;
        resp_free(&r);
    }
    CHECK(after == 200, "after SIGHUP TOKEN2: %ld", after);
    const char *old[] = {"Authorization: Bearer " TOKEN, "Content-Type: image/jpeg", NULL};
    req(&r, "POST", "/classify", old, g_jpeg, g_jpeg_len);
    long gone = r.status;
    resp_free(&r);
    CHECK(gone == 401, "the removed token still works: %ld", gone);
    /* A broken file keeps the tokens in force. */
    write_tokens("# nothing\n");
    kill(g_srv.pid, SIGHUP);
    sleep_ms(300);
    req(&r, "POST", "/classify", h, g_jpeg, g_jpeg_len);
    long kept = r.status;
    resp_free(&r);
    write_tokens(TOKEN "\n");
    kill(g_srv.pid, SIGHUP);
    CHECK(kept == 200, "after a bad reload: %ld", kept);
    sleep_ms(300);
    size_t n = 0;
    char *log = read_log(&g_srv, &n);
    CHECK(log, "no log");
    int leaked = strstr(log, TOKEN) || strstr(log, TOKEN2) || strstr(log, "not-the-token");
    int refused = strstr(log, " 401 ") != NULL;
    int reloaded = strstr(log, "reloaded") != NULL && strstr(log, "keeping") != NULL;
    free(log);
    CHECK(!leaked, "a token reached the log");
    CHECK(refused, "the access log does not show the 401s");
    CHECK(reloaded, "the log does not report the reloads (good and failed)");
}

static void test_bad_token_file_stops_start(void) {
    char bad[700];
    snprintf(bad, sizeof bad, "%s/empty-tokens", g_tmp);
    FILE *f = fopen(bad, "w");
    CHECK(f);
    fputs("# no tokens\n", f);
    fclose(f);
    const char *args[] = {"--auth-token-file", bad, NULL};
    struct server s;
    char why[512];
    int spawned = server_spawn(&s, args, NULL, 0, why, sizeof why) == 0;
    int code = spawned ? server_wait(&s, 30) : -1;
    size_t n = 0;
    char *log = read_log(&s, &n);
    int named = log && strstr(log, bad) != NULL;
    free(log);
    CHECK(!spawned || code != 0, "the server started with an empty token file");
    CHECK(named, "the message does not name the file");
}

/* ------------------------------------------------------------------------ */
/* Lingering close                                                          */
/* ------------------------------------------------------------------------ */

/* Sends head, then body bytes (chunked or raw) up to total while reading
 * whatever comes back, as a client that does not look before it has sent
 * everything: an early answer, even the end of the server's side, does not
 * stop it; only an error on send does. Returns the answer's status (0:
 * none), with the bytes sent and the errno that ended sending (a reset). */
struct raw_out {
    int status;
    long sent;
    int send_errno;
    char answer[4096];
};

#define RAW_FRAME 16384

static void raw_upload_paced(int port, const char *head, long total, int chunked, int pace_ms,
                             struct raw_out *o) {
    memset(o, 0, sizeof *o);
    int fd = loopback_connect(port);
    if (fd < 0) return;
    size_t got = 0;
    send(fd, head, strlen(head), MSG_NOSIGNAL);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    /* One frame, sent over and over: raw bytes, or one whole chunk
     * ("3ff8" = RAW_FRAME - 8 bytes of data between its size line and its
     * CRLF). A partial send resumes inside the frame. */
    static char frame[RAW_FRAME];
    memset(frame, 'x', sizeof frame);
    if (chunked) {
        memcpy(frame, "3ff8\r\n", 6);
        memcpy(frame + RAW_FRAME - 2, "\r\n", 2);
    }
    size_t off = 0;
    double end = now_s() + 60;
    int finished = 0, eof = 0;
    while (now_s() < end) {
        struct pollfd p = {.fd = fd, .events = (eof ? 0 : POLLIN) | (finished ? 0 : POLLOUT)};
        if (!p.events) break;
        poll(&p, 1, 200);
        if (!eof && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = recv(fd, o->answer + got, sizeof o->answer - 1 - got, 0);
            if (r > 0) got += (size_t)r;
            if (r == 0 || (r < 0 && errno != EAGAIN)) eof = 1;
        }
        if (!finished && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            size_t n = RAW_FRAME - off;
            if (!chunked && (long)n > total - o->sent) n = (size_t)(total - o->sent);
            ssize_t w = send(fd, frame + off, n, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) {
                o->send_errno = errno;
                finished = 1;
            } else if (w > 0) {
                o->sent += w;
                off = (off + (size_t)w) % RAW_FRAME;
                if (pace_ms && off == 0) sleep_ms(pace_ms);
                if (o->sent >= total && (!chunked || off == 0)) {
                    finished = 1;
                    if (chunked) send(fd, "0\r\n\r\n", 5, MSG_NOSIGNAL);
                }
            }
        }
        if (finished && got && strstr(o->answer, "\r\n\r\n")) {
            /* The answer is in; read the rest of it briefly. */
            sleep_ms(50);
            ssize_t r = recv(fd, o->answer + got, sizeof o->answer - 1 - got, 0);
            if (r > 0) got += (size_t)r;
            break;
        }
    }
    o->answer[got] = 0;
    sscanf(o->answer, "HTTP/1.1 %d", &o->status);
    close(fd);
}

static void raw_upload(int port, const char *head, long total, int chunked, struct raw_out *o) {
    raw_upload_paced(port, head, total, chunked, 0, o);
}

static void test_linger_curl(void) {
    NEED_SERVER();
    /* 8 MiB against --max-body-bytes 1 MB: chunked (decided mid-body) and
     * with a Content-Length but no Expect (the body follows the headers at
     * once, as with many clients). */
    size_t big = 8 << 20;
    unsigned char *b = malloc(big);
    memset(b, 0xab, big);
    b[0] = 0xff;
    b[1] = 0xd8;
    char url[128];
    snprintf(url, sizeof url, "%s/classify", g_srv.base);
    for (int i = 0; i < 3; i++) {
        const char *hc[] = {"Authorization: Bearer " TOKEN, "Content-Type: image/jpeg", NULL};
        struct req_opts oc = {.body = b, .len = big, .chunked = 1, .hdrs = hc};
        struct resp r;
        do_request(&r, url, &oc);
        const char *e = check_error(&r, 413, "body_too_large");
        resp_free(&r);
        CHECK(!e, "chunked, try %d: %s", i, e);
        const char *hl[] = {"Authorization: Bearer " TOKEN, "Content-Type: image/jpeg", "Expect:",
                            NULL};
        struct req_opts ol = {.body = b, .len = big, .hdrs = hl};
        do_request(&r, url, &ol);
        e = check_error(&r, 413, "body_too_large");
        resp_free(&r);
        CHECK(!e, "Content-Length, try %d: %s", i, e);
        /* And without the token: the 401 arrives, not a reset. */
        const char *hn[] = {"Content-Type: image/jpeg", "Expect:", NULL};
        struct req_opts on = {.body = b, .len = big, .hdrs = hn};
        do_request(&r, url, &on);
        e = check_error(&r, 401, "unauthorized");
        resp_free(&r);
        CHECK(!e, "401 with a body, try %d: %s", i, e);
    }
    free(b);
}

static void test_linger_raw(void) {
    NEED_SERVER();
    char head[512];
    struct raw_out o;
    /* Content-Length over the limit, body sent anyway. */
    snprintf(head, sizeof head,
             "POST /classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n",
             6 << 20);
    raw_upload(g_srv.port, head, 6 << 20, 0, &o);
    CHECK(o.status == 413 && strstr(o.answer, "body_too_large"), "Content-Length: %d (%.100s)",
          o.status, o.answer);
    CHECK(!o.send_errno, "a reset while sending (errno %d)", o.send_errno);
    /* Chunked, decided mid-body. */
    snprintf(head, sizeof head,
             "POST /classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n");
    raw_upload(g_srv.port, head, 6 << 20, 1, &o);
    CHECK(o.status == 413 && strstr(o.answer, "body_too_large"), "chunked: %d (%.100s)", o.status,
          o.answer);
    CHECK(!o.send_errno, "chunked: a reset while sending (errno %d)", o.send_errno);
    /* No token, a body anyway. */
    snprintf(head, sizeof head,
             "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
             "Content-Length: %d\r\n\r\n",
             2 << 20);
    raw_upload(g_srv.port, head, 2 << 20, 0, &o);
    CHECK(o.status == 401 && strstr(o.answer, "unauthorized"), "401: %d (%.100s)", o.status,
          o.answer);
    CHECK(!o.send_errno, "401: a reset while sending (errno %d)", o.send_errno);
    /* Over the in-flight budget (--max-inflight-bytes 600000): 503. */
    snprintf(head, sizeof head,
             "POST /classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n",
             900000);
    raw_upload(g_srv.port, head, 900000, 0, &o);
    CHECK(o.status == 503 && strstr(o.answer, "server_busy") && strcasestr(o.answer, "Retry-After"),
          "503: %d (%.100s)", o.status, o.answer);
    CHECK(!o.send_errno, "503: a reset while sending (errno %d)", o.send_errno);
}

static void test_linger_bounds(void) {
    /* --linger-bytes 1 MiB: a client that goes on sending 64 MiB past the
     * limit is cut soon after the bound, not fed for ever. */
    struct server s;
    char why[512];
    const char *args[] = {"--max-body-bytes", "100000", "--linger-bytes", "1048576",
                          "--linger-seconds", "2",      NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    char head[256];
    snprintf(head, sizeof head,
             "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
             "Content-Length: %d\r\n\r\n",
             64 << 20);
    struct raw_out o;
    double t0 = now_s();
    raw_upload(s.port, head, 64 << 20, 0, &o);
    double took = now_s() - t0;
    snprintf(head, sizeof head,
             "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
             "Transfer-Encoding: chunked\r\n\r\n");
    struct raw_out oc;
    double t1 = now_s();
    raw_upload(s.port, head, 64 << 20, 1, &oc);
    double took_c = now_s() - t1;
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", s.base);
    int healthy = http_status(url, NULL, 0) == 200;
    server_stop(&s);
    /* --linger-seconds: a slow chunked client (16 KiB every 50 ms, about
     * 320 KiB/s) refused mid-body reads its 413 and is cut once 2 s have
     * passed, long before --linger-bytes (8 MiB, 25 s at that rate). */
    const char *slow_args[] = {"--max-body-bytes", "100000", "--linger-bytes", "8388608",
                               "--linger-seconds", "2",      NULL};
    struct server s2;
    CHECK(server_spawn(&s2, slow_args, NULL, 1, why, sizeof why) == 0, "%s", why);
    struct raw_out os;
    double t2 = now_s();
    raw_upload_paced(s2.port, head, 64 << 20, 1, 50, &os);
    double took_s = now_s() - t2;
    server_stop(&s2);
    CHECK(o.status == 413, "the answer came first: %d", o.status);
    CHECK(o.send_errno && o.sent < (24 << 20), "not cut: sent %ld, errno %d", o.sent,
          o.send_errno);
    CHECK(took < 10, "took %.1f s", took);
    CHECK(oc.status == 413 && strstr(oc.answer, "body_too_large"),
          "chunked: the answer did not come before the cut: %d (%.100s)", oc.status, oc.answer);
    CHECK(oc.send_errno && oc.sent < (24 << 20), "chunked not cut: sent %ld, errno %d", oc.sent,
          oc.send_errno);
    CHECK(os.status == 413 && os.send_errno, "slow chunked: status %d, errno %d", os.status,
          os.send_errno);
    CHECK(took_s > 1.5 && took_s < 6 && os.sent < (4 << 20), "slow chunked: cut after %.1f s, %ld bytes",
          took_s, os.sent);
    CHECK(took_c < 10, "chunked took %.1f s", took_c);
    CHECK(healthy, "the server is not healthy afterwards");
}

int main(int argc, char **argv) {
    (void)argc;
    t_suite = "cors_auth";
    if (harness_init(argv[0]) != 0) return 1;
    g_jpeg = gen_jpeg(320, 240, 3, 0, &g_jpeg_len);
    snprintf(g_tokens, sizeof g_tokens, "%s/tokens", g_tmp);
    write_tokens("# test tokens\n" TOKEN "\n");
    char why[512];
    const char *args[] = {"--cors-origins",     ALLOWED,   "--auth-token-file", g_tokens,
                          "--max-body-bytes",   "1000000", "--max-inflight-bytes", "600000",
                          NULL};
    alarm(240);
    g_case = "setup";
    if (server_spawn(&g_srv, args, NULL, 1, why, sizeof why) == 0)
        g_srv_up = 1;
    else
        printf("# shared server: %s\n", why);
    alarm(0);
    RUN_T(test_preflight_every_route, 60);
    RUN_T(test_preflight_denied, 60);
    RUN_T(test_actual_responses, 60);
    RUN_T(test_cors_off, 120);
    RUN_T(test_token_required, 60);
    RUN_T(test_open_and_protected_routes, 60);
    RUN_T(test_metrics_public, 120);
    RUN_T(test_access_log_and_reload, 60);
    RUN_T(test_bad_token_file_stops_start, 60);
    RUN_T(test_linger_curl, 120);
    RUN_T(test_linger_raw, 120);
    RUN_T(test_linger_bounds, 120);
    if (g_srv_up) server_stop(&g_srv);
    free(g_jpeg);
    return t_done();
}
