/* metrics.c: the Prometheus registry (counters, histograms, gauges read at
 * scrape time, process metrics from /proc) and its text exposition,
 * format 0.0.4. */
#include "server.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Registry                                                                 */
/* ------------------------------------------------------------------------ */

#define MAX_CODE 600 /* HTTP status codes are 100..599 */
#define MAX_BUCKETS 16

struct hist {
    pthread_mutex_t mu;
    int nb;
    double le[MAX_BUCKETS];          /* upper bounds, ascending; +Inf implied */
    uint64_t count[MAX_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    double sum;
    uint64_t n;
};

static struct {
    _Atomic uint64_t requests[SRV_ROUTE_COUNT][MAX_CODE];
    _Atomic uint64_t images, rejected, expired, cancelled, read_timeouts, budget_rejected;
    struct hist request_duration, queue_wait, decode, inference, batch_size;
    double start_time; /* unix seconds */
} reg = {
    .request_duration = {PTHREAD_MUTEX_INITIALIZER,
                         12,
                         {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}},
    .queue_wait = {PTHREAD_MUTEX_INITIALIZER,
                   13,
                   {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}},
    .decode = {PTHREAD_MUTEX_INITIALIZER,
               11,
               {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}},
    .inference = {PTHREAD_MUTEX_INITIALIZER,
                  13,
                  {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}},
    .batch_size = {PTHREAD_MUTEX_INITIALIZER, 11, {1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128}},
};

static const char *route_names[SRV_ROUTE_COUNT] = {
    "/classify", "/healthz", "/readyz", "/metrics", "/v1/models", "static", "other",
    "/v2", "/v2/models/{m}/infer", "torchserve", "/predictions/{m}", "/v1/models/{m}:predict",
};

const char *srv_route_name(enum srv_route r) {
    return (unsigned)r < SRV_ROUTE_COUNT ? route_names[r] : "other";
}

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void hist_reset(struct hist *h) {
    pthread_mutex_lock(&h->mu);
    memset(h->count, 0, sizeof h->count);
    h->sum = 0;
    h->n = 0;
    pthread_mutex_unlock(&h->mu);
}

static void hist_observe(struct hist *h, double v) {
    int i = 0;
    while (i < h->nb && v > h->le[i])
        i++;
    pthread_mutex_lock(&h->mu);
    h->count[i]++;
    h->sum += v;
    h->n++;
    pthread_mutex_unlock(&h->mu);
}

void srv_metrics_reset(void) {
    for (int r = 0; r < SRV_ROUTE_COUNT; r++)
        for (int c = 0; c < MAX_CODE; c++)
            atomic_store(&reg.requests[r][c], 0);
    atomic_store(&reg.images, 0);
    atomic_store(&reg.rejected, 0);
    atomic_store(&reg.expired, 0);
    atomic_store(&reg.cancelled, 0);
    atomic_store(&reg.read_timeouts, 0);
    atomic_store(&reg.budget_rejected, 0);
    hist_reset(&reg.request_duration);
    hist_reset(&reg.queue_wait);
    hist_reset(&reg.decode);
    hist_reset(&reg.inference);
    hist_reset(&reg.batch_size);
    reg.start_time = unix_now();
}

void srv_metrics_request(enum srv_route route, int code, double duration_s) {
    if ((unsigned)route >= SRV_ROUTE_COUNT) route = SRV_ROUTE_OTHER;
    if (code < 0 || code >= MAX_CODE) code = 0;
    atomic_fetch_add(&reg.requests[route][code], 1);
    hist_observe(&reg.request_duration, duration_s);
}

void srv_metrics_queue_wait(double s) {
    hist_observe(&reg.queue_wait, s);
}

void srv_metrics_decode(double s) {
    hist_observe(&reg.decode, s);
}

void srv_metrics_batch(int size, double inference_s) {
    hist_observe(&reg.batch_size, size);
    hist_observe(&reg.inference, inference_s);
}

void srv_metrics_images(int n) {
    atomic_fetch_add(&reg.images, (uint64_t)n);
}

void srv_metrics_rejected(int n) {
    atomic_fetch_add(&reg.rejected, (uint64_t)n);
}

void srv_metrics_expired(int n) {
    atomic_fetch_add(&reg.expired, (uint64_t)n);
}

void srv_metrics_cancelled(int n) {
    atomic_fetch_add(&reg.cancelled, (uint64_t)n);
}

void srv_metrics_read_timeout(void) {
    atomic_fetch_add(&reg.read_timeouts, 1);
}

void srv_metrics_budget_rejected(void) {
    atomic_fetch_add(&reg.budget_rejected, 1);
}

/* ------------------------------------------------------------------------ */
/* Exposition                                                               */
/* ------------------------------------------------------------------------ */

struct out {
    char *buf;
    size_t n, cap;
    int oom;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct out *o, const char *fmt, ...) {
    if (o->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(o->buf + o->n, o->cap - o->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)k < o->cap - o->n) {
            o->n += (size_t)k;
            return;
        }
        size_t ncap = o->cap * 2 + (size_t)k;
        char *nb = realloc(o->buf, ncap);
        if (!nb) {
            o->oom = 1;
            return;
        }
        o->buf = nb;
        o->cap = ncap;
    }
}

/* A label value: backslash, double quote and newline escaped. */
static void out_label(struct out *o, const char *s) {
    for (; s && *s; s++) {
        if (*s == '\\')
            outf(o, "\\\\");
        else if (*s == '"')
            outf(o, "\\\"");
        else if (*s == '\n')
            outf(o, "\\n");
        else
            outf(o, "%c", *s);
    }
}

static void out_hist(struct out *o, const char *name, const char *help, struct hist *h) {
    uint64_t count[MAX_BUCKETS + 1], n;
    double sum;
    pthread_mutex_lock(&h->mu);
    memcpy(count, h->count, sizeof count);
    sum = h->sum;
    n = h->n;
    pthread_mutex_unlock(&h->mu);
    outf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->nb; i++) {
        cum += count[i];
        outf(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i], (unsigned long long)cum);
    }
    outf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)n);
    outf(o, "%s_sum %.9g\n%s_count %llu\n", name, sum, name, (unsigned long long)n);
}

static void out_counter(struct out *o, const char *name, const char *help, uint64_t v) {
    outf(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
         (unsigned long long)v);
}

static void out_gauge(struct out *o, const char *name, const char *help, double v) {
    outf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

/* Process metrics as the Prometheus client libraries define them. */
static void out_process(struct out *o) {
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    double cpu = 0, start = reg.start_time;
    long threads = 0;
    unsigned long long vsize = 0;
    long long rss_pages = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        buf[k] = 0;
        fclose(f);
        /* Fields after the command name, which may contain spaces and ')'. */
        char *p = strrchr(buf, ')');
        unsigned long utime = 0, stime = 0;
        unsigned long long starttime = 0;
        if (p && sscanf(p + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %ld "
                        "%*d %llu %llu %lld",
                        &utime, &stime, &threads, &starttime, &vsize, &rss_pages) == 6) {
            cpu = (double)(utime + stime) / (double)tick;
            /* starttime is in ticks since boot; btime in /proc/stat is boot. */
            FILE *s = fopen("/proc/stat", "r");
            if (s) {
                char line[256];
                while (fgets(line, sizeof line, s)) {
                    unsigned long long btime;
                    if (sscanf(line, "btime %llu", &btime) == 1) {
                        start = (double)btime + (double)starttime / (double)tick;
                        break;
                    }
                }
                fclose(s);
            }
        }
    }
    /* statm's resident field is the current RSS in pages. */
    f = fopen("/proc/self/statm", "r");
    if (f) {
        long long size, res;
        if (fscanf(f, "%lld %lld", &size, &res) == 2) rss_pages = res;
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') fds++;
        closedir(d);
        fds--; /* the directory stream's own descriptor */
    }
    struct rlimit rl;
    double max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : 0;

    outf(o,
         "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
         "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n",
         cpu);
    out_gauge(o, "process_resident_memory_bytes", "Resident memory size in bytes.",
              (double)rss_pages * (double)page);
    out_gauge(o, "process_virtual_memory_bytes", "Virtual memory size in bytes.", (double)vsize);
    out_gauge(o, "process_start_time_seconds",
              "Start time of the process since unix epoch in seconds.", start);
    out_gauge(o, "process_open_fds", "Number of open file descriptors.", fds);
    out_gauge(o, "process_max_fds", "Maximum number of open file descriptors.", max_fds);
    out_gauge(o, "process_threads", "Number of OS threads in the process.", (double)threads);
}

char *srv_metrics_render(const struct srv_metrics_gauges *g, size_t *len) {
    struct out o = {.cap = 16384};
    o.buf = malloc(o.cap);
    if (!o.buf) return NULL;
    o.buf[0] = 0;

    outf(&o, "# HELP imgclassd_requests_total HTTP requests by route and status code.\n"
             "# TYPE imgclassd_requests_total counter\n");
    for (int r = 0; r < SRV_ROUTE_COUNT; r++)
        for (int c = 0; c < MAX_CODE; c++) {
            uint64_t v = atomic_load(&reg.requests[r][c]);
            if (v)
                outf(&o, "imgclassd_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                     route_names[r], c, (unsigned long long)v);
        }
    out_hist(&o, "imgclassd_request_duration_seconds",
             "Time from a request's headers to its completion.", &reg.request_duration);
    out_hist(&o, "imgclassd_queue_wait_seconds",
             "Time an image waited in the queue before its forward pass.", &reg.queue_wait);
    out_hist(&o, "imgclassd_decode_duration_seconds",
             "JPEG decode and preprocessing time per image.", &reg.decode);
    out_hist(&o, "imgclassd_inference_duration_seconds", "Forward pass time per batch.",
             &reg.inference);
    out_hist(&o, "imgclassd_batch_size", "Images per forward pass.", &reg.batch_size);
    out_counter(&o, "imgclassd_images_total", "Images classified.", atomic_load(&reg.images));
    out_counter(&o, "imgclassd_queue_rejections_total",
                "Images refused with 503 because the queue was full.", atomic_load(&reg.rejected));
    out_counter(&o, "imgclassd_deadline_exceeded_total",
                "Images whose deadline passed before inference (504).", atomic_load(&reg.expired));
    out_counter(&o, "imgclassd_cancelled_total",
                "Queued images dropped because their client disconnected.",
                atomic_load(&reg.cancelled));
    out_counter(&o, "imgclassd_request_read_timeouts_total",
                "Connections cut because a request's headers and body took longer than "
                "--request-read-timeout-s.",
                atomic_load(&reg.read_timeouts));
    out_counter(&o, "imgclassd_body_budget_rejections_total",
                "Requests refused with 503 because buffered bodies reached --max-inflight-bytes.",
                atomic_load(&reg.budget_rejected));
    out_gauge(&o, "imgclassd_inflight_body_bytes",
              "Bytes reserved for request bodies being received (bounded by --max-inflight-bytes).",
              g->inflight_body_bytes);
    out_gauge(&o, "imgclassd_queue_depth", "Images waiting for a worker.", g->queue_depth);
    out_gauge(&o, "imgclassd_inflight_requests", "HTTP requests being processed.",
              g->inflight_requests);
    out_gauge(&o, "imgclassd_ready", "1 when /readyz answers 200.", g->ready);
    out_gauge(&o, "imgclassd_draining", "1 after SIGTERM, while draining.", g->draining);
    if (g->nmodels > 0) {
        /* One series per served model; arch, classes and weights keep
         * their place first, so queries written for one model still match. */
        outf(&o, "# HELP imgclassd_model_info The loaded models.\n"
                 "# TYPE imgclassd_model_info gauge\n");
        for (int i = 0; i < g->nmodels; i++) {
            outf(&o, "imgclassd_model_info{arch=\"");
            out_label(&o, g->models[i].arch);
            outf(&o, "\",classes=\"%d\",weights=\"", g->models[i].classes);
            out_label(&o, g->models[i].weights);
            outf(&o, "\",model=\"");
            out_label(&o, g->models[i].name);
            outf(&o, "\",precision=\"");
            out_label(&o, g->models[i].precision);
            outf(&o, "\"} 1\n");
        }
        outf(&o, "# HELP imgclassd_model_queue_depth Images waiting for one model's workers.\n"
                 "# TYPE imgclassd_model_queue_depth gauge\n");
        for (int i = 0; i < g->nmodels; i++) {
            outf(&o, "imgclassd_model_queue_depth{model=\"");
            out_label(&o, g->models[i].name);
            outf(&o, "\"} %d\n", g->models[i].queue_depth);
        }
        out_gauge(&o, "imgclassd_workers", "Inference worker threads.", g->workers);
        out_gauge(&o, "imgclassd_max_batch", "Largest batch per forward pass.", g->max_batch);
        out_gauge(&o, "imgclassd_http_threads", "HTTP threads (read bodies, write answers).",
                  g->http_threads);
        out_gauge(&o, "imgclassd_engine_threads", "Threads of the engine's compute pool.",
                  g->engine_threads);
        out_gauge(&o, "imgclassd_cpus",
                  "CPUs available to the process (affinity and cgroup quota).", g->cpus);
    }
    out_process(&o);
    if (o.oom) {
        free(o.buf);
        return NULL;
    }
    *len = o.n;
    return o.buf;
}
