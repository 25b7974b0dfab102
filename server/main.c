/* main.c: imgclassd's entry point: flags, startup (listen first so /healthz
 * answers, then load and warm up the model), signals and the graceful
 * drain. The only file of the server that may exit. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Idle connections cost a descriptor each; allow as many as permitted. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */
/* ------------------------------------------------------------------------ */

/* Libraries may start threads before main() runs (OpenBLAS starts its pool
 * from a constructor), and those threads do not inherit a mask set here, so
 * blocking signals and calling sigwait is not enough: a signal delivered to
 * such a thread would take its default action and kill the process. So
 * every signal the server cares about gets a handler, which runs in
 * whichever thread the kernel picks and only writes the signal's number to
 * a pipe; main reads the pipe. Nothing is ever fatal by default: SIGTERM
 * and SIGINT start the drain (a second one ends the drain period early;
 * later ones are logged), SIGHUP re-reads --auth-token-file, SIGUSR1 and
 * SIGUSR2 are logged and otherwise ignored. */
static int g_sig_pipe[2] = {-1, -1};

/* The server, for SIGHUP's token reload; set once before any thread that
 * handles signals starts, then only read. */
static struct srv_http *g_http;
static const struct srv_config *g_cfg;

static void on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(g_sig_pipe[1], &b, 1); /* async-signal-safe; full pipe: dropped */
    (void)w;
    errno = saved;
}

static const int g_handled[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};

static int signals_install(void) {
    if (pipe2(g_sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof g_handled / sizeof g_handled[0]; i++)
        if (sigaction(g_handled[i], &sa, NULL) != 0) return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static const char *sig_name(int sig) {
    switch (sig) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGHUP:
        return "SIGHUP";
    case SIGUSR1:
        return "SIGUSR1";
    case SIGUSR2:
        return "SIGUSR2";
    }
    return "signal";
}

/* Waits up to timeout_ms (< 0: forever) for a signal; returns it, or 0. */
static int signal_next(int timeout_ms) {
    int64_t end = srv_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        unsigned char b;
        if (read(g_sig_pipe[0], &b, 1) == 1) return b;
        int left = -1;
        if (timeout_ms >= 0) {
            int64_t ns = end - srv_now_ns();
            if (ns <= 0) return 0;
            left = (int)((ns + 999999) / 1000000);
        }
        struct pollfd pf = {.fd = g_sig_pipe[0], .events = POLLIN};
        poll(&pf, 1, left);
    }
}

/* SIGHUP: the token file again. The log says how many tokens are in
 * force, never a token. */
static void reload_tokens(void) {
    const struct srv_config *cfg = g_cfg;
    if (!cfg->auth_token_file[0]) {
        srv_log("info", "SIGHUP: no --auth-token-file; nothing to reload");
        return;
    }
    char err[512];
    int n = srv_http_reload_tokens(g_http, err, sizeof err);
    if (n < 0)
        srv_log("error", "SIGHUP: %s; keeping the tokens in force", err);
    else
        srv_log("info", "SIGHUP: reloaded %d access token%s from %s", n, n == 1 ? "" : "s",
                cfg->auth_token_file);
}

/* A signal that does not stop the server: SIGHUP reloads the tokens,
 * others are logged, nothing else. */
static int is_stop(int sig) {
    if (sig == SIGTERM || sig == SIGINT) return 1;
    if (sig == SIGHUP && g_http) {
        reload_tokens();
        return 0;
    }
    srv_log("info", "%s: ignored (it has no meaning for imgclassd)", sig_name(sig));
    return 0;
}

/* Logs every signal that arrived meanwhile; 1 when one asked to stop. */
static int signals_drain(void) {
    int sig, stop = 0;
    while ((sig = signal_next(0)) != 0)
        stop |= is_stop(sig);
    return stop;
}

/* While the model loads, main is busy; this thread logs each signal as it
 * arrives and remembers a stop request, so SIGTERM during start-up is
 * answered at once in the log and acted on as soon as loading returns.
 * main ends it by writing a 0 byte to the pipe. */
static _Atomic int g_stop_during_start;

static void *startup_signals_main(void *arg) {
    (void)arg;
    for (;;) {
        int sig = signal_next(-1);
        if (sig == 0) return NULL; /* main's wake-up: start-up is over */
        if (sig == SIGTERM || sig == SIGINT) {
            if (!atomic_exchange(&g_stop_during_start, 1))
                srv_log("info", "%s during start-up: stopping once the model has loaded",
                        sig_name(sig));
        } else {
            is_stop(sig);
        }
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

/* ------------------------------------------------------------------------ */
/* Models                                                                   */
/* ------------------------------------------------------------------------ */

/* One --model as served: the weights, their labels and the model's own
 * batcher (queue, batching, workers); every model's workers share the
 * engine's one compute pool. */
struct served {
    char name[64];
    struct eng_model *model;
    struct eng_labels *labels; /* NULL: class_N */
    struct srv_batcher *batcher;
};

static void models_free(struct served *m, int n) {
    for (int i = 0; i < n; i++) {
        srv_batcher_free(m[i].batcher);
        eng_labels_free(m[i].labels);
        eng_model_free(m[i].model);
    }
}

/* Loads every --model in order, each in its precision, with labels and a
 * warmed-up batcher; *n counts those loaded (free them with models_free
 * also on failure). Returns 0, or -1 after logging why. */
static int load_models(const struct srv_config *cfg, struct served *out, int *n) {
    char err[1024];
    for (int i = 0; i < cfg->nmodels; i++) {
        struct srv_model_spec ms;
        if (srv_model_spec_parse(cfg->models[i], cfg->precision, &ms, err, sizeof err) != 0) {
            srv_log("error", "--model %s: %s", cfg->models[i], err);
            return -1;
        }
        /* A CPU without the int8 kernels stops here with the engine's own
         * reason, before any weights are read. */
        if (eng_precision_supported(ms.precision, err, sizeof err) != ENG_OK) {
            srv_log("error", "--model %s: %s", cfg->models[i], err);
            return -1;
        }
        struct served *m = &out[*n];
        memset(m, 0, sizeof *m);
        if (eng_model_load_ex(ms.spec, ms.precision, &m->model, err, sizeof err) != ENG_OK) {
            srv_log("error", "cannot load the model: %s", err);
            if (!strncmp(ms.spec, "models/", 7))
                srv_log("error", "put ResNet weights (safetensors) there, or try the service with "
                                 "random weights: --model random:resnet50");
            return -1;
        }
        (*n)++;
        const struct eng_model_info *info = eng_model_get_info(m->model);
        snprintf(m->name, sizeof m->name, "%s", ms.name[0] ? ms.name : info->arch);
        for (int j = 0; j < *n - 1; j++)
            if (!strcmp(out[j].name, m->name)) {
                srv_log("error", "two models are named %s; name them: --model NAME=SPEC",
                        m->name);
                return -1;
            }
        if (cfg->labels[0] || info->num_classes == 1000) {
            if (eng_labels_load(cfg->labels[0] ? cfg->labels : NULL, info->num_classes,
                                &m->labels, err, sizeof err) != ENG_OK) {
                srv_log("error", "--labels: %s", err);
                return -1;
            }
        } else {
            srv_log("warn", "model %s has %d classes and no --labels; labels will be class_N",
                    m->name, info->num_classes);
        }
        struct srv_batcher_opts bo = {
            .workers = cfg->workers,
            .max_batch = cfg->max_batch,
            .batch_timeout_us = cfg->batch_timeout_us,
            .queue_limit = cfg->queue_limit,
        };
        if (srv_batcher_new(m->model, &bo, &m->batcher, err, sizeof err) != ENG_OK) {
            srv_log("error", "cannot start the workers of model %s: %s", m->name, err);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (signals_install() != 0) {
        fprintf(stderr, "imgclassd: cannot install signal handlers: %s\n", strerror(errno));
        return 1;
    }

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
    g_cfg = &cfg;
    g_http = http;
    if (cfg.auth_token_file[0])
        srv_log("info", "access tokens: %d loaded from %s; %s need one (SIGHUP re-reads the file)",
                srv_http_token_count(http), cfg.auth_token_file,
                cfg.metrics_public ? "inference and model routes"
                                   : "inference, model routes and /metrics");
    if (cfg.cors_origins[0])
        srv_log("info", "cross-origin requests allowed from %s", cfg.cors_origins);

    /* Model, labels, workers. /readyz says "starting" until all are up. */
    pthread_t watcher;
    int watching = pthread_create(&watcher, NULL, startup_signals_main, NULL) == 0;
    int64_t t0 = srv_now_ns();
    struct served models[SRV_MAX_MODEL_FLAGS];
    int nmodels = 0;
    /* The compute pool must exist before any context is made. */
    cfg.engine_threads = eng_set_threads(cfg.engine_threads);
    if (eng_set_kernel(cfg.kernel) != ENG_OK) {
        srv_log("error", "--kernel %s: this CPU cannot run it (no AVX-512F)",
                srv_kernel_name(cfg.kernel));
        srv_http_free(http);
        eng_shutdown();
        return 1;
    }
    if (load_models(&cfg, models, &nmodels) != 0) {
        models_free(models, nmodels);
        srv_http_free(http);
        eng_shutdown();
        return 1;
    }
    if (watching) {
        unsigned char zero = 0;
        while (write(g_sig_pipe[1], &zero, 1) != 1) {
        }
        pthread_join(watcher, NULL);
    }
    int stop_now = atomic_load(&g_stop_during_start) || signals_drain();
    if (!stop_now) {
        for (int i = 0; i < nmodels; i++) {
            const struct eng_model_info *info = eng_model_get_info(models[i].model);
            /* Names were checked for clashes in load_models. */
            srv_http_add_model(http, models[i].name, models[i].model, models[i].labels,
                               models[i].batcher, err, sizeof err);
            srv_log("info",
                    "model %s: %s %s (%lld parameters, %d classes, weights %s%s, %s kernels)",
                    models[i].name, info->arch, info->precision, (long long)info->num_params,
                    info->num_classes, info->source, info->random ? ", random" : "",
                    info->kernel);
        }
        srv_http_set_ready(http, cfg.engine_threads);
        srv_log("info",
                "ready in %.2f s: %d model%s; %d workers each, %d engine threads, max batch %d, "
                "batch timeout %d us, queue limit %d",
                (srv_now_ns() - t0) * 1e-9, nmodels, nmodels == 1 ? "" : "s", cfg.workers,
                cfg.engine_threads, cfg.max_batch, cfg.batch_timeout_us, cfg.queue_limit);
    }

    /* Run until SIGTERM or SIGINT. */
    int sig = SIGTERM;
    if (!stop_now)
        while (!is_stop(sig = signal_next(-1))) {
        }

    /* Drain: /readyz turns 503 at once so load balancers stop sending, but
     * requests are served for --drain-seconds (a second signal cuts this
     * short). Then stop admitting work, finish every admitted request, exit
     * 0. A signal that arrived during start-up skips the drain: the server
     * never said it was ready. */
    srv_http_begin_drain(http);
    if (stop_now) {
        srv_log("info", "stopping: a signal arrived during start-up");
    } else {
        srv_log("info", "%s: draining for %d s", sig_name(sig), cfg.drain_seconds);
        int64_t end = srv_now_ns() + (int64_t)cfg.drain_seconds * 1000000000;
        int64_t left_ns;
        while ((left_ns = end - srv_now_ns()) > 0) {
            int s2 = signal_next((int)((left_ns + 999999) / 1000000));
            if (s2 && is_stop(s2)) {
                srv_log("info", "second %s: ending the drain period early", sig_name(s2));
                break;
            }
        }
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
    for (int i = 0; i < nmodels; i++)
        srv_batcher_stop(models[i].batcher);
    srv_http_wait_idle(http, 2000, false);
    signals_drain(); /* logs any later signal; none of them is fatal */
    srv_http_free(http);
    models_free(models, nmodels);
    eng_shutdown();
    srv_log("info", "stopped");
    return 0;
}
