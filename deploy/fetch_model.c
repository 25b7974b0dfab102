/* fetch_model.c: `make model`: downloads ImageNet ResNet weights from the timm
 * repositories on Hugging Face into models/ARCH.safetensors, verified by
 * SHA-256, plus the preprocessing sidecar models/ARCH.json the engine reads.
 *
 * A download goes to ARCH.safetensors.part, resumes it with an HTTP Range
 * request when it exists (restarting when the server ignores the range), and
 * is renamed to ARCH.safetensors only once complete and verified, so a failed
 * run never leaves a file that looks valid. Standalone: libcurl and libc. */
#include <curl/curl.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BASE "https://huggingface.co"
#define HASH_HEX 64

/* ------------------------------------------------------------------------ */
/* SHA-256 (FIPS 180-4)                                                     */
/* ------------------------------------------------------------------------ */

struct sha256 {
    uint32_t h[8];
    uint64_t bytes;        /* message length so far */
    unsigned char buf[64]; /* pending partial block */
    size_t nbuf;
};

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror32(uint32_t x, int n) {
    return (x >> n) | (x << (32 - n));
}

static void sha256_init(struct sha256 *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->bytes = 0;
    s->nbuf = 0;
}

/* One 64-byte block into the state. */
static void sha256_block(struct sha256 *s, const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) +
                      sha256_k[i] + w[i];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

static void sha256_update(struct sha256 *s, const void *data, size_t len) {
    const unsigned char *p = data;
    s->bytes += len;
    if (s->nbuf) {
        size_t take = 64 - s->nbuf < len ? 64 - s->nbuf : len;
        memcpy(s->buf + s->nbuf, p, take);
        s->nbuf += take;
        p += take;
        len -= take;
        if (s->nbuf < 64) return;
        sha256_block(s, s->buf);
        s->nbuf = 0;
    }
    for (; len >= 64; p += 64, len -= 64)
        sha256_block(s, p);
    memcpy(s->buf, p, len);
    s->nbuf = len;
}

/* Pads, finishes and writes the digest as 64 lower-case hex digits + NUL. */
static void sha256_hex(struct sha256 *s, char out[HASH_HEX + 1]) {
    uint64_t bits = s->bytes * 8;
    unsigned char pad[72] = {0x80};
    size_t npad = (s->nbuf < 56 ? 56 : 120) - s->nbuf;
    for (int i = 0; i < 8; i++)
        pad[npad + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, pad, npad + 8);
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

/* Hashes the first len bytes of fd (from offset 0). Returns 0, or -1. */
static int sha256_fd(int fd, off_t len, struct sha256 *s) {
    static unsigned char buf[1 << 16];
    off_t done = 0;
    while (done < len) {
        size_t want = (size_t)(len - done < (off_t)sizeof buf ? len - done : (off_t)sizeof buf);
        ssize_t r = pread(fd, buf, want, done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        sha256_update(s, buf, (size_t)r);
        done += r;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Known models                                                             */
/* ------------------------------------------------------------------------ */

/* Evaluation preprocessing of the torchvision weights timm republishes:
 * IMAGENET1K_V1 ("tv") resizes to 256, IMAGENET1K_V2 ("tv2") to 232; both
 * crop 224 with bilinear interpolation and ImageNet mean/std. */
struct known_model {
    const char *name; /* ARCH or ARCH.TAG as given on the command line */
    const char *repo; /* Hugging Face repository */
    int resize;
    const char *sha256; /* pinned checksum of model.safetensors, or NULL */
};

static const struct known_model models[] = {
    {"resnet18", "timm/resnet18.tv_in1k", 256, NULL},
    {"resnet34", "timm/resnet34.tv_in1k", 256, NULL},
    {"resnet50", "timm/resnet50.tv2_in1k", 232, NULL},
    {"resnet101", "timm/resnet101.tv2_in1k", 232, NULL},
    {"resnet152", "timm/resnet152.tv2_in1k", 232, NULL},
    {"resnet18.tv_in1k", "timm/resnet18.tv_in1k", 256, NULL},
    {"resnet34.tv_in1k", "timm/resnet34.tv_in1k", 256, NULL},
    {"resnet50.tv_in1k", "timm/resnet50.tv_in1k", 256,
     "5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888"},
    {"resnet50.tv2_in1k", "timm/resnet50.tv2_in1k", 232, NULL},
    {"resnet101.tv_in1k", "timm/resnet101.tv_in1k", 256, NULL},
    {"resnet101.tv2_in1k", "timm/resnet101.tv2_in1k", 232, NULL},
    {"resnet152.tv_in1k", "timm/resnet152.tv_in1k", 256, NULL},
    {"resnet152.tv2_in1k", "timm/resnet152.tv2_in1k", 232, NULL},
};

#define NMODELS ((int)(sizeof models / sizeof models[0]))

static const struct known_model *find_model(const char *name) {
    for (int i = 0; i < NMODELS; i++)
        if (!strcmp(models[i].name, name)) return &models[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Options and messages                                                     */
/* ------------------------------------------------------------------------ */

struct opts {
    const char *dir;    /* --dir */
    const char *sha256; /* --sha256: overrides the pinned/hub checksum */
    const char *base;   /* IMGCLASSD_HF_BASE or --base */
    long connect_s;     /* --connect-timeout */
    long stall_s;       /* --stall-timeout: abort a transfer this long below 1 KB/s */
    int retries;        /* --retries: further attempts after a broken transfer */
    int force;          /* --force: download even when the weights exist */
    int quiet;          /* --quiet: no progress */
};

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: fetch-model [options] ARCH\n"
        "       fetch-model --hash FILE\n"
        "       fetch-model --list\n"
        "\n"
        "Downloads ImageNet weights for ARCH from the timm repositories on Hugging Face\n"
        "into DIR/ARCH.safetensors and writes the preprocessing sidecar DIR/ARCH.json.\n"
        "ARCH: resnet18, resnet34, resnet50, resnet101, resnet152 (or a timm name such as\n"
        "resnet50.tv_in1k; --list shows them all). The file is checked against a pinned\n"
        "SHA-256 where one is known, else against the X-Linked-Etag the hub sends, and is\n"
        "renamed into place only when complete and verified. An interrupted download\n"
        "(ARCH.safetensors.part) is resumed by the next run.\n"
        "\n"
        "  --dir DIR              where the files go (default: models)\n"
        "  --force                download even if DIR/ARCH.safetensors exists\n"
        "  --sha256 HEX           expected checksum (overrides the pinned value and the hub)\n"
        "  --connect-timeout S    give up connecting after S seconds (default 10)\n"
        "  --stall-timeout S      abort a transfer slower than 1 KB/s for S seconds (default 30)\n"
        "  --retries N            resume a broken transfer up to N times (default 3)\n"
        "  --base URL             the hub (default $IMGCLASSD_HF_BASE or %s)\n"
        "  --quiet                no progress output\n"
        "  --hash FILE            print the SHA-256 of FILE and exit\n"
        "  --list                 list the known models and exit\n"
        "\n"
        "When DIR/ARCH.safetensors already exists it is verified (when a checksum is\n"
        "known), its sidecar is written if missing, and nothing is downloaded.\n"
        "Exit status: 0 done, 1 failed, 2 usage.\n",
        DEFAULT_BASE);
}

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fetch-model: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int is_hex64(const char *s) {
    if (strlen(s) != HASH_HEX) return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return 0;
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------ */
/* The sidecar                                                              */
/* ------------------------------------------------------------------------ */

/* Writes path atomically (temporary file, fsync, rename). Returns 0 or -1. */
static int write_file_atomic(const char *path, const char *text) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        msg("cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    int ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        msg("cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int write_sidecar(const char *path, const struct known_model *m, const char *base,
                         const char *sha) {
    char text[2048];
    snprintf(text, sizeof text,
             "{\n"
             "  \"resize\": %d,\n"
             "  \"crop\": 224,\n"
             "  \"interpolation\": \"bilinear\",\n"
             "  \"mean\": [0.485, 0.456, 0.406],\n"
             "  \"std\": [0.229, 0.224, 0.225],\n"
             "  \"source\": \"%s/%s\",\n"
             "  \"sha256\": \"%s\"\n"
             "}\n",
             m->resize, base, m->repo, sha ? sha : "");
    return write_file_atomic(path, text);
}

/* ------------------------------------------------------------------------ */
/* One HTTP transfer                                                        */
/* ------------------------------------------------------------------------ */

/* State of one attempt. The header callback sees the headers of every
 * response in the redirect chain; the hub's own 302 carries X-Linked-Etag
 * and X-Linked-Size, the final 200/206 the body. */
struct xfer {
    int fd;                     /* the .part file */
    struct sha256 sha;          /* over bytes 0..have of the .part file */
    off_t have;                 /* bytes in the .part file (and hashed) */
    off_t start;                /* the offset this attempt asked for */
    int status;                 /* of the response being received */
    off_t range_start;          /* Content-Range start of it, -1 when absent */
    int body_ok;                /* the final response's headers were accepted */
    int restarted;              /* the server ignored the range: started from 0 */
    char hub_sha[HASH_HEX + 1]; /* X-Linked-Etag, "" when not sent */
    off_t hub_size;             /* X-Linked-Size, -1 when not sent */
    const char *want_sha;       /* checksum that will be enforced, NULL if from the hub */
    char abort_why[256];        /* set when a callback aborts the transfer */
    /* progress */
    const char *label;
    int tty, quiet;
    double t0, last;
    off_t last_bytes;
};

/* Header value after "Name:", trimmed into out. NULL if the name differs. */
static const char *header_value(const char *line, size_t n, const char *name, char *out,
                                size_t outlen) {
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return NULL;
    const char *p = line + nl + 1, *e = line + n;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
        e--;
    size_t len = (size_t)(e - p) < outlen - 1 ? (size_t)(e - p) : outlen - 1;
    memcpy(out, p, len);
    out[len] = 0;
    return out;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud) {
    struct xfer *x = ud;
    size_t n = size * nitems;
    char v[256];
    if (n >= 5 && !strncmp(line, "HTTP/", 5)) {
        const char *sp = memchr(line, ' ', n);
        x->status = sp ? atoi(sp + 1) : 0;
        x->range_start = -1;
        return n;
    }
    if (header_value(line, n, "X-Linked-Etag", v, sizeof v)) {
        /* "W/\"<sha256>\"" or "\"<sha256>\"": keep it only if it is a SHA-256. */
        char *p = v;
        if (!strncmp(p, "W/", 2)) p += 2;
        if (*p == '"') p++;
        char *q = strchr(p, '"');
        if (q) *q = 0;
        for (char *c = p; *c; c++)
            if (*c >= 'A' && *c <= 'F') *c = (char)(*c - 'A' + 'a');
        if (is_hex64(p)) memcpy(x->hub_sha, p, HASH_HEX + 1);
        if (x->want_sha && x->hub_sha[0] && strcmp(x->want_sha, x->hub_sha) != 0) {
            snprintf(x->abort_why, sizeof x->abort_why,
                     "the hub serves a file with SHA-256 %s, expected %s", x->hub_sha, x->want_sha);
            return 0;
        }
        return n;
    }
    if (header_value(line, n, "X-Linked-Size", v, sizeof v)) {
        x->hub_size = (off_t)strtoll(v, NULL, 10);
        return n;
    }
    if (header_value(line, n, "Content-Range", v, sizeof v)) {
        long long a;
        if (sscanf(v, "bytes %lld-", &a) == 1) x->range_start = (off_t)a;
        return n;
    }
    /* The blank line ends a response's headers. For the final response
     * (not a redirect) decide where its body goes. */
    if ((n == 2 && line[0] == '\r') || (n == 1 && line[0] == '\n')) {
        if (x->status == 206) {
            if (x->range_start != x->start) {
                snprintf(x->abort_why, sizeof x->abort_why,
                         "asked for bytes from %lld, the server sent from %lld",
                         (long long)x->start, (long long)x->range_start);
                return 0;
            }
            x->body_ok = 1;
        } else if (x->status == 200) {
            if (x->have > 0) {
                /* The server ignored the Range header: start over. */
                if (ftruncate(x->fd, 0) != 0) {
                    snprintf(x->abort_why, sizeof x->abort_why, "truncate: %s", strerror(errno));
                    return 0;
                }
                x->have = 0;
                x->restarted = 1;
                sha256_init(&x->sha);
            }
            x->body_ok = 1;
        }
    }
    return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    struct xfer *x = ud;
    size_t n = size * nmemb;
    if (!x->body_ok) return n; /* an error page (FAILONERROR stops it anyway) */
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(x->fd, data + done, n - done, x->have + (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            snprintf(x->abort_why, sizeof x->abort_why, "write: %s", strerror(errno));
            return 0;
        }
        done += (size_t)w;
    }
    sha256_update(&x->sha, data, n);
    x->have += (off_t)n;
    return n;
}

static void fmt_mb(char *out, size_t n, double bytes) {
    snprintf(out, n, "%.1f MB", bytes / 1e6);
}

/* Progress: a self-rewriting line on a terminal, a line every 10 s otherwise. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    struct xfer *x = ud;
    (void)dlnow, (void)ultotal, (void)ulnow;
    if (x->quiet) return 0;
    double t = now_s();
    if (t - x->last < (x->tty ? 0.25 : 10.0)) return 0;
    double total = x->hub_size > 0 ? (double)x->hub_size
                   : dltotal > 0   ? (double)(x->start + dltotal)
                                   : 0;
    double rate = (double)(x->have - x->last_bytes) / (t - x->last);
    if (x->last == x->t0) rate = (double)(x->have - x->start) / (t - x->t0 + 1e-9);
    x->last = t;
    x->last_bytes = x->have;
    char have[32], tot[32];
    fmt_mb(have, sizeof have, (double)x->have);
    fmt_mb(tot, sizeof tot, total);
    char line[160];
    if (total > 0) {
        double left = rate > 0 ? (total - (double)x->have) / rate : 0;
        snprintf(line, sizeof line, "%s: %s / %s (%3.0f%%), %.1f MB/s, %.0f s left", x->label, have,
                 tot, 100.0 * (double)x->have / total, rate / 1e6, left);
    } else {
        snprintf(line, sizeof line, "%s: %s, %.1f MB/s", x->label, have, rate / 1e6);
    }
    if (x->tty)
        fprintf(stderr, "\r%-79s", line);
    else
        fprintf(stderr, "fetch-model: %s\n", line);
    return 0;
}

/* The outcome of one attempt. */
enum attempt {
    ATT_DONE,    /* the body arrived completely */
    ATT_RETRY,   /* transient: resume after a pause */
    ATT_OFFLINE, /* could not connect: give up at once */
    ATT_FATAL,   /* the server said no (404, 403, ...) or a local error */
    ATT_RESTART, /* 416: the partial file does not fit; start from zero */
};

static enum attempt attempt(CURL *c, const char *url, struct xfer *x, const struct opts *o,
                            char *why, size_t whylen) {
    char errbuf[CURL_ERROR_SIZE] = "", range[48];
    x->start = x->have;
    x->status = 0;
    x->body_ok = 0;
    x->abort_why[0] = 0;
    x->t0 = x->last = now_s();
    x->last_bytes = x->have;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, o->connect_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o->stall_s);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "imgclassd-fetch-model/1 libcurl");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (x->have > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)x->have);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    CURLcode rc = curl_easy_perform(c);
    if (x->tty && !x->quiet && x->last > x->t0) fputc('\n', stderr);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK) {
        if (!x->body_ok) {
            snprintf(why, whylen, "%s answered HTTP %ld with no file", url, code);
            return ATT_FATAL;
        }
        /* A body shorter than the hub's X-Linked-Size is a broken transfer
         * even when the server ended it cleanly. */
        if (x->hub_size > 0 && x->have != x->hub_size) {
            snprintf(why, whylen, "got %lld bytes, the hub says the file has %lld",
                     (long long)x->have, (long long)x->hub_size);
            return x->have < x->hub_size ? ATT_RETRY : ATT_RESTART;
        }
        return ATT_DONE;
    }
    if (x->abort_why[0]) {
        snprintf(why, whylen, "%s", x->abort_why);
        return ATT_FATAL;
    }
    const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        snprintf(why, whylen, "%s", detail);
        return ATT_OFFLINE;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(why, whylen, "%s", detail);
        /* A connect timeout means offline; a stalled transfer is worth resuming. */
        return x->status == 0 ? ATT_OFFLINE : ATT_RETRY;
    case CURLE_HTTP_RETURNED_ERROR:
        snprintf(why, whylen, "%s answered HTTP %ld", url, code);
        if (code == 416) return ATT_RESTART;
        if (code == 429 || code >= 500) return ATT_RETRY;
        if (code == 401 || code == 403 || code == 404)
            snprintf(why + strlen(why), whylen - strlen(why),
                     " (no such public file: check the model name and the base URL)");
        return ATT_FATAL;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        snprintf(why, whylen, "transfer broken after %lld bytes: %s", (long long)x->have, detail);
        return ATT_RETRY;
    default:
        snprintf(why, whylen, "%s", detail);
        return ATT_FATAL;
    }
}

/* ------------------------------------------------------------------------ */
/* Download, verify, install                                                */
/* ------------------------------------------------------------------------ */

static void offline_help(const struct known_model *m, const char *url, const char *dst,
                         const char *side, const char *sha, const char *why) {
    msg("cannot reach the hub: %s", why);
    fprintf(stderr,
            "  This machine seems to be offline (or the hub is blocked). On a machine with\n"
            "  internet access, download\n"
            "      %s\n"
            "  copy it to\n"
            "      %s\n"
            "  and run this command again: it then checks the file and writes %s\n"
            "  (resize %d, crop 224, bilinear, ImageNet mean/std).\n",
            url, dst, side, m->resize);
    if (sha)
        fprintf(stderr, "  Its SHA-256 must be %s.\n", sha);
    else
        fprintf(stderr,
                "  No SHA-256 is pinned for %s: pass --sha256 HEX, as the hub's file page\n"
                "  shows it, to have it checked.\n",
                m->repo);
}

/* The "sha256" a sidecar written by this program records. 0, or -1. */
static int sidecar_sha256(const char *path, char out[HASH_HEX + 1]) {
    char text[4096];
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    const char *p = strstr(text, "\"sha256\": \"");
    if (!p) return -1;
    p += strlen("\"sha256\": \"");
    if (strlen(p) < HASH_HEX + 1 || p[HASH_HEX] != '"') return -1;
    memcpy(out, p, HASH_HEX);
    out[HASH_HEX] = 0;
    return is_hex64(out) ? 0 : -1;
}

/* Checks an existing weights file against the checksum, if one is known. */
static int verify_existing(const char *dst, const char *want, const char *source, char *got) {
    int fd = open(dst, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        msg("cannot read %s: %s", dst, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    struct sha256 s;
    sha256_init(&s);
    int rc = sha256_fd(fd, st.st_size, &s);
    close(fd);
    if (rc != 0) {
        msg("cannot read %s: %s", dst, strerror(errno));
        return -1;
    }
    sha256_hex(&s, got);
    if (want && strcmp(want, got) != 0) {
        msg("%s exists but its SHA-256 is %s, expected %s (%s); delete it (or pass --force) "
            "to download it again",
            dst, got, want, source);
        return -1;
    }
    return 0;
}

static int fetch(const char *arch, const struct opts *o) {
    const struct known_model *m = find_model(arch);
    if (!m) {
        msg("unknown model '%s' (known: resnet18, resnet34, resnet50, resnet101, resnet152; "
            "--list shows the timm names)",
            arch);
        return 2;
    }
    const char *want = o->sha256 ? o->sha256 : m->sha256;
    char dst[4096], part[4200], side[4200], url[4096];
    snprintf(dst, sizeof dst, "%s/%s.safetensors", o->dir, arch);
    snprintf(part, sizeof part, "%s.part", dst);
    snprintf(side, sizeof side, "%s/%s.json", o->dir, arch);
    snprintf(url, sizeof url, "%s/%s/resolve/main/model.safetensors", o->base, m->repo);

    struct stat st;
    if (!o->force && stat(dst, &st) == 0) {
        char got[HASH_HEX + 1], recorded[HASH_HEX + 1];
        /* Without a pinned or given checksum, the one recorded in the
         * sidecar at download time still catches later damage. */
        const char *check = want, *source = o->sha256 ? "--sha256" : "pinned";
        if (!check && sidecar_sha256(side, recorded) == 0) {
            check = recorded;
            source = side;
        }
        if (verify_existing(dst, check, source, got) != 0) return 1;
        msg("%s is already there (SHA-256 %s, %s)", dst, got,
            want    ? "verified"
            : check ? "as recorded in the sidecar"
                    : "not verified: no checksum known; pass --sha256 HEX");
        if (stat(side, &st) != 0) {
            if (write_sidecar(side, m, o->base, got) != 0) return 1;
            msg("wrote %s (resize %d, crop 224, bilinear)", side, m->resize);
        }
        return 0;
    }
    if (mkdir(o->dir, 0755) != 0 && errno != EEXIST) {
        msg("cannot create %s: %s", o->dir, strerror(errno));
        return 1;
    }

    /* The .part file is locked so that two runs never write it at once. */
    struct xfer x;
    memset(&x, 0, sizeof x);
    x.fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (x.fd < 0) {
        msg("cannot open %s: %s", part, strerror(errno));
        return 1;
    }
    if (flock(x.fd, LOCK_EX | LOCK_NB) != 0) {
        msg("%s is locked: another fetch-model is downloading it", part);
        close(x.fd);
        return 1;
    }
    x.hub_size = -1;
    x.want_sha = want;
    x.label = arch;
    x.quiet = o->quiet;
    x.tty = isatty(2);
    sha256_init(&x.sha);
    if (fstat(x.fd, &st) != 0 || sha256_fd(x.fd, st.st_size, &x.sha) != 0) {
        msg("cannot read %s: %s", part, strerror(errno));
        close(x.fd);
        return 1;
    }
    x.have = st.st_size;
    if (!o->quiet) msg("%s %s\n             -> %s", x.have ? "resuming" : "downloading", url, dst);
    if (x.have && !o->quiet) msg("%lld bytes already in %s", (long long)x.have, part);

    CURL *c = curl_easy_init();
    if (!c) {
        msg("curl_easy_init failed");
        close(x.fd);
        return 1;
    }
    double t0 = now_s();
    off_t first = x.have;
    int tries = 0, restarts = 0, rc = 1;
    char why[8400] = "";
    for (;;) {
        enum attempt a = attempt(c, url, &x, o, why, sizeof why);
        if (a == ATT_DONE) {
            char got[HASH_HEX + 1];
            const char *expect = want ? want : (x.hub_sha[0] ? x.hub_sha : NULL);
            sha256_hex(&x.sha, got);
            if (!expect) {
                msg("no checksum to verify %s against (none pinned and the server sent no "
                    "X-Linked-Etag); pass --sha256 HEX. Discarded the download.",
                    url);
                unlink(part);
                break;
            }
            if (strcmp(got, expect) != 0) {
                if (first > 0 && restarts == 0) {
                    /* The partial file may have come from another revision. */
                    msg("checksum mismatch after resuming; downloading the whole file again");
                    restarts++;
                    first = 0;
                    if (ftruncate(x.fd, 0) != 0) break;
                    x.have = 0;
                    sha256_init(&x.sha);
                    continue;
                }
                msg("checksum mismatch for %s: got SHA-256 %s, expected %s (%s). The download "
                    "was discarded.",
                    url, got, expect, want ? "pinned" : "X-Linked-Etag");
                unlink(part);
                break;
            }
            if (fsync(x.fd) != 0) {
                msg("fsync %s: %s", part, strerror(errno));
                unlink(part);
                break;
            }
            /* Sidecar first: weights never appear without their preprocessing. */
            if (write_sidecar(side, m, o->base, got) != 0) {
                unlink(part);
                break;
            }
            if (rename(part, dst) != 0) {
                msg("cannot rename %s to %s: %s", part, dst, strerror(errno));
                unlink(part);
                break;
            }
            int dfd = open(o->dir, O_RDONLY | O_DIRECTORY);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
            double dt = now_s() - t0;
            msg("%s: %.1f MB in %.1f s, SHA-256 %s verified (%s)", dst, (double)x.have / 1e6, dt,
                got, want ? "pinned" : "X-Linked-Etag");
            msg("%s: resize %d, crop 224, bilinear, ImageNet mean/std (%s)", side, m->resize,
                m->repo);
            rc = 0;
            break;
        }
        if (a == ATT_OFFLINE && x.have == first && tries == 0) {
            /* Fail at once; keep any partial file for a later resume. */
            offline_help(m, url, dst, side, want, why);
            if (x.have == 0) unlink(part);
            break;
        }
        if (a == ATT_RESTART && restarts == 0) {
            msg("%s; starting from zero", why);
            restarts++;
            if (ftruncate(x.fd, 0) != 0) break;
            x.have = 0;
            sha256_init(&x.sha);
            continue;
        }
        if ((a == ATT_RETRY || a == ATT_OFFLINE) && tries < o->retries) {
            tries++;
            int pause = 1 << (tries - 1);
            msg("%s; retrying in %d s (%d of %d)", why, pause, tries, o->retries);
            sleep((unsigned)pause);
            continue;
        }
        msg("download failed: %s", why);
        if (x.have > 0 && (a == ATT_RETRY || a == ATT_OFFLINE))
            msg("kept %lld bytes in %s; run again to resume", (long long)x.have, part);
        else
            unlink(part);
        break;
    }
    curl_easy_cleanup(c);
    close(x.fd);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

static int hash_file(const char *path) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    struct sha256 s;
    char hex[HASH_HEX + 1];
    sha256_init(&s);
    if (fd < 0 || fstat(fd, &st) != 0 || sha256_fd(fd, st.st_size, &s) != 0) {
        msg("cannot read %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return 1;
    }
    close(fd);
    sha256_hex(&s, hex);
    printf("%s  %s\n", hex, path);
    return 0;
}

/* Parses a non-negative integer flag value; -1 when invalid. */
static long parse_count(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return (errno || end == s || *end || v < 0 || v > 100000) ? -1 : v;
}

int main(int argc, char **argv) {
    struct opts o = {.dir = "models", .connect_s = 10, .stall_s = 30, .retries = 3};
    const char *arch = NULL;
    o.base = getenv("IMGCLASSD_HF_BASE");
    if (!o.base || !*o.base) o.base = DEFAULT_BASE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = !strcmp(a, "--dir") || !strcmp(a, "--sha256") || !strcmp(a, "--base") ||
                    !strcmp(a, "--connect-timeout") || !strcmp(a, "--stall-timeout") ||
                    !strcmp(a, "--retries") || !strcmp(a, "--hash");
        if (takes && !val) {
            msg("%s needs a value", a);
            return 2;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--list")) {
            for (int k = 0; k < NMODELS; k++)
                printf("%-20s %-26s resize %d%s\n", models[k].name, models[k].repo,
                       models[k].resize, models[k].sha256 ? ", SHA-256 pinned" : "");
            return 0;
        } else if (!strcmp(a, "--hash")) {
            return hash_file(val);
        } else if (!strcmp(a, "--dir")) {
            o.dir = argv[++i];
        } else if (!strcmp(a, "--base")) {
            o.base = argv[++i];
        } else if (!strcmp(a, "--sha256")) {
            o.sha256 = argv[++i];
            if (!is_hex64(o.sha256)) {
                msg("--sha256: expected 64 lower-case hex digits, got '%s'", o.sha256);
                return 2;
            }
        } else if (!strcmp(a, "--connect-timeout") || !strcmp(a, "--stall-timeout") ||
                   !strcmp(a, "--retries")) {
            long v = parse_count(argv[++i]);
            if (v < 0 || (v == 0 && strcmp(a, "--retries") != 0)) {
                msg("%s: expected a positive integer, got '%s'", a, argv[i]);
                return 2;
            }
            if (!strcmp(a, "--connect-timeout"))
                o.connect_s = v;
            else if (!strcmp(a, "--stall-timeout"))
                o.stall_s = v;
            else
                o.retries = (int)v;
        } else if (!strcmp(a, "--force")) {
            o.force = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            o.quiet = 1;
        } else if (a[0] == '-') {
            msg("unknown option %s (see --help)", a);
            return 2;
        } else if (arch) {
            msg("one model at a time (got '%s' and '%s')", arch, a);
            return 2;
        } else {
            arch = a;
        }
    }
    if (!arch) {
        usage(stderr);
        return 2;
    }
    /* Strip a trailing slash so URLs and messages read cleanly. */
    static char base[2048];
    snprintf(base, sizeof base, "%s", o.base);
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        base[--bl] = 0;
    o.base = base;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        msg("curl_global_init failed");
        return 1;
    }
    int rc = fetch(arch, &o);
    curl_global_cleanup();
    return rc;
}
