/* cors.c: --cors-origins parsed into a list of exact origins, and the
 * decision of which CORS headers a request gets (see cors.h). */
#include "cors.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct srv_cors {
    bool any;    /* "*" */
    bool tokens; /* echo the origin even for "*" */
    int n;
    char (*origins)[SRV_CORS_MAX_ORIGIN]; /* [n], normalized */
};

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, size_t n,
                    const char *why) {
    if (err && errlen) snprintf(err, errlen, fmt, (int)(n > 80 ? 80 : n), a, why);
}

int srv_cors_origin_normalize(const char *s, size_t n, char *out, char *err, size_t errlen) {
    const char *fmt = "'%.*s' is not an origin: %s";
    const char *why = NULL;
    size_t k = 0, i = 0;
    int default_port = 0;
    if (n == 4 && !strncmp(s, "null", 4))
        why = "\"null\" is the origin of sandboxed and file: pages, which anyone can make";
    else if (n >= SRV_CORS_MAX_ORIGIN)
        why = "too long";
    else if (n > 7 && !strncasecmp(s, "http://", 7))
        i = 7, default_port = 80;
    else if (n > 8 && !strncasecmp(s, "https://", 8))
        i = 8, default_port = 443;
    else
        why = "expected http://host[:port] or https://host[:port]";
    if (why) {
        set_err(err, errlen, fmt, s, n, why);
        return -1;
    }
    for (; k < i; k++)
        out[k] = (char)tolower((unsigned char)s[k]);
    /* Host: a name, an IPv4 literal, or an IPv6 literal in brackets. */
    size_t host0 = i;
    if (s[i] == '[') {
        out[k++] = s[i++];
        while (i < n && (isxdigit((unsigned char)s[i]) || s[i] == ':' || s[i] == '.'))
            out[k++] = (char)tolower((unsigned char)s[i++]);
        if (i >= n || s[i] != ']' || i == host0 + 1) {
            set_err(err, errlen, fmt, s, n, "a bracketed IPv6 address must be closed by ']'");
            return -1;
        }
        out[k++] = s[i++];
    } else {
        while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '.'))
            out[k++] = (char)tolower((unsigned char)s[i++]);
        if (i == host0) {
            set_err(err, errlen, fmt, s, n, "no host");
            return -1;
        }
    }
    if (i < n && s[i] == ':') {
        size_t p0 = ++i;
        long port = 0;
        while (i < n && isdigit((unsigned char)s[i]) && i - p0 < 6)
            port = port * 10 + (s[i++] - '0');
        if (i == p0 || port < 1 || port > 65535 || (i < n && isdigit((unsigned char)s[i]))) {
            set_err(err, errlen, fmt, s, n, "the port must be a number from 1 to 65535");
            return -1;
        }
        /* A browser never sends the scheme's default port. */
        if (port != default_port) k += (size_t)sprintf(out + k, ":%ld", port);
    }
    if (i < n) {
        set_err(err, errlen, fmt, s, n,
                s[i] == '/' ? "an origin has no path, not even a trailing '/'"
                            : "unexpected character after the host (user info, query and "
                              "fragment are not part of an origin)");
        return -1;
    }
    out[k] = 0;
    return 0;
}

int srv_cors_new(const char *list, bool tokens, struct srv_cors **out, char *err, size_t errlen) {
    *out = NULL;
    while (*list == ' ' || *list == '\t')
        list++;
    if (!*list) return 0;
    struct srv_cors *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->tokens = tokens;
    int entries = 1;
    for (const char *p = list; *p; p++)
        entries += *p == ',';
    c->origins = calloc((size_t)entries, sizeof *c->origins);
    if (!c->origins) goto oom;
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (a == b) {
            if (err) snprintf(err, errlen, "an empty entry in the list (two commas in a row?)");
            srv_cors_free(c);
            return -1;
        }
        if (b - a == 1 && *a == '*') {
            c->any = true;
        } else if (srv_cors_origin_normalize(a, (size_t)(b - a), c->origins[c->n], err, errlen) !=
                   0) {
            srv_cors_free(c);
            return -1;
        } else {
            c->n++;
        }
        if (!*end) break;
        p = end + 1;
    }
    if (c->any && c->n) {
        if (err) snprintf(err, errlen, "'*' allows every origin: list origins or '*', not both");
        srv_cors_free(c);
        return -1;
    }
    *out = c;
    return 0;
oom:
    if (err) snprintf(err, errlen, "out of memory");
    srv_cors_free(c);
    return -1;
}

void srv_cors_free(struct srv_cors *c) {
    if (!c) return;
    free(c->origins);
    free(c);
}

int srv_cors_count(const struct srv_cors *c) {
    return !c ? 0 : c->any ? -1 : c->n;
}

/* The request's Origin is compared after normalizing it the same way, so
 * "HTTPS://App.Example.com:443" matches "https://app.example.com"; what is
 * echoed is the header as the browser sent it, which is what the browser
 * compares Access-Control-Allow-Origin with. */
static bool origin_allowed(const struct srv_cors *c, const char *origin) {
    char norm[SRV_CORS_MAX_ORIGIN];
    if (srv_cors_origin_normalize(origin, strlen(origin), norm, NULL, 0) != 0) return false;
    if (c->any) return true;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->origins[i], norm)) return true;
    return false;
}

static void add(struct srv_cors_decision *d, const char *name, const char *value) {
    if (d->nheaders < SRV_CORS_MAX_HEADERS) {
        d->h[d->nheaders].name = name;
        d->h[d->nheaders].value = value;
        d->nheaders++;
    }
}

void srv_cors_decide(const struct srv_cors *c, const char *method, const char *origin,
                     const char *acr_method, const char *methods, struct srv_cors_decision *out) {
    memset(out, 0, sizeof *out);
    out->kind = SRV_CORS_NONE;
    if (!c) return;
    add(out, "Vary", "Origin");
    if (!origin) return;
    bool preflight = method && !strcmp(method, "OPTIONS") && acr_method;
    if (!origin_allowed(c, origin)) {
        out->kind = preflight ? SRV_CORS_PREFLIGHT_DENIED : SRV_CORS_DENIED;
        return;
    }
    /* A literal "*" is the simplest answer and keeps shared caches useful,
     * but once tokens guard the service the answer names the one origin
     * that asked (issue 13). */
    const char *allow = c->any && !c->tokens ? "*" : origin;
    add(out, "Access-Control-Allow-Origin", allow);
    if (preflight) {
        out->kind = SRV_CORS_PREFLIGHT;
        add(out, "Access-Control-Allow-Methods", methods ? methods : SRV_CORS_DEFAULT_METHODS);
        add(out, "Access-Control-Allow-Headers", SRV_CORS_ALLOW_HEADERS);
        add(out, "Access-Control-Max-Age", SRV_CORS_MAX_AGE);
    } else {
        out->kind = SRV_CORS_ACTUAL;
        add(out, "Access-Control-Expose-Headers", SRV_CORS_EXPOSE_HEADERS);
        /* Server-Timing reaches the page's Resource Timing entries only
         * when this names the origin too. */
        add(out, "Timing-Allow-Origin", allow);
    }
}
