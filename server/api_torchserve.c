/* api_torchserve.c: TorchServe's inference API: POST /predictions/{m} (raw
 * body or a multipart part "data"/"file") answered as its image
 * classifier does, GET /ping, GET /models, and its error shape. */
#include "api.h"
#include "http_impl.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAIL(st, ...) srv_api_fail(st, err, errlen, __VA_ARGS__)

/* Parts looked at in a multipart body; TorchServe reads one image. */
#define TS_MAX_PARTS 32

static int is_multipart(const char *ct) {
    return ct && !strncasecmp(ct, "multipart/form-data", 19);
}

/* The part named "data" or "file", first of either; NULL when none. */
static const struct srv_mp_part *image_part(const struct srv_mp_part *parts, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(parts[i].name, "data") || !strcmp(parts[i].name, "file")) return &parts[i];
    return NULL;
}

enum srv_api_status srv_torchserve_parse_predict(const unsigned char *body, size_t len,
                                                 const char *content_type,
                                                 struct srv_api_request *out, char *err,
                                                 size_t errlen) {
    memset(out, 0, sizeof *out);
    const unsigned char *img = body;
    size_t img_len = len;
    if (is_multipart(content_type)) {
        char boundary[SRV_MP_MAX_BOUNDARY + 1];
        if (srv_multipart_boundary(content_type, boundary, sizeof boundary) != SRV_MP_OK)
            return FAIL(SRV_API_ERR_BAD_REQUEST, "multipart Content-Type without a valid boundary");
        struct srv_mp_part *parts = malloc(TS_MAX_PARTS * sizeof *parts);
        if (!parts) return FAIL(SRV_API_ERR_NOMEM, "out of memory");
        int np = 0;
        char mperr[192];
        enum srv_mp_status st =
            srv_multipart_parse(body, len, boundary, parts, TS_MAX_PARTS, &np, mperr, sizeof mperr);
        const struct srv_mp_part *p = st == SRV_MP_OK ? image_part(parts, np) : NULL;
        if (p) {
            img = p->data;
            img_len = p->len;
        }
        free(parts);
        if (st == SRV_MP_ERR_TOO_MANY)
            return FAIL(SRV_API_ERR_TOO_LARGE, "more than %d multipart parts", TS_MAX_PARTS);
        if (st != SRV_MP_OK)
            return FAIL(SRV_API_ERR_BAD_REQUEST, "malformed multipart body: %s", mperr);
        if (!p)
            return FAIL(SRV_API_ERR_BAD_REQUEST,
                        "the multipart body has no part named \"data\" or \"file\"");
    }
    if (img_len == 0) return FAIL(SRV_API_ERR_BAD_REQUEST, "the image is empty");
    enum srv_api_status st = srv_api_request_images(out, 1, err, errlen);
    if (st != SRV_API_OK) return st;
    out->images[0] = (struct srv_api_image){SRV_API_IMAGE_JPEG, img, img_len, NULL};
    return SRV_API_OK;
}

/* TorchServe's exception name for a status. */
static const char *error_type(int status) {
    switch (status) {
    case 400:
        return "BadRequestException";
    case 404:
        return "ModelNotFoundException";
    case 413:
        return "RequestEntityTooLargeException";
    case 415:
        return "UnsupportedMediaTypeException";
    case 503:
        return "ServiceUnavailableException";
    case 504:
        return "RequestTimeoutException";
    default:
        return "InternalServerException";
    }
}

enum srv_api_status srv_torchserve_render_error(int status, const char *msg,
                                                struct srv_api_body *out) {
    return srv_api_body_json(json_pack("{si ss so}", "code", status, "type", error_type(status),
                                       "message", srv_api_jstr(msg)),
                             status, out);
}

enum srv_api_status srv_torchserve_render_predict(const struct srv_api_model *m,
                                                  const struct srv_api_request *req,
                                                  const struct srv_api_result *res,
                                                  struct srv_api_body *out) {
    char msg[512];
    int status = srv_api_failure(res, req->n, NULL, msg, sizeof msg);
    if (status) return srv_torchserve_render_error(status, msg, out);
    int k = srv_api_topk_count(m, req);
    struct eng_pred *preds = malloc((size_t)k * sizeof *preds);
    json_t *o = json_object();
    int fail = !preds || !o;
    if (!fail) k = eng_topk(res[0].logits, m->classes, k, preds);
    for (int i = 0; !fail && i < k; i++) {
        char buf[256];
        const char *label = srv_api_label(m, preds[i].index, buf, sizeof buf);
        /* Two classes may share a name (ImageNet has two "crane"s): the
         * first, higher score stays. */
        if (json_object_get(o, label)) continue;
        fail = json_object_set_new(o, label, json_real(preds[i].score));
    }
    free(preds);
    if (fail) {
        json_decref(o);
        o = NULL;
    }
    return srv_api_body_json(o, 200, out);
}

enum srv_api_status srv_torchserve_render_ping(int healthy, struct srv_api_body *out) {
    return srv_api_body_json(json_pack("{ss}", "status", healthy ? "Healthy" : "Unhealthy"),
                             healthy ? 200 : 500, out);
}

enum srv_api_status srv_torchserve_render_models(const struct srv_api_model *models, int n,
                                                 struct srv_api_body *out) {
    json_t *arr = json_array();
    for (int i = 0; arr && i < n; i++) {
        if (json_array_append_new(arr, json_pack("{ss so}", "modelName", models[i].name, "modelUrl",
                                                 srv_api_jstr(models[i].source)))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return srv_api_body_json(arr ? json_pack("{so}", "models", arr) : NULL, 200, out);
}

/* ------------------------------------------------------------------------ */
/* HTTP handlers (named by routes.c)                                        */
/* ------------------------------------------------------------------------ */

enum MHD_Result srv_torchserve_error(struct srv_req *r, int status, const char *code,
                                     const char *msg, const char *hname, const char *hval) {
    struct srv_api_body b = {0};
    if (srv_torchserve_render_error(status, msg, &b) != SRV_API_OK) return MHD_NO;
    return srv_send_api_body(r, &b, hname, hval);
}

enum MHD_Result srv_torchserve_ping_get(struct srv_req *r) {
    struct srv_http *h = r->h;
    int healthy =
        atomic_load_explicit(&h->ready, memory_order_acquire) && !atomic_load(&h->draining);
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_torchserve_render_ping(healthy, &b), &b);
}

enum MHD_Result srv_torchserve_models_get(struct srv_req *r) {
    struct srv_http *h = r->h;
    int n = atomic_load_explicit(&h->ready, memory_order_acquire) ? h->nmodels : 0;
    struct srv_api_model models[SRV_MAX_MODELS];
    for (int i = 0; i < n; i++)
        models[i] = h->models[i].api;
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_torchserve_render_models(models, n, &b), &b);
}

enum MHD_Result srv_torchserve_predict_start(struct srv_req *r) {
    /* TorchServe numbers versions "1.0"; ours is "1". */
    const char *v = r->param[1][0] ? r->param[1] : NULL;
    if (v && !strcmp(v, "1.0")) v = "1";
    return srv_infer_start(r, r->param[0], v);
}

enum MHD_Result srv_torchserve_predict_body(struct srv_req *r) {
    const char *ct =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    struct srv_api_request req;
    char err[256];
    enum srv_api_status st =
        srv_torchserve_parse_predict(r->body, r->len, ct, &req, err, sizeof err);
    if (st != SRV_API_OK) {
        srv_api_request_free(&req);
        return srv_send_error(r, srv_api_http_status(st), "invalid_request", "%s", err);
    }
    return srv_infer_submit_api(r, &req);
}

enum MHD_Result srv_torchserve_predict_resumed(struct srv_req *r) {
    struct srv_api_result res[r->nimg];
    srv_infer_results(r, res);
    struct srv_api_body b = {0};
    return srv_send_rendered(r, srv_torchserve_render_predict(&r->model->api, r->api, res, &b),
                             &b);
}
