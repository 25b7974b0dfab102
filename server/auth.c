/* auth.c: the bearer-token set of --auth-token-file: loading, the atomic
 * swap on reload, and the constant-time check (see auth.h). */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SRV_AUTH_STR_(x) #x
#define SRV_AUTH_STR(x) SRV_AUTH_STR_(x)

/* One loaded file. Tokens are stored zero-padded to SRV_AUTH_MAX_TOKEN so
 * that a comparison always reads the same number of bytes. */
struct token_set {
    int n;
    struct {
        unsigned char b[SRV_AUTH_MAX_TOKEN];
        size_t len;
    } t[];
};

/* A check holds the read lock only while it compares; a reload builds the
 * new set outside the lock and takes the write lock only to swap the
 * pointer, then frees the old set, which no reader can still see.
 * Writers are preferred so that a steady stream of checks cannot postpone
 * a reload forever. */
struct srv_auth {
    char *path;
    pthread_rwlock_t lock;
    struct token_set *set; /* guarded by lock */
};

static int b64token_char(unsigned char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '+' || ch == '/';
}

/* RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
 * "+" / "/" ) *"=". */
static int is_b64token(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n && b64token_char(s[i]))
        i++;
    if (i == 0) return 0;
    while (i < n && s[i] == '=')
        i++;
    return i == n;
}

/* Reads the whole file, refusing anything but a regular file (a FIFO or a
 * device would block or never end; a directory is a mistake). */
static char *read_token_file(const char *path, size_t *len, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "--auth-token-file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "--auth-token-file %s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size > SRV_AUTH_MAX_FILE) {
        snprintf(err, errlen, "--auth-token-file %s: larger than %d bytes", path,
                 SRV_AUTH_MAX_FILE);
        close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = 0;
    while (buf && n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* shrank while read: take what is there */
        n += (size_t)r;
    }
    int saved = errno;
    close(fd);
    if (!buf) {
        snprintf(err, errlen, "--auth-token-file %s: out of memory", path);
        return NULL;
    }
    if (n < (size_t)st.st_size && saved && saved != EINTR) {
        snprintf(err, errlen, "--auth-token-file %s: %s", path, strerror(saved));
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Parses the file into a new set. Messages name the line, never its text. */
static struct token_set *load(const char *path, char *err, size_t errlen) {
    size_t len = 0;
    char *buf = read_token_file(path, &len, err, errlen);
    if (!buf) return NULL;
    int lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += buf[i] == '\n';
    if (lines > SRV_AUTH_MAX_TOKENS) lines = SRV_AUTH_MAX_TOKENS + 1;
    struct token_set *s = calloc(1, sizeof *s + (size_t)lines * sizeof s->t[0]);
    if (!s) {
        snprintf(err, errlen, "--auth-token-file %s: out of memory", path);
        free(buf);
        return NULL;
    }
    int line = 0;
    const char *why = NULL;
    for (size_t p = 0; p < len && !why;) {
        size_t e = p;
        while (e < len && buf[e] != '\n')
            e++;
        line++;
        size_t a = p, b = e;
        p = e + 1;
        while (a < b && (buf[a] == ' ' || buf[a] == '\t'))
            a++;
        while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r'))
            b--;
        if (a == b || buf[a] == '#') continue;
        size_t n = b - a;
        if (memchr(buf + a, 0, n))
            why = "a NUL byte";
        else if (n < SRV_AUTH_MIN_TOKEN)
            why = "a token shorter than " SRV_AUTH_STR(SRV_AUTH_MIN_TOKEN) " characters";
        else if (n > SRV_AUTH_MAX_TOKEN)
            why = "a token longer than " SRV_AUTH_STR(SRV_AUTH_MAX_TOKEN) " characters";
        else if (!is_b64token((const unsigned char *)buf + a, n))
            why = "a character not allowed in a bearer token (RFC 6750: letters, digits, "
                  "-._~+/ and trailing =)";
        else if (s->n >= SRV_AUTH_MAX_TOKENS)
            why = "more than " SRV_AUTH_STR(SRV_AUTH_MAX_TOKENS) " tokens";
        else {
            memcpy(s->t[s->n].b, buf + a, n);
            s->t[s->n].len = n;
            s->n++;
        }
    }
    /* The buffer held tokens: clear it before it goes back to malloc. */
    explicit_bzero(buf, len);
    free(buf);
    if (why) {
        snprintf(err, errlen, "--auth-token-file %s: line %d: %s", path, line, why);
    } else if (!s->n) {
        snprintf(err, errlen,
                 "--auth-token-file %s: no token in the file (one per line; '#' starts a "
                 "comment); an empty set would refuse every request",
                 path);
        why = "empty";
    }
    if (why) {
        explicit_bzero(s, sizeof *s + (size_t)lines * sizeof s->t[0]);
        free(s);
        return NULL;
    }
    return s;
}

static void set_free(struct token_set *s) {
    if (!s) return;
    explicit_bzero(s->t, (size_t)s->n * sizeof s->t[0]);
    free(s);
}

int srv_auth_new(const char *path, struct srv_auth **out, char *err, size_t errlen) {
    char ebuf[1];
    if (!err) err = ebuf, errlen = sizeof ebuf;
    *out = NULL;
    struct srv_auth *a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) {
        free(a);
        snprintf(err, errlen, "--auth-token-file %s: out of memory", path);
        return -1;
    }
    if (!(a->set = load(path, err, errlen))) {
        free(a->path);
        free(a);
        return -1;
    }
    pthread_rwlockattr_t at;
    pthread_rwlockattr_init(&at);
    pthread_rwlockattr_setkind_np(&at, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&a->lock, &at);
    pthread_rwlockattr_destroy(&at);
    *out = a;
    return 0;
}

int srv_auth_reload(struct srv_auth *a, char *err, size_t errlen) {
    char ebuf[1];
    if (!err) err = ebuf, errlen = sizeof ebuf;
    struct token_set *s = load(a->path, err, errlen);
    if (!s) return -1;
    int n = s->n;
    pthread_rwlock_wrlock(&a->lock);
    struct token_set *old = a->set;
    a->set = s;
    pthread_rwlock_unlock(&a->lock);
    set_free(old);
    return n;
}

int srv_auth_count(struct srv_auth *a) {
    pthread_rwlock_rdlock(&a->lock);
    int n = a->set->n;
    pthread_rwlock_unlock(&a->lock);
    return n;
}

const char *srv_auth_path(const struct srv_auth *a) {
    return a->path;
}

/* 0 when the padded buffers and lengths agree; reads every byte whatever
 * they hold, and has no branch on their content. */
static unsigned ct_diff(const unsigned char *x, size_t xlen, const unsigned char *y, size_t ylen) {
    volatile unsigned char acc = 0;
    for (size_t i = 0; i < SRV_AUTH_MAX_TOKEN; i++)
        acc |= x[i] ^ y[i];
    size_t d = xlen ^ ylen;
    return acc | (unsigned)(d | (d >> 8) | (d >> 16));
}

int srv_auth_check(struct srv_auth *a, const char *header) {
    if (!header) return 0;
    /* credentials = auth-scheme 1*SP token68 (RFC 9110 11.4); the scheme
     * is case-insensitive. What the client sent decides only how its own
     * value is parsed, so these branches reveal nothing about the set. */
    if (strncasecmp(header, "Bearer ", 7) != 0) return 0;
    const char *p = header + 7;
    while (*p == ' ')
        p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n > SRV_AUTH_MAX_TOKEN) return 0;
    unsigned char given[SRV_AUTH_MAX_TOKEN] = {0};
    memcpy(given, p, n);
    unsigned match = 0;
    pthread_rwlock_rdlock(&a->lock);
    const struct token_set *s = a->set;
    /* No early exit: every token is compared, so the time says neither
     * which token matched nor how much of one did. */
    for (int i = 0; i < s->n; i++)
        match |= ct_diff(given, n, s->t[i].b, s->t[i].len) == 0;
    pthread_rwlock_unlock(&a->lock);
    explicit_bzero(given, sizeof given);
    return match ? 1 : 0;
}

void srv_auth_free(struct srv_auth *a) {
    if (!a) return;
    set_free(a->set);
    pthread_rwlock_destroy(&a->lock);
    free(a->path);
    free(a);
}
