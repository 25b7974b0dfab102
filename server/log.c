/* log.c: server events and the access log on stderr, as text or JSON lines.
 * Each line is formatted into a local buffer and written with one write(2),
 * so lines from concurrent threads never interleave. */
#include "server.h"

#include <stdarg.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static enum srv_log_format log_format = SRV_LOG_TEXT;

void srv_log_init(enum srv_log_format fmt) {
    log_format = fmt;
}

/* A growing line in a fixed buffer; output past the end is dropped, and
 * the line always ends in '\n'. */
struct line {
    char buf[2048];
    size_t n;
};

static void put(struct line *l, const char *s, size_t len) {
    size_t room = sizeof l->buf - 1 - l->n; /* keep one byte for '\n' */
    if (len > room) len = room;
    memcpy(l->buf + l->n, s, len);
    l->n += len;
}

static void puts_(struct line *l, const char *s) {
    put(l, s, strlen(s));
}

static void putf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct line *l, const char *fmt, ...) {
    size_t room = sizeof l->buf - 1 - l->n;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(l->buf + l->n, room + 1, fmt, ap);
    va_end(ap);
    if (k > 0) l->n += (size_t)k < room ? (size_t)k : room;
}

/* s as the inside of a JSON string; also used for the text of server
 * events so a hostile value cannot forge extra lines (control characters
 * are escaped). */
static void put_escaped(struct line *l, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[8];
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            put(l, tmp, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *p);
            put(l, tmp, 6);
        } else {
            put(l, (const char *)p, 1);
        }
    }
}

/* A field of a text access-log line: spaces, '%', quotes, backslashes and
 * control characters are percent-encoded, so a path such as
 * "/x 200 16B id=forged" (sent as %20) cannot pose as other fields. */
static void put_field(struct line *l, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= 0x20 || *p == 0x7f || *p == '%' || *p == '"' || *p == '\\') {
            char tmp[4];
            snprintf(tmp, sizeof tmp, "%%%02X", *p);
            put(l, tmp, 3);
        } else {
            put(l, (const char *)p, 1);
        }
    }
}

static void put_time(struct line *l) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char t[40];
    size_t k = strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(t + k, sizeof t - k, ".%03dZ", (int)(tv.tv_usec / 1000));
    put(l, t, strlen(t));
}

static void emit(struct line *l) {
    l->buf[l->n++] = '\n';
    const char *p = l->buf;
    size_t left = l->n;
    while (left > 0) {
        ssize_t w = write(STDERR_FILENO, p, left);
        if (w <= 0) break; /* nowhere to report a failing stderr */
        p += w;
        left -= (size_t)w;
    }
}

void srv_log(const char *level, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct line l = {.n = 0};
    if (log_format == SRV_LOG_JSON) {
        puts_(&l, "{\"ts\":\"");
        put_time(&l);
        putf(&l, "\",\"level\":\"%s\",\"msg\":\"", level);
        put_escaped(&l, msg);
        puts_(&l, "\"}");
    } else {
        put_time(&l);
        putf(&l, " %s ", level);
        put_escaped(&l, msg);
    }
    emit(&l);
}

void srv_log_access(const struct srv_access *a) {
    struct line l = {.n = 0};
    if (log_format == SRV_LOG_JSON) {
        puts_(&l, "{\"ts\":\"");
        put_time(&l);
        puts_(&l, "\",\"level\":\"info\",\"msg\":\"access\",\"remote\":\"");
        put_escaped(&l, a->remote ? a->remote : "-");
        puts_(&l, "\",\"method\":\"");
        put_escaped(&l, a->method ? a->method : "-");
        puts_(&l, "\",\"path\":\"");
        put_escaped(&l, a->path ? a->path : "-");
        putf(&l,
             "\",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%.3f,\"batch_size\":%d,"
             "\"images\":%d,\"request_id\":\"",
             a->status, (unsigned long long)a->bytes, a->duration_s * 1e3, a->batch_size,
             a->images);
        put_escaped(&l, a->request_id ? a->request_id : "");
        puts_(&l, "\"}");
    } else {
        put_time(&l);
        puts_(&l, " access ");
        put_field(&l, a->remote ? a->remote : "-");
        puts_(&l, " ");
        put_field(&l, a->method ? a->method : "-");
        puts_(&l, " ");
        put_field(&l, a->path ? a->path : "-");
        putf(&l, " %d %lluB %.3fms batch=%d images=%d id=", a->status, (unsigned long long)a->bytes,
             a->duration_s * 1e3, a->batch_size, a->images);
        put_field(&l, a->request_id ? a->request_id : "-");
    }
    emit(&l);
}
