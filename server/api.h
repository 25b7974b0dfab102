/* api.h: the protocol APIs (Open Inference Protocol v2, TorchServe, KServe
 * v1): each parses its request into one internal job and renders the same
 * results in its own shape. Pure functions: no libmicrohttpd, no batcher. */
#ifndef API_H
#define API_H

#include "engine.h"
#include "server.h"

#include <jansson.h>
#include <stddef.h>

/* ------------------------------------------------------------------------ */
/* Statuses (server/api.c)                                                  */
/* ------------------------------------------------------------------------ */

/* What went wrong with a request; srv_api_http_status maps each to the
 * status code every protocol answers with. */
enum srv_api_status {
    SRV_API_OK = 0,
    SRV_API_ERR_BAD_REQUEST = -1, /* 400: malformed body, wrong shape or type */
    SRV_API_ERR_NOT_FOUND = -2,   /* 404: unknown model, version or output */
    SRV_API_ERR_TOO_LARGE = -3,   /* 413: more images than the caller allows */
    SRV_API_ERR_MEDIA = -4,       /* 415: a body that is no format we speak */
    SRV_API_ERR_NOMEM = -5,       /* 503: out of memory; retrying may work */
};

/* The HTTP status for s (200 for SRV_API_OK). */
int srv_api_http_status(enum srv_api_status s);

/* ------------------------------------------------------------------------ */
/* The model(s) served, as the metadata endpoints describe them             */
/* ------------------------------------------------------------------------ */

/* One served model. Every pointer is borrowed and must outlive the calls
 * it is passed to; the struct itself is the caller's. Every string is
 * non-NULL. */
struct srv_api_model {
    const char *name;                /* "resnet50": the {m} of every URL */
    const char *version;             /* "1": the only version */
    const char *platform;            /* v2 metadata "platform", e.g. "imgclassd" */
    const char *arch;                /* "resnet50" */
    const char *precision;           /* "fp32", later "int8" */
    const char *source;              /* weights path or "random:resnet50:0" */
    const struct eng_labels *labels; /* class names; NULL: "class_<i>" */
    int classes;                     /* logits per image */
    int input_size;                  /* an FP32 input image is [3][input_size][input_size] */
    int max_batch;                   /* >= 1 */
    int batch_timeout_us;            /* dynamic batching delay, for the v2 config */
    int instances;                   /* workers, for the v2 config's instance_group */
    int ready;                       /* 1 when the model answers inference */
};

/* v2 names of the model's one input and its outputs. Metadata lists the
 * FP32 input and the probabilities output only (tritonclient's
 * image_client insists on exactly one of each); a BYTES input of JPEGs is
 * accepted under any name, and "logits" may be requested too. */
#define SRV_V2_INPUT "input"
#define SRV_V2_OUTPUT_PROBS "probabilities"
#define SRV_V2_OUTPUT_LOGITS "logits"

/* ------------------------------------------------------------------------ */
/* The internal job: a parsed request                                       */
/* ------------------------------------------------------------------------ */

enum srv_api_image_kind {
    SRV_API_IMAGE_JPEG = 0,   /* encoded bytes: decode and preprocess them */
    SRV_API_IMAGE_TENSOR = 1, /* v2 FP32 input already preprocessed by the client */
};

/* One image of a request. Pointers are borrowed from the request body or
 * owned by the srv_api_request that holds the image (decoded base64,
 * tensors): valid until srv_api_request_free and while the body lives. */
struct srv_api_image {
    enum srv_api_image_kind kind;
    const unsigned char *data; /* JPEG: the encoded bytes (may not be a JPEG) */
    size_t len;
    const float *tensor; /* TENSOR: [3][input_size][input_size], normalized CHW */
};

enum srv_api_output_kind {
    SRV_API_OUT_PROBS = 0,  /* softmax of the logits */
    SRV_API_OUT_LOGITS = 1, /* the model's raw output */
};

/* One v2 output requested. */
struct srv_api_output {
    enum srv_api_output_kind kind;
    int classification; /* 0: the FP32 tensor [n, classes]; K > 0: BYTES [n, K] */
    int binary;         /* 1: as binary data after the JSON header */
};

#define SRV_API_MAX_OUTPUTS 2 /* each kind at most once */

/* A request parsed by any protocol. Fill it with a srv_*_parse_* function
 * (which zeroes it first) and release it with srv_api_request_free, also
 * after a failed parse. */
struct srv_api_request {
    int n;                        /* images, 1..max_images */
    struct srv_api_image *images; /* [n], owned */
    /* v2 */
    char *id;         /* the request's "id" to echo, owned; NULL when absent */
    char *input_name; /* the input's name, owned; NULL outside v2 */
    int noutputs;     /* outputs to render, in order; >= 1 after a v2 parse */
    struct srv_api_output outputs[SRV_API_MAX_OUTPUTS];
    /* KServe v1, TorchServe: predictions per image. Parsers leave it 0
     * (the protocol's default, 5); the caller may set it, e.g. from ?topk=. */
    int topk;
    /* private: storage the images point into */
    unsigned char *bytes; /* decoded base64 */
    float *tensors;       /* [n][3][size][size] */
};

/* Frees everything the request owns and zeroes it. NULL ok. */
void srv_api_request_free(struct srv_api_request *r);

/* ------------------------------------------------------------------------ */
/* Results and rendered bodies                                              */
/* ------------------------------------------------------------------------ */

/* The outcome of one image, filled by the caller after inference. */
struct srv_api_result {
    const float *logits; /* [classes], borrowed; used when status == 0 */
    int status;          /* 0: classified; else the HTTP status of its failure */
    const char *message; /* why it failed (borrowed); NULL when status == 0 */
};

/* A rendered response. data is malloc'd and owned by the caller (free it
 * with srv_api_body_free); content_type is a static string. */
struct srv_api_body {
    int status; /* HTTP status to answer with */
    char *data;
    size_t len;
    const char *content_type;
    /* v2 binary extension: when binary is 1, the value of the
     * Inference-Header-Content-Length response header (the JSON's length;
     * binary tensor data follows it in data). */
    int binary;
    size_t header_len;
};

/* Frees b->data and zeroes b. NULL ok. */
void srv_api_body_free(struct srv_api_body *b);

/* ------------------------------------------------------------------------ */
/* Base64 (server/api.c)                                                    */
/* ------------------------------------------------------------------------ */

/* Upper bound of the bytes n base64 characters decode to. */
size_t srv_base64_decoded_max(size_t n);

/* Strict RFC 4648 base64 (standard alphabet): any other byte, including
 * whitespace, is refused, as are '=' anywhere but the end, a lone final
 * character, and non-zero unused bits. Padding is optional. Writes at most
 * srv_base64_decoded_max(n) bytes to out (outcap bytes); returns 0 and
 * *outlen, or -1. Pure function. */
int srv_base64_decode(const char *in, size_t n, unsigned char *out, size_t outcap, size_t *outlen);

/* ------------------------------------------------------------------------ */
/* Open Inference Protocol v2 (server/api_v2.c)                             */
/* ------------------------------------------------------------------------ */

/* Parses POST /v2/models/{m}[/versions/{v}]/infer.
 *   body, len:   the whole request body, borrowed; images may point into it,
 *                so it must outlive out.
 *   header_len:  the Inference-Header-Content-Length header value as sent
 *                (NUL-terminated), or NULL when absent (all JSON). "0" is the
 *                raw form: the whole body is one JPEG.
 *   m:           the model (classes, input_size).
 *   max_images:  the most images one request may carry (413 beyond).
 * Accepts one input: BYTES [n] or [n,1] of JPEGs (base64 strings in JSON,
 * or binary elements of a 4-byte little-endian length plus bytes), or FP32
 * [n,3,S,S] (S = input_size; flat or nested JSON numbers, or binary
 * little-endian floats). Outputs: "probabilities" and/or "logits", each
 * with parameters classification (K) and binary_data; the request's
 * binary_data_output sets the default. No outputs: probabilities.
 * Returns SRV_API_OK with out filled, or an error with a message naming
 * the input, output or field in err (may be NULL). Never reads outside
 * body[0..len). Thread-safe. */
enum srv_api_status srv_v2_parse_infer(const unsigned char *body, size_t len,
                                       const char *header_len, const struct srv_api_model *m,
                                       int max_images, struct srv_api_request *out, char *err,
                                       size_t errlen);

/* Renders the infer response for req (parsed by srv_v2_parse_infer) with
 * res[0..req->n): {"model_name","model_version","id","outputs":[...]}, with
 * binary outputs after the JSON. When an image failed, the whole answer is
 * that image's error ({"error": ...}, its status). SRV_API_ERR_NOMEM is
 * the only failure. */
enum srv_api_status srv_v2_render_infer(const struct srv_api_model *m,
                                        const struct srv_api_request *req,
                                        const struct srv_api_result *res, struct srv_api_body *out);

/* {"error": msg} with the given status (also KServe v1's error shape). */
enum srv_api_status srv_v2_render_error(int status, const char *msg, struct srv_api_body *out);

/* GET /v2: {"name","version","extensions":[...]}. */
enum srv_api_status srv_v2_render_server(const char *name, const char *version,
                                         struct srv_api_body *out);

/* GET /v2/health/live, /v2/health/ready, /v2/models/{m}/ready:
 * {"<key>": true|false}, 200 when ok else 503. key: "live" or "ready". */
enum srv_api_status srv_v2_render_health(const char *key, int ok, struct srv_api_body *out);

/* GET /v2/models/{m}[/versions/{v}]: name, versions, platform, inputs and
 * outputs with -1 for the batch dimension. */
enum srv_api_status srv_v2_render_model(const struct srv_api_model *m, struct srv_api_body *out);

/* GET /v2/models/{m}/config: Triton's model configuration (max_batch_size,
 * input with dims and format, output, dynamic_batching, instance_group). */
enum srv_api_status srv_v2_render_config(const struct srv_api_model *m, struct srv_api_body *out);

/* ------------------------------------------------------------------------ */
/* TorchServe inference API (server/api_torchserve.c)                       */
/* ------------------------------------------------------------------------ */

/* Parses POST /predictions/{m}[/{version}]: a multipart/form-data body's
 * part named "data" or "file" (the first of them), else the raw body, is
 * the one image. content_type: the request's header, NULL when absent.
 * body is borrowed and must outlive out. Thread-safe. */
enum srv_api_status srv_torchserve_parse_predict(const unsigned char *body, size_t len,
                                                 const char *content_type,
                                                 struct srv_api_request *out, char *err,
                                                 size_t errlen);

/* The image classifier's answer: {"<label>": probability, ...}, the top
 * k (k = req->topk, or 5 when 0) in descending order; a label already
 * listed keeps its higher score. An image's failure renders as the error
 * below. */
enum srv_api_status srv_torchserve_render_predict(const struct srv_api_model *m,
                                                  const struct srv_api_request *req,
                                                  const struct srv_api_result *res,
                                                  struct srv_api_body *out);

/* TorchServe's error shape {"code","type","message"}; type follows the
 * status (400 BadRequestException, 404 ModelNotFoundException, ...). */
enum srv_api_status srv_torchserve_render_error(int status, const char *msg,
                                                struct srv_api_body *out);

/* GET /ping: {"status":"Healthy"} 200, or "Unhealthy" 500. */
enum srv_api_status srv_torchserve_render_ping(int healthy, struct srv_api_body *out);

/* GET /models: {"models":[{"modelName","modelUrl"}]} for models[0..n). */
enum srv_api_status srv_torchserve_render_models(const struct srv_api_model *models, int n,
                                                 struct srv_api_body *out);

/* ------------------------------------------------------------------------ */
/* KServe v1 (server/api_kserve_v1.c)                                       */
/* ------------------------------------------------------------------------ */

/* Parses POST /v1/models/{m}:predict: {"instances":[...]} where each
 * instance is a base64 string, {"b64": ...} or {"image": {"b64": ...}}.
 * 1..max_images instances (413 beyond). Decoded images are owned by out.
 * Thread-safe. */
enum srv_api_status srv_kserve_v1_parse_predict(const unsigned char *body, size_t len,
                                                int max_images, struct srv_api_request *out,
                                                char *err, size_t errlen);

/* {"predictions":[[{"index","label","score"}, ...], ...]}: per image the
 * top k (k = req->topk, or 5 when 0) as /classify lists them. An image's
 * failure: the whole answer is {"error": "instance i: ..."} with its
 * status. */
enum srv_api_status srv_kserve_v1_render_predict(const struct srv_api_model *m,
                                                 const struct srv_api_request *req,
                                                 const struct srv_api_result *res,
                                                 struct srv_api_body *out);

/* GET /v1/models: {"models":[names]}. */
enum srv_api_status srv_kserve_v1_render_models(const struct srv_api_model *models, int n,
                                                struct srv_api_body *out);

/* GET /v1/models/{m}: {"name","ready", architecture, precision, classes,
 * input_size, max_batch, weights} plus every key of extra (a JSON object,
 * borrowed, may be NULL: the transport's batching and limits details). */
enum srv_api_status srv_kserve_v1_render_model(const struct srv_api_model *m, const json_t *extra,
                                               struct srv_api_body *out);

/* ------------------------------------------------------------------------ */
/* Shared by the api_*.c files (server/api.c)                               */
/* ------------------------------------------------------------------------ */

/* Writes the printf-style message into err (may be NULL) and returns st. */
enum srv_api_status srv_api_fail(enum srv_api_status st, char *err, size_t errlen, const char *fmt,
                                 ...) __attribute__((format(printf, 4, 5)));

/* Allocates r->images[n] (zeroed) and sets r->n. */
enum srv_api_status srv_api_request_images(struct srv_api_request *r, int n, char *err,
                                           size_t errlen);

/* Decodes the base64 JSON strings strs[0..r->n) into storage r owns and
 * points r->images[i] at them (kind JPEG). what(i) names element i in a
 * message, e.g. "instance 3". */
enum srv_api_status srv_api_decode_images(struct srv_api_request *r, json_t *const *strs,
                                          const char *what, char *err, size_t errlen);

/* Parses body[0..len) as JSON (duplicate keys refused) into *root (new
 * reference); an empty body or bad JSON is SRV_API_ERR_BAD_REQUEST with
 * the line and column in err. */
enum srv_api_status srv_api_load_json(const unsigned char *body, size_t len, json_t **root,
                                      char *err, size_t errlen);

/* json_dumps flags of every body: key order kept (TorchServe's top-k
 * object is ordered by score); 9 significant digits give back every float
 * exactly, where jansson's default 17 only lengthen the body. */
#define SRV_API_JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))

/* Serializes j (stolen, may be NULL after an allocation failure) as the
 * body with status and Content-Type application/json. */
enum srv_api_status srv_api_body_json(json_t *j, int status, struct srv_api_body *out);

/* A JSON string of any bytes (invalid UTF-8 replaced), null for NULL;
 * NULL only on OOM. */
json_t *srv_api_jstr(const char *s);

/* The label of class i, written into buf as valid UTF-8 (a JSON key or
 * string as it is): the model's, else "class_<i>". Returns buf. */
const char *srv_api_label(const struct srv_api_model *m, int i, char *buf, size_t buflen);

/* Predictions per image for KServe v1 and TorchServe: req->topk, or 5
 * (both servers' default) when 0, at most the classes. */
int srv_api_topk_count(const struct srv_api_model *m, const struct srv_api_request *req);

/* The first failed image of res[0..n): returns its HTTP status (500 when
 * it has none) and writes "<what> <i>: <message>" into msg, or the message
 * alone when what is NULL. Returns 0 when every image succeeded. */
int srv_api_failure(const struct srv_api_result *res, int n, const char *what, char *msg,
                    size_t msglen);

#endif
