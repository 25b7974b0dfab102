/* server_harness.h: what the integration tests that drive the real
 * imgclassd binary share (test_server.c, test_hostile.c, test_soak.c): the server as a
 * child process on an ephemeral port, libcurl requests, JSON error checks,
 * metric scrapes, synthetic JPEGs and a scratch directory with a static
 * tree. Include once, after test.h. */
#ifndef SERVER_HARNESS_H
#define SERVER_HARNESS_H

#include "engine.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <jpeglib.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_root[PATH_MAX];        /* repository root */
static char g_build[PATH_MAX];       /* the build directory holding imgclassd */
static char g_server[PATH_MAX + 64]; /* build/imgclassd */
static char g_cli[PATH_MAX + 64];    /* build/imgclass */
static char g_tmp[256];              /* scratch directory, removed at exit */
static char g_static[512];           /* static dir for the servers */
static const char *g_case = "";

#define MAX_CHILDREN 32
static volatile pid_t g_children[MAX_CHILDREN];

/* A blocking TCP connection to 127.0.0.1:port, or -1. */
__attribute__((unused)) static int loopback_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

__attribute__((unused)) static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((unused)) static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

__attribute__((unused)) static void on_alarm(int sig) {
    (void)sig;
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (g_children[i] > 0) kill(g_children[i], SIGKILL);
    char msg[256];
    int n = snprintf(msg, sizeof msg, "FAIL %s.%s: timed out (alarm)\n", t_suite, g_case);
    if (write(STDOUT_FILENO, msg, (size_t)n) < 0) {
    }
    _exit(1);
}

__attribute__((unused)) static void track_child(pid_t pid, int add) {
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (add && g_children[i] == 0) {
            g_children[i] = pid;
            return;
        }
        if (!add && g_children[i] == pid) {
            g_children[i] = 0;
            return;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The server as a child process                                            */
/* ------------------------------------------------------------------------ */

struct server {
    pid_t pid;
    int port;
    char base[64]; /* http://127.0.0.1:PORT */
    char log[512];
    int exit_status; /* after server_stop/server_wait: the exit code, or -1 */
};

static int server_count;

/* Starts build/imgclassd with test defaults followed by args (later flags
 * win), stderr into a log file; reads the port from the stdout line.
 * envs: NULL or "NAME=VALUE" strings for the child. When wait_ready, waits
 * for /readyz 200. Returns 0, or -1 with why. */
__attribute__((unused)) static int http_status(const char *url, char *body, size_t bodylen);

__attribute__((unused)) static int server_spawn(struct server *s, const char *const *args,
                                                const char *const *envs, int wait_ready, char *why,
                                                size_t whylen) {
    memset(s, 0, sizeof *s);
    s->exit_status = -1;
    snprintf(s->log, sizeof s->log, "%s/server-%d.log", g_tmp, server_count++);
    const char *argv[64];
    int n = 0;
    argv[n++] = g_server;
    /* A generous deadline: slow builds (sanitizers) must not turn into
     * 504s; the deadline case sets its own. */
    const char *defaults[] = {
        "--port",          "0", "--bind",  "127.0.0.1",       "--static-dir",         g_static,
        "--drain-seconds", "0", "--model", "random:resnet18", "--request-timeout-ms", "300000"};
    /* --model is repeatable (several models), so a case's own replaces the
     * default rather than adding a second model. */
    int own_model = 0;
    for (int i = 0; args && args[i]; i++)
        own_model |= !strcmp(args[i], "--model");
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        if (own_model && !strcmp(defaults[i], "--model")) {
            i++;
            continue;
        }
        argv[n++] = defaults[i];
    }
    for (int i = 0; args && args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    int pfd[2];
    if (pipe(pfd) != 0) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* Only the variables a case asks for: a developer's IMGCLASSD_*
         * settings must not change what the tests see. */
        t_clear_imgclassd_env();
        for (int i = 0; envs && envs[i]; i++)
            putenv((char *)envs[i]);
        int lf = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(pfd[1], STDOUT_FILENO);
        if (lf >= 0) dup2(lf, STDERR_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execv(g_server, (char *const *)argv);
        _exit(127);
    }
    track_child(pid, 1);
    s->pid = pid;
    close(pfd[1]);
    /* The first stdout line names the port. */
    char line[512];
    size_t got = 0;
    double end = now_s() + 60;
    while (now_s() < end && got < sizeof line - 1) {
        struct pollfd pf = {.fd = pfd[0], .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        ssize_t k = read(pfd[0], line + got, sizeof line - 1 - got);
        if (k <= 0) break;
        got += (size_t)k;
        line[got] = 0;
        if (strchr(line, '\n')) break;
    }
    line[got] = 0;
    close(pfd[0]);
    char *colon = strrchr(line, ':');
    if (strncmp(line, "imgclassd listening on ", 23) != 0 || !colon ||
        (s->port = atoi(colon + 1)) <= 0) {
        snprintf(why, whylen, "no port line on stdout (got '%.100s'); see %.200s", line, s->log);
        return -1;
    }
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
    if (!wait_ready) return 0;
    end = now_s() + 180;
    char url[128];
    snprintf(url, sizeof url, "%s/readyz", s->base);
    while (now_s() < end) {
        if (http_status(url, NULL, 0) == 200) return 0;
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            track_child(s->pid, 0);
            s->pid = 0;
            snprintf(why, whylen, "server exited during startup; see %.200s", s->log);
            return -1;
        }
        sleep_ms(20);
    }
    snprintf(why, whylen, "server not ready after 180 s; see %.200s", s->log);
    return -1;
}

/* Waits up to timeout_s for the server to exit; returns its exit code, or
 * -1 (killed, signalled or timed out). */
__attribute__((unused)) static int server_wait(struct server *s, double timeout_s) {
    if (s->pid <= 0) return s->exit_status;
    double end = now_s() + timeout_s;
    int st;
    for (;;) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) break;
        if (now_s() > end) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            track_child(s->pid, 0);
            s->pid = 0;
            s->exit_status = -1;
            return -1;
        }
        sleep_ms(10);
    }
    track_child(s->pid, 0);
    s->pid = 0;
    s->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return s->exit_status;
}

/* SIGTERM and wait: the exit code (0 expected; LeakSanitizer makes it
 * non-zero under `make asan` when the server leaks). */
__attribute__((unused)) static int server_stop(struct server *s) {
    if (s->pid <= 0) return s->exit_status;
    kill(s->pid, SIGTERM);
    return server_wait(s, 90);
}

/* The last lines of the server's log, for failure messages. */
__attribute__((unused)) static const char *log_tail(const struct server *s) {
    static char buf[600];
    size_t len = 0;
    unsigned char *t = t_read_file(s->log, &len);
    buf[0] = 0;
    if (t) {
        size_t from = len > sizeof buf - 1 ? len - (sizeof buf - 1) : 0;
        snprintf(buf, sizeof buf, "%s", (char *)t + from);
        free(t);
    }
    return buf;
}

/* ------------------------------------------------------------------------ */
/* HTTP with libcurl                                                        */
/* ------------------------------------------------------------------------ */

struct resp {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char headers[16384];
    size_t hlen;
    double seconds;
};

__attribute__((unused)) static size_t on_body(char *p, size_t sz, size_t nm, void *ud) {
    struct resp *r = ud;
    size_t n = sz * nm;
    char *nb = realloc(r->body, r->len + n + 1);
    if (!nb) return 0;
    memcpy(nb + r->len, p, n);
    r->body = nb;
    r->len += n;
    r->body[r->len] = 0;
    return n;
}

__attribute__((unused)) static size_t on_header(char *p, size_t sz, size_t nm, void *ud) {
    struct resp *r = ud;
    size_t n = sz * nm;
    /* Keep only the last response's headers (skip "100 Continue"). */
    if (n >= 5 && !strncmp(p, "HTTP/", 5)) r->hlen = 0;
    if (r->hlen + n < sizeof r->headers) {
        memcpy(r->headers + r->hlen, p, n);
        r->hlen += n;
        r->headers[r->hlen] = 0;
    }
    return n;
}

/* Value of response header name (case-insensitive), copied into buf. */
__attribute__((unused)) static const char *resp_header(const struct resp *r, const char *name,
                                                       char *buf, size_t n) {
    size_t nl = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol) break;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(buf, n, "%.*s", (int)(eol - v), v);
            return buf;
        }
        p = eol + 2;
    }
    return NULL;
}

__attribute__((unused)) static void resp_free(struct resp *r) {
    free(r->body);
    r->body = NULL;
}

struct chunk_src {
    const unsigned char *data;
    size_t len, off;
};

__attribute__((unused)) static size_t on_read(char *buf, size_t sz, size_t nm, void *ud) {
    struct chunk_src *c = ud;
    size_t n = sz * nm, left = c->len - c->off;
    if (n > left) n = left;
    if (n > 4096) n = 4096;
    memcpy(buf, c->data + c->off, n);
    c->off += n;
    return n;
}

struct req_opts {
    const char *method; /* NULL: GET, or POST when a body is given */
    const void *body;   /* raw body */
    size_t len;
    int chunked;             /* send the body chunked, no Content-Length */
    const char *const *hdrs; /* NULL-terminated "Name: value" */
    curl_mime *mime;         /* multipart body (overrides body) */
    int path_as_is;
    long timeout_s; /* default 120 */
    CURL *easy;     /* reuse this handle (keep-alive) */
};

__attribute__((unused)) static void do_request(struct resp *out, const char *url,
                                               const struct req_opts *o) {
    memset(out, 0, sizeof *out);
    CURL *c = o && o->easy ? o->easy : curl_easy_init();
    if (o && o->easy) curl_easy_reset(c);
    struct curl_slist *hl = NULL;
    struct chunk_src src = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, o && o->timeout_s ? o->timeout_s : 120L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*"); /* the server is on loopback, whatever http_proxy says */
    if (o && o->path_as_is) curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    for (int i = 0; o && o->hdrs && o->hdrs[i]; i++)
        hl = curl_slist_append(hl, o->hdrs[i]);
    if (o && o->mime) {
        curl_easy_setopt(c, CURLOPT_MIMEPOST, o->mime);
    } else if (o && o->body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        if (o->chunked) {
            src.data = o->body;
            src.len = o->len;
            hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
            curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(c, CURLOPT_READDATA, &src);
        } else {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, o->body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->len);
        }
    }
    if (o && o->method) {
        if (!strcmp(o->method, "HEAD"))
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        else
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, o->method);
    }
    if (hl) curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    double t0 = now_s();
    out->rc = curl_easy_perform(c);
    out->seconds = now_s() - t0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(hl);
    if (!(o && o->easy)) curl_easy_cleanup(c);
}

__attribute__((unused)) static void get(struct resp *out, const struct server *s,
                                        const char *path) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    do_request(out, url, NULL);
}

/* POST a raw body with a content type (NULL: none). */
__attribute__((unused)) static void post(struct resp *out, const struct server *s, const char *path,
                                         const void *body, size_t len, const char *ctype) {
    char url[512], h[160];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    snprintf(h, sizeof h, "Content-Type: %s", ctype ? ctype : "");
    const char *hdrs[] = {ctype ? h : "Content-Type:", NULL};
    struct req_opts o = {.body = body, .len = len, .hdrs = hdrs};
    do_request(out, url, &o);
}

__attribute__((unused)) static int http_status(const char *url, char *body, size_t bodylen) {
    struct resp r;
    struct req_opts o = {.timeout_s = 10};
    do_request(&r, url, &o);
    if (body && bodylen) snprintf(body, bodylen, "%s", r.body ? r.body : "");
    resp_free(&r);
    return r.rc == CURLE_OK ? (int)r.status : -1;
}

/* Parses a JSON body; NULL when it is not JSON. */
__attribute__((unused)) static json_t *resp_json(const struct resp *r) {
    if (!r->body) return NULL;
    json_error_t e;
    return json_loadb(r->body, r->len, 0, &e);
}

/* Checks an error response: status, JSON {"error":{"code","message"}} with
 * the code (when given), nosniff and a request id. */
__attribute__((unused)) static const char *check_error(const struct resp *r, long status,
                                                       const char *code) {
    static _Thread_local char why[512];
    char hb[128];
    if (r->rc != CURLE_OK) {
        snprintf(why, sizeof why, "curl: %s", curl_easy_strerror(r->rc));
        return why;
    }
    if (r->status != status) {
        snprintf(why, sizeof why, "status %ld, expected %ld; body %.200s", r->status, status,
                 r->body ? r->body : "");
        return why;
    }
    if (!resp_header(r, "X-Content-Type-Options", hb, sizeof hb) || strcmp(hb, "nosniff"))
        return "no X-Content-Type-Options: nosniff";
    if (!resp_header(r, "X-Request-Id", hb, sizeof hb) || !hb[0]) return "no X-Request-Id";
    if (!resp_header(r, "Content-Type", hb, sizeof hb) || strncmp(hb, "application/json", 16) != 0)
        return "error body is not application/json";
    json_t *j = resp_json(r);
    json_t *e = json_object_get(j, "error");
    const char *c = json_string_value(json_object_get(e, "code"));
    const char *m = json_string_value(json_object_get(e, "message"));
    const char *res = NULL;
    if (!j || !e || !c || !m || !m[0]) {
        snprintf(why, sizeof why, "not a JSON error: %.200s", r->body ? r->body : "");
        res = why;
    } else if (code && strcmp(c, code) != 0) {
        snprintf(why, sizeof why, "error code %s, expected %s (%s)", c, code, m);
        res = why;
    }
    json_decref(j);
    return res;
}

/* 1 when the server turned a request away because it is shutting down:
 * the connection was refused (the daemon has stopped), or a well-formed
 * 503 "shutting_down" (it no longer admits work). */
__attribute__((unused)) static int turned_away(const struct resp *r) {
    return r->rc == CURLE_COULDNT_CONNECT || check_error(r, 503, "shutting_down") == NULL;
}

/* A metric's value from an exposition ("name" or "name{labels}" exactly). */
__attribute__((unused)) static double metric_value(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, series, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NAN;
}

__attribute__((unused)) static double scrape(const struct server *s, const char *series) {
    struct resp r;
    get(&r, s, "/metrics");
    double v = r.status == 200 && r.body ? metric_value(r.body, series) : NAN;
    resp_free(&r);
    return v;
}

/* Scrapes series until it reads at least at_least or timeout_s has passed;
 * returns the last value read (NAN when /metrics never answered). */
__attribute__((unused)) static double scrape_until(const struct server *s, const char *series,
                                                   double at_least, double timeout_s) {
    double end = now_s() + timeout_s, v = scrape(s, series);
    while (!(v >= at_least) && now_s() < end) {
        sleep_ms(10);
        v = scrape(s, series);
    }
    return v;
}

/* A field of /proc/PID/status in KiB ("VmRSS", "VmHWM"), or -1. */
__attribute__((unused)) static long proc_status_kb(pid_t pid, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t fl = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl) && line[fl] == ':') v = atol(line + fl + 1);
    if (f) fclose(f);
    return v;
}

/* A synthetic photo-like JPEG: smooth gradients plus a few blobs, seeded. */
__attribute__((unused)) static unsigned char *gen_jpeg(int w, int h, unsigned seed, int gray,
                                                       size_t *len) {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    unsigned char *out = NULL;
    unsigned long outlen = 0;
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &out, &outlen);
    cinfo.image_width = (JDIMENSION)w;
    cinfo.image_height = (JDIMENSION)h;
    cinfo.input_components = gray ? 1 : 3;
    cinfo.in_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, 90, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    int comps = gray ? 1 : 3;
    unsigned char *row = malloc((size_t)w * comps);
    double cx = (seed * 37 % 100) / 100.0 * w, cy = (seed * 61 % 100) / 100.0 * h;
    while (cinfo.next_scanline < cinfo.image_height) {
        int y = (int)cinfo.next_scanline;
        for (int x = 0; x < w; x++) {
            double d = sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy));
            double blob = 120 * exp(-d * d / (2.0 * (w / 5.0) * (w / 5.0)));
            for (int c = 0; c < comps; c++) {
                double v = 40 + 150.0 * x / w * ((seed + c) % 3) / 2.0 + 100.0 * y / h * (c == 1) +
                           blob * (c != 2 ? 1 : -0.5) + 20 * sin((x + seed) * 0.1 * (c + 1));
                row[x * comps + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
        JSAMPROW rp = row;
        jpeg_write_scanlines(&cinfo, &rp, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    free(row);
    *len = outlen;
    return out;
}

/* Runs imgclassd with args (and envs) to completion; returns its exit code
 * with its stderr+stdout in out. */
__attribute__((unused)) static int run_binary(const char *const *args, const char *const *envs,
                                              char *out, size_t n) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/run-%d.txt", g_tmp, server_count++);
    pid_t pid = fork();
    if (pid == 0) {
        t_clear_imgclassd_env();
        for (int i = 0; envs && envs[i]; i++)
            putenv((char *)envs[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        const char *argv[32];
        int k = 0;
        argv[k++] = g_server;
        for (int i = 0; args[i] && k < 31; i++)
            argv[k++] = args[i];
        argv[k] = NULL;
        execv(g_server, (char *const *)argv);
        _exit(127);
    }
    track_child(pid, 1);
    int st;
    struct server tmp = {.pid = pid};
    int rc = server_wait(&tmp, 120);
    (void)st;
    size_t len = 0;
    unsigned char *t = t_read_file(path, &len);
    snprintf(out, n, "%s", t ? (char *)t : "");
    free(t);
    return rc;
}

__attribute__((unused)) static int rm_entry(const char *path, const struct stat *sb, int flag,
                                            struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

__attribute__((unused)) static void cleanup(void) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (g_children[i] > 0) {
            kill(g_children[i], SIGKILL);
            waitpid(g_children[i], NULL, 0);
        }
    if (g_tmp[0] && !getenv("IMGCLASSD_TEST_KEEP")) nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The static tree: files of several types, a dotfile, a symlink inside,
 * and symlinks that lead out (to a file and to a directory). */
__attribute__((unused)) static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

__attribute__((unused)) static int setup_static(void) {
    char p[PATH_MAX + 64];
    snprintf(g_static, sizeof g_static, "%s/static", g_tmp);
    snprintf(p, sizeof p, "%s/sub", g_static);
    if (mkdir(g_static, 0755) || mkdir(p, 0755)) return -1;
    struct {
        const char *name, *text;
    } files[] = {
        {"index.html", "<html>imgclassd test index</html>\n"},
        {"app.css", "body { color: black; }\n"},
        {"app.js", "console.log('hi');\n"},
        {"sub/data.json", "{\"ok\": true}\n"},
        {"sub/index.html", "<p>sub index</p>\n"},
        {"plain.txt", "plain text\n"},
        {".secret", "TOPSECRET\n"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_static, files[i].name);
        if (write_file(p, files[i].text)) return -1;
    }
    char outside[PATH_MAX + 64];
    snprintf(outside, sizeof outside, "%s/outside-secret.txt", g_tmp);
    if (write_file(outside, "TOPSECRET outside\n")) return -1;
    snprintf(p, sizeof p, "%s/out-passwd", g_static);
    if (symlink(outside, p)) return -1;
    snprintf(p, sizeof p, "%s/out-dir", g_static);
    if (symlink("/etc", p)) return -1;
    snprintf(p, sizeof p, "%s/inside", g_static);
    if (symlink("plain.txt", p)) return -1;
    return 0;
}

__attribute__((unused)) static int find_paths(const char *argv0) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        if (!realpath(argv0, exe)) return -1;
    } else {
        exe[n] = 0;
    }
    /* exe is <build>/tests/test_server; the server is <build>/imgclassd. */
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0;
    slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0;
    snprintf(g_build, sizeof g_build, "%s", exe);
    snprintf(g_server, sizeof g_server, "%s/imgclassd", g_build);
    snprintf(g_cli, sizeof g_cli, "%s/imgclass", g_build);
    /* The repository root is the nearest parent holding tests/test.h. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", g_build);
    for (int up = 0; up < 6; up++) {
        char probe[PATH_MAX + 32];
        snprintf(probe, sizeof probe, "%s/tests/test.h", dir);
        if (access(probe, R_OK) == 0) {
            snprintf(g_root, sizeof g_root, "%s", dir);
            return 0;
        }
        char *s = strrchr(dir, '/');
        if (!s || s == dir) break;
        *s = 0;
    }
    if (!getcwd(g_root, sizeof g_root)) return -1;
    return 0;
}

/* Runs a case with an alarm guard of secs seconds. */
#define RUN_T(fn, secs)                                                                            \
    do {                                                                                           \
        g_case = #fn + 5;                                                                          \
        alarm(secs);                                                                               \
        RUN(fn);                                                                                   \
        alarm(0);                                                                                  \
    } while (0)

/* The start of every server suite's main(): signals, line-buffered output,
 * the binaries' paths, a scratch directory with a static tree (removed at
 * exit, with any child still running), libcurl. t_suite must be set.
 * Returns 0, or -1 after printing a FAIL <suite>.setup line. */
__attribute__((unused)) static int harness_init(const char *argv0) {
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (find_paths(argv0) != 0 || access(g_server, X_OK) != 0) {
        printf("FAIL %s.setup: %s is not built\n", t_suite, g_server[0] ? g_server : "imgclassd");
        return -1;
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/imgclassd-%s-XXXXXX", t_suite);
    if (!mkdtemp(g_tmp) || setup_static() != 0) {
        printf("FAIL %s.setup: cannot create a scratch directory\n", t_suite);
        return -1;
    }
    atexit(cleanup);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

#endif
