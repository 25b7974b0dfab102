/* config.c: the server's settings: one table of flags, each also read from
 * an environment variable IMGCLASSD_<NAME>, with defaults, ranges, --help
 * and validation messages that name the flag. */
#include "server.h"

#include "cors.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The flag table                                                           */
/* ------------------------------------------------------------------------ */

enum opt_type {
    OPT_INT,    /* int field, [min, max] */
    OPT_I64,    /* int64_t field, [min, max] */
    OPT_STR,    /* char[size] field */
    OPT_ADDR,   /* char[size] field holding an IPv4/IPv6 literal */
    OPT_ONOFF,  /* int field: on|off|true|false|1|0 */
    OPT_LOGFMT, /* enum srv_log_format: text|json */
    OPT_SWITCH, /* int field set to 1 by the bare flag; no variable */
    OPT_KERNEL, /* enum eng_kernel: auto|avx512|openblas */
    OPT_MODEL,  /* appends to models[] (repeatable); the first is also model */
    OPT_PRECISION, /* enum eng_precision: fp32|int8 */
    OPT_DECODE,    /* enum eng_decode: fast|exact */
};

struct opt {
    const char *name; /* the flag without "--" */
    enum opt_type type;
    size_t off, size;
    int64_t min, max;
    const char *arg;  /* placeholder in --help */
    const char *help; /* one line; the default is printed after it */
};

#define F(field) offsetof(struct srv_config, field), sizeof(((struct srv_config *)0)->field)

const char *srv_kernel_name(enum eng_kernel k) {
    return k == ENG_KERNEL_AVX512 ? "avx512" : k == ENG_KERNEL_OPENBLAS ? "openblas" : "auto";
}

static const struct opt opts[] = {
    {"port", OPT_INT, F(port), 0, 65535, "N", "TCP port; 0 picks a free one (printed on stdout)"},
    {"bind", OPT_ADDR, F(bind), 0, 0, "ADDR", "address to listen on (IPv4 or IPv6 literal)"},
    {"model", OPT_MODEL, F(model), 0, 0, "[NAME=]SPEC[@PRECISION]",
     "safetensors weights file, or random:resnetD[:SEED] (D = 18, 34, 50, 101, 152); "
     "repeat to serve several models (the first is the default)"},
    {"precision", OPT_PRECISION, F(precision), 0, 0, "fp32|int8",
     "arithmetic of every model without its own @PRECISION"},
    {"labels", OPT_STR, F(labels), 0, 0, "FILE",
     "class names, one per line (default: built-in ImageNet-1k)"},
    {"http-threads", OPT_INT, F(http_threads), 0, 1024, "N",
     "HTTP threads; they read bodies and write answers (0 = one per CPU)"},
    {"workers", OPT_INT, F(workers), 0, 1024, "N",
     "inference threads, each with its own context (0 = one per CPU)"},
    {"engine-threads", OPT_INT, F(engine_threads), 0, 1024, "N",
     "engine compute threads shared by all workers (0 = one per CPU)"},
    {"decode", OPT_DECODE, F(decode), 0, 0, "model|fast|exact",
     "JPEG decoding: fast (large photos at a reduced DCT scale, EXIF orientation applied), exact "
     "(torchvision's pipeline: full size, orientation ignored), or model (the weights' sidecar "
     "\"decode\", else fast)"},
    {"kernel", OPT_KERNEL, F(kernel), 0, 0, "auto|avx512|openblas",
     "convolution kernels: AVX-512 (Winograd + packed GEMM) when the CPU has it, or OpenBLAS"},
    {"max-batch", OPT_INT, F(max_batch), 1, 1024, "N", "largest batch a worker runs"},
    {"batch-timeout-us", OPT_INT, F(batch_timeout_us), 0, 10000000, "US",
     "longest a queued image waits for requests still arriving to join its batch"},
    {"queue-limit", OPT_INT, F(queue_limit), 1, 1000000, "N",
     "images waiting for a worker; beyond it requests get 503"},
    {"max-body-bytes", OPT_I64, F(max_body_bytes), 1, (int64_t)1 << 32, "BYTES",
     "largest request body (413 beyond)"},
    {"max-pixels", OPT_I64, F(max_pixels), 1, (int64_t)16384 * 16384, "N",
     "largest width x height from the JPEG header (413 beyond)"},
    {"decode-threads", OPT_INT, F(decode_threads), 0, 1024, "N",
     "threads that decode and preprocess images, off the HTTP threads (0 = one per CPU)"},
    {"max-decode-work", OPT_I64, F(max_decode_work), 1, (int64_t)1 << 40, "BLOCKS",
     "decode work per image: 8x8 blocks entropy-decoded, summed over the JPEG's scans (413 beyond)"},
    {"max-request-decode-work", OPT_I64, F(max_request_decode_work), 1, (int64_t)1 << 40, "BLOCKS",
     "decode work per request, over all of its images (413 beyond)"},
    {"max-decode-memory", OPT_I64, F(max_decode_memory), 1 << 20, (int64_t)1 << 40, "BYTES",
     "DCT coefficient memory one progressive JPEG may need (413 beyond)"},
    {"max-files", OPT_INT, F(max_files), 1, 4096, "N", "file parts per multipart request"},
    {"request-timeout-ms", OPT_INT, F(request_timeout_ms), 1, 3600000, "MS",
     "deadline from arrival to the start of inference (504 beyond)"},
    {"drain-seconds", OPT_INT, F(drain_seconds), 0, 3600, "S",
     "after SIGTERM, keep serving this long with /readyz 503, then stop admitting work"},
    {"static-dir", OPT_STR, F(static_dir), 0, 0, "DIR",
     "directory served at / (\"\" disables static files)"},
    {"log-format", OPT_LOGFMT, F(log_format), 0, 0, "text|json", "log and access-log format"},
    {"access-log", OPT_ONOFF, F(access_log), 0, 0, "on|off", "one log line per request"},
    {"conn-timeout-s", OPT_INT, F(conn_timeout_s), 0, 86400, "S",
     "close a connection idle this long (0 = never)"},
    {"request-read-timeout-s", OPT_INT, F(request_read_timeout_s), 0, 86400, "S",
     "cut a connection whose request (headers and body) takes longer than this to arrive, "
     "counted from the connection's start or its previous answer (0 = never)"},
    {"max-inflight-bytes", OPT_I64, F(max_inflight_bytes), 1, (int64_t)1 << 40, "BYTES",
     "request bodies buffered at once over all connections (503 beyond)"},
    {"max-connections", OPT_INT, F(max_connections), 1, 1000000, "N",
     "open connections; more are refused"},
    {"max-connections-per-ip", OPT_INT, F(max_connections_per_ip), 0, 1000000, "N",
     "open connections from one client address (0 = no limit)"},
    {"cors-origins", OPT_STR, F(cors_origins), 0, 0, "LIST",
     "origins whose pages may call the API (CORS): https://host[:port],... or * (\"\" = none)"},
    {"auth-token-file", OPT_STR, F(auth_token_file), 0, 0, "FILE",
     "require Authorization: Bearer with a token from FILE (one per line; SIGHUP re-reads it)"},
    {"metrics-public", OPT_ONOFF, F(metrics_public), 0, 0, "on|off",
     "serve /metrics without a token when --auth-token-file is set"},
    {"linger-bytes", OPT_I64, F(linger_bytes), 0, (int64_t)1 << 40, "BYTES",
     "after refusing an upload mid-body, read and discard this much more so the client sees "
     "the answer (0 = close at once)"},
    {"linger-seconds", OPT_INT, F(linger_seconds), 0, 3600, "S",
     "longest such discarding lasts before the connection is closed"},
    {"healthcheck", OPT_SWITCH, F(healthcheck), 0, 0, NULL,
     "probe http://127.0.0.1:PORT/healthz and exit 0 (healthy) or 1"},
    {"help", OPT_SWITCH, F(help), 0, 0, NULL, "print this help and exit"},
};

#define NOPTS ((int)(sizeof opts / sizeof opts[0]))

void srv_config_default(struct srv_config *c) {
    memset(c, 0, sizeof *c);
    c->port = 8080;
    snprintf(c->bind, sizeof c->bind, "0.0.0.0");
    snprintf(c->model, sizeof c->model, "models/resnet50.safetensors");
    c->http_threads = 0;
    c->workers = 0;
    c->engine_threads = 0;
    c->max_batch = 8;
    c->batch_timeout_us = 2000;
    c->queue_limit = 128;
    c->max_body_bytes = 16 << 20;
    c->max_pixels = 40000000;
    c->max_files = 16;
    c->decode = -1;
    c->max_decode_work = 16000000;
    c->max_request_decode_work = 32000000;
    c->max_decode_memory = (int64_t)192 << 20;
    c->request_timeout_ms = 10000;
    c->drain_seconds = 5;
    snprintf(c->static_dir, sizeof c->static_dir, "static");
    c->log_format = SRV_LOG_TEXT;
    c->access_log = 1;
    c->conn_timeout_s = 30;
    c->request_read_timeout_s = 60;
    c->max_inflight_bytes = (int64_t)256 << 20;
    c->max_connections = 1000;
    c->max_connections_per_ip = 0;
    /* Lingering close: nginx reads for up to 30 s (lingering_time); 64 MiB
     * lets a client that sends four times the default --max-body-bytes
     * still read its 413, and at 1 Gbit/s takes half a second. */
    c->linger_bytes = (int64_t)64 << 20;
    c->linger_seconds = 30;
}

/* IMGCLASSD_ + the flag name in upper case with '-' -> '_'. */
static void env_name(const struct opt *o, char *out, size_t n) {
    size_t k = (size_t)snprintf(out, n, "IMGCLASSD_");
    for (const char *p = o->name; *p && k + 1 < n; p++)
        out[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[k] = 0;
}

/* Strict decimal integer: optional '-', digits only, no spaces, no
 * overflow. Returns 0 on success. */
static int parse_i64(const char *s, int64_t *out) {
    const char *p = s;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (!*p) return -1;
    uint64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > (uint64_t)INT64_MAX) return -1;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

/* Stores val into the field of o. where names the source for messages:
 * "--max-batch" or "--max-batch (IMGCLASSD_MAX_BATCH)". */
static int set_opt(struct srv_config *c, const struct opt *o, const char *val, const char *where,
                   char *err, size_t errlen) {
    char *field = (char *)c + o->off;
    switch (o->type) {
    case OPT_INT:
    case OPT_I64: {
        int64_t v;
        if (parse_i64(val, &v) != 0 || v < o->min || v > o->max) {
            snprintf(err, errlen, "%s: expected an integer in %lld..%lld, got '%.64s'", where,
                     (long long)o->min, (long long)o->max, val);
            return -1;
        }
        if (o->type == OPT_INT)
            *(int *)field = (int)v;
        else
            *(int64_t *)field = v;
        return 0;
    }
    case OPT_ADDR: {
        unsigned char buf[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, val, buf) != 1 && inet_pton(AF_INET6, val, buf) != 1) {
            snprintf(err, errlen, "%s: expected an IPv4 or IPv6 address, got '%.64s'", where, val);
            return -1;
        }
    }
        /* fall through */
    case OPT_STR:
        if (strlen(val) >= o->size) {
            snprintf(err, errlen, "%s: value longer than %zu bytes", where, o->size - 1);
            return -1;
        }
        memcpy(field, val, strlen(val) + 1);
        return 0;
    case OPT_ONOFF:
        if (!strcmp(val, "on") || !strcmp(val, "true") || !strcmp(val, "1"))
            *(int *)field = 1;
        else if (!strcmp(val, "off") || !strcmp(val, "false") || !strcmp(val, "0"))
            *(int *)field = 0;
        else {
            snprintf(err, errlen, "%s: expected on or off, got '%.64s'", where, val);
            return -1;
        }
        return 0;
    case OPT_LOGFMT:
        if (!strcmp(val, "text"))
            *(enum srv_log_format *)field = SRV_LOG_TEXT;
        else if (!strcmp(val, "json"))
            *(enum srv_log_format *)field = SRV_LOG_JSON;
        else {
            snprintf(err, errlen, "%s: expected text or json, got '%.64s'", where, val);
            return -1;
        }
        return 0;
    case OPT_SWITCH:
        *(int *)field = 1;
        return 0;
    case OPT_MODEL:
        if (c->nmodels >= SRV_MAX_MODEL_FLAGS) {
            snprintf(err, errlen, "%s: at most %d models", where, SRV_MAX_MODEL_FLAGS);
            return -1;
        }
        if (strlen(val) >= sizeof c->models[0]) {
            snprintf(err, errlen, "%s: value longer than %zu bytes", where,
                     sizeof c->models[0] - 1);
            return -1;
        }
        snprintf(c->models[c->nmodels++], sizeof c->models[0], "%s", val);
        return 0;
    case OPT_PRECISION: {
        char perr[128];
        if (eng_precision_parse(val, (enum eng_precision *)field, perr, sizeof perr) != ENG_OK) {
            snprintf(err, errlen, "%s: expected fp32 or int8, got '%.64s'", where, val);
            return -1;
        }
        return 0;
    }
    case OPT_DECODE:
        if (strcmp(val, "model") && strcmp(val, "fast") && strcmp(val, "exact")) {
            snprintf(err, errlen, "%s: expected model, fast or exact, got '%.64s'", where, val);
            return -1;
        }
        *(int *)field = !strcmp(val, "model")  ? -1
                        : !strcmp(val, "fast") ? ENG_DECODE_FAST
                                               : ENG_DECODE_EXACT;
        return 0;
    case OPT_KERNEL:
        for (int k = 0; k < 3; k++)
            if (!strcmp(val, srv_kernel_name(k))) {
                *(enum eng_kernel *)field = (enum eng_kernel)k;
                return 0;
            }
        snprintf(err, errlen, "%s: expected auto, avx512 or openblas, got '%.64s'", where, val);
        return -1;
    }
    return -1;
}

static const struct opt *find_opt(const char *name, size_t len) {
    for (int i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && !strncmp(opts[i].name, name, len)) return &opts[i];
    return NULL;
}

int srv_config_parse(struct srv_config *c, int argc, char **argv, char *err, size_t errlen) {
    char ebuf[1];
    if (!err) {
        err = ebuf;
        errlen = sizeof ebuf;
    }
    int model_flags = 0;
    /* Environment first, so that flags override it. */
    for (int i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->type == OPT_SWITCH) continue;
        char env[64], where[128];
        env_name(o, env, sizeof env);
        const char *v = getenv(env);
        if (!v) continue;
        snprintf(where, sizeof where, "--%s (%s)", o->name, env);
        if (set_opt(c, o, v, where, err, errlen) != 0) return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h")) a = "--help";
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            snprintf(err, errlen, "unexpected argument '%.64s' (see --help)", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = find_opt(name, nlen);
        if (!o) {
            snprintf(err, errlen, "unknown flag --%.*s (see --help)", (int)(nlen > 64 ? 64 : nlen),
                     name);
            return -1;
        }
        char where[80];
        snprintf(where, sizeof where, "--%s", o->name);
        /* The first --model flag replaces IMGCLASSD_MODEL; later ones add. */
        if (o->type == OPT_MODEL && !model_flags++) c->nmodels = 0;
        const char *val;
        if (o->type == OPT_SWITCH) {
            if (eq) {
                snprintf(err, errlen, "%s takes no value", where);
                return -1;
            }
            val = "1";
        } else if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, errlen, "%s: missing value", where);
            return -1;
        }
        if (set_opt(c, o, val, where, err, errlen) != 0) return -1;
    }
    if (c->nmodels == 0) snprintf(c->models[c->nmodels++], sizeof c->models[0], "%s", c->model);
    snprintf(c->model, sizeof c->model, "%s", c->models[0]);
    for (int i = 0; i < c->nmodels && !c->help && !c->healthcheck; i++) {
        struct srv_model_spec ms;
        char merr[256];
        if (srv_model_spec_parse(c->models[i], c->precision, &ms, merr, sizeof merr) != 0) {
            snprintf(err, errlen, "--model %.200s: %s", c->models[i], merr);
            return -1;
        }
    }
    if (!c->model[0] && !c->help && !c->healthcheck) {
        snprintf(err, errlen, "--model: must not be empty");
        return -1;
    }
    /* Origins are checked here, so a typo stops the server at start with
     * the flag's name rather than silently allowing nothing. */
    struct srv_cors *cors = NULL;
    char cerr[256];
    if (srv_cors_new(c->cors_origins, c->auth_token_file[0] != 0, &cors, cerr, sizeof cerr) != 0) {
        snprintf(err, errlen, "--cors-origins: %s", cerr);
        return -1;
    }
    srv_cors_free(cors);
    /* Sizes left at 0 follow the CPUs. One worker per CPU: under load each
     * runs its own batch (issue 6: one stream per core beats two threads on
     * one); the engine's pool gives a lone forward pass every core. */
    int cpus = srv_cpu_count();
    if (c->http_threads == 0) c->http_threads = cpus;
    if (c->decode_threads == 0) c->decode_threads = cpus;
    if (c->workers == 0) c->workers = cpus;
    if (c->engine_threads == 0) c->engine_threads = cpus;
    return 0;
}

void srv_config_usage(FILE *f) {
    struct srv_config d;
    srv_config_default(&d);
    fprintf(f, "usage: imgclassd [--flag VALUE | --flag=VALUE]...\n"
               "\n"
               "ResNet image classification over HTTP: POST /classify, GET /healthz, /readyz,\n"
               "/metrics, /v1/models and static files. Every flag can also be set with the\n"
               "environment variable shown; flags win over the environment.\n\n");
    for (int i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        const char *field = (const char *)&d + o->off;
        char left[64], env[64], def[160] = "";
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        switch (o->type) {
        case OPT_INT:
            snprintf(def, sizeof def, "%d", *(const int *)field);
            break;
        case OPT_I64:
            snprintf(def, sizeof def, "%lld", (long long)*(const int64_t *)field);
            break;
        case OPT_STR:
        case OPT_ADDR:
        case OPT_MODEL:
            snprintf(def, sizeof def, "\"%s\"", field);
            break;
        case OPT_PRECISION:
            snprintf(def, sizeof def, "%s", eng_precision_name(d.precision));
            break;
        case OPT_ONOFF:
            snprintf(def, sizeof def, "%s", *(const int *)field ? "on" : "off");
            break;
        case OPT_LOGFMT:
            snprintf(def, sizeof def, "%s", d.log_format == SRV_LOG_JSON ? "json" : "text");
            break;
        case OPT_SWITCH:
            break;
        case OPT_KERNEL:
            snprintf(def, sizeof def, "%s", srv_kernel_name(d.kernel));
            break;
        case OPT_DECODE:
            snprintf(def, sizeof def, "%s",
                     d.decode < 0 ? "model" : d.decode == ENG_DECODE_EXACT ? "exact" : "fast");
            break;
        }
        fprintf(f, "  %-28s %s\n", left, o->help);
        if (o->type != OPT_SWITCH) {
            env_name(o, env, sizeof env);
            fprintf(f, "  %-28s [%s; default %s]\n", "", env, def);
        }
    }
    fprintf(f, "\nThis machine: %d CPUs available to the process.\n", srv_cpu_count());
}

int srv_model_spec_parse(const char *arg, enum eng_precision def, struct srv_model_spec *out,
                         char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->precision = def;
    /* NAME= only when what precedes the first '=' is a name: a path or a
     * random: spec never starts with one followed by '='. */
    const char *eq = strchr(arg, '=');
    size_t nlen = eq ? (size_t)(eq - arg) : 0;
    if (eq && nlen > 0 && strspn(arg, SRV_MODEL_NAME_CHARS) == nlen) {
        if (nlen >= sizeof out->name) {
            snprintf(err, errlen, "the name is longer than %zu characters", sizeof out->name - 1);
            return -1;
        }
        memcpy(out->name, arg, nlen);
        arg = eq + 1;
    }
    const char *at = strrchr(arg, '@');
    size_t slen = at ? (size_t)(at - arg) : strlen(arg);
    if (at) {
        char perr[128];
        if (eng_precision_parse(at + 1, &out->precision, perr, sizeof perr) != ENG_OK) {
            snprintf(err, errlen, "unknown precision '@%.32s' (fp32 or int8)", at + 1);
            return -1;
        }
    }
    if (slen == 0 || slen >= sizeof out->spec) {
        snprintf(err, errlen, slen ? "the weights spec is too long" : "no weights spec");
        return -1;
    }
    memcpy(out->spec, arg, slen);
    return 0;
}
