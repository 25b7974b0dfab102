/* test_multipart.c: the multipart/form-data parser (server/multipart.c):
 * boundaries, well-formed bodies, every error, and a mutation loop that
 * must never read outside the body (run it under `make asan`). */
#include "test.h"

#include "server.h"

#include <stdint.h>

static char err[256];

static enum srv_mp_status parse(const char *body, size_t len, const char *b,
                                struct srv_mp_part *parts, int max, int *n) {
    err[0] = 0;
    return srv_multipart_parse((const unsigned char *)body, len, b, parts, max, n, err, sizeof err);
}

static void test_boundary(void) {
    char b[SRV_MP_MAX_BOUNDARY + 1];
    CHECK(srv_multipart_boundary("multipart/form-data; boundary=abc", b, sizeof b) == SRV_MP_OK);
    CHECK(!strcmp(b, "abc"));
    CHECK(srv_multipart_boundary("multipart/form-data; charset=x; BOUNDARY=\"a b;c\"", b,
                                 sizeof b) == SRV_MP_OK);
    CHECK(!strcmp(b, "a b;c"), "%s", b);
    CHECK(srv_multipart_boundary("multipart/form-data;boundary=----WebKitFormBoundary7MA4YWxk", b,
                                 sizeof b) == SRV_MP_OK);
    CHECK(!strcmp(b, "----WebKitFormBoundary7MA4YWxk"));
    CHECK(srv_multipart_boundary("multipart/form-data", b, sizeof b) == SRV_MP_ERR_BOUNDARY);
    CHECK(srv_multipart_boundary("multipart/form-data; boundary=", b, sizeof b) ==
          SRV_MP_ERR_BOUNDARY);
    CHECK(srv_multipart_boundary("multipart/form-data; boundary=\"\"", b, sizeof b) ==
          SRV_MP_ERR_BOUNDARY);
    CHECK(srv_multipart_boundary("multipart/form-data; xboundary=abc", b, sizeof b) ==
          SRV_MP_ERR_BOUNDARY);
    CHECK(srv_multipart_boundary(NULL, b, sizeof b) == SRV_MP_ERR_BOUNDARY);
    char ct[200];
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%071d", 7);
    CHECK(srv_multipart_boundary(ct, b, sizeof b) == SRV_MP_ERR_BOUNDARY, "71 chars accepted");
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%070d", 7);
    CHECK(srv_multipart_boundary(ct, b, sizeof b) == SRV_MP_OK, "70 chars refused");
    CHECK(srv_multipart_boundary("multipart/form-data; boundary=\"a\tb\"", b, sizeof b) ==
          SRV_MP_ERR_BOUNDARY);
    CHECK(srv_multipart_boundary("multipart/form-data; boundary=\"ab \"", b, sizeof b) ==
          SRV_MP_ERR_BOUNDARY);
}

static void test_two_parts(void) {
    /* Binary data with CR, LF and a near-delimiter inside. */
    static const char body[] =
        "preamble to ignore\r\n"
        "--XX\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n"
        "\r\n"
        "\xff\xd8\r\n--X\r\n-XX--XX\n\x00end\r\n"
        "--XX  \t\r\n"
        "content-disposition: FORM-DATA; filename=b.png; name=pic\r\n"
        "\r\n"
        "\r\n"
        "--XX--\r\n"
        "epilogue --XX\r\n";
    struct srv_mp_part parts[4];
    int n = -1;
    CHECK(parse(body, sizeof body - 1, "XX", parts, 4, &n) == SRV_MP_OK, "%s", err);
    CHECK(n == 2, "%d parts", n);
    CHECK(!strcmp(parts[0].name, "file") && !strcmp(parts[0].filename, "a.jpg") &&
          parts[0].has_filename && !strcmp(parts[0].content_type, "image/jpeg"));
    static const char data0[] = "\xff\xd8\r\n--X\r\n-XX--XX\n\x00end";
    CHECK(parts[0].len == sizeof data0 - 1 && !memcmp(parts[0].data, data0, parts[0].len),
          "data of part 1 (%zu bytes)", parts[0].len);
    CHECK(!strcmp(parts[1].name, "pic") && !strcmp(parts[1].filename, "b.png") &&
          !parts[1].content_type[0]);
    CHECK(parts[1].len == 0, "part 2 has %zu bytes", parts[1].len);
    CHECK(srv_multipart_is_file(&parts[0]) && srv_multipart_is_file(&parts[1]));
}

static void test_fields_and_is_file(void) {
    static const char body[] = "--b\r\n"
                               "Content-Disposition: form-data; name=\"note\"\r\n\r\n"
                               "hello\r\n"
                               "--b\r\n"
                               "Content-Disposition: form-data; name=\"img\"\r\n"
                               "Content-Type: application/octet-stream\r\n\r\n"
                               "bytes\r\n"
                               "--b\r\n"
                               "Content-Disposition: form-data; name=\"t\"\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n\r\n"
                               "x\r\n"
                               "--b--";
    struct srv_mp_part parts[4];
    int n;
    CHECK(parse(body, sizeof body - 1, "b", parts, 4, &n) == SRV_MP_OK, "%s", err);
    CHECK(n == 3);
    CHECK(!srv_multipart_is_file(&parts[0]), "plain field taken for a file");
    CHECK(srv_multipart_is_file(&parts[1]), "octet-stream part not a file");
    CHECK(!srv_multipart_is_file(&parts[2]), "text/plain field taken for a file");
    CHECK(parts[0].len == 5 && !memcmp(parts[0].data, "hello", 5));
}

/* srv_multipart_parse_files keeps only file parts: 40 plain fields around
 * two files leave exactly the two files, and only files count against the
 * limit. */
static void test_parse_files_skips_fields(void) {
    char body[8192];
    size_t len = 0;
    for (int i = 0; i < 40; i++) {
        len += (size_t)snprintf(body + len, sizeof body - len,
                                "--b\r\nContent-Disposition: form-data; name=\"t%d\"\r\n\r\nv\r\n", i);
        if (i == 10 || i == 30)
            len += (size_t)snprintf(body + len, sizeof body - len,
                                    "--b\r\nContent-Disposition: form-data; name=\"f\"; "
                                    "filename=\"f%d.jpg\"\r\n\r\nJPEG%d\r\n",
                                    i, i);
    }
    len += (size_t)snprintf(body + len, sizeof body - len, "--b--\r\n");
    struct srv_mp_part parts[2];
    int n = -1;
    CHECK(srv_multipart_parse_files((const unsigned char *)body, len, "b", parts, 2, &n, err,
                                    sizeof err) == SRV_MP_OK && n == 2, "%s", err);
    CHECK(!strcmp(parts[0].filename, "f10.jpg") && parts[1].len == 6 &&
          !memcmp(parts[1].data, "JPEG30", 6));
    CHECK(srv_multipart_parse_files((const unsigned char *)body, len, "b", parts, 1, &n, err,
                                    sizeof err) == SRV_MP_ERR_TOO_MANY && strstr(err, "file parts"),
          "%s", err);
    static const char fields_only[] = "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n"
                                      "1\r\n--b--";
    CHECK(srv_multipart_parse_files((const unsigned char *)fields_only, sizeof fields_only - 1, "b",
                                    parts, 2, &n, err, sizeof err) == SRV_MP_OK && n == 0);
}

static void test_long_filename_truncated(void) {
    char body[4096];
    char name[1000];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    int len = snprintf(body, sizeof body,
                       "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"%s\"\r\n\r\n"
                       "d\r\n--b--\r\n",
                       name);
    struct srv_mp_part parts[1];
    int n;
    CHECK(parse(body, (size_t)len, "b", parts, 1, &n) == SRV_MP_OK, "%s", err);
    CHECK(strlen(parts[0].filename) == sizeof parts[0].filename - 1);
}

static void test_errors(void) {
    struct srv_mp_part parts[8];
    int n;
    static const struct {
        const char *body;
        enum srv_mp_status st;
        const char *what;
    } cases[] = {
        {"", SRV_MP_ERR_SYNTAX, "empty body"},
        {"no delimiter here at all", SRV_MP_ERR_SYNTAX, "no delimiter"},
        {"--b--\r\n", SRV_MP_ERR_SYNTAX, "no parts"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\r\ndata without end",
         SRV_MP_ERR_UNTERMINATED, "unterminated part"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n", SRV_MP_ERR_UNTERMINATED,
         "headers without end"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b", SRV_MP_ERR_UNTERMINATED,
         "no close delimiter"},
        {"--b", SRV_MP_ERR_UNTERMINATED, "delimiter only"},
        {"--bjunk\r\n\r\nx\r\n--b--", SRV_MP_ERR_SYNTAX, "junk after delimiter"},
        {"--b\r\nno colon line\r\n\r\nx\r\n--b--", SRV_MP_ERR_SYNTAX, "header without colon"},
        {"--b\r\n: empty name\r\n\r\nx\r\n--b--", SRV_MP_ERR_SYNTAX, "empty header name"},
        {"--b\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--b--", SRV_MP_ERR_SYNTAX,
         "not form-data"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum srv_mp_status st = parse(cases[i].body, strlen(cases[i].body), "b", parts, 8, &n);
        CHECK(st == cases[i].st, "%s: status %d, expected %d (%s)", cases[i].what, st, cases[i].st,
              err);
        CHECK(err[0], "%s: no message", cases[i].what);
    }
    /* A NUL inside a header line. */
    static const char nul[] = "--b\r\nContent-Type: a\0b\r\n\r\nx\r\n--b--";
    CHECK(parse(nul, sizeof nul - 1, "b", parts, 8, &n) == SRV_MP_ERR_SYNTAX);
    /* Bad boundary arguments. */
    CHECK(parse("--b--", 5, "", parts, 8, &n) == SRV_MP_ERR_BOUNDARY);
    CHECK(parse("--b--", 5, NULL, parts, 8, &n) == SRV_MP_ERR_BOUNDARY);
}

static void test_limits(void) {
    /* Too many parts. */
    char body[8192];
    size_t len = 0;
    for (int i = 0; i < 20; i++)
        len +=
            (size_t)snprintf(body + len, sizeof body - len,
                             "--b\r\nContent-Disposition: form-data; name=\"p%d\"\r\n\r\nx\r\n", i);
    len += (size_t)snprintf(body + len, sizeof body - len, "--b--\r\n");
    struct srv_mp_part parts[20];
    int n;
    CHECK(parse(body, len, "b", parts, 19, &n) == SRV_MP_ERR_TOO_MANY, "%s", err);
    CHECK(parse(body, len, "b", parts, 20, &n) == SRV_MP_OK && n == 20, "%s", err);

    /* A header block just over the limit, and one at it. */
    size_t big = SRV_MP_MAX_HEADER + 100;
    char *b = malloc(big + 200);
    size_t k = (size_t)sprintf(b, "--b\r\nX-Pad: ");
    memset(b + k, 'a', big);
    k += big;
    k += (size_t)sprintf(b + k, "\r\n\r\nx\r\n--b--\r\n");
    CHECK(parse(b, k, "b", parts, 4, &n) == SRV_MP_ERR_HEADER_SIZE, "%s", err);
    k = (size_t)sprintf(b, "--b\r\nX-Pad: ");
    size_t fit = SRV_MP_MAX_HEADER - k + 5; /* headers counted from after "--b\r\n" */
    memset(b + k, 'a', fit - 7);
    k += fit - 7;
    k += (size_t)sprintf(b + k, "\r\n\r\nx\r\n--b--\r\n");
    CHECK(parse(b, k, "b", parts, 4, &n) == SRV_MP_OK, "header at the limit: %s", err);
    free(b);
}

/* Deterministic mutations of a valid body: the parser must never crash or
 * hand back a part outside the body (ASan catches stray reads). */
static void test_mutations(void) {
    static const char seed[] = "--xyz\r\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
                               "Content-Type: image/jpeg\r\n\r\n"
                               "DATA\r\n--x\r\n"
                               "--xyz\r\n"
                               "Content-Disposition: form-data; name=\"g\"\r\n\r\n"
                               "v\r\n"
                               "--xyz--\r\n";
    const size_t n0 = sizeof seed - 1;
    uint64_t rng = 0x1234567;
    struct srv_mp_part parts[4];
    for (int it = 0; it < 20000; it++) {
        size_t len = n0;
        unsigned char *b = malloc(n0 + 64);
        memcpy(b, seed, n0);
        int edits = 1 + it % 4;
        for (int e = 0; e < edits; e++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(rng >> 33) % (len ? len : 1);
            switch ((rng >> 20) % 4) {
            case 0: /* flip a byte */
                if (len) b[pos] = (unsigned char)(rng >> 8);
                break;
            case 1: /* truncate */
                len = pos;
                break;
            case 2: /* insert a CR or LF or '-' */
                if (len < n0 + 60) {
                    memmove(b + pos + 1, b + pos, len - pos);
                    b[pos] = "\r\n-"[(rng >> 40) % 3];
                    len++;
                }
                break;
            default: /* delete a byte */
                if (len) {
                    memmove(b + pos, b + pos + 1, len - pos - 1);
                    len--;
                }
                break;
            }
        }
        /* An exact-size copy so any read past len is out of bounds. */
        unsigned char *exact = malloc(len ? len : 1);
        memcpy(exact, b, len);
        free(b);
        int n = 0;
        enum srv_mp_status st =
            srv_multipart_parse(exact, len, "xyz", parts, 4, &n, err, sizeof err);
        int bad = st == SRV_MP_OK && (n < 1 || n > 4);
        for (int i = 0; st == SRV_MP_OK && i < n; i++)
            if (parts[i].data < exact || parts[i].data + parts[i].len > exact + len) bad = 1;
        free(exact);
        CHECK(!bad, "iteration %d: a part outside the body", it);
    }
}

int main(void) {
    t_suite = "multipart";
    RUN(test_boundary);
    RUN(test_two_parts);
    RUN(test_fields_and_is_file);
    RUN(test_parse_files_skips_fields);
    RUN(test_long_filename_truncated);
    RUN(test_errors);
    RUN(test_limits);
    RUN(test_mutations);
    return t_done();
}
