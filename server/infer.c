/* infer.c: the inference job every protocol shares: a request's images go
 * to the decode stage (decoder.c), then to their model's batcher, and the
 * batcher's thread that finishes the last one resumes the connection. A
 * protocol only parses its request into images (srv_infer_alloc) and
 * renders the results in its resumed handler.
 *
 * While the connection is suspended the request belongs to the decode
 * thread, then to the batcher; libmicrohttpd calls the route again only
 * after the resume. */
#include "http_impl.h"

#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void img_fail(struct srv_img *im, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void img_fail(struct srv_img *im, int status, const char *code, const char *fmt, ...) {
    im->status = status;
    im->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(im->msg, sizeof im->msg, fmt, ap);
    va_end(ap);
}

/* Runs in a batcher thread: the last image of a request resumes it. */
static void job_done(struct srv_job *job) {
    struct srv_img *im = job->user;
    struct srv_req *r = im->req;
    pthread_mutex_lock(&r->mu);
    int resume = --r->pending == 0 && r->suspended;
    if (resume) r->suspended = 0;
    pthread_mutex_unlock(&r->mu);
    /* The connection stays suspended, so r and conn stay valid, until the
     * resume below has been handled. */
    if (resume) MHD_resume_connection(r->conn);
}

int srv_infer_alloc(struct srv_req *r, int n) {
    const struct srv_model *m = r->model;
    r->imgs = calloc((size_t)n, sizeof *r->imgs);
    r->tensors = malloc((size_t)n * m->in_floats * sizeof(float));
    r->logits = malloc((size_t)n * m->info->num_classes * sizeof(float));
    if (!r->imgs || !r->tensors || !r->logits) return -1;
    r->nimg = n;
    int fd = -1;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) fd = ci->connect_fd;
    /* The deadline counts from the complete body: reading is bounded by
     * --request-read-timeout-s, so a slow but honest upload is not
     * charged twice. */
    int64_t deadline = srv_now_ns() + (int64_t)r->h->cfg->request_timeout_ms * 1000000;
    for (int i = 0; i < n; i++) {
        struct srv_img *im = &r->imgs[i];
        im->req = r;
        im->job.input = r->tensors + (size_t)i * m->in_floats;
        im->job.logits = r->logits + (size_t)i * m->info->num_classes;
        im->job.deadline_ns = deadline;
        im->job.client_fd = fd;
        im->job.done = job_done;
        im->job.user = im;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The decode stage                                                         */
/* ------------------------------------------------------------------------ */

/* The decoder's check, called between rows and scans of each image: stops
 * the decode when the request's decode work would pass
 * --max-request-decode-work, its deadline has passed, or its client has
 * gone (a reset or an error on the socket; a FIN alone may be a client
 * that half-closed and still waits for the answer, so it does not stop a
 * decode whose work is bounded anyway). Runs on a decode thread while the
 * connection is suspended, so r is this thread's alone. */
static int decode_check(void *arg, int64_t blocks) {
    struct srv_img *im = arg;
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
static void img_stopped(struct srv_req *r, struct srv_img *im) {
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
 * bound the rest. A tensor the client preprocessed is only copied. */
static void decode_image(struct srv_req *r, struct srv_img *im, float *out) {
    struct srv_http *h = r->h;
    if (im->tensor) {
        memcpy(out, im->tensor, r->model->in_floats * sizeof(float));
        return;
    }
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
    if (st == ENG_OK) {
        /* The model's preprocessing, decoded as --decode says. */
        struct eng_preproc pp = r->model->info->preproc;
        if (h->cfg->decode >= 0) pp.decode = (enum eng_decode)h->cfg->decode;
        st = eng_image_preprocess(data, len, &pp, &lim, out, msg, sizeof msg);
    }
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

/* ------------------------------------------------------------------------ */
/* The batcher                                                              */
/* ------------------------------------------------------------------------ */

/* Queues the decoded images. Returns 1 when at least one was queued (the
 * last one's job_done resumes the connection), else 0, with r->refuse_*
 * set when the batcher refused them. */
static int submit_images(struct srv_req *r) {
    const struct srv_config *c = r->h->cfg;
    int64_t now = srv_now_ns();
    struct srv_job *jobs[r->nimg];
    int n = 0;
    for (int i = 0; i < r->nimg; i++) {
        struct srv_img *im = &r->imgs[i];
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
    enum srv_submit_status st = srv_batcher_submit(r->model->batcher, jobs, n, &retry);
    srv_arrival_end(r); /* after the submit, so a lone image queued before waits for these */
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
    /* The bytes are no longer needed; free them before waiting. Images
     * the protocol decoded (base64) live in r->api until the end. */
    free(r->body);
    r->body = NULL;
    r->cap = 0;
    srv_budget_release(r);
    if (submit_images(r)) return;
    srv_arrival_end(r);
    pthread_mutex_lock(&r->mu);
    r->suspended = 0;
    pthread_mutex_unlock(&r->mu);
    MHD_resume_connection(r->conn);
}

enum MHD_Result srv_infer_submit(struct srv_req *r) {
    r->submitted = 1;
    r->task.run = decode_task;
    pthread_mutex_lock(&r->mu);
    if (srv_decoder_submit(r->h->decoder, &r->task) != 0) {
        pthread_mutex_unlock(&r->mu);
        r->submitted = 0;
        return srv_send_503_retry(r, "shutting_down", 1, "the server is shutting down");
    }
    /* Suspended before the task can end: it takes r->mu to resume. */
    MHD_suspend_connection(r->conn);
    r->suspended = 1;
    pthread_mutex_unlock(&r->mu);
    return MHD_YES;
}

void srv_infer_finish(struct srv_req *r) {
    for (int i = 0; i < r->nimg; i++) {
        struct srv_img *im = &r->imgs[i];
        if (im->status) continue;
        switch (im->job.status) {
        case SRV_JOB_OK:
            break;
        case SRV_JOB_EXPIRED:
            img_fail(im, 504, "deadline_exceeded",
                     "waited %.0f ms in the queue; --request-timeout-ms is %d",
                     im->job.queue_s * 1e3, r->h->cfg->request_timeout_ms);
            break;
        case SRV_JOB_CANCELLED:
            img_fail(im, 503, "cancelled", "the client disconnected");
            break;
        default:
            img_fail(im, 500, "internal", "inference failed");
            break;
        }
    }
}

void srv_infer_results(struct srv_req *r, struct srv_api_result *res) {
    for (int i = 0; i < r->nimg; i++) {
        const struct srv_img *im = &r->imgs[i];
        res[i] = (struct srv_api_result){
            .logits = im->job.logits, .status = im->status, .message = im->status ? im->msg : NULL};
        if (!im->status) r->images_ok++;
        if (im->job.batch_size > r->batch_size) r->batch_size = im->job.batch_size;
    }
}

/* ------------------------------------------------------------------------ */
/* What the protocols share around the job                                  */
/* ------------------------------------------------------------------------ */

const struct srv_model *srv_req_model(struct srv_req *r, const char *name, const char *version,
                                      enum MHD_Result *ret) {
    const struct srv_model *md = srv_model_find(r->h, name);
    if (!md) {
        *ret = srv_send_error(r, 404, "unknown_model", "unknown model '%.64s'", name);
        return NULL;
    }
    if (version && strcmp(version, md->api.version) != 0) {
        *ret = srv_send_error(r, 404, "unknown_version", "model '%.64s' has no version '%.64s'",
                              name, version);
        return NULL;
    }
    return md;
}

enum MHD_Result srv_infer_start(struct srv_req *r, const char *name, const char *version) {
    enum MHD_Result ret;
    if (srv_req_refuse_unready(r, &ret)) return ret;
    if (!(r->model = srv_req_model(r, name, version, &ret))) return ret;
    if (srv_req_refuse_length(r, &ret)) return ret;
    return srv_req_admit_body(r, 1);
}

int srv_infer_max_images(const struct srv_req *r) {
    const struct srv_config *c = r->h->cfg;
    return c->max_files < c->queue_limit ? c->max_files : c->queue_limit;
}

static void api_request_free(void *p) {
    srv_api_request_free(p);
    free(p);
}

enum MHD_Result srv_infer_submit_api(struct srv_req *r, struct srv_api_request *req) {
    struct srv_api_request *own = malloc(sizeof *own);
    if (!own || srv_infer_alloc(r, req->n) != 0) {
        free(own);
        srv_api_request_free(req);
        return srv_send_error(r, 503, "out_of_memory", "out of memory");
    }
    *own = *req;
    r->api = own;
    r->api_free = api_request_free;
    for (int i = 0; i < own->n; i++) {
        const struct srv_api_image *im = &own->images[i];
        if (im->kind == SRV_API_IMAGE_TENSOR) {
            r->imgs[i].tensor = im->tensor;
        } else {
            r->imgs[i].src = im->data;
            r->imgs[i].src_len = im->len;
        }
    }
    return srv_infer_submit(r);
}
