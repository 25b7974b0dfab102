/* http.c: imgclassd's transport: the libmicrohttpd daemon, connections
 * and their read-deadline reaper, framing checks, admission, request
 * bodies within --max-body-bytes and the --max-inflight-bytes budget,
 * suspend/resume, and the response helpers every API uses (one place for
 * the headers every response carries). What a path means lives in the
 * routing table (routes.c) and the API files (api_*.c); the inference job
 * they share in infer.c.
 *
 * Threading model: a pool of --http-threads libmicrohttpd threads (epoll),
 * with suspend/resume. An HTTP thread reads the body, lets the route parse
 * it into images, hands the request to the decode stage (infer.c,
 * decoder.c) and suspends the connection; it then returns to serve other
 * connections, so it never decodes and never waits for inference, and
 * /healthz is answered at once whatever uploads cost. A decode thread
 * decodes and preprocesses the images and submits them to the batcher; the
 * batcher's thread that completes the last image of a request resumes the
 * connection (or the decode thread does, when nothing was queued), and
 * libmicrohttpd calls the handler again on an HTTP thread to write the
 * response. Thread-per-connection was the alternative: simpler, but every
 * idle or slow connection would cost a thread, bad under the hostile load
 * of issue 7.
 *
 * A request's state lives in *req_cls from the first handler call and is
 * freed only in the request-completed callback. */
#include "http_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

/* One per connection (libmicrohttpd's socket_context), from
 * MHD_CONNECTION_NOTIFY_STARTED to MHD_CONNECTION_NOTIFY_CLOSED, for the
 * request read deadline. libmicrohttpd's --conn-timeout-s is an idle
 * timeout, reset by every byte, so a client sending one byte a second
 * would hold its connection (and its buffers) forever; the reaper thread
 * cuts any connection whose current request has been arriving for longer
 * than --request-read-timeout-s. The clock of a request starts when the
 * connection opens or the previous answer on it completed (keep-alive);
 * it stops once the whole body is in or an answer is queued. */
struct conn_track {
    struct conn_track *prev, *next; /* guarded by srv_http.conn_mu */
    int fd;                         /* valid until NOTIFY_CLOSED (closed after it) */
    _Atomic int64_t read_start_ns;
    _Atomic int reading; /* 1 while a request is being received */
    _Atomic int cut;     /* the reaper shut the socket down */
    /* An answer went out with the request body unread: at close, a copy
     * of fd goes to the linger thread (srv_http.linger), so the client
     * reads the answer instead of a reset. */
    _Atomic int linger;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

double srv_ms(double s) {
    return (double)llround(s * 1e6) / 1e3; /* milliseconds, microsecond precision */
}

void srv_utf8_sanitize(char *out, size_t outlen, const char *s, size_t n) {
    if (!outlen) return;
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n && o + 5 < outlen;) {
        unsigned char c = p[i];
        size_t k = 0;
        if (c >= 0x20 && c < 0x7f)
            k = 1;
        else if (c >= 0xc2 && c <= 0xdf)
            k = 2;
        else if (c >= 0xe0 && c <= 0xef)
            k = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 4;
        int ok = k > 0 && i + k <= n;
        for (size_t j = 1; ok && j < k; j++)
            if ((p[i + j] & 0xc0) != 0x80) ok = 0;
        /* overlongs and surrogates */
        if (ok && k == 3 && c == 0xe0 && p[i + 1] < 0xa0) ok = 0;
        if (ok && k == 3 && c == 0xed && p[i + 1] >= 0xa0) ok = 0;
        if (ok && k == 4 && c == 0xf0 && p[i + 1] < 0x90) ok = 0;
        if (ok && k == 4 && c == 0xf4 && p[i + 1] >= 0x90) ok = 0;
        if (ok) {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        } else {
            out[o++] = '?';
            i++;
        }
    }
    out[o] = 0;
}

/* A JSON string from any bytes (never NULL unless out of memory). */
json_t *srv_jstr(const char *s) {
    json_t *j = json_string(s);
    if (j) return j;
    char buf[1024];
    srv_utf8_sanitize(buf, sizeof buf, s, strlen(s));
    return json_string(buf);
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Takes n bytes from the --max-inflight-bytes budget; -1 when that would
 * exceed it (nothing taken). Lock-free, thread-safe. */
static int budget_take(struct srv_http *h, size_t n) {
    int64_t cur = atomic_load(&h->body_bytes);
    do {
        if (cur + (int64_t)n > h->cfg->max_inflight_bytes) return -1;
    } while (!atomic_compare_exchange_weak(&h->body_bytes, &cur, cur + (int64_t)n));
    return 0;
}

/* Returns everything r holds of the budget. */
void srv_budget_release(struct srv_req *r) {
    if (r->reserved) atomic_fetch_sub(&r->h->body_bytes, (int64_t)r->reserved);
    r->reserved = 0;
}

/* Tells the batcher this request's images are no longer on their way
 * (queued, refused, or the client left). Idempotent. */
void srv_arrival_end(struct srv_req *r) {
    if (!r->arriving) return;
    r->arriving = 0;
    srv_batcher_arrival(r->model->batcher, -1);
}

/* The request has been read (or answered): its read deadline stops. */
static void track_read_done(struct srv_req *r) {
    if (r->track) atomic_store(&r->track->reading, 0);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t srv_url_unescape(char *s) {
    char *w = s;
    for (const char *p = s; *p;) {
        int hi, lo;
        if (p[0] == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0 && (hi | lo)) {
            *w++ = (char)(hi * 16 + lo);
            p += 3;
        } else {
            *w++ = *p++;
        }
    }
    *w = 0;
    return (size_t)(w - s);
}

static size_t on_unescape(void *cls, struct MHD_Connection *c, char *s) {
    return srv_url_unescape(s);
}

int srv_request_id_ok(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= 64) return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._:/+=-", c)))
            return 0;
    }
    return n > 0;
}


/* ------------------------------------------------------------------------ */
/* Responses                                                                */
/* ------------------------------------------------------------------------ */

/* The web page's policy: its own origin only; blob: images are the page's
 * thumbnails of the user's photos. Sent on every response, so an API
 * answer opened in a browser can run nothing either. */
#define SRV_CSP                                                                                    \
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "               \
    "frame-ancestors 'none'; form-action 'self'"

/* Headers every response carries. */
void srv_add_common_headers(struct srv_req *r, struct MHD_Response *resp, int api) {
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy", SRV_CSP);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    if (api) MHD_add_response_header(resp, "Cache-Control", "no-store");
    /* CORS, once for every route and status: Vary: Origin whenever CORS
     * is on, Allow-Origin and Expose-Headers for an allowed origin (a
     * page must be able to read a 413 or a 503's Retry-After too). */
    for (int i = 0; i < r->cors.nheaders; i++)
        MHD_add_response_header(resp, r->cors.h[i].name, r->cors.h[i].value);
    if (r->close || atomic_load(&r->h->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
}

/* Queues resp with status, recording the outcome; destroys resp. */
enum MHD_Result srv_queue(struct srv_req *r, int status, struct MHD_Response *resp,
                          uint64_t bytes) {
    if (!resp) return MHD_NO;
    track_read_done(r);
    r->status = status;
    r->bytes = bytes;
    /* Answered before the body it announced was read: libmicrohttpd will
     * close the connection after the answer with the body unread, which
     * makes the kernel reset it; lingering at the close avoids that. */
    if (r->body_declared && !r->complete && r->track) atomic_store(&r->track->linger, 1);
    enum MHD_Result q = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return q;
}

struct raw_head {
    char *buf;
    size_t len, cap;
};

static enum MHD_Result raw_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value) {
    struct raw_head *h = cls;
    if (!value) value = "";
    int n = snprintf(h->buf + h->len, h->cap - h->len, "%s: %s\r\n", key, value);
    if (n > 0 && (size_t)n < h->cap - h->len) h->len += (size_t)n;
    return MHD_YES;
}

/* Writes an answer straight to the socket, for a refusal whose lingering
 * bounds ran out mid-upload: libmicrohttpd 0.9.75 cannot queue a response
 * while a body is arriving, and the connection is about to be cut. The
 * socket's send buffer is empty (nothing was sent on this request but
 * maybe 100 Continue), so a small answer goes out whole without blocking.
 * The sending side is shut afterwards so a client that reads sees the
 * answer end before the reset that closing on unread data brings.
 * Returns MHD_NO: libmicrohttpd closes the connection. */
static enum MHD_Result raw_send(struct srv_req *r, int status, struct MHD_Response *resp,
                                const char *body, size_t len) {
    char head[4096];
    struct raw_head h = {head, 0, sizeof head};
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    h.len = (size_t)snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n", status,
                             reason && reason[0] ? reason : "Error");
    MHD_get_response_headers(resp, raw_header, &h);
    int n = snprintf(head + h.len, sizeof head - h.len, "Content-Length: %zu\r\n\r\n", len);
    if (n > 0 && (size_t)n < sizeof head - h.len) h.len += (size_t)n;
    track_read_done(r);
    r->status = status;
    r->bytes = len;
    int fd = r->track ? r->track->fd : -1;
    if (fd < 0) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        fd = ci ? ci->connect_fd : -1;
    }
    if (fd >= 0) {
        struct iovec iov[2] = {{head, h.len}, {(void *)body, len}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w; /* a short write: the client is not reading anyway */
        shutdown(fd, SHUT_WR);
    }
    MHD_destroy_response(resp); /* owns body: after the write */
    return MHD_NO;
}

/* Sends body (malloc'd, ownership taken) with a content type. */
enum MHD_Result srv_send_owned(struct srv_req *r, int status, const char *ctype, char *body,
                               size_t len, const char *hname, const char *hval) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    srv_add_common_headers(r, resp, 1);
    if (hname) MHD_add_response_header(resp, hname, hval);
    if (r->raw_answer) return raw_send(r, status, resp, body, len);
    return srv_queue(r, status, resp, len);
}

/* Serializes j (reference stolen) and sends it as JSON; hname/hval is an
 * optional extra header. */
enum MHD_Result srv_send_json(struct srv_req *r, int status, json_t *j, const char *hname,
                              const char *hval) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!s) return MHD_NO;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return MHD_NO;
    }
    t[n] = '\n';
    t[n + 1] = 0;
    return srv_send_owned(r, status, "application/json", t, n + 1, hname, hval);
}

json_t *srv_error_object(const char *code, const char *msg) {
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", srv_jstr(msg));
    return e;
}

enum MHD_Result srv_error_imgclassd(struct srv_req *r, int status, const char *code,
                                    const char *msg, const char *hname, const char *hval) {
    json_t *o = json_object();
    json_object_set_new(o, "error", srv_error_object(code, msg));
    return srv_send_json(r, status, o, hname, hval);
}

enum MHD_Result srv_send_error_h(struct srv_req *r, int status, const char *code,
                                 const char *hname, const char *hval, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return (r->error ? r->error : srv_error_imgclassd)(r, status, code, msg, hname, hval);
}

static enum MHD_Result send_405(struct srv_req *r, const char *allow) {
    return srv_send_error_h(r, 405, "method_not_allowed", MHD_HTTP_HEADER_ALLOW, allow,
                            "method %s is not allowed on %s; allowed: %s", r->method, r->path, allow);
}

enum MHD_Result srv_send_api_body(struct srv_req *r, struct srv_api_body *b, const char *hname,
                                  const char *hval) {
    char hl[24];
    snprintf(hl, sizeof hl, "%zu", b->header_len);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(b->len, b->data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        srv_api_body_free(b);
        return MHD_NO;
    }
    size_t len = b->len;
    b->data = NULL; /* the response owns it now */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, b->content_type);
    if (b->binary) MHD_add_response_header(resp, "Inference-Header-Content-Length", hl);
    srv_add_common_headers(r, resp, 1);
    if (hname) MHD_add_response_header(resp, hname, hval);
    return srv_queue(r, b->status, resp, len);
}

enum MHD_Result srv_send_rendered(struct srv_req *r, enum srv_api_status st,
                                  struct srv_api_body *b) {
    if (st != SRV_API_OK) return srv_send_503_retry(r, "out_of_memory", 1, "out of memory");
    return srv_send_api_body(r, b, NULL, NULL);
}

enum MHD_Result srv_send_503_retry(struct srv_req *r, const char *code, int retry_s,
                                   const char *msg) {
    char ra[16];
    snprintf(ra, sizeof ra, "%d", retry_s < 1 ? 1 : retry_s);
    return srv_send_error_h(r, 503, code, MHD_HTTP_HEADER_RETRY_AFTER, ra, "%s", msg);
}


/* ------------------------------------------------------------------------ */
/* Admission and request bodies                                             */
/* ------------------------------------------------------------------------ */

int srv_req_refuse_unready(struct srv_req *r, enum MHD_Result *ret) {
    if (!atomic_load_explicit(&r->h->ready, memory_order_acquire)) {
        *ret = srv_send_503_retry(r, "not_ready", 1, "the model is still loading");
        return 1;
    }
    if (!r->admitted) {
        *ret = srv_send_503_retry(r, "shutting_down", 1, "the server is shutting down");
        return 1;
    }
    return 0;
}

int srv_req_refuse_length(struct srv_req *r, enum MHD_Result *ret) {
    const struct srv_config *c = r->h->cfg;
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl) return 0;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (errno == 0 && end != cl && (n > (unsigned long long)c->max_body_bytes)) {
        *ret = srv_send_error(r, 413, "body_too_large",
                              "the request body (%llu bytes) exceeds --max-body-bytes (%lld)", n,
                              (long long)c->max_body_bytes);
        return 1;
    }
    if (errno == 0 && end != cl) r->expect = n;
    return 0;
}

enum MHD_Result srv_req_admit_body(struct srv_req *r, int images) {
    struct srv_http *h = r->h;
    const struct srv_config *c = h->cfg;
    int retry = 1;
    switch (srv_batcher_has_room(r->model->batcher, images, &retry)) {
    case SRV_SUBMIT_OK:
        /* A body of known size that does not fit in what is left of the
         * memory budget now is refused before it is read. Nothing is
         * reserved yet: a body takes its share as its bytes arrive, so
         * connections that send headers announcing large bodies and then
         * nothing (budget squatting) hold no budget at all. */
        if (r->expect &&
            atomic_load(&h->body_bytes) + (int64_t)r->expect > c->max_inflight_bytes) {
            srv_metrics_budget_rejected();
            return srv_send_503_retry(r, "server_busy", 1,
                                      "too many request bodies are being received at once "
                                      "(--max-inflight-bytes); retry later");
        }
        srv_batcher_arrival(r->model->batcher, 1);
        r->arriving = 1;
        return MHD_YES;
    case SRV_SUBMIT_FULL:
        srv_metrics_rejected(images);
        return srv_send_503_retry(r, "queue_full", retry, "the queue is full; retry later");
    default:
        return srv_send_503_retry(r, "shutting_down", 1, "the server is shutting down");
    }
}

/* A body that will be refused once drained (413 too large, 503 over the
 * budget): its bytes and budget share go now, and it is no longer on its
 * way to the batcher. */
static void drop_body(struct srv_req *r) {
    srv_arrival_end(r);
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    srv_budget_release(r);
}

/* A GET or HEAD may carry a body (it means nothing here and is dropped),
 * and so may a preflight or a request refused for its token; but no more
 * than this: past it the answer is 413, decided from a Content-Length at
 * once or after the bytes were discarded. */
#define GET_BODY_MAX 65536

static enum MHD_Result get_body_too_large(struct srv_req *r) {
    r->close = 1;
    return srv_send_error(r, 413, "body_too_large",
                          "a %s request may carry at most %d bytes of body", r->method,
                          GET_BODY_MAX);
}

/* The body is read but not kept: a GET route's, a preflight's, or one
 * whose request was refused for its token on a GET route. */
static int body_ignored(const struct srv_req *r) {
    return r->deferred || !r->def || strcmp(r->def->method, "GET") == 0;
}

/* The answer to a body refused while it arrived (413 past the limit, 503
 * over the budget). */
static enum MHD_Result send_body_refusal(struct srv_req *r) {
    const struct srv_config *c = r->h->cfg;
    if (body_ignored(r)) return get_body_too_large(r);
    if (r->too_large)
        return srv_send_error(r, 413, "body_too_large",
                              "the request body exceeds --max-body-bytes (%lld bytes)",
                              (long long)c->max_body_bytes);
    return srv_send_503_retry(r, "server_busy", 1,
                              "too many request bodies are being received at once "
                              "(--max-inflight-bytes); retry later");
}

/* Marks the body refused from now on: what follows is discarded. */
static void refuse_body(struct srv_req *r) {
    r->refused_ns = srv_now_ns();
    r->refused_at = r->received;
    drop_body(r);
}

/* n more bytes of a refused body, discarded. Lingering close while the
 * request is still open: the answer waits for the end of the body (it
 * then goes out normally), but no longer than --linger-bytes past the
 * refusal or --linger-seconds since it; past either bound the answer is
 * written to the socket at once and the connection closed (a client still
 * sending then gets a reset, after the answer). A client that stalls is
 * cut by the read deadline (--request-read-timeout-s) as any other. */
static enum MHD_Result discard(struct srv_req *r) {
    const struct srv_config *c = r->h->cfg;
    uint64_t past = r->received - r->refused_at;
    int64_t held = srv_now_ns() - r->refused_ns;
    if (past <= (uint64_t)c->linger_bytes && c->linger_bytes > 0 &&
        held <= (int64_t)c->linger_seconds * 1000000000)
        return MHD_YES;
    r->raw_answer = 1;
    r->close = 1;
    send_body_refusal(r);
    return MHD_NO;
}

/* Appends an upload chunk. Past --max-body-bytes, or once the body no
 * longer fits in the --max-inflight-bytes budget, the bytes are counted
 * and discarded (libmicrohttpd cannot answer in the middle of an upload);
 * see discard() for how long. */
static enum MHD_Result body_data(struct srv_req *r, const char *data, size_t n) {
    const struct srv_config *c = r->h->cfg;
    r->received += n;
    /* A body refused over the budget that turns out too large anyway gets
     * 413: "retry later" would only bring it back. */
    if (r->over_budget && r->received > (uint64_t)c->max_body_bytes) r->too_large = 1;
    if (r->too_large || r->over_budget) return discard(r);
    if (r->received > (uint64_t)c->max_body_bytes) {
        r->too_large = 1;
        refuse_body(r);
        return discard(r);
    }
    if (r->len + n > r->cap) {
        /* The buffer doubles as the bytes arrive (a known size caps it, so
         * the last step fits exactly), and the budget is taken step by
         * step: what a body holds is at most twice what it has sent. */
        size_t ncap = r->cap ? r->cap : 64 * 1024;
        while (ncap < r->len + n)
            ncap *= 2;
        if (r->expect >= r->len + n && ncap > r->expect) ncap = (size_t)r->expect;
        if (ncap > (size_t)c->max_body_bytes) ncap = (size_t)c->max_body_bytes;
        if (ncap > r->reserved) {
            if (budget_take(r->h, ncap - r->reserved) != 0) {
                r->over_budget = 1;
                srv_metrics_budget_rejected();
                refuse_body(r);
                return discard(r);
            }
            r->reserved = ncap;
        }
        unsigned char *nb = realloc(r->body, ncap);
        if (!nb) return MHD_NO;
        r->body = nb;
        r->cap = ncap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

/* The bytes of a body that is not kept (body_ignored): counted and
 * discarded; past GET_BODY_MAX the answer becomes 413, with the same
 * lingering as a refused upload. */
static enum MHD_Result ignored_body_data(struct srv_req *r, size_t n) {
    r->received += n;
    if (!r->too_large && r->received > GET_BODY_MAX) {
        r->too_large = 1;
        refuse_body(r);
    }
    return r->too_large ? discard(r) : MHD_YES;
}

/* The whole body is in: the transport's refusals (413, over the budget,
 * empty), else the route parses it (and usually submits an inference job). */
static enum MHD_Result body_complete(struct srv_req *r) {
    if (r->too_large || r->over_budget) return send_body_refusal(r);
    if (r->len == 0) return srv_send_error(r, 400, "empty_body", "the request body is empty");
    return r->def->answer(r);
}

/* The connection was resumed: the refusal, or the route's answer. */
static enum MHD_Result answer_resumed(struct srv_req *r) {
    if (r->refuse_status)
        return srv_send_503_retry(r, r->refuse_code, r->refuse_retry, r->refuse_msg);
    srv_infer_finish(r);
    return r->def->resumed(r);
}


/* ------------------------------------------------------------------------ */
/* libmicrohttpd callbacks                                                  */
/* ------------------------------------------------------------------------ */

static struct srv_req *req_new(struct srv_http *h, struct MHD_Connection *conn, const char *url,
                               const char *method) {
    struct srv_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->h = h;
    r->conn = conn;
    r->t0 = srv_now_ns();
    pthread_mutex_init(&r->mu, NULL);
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->track = sc ? sc->socket_context : NULL;
    srv_utf8_sanitize(r->method, sizeof r->method, method, strlen(method));
    srv_utf8_sanitize(r->path, sizeof r->path, url, strlen(url));
    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && srv_request_id_ok(rid)) {
        snprintf(r->id, sizeof r->id, "%s", rid);
    } else {
        uint64_t x = splitmix64(h->id_seed + atomic_fetch_add(&h->id_counter, 1));
        snprintf(r->id, sizeof r->id, "%016llx", (unsigned long long)x);
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->remote,
                      sizeof r->remote);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->remote,
                      sizeof r->remote);
    }
    if (!r->remote[0]) snprintf(r->remote, sizeof r->remote, "-");
    return r;
}

static void req_free(struct srv_req *r) {
    srv_arrival_end(r); /* the client left mid-upload */
    srv_budget_release(r);
    free(r->body);
    free(r->imgs);
    free(r->tensors);
    free(r->logits);
    if (r->api_free) r->api_free(r->api);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* A GET route: 413 at once when the Content-Length is too large (the body
 * is not read), else answered once the request is complete. */
static enum MHD_Result get_start(struct srv_req *r) {
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > GET_BODY_MAX) return get_body_too_large(r);
    return MHD_YES;
}

/* ------------------------------------------------------------------------ */
/* Cross-origin requests and tokens, for every route                        */
/* ------------------------------------------------------------------------ */

/* Decides the CORS headers of r's answers (none with CORS off). */
static void cors_decide(struct srv_req *r, const char *method) {
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    const char *acrm =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Access-Control-Request-Method");
    srv_cors_decide(r->h->cors, method, origin, acrm, r->allow[0] ? r->allow : NULL, &r->cors);
}

/* A preflight, answered for every path before routing: 204 with the
 * Access-Control-* headers for an allowed origin; 403 with none for
 * another (the browser then blocks the call either way, but 403 tells a
 * person reading the network log why). */
static enum MHD_Result answer_preflight(struct srv_req *r) {
    if (r->cors.kind == SRV_CORS_PREFLIGHT_DENIED)
        return srv_send_error(r, 403, "origin_not_allowed",
                              "cross-origin requests from this origin are not allowed "
                              "(--cors-origins)");
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    srv_add_common_headers(r, resp, 0);
    return srv_queue(r, 204, resp, 0);
}

/* 1 when r's route needs a token and r does not carry one in the set. The
 * token is never copied or logged; srv_auth_check compares in constant
 * time. */
static int token_refused(const struct srv_req *r) {
    const struct srv_http *h = r->h;
    if (!h->auth || r->access == SRV_ACCESS_OPEN) return 0;
    if (r->access == SRV_ACCESS_METRICS && h->cfg->metrics_public) return 0;
    const char *a =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    return !srv_auth_check(h->auth, a);
}

/* 401 in the route's error shape. RFC 6750 3.1: error="invalid_token"
 * once credentials were sent (whatever their scheme), none when there
 * were none, so a client knows whether to ask its user. */
static enum MHD_Result send_401(struct srv_req *r) {
    int sent = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                           MHD_HTTP_HEADER_AUTHORIZATION) != NULL;
    if (sent)
        return srv_send_error_h(r, 401, "unauthorized", MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"imgclassd\", error=\"invalid_token\"",
                                "the access token was not accepted");
    return srv_send_error_h(r, 401, "unauthorized", MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                            "Bearer realm=\"imgclassd\"",
                            "this route needs an access token: Authorization: Bearer <token>");
}

/* Whether the request announces a body: a Content-Length other than 0, or
 * any Transfer-Encoding. Only such a request's early answer lingers. */
static int announces_body(struct MHD_Connection *c) {
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return te || (cl && cl[strspn(cl, "0")] != 0);
}

/* First call (headers only): route, and refuse what can be refused before
 * a body is read. Answering now makes libmicrohttpd close the connection
 * afterwards (it cannot know what the unread body holds), so GETs are
 * answered on the next call instead, keeping the connection alive. */
static enum MHD_Result first_call(struct srv_req *r) {
    if (!r->def) {
        /* A path no route takes with this method: 405, counted under the
         * path's route ("other" for the static files' catch-all). */
        if (r->route == SRV_ROUTE_STATIC) r->route = SRV_ROUTE_OTHER;
        return send_405(r, r->allow);
    }
    if (body_ignored(r)) return r->def->start ? r->def->start(r) : get_start(r);
    return r->def->start ? r->def->start(r) : MHD_YES;
}

/* What the request's framing headers say, over every instance of them. */
struct framing {
    int cl_count, cl_bad, cl_conflict;
    char cl_first[24];
    int te_count, te_other;
};

static int digits_only(const char *v) {
    if (!*v) return 0;
    for (; *v; v++)
        if (*v < '0' || *v > '9') return 0;
    return 1;
}

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value) {
    struct framing *f = cls;
    if (!value) value = "";
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (!digits_only(value) || strlen(value) >= sizeof f->cl_first)
            f->cl_bad = 1;
        else if (f->cl_count == 0)
            snprintf(f->cl_first, sizeof f->cl_first, "%s", value);
        else if (strcmp(f->cl_first, value) != 0)
            f->cl_conflict = 1;
        f->cl_count++;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->te_count++;
        if (strcasecmp(value, "chunked") != 0) f->te_other = 1;
    }
    return MHD_YES;
}

/* RFC 9112 6.1-6.3, checked before any body byte is read, because
 * libmicrohttpd 0.9.75 takes the first of two Content-Lengths, keeps a
 * connection with both Content-Length and Transfer-Encoding alive, and
 * reads a body of unknown transfer coding until the connection closes:
 * each is a way to smuggle a request past a proxy that frames the bytes
 * differently. A length that is not plain digits, two different lengths,
 * or a length together with Transfer-Encoding gets 400; a transfer coding
 * other than a single "chunked" gets 501. Either way the connection is
 * closed after the answer, since where the next request starts is
 * unknown. Returns 1 when it answered. */
static int framing_refused(struct srv_req *r, enum MHD_Result *ret) {
    struct framing f = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, framing_header, &f);
    const char *why = NULL;
    int status = 400;
    if (f.cl_bad)
        why = "Content-Length must be one decimal number";
    else if (f.cl_conflict)
        why = "the request has Content-Length headers that disagree";
    else if (f.cl_count && f.te_count)
        why = "the request has both Content-Length and Transfer-Encoding";
    else if (f.te_count > 1 || f.te_other) {
        why = "the only transfer coding supported is a single \"chunked\"";
        status = 501;
    }
    if (!why) return 0;
    r->close = 1;
    *ret = srv_send_error(
        r, status, status == 501 ? "unsupported_transfer_coding" : "invalid_framing", "%s", why);
    return 1;
}

/* Counts a new request in h->admit unless srv_http_stop_admitting has run;
 * 1 when it was counted (on_completed then uncounts it). */
static int admit(struct srv_http *h) {
    int a = atomic_load(&h->admit);
    while (!(a & 1) && !atomic_compare_exchange_weak(&h->admit, &a, a + 2)) {
    }
    return !(a & 1);
}

/* At most this many query parameters; no API takes more than a few. */
#define MAX_QUERY_PARAMS 64

/* *req_cls for a request whose query had more than MAX_QUERY_PARAMS
 * parameters (see on_uri). */
static char g_query_too_long;

/* Called by libmicrohttpd with the raw request target before it parses the
 * query. libmicrohttpd 0.9.75 stores every query parameter in the
 * connection's 32 KiB memory pool; about 500 of them (a 1.2 KB URL)
 * exhaust it, and then it logs "Not enough memory in pool" and neither
 * answers nor closes until the idle timeout. So a query with too many
 * parameters is cut here (the buffer is libmicrohttpd's own, writable
 * read buffer) and the request marked, to be answered 414 at once. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
    char *q = strchr(uri, '?');
    if (!q) return NULL;
    int params = 1;
    for (const char *p = q + 1; *p; p++)
        params += *p == '&' || *p == ';';
    if (params <= MAX_QUERY_PARAMS) return NULL;
    q[1] = 0;
    return &g_query_too_long;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
    struct srv_http *h = cls;
    struct srv_req *r = *req_cls;
    int query_too_long = r == (void *)&g_query_too_long;
    if (!r || query_too_long) {
        r = req_new(h, conn, url, method);
        if (!r) return MHD_NO;
        *req_cls = r;
        atomic_fetch_add(&h->inflight, 1);
        r->admitted = admit(h);
        const struct srv_route_def *shape = NULL;
        r->def = srv_route_find(method, url, r->param, &shape, r->allow, sizeof r->allow);
        r->error = shape && shape->error ? shape->error : srv_error_imgclassd;
        r->route = shape ? shape->metric : SRV_ROUTE_OTHER;
        r->access = shape ? shape->access : SRV_ACCESS_OPEN;
        r->url = url;
        r->body_declared = announces_body(conn);
        cors_decide(r, method);
        enum MHD_Result ret;
        if (framing_refused(r, &ret)) return ret;
        if (query_too_long) {
            r->close = 1;
            return srv_send_error(r, 414, "uri_too_long", "at most %d query parameters",
                                  MAX_QUERY_PARAMS);
        }
        /* Preflights come before tokens: a browser never sends its
         * Authorization header with one. */
        if (r->cors.kind == SRV_CORS_PREFLIGHT || r->cors.kind == SRV_CORS_PREFLIGHT_DENIED) {
            r->deferred = answer_preflight;
            return get_start(r);
        }
        /* The token, before any body byte is read. A POST route (or a
         * method the path does not take) is answered now; a GET route
         * when its request is complete, keeping the connection alive. */
        if (token_refused(r)) {
            if (!r->def || !body_ignored(r)) return send_401(r);
            r->deferred = send_401;
            return get_start(r);
        }
        return first_call(r);
    }
    r->url = url;
    if (*upload_data_size == 0) { /* the whole request is in */
        track_read_done(r);
        r->complete = 1;
    }
    if (r->status) { /* answered already; ignore whatever else arrives */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (body_ignored(r)) {
        if (*upload_data_size) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            return ignored_body_data(r, n);
        }
        if (r->too_large) return get_body_too_large(r);
        return r->deferred ? r->deferred(r) : r->def->answer(r);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return body_data(r, upload_data, n);
    }
    if (!r->submitted) {
        enum MHD_Result ret = body_complete(r);
        if (!r->submitted) srv_arrival_end(r); /* refused before the decode stage */
        return ret;
    }
    return answer_resumed(r); /* every image is done */
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
    struct srv_http *h = cls;
    struct srv_req *r = *req_cls;
    if (!r) return;
    *req_cls = NULL;
    double dur = (srv_now_ns() - r->t0) * 1e-9;
    /* 499: the client went away before an answer was queued (nginx's code);
     * 408: the reaper cut it for reading too slowly. */
    int status = r->status ? r->status : 499;
    if (r->track) {
        if (atomic_load(&r->track->cut)) {
            if (!r->status) status = 408;
        } else {
            /* Keep-alive: the next request's clock starts now. */
            atomic_store(&r->track->read_start_ns, srv_now_ns());
            atomic_store(&r->track->reading, 1);
        }
    }
    srv_metrics_request(r->route, status, dur);
    if (h->cfg->access_log) {
        struct srv_access a = {
            .remote = r->remote,
            .method = r->method,
            .path = r->path,
            .status = status,
            .bytes = r->bytes,
            .duration_s = dur,
            .batch_size = r->batch_size,
            .images = r->images_ok,
            .request_id = r->id,
        };
        srv_log_access(&a);
    }
    if (r->admitted) atomic_fetch_sub(&h->admit, 2);
    req_free(r);
    atomic_fetch_sub(&h->inflight, 1);
}

/* libmicrohttpd logs a line per refused connection; thousands of hostile
 * connections must not flood the log, so at most 20 lines per second pass
 * and the rest are counted and summarised. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int64_t window;
    static int lines;
    static unsigned long suppressed;
    int64_t sec = srv_now_ns() / 1000000000;
    unsigned long dropped = 0;
    pthread_mutex_lock(&mu);
    if (sec != window) {
        window = sec;
        lines = 0;
    }
    int pass = lines < 20;
    if (pass) {
        lines++;
        dropped = suppressed;
        suppressed = 0;
    } else {
        suppressed++;
    }
    pthread_mutex_unlock(&mu);
    if (!pass) return;
    if (dropped) srv_log("warn", "libmicrohttpd: %lu similar messages suppressed", dropped);
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    srv_log("warn", "libmicrohttpd: %s", msg);
}

/* ------------------------------------------------------------------------ */
/* Connections and the read-deadline reaper                                 */
/* ------------------------------------------------------------------------ */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    struct srv_http *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn_track *t = calloc(1, sizeof *t);
        if (!t) return; /* untracked: only the idle timeout applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        t->fd = ci ? ci->connect_fd : -1;
        atomic_store(&t->read_start_ns, srv_now_ns());
        atomic_store(&t->reading, 1);
        pthread_mutex_lock(&h->conn_mu);
        t->next = h->conns;
        if (h->conns) h->conns->prev = t;
        h->conns = t;
        pthread_mutex_unlock(&h->conn_mu);
        *socket_context = t;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        /* libmicrohttpd closes the socket only after this returns, and the
         * reaper touches fds only under conn_mu, so it never shuts down a
         * descriptor that has been closed and reused. */
        struct conn_track *t = *socket_context;
        if (!t) return;
        /* An answer went out over an unread body: a copy of the socket
         * outlives libmicrohttpd's close and drains in the linger thread
         * (bounded by --linger-bytes, --linger-seconds and its idle
         * timeout), so closing here sends no reset. Not for a connection
         * the reaper cut: that client was too slow to deserve more. */
        if (atomic_load(&t->linger) && !atomic_load(&t->cut) && t->fd >= 0 && h->linger) {
            int fd = fcntl(t->fd, F_DUPFD_CLOEXEC, 0);
            if (fd >= 0) srv_linger_add(h->linger, fd);
        }
        pthread_mutex_lock(&h->conn_mu);
        if (t->prev)
            t->prev->next = t->next;
        else
            h->conns = t->next;
        if (t->next) t->next->prev = t->prev;
        pthread_mutex_unlock(&h->conn_mu);
        free(t);
        *socket_context = NULL;
    }
}

/* Every 250 ms: shut down the socket of each connection whose request has
 * been arriving for longer than --request-read-timeout-s. libmicrohttpd's
 * thread then sees the end of the stream and closes the connection itself
 * (and its request-completed callback logs 408), so no libmicrohttpd
 * state is touched from this thread. The client just sees the connection
 * close, as nginx's client_header_timeout does. */
static void *reaper_main(void *arg) {
    struct srv_http *h = arg;
    int64_t limit = (int64_t)h->cfg->request_read_timeout_s * 1000000000;
    pthread_mutex_lock(&h->conn_mu);
    while (!h->reaper_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 250 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&h->reaper_cv, &h->conn_mu, &ts);
        int64_t now = srv_now_ns();
        for (struct conn_track *t = h->conns; t; t = t->next) {
            if (t->fd < 0 || !atomic_load(&t->reading) || atomic_load(&t->cut)) continue;
            if (now - atomic_load(&t->read_start_ns) <= limit) continue;
            atomic_store(&t->cut, 1);
            shutdown(t->fd, SHUT_RDWR);
            srv_metrics_read_timeout();
        }
    }
    pthread_mutex_unlock(&h->conn_mu);
    return NULL;
}

static int reaper_start(struct srv_http *h) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->reaper_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (h->cfg->request_read_timeout_s <= 0) return 0;
    if (pthread_create(&h->reaper, NULL, reaper_main, h) != 0) return -1;
    h->reaper_started = 1;
    return 0;
}

static void reaper_stop(struct srv_http *h) {
    if (!h->reaper_started) return;
    pthread_mutex_lock(&h->conn_mu);
    h->reaper_stop = 1;
    pthread_cond_signal(&h->reaper_cv);
    pthread_mutex_unlock(&h->conn_mu);
    pthread_join(h->reaper, NULL);
    h->reaper_started = 0;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

/* The listening socket, made here rather than by libmicrohttpd so that a
 * port already taken fails with the kernel's reason. SO_REUSEADDR only, so
 * a restart binds while old connections sit in TIME_WAIT; never
 * SO_REUSEPORT, which would let a second imgclassd on the same port start
 * silently and take half of the connections. */
static int listen_socket(const struct sockaddr *sa, socklen_t salen, char *err, size_t errlen) {
    char host[INET6_ADDRSTRLEN] = "?";
    int port;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    }
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        bind(fd, sa, salen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        snprintf(err, errlen, "cannot listen on %s port %d: %s%s", host, port, strerror(e),
                 e == EADDRINUSE ? " (is another imgclassd running?)" : "");
        return -1;
    }
    return fd;
}

int srv_http_start(const struct srv_config *cfg, struct srv_http **out, char *err, size_t errlen) {
    *out = NULL;
    struct srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->cfg = cfg;
    pthread_mutex_init(&h->conn_mu, NULL);
    /* Tokens, CORS and lingering first: a server that cannot enforce what
     * it was told to must not start at all. */
    char why[512];
    if (srv_cors_new(cfg->cors_origins, cfg->auth_token_file[0] != 0, &h->cors, why, sizeof why) !=
        0) {
        snprintf(err, errlen, "--cors-origins: %s", why);
        pthread_mutex_destroy(&h->conn_mu);
        free(h);
        return -1;
    }
    if ((cfg->auth_token_file[0] &&
         srv_auth_new(cfg->auth_token_file, &h->auth, err, errlen) != 0) ||
        srv_linger_new(cfg->max_connections, cfg->linger_bytes, cfg->linger_seconds, &h->linger,
                       err, errlen) != 0) {
        srv_auth_free(h->auth);
        srv_cors_free(h->cors);
        pthread_mutex_destroy(&h->conn_mu);
        free(h);
        return -1;
    }
    if (reaper_start(h) != 0) {
        snprintf(err, errlen, "cannot start the connection reaper thread");
        pthread_cond_destroy(&h->reaper_cv);
        pthread_mutex_destroy(&h->conn_mu);
        srv_linger_free(h->linger);
        srv_auth_free(h->auth);
        srv_cors_free(h->cors);
        free(h);
        return -1;
    }
    eng_image_limits_default(&h->lim);
    h->lim.max_pixels = cfg->max_pixels;
    h->lim.max_scan_blocks = cfg->max_decode_work;
    h->lim.max_coef_bytes = cfg->max_decode_memory;
    if (srv_decoder_new(cfg->decode_threads, &h->decoder, err, errlen) != 0) {
        srv_http_free(h);
        return -1;
    }
    if (getrandom(&h->id_seed, sizeof h->id_seed, GRND_NONBLOCK) != sizeof h->id_seed)
        h->id_seed = (uint64_t)srv_now_ns() ^ ((uint64_t)getpid() << 32);

    if (cfg->static_dir[0]) {
        if (!realpath(cfg->static_dir, h->static_root)) {
            srv_log("warn", "--static-dir %s: %s; serving no static files", cfg->static_dir,
                    strerror(errno));
            h->static_root[0] = 0;
        }
    }

    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *sa;
    socklen_t salen;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, cfg->bind, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&a4;
        salen = sizeof a4;
    } else if (inet_pton(AF_INET6, cfg->bind, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&a6;
        salen = sizeof a6;
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "--bind: not an IPv4 or IPv6 address: %s", cfg->bind);
        srv_http_free(h);
        return -1;
    }

    int lfd = listen_socket(sa, salen, err, errlen);
    if (lfd < 0) {
        srv_http_free(h);
        return -1;
    }
    struct MHD_OptionItem opts[16];
    int n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, lfd, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)on_unescape, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, h};
    opts[n++] =
        (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->max_connections, NULL};
    opts[n++] =
        (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->conn_timeout_s, NULL};
    if (cfg->max_connections_per_ip > 0)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                            (intptr_t)cfg->max_connections_per_ip, NULL};
    if (cfg->http_threads > 1)
        opts[n++] =
            (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)cfg->http_threads, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    h->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (!h->d) {
        close(lfd);
        snprintf(err, errlen, "cannot start the HTTP daemon on %s port %d", cfg->bind, cfg->port);
        srv_http_free(h);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : cfg->port;
    *out = h;
    return 0;
}

int srv_http_port(const struct srv_http *h) {
    return h->port;
}

int srv_http_reload_tokens(struct srv_http *h, char *err, size_t errlen) {
    if (!h->auth) return 0;
    return srv_auth_reload(h->auth, err, errlen);
}

int srv_http_token_count(struct srv_http *h) {
    return h->auth ? srv_auth_count(h->auth) : 0;
}

int srv_http_add_model(struct srv_http *h, const char *name, const struct eng_model *m,
                       const struct eng_labels *labels, struct srv_batcher *b, char *err,
                       size_t errlen) {
    if (h->nmodels >= SRV_MAX_MODELS) {
        snprintf(err, errlen, "at most %d models", SRV_MAX_MODELS);
        return -1;
    }
    for (int i = 0; i < h->nmodels; i++)
        if (!strcmp(h->models[i].name, name)) {
            snprintf(err, errlen, "two models are named %s", name);
            return -1;
        }
    struct srv_model *md = &h->models[h->nmodels];
    memset(md, 0, sizeof *md);
    snprintf(md->name, sizeof md->name, "%s", name);
    md->model = m;
    md->info = eng_model_get_info(m);
    md->labels = labels;
    md->batcher = b;
    md->in_floats = (size_t)3 * md->info->preproc.crop * md->info->preproc.crop;
    md->api = (struct srv_api_model){
        .name = md->name,
        .version = "1",
        .platform = "imgclassd",
        .arch = md->info->arch,
        .precision = md->info->precision,
        .source = md->info->source,
        .labels = labels,
        .classes = md->info->num_classes,
        .input_size = md->info->preproc.crop,
        .max_batch = h->cfg->max_batch,
        .batch_timeout_us = h->cfg->batch_timeout_us,
        .instances = h->cfg->workers,
        .ready = 1,
    };
    h->nmodels++;
    return 0;
}

void srv_http_set_ready(struct srv_http *h, int engine_threads) {
    h->engine_threads = engine_threads;
    atomic_store_explicit(&h->ready, 1, memory_order_release);
}

const struct srv_model *srv_model_find(const struct srv_http *h, const char *name) {
    if (!h->nmodels) return NULL;
    if (!name || !name[0]) return &h->models[0];
    for (int i = 0; i < h->nmodels; i++)
        if (!strcmp(h->models[i].name, name)) return &h->models[i];
    return NULL;
}

void srv_http_begin_drain(struct srv_http *h) {
    atomic_store(&h->draining, 1);
}

void srv_http_stop_admitting(struct srv_http *h) {
    atomic_fetch_or(&h->admit, 1);
}

int srv_http_wait_idle(struct srv_http *h, int timeout_ms, bool admitted_only) {
    int64_t end = srv_now_ns() + (int64_t)timeout_ms * 1000000;
    int n;
    while ((n = admitted_only ? atomic_load(&h->admit) >> 1 : atomic_load(&h->inflight)) > 0 &&
           srv_now_ns() < end) {
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    return n;
}

void srv_http_free(struct srv_http *h) {
    if (!h) return;
    reaper_stop(h);
    /* Every queued decode runs and resumes its connection first: the
     * daemon must not stop with a connection suspended. */
    srv_decoder_free(h->decoder);
    if (h->d) MHD_stop_daemon(h->d);
    /* Every connection's NOTIFY_CLOSED has run; free any left over. */
    while (h->conns) {
        struct conn_track *t = h->conns;
        h->conns = t->next;
        free(t);
    }
    /* After the daemon: its last closes may still hand sockets over. */
    srv_linger_free(h->linger);
    srv_auth_free(h->auth);
    srv_cors_free(h->cors);
    pthread_cond_destroy(&h->reaper_cv);
    pthread_mutex_destroy(&h->conn_mu);
    free(h);
}

/* ------------------------------------------------------------------------ */
/* --healthcheck                                                            */
/* ------------------------------------------------------------------------ */

int srv_healthcheck(const char *host, int port, int timeout_ms, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        sl = sizeof *a6;
    } else {
        snprintf(err, errlen, "bad address %s", host);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int64_t end = srv_now_ns() + (int64_t)timeout_ms * 1000000;
    int rc = -1;
    char buf[256];
    size_t got = 0;
    static const char req[] = "GET /healthz HTTP/1.0\r\nHost: localhost\r\n"
                              "User-Agent: imgclassd-healthcheck\r\n\r\n";
    size_t sent = 0;
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s:%d: %s", host, port, strerror(errno));
        goto out;
    }
    /* Write the request, then read until the status line is complete. */
    while (got < sizeof buf - 1) {
        int left = (int)((end - srv_now_ns()) / 1000000);
        if (left <= 0) {
            snprintf(err, errlen, "no answer from %s:%d within %d ms", host, port, timeout_ms);
            goto out;
        }
        struct pollfd pf = {.fd = fd, .events = sent < sizeof req - 1 ? POLLOUT : POLLIN};
        if (poll(&pf, 1, left) <= 0) continue;
        if (sent < sizeof req - 1) {
            int soerr = 0;
            socklen_t el = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el);
            if (soerr) {
                snprintf(err, errlen, "connect %s:%d: %s", host, port, strerror(soerr));
                goto out;
            }
            ssize_t w = send(fd, req + sent, sizeof req - 1 - sent, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                snprintf(err, errlen, "send: %s", strerror(errno));
                goto out;
            }
            if (w > 0) sent += (size_t)w;
            continue;
        }
        ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (k <= 0) break;
        got += (size_t)k;
        buf[got] = 0;
        if (strstr(buf, "\r\n")) break;
    }
    buf[got] = 0;
    int code = 0;
    if (sscanf(buf, "HTTP/%*d.%*d %d", &code) == 1 && code == 200) {
        rc = 0;
    } else {
        char *eol = strpbrk(buf, "\r\n");
        if (eol) *eol = 0;
        snprintf(err, errlen, "unhealthy: %s", got ? buf : "no answer");
    }
out:
    close(fd);
    return rc;
}