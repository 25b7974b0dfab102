/* linger.c: one thread that drains and then closes the sockets of answered
 * connections whose clients may still be sending (see linger.h). */
#include "linger.h"

#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct lingerer {
    int fd;
    int64_t left;        /* bytes still to read before giving up */
    int64_t deadline_ns; /* srv_now_ns() clock */
    int64_t idle_ns;     /* closed when nothing arrives by then */
};

/* The adding threads append under mu and poke the wake pipe; only the
 * linger thread removes entries, so it can poll a copy without the lock. */
struct srv_linger {
    int max_fds;
    int64_t max_bytes;
    int64_t max_ns;
    pthread_mutex_t mu;
    struct lingerer *set; /* [max_fds], the first n in use; guarded by mu */
    int n;
    int stop;
    _Atomic int count;
    int wake[2];
    pthread_t thread;
};

static void *linger_main(void *arg) {
    struct srv_linger *l = arg;
    struct pollfd *pf = calloc((size_t)l->max_fds + 1, sizeof *pf);
    struct lingerer *mine = calloc((size_t)l->max_fds, sizeof *mine);
    static char sink[64 * 1024]; /* bytes nobody reads: shared by design */
    int n = 0;
    for (;;) {
        /* Take the new arrivals. */
        pthread_mutex_lock(&l->mu);
        int stop = l->stop;
        for (int i = 0; i < l->n && mine && n < l->max_fds; i++)
            mine[n++] = l->set[i];
        l->n = 0;
        pthread_mutex_unlock(&l->mu);
        if (stop || !pf || !mine) break;
        int64_t now = srv_now_ns(), next = now + (int64_t)SRV_LINGER_IDLE_MS * 1000000;
        pf[0] = (struct pollfd){.fd = l->wake[0], .events = POLLIN};
        for (int i = 0; i < n; i++) {
            pf[i + 1] = (struct pollfd){.fd = mine[i].fd, .events = POLLIN};
            int64_t until =
                mine[i].idle_ns < mine[i].deadline_ns ? mine[i].idle_ns : mine[i].deadline_ns;
            if (until < next) next = until;
        }
        int timeout = next > now ? (int)((next - now + 999999) / 1000000) : 0;
        if (poll(pf, (nfds_t)n + 1, timeout) < 0 && errno != EINTR) break;
        if (pf[0].revents & POLLIN) {
            char b[64];
            while (read(l->wake[0], b, sizeof b) > 0) {
            }
        }
        now = srv_now_ns();
        for (int i = 0; i < n; i++) {
            struct lingerer *g = &mine[i];
            int done = 0;
            if (pf[i + 1].revents) {
                ssize_t r = read(g->fd, sink, sizeof sink);
                if (r > 0) {
                    g->left -= r;
                    g->idle_ns = now + (int64_t)SRV_LINGER_IDLE_MS * 1000000;
                    done = g->left <= 0;
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    done = 1; /* the client closed, or reset */
                }
            }
            if (!done && (now >= g->deadline_ns || now >= g->idle_ns)) done = 1;
            if (done) {
                close(g->fd);
                atomic_fetch_sub(&l->count, 1);
                /* pf[i + 1] is stale once moved, but it is rebuilt
                 * before the next poll. */
                mine[i--] = mine[--n];
                pf[i + 2] = pf[n + 1];
            }
        }
    }
    for (int i = 0; i < n; i++)
        close(mine[i].fd);
    atomic_fetch_sub(&l->count, n);
    free(pf);
    free(mine);
    return NULL;
}

int srv_linger_new(int max_fds, int64_t max_bytes, int max_seconds, struct srv_linger **out,
                   char *err, size_t errlen) {
    *out = NULL;
    struct srv_linger *l = calloc(1, sizeof *l);
    if (!l || max_fds < 1 || !(l->set = calloc((size_t)max_fds, sizeof *l->set))) {
        free(l);
        snprintf(err, errlen, "lingering close: out of memory");
        return -1;
    }
    l->max_fds = max_fds;
    l->max_bytes = max_bytes;
    l->max_ns = (int64_t)max_seconds * 1000000000;
    pthread_mutex_init(&l->mu, NULL);
    if (pipe2(l->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "lingering close: pipe: %s", strerror(errno));
        goto fail;
    }
    int e = pthread_create(&l->thread, NULL, linger_main, l);
    if (e != 0) {
        snprintf(err, errlen, "lingering close: thread: %s", strerror(e));
        close(l->wake[0]);
        close(l->wake[1]);
        goto fail;
    }
    *out = l;
    return 0;
fail:
    pthread_mutex_destroy(&l->mu);
    free(l->set);
    free(l);
    return -1;
}

int srv_linger_add(struct srv_linger *l, int fd) {
    if (fd < 0) return 0;
    if (l->max_bytes <= 0 || l->max_ns <= 0) {
        close(fd);
        return 0;
    }
    /* The answer is written; end it visibly (FIN) so a client that waits
     * for the close, not for Content-Length, gets it, and never block. */
    shutdown(fd, SHUT_WR);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int64_t now = srv_now_ns();
    struct lingerer g = {
        .fd = fd,
        .left = l->max_bytes,
        .deadline_ns = now + l->max_ns,
        .idle_ns = now + (int64_t)SRV_LINGER_IDLE_MS * 1000000,
    };
    int taken = 0;
    pthread_mutex_lock(&l->mu);
    /* count covers both the queued and the polled entries. */
    if (!l->stop && atomic_load(&l->count) < l->max_fds) {
        l->set[l->n++] = g;
        atomic_fetch_add(&l->count, 1);
        taken = 1;
    }
    pthread_mutex_unlock(&l->mu);
    if (!taken) {
        close(fd);
        return 0;
    }
    char b = 1;
    ssize_t w = write(l->wake[1], &b, 1); /* full pipe: a wake-up is pending anyway */
    (void)w;
    return 1;
}

int srv_linger_count(struct srv_linger *l) {
    return atomic_load(&l->count);
}

void srv_linger_free(struct srv_linger *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_mutex_unlock(&l->mu);
    char b = 1;
    ssize_t w = write(l->wake[1], &b, 1);
    (void)w;
    pthread_join(l->thread, NULL);
    for (int i = 0; i < l->n; i++) /* added after the thread's last look */
        close(l->set[i].fd);
    close(l->wake[0]);
    close(l->wake[1]);
    pthread_mutex_destroy(&l->mu);
    free(l->set);
    free(l);
}
