/* test_cors.c: --cors-origins parsing and the CORS decision of server/cors.c
 * (preflight, actual requests, disallowed origins, "*" with and without
 * tokens). */
#include "test.h"

#include "cors.h"

static char err[512];

/* The value of header name in d, or NULL. */
static const char *hval(const struct srv_cors_decision *d, const char *name) {
    for (int i = 0; i < d->nheaders; i++)
        if (!strcasecmp(d->h[i].name, name)) return d->h[i].value;
    return NULL;
}

/* 1 when d carries any Access-Control-* or Timing-Allow-Origin header. */
static int any_cors(const struct srv_cors_decision *d) {
    for (int i = 0; i < d->nheaders; i++)
        if (!strncasecmp(d->h[i].name, "Access-Control-", 15) ||
            !strcasecmp(d->h[i].name, "Timing-Allow-Origin"))
            return 1;
    return 0;
}

static void test_parse_lists(void) {
    struct srv_cors *c = (struct srv_cors *)1;
    CHECK(srv_cors_new("", false, &c, err, sizeof err) == 0 && c == NULL, "empty: CORS off");
    CHECK(srv_cors_new("  ", false, &c, err, sizeof err) == 0 && c == NULL);
    CHECK(srv_cors_new("*", false, &c, err, sizeof err) == 0 && c, "%s", err);
    CHECK(srv_cors_count(c) == -1);
    srv_cors_free(c);
    CHECK(srv_cors_new("https://app.example.com, http://localhost:3000,http://[::1]:8081", false,
                       &c, err, sizeof err) == 0,
          "%s", err);
    CHECK(srv_cors_count(c) == 3);
    srv_cors_free(c);
    srv_cors_free(NULL);
}

static void test_parse_errors(void) {
    static const struct {
        const char *list, *says;
    } bad[] = {
        {"app.example.com", "expected http://host"},
        {"ftp://x.example", "expected http://host"},
        {"https://app.example.com/", "no path"},
        {"https://app.example.com/api", "no path"},
        {"https://user@app.example.com", "unexpected character"},
        {"https://app.example.com?x", "unexpected character"},
        {"https://", "expected http"},
        {"https://:8080", "no host"},
        {"https://app.example.com:0", "port"},
        {"https://app.example.com:65536", "port"},
        {"https://app.example.com:", "port"},
        {"https://app.example.com:1234567", "port"},
        {"https://[::1", "']'"},
        {"null", "sandboxed"},
        {"https://a.example,,https://b.example", "empty entry"},
        {"https://a.example,", "empty entry"},
        {"*,https://a.example", "not both"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct srv_cors *c = NULL;
        err[0] = 0;
        CHECK(srv_cors_new(bad[i].list, false, &c, err, sizeof err) == -1 && !c, "'%s' accepted",
              bad[i].list);
        CHECK(strstr(err, bad[i].says), "'%s': message '%s' lacks '%s'", bad[i].list, err,
              bad[i].says);
    }
}

static void test_normalize(void) {
    char out[SRV_CORS_MAX_ORIGIN];
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"HTTPS://App.Example.COM", "https://app.example.com"},
        {"https://app.example.com:443", "https://app.example.com"},
        {"http://app.example.com:80", "http://app.example.com"},
        {"http://app.example.com:443", "http://app.example.com:443"},
        {"https://app.example.com:8443", "https://app.example.com:8443"},
        {"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
        {"http://[::1]:8080", "http://[::1]:8080"},
        {"http://[FE80::1]", "http://[fe80::1]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(srv_cors_origin_normalize(cases[i].in, strlen(cases[i].in), out, err, sizeof err) ==
                  0,
              "%s: %s", cases[i].in, err);
        CHECK(!strcmp(out, cases[i].out), "%s -> %s, expected %s", cases[i].in, out, cases[i].out);
    }
}

static void test_off(void) {
    struct srv_cors_decision d;
    srv_cors_decide(NULL, "OPTIONS", "https://a.example", "POST", NULL, &d);
    CHECK(d.kind == SRV_CORS_NONE && d.nheaders == 0, "CORS off adds nothing, not even Vary");
    srv_cors_decide(NULL, "POST", "https://a.example", NULL, NULL, &d);
    CHECK(d.kind == SRV_CORS_NONE && d.nheaders == 0);
}

static void test_preflight_allowed(void) {
    struct srv_cors *c;
    CHECK(srv_cors_new("https://app.example.com,http://localhost:3000", false, &c, err,
                       sizeof err) == 0);
    struct srv_cors_decision d;
    const char *origin = "https://app.example.com";
    srv_cors_decide(c, "OPTIONS", origin, "POST", "POST", &d);
    CHECK(d.kind == SRV_CORS_PREFLIGHT);
    CHECK(hval(&d, "Access-Control-Allow-Origin") == origin, "the request's own Origin echoed");
    CHECK(!strcmp(hval(&d, "Access-Control-Allow-Methods"), "POST"));
    const char *ah = hval(&d, "Access-Control-Allow-Headers");
    CHECK(ah && strstr(ah, "Content-Type") && strstr(ah, "Authorization") &&
          strstr(ah, "Inference-Header-Content-Length") && strstr(ah, "X-Request-Id"));
    CHECK(hval(&d, "Access-Control-Max-Age") && atoi(hval(&d, "Access-Control-Max-Age")) > 0);
    CHECK(!strcmp(hval(&d, "Vary"), "Origin"));
    CHECK(!hval(&d, "Access-Control-Allow-Credentials"), "no cookies: credentials are not allowed");
    CHECK(!hval(&d, "Access-Control-Expose-Headers"), "exposing is for actual responses");
    srv_cors_decide(c, "OPTIONS", "http://localhost:3000", "GET", NULL, &d);
    CHECK(d.kind == SRV_CORS_PREFLIGHT);
    CHECK(!strcmp(hval(&d, "Access-Control-Allow-Methods"), SRV_CORS_DEFAULT_METHODS));
    /* The browser's serialization may differ in case or carry the default
     * port only in a hand-made request; it still matches, and what goes
     * back is exactly what was sent. */
    const char *odd = "HTTPS://APP.example.com:443";
    srv_cors_decide(c, "OPTIONS", odd, "POST", NULL, &d);
    CHECK(d.kind == SRV_CORS_PREFLIGHT && hval(&d, "Access-Control-Allow-Origin") == odd);
    srv_cors_free(c);
}

static void test_preflight_denied(void) {
    struct srv_cors *c;
    CHECK(srv_cors_new("https://app.example.com", false, &c, err, sizeof err) == 0);
    struct srv_cors_decision d;
    static const char *const others[] = {
        "https://evil.example",         "http://app.example.com",
        "https://app.example.com:8443", "https://app.example.com.evil",
        "https://sub.app.example.com",  "null",
        "https://app.example.com/",     "",
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        srv_cors_decide(c, "OPTIONS", others[i], "POST", NULL, &d);
        CHECK(d.kind == SRV_CORS_PREFLIGHT_DENIED, "%s", others[i]);
        CHECK(!any_cors(&d), "%s: a disallowed origin gets no CORS header", others[i]);
        CHECK(hval(&d, "Vary"), "Vary: Origin still, for caches");
        srv_cors_decide(c, "POST", others[i], NULL, NULL, &d);
        CHECK(d.kind == SRV_CORS_DENIED && !any_cors(&d), "%s", others[i]);
    }
    srv_cors_free(c);
}

static void test_not_preflight(void) {
    struct srv_cors *c;
    CHECK(srv_cors_new("https://app.example.com", false, &c, err, sizeof err) == 0);
    struct srv_cors_decision d;
    /* OPTIONS without Access-Control-Request-Method is a plain OPTIONS. */
    srv_cors_decide(c, "OPTIONS", "https://app.example.com", NULL, NULL, &d);
    CHECK(d.kind == SRV_CORS_ACTUAL);
    /* No Origin: a same-origin or non-browser request. */
    srv_cors_decide(c, "OPTIONS", NULL, "POST", NULL, &d);
    CHECK(d.kind == SRV_CORS_NONE && !any_cors(&d) && hval(&d, "Vary"));
    srv_cors_decide(c, "POST", NULL, NULL, NULL, &d);
    CHECK(d.kind == SRV_CORS_NONE && !any_cors(&d));
    srv_cors_free(c);
}

static void test_actual(void) {
    struct srv_cors *c;
    CHECK(srv_cors_new("https://app.example.com", false, &c, err, sizeof err) == 0);
    struct srv_cors_decision d;
    const char *origin = "https://app.example.com";
    srv_cors_decide(c, "POST", origin, NULL, NULL, &d);
    CHECK(d.kind == SRV_CORS_ACTUAL);
    CHECK(hval(&d, "Access-Control-Allow-Origin") == origin);
    const char *eh = hval(&d, "Access-Control-Expose-Headers");
    CHECK(eh && strstr(eh, "Server-Timing") && strstr(eh, "X-Request-Id") &&
          strstr(eh, "Retry-After") && strstr(eh, "WWW-Authenticate") &&
          strstr(eh, "Inference-Header-Content-Length"));
    CHECK(hval(&d, "Timing-Allow-Origin") == origin);
    CHECK(!hval(&d, "Access-Control-Allow-Methods") && !hval(&d, "Access-Control-Max-Age"));
    CHECK(!strcmp(hval(&d, "Vary"), "Origin"));
    srv_cors_free(c);
}

static void test_star(void) {
    struct srv_cors *c;
    struct srv_cors_decision d;
    const char *origin = "http://localhost:5173";
    CHECK(srv_cors_new("*", false, &c, err, sizeof err) == 0);
    srv_cors_decide(c, "POST", origin, NULL, NULL, &d);
    CHECK(d.kind == SRV_CORS_ACTUAL && !strcmp(hval(&d, "Access-Control-Allow-Origin"), "*"),
          "no tokens: a literal *");
    srv_cors_decide(c, "OPTIONS", "null", "POST", NULL, &d);
    CHECK(d.kind == SRV_CORS_PREFLIGHT_DENIED, "the null origin is never allowed by name");
    srv_cors_free(c);
    CHECK(srv_cors_new("*", true, &c, err, sizeof err) == 0);
    srv_cors_decide(c, "POST", origin, NULL, NULL, &d);
    CHECK(d.kind == SRV_CORS_ACTUAL && hval(&d, "Access-Control-Allow-Origin") == origin,
          "tokens: the origin itself, not *");
    srv_cors_decide(c, "OPTIONS", origin, "POST", NULL, &d);
    CHECK(d.kind == SRV_CORS_PREFLIGHT && hval(&d, "Access-Control-Allow-Origin") == origin);
    srv_cors_free(c);
}

int main(void) {
    t_suite = "cors";
    t_clear_imgclassd_env();
    RUN(test_parse_lists);
    RUN(test_parse_errors);
    RUN(test_normalize);
    RUN(test_off);
    RUN(test_preflight_allowed);
    RUN(test_preflight_denied);
    RUN(test_not_preflight);
    RUN(test_actual);
    RUN(test_star);
    return t_done();
}
