/* server.h: internal interfaces of the imgclassd HTTP service (srv_ prefix):
 * configuration, logging, metrics, multipart parsing, batching and HTTP.
 * Nothing here is public API; only the server sources and tests include it. */
#ifndef SERVER_H
#define SERVER_H

#include "engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Time                                                                     */
/* ------------------------------------------------------------------------ */

/* Monotonic nanoseconds; only differences mean anything. */
static inline int64_t srv_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Configuration (server/config.c)                                          */
/* ------------------------------------------------------------------------ */

enum srv_log_format {
    SRV_LOG_TEXT = 0,
    SRV_LOG_JSON = 1,
};

#define SRV_MAX_MODEL_FLAGS 8 /* --model flags (srv_config.models) */

/* Every setting of the server. Each field is a flag `--name` and an
 * environment variable IMGCLASSD_<NAME>; the table in config.c is the one
 * place that lists them (names, defaults, ranges, help). Strings are
 * stored inline, so a config is a plain value with nothing to free. */
struct srv_config {
    char bind[64];                  /* --bind: IPv4 or IPv6 literal to listen on */
    int port;                       /* --port: 0 picks a free port */
    char model[1024];               /* --model: the first model's [NAME=]SPEC[@PRECISION] */
    char models[SRV_MAX_MODEL_FLAGS][1024]; /* every --model, in order (srv_model_spec_parse) */
    int nmodels;                    /* >= 1 after srv_config_parse */
    enum eng_precision precision;   /* --precision: models without @PRECISION */
    char labels[1024];              /* --labels: "" = built-in ImageNet-1k names */
    int http_threads;               /* --http-threads: MHD thread pool (decode parallelism) */
    int workers;                    /* --workers: inference threads, one eng_ctx each */
    int engine_threads;             /* --engine-threads: the engine's compute pool */
    enum eng_kernel kernel;         /* --kernel auto|avx512|openblas */
    int decode;                     /* --decode: enum eng_decode, or -1 = the model's */
    int max_batch;                  /* --max-batch */
    int batch_timeout_us;           /* --batch-timeout-us */
    int queue_limit;                /* --queue-limit: images waiting for a worker */
    int64_t max_body_bytes;         /* --max-body-bytes */
    int64_t max_pixels;             /* --max-pixels: width * height from the JPEG header */
    int decode_threads;             /* --decode-threads: threads that decode images */
    int64_t max_decode_work;        /* --max-decode-work: block-scans per image */
    int64_t max_request_decode_work; /* --max-request-decode-work: block-scans per request */
    int64_t max_decode_memory;      /* --max-decode-memory: coefficient bytes per image */
    int max_files;                  /* --max-files: file parts per multipart request */
    int request_timeout_ms;         /* --request-timeout-ms: arrival to leaving the queue */
    int drain_seconds;              /* --drain-seconds */
    char static_dir[1024];          /* --static-dir */
    enum srv_log_format log_format; /* --log-format text|json */
    int access_log;                 /* --access-log: 0 disables the per-request line */
    int conn_timeout_s;             /* --conn-timeout-s: idle connection timeout */
    int request_read_timeout_s;     /* --request-read-timeout-s: headers + body, total */
    int64_t max_inflight_bytes;     /* --max-inflight-bytes: all bodies being received */
    int max_connections;            /* --max-connections */
    int max_connections_per_ip;     /* --max-connections-per-ip: 0 = no limit */
    char cors_origins[4096];        /* --cors-origins: "" none, "*", or origins (cors.h) */
    char auth_token_file[1024];     /* --auth-token-file: "" = no tokens required (auth.h) */
    int metrics_public;             /* --metrics-public: /metrics open despite tokens */
    int64_t linger_bytes;           /* --linger-bytes: discarded after a mid-upload refusal */
    int linger_seconds;             /* --linger-seconds: how long that discarding may last */
    int healthcheck;                /* --healthcheck: probe /healthz and exit */
    int help;                       /* --help */
};

/* Characters of a model name (the {m} of the protocols' URLs). */
#define SRV_MODEL_NAME_CHARS                                                                       \
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

/* One --model value: "[NAME=]SPEC[@PRECISION]", e.g. "r50q=models/r50.safetensors@int8".
 * name is "" when not given (the server names the model after its
 * architecture); precision is def without "@fp32" or "@int8". */
struct srv_model_spec {
    char name[64];
    char spec[1024];
    enum eng_precision precision;
};

/* Splits arg into out; returns 0, or -1 with a message (empty spec, bad
 * precision, name too long). Pure function. */
int srv_model_spec_parse(const char *arg, enum eng_precision def, struct srv_model_spec *out,
                         char *err, size_t errlen);

/* Fills the defaults. Sizes that follow the CPU count (http_threads,
 * decode_threads, workers, engine_threads) are left 0 here and resolved by srv_config_parse. */
void srv_config_default(struct srv_config *c);

/* Applies IMGCLASSD_<NAME> environment variables, then argv[1..argc) (so
 * flags win; a repeated flag: the last wins), then resolves the sizes left
 * at 0 from srv_cpu_count(). Returns 0, or -1 with a one-line message
 * naming the flag (and variable) in err (may be NULL). Never exits. */
int srv_config_parse(struct srv_config *c, int argc, char **argv, char *err, size_t errlen);

/* Prints --help: every flag with its variable, default and meaning. */
void srv_config_usage(FILE *f);

/* "auto", "avx512" or "openblas" (a static string). */
const char *srv_kernel_name(enum eng_kernel k);

/* CPUs this process may use: the sched_getaffinity count, capped by the
 * cgroup CPU quota rounded up (v2 cpu.max; v1 cpu.cfs_quota_us /
 * cpu.cfs_period_us; the smallest along the process's cgroup path), at
 * least 1. In server/cpus.c. Reads /proc/self/cgroup and /sys/fs/cgroup on
 * every call, so call it at start-up, not per request. Thread-safe. */
int srv_cpu_count(void);

/* srv_cpu_count with the cgroup tree at cgroup_root and the process's
 * cgroup membership read from self_cgroup, a file in /proc/self/cgroup
 * format (NULL: the root only). For tests. */
int srv_cpu_count_at(const char *cgroup_root, const char *self_cgroup);

/* ------------------------------------------------------------------------ */
/* Logging (server/log.c)                                                   */
/* ------------------------------------------------------------------------ */

/* Sets the format of every later line; call once before starting threads. */
void srv_log_init(enum srv_log_format fmt);

/* A server event ("listening", "draining", errors) on stderr, one line,
 * written with a single write(2) so lines from threads never interleave.
 * level: "info", "warn", "error". Thread-safe. */
void srv_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One finished HTTP request. Strings are borrowed for the call. */
struct srv_access {
    const char *remote; /* client address */
    const char *method;
    const char *path;
    int status;
    uint64_t bytes;    /* response body bytes */
    double duration_s; /* first byte of the request handled to completion */
    int batch_size;    /* largest batch the request's images ran in; 0 none */
    int images;        /* images classified */
    const char *request_id;
};

/* Writes the access-log line (text or JSON) on stderr. Thread-safe. */
void srv_log_access(const struct srv_access *a);

/* ------------------------------------------------------------------------ */
/* Metrics (server/metrics.c)                                               */
/* ------------------------------------------------------------------------ */

/* The routes requests are counted under (label route= of
 * imgclassd_requests_total). */
enum srv_route {
    SRV_ROUTE_CLASSIFY = 0,
    SRV_ROUTE_HEALTHZ,
    SRV_ROUTE_READYZ,
    SRV_ROUTE_METRICS,
    SRV_ROUTE_MODELS,
    SRV_ROUTE_STATIC,
    SRV_ROUTE_OTHER,
    SRV_ROUTE_V2,            /* Open Inference Protocol v2: server, health, metadata */
    SRV_ROUTE_V2_INFER,      /* POST /v2/models/{m}[/versions/{v}]/infer */
    SRV_ROUTE_TORCHSERVE,    /* GET /ping, GET /models */
    SRV_ROUTE_PREDICTIONS,   /* POST /predictions/{m}[/{v}] */
    SRV_ROUTE_V1_PREDICT,    /* POST /v1/models/{m}:predict */
    SRV_ROUTE_COUNT
};

/* Stable label value of a route ("/classify", ..., "static", "other"). */
const char *srv_route_name(enum srv_route r);

/* The registry is process-wide (like every Prometheus client library's
 * default registry); all functions below are thread-safe and lock-free or
 * take a short per-histogram lock. srv_metrics_reset zeroes everything
 * (start of main, and tests). */
void srv_metrics_reset(void);

void srv_metrics_request(enum srv_route route, int code, double duration_s);
void srv_metrics_queue_wait(double seconds);
void srv_metrics_decode(double seconds);
void srv_metrics_batch(int size, double inference_s);
void srv_metrics_images(int n);         /* images classified successfully */
void srv_metrics_rejected(int n);       /* images refused with 503 queue full */
void srv_metrics_expired(int n);        /* images whose deadline passed (504) */
void srv_metrics_cancelled(int n);      /* images dropped: client went away */
void srv_metrics_read_timeout(void);    /* a connection cut by --request-read-timeout-s */
void srv_metrics_budget_rejected(void); /* a request refused by --max-inflight-bytes */

/* Values that are read at scrape time rather than counted. */
struct srv_metrics_gauges {
    int queue_depth;
    int inflight_requests;
    int64_t inflight_body_bytes; /* reserved for bodies being received */
    int ready;                   /* 1 when /readyz answers 200 */
    int draining;
    int nmodels; /* 0 before the models are loaded */
    struct {
        const char *name, *arch, *precision, *weights; /* borrowed for the call */
        int classes, queue_depth;
    } models[16];
    int workers, max_batch;
    int http_threads, engine_threads, cpus; /* the thread sizing, as /v1/models shows it */
};

/* Renders the exposition (text format 0.0.4). Returns a malloc'd,
 * NUL-terminated string the caller frees, *len its length; NULL on OOM. */
char *srv_metrics_render(const struct srv_metrics_gauges *g, size_t *len);

/* ------------------------------------------------------------------------ */
/* Multipart/form-data (server/multipart.c)                                 */
/* ------------------------------------------------------------------------ */

enum srv_mp_status {
    SRV_MP_OK = 0,
    SRV_MP_ERR_BOUNDARY = -1,     /* no or bad boundary parameter */
    SRV_MP_ERR_SYNTAX = -2,       /* no opening delimiter, bad header line, ... */
    SRV_MP_ERR_UNTERMINATED = -3, /* a part or the body ends without delimiter */
    SRV_MP_ERR_HEADER_SIZE = -4,  /* a part's headers exceed SRV_MP_MAX_HEADER */
    SRV_MP_ERR_TOO_MANY = -5,     /* more parts than the caller allows */
};

#define SRV_MP_MAX_HEADER 8192 /* bytes of headers per part */
#define SRV_MP_MAX_BOUNDARY 70 /* RFC 2046 */

/* One part. data points into the parsed body (borrowed). Strings are
 * copied, NUL-terminated and truncated to their buffers. */
struct srv_mp_part {
    const unsigned char *data;
    size_t len;
    char name[64];          /* Content-Disposition name= */
    char filename[256];     /* Content-Disposition filename=, when present */
    char content_type[128]; /* the part's Content-Type, "" when absent */
    int has_filename;
};

/* Extracts the boundary parameter of a multipart Content-Type header value
 * into out (NUL-terminated; out needs SRV_MP_MAX_BOUNDARY + 1 bytes).
 * Returns SRV_MP_OK or SRV_MP_ERR_BOUNDARY. Pure function. */
enum srv_mp_status srv_multipart_boundary(const char *content_type, char *out, size_t outlen);

/* Splits body (RFC 7578 / RFC 2046) into at most max_parts parts. Never
 * reads outside body[0..len), allocates nothing, runs in linear time.
 * Returns SRV_MP_OK with *nparts set, or an error with a message in err
 * (may be NULL). Pure function: safe to fuzz. */
enum srv_mp_status srv_multipart_parse(const unsigned char *body, size_t len, const char *boundary,
                                       struct srv_mp_part *parts, int max_parts, int *nparts,
                                       char *err, size_t errlen);

/* The same, keeping only file parts (srv_multipart_is_file), at most
 * max_files of them (SRV_MP_ERR_TOO_MANY beyond): plain form fields are
 * checked and skipped, however many there are. *nfiles may be 0. */
enum srv_mp_status srv_multipart_parse_files(const unsigned char *body, size_t len,
                                             const char *boundary, struct srv_mp_part *parts,
                                             int max_files, int *nfiles, char *err,
                                             size_t errlen);

/* 1 when a part carries a file (has a filename, or a non-text Content-Type);
 * other parts are plain form fields. */
int srv_multipart_is_file(const struct srv_mp_part *p);

/* ------------------------------------------------------------------------ */
/* Batcher (server/batcher.c)                                               */
/* ------------------------------------------------------------------------ */

enum srv_job_status {
    SRV_JOB_PENDING = 0,
    SRV_JOB_OK,        /* logits are valid */
    SRV_JOB_EXPIRED,   /* deadline passed while queued (504) */
    SRV_JOB_CANCELLED, /* the client disconnected while queued */
    SRV_JOB_FAILED,    /* the forward pass failed (500) */
};

/* One image on its way through the queue. The submitter owns the struct
 * and fills the inputs; the batcher fills the outputs, then calls done()
 * exactly once from one of its threads, after which it never touches the
 * job again. */
struct srv_job {
    /* inputs */
    float *input;        /* [3][size][size], owned by the submitter */
    int64_t deadline_ns; /* srv_now_ns() clock; 0 = none */
    int client_fd;       /* polled for hang-up while queued; -1 = none */
    void (*done)(struct srv_job *job);
    void *user;
    /* outputs, valid in done() */
    enum srv_job_status status;
    float *logits;  /* [num_classes], owned by the submitter */
    double queue_s; /* enqueue to start of the forward pass */
    double infer_s; /* the forward pass of its batch */
    int batch_size;
    /* private to the batcher */
    int64_t enq_ns;
    struct srv_job *prev, *next;
};

struct srv_batcher_opts {
    int workers;          /* >= 1 */
    int max_batch;        /* >= 1 */
    int batch_timeout_us; /* >= 0 */
    int queue_limit;      /* >= 1 */
};

struct srv_batcher;

/* Creates the contexts (one per worker, each sized for max_batch), starts
 * the threads, runs one warm-up forward pass on every context and returns
 * once all are warm. The model is borrowed and must outlive the batcher. */
enum eng_status srv_batcher_new(const struct eng_model *m, const struct srv_batcher_opts *o,
                                struct srv_batcher **out, char *err, size_t errlen);

enum srv_submit_status {
    SRV_SUBMIT_OK = 0,
    SRV_SUBMIT_FULL = -1,    /* queue cannot take them all: 503 */
    SRV_SUBMIT_STOPPED = -2, /* the batcher is shutting down: 503 */
};

/* Enqueues n jobs atomically (all or none). On SRV_SUBMIT_FULL,
 * *retry_after_s (when not NULL) is the estimated wait before the queue
 * has room, in whole seconds >= 1. Never blocks on inference and never
 * calls done() itself. Thread-safe. */
enum srv_submit_status srv_batcher_submit(struct srv_batcher *b, struct srv_job **jobs, int n,
                                          int *retry_after_s);

/* Cheap pre-check before reading a body: SRV_SUBMIT_OK when n more images
 * would fit now (after dropping queued jobs whose clients hung up),
 * SRV_SUBMIT_FULL with *retry_after_s set as for srv_batcher_submit, or
 * SRV_SUBMIT_STOPPED. Reserves nothing. Thread-safe. */
enum srv_submit_status srv_batcher_has_room(struct srv_batcher *b, int n, int *retry_after_s);

/* delta +1: a request with images is on its way (its body is being read
 * or decoded); -1: it was submitted (call after the submit), refused or
 * abandoned. While any is on its way a lone queued image waits (up to the
 * batch timeout) for it to join its batch; when none is, queued images run
 * at once. Every +1 is matched by exactly one -1. Thread-safe. */
void srv_batcher_arrival(struct srv_batcher *b, int delta);

/* Images waiting in the queue now. Thread-safe. */
int srv_batcher_depth(struct srv_batcher *b);

/* Stops accepting, runs every job already queued, joins the threads. */
void srv_batcher_stop(struct srv_batcher *b);

/* Stops (if needed) and frees the contexts. NULL ok. */
void srv_batcher_free(struct srv_batcher *b);

/* ------------------------------------------------------------------------ */
/* Decode stage (server/decoder.c)                                          */
/* ------------------------------------------------------------------------ */

/* A unit of work for the decode threads, embedded in its owner (a
 * request); run() owns the task from the moment it starts. */
struct srv_task {
    void (*run)(struct srv_task *t);
    struct srv_task *next; /* private to the decoder */
};

struct srv_decoder;

/* Starts threads decode threads. Returns 0 and *out (free with
 * srv_decoder_free), or -1 with a message. */
int srv_decoder_new(int threads, struct srv_decoder **out, char *err, size_t errlen);

/* Queues t (FIFO). Returns 0, or -1 once srv_decoder_free has begun: then
 * t was not taken. Thread-safe. */
int srv_decoder_submit(struct srv_decoder *d, struct srv_task *t);

/* Tasks waiting for a decode thread. Thread-safe. */
int srv_decoder_depth(struct srv_decoder *d);

/* Refuses new tasks, runs every task already queued, joins the threads
 * and frees. NULL ok. */
void srv_decoder_free(struct srv_decoder *d);

/* ------------------------------------------------------------------------ */
/* HTTP (server/http.c)                                                     */
/* ------------------------------------------------------------------------ */

struct srv_http;

/* Binds and starts the libmicrohttpd daemon; /healthz answers at once and
 * /readyz says "starting" until srv_http_set_ready. cfg is borrowed and
 * must outlive the server. */
int srv_http_start(const struct srv_config *cfg, struct srv_http **out, char *err, size_t errlen);

/* The bound port (useful with --port 0) and address as text. */
int srv_http_port(const struct srv_http *h);

/* Re-reads --auth-token-file (SIGHUP). Requests in flight are not
 * disturbed: a check in progress finishes against the old set, every
 * later one sees the new. Returns the number of tokens now in force, 0
 * when no token file is configured, or -1 with a message in err (naming
 * the file, never a token) and the old tokens kept. Thread-safe. */
int srv_http_reload_tokens(struct srv_http *h, char *err, size_t errlen);

/* Tokens in force now; 0 without --auth-token-file. Thread-safe. */
int srv_http_token_count(struct srv_http *h);

/* Publishes one loaded model under name (copied, at most 63 bytes; the
 * {m} of the protocols' URLs and /classify?model=), with its labels (may be
 * NULL) and its own batcher; all borrowed until srv_http_free. The first
 * added is the default. Call before srv_http_set_ready, from one thread.
 * Returns 0, or -1 with a message (a name taken, too many models). */
int srv_http_add_model(struct srv_http *h, const char *name, const struct eng_model *m,
                       const struct eng_labels *labels, struct srv_batcher *b, char *err,
                       size_t errlen);

/* Turns /readyz to 200: the models added are served from now on.
 * engine_threads (the compute pool's size) is reported by /v1/models. */
void srv_http_set_ready(struct srv_http *h, int engine_threads);

/* /readyz answers 503 "draining" from now on and every response says
 * Connection: close; requests are still served. */
void srv_http_begin_drain(struct srv_http *h);

/* Stops admitting work: from now on a new POST /classify is answered 503
 * "shutting_down" at once (other routes are still served). The listening
 * socket stays open until srv_http_free, so a late client gets that clear
 * answer rather than a refused connection; only one that connects while
 * the daemon stops is reset. (Closing the socket earlier would need
 * MHD_quiesce_daemon, which races the pool threads over their epoll sets
 * and can abort the process: libmicrohttpd 0.9.75, seen once in CI; poll()
 * instead of epoll would drop clients that half-close.) Idempotent. */
void srv_http_stop_admitting(struct srv_http *h);

/* Waits up to timeout_ms until no request is in progress: with
 * admitted_only, none admitted before srv_http_stop_admitting (the work to
 * finish); else none at all (so late requests get their 503 before the
 * daemon stops). Returns the number still in progress (0 = idle). */
int srv_http_wait_idle(struct srv_http *h, int timeout_ms, bool admitted_only);

/* Stops the daemon (every connection closed) and frees the server. The
 * batcher must have been stopped first. NULL ok. */
void srv_http_free(struct srv_http *h);

/* Request parsing helpers, pure and fuzzable. */

/* topk from the query: v[0..n) must be decimal digits only with a value in
 * 1..classes (no sign, spaces, exponent). Returns 0 and *out, or -1. */
int srv_parse_topk(const char *v, size_t n, int classes, int *out);

/* Decodes %XX escapes in s in place (libmicrohttpd's unescape, used for
 * the path and the query) except %00, which stays as the three
 * characters: a NUL would cut the string short, so "/a/%00/b" would be
 * served as "/a/". Returns the new length. */
size_t srv_url_unescape(char *s);

/* 1 when a client's X-Request-Id may be echoed: 1..64 characters of
 * [A-Za-z0-9._:/+=-]. */
int srv_request_id_ok(const char *s);

/* Copies s[0..n) into out (outlen bytes, NUL-terminated, truncated on a
 * character boundary) as valid UTF-8 without control characters: invalid
 * sequences, overlongs, surrogates and controls become '?'. */
void srv_utf8_sanitize(char *out, size_t outlen, const char *s, size_t n);

/* Probes GET /healthz on host:port with a plain socket; 0 when it answers
 * 200 within timeout_ms, else -1 with a message in err. */
int srv_healthcheck(const char *host, int port, int timeout_ms, char *err, size_t errlen);

#endif
