/* test_http.c: the pure request-parsing helpers of server/http.c (topk,
 * X-Request-Id, UTF-8 sanitizing) and the --healthcheck probe against a
 * port nobody listens on. The HTTP service itself is tested end to end in
 * test_server.c. */
#include "test.h"

#include "server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_parse_topk(void) {
    static const struct {
        const char *v;
        int classes, ok, want;
    } cases[] = {
        {"5", 1000, 1, 5},          {"1", 1000, 1, 1},   {"1000", 1000, 1, 1000},
        {"0005", 1000, 1, 5},       {"0", 1000, 0, 0},   {"-1", 1000, 0, 0},
        {"1001", 1000, 0, 0},       {"1e9", 1000, 0, 0}, {"text", 1000, 0, 0},
        {"", 1000, 0, 0},           {" 5", 1000, 0, 0},  {"5 ", 1000, 0, 0},
        {"+5", 1000, 0, 0},         {"5.0", 1000, 0, 0}, {"0x5", 1000, 0, 0},
        {"9999999999", 1000, 0, 0}, {"3", 2, 0, 0},      {"2", 2, 1, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int k = -7;
        int rc = srv_parse_topk(cases[i].v, strlen(cases[i].v), cases[i].classes, &k);
        CHECK((rc == 0) == cases[i].ok && (!cases[i].ok || k == cases[i].want),
              "'%s' of %d: rc %d k %d", cases[i].v, cases[i].classes, rc, k);
    }
    int k;
    CHECK(srv_parse_topk(NULL, 0, 1000, &k) == -1, "a key without a value");
    CHECK(srv_parse_topk("55", 1, 1000, &k) == 0 && k == 5, "length is honoured");
}

static void test_request_id(void) {
    CHECK(srv_request_id_ok("abc-123.DEF_x"));
    CHECK(srv_request_id_ok("0af7651916cd43dd8448eb211c80319c"));
    CHECK(srv_request_id_ok("a/b+c=d:e"));
    CHECK(!srv_request_id_ok(""));
    CHECK(!srv_request_id_ok("has space"));
    CHECK(!srv_request_id_ok("<script>"));
    CHECK(!srv_request_id_ok("new\nline"));
    CHECK(!srv_request_id_ok("caf\xc3\xa9"));
    char id[80];
    memset(id, 'a', 64);
    id[64] = 0;
    CHECK(srv_request_id_ok(id), "64 characters refused");
    id[64] = 'a';
    id[65] = 0;
    CHECK(!srv_request_id_ok(id), "65 characters accepted");
}

static void test_utf8_sanitize(void) {
    char out[64];
    srv_utf8_sanitize(out, sizeof out, "plain.jpg", 9);
    CHECK(!strcmp(out, "plain.jpg"));
    srv_utf8_sanitize(out, sizeof out, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xb1", 14);
    CHECK(!strcmp(out, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xb1"), "valid UTF-8 kept");
    srv_utf8_sanitize(out, sizeof out,
                      "a\xff"
                      "b\xc0\xaf"
                      "c\xed\xa0\x80"
                      "d\n\x01",
                      12);
    CHECK(!strcmp(out, "a?b??c???d??"), "got '%s'", out);
    srv_utf8_sanitize(out, sizeof out, "x\0y", 3);
    CHECK(!strcmp(out, "x?y"), "NUL kept");
    srv_utf8_sanitize(out, sizeof out, "\xe2\x82", 2);
    CHECK(!strcmp(out, "??"), "truncated sequence: '%s'", out);
    char small[6];
    srv_utf8_sanitize(small, sizeof small, "abcdefgh", 8);
    CHECK(strlen(small) < sizeof small);
    srv_utf8_sanitize(small, 0, "abc", 3); /* writes nothing */
}

static void test_healthcheck_refused(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    char err[256] = "";
    CHECK(srv_healthcheck("127.0.0.1", ntohs(a.sin_port), 2000, err, sizeof err) == -1);
    CHECK(err[0], "no message");
    CHECK(srv_healthcheck("not-an-address", 80, 100, err, sizeof err) == -1);
}

int main(void) {
    t_suite = "http";
    RUN(test_parse_topk);
    RUN(test_request_id);
    RUN(test_utf8_sanitize);
    RUN(test_healthcheck_refused);
    return t_done();
}
