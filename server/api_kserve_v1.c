/* api_kserve_v1.c: the KServe v1 (TF-Serving style) data plane:
 * POST /v1/models/{m}:predict with {"instances": [...]} of base64 images,
 * answered as {"predictions": [...]}; GET /v1/models and /v1/models/{m}. */
#include "api.h"
#include "http_impl.h"

#include <stdlib.h>
#include <string.h>

#define FAIL(st, ...) srv_api_fail(st, err, errlen, __VA_ARGS__)

/* The base64 string of an instance: a bare string, {"b64": s} or
 * {"image": {"b64": s}}; NULL for any other form. */
static json_t *instance_b64(json_t *v) {
    if (json_is_string(v)) return v;
    json_t *img = json_object_get(v, "image");
    if (img) v = img;
    json_t *b64 = json_object_get(v, "b64");
    return json_is_string(b64) ? b64 : NULL;
}

enum srv_api_status srv_kserve_v1_parse_predict(const unsigned char *body, size_t len,
                                                int max_images, struct srv_api_request *out,
                                                char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = 0;
    json_t *root;
    enum srv_api_status st = srv_api_load_json(body, len, &root, err, errlen);
    if (st != SRV_API_OK) return st;
    json_t *inst = json_object_get(root, "instances");
    size_t n = json_array_size(inst);
    json_t **strs = NULL;
    if (!json_is_array(inst) || n == 0)
        st = FAIL(SRV_API_ERR_BAD_REQUEST,
                  "the body must be {\"instances\": [...]} with at least one instance");
    else if (n > (size_t)max_images)
        st = FAIL(SRV_API_ERR_TOO_LARGE, "%zu instances; at most %d per request", n, max_images);
    else if (!(strs = malloc(n * sizeof *strs)))
        st = FAIL(SRV_API_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == SRV_API_OK && i < n; i++) {
        strs[i] = instance_b64(json_array_get(inst, i));
        if (!strs[i])
            st = FAIL(SRV_API_ERR_BAD_REQUEST,
                      "instance %zu must be a base64 string, {\"b64\": ...} or "
                      "{\"image\": {\"b64\": ...}}",
                      i);
    }
    if (st == SRV_API_OK) st = srv_api_request_images(out, (int)n, err, errlen);
    if (st == SRV_API_OK) st = srv_api_decode_images(out, strs, "instance", err, errlen);
    free(strs);
    json_decref(root);
    return st;
}

/* One image's top k as /classify lists them. */
static json_t *prediction_list(const struct srv_api_model *m, const float *logits,
                               struct eng_pred *preds, int k) {
    json_t *arr = json_array();
    k = eng_topk(logits, m->classes, k, preds);
    for (int i = 0; arr && i < k; i++) {
        char buf[256];
        const char *label = srv_api_label(m, preds[i].index, buf, sizeof buf);
        if (json_array_append_new(arr, json_pack("{si ss sf}", "index", preds[i].index, "label",
                                                 label, "score", (double)preds[i].score))) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

enum srv_api_status srv_kserve_v1_render_predict(const struct srv_api_model *m,
                                                 const struct srv_api_request *req,
                                                 const struct srv_api_result *res,
                                                 struct srv_api_body *out) {
    char msg[512];
    int status = srv_api_failure(res, req->n, "instance", msg, sizeof msg);
    if (status) return srv_v2_render_error(status, msg, out);
    int k = srv_api_topk_count(m, req);
    struct eng_pred *preds = malloc((size_t)k * sizeof *preds);
    json_t *arr = preds ? json_array() : NULL;
    for (int i = 0; arr && i < req->n; i++) {
        if (json_array_append_new(arr, prediction_list(m, res[i].logits, preds, k))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(preds);
    return srv_api_body_json(arr ? json_pack("{so}", "predictions", arr) : NULL, 200, out);
}

enum srv_api_status srv_kserve_v1_render_models(const struct srv_api_model *models, int n,
                                                struct srv_api_body *out) {
    json_t *arr = json_array();
    for (int i = 0; arr && i < n; i++) {
        if (json_array_append_new(arr, srv_api_jstr(models[i].name))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return srv_api_body_json(arr ? json_pack("{so}", "models", arr) : NULL, 200, out);
}

enum srv_api_status srv_kserve_v1_render_model(const struct srv_api_model *m, const json_t *extra,
                                               struct srv_api_body *out) {
    json_t *o =
        json_pack("{so sb so so si si si so}", "name", srv_api_jstr(m->name), "ready", m->ready,
                  "architecture", srv_api_jstr(m->arch), "precision", srv_api_jstr(m->precision),
                  "classes", m->classes, "input_size", m->input_size, "max_batch", m->max_batch,
                  "weights", srv_api_jstr(m->source));
    /* json_object_update only reads extra, despite its non-const type. */
    if (o && extra && json_object_update(o, (json_t *)extra)) {
        json_decref(o);
        o = NULL;
    }
    return srv_api_body_json(o, 200, out);
}

/* ------------------------------------------------------------------------ */
/* HTTP handlers (named by routes.c; errors in v2's shape, srv_v2_error)    */
/* ------------------------------------------------------------------------ */

enum MHD_Result srv_kserve_v1_models_get(struct srv_req *r) {
    struct srv_http *h = r->h;
    if (!atomic_load_explicit(&h->ready, memory_order_acquire))
        return srv_send_503_retry(r, "not_ready", 1, "the models are still loading");
    struct srv_api_model models[SRV_MAX_MODELS];
    for (int i = 0; i < h->nmodels; i++)
        models[i] = h->models[i].api;
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_kserve_v1_render_models(models, h->nmodels, &b), &b);
}

enum MHD_Result srv_kserve_v1_model_get(struct srv_req *r) {
    struct srv_http *h = r->h;
    if (!atomic_load_explicit(&h->ready, memory_order_acquire))
        return srv_send_503_retry(r, "not_ready", 1, "the models are still loading");
    enum MHD_Result ret;
    const struct srv_model *md = srv_req_model(r, r->param[0], NULL, &ret);
    if (!md) return ret;
    json_t *extra = srv_model_details(h, md);
    struct srv_api_body b = {0};
    enum srv_api_status st =
        extra ? srv_kserve_v1_render_model(&md->api, extra, &b) : SRV_API_ERR_NOMEM;
    json_decref(extra);
    return srv_send_rendered(r, st, &b);
}

enum MHD_Result srv_kserve_v1_predict_start(struct srv_req *r) {
    return srv_infer_start(r, r->param[0], NULL);
}

enum MHD_Result srv_kserve_v1_predict_body(struct srv_req *r) {
    struct srv_api_request req;
    char err[256];
    enum srv_api_status st = srv_kserve_v1_parse_predict(r->body, r->len, srv_infer_max_images(r),
                                                         &req, err, sizeof err);
    if (st != SRV_API_OK) {
        srv_api_request_free(&req);
        return srv_send_error(r, srv_api_http_status(st), "invalid_request", "%s", err);
    }
    return srv_infer_submit_api(r, &req);
}

enum MHD_Result srv_kserve_v1_predict_resumed(struct srv_req *r) {
    struct srv_api_result res[r->nimg];
    srv_infer_results(r, res);
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_kserve_v1_render_predict(&r->model->api, r->api, res, &b),
                             &b);
}
