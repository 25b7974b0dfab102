/* cors.h: cross-origin access (--cors-origins): the parsed list of allowed
 * origins and the pure decision of which Access-Control-* headers a request
 * gets (Fetch standard, "CORS protocol"). The transport applies it once for
 * every route; handlers never see CORS. */
#ifndef SRV_CORS_H
#define SRV_CORS_H

#include <stdbool.h>
#include <stddef.h>

/* How long a browser may cache a preflight answer, in seconds. Chromium
 * caps it at 7200 and Firefox at 86400; ten minutes bounds how long a
 * browser keeps using an answer after the server's settings change. */
#define SRV_CORS_MAX_AGE "600"

/* Request headers a page may send: the service's own (X-Request-Id), the
 * bearer token, and Open Inference Protocol v2's binary extension. Accept
 * and the simple Content-Types are safelisted by the Fetch standard, but
 * application/json and application/octet-stream are not, so Content-Type
 * is listed too. */
#define SRV_CORS_ALLOW_HEADERS                                                                     \
    "Content-Type, Authorization, Inference-Header-Content-Length, X-Request-Id"

/* Response headers a page may read besides the safelisted ones. */
#define SRV_CORS_EXPOSE_HEADERS                                                                    \
    "Server-Timing, X-Request-Id, Retry-After, Inference-Header-Content-Length, "                  \
    "WWW-Authenticate"

/* Methods offered in a preflight answer when the caller does not name the
 * route's own. */
#define SRV_CORS_DEFAULT_METHODS "GET, HEAD, POST"

/* Longest origin accepted in the list (scheme://host:port). */
#define SRV_CORS_MAX_ORIGIN 256

struct srv_cors;

/* Parses list: "" (CORS off), "*" (any origin), or exact origins separated
 * by commas (spaces around them ignored), each scheme://host[:port] with
 * scheme http or https, no path, no user info, no trailing slash. Scheme
 * and host are lower-cased and a default port (:80 for http, :443 for
 * https) dropped, because that is how a browser serializes the Origin it
 * sends. tokens: the server requires bearer tokens, so "*" answers with the
 * request's origin instead of a literal "*" (issue 13).
 * Returns 0 and *out (NULL when list is empty: CORS off; free with
 * srv_cors_free), or -1 with a message naming the bad entry in err (may be
 * NULL). Pure apart from the allocation. */
int srv_cors_new(const char *list, bool tokens, struct srv_cors **out, char *err, size_t errlen);

/* NULL ok. */
void srv_cors_free(struct srv_cors *c);

/* Number of exact origins in the list; -1 for "*". For logging. */
int srv_cors_count(const struct srv_cors *c);

enum srv_cors_kind {
    SRV_CORS_NONE = 0,         /* CORS off, or no Origin header: add nothing */
    SRV_CORS_ACTUAL,           /* an allowed origin: serve, adding the headers */
    SRV_CORS_DENIED,           /* an origin not allowed: serve, with no CORS headers */
    SRV_CORS_PREFLIGHT,        /* an allowed preflight: answer 204 with the headers */
    SRV_CORS_PREFLIGHT_DENIED, /* a preflight from an origin not allowed: refuse, no headers */
};

#define SRV_CORS_MAX_HEADERS 8

/* What to do with one request. Header values are static strings or the
 * request's own Origin (borrowed: valid as long as the origin passed in). */
struct srv_cors_decision {
    enum srv_cors_kind kind;
    int nheaders;
    struct {
        const char *name, *value;
    } h[SRV_CORS_MAX_HEADERS];
};

/* Decides for a request with method, its Origin header and its
 * Access-Control-Request-Method header (each NULL when absent). A
 * preflight is an OPTIONS request with both Origin and
 * Access-Control-Request-Method; a plain OPTIONS is not one. methods: the
 * route's methods for Access-Control-Allow-Methods (NULL:
 * SRV_CORS_DEFAULT_METHODS). c may be NULL (CORS off). Whenever CORS is on,
 * Vary: Origin is among the headers, for every kind but SRV_CORS_NONE with
 * CORS off, because the answer depends on the Origin a cache must key on.
 * Pure function; thread-safe. */
void srv_cors_decide(const struct srv_cors *c, const char *method, const char *origin,
                     const char *acr_method, const char *methods, struct srv_cors_decision *out);

/* Checks that s[0..n) is an origin as srv_cors_new accepts it and writes
 * its normalized form into out (SRV_CORS_MAX_ORIGIN bytes). Returns 0, or
 * -1 with the reason in err. Pure function. */
int srv_cors_origin_normalize(const char *s, size_t n, char *out, char *err, size_t errlen);

#endif
