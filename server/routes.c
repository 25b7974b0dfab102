/* routes.c: the routing table: every method + path the server answers and
 * the API file whose handlers answer it. The transport (http.c) looks a
 * request up here once, on its first call. */
#include "http_impl.h"

#include <string.h>

/* First match wins; the static files' catch-all comes last. The last
 * column says who may call a route when --auth-token-file is set: a token
 * for inference and model information of every protocol; the probes and
 * the static files (the web page must load to ask for a token) are open;
 * /metrics follows --metrics-public. */
static const struct srv_route_def g_routes[] = {
    /* imgclassd's own API (api_imgclassd.c) */
    {"POST", "/classify", SRV_ROUTE_CLASSIFY, srv_classify_start, srv_classify_body,
     srv_classify_resumed, NULL, SRV_ACCESS_TOKEN},
    {"GET", "/healthz", SRV_ROUTE_HEALTHZ, NULL, srv_healthz_get, NULL, NULL, SRV_ACCESS_OPEN},
    {"GET", "/readyz", SRV_ROUTE_READYZ, NULL, srv_readyz_get, NULL, NULL, SRV_ACCESS_OPEN},
    {"GET", "/metrics", SRV_ROUTE_METRICS, NULL, srv_metrics_get, NULL, NULL, SRV_ACCESS_METRICS},

    /* Open Inference Protocol v2 (api_v2.c) */
    {"GET", "/v2", SRV_ROUTE_V2, NULL, srv_v2_server_get, NULL, srv_v2_error, SRV_ACCESS_TOKEN},
    {"GET", "/v2/health/live", SRV_ROUTE_V2, NULL, srv_v2_live_get, NULL, srv_v2_error,
     SRV_ACCESS_OPEN},
    {"GET", "/v2/health/ready", SRV_ROUTE_V2, NULL, srv_v2_ready_get, NULL, srv_v2_error,
     SRV_ACCESS_OPEN},
    {"GET", "/v2/models/{}", SRV_ROUTE_V2, NULL, srv_v2_model_get, NULL, srv_v2_error,
     SRV_ACCESS_TOKEN},
    {"GET", "/v2/models/{}/versions/{}", SRV_ROUTE_V2, NULL, srv_v2_model_get, NULL, srv_v2_error,
     SRV_ACCESS_TOKEN},
    {"GET", "/v2/models/{}/ready", SRV_ROUTE_V2, NULL, srv_v2_model_ready_get, NULL, srv_v2_error,
     SRV_ACCESS_TOKEN},
    {"GET", "/v2/models/{}/versions/{}/ready", SRV_ROUTE_V2, NULL, srv_v2_model_ready_get, NULL,
     srv_v2_error, SRV_ACCESS_TOKEN},
    {"GET", "/v2/models/{}/config", SRV_ROUTE_V2, NULL, srv_v2_config_get, NULL, srv_v2_error,
     SRV_ACCESS_TOKEN},
    {"GET", "/v2/models/{}/versions/{}/config", SRV_ROUTE_V2, NULL, srv_v2_config_get, NULL,
     srv_v2_error, SRV_ACCESS_TOKEN},
    {"POST", "/v2/models/{}/infer", SRV_ROUTE_V2_INFER, srv_v2_infer_start, srv_v2_infer_body,
     srv_v2_infer_resumed, srv_v2_error, SRV_ACCESS_TOKEN},
    {"POST", "/v2/models/{}/versions/{}/infer", SRV_ROUTE_V2_INFER, srv_v2_infer_start,
     srv_v2_infer_body, srv_v2_infer_resumed, srv_v2_error, SRV_ACCESS_TOKEN},

    /* TorchServe inference API (api_torchserve.c) */
    {"GET", "/ping", SRV_ROUTE_TORCHSERVE, NULL, srv_torchserve_ping_get, NULL,
     srv_torchserve_error, SRV_ACCESS_OPEN},
    {"GET", "/models", SRV_ROUTE_TORCHSERVE, NULL, srv_torchserve_models_get, NULL,
     srv_torchserve_error, SRV_ACCESS_TOKEN},
    {"POST", "/predictions/{}", SRV_ROUTE_PREDICTIONS, srv_torchserve_predict_start,
     srv_torchserve_predict_body, srv_torchserve_predict_resumed, srv_torchserve_error,
     SRV_ACCESS_TOKEN},
    {"POST", "/predictions/{}/{}", SRV_ROUTE_PREDICTIONS, srv_torchserve_predict_start,
     srv_torchserve_predict_body, srv_torchserve_predict_resumed, srv_torchserve_error,
     SRV_ACCESS_TOKEN},

    /* KServe v1 (api_kserve_v1.c; v2's error shape); /v1/models/{m} also
     * carries imgclassd's model details, which the web page reads */
    {"GET", "/v1/models", SRV_ROUTE_MODELS, NULL, srv_kserve_v1_models_get, NULL, srv_v2_error,
     SRV_ACCESS_TOKEN},
    {"POST", "/v1/models/{}:predict", SRV_ROUTE_V1_PREDICT, srv_kserve_v1_predict_start,
     srv_kserve_v1_predict_body, srv_kserve_v1_predict_resumed, srv_v2_error, SRV_ACCESS_TOKEN},
    {"GET", "/v1/models/{}", SRV_ROUTE_MODELS, NULL, srv_kserve_v1_model_get, NULL, srv_v2_error,
     SRV_ACCESS_TOKEN},

    /* static files (api_static.c) */
    {"GET", "*", SRV_ROUTE_STATIC, NULL, srv_static_get, NULL, NULL, SRV_ACCESS_OPEN},
};

/* Matches path against pattern, capturing "{}" segments into param. */
static int match(const char *pattern, const char *path, char param[][128]) {
    if (!strcmp(pattern, "*")) return 1;
    int np = 0;
    const char *p = pattern, *s = path;
    while (*p) {
        if (p[0] == '{' && p[1] == '}') {
            p += 2;
            /* The capture ends at the next '/', or where the pattern's
             * literal rest of the segment (":predict") begins. */
            const char *lit = p;
            size_t litn = strcspn(lit, "/");
            const char *end = s + strcspn(s, "/");
            if (litn) {
                if ((size_t)(end - s) <= litn || strncmp(end - litn, lit, litn) != 0) return 0;
                end -= litn;
            }
            size_t n = (size_t)(end - s);
            if (n == 0 || n >= 128 || np >= SRV_ROUTE_MAX_PARAMS) return 0;
            memcpy(param[np], s, n);
            param[np][n] = 0;
            np++;
            s = end + litn;
            p += litn;
            continue;
        }
        if (*p != *s) return 0;
        p++;
        s++;
    }
    return *s == 0;
}

static int method_is(const struct srv_route_def *d, const char *method) {
    if (!strcmp(d->method, "GET"))
        return !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    return !strcmp(method, d->method);
}

const struct srv_route_def *srv_route_find(const char *method, const char *path,
                                           char param[][128], const struct srv_route_def **def_out,
                                           char *allow, size_t allowlen) {
    const struct srv_route_def *first = NULL;
    size_t al = 0;
    allow[0] = 0;
    for (size_t i = 0; i < sizeof g_routes / sizeof g_routes[0]; i++) {
        const struct srv_route_def *d = &g_routes[i];
        char tmp[SRV_ROUTE_MAX_PARAMS][128] = {{0}};
        if (!match(d->pattern, path, tmp)) continue;
        /* A path some route names is never a static file. */
        if (first && !strcmp(d->pattern, "*")) break;
        if (method_is(d, method)) {
            memcpy(param, tmp, sizeof tmp);
            *def_out = d;
            return d;
        }
        if (!first) first = d;
        const char *m = !strcmp(d->method, "GET") ? "GET, HEAD" : d->method;
        if (!strstr(allow, m) && al < allowlen)
            al += (size_t)snprintf(allow + al, al < allowlen ? allowlen - al : 0, "%s%s",
                                   al ? ", " : "", m);
    }
    *def_out = first;
    return NULL;
}
