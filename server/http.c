/* http.c: the libmicrohttpd side of imgclassd: routing, framing checks,
 * request bodies (raw or multipart), handing images to the decode stage
 * and the batcher, JSON responses, health, metrics, model info and static
 * files.
 *
 * Threading model: a pool of --http-threads libmicrohttpd threads (epoll),
 * with suspend/resume. An HTTP thread reads the body, splits it into
 * images, hands the request to the decode stage (decoder.c) and suspends
 * the connection; it then returns to serve other connections, so it never
 * decodes and never waits for inference, and /healthz is answered at once
 * whatever uploads cost. A decode thread decodes and preprocesses the
 * images and submits them to the batcher; the batcher's thread that
 * completes the last image of a request resumes the connection (or the
 * decode thread does, when nothing was queued), and libmicrohttpd calls
 * the handler again on an HTTP thread to write the response.
 * Thread-per-connection was the alternative: simpler, but every idle or
 * slow connection would cost a thread, bad under the hostile load of
 * issue 7.
 *
 * A request's state lives in *req_cls from the first handler call and is
 * freed only in the request-completed callback. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
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
};

struct srv_http {
    const struct srv_config *cfg;
    struct MHD_Daemon *d;
    int port;
    /* Bit 0: no longer admitting work (srv_http_stop_admitting); the rest
     * counts in steps of 2 the requests admitted before that and not yet
     * completed. One word, so admitting and closing cannot cross. */
    _Atomic int admit;
    _Atomic int ready;    /* backend published; /classify served */
    _Atomic int draining; /* /readyz 503, Connection: close */
    _Atomic int inflight; /* requests between first call and completion */

    /* Published by srv_http_set_ready before ready is set (release). */
    const struct eng_model *model;
    const struct eng_model_info *info;
    const struct eng_labels *labels;
    struct srv_batcher *batcher;
    struct srv_decoder *decoder; /* decodes off the HTTP threads */
    int engine_threads;
    size_t in_floats; /* per image: 3 * crop * crop */

    struct eng_image_limits lim;
    char static_root[PATH_MAX]; /* realpath of --static-dir; "" = none */

    uint64_t id_seed;
    _Atomic uint64_t id_counter;

    /* --max-inflight-bytes: bytes reserved by every body being received. */
    _Atomic int64_t body_bytes;

    /* --request-read-timeout-s: the connections and their reaper. */
    pthread_mutex_t conn_mu;
    pthread_cond_t reaper_cv;
    struct conn_track *conns;
    pthread_t reaper;
    int reaper_started, reaper_stop; /* guarded by conn_mu */
};

struct srv_req;

/* One image of a request, from its bytes to its result. */
struct img {
    struct srv_job job;
    struct srv_req *req;
    const unsigned char *src; /* the encoded image, inside srv_req.body */
    size_t src_len;
    char filename[256]; /* multipart only; valid UTF-8 */
    int status;         /* 0 while fine, else the HTTP status of its error */
    const char *code;
    char msg[256];
    double decode_s;
    int64_t decode_blocks; /* block-scans decoded, as last reported to decode_check */
};

struct srv_req {
    struct srv_http *h;
    struct MHD_Connection *conn;
    struct conn_track *track; /* NULL if the connection is untracked (OOM) */
    enum srv_route route;
    int admitted; /* counted in srv_http.admit; else a classification gets 503 */
    int close;    /* answer with Connection: close (ambiguous framing) */
    int64_t t0;
    char id[80];
    char method[16];
    char path[256];
    char remote[64];

    /* body */
    unsigned char *body;
    size_t len, cap;
    uint64_t received;
    int too_large;
    int over_budget; /* --max-inflight-bytes reached: answer 503 */
    size_t reserved; /* bytes of the budget this request holds */
    uint64_t expect; /* Content-Length, 0 when absent (chunked) */
    int multipart;
    char boundary[SRV_MP_MAX_BOUNDARY + 1];
    int topk;

    /* The decode stage: the task, the work its images spent so far, why it
     * stopped early (an HTTP status, 0 = it did not), and a refusal to send
     * on resume when nothing could be queued (status 0 = none). */
    struct srv_task task;
    int64_t decode_used;
    int decode_stop;
    int64_t decode_polled_ns; /* last check of the client's socket */
    int refuse_status, refuse_retry;
    const char *refuse_code;
    char refuse_msg[256];

    /* classification; pending and suspended are guarded by mu */
    pthread_mutex_t mu;
    int pending, suspended;
    int submitted;
    int arriving; /* announced to the batcher (srv_batcher_arrival), not yet ended */
    int multi; /* answer with "results": several file parts */
    int nimg;
    struct img *imgs;
    float *tensors; /* [nimg][3][crop][crop] */
    float *logits;  /* [nimg][classes] */

    /* outcome, for the access log and metrics */
    int status;
    uint64_t bytes;
    int batch_size, images_ok;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static double ms(double s) {
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
static json_t *jstr(const char *s) {
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
static void budget_release(struct srv_req *r) {
    if (r->reserved) atomic_fetch_sub(&r->h->body_bytes, (int64_t)r->reserved);
    r->reserved = 0;
}

/* Tells the batcher this request's images are no longer on their way
 * (queued, refused, or the client left). Idempotent. */
static void arrival_end(struct srv_req *r) {
    if (!r->arriving) return;
    r->arriving = 0;
    srv_batcher_arrival(r->h->batcher, -1);
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
static void add_common_headers(struct srv_req *r, struct MHD_Response *resp, int api) {
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy", SRV_CSP);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    if (api) MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->close || atomic_load(&r->h->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
}

/* Queues resp with status, recording the outcome; destroys resp. */
static enum MHD_Result queue(struct srv_req *r, int status, struct MHD_Response *resp,
                             uint64_t bytes) {
    if (!resp) return MHD_NO;
    track_read_done(r);
    r->status = status;
    r->bytes = bytes;
    enum MHD_Result q = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return q;
}

/* Sends body (malloc'd, ownership taken) with a content type. */
static enum MHD_Result send_owned(struct srv_req *r, int status, const char *ctype, char *body,
                                  size_t len, const char *hname, const char *hval) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_common_headers(r, resp, 1);
    if (hname) MHD_add_response_header(resp, hname, hval);
    return queue(r, status, resp, len);
}

/* Serializes j (reference stolen) and sends it as JSON; hname/hval is an
 * optional extra header. */
static enum MHD_Result send_json(struct srv_req *r, int status, json_t *j, const char *hname,
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
    return send_owned(r, status, "application/json", t, n + 1, hname, hval);
}

static json_t *error_object(const char *code, const char *msg) {
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", jstr(msg));
    return e;
}

/* {"error": {"code": code, "message": msg}} with status. */
static enum MHD_Result send_error_h(struct srv_req *r, int status, const char *code,
                                    const char *hname, const char *hval, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_error_h(struct srv_req *r, int status, const char *code,
                                    const char *hname, const char *hval, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_object();
    json_object_set_new(o, "error", error_object(code, msg));
    return send_json(r, status, o, hname, hval);
}

#define send_error(r, status, code, ...) send_error_h(r, status, code, NULL, NULL, __VA_ARGS__)

static enum MHD_Result send_405(struct srv_req *r, const char *allow) {
    return send_error_h(r, 405, "method_not_allowed", MHD_HTTP_HEADER_ALLOW, allow,
                        "method %s is not allowed on %s; allowed: %s", r->method, r->path, allow);
}

static enum MHD_Result send_503_retry(struct srv_req *r, const char *code, int retry_s,
                                      const char *msg) {
    char ra[16];
    snprintf(ra, sizeof ra, "%d", retry_s < 1 ? 1 : retry_s);
    return send_error_h(r, 503, code, MHD_HTTP_HEADER_RETRY_AFTER, ra, "%s", msg);
}

/* ------------------------------------------------------------------------ */
/* Health, readiness, metrics, model info                                   */
/* ------------------------------------------------------------------------ */

static enum MHD_Result handle_healthz(struct srv_req *r) {
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string("ok"));
    return send_json(r, 200, o, NULL, NULL);
}

static enum MHD_Result handle_readyz(struct srv_req *r) {
    struct srv_http *h = r->h;
    const char *st = atomic_load(&h->draining) ? "draining"
                     : atomic_load(&h->ready)  ? "ready"
                                               : "starting";
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(st));
    return send_json(r, strcmp(st, "ready") ? 503 : 200, o, NULL, NULL);
}

static enum MHD_Result handle_metrics(struct srv_req *r) {
    struct srv_http *h = r->h;
    struct srv_metrics_gauges g = {0};
    int ready = atomic_load_explicit(&h->ready, memory_order_acquire);
    g.inflight_requests = atomic_load(&h->inflight);
    g.inflight_body_bytes = atomic_load(&h->body_bytes);
    g.draining = atomic_load(&h->draining);
    g.ready = ready && !g.draining;
    if (ready) {
        g.queue_depth = srv_batcher_depth(h->batcher);
        g.arch = h->info->arch;
        g.classes = h->info->num_classes;
        g.weights = h->info->source;
        g.workers = h->cfg->workers;
        g.max_batch = h->cfg->max_batch;
        g.http_threads = h->cfg->http_threads;
        g.engine_threads = h->engine_threads;
        g.cpus = srv_cpu_count();
    }
    size_t len;
    char *text = srv_metrics_render(&g, &len);
    if (!text) return send_error(r, 500, "internal", "out of memory");
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    add_common_headers(r, resp, 1);
    return queue(r, 200, resp, len);
}

/* The three values as configured: a float such as 0.485f widened to double
 * prints as 0.485000014, so each goes through its shortest decimal form
 * (%.7g holds every float) first. */
static json_t *float3(const float *v) {
    json_t *a = json_array();
    for (int i = 0; i < 3; i++) {
        char t[32];
        snprintf(t, sizeof t, "%.7g", (double)v[i]);
        json_array_append_new(a, json_real(strtod(t, NULL)));
    }
    return a;
}

static enum MHD_Result handle_models(struct srv_req *r) {
    struct srv_http *h = r->h;
    if (!atomic_load_explicit(&h->ready, memory_order_acquire))
        return send_503_retry(r, "not_ready", 1, "the model is still loading");
    const struct eng_model_info *in = h->info;
    const struct srv_config *c = h->cfg;
    json_t *m = json_object();
    json_object_set_new(m, "name", jstr(in->arch));
    json_object_set_new(m, "architecture", jstr(in->arch));
    json_object_set_new(m, "depth", json_integer(in->depth));
    json_object_set_new(m, "block", json_string(in->bottleneck ? "bottleneck" : "basic"));
    json_object_set_new(m, "parameters", json_integer(in->num_params));
    json_object_set_new(m, "classes", json_integer(in->num_classes));
    json_object_set_new(m, "labels", jstr(c->labels[0] ? "file" : "builtin-imagenet-1k"));
    json_t *size = json_array();
    json_array_append_new(size, json_integer(3));
    json_array_append_new(size, json_integer(in->preproc.crop));
    json_array_append_new(size, json_integer(in->preproc.crop));
    json_object_set_new(m, "input_size", size);
    json_object_set_new(m, "gflop", json_real(in->gflop));
    json_object_set_new(m, "kernel", jstr(in->kernel));
    json_object_set_new(m, "dtype", jstr(in->dtype));
    /* The weights source is the operator's own --model value; it is not
     * an internal detail leaked by an error. */
    json_object_set_new(m, "weights", jstr(in->source));
    json_object_set_new(m, "random", json_boolean(in->random));
    if (in->random) json_object_set_new(m, "seed", json_integer((json_int_t)in->seed));
    json_t *pp = json_object();
    json_object_set_new(pp, "resize", json_integer(in->preproc.resize));
    json_object_set_new(pp, "crop", json_integer(in->preproc.crop));
    json_object_set_new(
        pp, "interpolation",
        json_string(in->preproc.interp == ENG_INTERP_BICUBIC ? "bicubic" : "bilinear"));
    json_object_set_new(pp, "mean", float3(in->preproc.mean));
    json_object_set_new(pp, "std", float3(in->preproc.std));
    json_object_set_new(m, "preprocessing", pp);
    json_t *b = json_object();
    json_object_set_new(b, "max_batch", json_integer(c->max_batch));
    json_object_set_new(b, "batch_timeout_us", json_integer(c->batch_timeout_us));
    json_object_set_new(b, "queue_limit", json_integer(c->queue_limit));
    json_object_set_new(b, "request_timeout_ms", json_integer(c->request_timeout_ms));
    json_object_set_new(m, "batching", b);
    json_t *t = json_object();
    json_object_set_new(t, "http", json_integer(c->http_threads));
    json_object_set_new(t, "decode", json_integer(c->decode_threads));
    json_object_set_new(t, "workers", json_integer(c->workers));
    json_object_set_new(t, "engine", json_integer(h->engine_threads));
    json_object_set_new(t, "cpus", json_integer(srv_cpu_count()));
    json_object_set_new(m, "threads", t);
    json_t *limits = json_object();
    json_object_set_new(limits, "max_body_bytes", json_integer(c->max_body_bytes));
    json_object_set_new(limits, "max_pixels", json_integer(c->max_pixels));
    json_object_set_new(limits, "max_files", json_integer(c->max_files));
    json_object_set_new(limits, "max_inflight_bytes", json_integer(c->max_inflight_bytes));
    json_object_set_new(limits, "request_read_timeout_s", json_integer(c->request_read_timeout_s));
    json_object_set_new(limits, "conn_timeout_s", json_integer(c->conn_timeout_s));
    json_object_set_new(m, "limits", limits);
    json_t *arr = json_array();
    json_array_append_new(arr, m);
    json_t *o = json_object();
    json_object_set_new(o, "models", arr);
    return send_json(r, 200, o, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* Static files                                                             */
/* ------------------------------------------------------------------------ */

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
    add_common_headers(r, b, 0);
    return queue(r, 200, b, sizeof builtin_index - 1);
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
static enum MHD_Result handle_static(struct srv_req *r, const char *url) {
    struct srv_http *h = r->h;
    char rel[PATH_MAX];
    size_t ul = strlen(url);
    if (url[0] != '/' || ul >= sizeof rel - 16)
        return send_error(r, 404, "not_found", "no such path");
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
            return send_error(r, 403, "forbidden", "path escapes the static directory");
        if (n > 0 && s[0] == '.') return send_error(r, 404, "not_found", "no such path");
        s += n;
    }
    if (strchr(rel, '\\')) return send_error(r, 404, "not_found", "no such path");

    if (!h->static_root[0]) {
        if (!strcmp(rel, "/index.html")) return send_builtin_index(r);
        return send_error(r, 404, "not_found", "no such path");
    }
    char full[PATH_MAX * 2], real[PATH_MAX];
    snprintf(full, sizeof full, "%s%s", h->static_root, rel);
    if (!realpath(full, real)) {
        if (is_index && !strcmp(rel, "/index.html")) return send_builtin_index(r);
        return send_error(r, 404, "not_found", "no such path");
    }
    size_t rl = strlen(h->static_root);
    if (strncmp(real, h->static_root, rl) != 0 || real[rl] != '/')
        return send_error(r, 403, "forbidden", "path escapes the static directory");
    /* O_NONBLOCK: opening a FIFO (or a device) would block this HTTP
     * thread until a writer appears; the type check below refuses it. */
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return send_error(r, 404, "not_found", "no such path");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return send_error(r, 404, "not_found", "no such path");
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
    add_common_headers(r, resp, 0);
    return queue(r, fresh ? 304 : 200, resp, fresh ? 0 : (uint64_t)st.st_size);
}

/* ------------------------------------------------------------------------ */
/* /classify: decoding, submitting, answering                               */
/* ------------------------------------------------------------------------ */

static void img_fail(struct img *im, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void img_fail(struct img *im, int status, const char *code, const char *fmt, ...) {
    im->status = status;
    im->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(im->msg, sizeof im->msg, fmt, ap);
    va_end(ap);
}

/* The decoder's check, called between rows and scans of each image: stops
 * the decode when the request's decode work would pass
 * --max-request-decode-work, its deadline has passed, or its client has
 * gone (a reset or an error on the socket; a FIN alone may be a client
 * that half-closed and still waits for the answer, so it does not stop a
 * decode whose work is bounded anyway). Runs on a decode thread while the
 * connection is suspended, so r is this thread's alone. */
static int decode_check(void *arg, int64_t blocks) {
    struct img *im = arg;
    struct srv_req *r = im->req;
    const struct srv_config *c = r->h->cfg;
    im->decode_blocks = blocks;
    if (r->decode_used + blocks > c->max_request_decode_work) {
        r->decode_stop = 413;
        return 1;
    }
    int64_t now = srv_now_ns();
    if (now >= im->job.deadline_ns) {
        r->decode_stop = 504;
        return 1;
    }
    if (im->job.client_fd >= 0 && now - r->decode_polled_ns > 2000000) {
        r->decode_polled_ns = now;
        struct pollfd pf = {.fd = im->job.client_fd, .events = POLLIN};
        if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLERR | POLLHUP | POLLNVAL))) {
            r->decode_stop = 499;
            return 1;
        }
    }
    return 0;
}

/* The failure of an image stopped (or not started) because its request
 * was stopped: by the request's decode budget, deadline or client. */
static void img_stopped(struct srv_req *r, struct img *im) {
    const struct srv_config *c = r->h->cfg;
    if (r->decode_stop == 413)
        img_fail(im, 413, "decode_limit",
                 "decoding the request's images needs more than %lld block-scans of work "
                 "(--max-request-decode-work)",
                 (long long)c->max_request_decode_work);
    else if (r->decode_stop == 504)
        img_fail(im, 504, "deadline_exceeded",
                 "the deadline passed while decoding (--request-timeout-ms is %d)",
                 c->request_timeout_ms);
    else
        img_fail(im, 503, "cancelled", "the client disconnected");
}

/* Header check, decode and preprocess into out, on a decode thread. The
 * header is checked first so an image over --max-pixels is refused before
 * a single pixel is decoded; the decoder's own limits and decode_check
 * bound the rest. */
static void decode_image(struct srv_req *r, struct img *im, float *out) {
    struct srv_http *h = r->h;
    const unsigned char *data = im->src;
    size_t len = im->src_len;
    if (len == 0) {
        img_fail(im, 400, "empty_body", "the image is empty");
        return;
    }
    if (r->decode_stop) {
        img_stopped(r, im);
        return;
    }
    char msg[256] = "";
    struct eng_image_info info;
    struct eng_image_limits lim = h->lim;
    lim.check = decode_check;
    lim.check_arg = im;
    int64_t t0 = srv_now_ns();
    enum eng_status st = eng_image_probe(data, len, &lim, &info, msg, sizeof msg);
    if (st == ENG_OK)
        st = eng_image_preprocess(data, len, &h->info->preproc, &lim, out, msg, sizeof msg);
    r->decode_used += im->decode_blocks;
    im->decode_s = (srv_now_ns() - t0) * 1e-9;
    if (st == ENG_OK) {
        srv_metrics_decode(im->decode_s);
        return;
    }
    const char *fmt = eng_image_sniff(data, len);
    switch (st) {
    case ENG_ERR_NOT_JPEG:
        if (fmt)
            img_fail(im, 415, "unsupported_media_type",
                     "the image is %s, not JPEG; only JPEG is supported", fmt);
        else
            img_fail(im, 415, "unsupported_media_type",
                     "the body is not a JPEG image (unknown format)");
        break;
    case ENG_ERR_TOO_LARGE:
        img_fail(im, 413, "image_too_large", "%s (--max-pixels is %lld)", msg,
                 (long long)h->cfg->max_pixels);
        break;
    case ENG_ERR_DECODE_LIMIT:
        img_fail(im, 413, "decode_limit", "%s (%s)", msg,
                 strstr(msg, "memory") ? "--max-decode-memory" : "--max-decode-work");
        break;
    case ENG_ERR_CANCELLED:
        img_stopped(r, im);
        break;
    case ENG_ERR_IMAGE:
        img_fail(im, 400, "invalid_image", "%s", msg[0] ? msg : "corrupt or truncated JPEG");
        break;
    case ENG_ERR_UNSUPPORTED:
        img_fail(im, 415, "unsupported_image", "%s", msg[0] ? msg : "unsupported JPEG variant");
        break;
    case ENG_ERR_NOMEM:
        img_fail(im, 503, "out_of_memory", "out of memory decoding the image");
        break;
    default:
        img_fail(im, 500, "internal", "image pipeline failed: %s", eng_status_name(st));
        break;
    }
}

/* Runs in a batcher thread: the last image of a request resumes it. */
static void job_done(struct srv_job *job) {
    struct img *im = job->user;
    struct srv_req *r = im->req;
    pthread_mutex_lock(&r->mu);
    int resume = --r->pending == 0 && r->suspended;
    if (resume) r->suspended = 0;
    pthread_mutex_unlock(&r->mu);
    /* The connection stays suspended, so r and conn stay valid, until the
     * resume below has been handled. */
    if (resume) MHD_resume_connection(r->conn);
}

/* The JSON of one image's outcome: predictions and timing, or an error. */
static json_t *img_result(struct srv_req *r, struct img *im, int *status_out) {
    struct srv_http *h = r->h;
    json_t *o = json_object();
    int status = im->status;
    if (!status) {
        switch (im->job.status) {
        case SRV_JOB_OK:
            break;
        case SRV_JOB_EXPIRED:
            img_fail(im, 504, "deadline_exceeded",
                     "waited %.0f ms in the queue; --request-timeout-ms is %d",
                     im->job.queue_s * 1e3, h->cfg->request_timeout_ms);
            break;
        case SRV_JOB_CANCELLED:
            img_fail(im, 503, "cancelled", "the client disconnected");
            break;
        default:
            img_fail(im, 500, "internal", "inference failed");
            break;
        }
        status = im->status;
    }
    if (status) {
        json_object_set_new(o, "error", error_object(im->code, im->msg));
        *status_out = status;
        return o;
    }
    int classes = h->info->num_classes;
    struct eng_pred *preds = malloc((size_t)r->topk * sizeof *preds);
    if (!preds) {
        json_decref(o);
        *status_out = 503;
        return NULL;
    }
    int k = eng_topk(im->job.logits, classes, r->topk, preds);
    json_t *arr = json_array();
    for (int i = 0; i < k; i++) {
        json_t *p = json_object();
        const char *label = h->labels ? eng_labels_get(h->labels, preds[i].index) : NULL;
        char fallback[32];
        if (!label) {
            snprintf(fallback, sizeof fallback, "class_%d", preds[i].index);
            label = fallback;
        }
        json_object_set_new(p, "index", json_integer(preds[i].index));
        json_object_set_new(p, "label", jstr(label));
        json_object_set_new(p, "score", json_real(preds[i].score));
        json_array_append_new(arr, p);
    }
    free(preds);
    json_object_set_new(o, "predictions", arr);
    json_t *t = json_object();
    json_object_set_new(t, "queue_ms", json_real(ms(im->job.queue_s)));
    json_object_set_new(t, "decode_ms", json_real(ms(im->decode_s)));
    json_object_set_new(t, "infer_ms", json_real(ms(im->job.infer_s)));
    json_object_set_new(t, "batch_size", json_integer(im->job.batch_size));
    json_object_set_new(o, "timing", t);
    r->images_ok++;
    *status_out = 200;
    return o;
}

/* Builds and queues the answer once every image is done (or failed). */
static enum MHD_Result answer_classify(struct srv_req *r) {
    struct srv_http *h = r->h;
    double decode = 0, queue_max = 0, infer_max = 0;
    for (int i = 0; i < r->nimg; i++) {
        struct img *im = &r->imgs[i];
        decode += im->decode_s;
        if (!im->status && im->job.status != SRV_JOB_PENDING) {
            if (im->job.queue_s > queue_max) queue_max = im->job.queue_s;
            if (im->job.infer_s > infer_max) infer_max = im->job.infer_s;
            if (im->job.batch_size > r->batch_size) r->batch_size = im->job.batch_size;
        }
    }
    char timing[160];
    snprintf(timing, sizeof timing,
             "decode;dur=%.3f, queue;dur=%.3f, infer;dur=%.3f, total;dur=%.3f", decode * 1e3,
             queue_max * 1e3, infer_max * 1e3, (srv_now_ns() - r->t0) * 1e-6);

    json_t *o = json_object();
    json_object_set_new(o, "model", jstr(h->info->arch));
    if (!r->multi) {
        int status;
        json_t *res = img_result(r, &r->imgs[0], &status);
        if (!res) {
            json_decref(o);
            return send_error(r, 503, "out_of_memory", "out of memory");
        }
        if (status != 200) {
            json_t *e = json_object();
            json_object_set(e, "error", json_object_get(res, "error"));
            json_decref(res);
            json_decref(o);
            return send_json(r, status, e, "Server-Timing", timing);
        }
        json_object_update(o, res);
        json_decref(res);
        return send_json(r, 200, o, "Server-Timing", timing);
    }
    json_t *arr = json_array();
    for (int i = 0; i < r->nimg; i++) {
        int status;
        json_t *res = img_result(r, &r->imgs[i], &status);
        json_t *item = json_object();
        json_object_set_new(item, "filename", jstr(r->imgs[i].filename));
        if (res)
            json_object_update(item, res);
        else
            json_object_set_new(item, "error", error_object("out_of_memory", "out of memory"));
        json_decref(res);
        json_array_append_new(arr, item);
    }
    json_object_set_new(o, "results", arr);
    return send_json(r, 200, o, "Server-Timing", timing);
}

/* Allocates n images with their tensor and logits storage. */
static int alloc_images(struct srv_req *r, int n) {
    struct srv_http *h = r->h;
    r->imgs = calloc((size_t)n, sizeof *r->imgs);
    r->tensors = malloc((size_t)n * h->in_floats * sizeof(float));
    r->logits = malloc((size_t)n * h->info->num_classes * sizeof(float));
    if (!r->imgs || !r->tensors || !r->logits) return -1;
    r->nimg = n;
    int fd = -1;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) fd = ci->connect_fd;
    /* The deadline counts from the complete body: reading is bounded by
     * --request-read-timeout-s, so a slow but honest upload is not
     * charged twice. */
    int64_t deadline = srv_now_ns() + (int64_t)h->cfg->request_timeout_ms * 1000000;
    for (int i = 0; i < n; i++) {
        struct img *im = &r->imgs[i];
        im->req = r;
        im->job.input = r->tensors + (size_t)i * h->in_floats;
        im->job.logits = r->logits + (size_t)i * h->info->num_classes;
        im->job.deadline_ns = deadline;
        im->job.client_fd = fd;
        im->job.done = job_done;
        im->job.user = im;
    }
    return 0;
}

static void decode_task(struct srv_task *t);

/* The body is complete: split it into images and hand the request to the
 * decode stage, suspending the connection until it or the batcher resumes
 * it (then on_request calls answer_resumed). */
static enum MHD_Result classify_body(struct srv_req *r) {
    struct srv_http *h = r->h;
    const struct srv_config *c = h->cfg;
    if (r->too_large)
        return send_error(r, 413, "body_too_large",
                          "the request body exceeds --max-body-bytes (%lld bytes)",
                          (long long)c->max_body_bytes);
    if (r->over_budget)
        return send_503_retry(r, "server_busy", 1,
                              "too many request bodies are being received at once "
                              "(--max-inflight-bytes); retry later");
    if (r->len == 0) return send_error(r, 400, "empty_body", "the request body is empty");

    /* Split into images. */
    int max_files = c->max_files < c->queue_limit ? c->max_files : c->queue_limit;
    if (!r->multipart) {
        if (alloc_images(r, 1) != 0) return send_error(r, 503, "out_of_memory", "out of memory");
        r->imgs[0].src = r->body;
        r->imgs[0].src_len = r->len;
    } else {
        /* Plain form fields are skipped, however many; the limit on file
         * parts is the smaller of --max-files and --queue-limit (a request
         * must fit in the queue), and the message names the one hit. */
        const char *limit = c->queue_limit < c->max_files ? "--queue-limit" : "--max-files";
        struct srv_mp_part *parts = malloc((size_t)max_files * sizeof *parts);
        if (!parts) return send_error(r, 503, "out_of_memory", "out of memory");
        int nfiles = 0;
        char err[256];
        enum srv_mp_status st = srv_multipart_parse_files(r->body, r->len, r->boundary, parts,
                                                          max_files, &nfiles, err, sizeof err);
        if (st != SRV_MP_OK) {
            free(parts);
            if (st == SRV_MP_ERR_TOO_MANY)
                return send_error(r, 413, "too_many_files",
                                  "more than %d file parts; at most %d per request (%s)",
                                  max_files, max_files, limit);
            return send_error(r, 400, "invalid_multipart", "malformed multipart body: %s", err);
        }
        if (nfiles == 0) {
            free(parts);
            return send_error(r, 400, "invalid_multipart", "the multipart body has no file part");
        }
        if (alloc_images(r, nfiles) != 0) {
            free(parts);
            return send_error(r, 503, "out_of_memory", "out of memory");
        }
        r->multi = nfiles > 1;
        for (int i = 0; i < nfiles; i++) {
            struct img *im = &r->imgs[i];
            const char *fn = parts[i].has_filename ? parts[i].filename : parts[i].name;
            srv_utf8_sanitize(im->filename, sizeof im->filename, fn, strlen(fn));
            im->src = parts[i].data;
            im->src_len = parts[i].len;
        }
        free(parts);
    }
    r->submitted = 1;
    r->task.run = decode_task;
    pthread_mutex_lock(&r->mu);
    if (srv_decoder_submit(h->decoder, &r->task) != 0) {
        pthread_mutex_unlock(&r->mu);
        r->submitted = 0;
        return send_503_retry(r, "shutting_down", 1, "the server is shutting down");
    }
    /* Suspended before the task can end: it takes r->mu to resume. */
    MHD_suspend_connection(r->conn);
    r->suspended = 1;
    pthread_mutex_unlock(&r->mu);
    return MHD_YES;
}

/* Queues the decoded images. Returns 1 when at least one was queued (the
 * last one's job_done resumes the connection), else 0, with r->refuse_*
 * set when the batcher refused them. */
static int submit_images(struct srv_req *r) {
    struct srv_http *h = r->h;
    const struct srv_config *c = h->cfg;
    int64_t now = srv_now_ns();
    struct srv_job *jobs[r->nimg];
    int n = 0;
    for (int i = 0; i < r->nimg; i++) {
        struct img *im = &r->imgs[i];
        if (im->status) continue;
        if (now >= im->job.deadline_ns) {
            img_fail(im, 504, "deadline_exceeded",
                     "the deadline passed before queueing (--request-timeout-ms is %d)",
                     c->request_timeout_ms);
            srv_metrics_expired(1);
            continue;
        }
        jobs[n++] = &im->job;
    }
    if (n == 0) return 0;

    int retry = 1;
    pthread_mutex_lock(&r->mu);
    r->pending = n;
    enum srv_submit_status st = srv_batcher_submit(h->batcher, jobs, n, &retry);
    arrival_end(r); /* after the submit, so a lone image queued before waits for these */
    if (st == SRV_SUBMIT_OK) {
        /* The connection is suspended and job_done takes r->mu too, so
         * the resume always comes after this unlock. */
        pthread_mutex_unlock(&r->mu);
        return 1;
    }
    r->pending = 0;
    pthread_mutex_unlock(&r->mu);
    r->refuse_status = 503;
    r->refuse_retry = st == SRV_SUBMIT_FULL ? retry : 1;
    r->refuse_code = st == SRV_SUBMIT_FULL ? "queue_full" : "shutting_down";
    snprintf(r->refuse_msg, sizeof r->refuse_msg, "%s",
             st == SRV_SUBMIT_FULL ? "the queue is full; retry later"
                                   : "the server is shutting down");
    return 0;
}

/* The decode stage's task, on a decode thread while the connection is
 * suspended: decode every image, free the body, queue what decoded, and
 * resume the connection unless the batcher will. */
static void decode_task(struct srv_task *t) {
    struct srv_req *r = (struct srv_req *)((char *)t - offsetof(struct srv_req, task));
    for (int i = 0; i < r->nimg; i++)
        decode_image(r, &r->imgs[i], r->imgs[i].job.input);
    /* The bytes are no longer needed; free them before waiting. */
    free(r->body);
    r->body = NULL;
    r->cap = 0;
    budget_release(r);
    if (submit_images(r)) return;
    arrival_end(r);
    pthread_mutex_lock(&r->mu);
    r->suspended = 0;
    pthread_mutex_unlock(&r->mu);
    MHD_resume_connection(r->conn);
}

/* The connection was resumed: answer with the refusal or the results. */
static enum MHD_Result answer_resumed(struct srv_req *r) {
    if (r->refuse_status)
        return send_503_retry(r, r->refuse_code, r->refuse_retry, r->refuse_msg);
    if (!r->multi && r->imgs[0].status) {
        struct img *im = &r->imgs[0];
        return send_error(r, im->status, im->code, "%s", im->msg);
    }
    return answer_classify(r);
}

int srv_parse_topk(const char *v, size_t n, int classes, int *out) {
    if (!v || n == 0 || n > 9) return -1;
    long k = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        k = k * 10 + (v[i] - '0');
    }
    if (k < 1 || k > classes) return -1;
    *out = (int)k;
    return 0;
}

/* First call of a POST /classify: everything that can be refused before
 * the body is read is refused here. */
static enum MHD_Result classify_start(struct srv_req *r) {
    struct srv_http *h = r->h;
    const struct srv_config *c = h->cfg;
    if (!atomic_load_explicit(&h->ready, memory_order_acquire))
        return send_503_retry(r, "not_ready", 1, "the model is still loading");
    if (!r->admitted) return send_503_retry(r, "shutting_down", 1, "the server is shutting down");

    const char *v = NULL;
    size_t vlen = 0;
    r->topk = h->info->num_classes < 5 ? h->info->num_classes : 5;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "topk", 4, &v, &vlen) ==
        MHD_YES) {
        if (srv_parse_topk(v, vlen, h->info->num_classes, &r->topk) != 0)
            return send_error(r, 400, "invalid_topk", "topk must be an integer from 1 to %d",
                              h->info->num_classes);
    }

    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && (n > (unsigned long long)c->max_body_bytes))
            return send_error(r, 413, "body_too_large",
                              "the request body (%llu bytes) exceeds --max-body-bytes (%lld)", n,
                              (long long)c->max_body_bytes);
        if (errno == 0 && end != cl) r->expect = n;
    }

    const char *ct =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct && !strncasecmp(ct, "multipart/", 10)) {
        if (strncasecmp(ct, "multipart/form-data", 19) != 0)
            return send_error(r, 415, "unsupported_media_type",
                              "multipart bodies must be multipart/form-data");
        if (srv_multipart_boundary(ct, r->boundary, sizeof r->boundary) != SRV_MP_OK)
            return send_error(r, 400, "invalid_multipart",
                              "multipart/form-data without a valid boundary parameter");
        r->multipart = 1;
    }
    /* Any other content type is taken as the raw image; the bytes, not the
     * header, decide whether it is a JPEG (415 names what it is). */

    int retry = 1;
    switch (srv_batcher_has_room(h->batcher, 1, &retry)) {
    case SRV_SUBMIT_OK:
        /* A body of known size that does not fit in what is left of the
         * memory budget now is refused before it is read. Nothing is
         * reserved yet: a body takes its share as its bytes arrive, so
         * connections that send headers announcing large bodies and then
         * nothing (budget squatting) hold no budget at all. */
        if (r->expect &&
            atomic_load(&h->body_bytes) + (int64_t)r->expect > c->max_inflight_bytes) {
            srv_metrics_budget_rejected();
            return send_503_retry(r, "server_busy", 1,
                                  "too many request bodies are being received at once "
                                  "(--max-inflight-bytes); retry later");
        }
        srv_batcher_arrival(h->batcher, 1);
        r->arriving = 1;
        return MHD_YES;
    case SRV_SUBMIT_FULL:
        srv_metrics_rejected(1);
        return send_503_retry(r, "queue_full", retry, "the queue is full; retry later");
    default:
        return send_503_retry(r, "shutting_down", 1, "the server is shutting down");
    }
}

/* A body that will be refused once drained (413 too large, 503 over the
 * budget): its bytes and budget share go now, and it is no longer on its
 * way to the batcher. */
static void drop_body(struct srv_req *r) {
    arrival_end(r);
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    budget_release(r);
}

/* Appends an upload chunk. Past --max-body-bytes the bytes are counted and
 * dropped (libmicrohttpd cannot answer in the middle of an upload); a
 * client that goes on sending far beyond the limit is disconnected. */
static enum MHD_Result classify_data(struct srv_req *r, const char *data, size_t n) {
    const struct srv_config *c = r->h->cfg;
    r->received += n;
    if (r->too_large || r->over_budget) {
        uint64_t slack = (uint64_t)c->max_body_bytes + (1u << 20);
        return r->received > (uint64_t)c->max_body_bytes + slack ? MHD_NO : MHD_YES;
    }
    if (r->received > (uint64_t)c->max_body_bytes) {
        r->too_large = 1;
        drop_body(r);
        return MHD_YES;
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
                drop_body(r);
                return MHD_YES;
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
    arrival_end(r); /* the client left mid-upload */
    budget_release(r);
    free(r->body);
    free(r->imgs);
    free(r->tensors);
    free(r->logits);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int is_get(const char *m) {
    return !strcmp(m, MHD_HTTP_METHOD_GET) || !strcmp(m, MHD_HTTP_METHOD_HEAD);
}

static enum srv_route route_of(const char *url) {
    if (!strcmp(url, "/classify")) return SRV_ROUTE_CLASSIFY;
    if (!strcmp(url, "/healthz")) return SRV_ROUTE_HEALTHZ;
    if (!strcmp(url, "/readyz")) return SRV_ROUTE_READYZ;
    if (!strcmp(url, "/metrics")) return SRV_ROUTE_METRICS;
    if (!strcmp(url, "/v1/models")) return SRV_ROUTE_MODELS;
    return SRV_ROUTE_STATIC;
}

/* A GET or HEAD may carry a body (it means nothing here and is dropped),
 * but no more than this; past it the answer is 413, decided from a
 * Content-Length at once or after the bytes were discarded. */
#define GET_BODY_MAX 65536

static enum MHD_Result get_body_too_large(struct srv_req *r) {
    r->close = 1;
    return send_error(r, 413, "body_too_large", "a %s request may carry at most %d bytes of body",
                      r->method, GET_BODY_MAX);
}

/* A GET route: 413 at once when the Content-Length is too large (the body
 * is not read), else answered once the request is complete. */
static enum MHD_Result get_start(struct srv_req *r) {
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > GET_BODY_MAX) return get_body_too_large(r);
    return MHD_YES;
}

/* First call (headers only): route, and refuse what can be refused before
 * a body is read. Answering now makes libmicrohttpd close the connection
 * afterwards (it cannot know what the unread body holds), so GETs are
 * answered on the next call instead, keeping the connection alive. */
static enum MHD_Result first_call(struct srv_req *r, const char *method) {
    switch (r->route) {
    case SRV_ROUTE_CLASSIFY:
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) return send_405(r, "POST");
        return classify_start(r);
    case SRV_ROUTE_HEALTHZ:
    case SRV_ROUTE_READYZ:
    case SRV_ROUTE_METRICS:
    case SRV_ROUTE_MODELS:
        return is_get(method) ? get_start(r) : send_405(r, "GET, HEAD");
    default:
        if (is_get(method)) return get_start(r);
        r->route = SRV_ROUTE_OTHER;
        return send_405(r, "GET, HEAD");
    }
}

/* The request (and its body, if any) is complete: answer a GET route. */
static enum MHD_Result answer_get(struct srv_req *r, const char *url) {
    switch (r->route) {
    case SRV_ROUTE_HEALTHZ:
        return handle_healthz(r);
    case SRV_ROUTE_READYZ:
        return handle_readyz(r);
    case SRV_ROUTE_METRICS:
        return handle_metrics(r);
    case SRV_ROUTE_MODELS:
        return handle_models(r);
    default: {
        enum MHD_Result q = handle_static(r, url);
        if (r->status == 404) r->route = SRV_ROUTE_OTHER;
        return q;
    }
    }
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
    *ret = send_error(r, status, status == 501 ? "unsupported_transfer_coding" : "invalid_framing",
                      "%s", why);
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
        r->route = route_of(url);
        enum MHD_Result ret;
        if (framing_refused(r, &ret)) return ret;
        if (query_too_long) {
            r->close = 1;
            return send_error(r, 414, "uri_too_long", "at most %d query parameters",
                              MAX_QUERY_PARAMS);
        }
        return first_call(r, method);
    }
    if (*upload_data_size == 0) track_read_done(r); /* the whole request is in */
    if (r->status) { /* answered already; ignore whatever else arrives */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->route != SRV_ROUTE_CLASSIFY) {
        if (*upload_data_size) { /* a GET with a body: drop it, but not forever */
            r->received += *upload_data_size;
            *upload_data_size = 0;
            if (r->received > GET_BODY_MAX) r->too_large = 1;
            return r->received > GET_BODY_MAX + (1u << 20) ? MHD_NO : MHD_YES;
        }
        if (r->too_large) return get_body_too_large(r);
        return answer_get(r, url);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return classify_data(r, upload_data, n);
    }
    if (!r->submitted) {
        enum MHD_Result ret = classify_body(r);
        if (!r->submitted) arrival_end(r); /* refused before the decode stage */
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
    if (reaper_start(h) != 0) {
        snprintf(err, errlen, "cannot start the connection reaper thread");
        pthread_cond_destroy(&h->reaper_cv);
        pthread_mutex_destroy(&h->conn_mu);
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

void srv_http_set_ready(struct srv_http *h, const struct eng_model *m,
                        const struct eng_labels *labels, struct srv_batcher *b,
                        int engine_threads) {
    h->model = m;
    h->info = eng_model_get_info(m);
    h->labels = labels;
    h->batcher = b;
    h->engine_threads = engine_threads;
    h->in_floats = (size_t)3 * h->info->preproc.crop * h->info->preproc.crop;
    atomic_store_explicit(&h->ready, 1, memory_order_release);
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
