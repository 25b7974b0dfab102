/* http_impl.h: what the transport (http.c) shares with the route table
 * (routes.c), the inference job path (infer.c) and the API files
 * (api_*.c): the server and request structs, the response helpers and the
 * handler signature. Internal to the server; server.h stays the public one. */
#ifndef HTTP_IMPL_H
#define HTTP_IMPL_H

#include "api.h"
#include "auth.h"
#include "cors.h"
#include "linger.h"
#include "server.h"

#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

struct srv_req;
struct conn_track; /* http.c: one per connection, for the read deadline */

/* ------------------------------------------------------------------------ */
/* Models and the server                                                    */
/* ------------------------------------------------------------------------ */

/* One served model with its own batcher. The pointers are borrowed from
 * main.c (published by srv_http_add_model) and live until srv_http_free. */
struct srv_model {
    char name[64]; /* the {m} of every URL and ?model= */
    const struct eng_model *model;
    const struct eng_model_info *info;
    const struct eng_labels *labels; /* may be NULL: "class_<i>" */
    struct srv_batcher *batcher;
    size_t in_floats;         /* per image: 3 * crop * crop */
    struct srv_api_model api; /* the protocols' view; strings point into the above */
};

#define SRV_MAX_MODELS 16

/* The server's version, as GET /v2 reports it. */
#define SRV_VERSION "1.0.0"

struct srv_http {
    const struct srv_config *cfg;
    struct MHD_Daemon *d;
    int port;
    /* Bit 0: no longer admitting work (srv_http_stop_admitting); the rest
     * counts in steps of 2 the requests admitted before that and not yet
     * completed. One word, so admitting and closing cannot cross. */
    _Atomic int admit;
    _Atomic int ready;    /* backend published; inference served */
    _Atomic int draining; /* /readyz 503, Connection: close */
    _Atomic int inflight; /* requests between first call and completion */

    /* Published by srv_http_set_ready before ready is set (release). */
    struct srv_model models[SRV_MAX_MODELS];
    int nmodels;
    struct srv_decoder *decoder; /* decodes off the HTTP threads */
    int engine_threads;

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

    /* Issue 13, owned here, made by srv_http_start from the config and
     * applied once for every route by the transport: the CORS policy
     * (NULL: --cors-origins unset), the tokens (NULL: no
     * --auth-token-file), and the lingering-close thread. */
    struct srv_cors *cors;
    struct srv_auth *auth;
    struct srv_linger *linger;
};

/* The model called name (NUL-terminated), or NULL; "" or NULL names the
 * first. Only after ready (the models are published then). */
const struct srv_model *srv_model_find(const struct srv_http *h, const char *name);

/* ------------------------------------------------------------------------ */
/* Routes (server/routes.c)                                                 */
/* ------------------------------------------------------------------------ */

/* A handler answers (queues a response, or suspends the connection) and
 * returns libmicrohttpd's verdict. */
typedef enum MHD_Result (*srv_handler)(struct srv_req *r);

/* Answers an error in the route's protocol shape: status, a stable code
 * (imgclassd's "error.code"; protocols without codes ignore it), the
 * message, and an optional extra header (Allow, Retry-After). */
typedef enum MHD_Result (*srv_error_fn)(struct srv_req *r, int status, const char *code,
                                        const char *msg, const char *hname, const char *hval);

/* Which routes need a bearer token once --auth-token-file is set. */
enum srv_route_access {
    SRV_ACCESS_TOKEN = 0, /* inference and model information */
    SRV_ACCESS_OPEN,      /* probes (/healthz, /readyz, v2 health, /ping) and static files */
    SRV_ACCESS_METRICS,   /* /metrics: a token unless --metrics-public on */
};

/* One row of the routing table. GET routes take no body (a small one is
 * read and dropped) and answer when the request is complete; POST routes
 * read a body within the transport's limits. */
struct srv_route_def {
    const char *method; /* "GET" (HEAD too) or "POST" */
    /* "/a/{}/b": each "{}" captures one path segment into r->param[];
     * "{}:verb" a segment ending in ":verb"; "*" matches any path. */
    const char *pattern;
    enum srv_route metric; /* label of imgclassd_requests_total */
    /* Headers in, body not yet read: refuse early or prepare (may be NULL). */
    srv_handler start;
    /* GET: the request is complete. POST: the whole body is in r->body. */
    srv_handler answer;
    /* POST: the inference job resumed the connection (NULL: none). */
    srv_handler resumed;
    srv_error_fn error; /* the protocol's error shape; NULL: imgclassd's */
    /* Who may call it when --auth-token-file is set. Last, and zero means
     * a token is needed, so a route added without thinking about it is
     * protected, not open. */
    enum srv_route_access access;
};

#define SRV_ROUTE_MAX_PARAMS 2

/* The route for method and path, with the captured segments in
 * param[SRV_ROUTE_MAX_PARAMS][128] (NUL-terminated). NULL when the path
 * matches a route but not the method; then allow names the methods the
 * path takes ("POST", "GET, HEAD"), and *def_out the first route whose
 * path matched (for the metric label and the error shape). */
const struct srv_route_def *srv_route_find(const char *method, const char *path,
                                           char param[][128], const struct srv_route_def **def_out,
                                           char *allow, size_t allowlen);

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */
/* ------------------------------------------------------------------------ */

/* One image of a request, from its bytes to its result. */
struct srv_img {
    struct srv_job job;
    struct srv_req *req;
    const unsigned char *src; /* the encoded image, inside srv_req.body (or api-owned) */
    size_t src_len;
    const float *tensor; /* already preprocessed by the client: copied, not decoded */
    char filename[256];  /* multipart only; valid UTF-8 */
    int status;          /* 0 while fine, else the HTTP status of its error */
    const char *code;
    char msg[256];
    double decode_s;
    int64_t decode_blocks; /* block-scans decoded, as last reported to the decode check */
};

struct srv_req {
    struct srv_http *h;
    struct MHD_Connection *conn;
    struct conn_track *track; /* NULL if the connection is untracked (OOM) */
    const struct srv_route_def *def; /* NULL: the method is not allowed (405) */
    srv_error_fn error;              /* the route's error shape */
    char param[SRV_ROUTE_MAX_PARAMS][128];
    char allow[64]; /* the methods the path takes, for a 405 */
    enum srv_route route;
    int admitted; /* counted in srv_http.admit; else inference gets 503 */
    int close;    /* answer with Connection: close (ambiguous framing) */
    enum srv_route_access access; /* of the path's route (its first, for a 405) */
    /* The CORS headers this request's answers carry (cors.h; values
     * borrowed from libmicrohttpd's copy of the request, valid until the
     * request completes). */
    struct srv_cors_decision cors;
    /* Answered when the request is complete instead of the route's
     * handler: a preflight, or a refused token on a GET route (answering
     * those from the headers would cost the keep-alive connection). */
    srv_handler deferred;
    int64_t t0;
    char id[80];
    char method[16];
    char path[256];
    char remote[64];
    const char *url; /* libmicrohttpd's, valid during each handler call */

    /* body */
    unsigned char *body;
    size_t len, cap;
    uint64_t received;
    int too_large;
    int over_budget; /* --max-inflight-bytes reached: answer 503 */
    /* Lingering close. body_declared: the request announced a body
     * (Content-Length > 0 or Transfer-Encoding); complete: the whole of it
     * has been read. A refusal decided mid-body discards the rest (not
     * buffered) from refused_ns / refused_at (bytes received then) until
     * the body ends or --linger-bytes / --linger-seconds run out; then the
     * answer is written straight to the socket (raw_answer), since
     * libmicrohttpd 0.9.75 cannot queue one mid-upload. */
    int body_declared, complete;
    int64_t refused_ns;
    uint64_t refused_at;
    int raw_answer;
    size_t reserved; /* bytes of the budget this request holds */
    uint64_t expect; /* Content-Length, 0 when absent (chunked) */
    int multipart;
    char boundary[SRV_MP_MAX_BOUNDARY + 1];
    int topk;

    /* The inference job (infer.c). The decode stage: the task, the work
     * its images spent so far, why it stopped early (an HTTP status, 0 =
     * it did not), and a refusal to send on resume when nothing could be
     * queued (status 0 = none). */
    const struct srv_model *model;
    struct srv_task task;
    int64_t decode_used;
    int decode_stop;
    int64_t decode_polled_ns; /* last check of the client's socket */
    int refuse_status, refuse_retry;
    const char *refuse_code;
    char refuse_msg[256];

    /* pending and suspended are guarded by mu */
    pthread_mutex_t mu;
    int pending, suspended;
    int submitted;
    int arriving; /* announced to the batcher (srv_batcher_arrival), not yet ended */
    int multi;    /* /classify answers with "results": several file parts */
    int nimg;
    struct srv_img *imgs;
    float *tensors; /* [nimg][3][crop][crop] */
    float *logits;  /* [nimg][classes] */

    /* Protocol state kept from parse to render (api_*.c), freed with the
     * request by api_free. */
    void *api;
    void (*api_free)(void *api);

    /* outcome, for the access log and metrics */
    int status;
    uint64_t bytes;
    int batch_size, images_ok;
};

/* ------------------------------------------------------------------------ */
/* Responses (server/http.c)                                                */
/* ------------------------------------------------------------------------ */

/* Headers every response carries; api: 1 adds Cache-Control: no-store. */
void srv_add_common_headers(struct srv_req *r, struct MHD_Response *resp, int api);

/* Queues resp with status, recording the outcome; destroys resp. */
enum MHD_Result srv_queue(struct srv_req *r, int status, struct MHD_Response *resp,
                          uint64_t bytes);

/* Sends body (malloc'd, ownership taken) with a content type and an
 * optional extra header. */
enum MHD_Result srv_send_owned(struct srv_req *r, int status, const char *ctype, char *body,
                               size_t len, const char *hname, const char *hval);

/* Serializes j (reference stolen) and sends it as JSON. */
enum MHD_Result srv_send_json(struct srv_req *r, int status, json_t *j, const char *hname,
                              const char *hval);

/* An error in the shape of r's route (imgclassd's {"error":{"code",
 * "message"}} when it has none), with an optional extra header. */
enum MHD_Result srv_send_error_h(struct srv_req *r, int status, const char *code,
                                 const char *hname, const char *hval, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

#define srv_send_error(r, status, code, ...)                                                       \
    srv_send_error_h(r, status, code, NULL, NULL, __VA_ARGS__)

/* Sends a body a protocol rendered (ownership of b->data taken), with
 * Inference-Header-Content-Length when it carries binary data and an
 * optional extra header. */
enum MHD_Result srv_send_api_body(struct srv_req *r, struct srv_api_body *b, const char *hname,
                                  const char *hval);

/* srv_send_api_body for a render that returned st: out of memory (the
 * renderers' only failure) is answered 503. */
enum MHD_Result srv_send_rendered(struct srv_req *r, enum srv_api_status st,
                                  struct srv_api_body *b);

/* 503 with Retry-After: retry_s (at least 1). */
enum MHD_Result srv_send_503_retry(struct srv_req *r, const char *code, int retry_s,
                                   const char *msg);

/* imgclassd's own error shape, {"error": {"code": code, "message": msg}}. */
enum MHD_Result srv_error_imgclassd(struct srv_req *r, int status, const char *code,
                                    const char *msg, const char *hname, const char *hval);

/* {"code": code, "message": msg} (new reference). */
json_t *srv_error_object(const char *code, const char *msg);

/* A JSON string from any bytes (never NULL unless out of memory). */
json_t *srv_jstr(const char *s);

/* Seconds to milliseconds, rounded to the microsecond. */
double srv_ms(double s);

/* ------------------------------------------------------------------------ */
/* Admission and bodies (server/http.c), for POST routes' start handlers    */
/* ------------------------------------------------------------------------ */

/* 1 when the server may take inference now (models loaded, the request
 * admitted before shutdown); else it answered (503) into *ret. */
int srv_req_refuse_unready(struct srv_req *r, enum MHD_Result *ret);

/* Takes the Content-Length into r->expect; 1 when it exceeds
 * --max-body-bytes and the 413 was answered into *ret. */
int srv_req_refuse_length(struct srv_req *r, enum MHD_Result *ret);

/* The last check before the body is read: room in the model's queue for
 * images more images (503 queue_full with Retry-After) and in the body
 * budget for a body of known size (503 server_busy); then announces the
 * arrival to the batcher. Needs r->model. */
enum MHD_Result srv_req_admit_body(struct srv_req *r, int images);

/* Gives back what r holds of the --max-inflight-bytes budget. */
void srv_budget_release(struct srv_req *r);

/* Tells the batcher r's images are no longer on their way (queued,
 * refused, or the client left). Idempotent. */
void srv_arrival_end(struct srv_req *r);

/* ------------------------------------------------------------------------ */
/* The inference job (server/infer.c), shared by every protocol             */
/* ------------------------------------------------------------------------ */

/* Allocates n images of r->model with their tensor and logits storage and
 * sets their deadline (from now: the body is complete) and client socket.
 * The caller then points each image at its bytes (src, src_len) or its
 * tensor. Returns 0, or -1 out of memory (the caller answers 503). */
int srv_infer_alloc(struct srv_req *r, int n);

/* Hands r's images to the decode stage and suspends the connection; the
 * route's resumed handler runs once every image is done, with each
 * image's status (0: logits valid) set. Answers 503 shutting_down itself
 * when the decode stage is stopping. */
enum MHD_Result srv_infer_submit(struct srv_req *r);

/* Sets the status, code and message of images the batcher did not
 * classify (deadline, cancelled, failed); called on resume, before the
 * route's resumed handler. */
void srv_infer_finish(struct srv_req *r);

/* The model name (and version, when not NULL) of a protocol's URL; NULL
 * after answering 404 into *ret. */
const struct srv_model *srv_req_model(struct srv_req *r, const char *name, const char *version,
                                      enum MHD_Result *ret);

/* A protocol's inference POST, headers in: ready and admitted, the model
 * (404), Content-Length (413), room in the model's queue and the body
 * budget (503). Sets r->model. */
enum MHD_Result srv_infer_start(struct srv_req *r, const char *name, const char *version);

/* The most images one request may carry: --max-files, at most
 * --queue-limit (a request must fit in the queue). */
int srv_infer_max_images(const struct srv_req *r);

/* Takes req (a parsed protocol request; its contents move into r, which
 * frees them with the request) and submits its images as the job. */
enum MHD_Result srv_infer_submit_api(struct srv_req *r, struct srv_api_request *req);

/* Fills res[0..r->nimg) from the finished images (logits, or status and
 * message) and counts the classified ones and the batch size for the
 * access log. */
void srv_infer_results(struct srv_req *r, struct srv_api_result *res);

/* ------------------------------------------------------------------------ */
/* The APIs' handlers, named by the routing table                           */
/* ------------------------------------------------------------------------ */

/* server/api_imgclassd.c */
enum MHD_Result srv_classify_start(struct srv_req *r);
enum MHD_Result srv_classify_body(struct srv_req *r);
enum MHD_Result srv_classify_resumed(struct srv_req *r);
enum MHD_Result srv_healthz_get(struct srv_req *r);
enum MHD_Result srv_readyz_get(struct srv_req *r);
enum MHD_Result srv_metrics_get(struct srv_req *r);

/* server/api_v2.c */
enum MHD_Result srv_v2_error(struct srv_req *r, int status, const char *code, const char *msg,
                             const char *hname, const char *hval);
enum MHD_Result srv_v2_server_get(struct srv_req *r);
enum MHD_Result srv_v2_live_get(struct srv_req *r);
enum MHD_Result srv_v2_ready_get(struct srv_req *r);
enum MHD_Result srv_v2_model_get(struct srv_req *r);
enum MHD_Result srv_v2_model_ready_get(struct srv_req *r);
enum MHD_Result srv_v2_config_get(struct srv_req *r);
enum MHD_Result srv_v2_infer_start(struct srv_req *r);
enum MHD_Result srv_v2_infer_body(struct srv_req *r);
enum MHD_Result srv_v2_infer_resumed(struct srv_req *r);

/* server/api_torchserve.c */
enum MHD_Result srv_torchserve_error(struct srv_req *r, int status, const char *code,
                                     const char *msg, const char *hname, const char *hval);
enum MHD_Result srv_torchserve_ping_get(struct srv_req *r);
enum MHD_Result srv_torchserve_models_get(struct srv_req *r);
enum MHD_Result srv_torchserve_predict_start(struct srv_req *r);
enum MHD_Result srv_torchserve_predict_body(struct srv_req *r);
enum MHD_Result srv_torchserve_predict_resumed(struct srv_req *r);

/* server/api_kserve_v1.c (errors in v2's shape, {"error": msg}) */
enum MHD_Result srv_kserve_v1_models_get(struct srv_req *r);
enum MHD_Result srv_kserve_v1_model_get(struct srv_req *r);
enum MHD_Result srv_kserve_v1_predict_start(struct srv_req *r);
enum MHD_Result srv_kserve_v1_predict_body(struct srv_req *r);
enum MHD_Result srv_kserve_v1_predict_resumed(struct srv_req *r);

/* The details of a model /v1/models/{m} adds to KServe's name and ready:
 * today's /v1/models entry (new reference; NULL on OOM). api_imgclassd.c */
json_t *srv_model_details(const struct srv_http *h, const struct srv_model *md);

/* server/api_static.c */
enum MHD_Result srv_static_get(struct srv_req *r);

#endif
