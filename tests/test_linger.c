/* test_linger.c: lingering close (server/linger.c) on real loopback TCP
 * sockets: a client still sending reads the whole answer and no reset, and
 * the byte, time and descriptor bounds hold. */
#include "test.h"

#include "linger.h"
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

static char err[256];
static int g_listen = -1;
static struct sockaddr_in g_addr;

/* A connected pair over loopback TCP (a socketpair has no resets). */
static int tcp_pair(int *client, int *server) {
    *client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*client < 0 || connect(*client, (struct sockaddr *)&g_addr, sizeof g_addr) != 0) return -1;
    *server = accept4(g_listen, NULL, NULL, SOCK_CLOEXEC);
    return *server < 0 ? -1 : 0;
}

/* Sends up to total bytes (or until the peer refuses them), reading what
 * comes back into resp meanwhile. Returns the bytes sent; *send_errno is
 * the errno that stopped sending, 0 if all went. */
static long send_reading(int fd, long total, char *resp, size_t cap, size_t *rlen,
                         int *send_errno) {
    static char blk[16384];
    long sent = 0;
    *send_errno = 0;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int64_t end = srv_now_ns() + 20 * (int64_t)1000000000;
    while (sent < total && srv_now_ns() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
        poll(&p, 1, 100);
        if (p.revents & POLLIN) {
            ssize_t r = recv(fd, resp + *rlen, cap - *rlen - 1, 0);
            if (r > 0) *rlen += (size_t)r;
        }
        if (p.revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t w = send(fd, blk, sizeof blk, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) {
                *send_errno = errno;
                break;
            }
            if (w > 0) sent += w;
        }
    }
    resp[*rlen] = 0;
    return sent;
}

/* Reads until EOF or error; returns 0 on a clean EOF, else the errno. */
static int read_to_eof(int fd, char *resp, size_t cap, size_t *rlen) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    for (;;) {
        ssize_t r = recv(fd, resp + *rlen, cap - *rlen - 1, 0);
        if (r == 0) break;
        if (r < 0) return errno;
        *rlen += (size_t)r;
    }
    resp[*rlen] = 0;
    return 0;
}

static int wait_count(struct srv_linger *l, int want, int ms) {
    for (int i = 0; i < ms / 10 && srv_linger_count(l) != want; i++)
        usleep(10000);
    return srv_linger_count(l) == want;
}

static const char answer[] = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 2\r\n\r\n{}";

static void test_answer_survives_upload(void) {
    struct srv_linger *l;
    CHECK(srv_linger_new(8, 64 << 20, 10, &l, err, sizeof err) == 0, "%s", err);
    int c, s;
    CHECK(tcp_pair(&c, &s) == 0);
    CHECK(write(s, answer, sizeof answer - 1) == (ssize_t)(sizeof answer - 1));
    CHECK(srv_linger_add(l, s) == 1);
    CHECK(srv_linger_count(l) == 1);
    char resp[4096];
    size_t rlen = 0;
    int e;
    long sent = send_reading(c, 8 << 20, resp, sizeof resp, &rlen, &e);
    CHECK(e == 0 && sent >= 8 << 20, "the upload went on without a reset (errno %d)", e);
    shutdown(c, SHUT_WR);
    CHECK(read_to_eof(c, resp, sizeof resp, &rlen) == 0, "clean end, no reset");
    CHECK(!strcmp(resp, answer), "got '%s'", resp);
    close(c);
    CHECK(wait_count(l, 0, 2000), "closed once the client finished");
    srv_linger_free(l);
}

static void test_byte_bound(void) {
    struct srv_linger *l;
    CHECK(srv_linger_new(8, 256 << 10, 10, &l, err, sizeof err) == 0, "%s", err);
    int c, s;
    CHECK(tcp_pair(&c, &s) == 0);
    CHECK(write(s, answer, sizeof answer - 1) > 0);
    CHECK(srv_linger_add(l, s) == 1);
    char resp[4096];
    size_t rlen = 0;
    int e;
    int64_t t0 = srv_now_ns();
    long sent = send_reading(c, 256 << 20, resp, sizeof resp, &rlen, &e);
    CHECK(e == ECONNRESET || e == EPIPE, "a client sending forever is cut (errno %d)", e);
    /* What the kernels buffer on both sides comes on top of the bound. */
    CHECK(sent < (32 << 20), "cut after %ld bytes", sent);
    CHECK(srv_now_ns() - t0 < 5 * (int64_t)1000000000);
    CHECK(!strncmp(resp, answer, rlen), "what arrived is the answer");
    close(c);
    CHECK(wait_count(l, 0, 1000));
    srv_linger_free(l);
}

static void test_time_bound(void) {
    struct srv_linger *l;
    CHECK(srv_linger_new(8, 64 << 20, 1, &l, err, sizeof err) == 0, "%s", err);
    int c, s;
    CHECK(tcp_pair(&c, &s) == 0);
    CHECK(srv_linger_add(l, s) == 1);
    /* A trickle: a byte every 100 ms is never idle, but time runs out. */
    int64_t t0 = srv_now_ns(), closed_ns = 0;
    for (int i = 0; i < 50 && !closed_ns; i++) {
        if (send(c, "x", 1, MSG_NOSIGNAL) < 0) break;
        usleep(100000);
        if (srv_linger_count(l) == 0) closed_ns = srv_now_ns();
    }
    CHECK(closed_ns, "still lingering after 5 s");
    double s_taken = (closed_ns - t0) * 1e-9;
    CHECK(s_taken > 0.8 && s_taken < 2.5, "closed after %.2f s (bound 1 s)", s_taken);
    close(c);
    srv_linger_free(l);
}

static void test_fd_bound_and_off(void) {
    struct srv_linger *l;
    CHECK(srv_linger_new(2, 1 << 20, 10, &l, err, sizeof err) == 0, "%s", err);
    int c[3], s[3];
    for (int i = 0; i < 3; i++)
        CHECK(tcp_pair(&c[i], &s[i]) == 0);
    CHECK(srv_linger_add(l, s[0]) == 1 && srv_linger_add(l, s[1]) == 1);
    CHECK(srv_linger_add(l, s[2]) == 0, "a third is closed at once");
    CHECK(srv_linger_count(l) == 2);
    char b;
    CHECK(recv(c[2], &b, 1, 0) == 0, "the client of the third sees the close");
    /* srv_linger_free closes what still lingers. */
    srv_linger_free(l);
    for (int i = 0; i < 2; i++) {
        struct pollfd p = {.fd = c[i], .events = POLLIN};
        CHECK(poll(&p, 1, 1000) == 1 && recv(c[i], &b, 1, 0) <= 0);
    }
    for (int i = 0; i < 3; i++)
        close(c[i]);
    CHECK(srv_linger_new(2, 0, 10, &l, err, sizeof err) == 0, "%s", err);
    int cc, ss;
    CHECK(tcp_pair(&cc, &ss) == 0);
    CHECK(srv_linger_add(l, ss) == 0, "--linger-bytes 0: closed at once");
    close(cc);
    srv_linger_free(l);
}

int main(void) {
    t_suite = "linger";
    signal(SIGPIPE, SIG_IGN);
    g_listen = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_addr.sin_family = AF_INET;
    g_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof g_addr;
    if (bind(g_listen, (struct sockaddr *)&g_addr, sizeof g_addr) != 0 || listen(g_listen, 16) ||
        getsockname(g_listen, (struct sockaddr *)&g_addr, &al) != 0) {
        printf("FAIL linger.setup: cannot listen on loopback\n");
        return 1;
    }
    RUN(test_answer_survives_upload);
    RUN(test_byte_bound);
    RUN(test_time_bound);
    RUN(test_fd_bound_and_off);
    close(g_listen);
    return t_done();
}
