/* api_imgclassd.c: imgclassd's own API: POST /classify (raw or multipart
 * JPEGs, top-k with timing), /healthz, /readyz, /metrics, and the model
 * details /v1/models/{m} adds to KServe's answer. Parses into the shared inference job (infer.c) and
 * renders its results. */
#include "http_impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------------ */
/* Health, readiness, metrics, model info                                   */
/* ------------------------------------------------------------------------ */

enum MHD_Result srv_healthz_get(struct srv_req *r) {
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string("ok"));
    return srv_send_json(r, 200, o, NULL, NULL);
}

enum MHD_Result srv_readyz_get(struct srv_req *r) {
    struct srv_http *h = r->h;
    const char *st = atomic_load(&h->draining) ? "draining"
                     : atomic_load(&h->ready)  ? "ready"
                                               : "starting";
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(st));
    return srv_send_json(r, strcmp(st, "ready") ? 503 : 200, o, NULL, NULL);
}

enum MHD_Result srv_metrics_get(struct srv_req *r) {
    struct srv_http *h = r->h;
    struct srv_metrics_gauges g = {0};
    int ready = atomic_load_explicit(&h->ready, memory_order_acquire);
    g.inflight_requests = atomic_load(&h->inflight);
    g.inflight_body_bytes = atomic_load(&h->body_bytes);
    g.draining = atomic_load(&h->draining);
    g.ready = ready && !g.draining;
    if (ready) {
        for (int i = 0; i < h->nmodels && i < (int)(sizeof g.models / sizeof g.models[0]); i++) {
            const struct srv_model *md = &h->models[i];
            int k = g.nmodels++;
            g.models[k].name = md->name;
            g.models[k].arch = md->info->arch;
            g.models[k].precision = md->info->precision;
            g.models[k].weights = md->info->source;
            g.models[k].classes = md->info->num_classes;
            g.models[k].queue_depth = srv_batcher_depth(md->batcher);
            g.queue_depth += g.models[k].queue_depth;
        }
        g.workers = h->cfg->workers;
        g.max_batch = h->cfg->max_batch;
        g.http_threads = h->cfg->http_threads;
        g.engine_threads = h->engine_threads;
        g.cpus = srv_cpu_count();
    }
    size_t len;
    char *text = srv_metrics_render(&g, &len);
    if (!text) return srv_send_error(r, 500, "internal", "out of memory");
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    srv_add_common_headers(r, resp, 1);
    return srv_queue(r, 200, resp, len);
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

/* Everything an operator may want to know about a served model and the
 * server around it; GET /v1/models/{m} (api_kserve_v1.c) answers it. */
json_t *srv_model_details(const struct srv_http *h, const struct srv_model *md) {
    const struct eng_model_info *in = md->info;
    const struct srv_config *c = h->cfg;
    json_t *m = json_object();
    json_object_set_new(m, "name", srv_jstr(md->name));
    json_object_set_new(m, "architecture", srv_jstr(in->arch));
    json_object_set_new(m, "precision", srv_jstr(in->precision));
    json_object_set_new(m, "depth", json_integer(in->depth));
    json_object_set_new(m, "block", json_string(in->bottleneck ? "bottleneck" : "basic"));
    json_object_set_new(m, "parameters", json_integer(in->num_params));
    json_object_set_new(m, "classes", json_integer(in->num_classes));
    json_object_set_new(m, "labels", srv_jstr(!md->labels ? "class_N"
                                              : c->labels[0] ? "file"
                                                             : "builtin-imagenet-1k"));
    json_t *size = json_array();
    json_array_append_new(size, json_integer(3));
    json_array_append_new(size, json_integer(in->preproc.crop));
    json_array_append_new(size, json_integer(in->preproc.crop));
    json_object_set_new(m, "input_size", size);
    json_object_set_new(m, "gflop", json_real(in->gflop));
    json_object_set_new(m, "kernel", srv_jstr(in->kernel));
    json_object_set_new(m, "dtype", srv_jstr(in->dtype));
    /* The weights source is the operator's own --model value; it is not
     * an internal detail leaked by an error. */
    json_object_set_new(m, "weights", srv_jstr(in->source));
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
    enum eng_decode dec = c->decode >= 0 ? (enum eng_decode)c->decode : in->preproc.decode;
    json_object_set_new(pp, "decode", json_string(dec == ENG_DECODE_EXACT ? "exact" : "fast"));
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
    return m;
}

/* ------------------------------------------------------------------------ */
/* POST /classify                                                           */
/* ------------------------------------------------------------------------ */

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

/* Headers in: everything that can be refused before the body is read is
 * refused here. */
enum MHD_Result srv_classify_start(struct srv_req *r) {
    enum MHD_Result ret;
    if (srv_req_refuse_unready(r, &ret)) return ret;
    /* ?model=NAME picks a model; the first is the default. */
    char name[64] = "";
    const char *mv = NULL;
    size_t mlen = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "model", 5, &mv, &mlen) ==
            MHD_YES &&
        mv)
        srv_utf8_sanitize(name, sizeof name, mv, mlen);
    r->model = srv_model_find(r->h, name);
    if (!r->model)
        return srv_send_error(r, 404, "unknown_model", "no model named '%s' (see /v1/models)",
                              name);
    const struct eng_model_info *in = r->model->info;

    const char *v = NULL;
    size_t vlen = 0;
    r->topk = in->num_classes < 5 ? in->num_classes : 5;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "topk", 4, &v, &vlen) ==
        MHD_YES) {
        if (srv_parse_topk(v, vlen, in->num_classes, &r->topk) != 0)
            return srv_send_error(r, 400, "invalid_topk", "topk must be an integer from 1 to %d",
                                  in->num_classes);
    }
    if (srv_req_refuse_length(r, &ret)) return ret;

    const char *ct =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct && !strncasecmp(ct, "multipart/", 10)) {
        if (strncasecmp(ct, "multipart/form-data", 19) != 0)
            return srv_send_error(r, 415, "unsupported_media_type",
                                  "multipart bodies must be multipart/form-data");
        if (srv_multipart_boundary(ct, r->boundary, sizeof r->boundary) != SRV_MP_OK)
            return srv_send_error(r, 400, "invalid_multipart",
                                  "multipart/form-data without a valid boundary parameter");
        r->multipart = 1;
    }
    /* Any other content type is taken as the raw image; the bytes, not the
     * header, decide whether it is a JPEG (415 names what it is). */
    return srv_req_admit_body(r, 1);
}

/* The body is complete: split it into images and hand them to the
 * inference job. */
enum MHD_Result srv_classify_body(struct srv_req *r) {
    const struct srv_config *c = r->h->cfg;
    int max_files = c->max_files < c->queue_limit ? c->max_files : c->queue_limit;
    if (!r->multipart) {
        if (srv_infer_alloc(r, 1) != 0)
            return srv_send_error(r, 503, "out_of_memory", "out of memory");
        r->imgs[0].src = r->body;
        r->imgs[0].src_len = r->len;
        return srv_infer_submit(r);
    }
    /* Plain form fields are skipped, however many; the limit on file parts
     * is the smaller of --max-files and --queue-limit (a request must fit
     * in the queue), and the message names the one hit. */
    const char *limit = c->queue_limit < c->max_files ? "--queue-limit" : "--max-files";
    struct srv_mp_part *parts = malloc((size_t)max_files * sizeof *parts);
    if (!parts) return srv_send_error(r, 503, "out_of_memory", "out of memory");
    int nfiles = 0;
    char err[256];
    enum srv_mp_status st = srv_multipart_parse_files(r->body, r->len, r->boundary, parts,
                                                      max_files, &nfiles, err, sizeof err);
    if (st != SRV_MP_OK) {
        free(parts);
        if (st == SRV_MP_ERR_TOO_MANY)
            return srv_send_error(r, 413, "too_many_files",
                                  "more than %d file parts; at most %d per request (%s)",
                                  max_files, max_files, limit);
        return srv_send_error(r, 400, "invalid_multipart", "malformed multipart body: %s", err);
    }
    if (nfiles == 0) {
        free(parts);
        return srv_send_error(r, 400, "invalid_multipart", "the multipart body has no file part");
    }
    if (srv_infer_alloc(r, nfiles) != 0) {
        free(parts);
        return srv_send_error(r, 503, "out_of_memory", "out of memory");
    }
    r->multi = nfiles > 1;
    for (int i = 0; i < nfiles; i++) {
        struct srv_img *im = &r->imgs[i];
        const char *fn = parts[i].has_filename ? parts[i].filename : parts[i].name;
        srv_utf8_sanitize(im->filename, sizeof im->filename, fn, strlen(fn));
        im->src = parts[i].data;
        im->src_len = parts[i].len;
    }
    free(parts);
    return srv_infer_submit(r);
}

/* The JSON of one image's outcome: predictions and timing, or an error;
 * NULL out of memory. */
static json_t *img_result(struct srv_req *r, struct srv_img *im, int *status_out) {
    const struct srv_model *md = r->model;
    json_t *o = json_object();
    if (im->status) {
        json_object_set_new(o, "error", srv_error_object(im->code, im->msg));
        *status_out = im->status;
        return o;
    }
    int classes = md->info->num_classes;
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
        const char *label = md->labels ? eng_labels_get(md->labels, preds[i].index) : NULL;
        char fallback[32];
        if (!label) {
            snprintf(fallback, sizeof fallback, "class_%d", preds[i].index);
            label = fallback;
        }
        json_object_set_new(p, "index", json_integer(preds[i].index));
        json_object_set_new(p, "label", srv_jstr(label));
        json_object_set_new(p, "score", json_real(preds[i].score));
        json_array_append_new(arr, p);
    }
    free(preds);
    json_object_set_new(o, "predictions", arr);
    json_t *t = json_object();
    json_object_set_new(t, "queue_ms", json_real(srv_ms(im->job.queue_s)));
    json_object_set_new(t, "decode_ms", json_real(srv_ms(im->decode_s)));
    json_object_set_new(t, "infer_ms", json_real(srv_ms(im->job.infer_s)));
    json_object_set_new(t, "batch_size", json_integer(im->job.batch_size));
    json_object_set_new(o, "timing", t);
    r->images_ok++;
    *status_out = 200;
    return o;
}

/* Every image is done (or failed): the answer, with Server-Timing. An
 * image that never reached the queue answers alone with its error. */
enum MHD_Result srv_classify_resumed(struct srv_req *r) {
    if (!r->multi && r->imgs[0].status && r->imgs[0].job.status == SRV_JOB_PENDING) {
        struct srv_img *im = &r->imgs[0];
        return srv_send_error(r, im->status, im->code, "%s", im->msg);
    }
    double decode = 0, queue_max = 0, infer_max = 0;
    for (int i = 0; i < r->nimg; i++) {
        struct srv_img *im = &r->imgs[i];
        decode += im->decode_s;
        if (im->job.status != SRV_JOB_PENDING) {
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
    json_object_set_new(o, "model", srv_jstr(r->model->name));
    if (!r->multi) {
        int status;
        json_t *res = img_result(r, &r->imgs[0], &status);
        if (!res) {
            json_decref(o);
            return srv_send_error(r, 503, "out_of_memory", "out of memory");
        }
        if (status != 200) {
            json_t *e = json_object();
            json_object_set(e, "error", json_object_get(res, "error"));
            json_decref(res);
            json_decref(o);
            return srv_send_json(r, status, e, "Server-Timing", timing);
        }
        json_object_update(o, res);
        json_decref(res);
        return srv_send_json(r, 200, o, "Server-Timing", timing);
    }
    json_t *arr = json_array();
    for (int i = 0; i < r->nimg; i++) {
        int status;
        json_t *res = img_result(r, &r->imgs[i], &status);
        json_t *item = json_object();
        json_object_set_new(item, "filename", srv_jstr(r->imgs[i].filename));
        if (res)
            json_object_update(item, res);
        else
            json_object_set_new(item, "error", srv_error_object("out_of_memory", "out of memory"));
        json_decref(res);
        json_array_append_new(arr, item);
    }
    json_object_set_new(o, "results", arr);
    return srv_send_json(r, 200, o, "Server-Timing", timing);
}
