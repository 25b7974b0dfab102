/* test_config.c: flags, IMGCLASSD_* environment variables, defaults and the
 * validation messages of server/config.c; plus the metrics exposition of
 * server/metrics.c, which has no other unit test. */
#include "test.h"

#include "server.h"

#include <math.h>

static char err[512];

/* Parses argv (NULL-terminated, without the program name) over defaults. */
static int parse(struct srv_config *c, const char *const *args) {
    const char *argv[32] = {"imgclassd"};
    int argc = 1;
    for (int i = 0; args && args[i]; i++)
        argv[argc++] = args[i];
    srv_config_default(c);
    err[0] = 0;
    return srv_config_parse(c, argc, (char **)argv, err, sizeof err);
}

static void test_defaults(void) {
    struct srv_config c;
    CHECK(parse(&c, NULL) == 0, "%s", err);
    int cpus = srv_cpu_count();
    CHECK(cpus >= 1);
    CHECK(c.port == 8080 && !strcmp(c.bind, "0.0.0.0"));
    CHECK(c.workers == cpus && c.http_threads == cpus, "sized from the CPUs");
    CHECK(c.engine_threads == cpus, "one engine thread per CPU by default");
    CHECK(c.max_batch == 8 && c.batch_timeout_us == 2000 && c.queue_limit == 128);
    CHECK(c.max_body_bytes == 16 << 20 && c.max_pixels == 40000000);
    CHECK(c.request_timeout_ms == 10000 && c.drain_seconds == 5);
    CHECK(!strcmp(c.static_dir, "static") && c.log_format == SRV_LOG_TEXT && c.access_log);
    CHECK(c.conn_timeout_s == 30 && c.max_connections == 1000 && c.max_connections_per_ip == 0);
    CHECK(!c.healthcheck && !c.help);
}

static void test_flags(void) {
    struct srv_config c;
    const char *a[] = {"--port",
                       "0",
                       "--max-batch=16",
                       "--log-format",
                       "json",
                       "--access-log",
                       "off",
                       "--bind",
                       "::1",
                       "--workers",
                       "1",
                       "--model",
                       "random:resnet18",
                       "--labels=",
                       NULL};
    CHECK(parse(&c, a) == 0, "%s", err);
    CHECK(c.port == 0 && c.max_batch == 16 && c.log_format == SRV_LOG_JSON && !c.access_log);
    CHECK(!strcmp(c.bind, "::1") && !strcmp(c.model, "random:resnet18") && !c.labels[0]);
    CHECK(c.workers == 1 && c.engine_threads == srv_cpu_count());
    const char *e[] = {"--engine-threads", "3", NULL};
    CHECK(parse(&c, e) == 0 && c.engine_threads == 3);
    const char *b[] = {"--max-batch", "4", "--max-batch", "5", NULL};
    CHECK(parse(&c, b) == 0 && c.max_batch == 5, "the last flag wins");
    const char *h[] = {"-h", NULL};
    CHECK(parse(&c, h) == 0 && c.help);
    const char *hc[] = {"--healthcheck", "--port", "9", NULL};
    CHECK(parse(&c, hc) == 0 && c.healthcheck && c.port == 9);
    const char *big[] = {"--max-body-bytes", "4294967296", NULL};
    CHECK(parse(&c, big) == 0 && c.max_body_bytes == (int64_t)1 << 32);
}

static void test_env(void) {
    struct srv_config c;
    setenv("IMGCLASSD_MAX_BATCH", "3", 1);
    setenv("IMGCLASSD_STATIC_DIR", "/srv/www", 1);
    setenv("IMGCLASSD_LOG_FORMAT", "json", 1);
    CHECK(parse(&c, NULL) == 0, "%s", err);
    CHECK(c.max_batch == 3 && !strcmp(c.static_dir, "/srv/www") && c.log_format == SRV_LOG_JSON);
    const char *a[] = {"--max-batch", "7", NULL};
    CHECK(parse(&c, a) == 0 && c.max_batch == 7, "flags override the environment");
    setenv("IMGCLASSD_MAX_BATCH", "seven", 1);
    CHECK(parse(&c, NULL) == -1);
    CHECK(strstr(err, "--max-batch") && strstr(err, "IMGCLASSD_MAX_BATCH"), "%s", err);
    t_clear_imgclassd_env();
}

static void test_errors_name_the_flag(void) {
    static const struct {
        const char *args[4];
        const char *needle;
    } cases[] = {
        {{"--max-batch", "0"}, "--max-batch"},
        {{"--max-batch", "1e3"}, "--max-batch"},
        {{"--max-batch", " 5"}, "--max-batch"},
        {{"--max-batch", "5 "}, "--max-batch"},
        {{"--max-batch", "+5"}, "--max-batch"},
        {{"--max-batch", "0x10"}, "--max-batch"},
        {{"--max-batch", ""}, "--max-batch"},
        {{"--queue-limit", "99999999999999999999"}, "--queue-limit"},
        {{"--port", "65536"}, "--port"},
        {{"--port", "-1"}, "--port"},
        {{"--batch-timeout-us", "-5"}, "--batch-timeout-us"},
        {{"--log-format", "xml"}, "--log-format"},
        {{"--access-log", "maybe"}, "--access-log"},
        {{"--decode", "slow"}, "--decode"},
        {{"--bind", "localhost"}, "--bind"},
        {{"--model", ""}, "--model"},
        {{"--workers"}, "--workers"},
        {{"--help=1"}, "--help"},
        {{"--nope"}, "--nope"},
        {{"stray"}, "stray"},
        {{"-x"}, "-x"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct srv_config c;
        int rc = parse(&c, cases[i].args);
        CHECK(rc == -1 && strstr(err, cases[i].needle), "case %zu (%s %s): rc %d, '%s'", i,
              cases[i].args[0], cases[i].args[1] ? cases[i].args[1] : "", rc, err);
    }
    struct srv_config c;
    char longpath[2000];
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = 0;
    const char *a[] = {"--static-dir", longpath, NULL};
    CHECK(parse(&c, a) == -1 && strstr(err, "--static-dir"), "%s", err);
    /* A NULL message buffer is allowed. */
    const char *bad[] = {"imgclassd", "--port", "x"};
    srv_config_default(&c);
    CHECK(srv_config_parse(&c, 3, (char **)bad, NULL, 0) == -1);
}

static void test_usage_lists_everything(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    srv_config_usage(f);
    fclose(f);
    static const char *names[] = {
        "--port",
        "--bind",
        "--model",
        "--labels",
        "--http-threads",
        "--workers",
        "--engine-threads",
        "--max-batch",
        "--batch-timeout-us",
        "--queue-limit",
        "--max-body-bytes",
        "--max-pixels",
        "--max-files",
        "--request-timeout-ms",
        "--drain-seconds",
        "--static-dir",
        "--log-format",
        "--access-log",
        "--conn-timeout-s",
        "--max-connections",
        "--max-connections-per-ip",
        "--healthcheck",
        "--help",
        "IMGCLASSD_PORT",
        "IMGCLASSD_MAX_CONNECTIONS_PER_IP",
        "default 8080",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strstr(buf, names[i])) {
            free(buf);
            CHECK(0, "usage lacks %s", names[i]);
        }
    free(buf);
}

/* ---- metrics exposition ---- */

static double value(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, series, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NAN;
}

static void test_metrics_render(void) {
    srv_metrics_reset();
    srv_metrics_request(SRV_ROUTE_CLASSIFY, 200, 0.02);
    srv_metrics_request(SRV_ROUTE_CLASSIFY, 200, 0.2);
    srv_metrics_request(SRV_ROUTE_CLASSIFY, 503, 0.001);
    srv_metrics_request(SRV_ROUTE_OTHER, 404, 0.001);
    srv_metrics_request(SRV_ROUTE_COUNT, 99999, 0.001); /* clamped, not a crash */
    srv_metrics_batch(1, 0.01);
    srv_metrics_batch(5, 0.03);
    srv_metrics_batch(8, 0.04);
    srv_metrics_images(14);
    srv_metrics_rejected(2);
    struct srv_metrics_gauges g = {.queue_depth = 3,
                                   .inflight_requests = 4,
                                   .ready = 1,
                                   .nmodels = 2,
                                   .models = {{"resnet50", "resnet50", "fp32",
                                               "models/we\"ird\\name\n.safetensors", 1000, 1},
                                              {"r50q", "resnet50", "int8", "models/r50", 1000, 2}},
                                   .workers = 2,
                                   .max_batch = 8};
    size_t len = 0;
    char *t = srv_metrics_render(&g, &len);
    CHECK(t && len == strlen(t));
    int ok = 1;
    char why[200] = "";
#define EXPECT(series, v)                                                                          \
    if (ok && value(t, series) != (v)) {                                                           \
        snprintf(why, sizeof why, "%s = %g, expected %g", series, value(t, series), (double)(v));  \
        ok = 0;                                                                                    \
    }
    EXPECT("imgclassd_requests_total{route=\"/classify\",code=\"200\"}", 2);
    EXPECT("imgclassd_requests_total{route=\"/classify\",code=\"503\"}", 1);
    EXPECT("imgclassd_requests_total{route=\"other\",code=\"404\"}", 1);
    EXPECT("imgclassd_batch_size_bucket{le=\"1\"}", 1);
    EXPECT("imgclassd_batch_size_bucket{le=\"4\"}", 1);
    EXPECT("imgclassd_batch_size_bucket{le=\"6\"}", 2);
    EXPECT("imgclassd_batch_size_bucket{le=\"8\"}", 3);
    EXPECT("imgclassd_batch_size_bucket{le=\"+Inf\"}", 3);
    EXPECT("imgclassd_batch_size_count", 3);
    EXPECT("imgclassd_batch_size_sum", 14);
    EXPECT("imgclassd_request_duration_seconds_count", 5);
    EXPECT("imgclassd_images_total", 14);
    EXPECT("imgclassd_queue_rejections_total", 2);
    EXPECT("imgclassd_queue_depth", 3);
    EXPECT("imgclassd_inflight_requests", 4);
    EXPECT("imgclassd_ready", 1);
    int escaped = strstr(t, "weights=\"models/we\\\"ird\\\\name\\n.safetensors\",model=\"resnet50\","
                            "precision=\"fp32\"} 1") != NULL;
    /* Several models: one info series each, and each its queue depth. */
    EXPECT("imgclassd_model_info{arch=\"resnet50\",classes=\"1000\",weights=\"models/r50\","
           "model=\"r50q\",precision=\"int8\"}",
           1);
    EXPECT("imgclassd_model_queue_depth{model=\"r50q\"}", 2);
    int has_proc = value(t, "process_resident_memory_bytes") > 0 &&
                   value(t, "process_cpu_seconds_total") >= 0 &&
                   value(t, "process_start_time_seconds") > 1e9 && value(t, "process_open_fds") > 0;
    free(t);
    CHECK(ok, "%s", why);
    CHECK(escaped, "label value not escaped");
    CHECK(has_proc, "process metrics missing");
    srv_metrics_reset();
}

/* Issue 13: CORS, tokens and lingering close; --cors-origins is validated
 * at parse time. */
static void test_access_flags(void) {
    struct srv_config c;
    CHECK(parse(&c, NULL) == 0, "%s", err);
    CHECK(!c.cors_origins[0] && !c.auth_token_file[0] && !c.metrics_public);
    CHECK(c.linger_bytes == (int64_t)64 << 20 && c.linger_seconds == 30);
    const char *a[] = {"--cors-origins",
                       "https://a.example,http://localhost:3000",
                       "--auth-token-file",
                       "/run/secrets/tokens",
                       "--metrics-public",
                       "on",
                       "--linger-bytes",
                       "0",
                       "--linger-seconds",
                       "5",
                       NULL};
    CHECK(parse(&c, a) == 0, "%s", err);
    CHECK(!strcmp(c.cors_origins, "https://a.example,http://localhost:3000"));
    CHECK(!strcmp(c.auth_token_file, "/run/secrets/tokens") && c.metrics_public);
    CHECK(c.linger_bytes == 0 && c.linger_seconds == 5);
    setenv("IMGCLASSD_CORS_ORIGINS", "*", 1);
    setenv("IMGCLASSD_AUTH_TOKEN_FILE", "/etc/imgclassd/tokens", 1);
    CHECK(parse(&c, NULL) == 0, "%s", err);
    CHECK(!strcmp(c.cors_origins, "*") && !strcmp(c.auth_token_file, "/etc/imgclassd/tokens"));
    unsetenv("IMGCLASSD_CORS_ORIGINS");
    unsetenv("IMGCLASSD_AUTH_TOKEN_FILE");
    const char *bad[] = {"--cors-origins", "https://a.example/", NULL};
    CHECK(parse(&c, bad) == -1);
    CHECK(strstr(err, "--cors-origins") && strstr(err, "no path"), "%s", err);
    setenv("IMGCLASSD_CORS_ORIGINS", "example.com", 1);
    CHECK(parse(&c, NULL) == -1 && strstr(err, "--cors-origins"), "%s", err);
    unsetenv("IMGCLASSD_CORS_ORIGINS");
    const char *neg[] = {"--linger-seconds", "-1", NULL};
    CHECK(parse(&c, neg) == -1 && strstr(err, "--linger-seconds"), "%s", err);
}

/* --decode: the model's own setting by default, or fast/exact for all. */
static void test_decode_flag(void) {
    struct srv_config c;
    const char *none[] = {NULL};
    CHECK(parse(&c, none) == 0 && c.decode == -1, "%s", err);
    const char *exact[] = {"--decode", "exact", NULL};
    CHECK(parse(&c, exact) == 0 && c.decode == ENG_DECODE_EXACT, "%s", err);
    const char *fast[] = {"--decode", "fast", NULL};
    CHECK(parse(&c, fast) == 0 && c.decode == ENG_DECODE_FAST, "%s", err);
}

static void test_model_specs(void) {
    struct srv_model_spec ms;
    char msg[256];
    CHECK(srv_model_spec_parse("models/r50.safetensors", ENG_PRECISION_FP32, &ms, msg,
                               sizeof msg) == 0 &&
          !ms.name[0] && !strcmp(ms.spec, "models/r50.safetensors") &&
          ms.precision == ENG_PRECISION_FP32);
    CHECK(srv_model_spec_parse("r50q=models/r50.safetensors@int8", ENG_PRECISION_FP32, &ms, msg,
                               sizeof msg) == 0 &&
          !strcmp(ms.name, "r50q") && !strcmp(ms.spec, "models/r50.safetensors") &&
          ms.precision == ENG_PRECISION_INT8);
    CHECK(srv_model_spec_parse("random:resnet18:3", ENG_PRECISION_INT8, &ms, msg, sizeof msg) ==
              0 &&
          !strcmp(ms.spec, "random:resnet18:3") && ms.precision == ENG_PRECISION_INT8);
    CHECK(srv_model_spec_parse("a=b@fp16", ENG_PRECISION_FP32, &ms, msg, sizeof msg) == -1);
    CHECK(srv_model_spec_parse("a=", ENG_PRECISION_FP32, &ms, msg, sizeof msg) == -1);
    struct srv_config c;
    srv_config_default(&c);
    char *argv[] = {"imgclassd", "--model", "random:resnet18", "--model", "q=random:resnet18@int8",
                    "--precision", "fp32", NULL};
    CHECK(srv_config_parse(&c, 7, argv, msg, sizeof msg) == 0, "%s", msg);
    CHECK(c.nmodels == 2 && !strcmp(c.model, "random:resnet18") &&
          !strcmp(c.models[1], "q=random:resnet18@int8"));
    char *bad[] = {"imgclassd", "--model", "x=y@int4", NULL};
    srv_config_default(&c);
    CHECK(srv_config_parse(&c, 3, bad, msg, sizeof msg) == -1 && strstr(msg, "--model"), "%s", msg);
}

int main(void) {
    t_suite = "config";
    t_clear_imgclassd_env();
    RUN(test_model_specs);
    RUN(test_defaults);
    RUN(test_flags);
    RUN(test_env);
    RUN(test_errors_name_the_flag);
    RUN(test_usage_lists_everything);
    RUN(test_metrics_render);
    RUN(test_access_flags);
    RUN(test_decode_flag);
    return t_done();
}
