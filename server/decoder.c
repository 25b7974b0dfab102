/* decoder.c: the decode stage: a few threads that turn uploaded JPEGs into
 * tensors, so that no HTTP thread ever spends CPU on a decode.
 *
 * Why a stage of its own: an HTTP thread that decodes serves nothing else
 * meanwhile, and a crafted JPEG can cost far more to decode than its size
 * suggests, so /healthz and /readyz could wait behind a decode. Here the
 * HTTP thread hands the request over and suspends its connection; a
 * decoder thread decodes its images (bounded in work, deadline and client
 * presence by the request's own check), submits them to the batcher and
 * lets the batcher resume the connection, or resumes it itself when there
 * is nothing to queue. The number of threads bounds decode memory for the
 * whole process (threads x --max-decode-memory). Tasks run in FIFO order. */
#include "server.h"

#include <pthread.h>
#include <stdlib.h>

struct srv_decoder {
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* a task was queued, or stop */
    struct srv_task *head, *tail; /* guarded by mu */
    int depth;                    /* tasks queued, not yet started */
    int stop;                     /* no new tasks; threads exit when the queue is empty */
    int nthreads;
    pthread_t *threads;
};

static void *decoder_main(void *arg) {
    struct srv_decoder *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->head && !d->stop)
            pthread_cond_wait(&d->cv, &d->mu);
        struct srv_task *t = d->head;
        if (!t) break; /* stopping and nothing left */
        d->head = t->next;
        if (!d->head) d->tail = NULL;
        d->depth--;
        pthread_mutex_unlock(&d->mu);
        t->next = NULL;
        t->run(t); /* may free t */
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

int srv_decoder_new(int threads, struct srv_decoder **out, char *err, size_t errlen) {
    *out = NULL;
    struct srv_decoder *d = calloc(1, sizeof *d);
    if (!d || threads < 1 || !(d->threads = calloc((size_t)threads, sizeof *d->threads))) {
        free(d);
        snprintf(err, errlen, threads < 1 ? "--decode-threads must be >= 1" : "out of memory");
        return -1;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    for (; d->nthreads < threads; d->nthreads++) {
        if (pthread_create(&d->threads[d->nthreads], NULL, decoder_main, d) != 0) {
            snprintf(err, errlen, "cannot start decode thread %d of %d", d->nthreads + 1, threads);
            srv_decoder_free(d);
            return -1;
        }
    }
    *out = d;
    return 0;
}

int srv_decoder_submit(struct srv_decoder *d, struct srv_task *t) {
    pthread_mutex_lock(&d->mu);
    if (d->stop) {
        pthread_mutex_unlock(&d->mu);
        return -1;
    }
    t->next = NULL;
    if (d->tail)
        d->tail->next = t;
    else
        d->head = t;
    d->tail = t;
    d->depth++;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return 0;
}

int srv_decoder_depth(struct srv_decoder *d) {
    pthread_mutex_lock(&d->mu);
    int n = d->depth;
    pthread_mutex_unlock(&d->mu);
    return n;
}

void srv_decoder_free(struct srv_decoder *d) {
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    d->stop = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < d->nthreads; i++)
        pthread_join(d->threads[i], NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d->threads);
    free(d);
}
