/* main.c: imgclassd's entry point: flags, startup (listen first so /healthz
 * answers, then load and warm up the model), signals and the graceful
 * drain. The only file of the server that may exit. */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Idle connections cost a descriptor each; allow as many as permitted. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int healthcheck(const struct srv_config *cfg) {
    /* A wildcard bind is probed on loopback, anything else where it listens. */
    const char *host = cfg->bind;
    if (!strcmp(host, "0.0.0.0")) host = "127.0.0.1";
    if (!strcmp(host, "::")) host = "::1";
    char err[256];
    if (srv_healthcheck(host, cfg->port, 3000, err, sizeof err) != 0) {
        fprintf(stderr, "imgclassd: healthcheck: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    /* Block the shutdown signals before any thread starts, so every thread
     * inherits the mask and only sigwait below ever sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct srv_config cfg;
    char err[1024];
    srv_config_default(&cfg);
    if (srv_config_parse(&cfg, argc, argv, err, sizeof err) != 0) {
        fprintf(stderr, "imgclassd: %s\n", err);
        return 2;
    }
    if (cfg.help) {
        srv_config_usage(stdout);
        return 0;
    }
    if (cfg.healthcheck) return healthcheck(&cfg);

    srv_log_init(cfg.log_format);
    srv_metrics_reset();
    raise_fd_limit();

    struct srv_http *http = NULL;
    if (srv_http_start(&cfg, &http, err, sizeof err) != 0) {
        srv_log("error", "%s", err);
        return 1;
    }
    int v6 = strchr(cfg.bind, ':') != NULL;
    printf("imgclassd listening on %s%s%s:%d\n", v6 ? "[" : "", cfg.bind, v6 ? "]" : "",
           srv_http_port(http));
    fflush(stdout);
    srv_log("info", "listening on %s port %d with %d HTTP threads", cfg.bind, srv_http_port(http),
            cfg.http_threads);

    /* Model, labels, workers. /readyz says "starting" until all are up. */
    int64_t t0 = srv_now_ns();
    struct eng_model *model = NULL;
    struct eng_labels *labels = NULL;
    struct srv_batcher *batcher = NULL;
    /* The compute pool must exist before any context is made. */
    cfg.engine_threads = eng_set_threads(cfg.engine_threads);
    if (eng_set_kernel(cfg.kernel) != ENG_OK) {
        srv_log("error", "--kernel %s: this CPU cannot run it (no AVX-512F)",
                srv_kernel_name(cfg.kernel));
        srv_http_free(http);
        eng_shutdown();
        return 1;
    }
    if (eng_model_load(cfg.model, &model, err, sizeof err) != ENG_OK) {
        srv_log("error", "cannot load the model: %s", err);
        if (!strncmp(cfg.model, "models/", 7))
            srv_log("error", "put ResNet weights (safetensors) there, or try the service with "
                             "random weights: --model random:resnet50");
        srv_http_free(http);
        eng_shutdown();
        return 1;
    }
    const struct eng_model_info *info = eng_model_get_info(model);
    if (cfg.labels[0] || info->num_classes == 1000) {
        if (eng_labels_load(cfg.labels[0] ? cfg.labels : NULL, info->num_classes, &labels, err,
                            sizeof err) != ENG_OK) {
            srv_log("error", "--labels: %s", err);
            eng_model_free(model);
            srv_http_free(http);
            eng_shutdown();
            return 1;
        }
    } else {
        srv_log("warn", "the model has %d classes and no --labels; labels will be class_N",
                info->num_classes);
    }
    struct srv_batcher_opts bo = {
        .workers = cfg.workers,
        .max_batch = cfg.max_batch,
        .batch_timeout_us = cfg.batch_timeout_us,
        .queue_limit = cfg.queue_limit,
    };
    if (srv_batcher_new(model, &bo, &batcher, err, sizeof err) != ENG_OK) {
        srv_log("error", "cannot start the workers: %s", err);
        eng_labels_free(labels);
        eng_model_free(model);
        srv_http_free(http);
        eng_shutdown();
        return 1;
    }
    srv_http_set_ready(http, model, labels, batcher, cfg.engine_threads);
    srv_log("info",
            "ready in %.2f s: %s (%lld parameters, %d classes, weights %s%s, %s kernels); %d "
            "workers, %d engine threads, max batch %d, batch timeout %d us, queue limit %d",
            (srv_now_ns() - t0) * 1e-9, info->arch, (long long)info->num_params, info->num_classes,
            info->source, info->random ? ", random" : "", info->kernel, cfg.workers, cfg.engine_threads,
            cfg.max_batch, cfg.batch_timeout_us, cfg.queue_limit);

    /* Run until SIGTERM or SIGINT. */
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }

    /* Drain: /readyz turns 503 at once so load balancers stop sending, but
     * requests are served for --drain-seconds (a second signal cuts this
     * short). Then stop admitting work, finish every admitted request, exit 0. */
    srv_http_begin_drain(http);
    srv_log("info", "%s: draining for %d s", sig == SIGINT ? "SIGINT" : "SIGTERM",
            cfg.drain_seconds);
    if (cfg.drain_seconds > 0) {
        struct timespec ts = {.tv_sec = cfg.drain_seconds};
        int s2;
        while ((s2 = sigtimedwait(&sigs, NULL, &ts)) < 0 && errno == EINTR) {
        }
        if (s2 > 0) srv_log("info", "second signal: ending the drain period early");
    }
    srv_http_stop_admitting(http);
    srv_log("info", "no longer admitting requests (new ones get 503 shutting_down); finishing "
                    "requests in progress");
    /* A request still arriving is cut by --request-read-timeout-s (or the
     * idle timeout); one in the queue ends by --request-timeout-ms. */
    int wait_ms = cfg.request_timeout_ms;
    if (cfg.conn_timeout_s * 1000 > wait_ms) wait_ms = cfg.conn_timeout_s * 1000;
    if (cfg.request_read_timeout_s * 1000 > wait_ms) wait_ms = cfg.request_read_timeout_s * 1000;
    wait_ms += 5000;
    int left = srv_http_wait_idle(http, wait_ms, true);
    if (left)
        srv_log("warn", "%d requests still in progress after %d ms; closing them", left, wait_ms);
    /* Every queued image still runs; the resumed connections get their
     * answers, and late requests their 503, before the daemon stops. The
     * order matters: libmicrohttpd aborts the process if the daemon stops
     * while a connection is still suspended, and srv_batcher_stop returns
     * only after every queued job has resumed its connection. */
    srv_batcher_stop(batcher);
    srv_http_wait_idle(http, 2000, false);
    srv_http_free(http);
    srv_batcher_free(batcher);
    eng_labels_free(labels);
    eng_model_free(model);
    eng_shutdown();
    srv_log("info", "stopped");
    return 0;
}
