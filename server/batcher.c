/* batcher.c: THE batching policy. A bounded FIFO of preprocessed images, one
 * dispatcher thread that forms batches, and workers that each own an engine
 * context on the shared model and run one batch at a time.
 *
 * Policy, in one place:
 *   - A batch is formed when a worker is idle and either --max-batch images
 *     wait, or the oldest has waited --batch-timeout-us, or no other request
 *     is on its way (announced by the HTTP layer while it reads and decodes
 *     a body: srv_batcher_arrival). It takes the oldest images, up to
 *     --max-batch. Under load workers are never idle for long, so batches
 *     fill to --max-batch by themselves; at low load an image waits for
 *     company only while company is actually coming, and never longer than
 *     the batch timeout, so a lone client pays no batching delay.
 *   - The queue holds at most --queue-limit images. A submit that does not
 *     fit fails at once (503) with Retry-After estimated from the queue
 *     length and the recent batch latency; nothing ever blocks on it.
 *   - Each image has a deadline (arrival + --request-timeout-ms). One that
 *     passes while queued completes with SRV_JOB_EXPIRED (504); the
 *     dispatcher wakes for the earliest deadline, so this happens on time
 *     even when every worker is busy.
 *   - A queued image whose client hung up is dropped before inference
 *     (SRV_JOB_CANCELLED), checked when a batch is formed and when the
 *     queue is full, so it frees its slot. A broken connection (reset,
 *     error) is always dropped. A FIN alone (POLLRDHUP) is what a closed
 *     client sends, but also one that only half-closed after sending its
 *     request and still waits for the answer; the two look the same from
 *     here. So a FIN drops the image only under pressure: when the queue
 *     is full or at least half full. Below that the image runs, a
 *     half-closing client gets its answer, and a closed one costs one slot
 *     of a batch that had room anyway.
 *   - On stop, images already queued still run (no accepted request lost).
 *
 * Locking: one mutex guards the queue and worker hand-off; job callbacks
 * always run with no batcher lock held. */
#include "server.h"

#include <assert.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct worker {
    struct srv_batcher *b;
    pthread_t thread;
    pthread_cond_t cond; /* a batch was handed over, or quit */
    struct eng_ctx *ctx;
    float *in;              /* [max_batch][3][size][size] */
    float *logits;          /* [max_batch][num_classes] */
    struct srv_job **batch; /* [max_batch]; set by the dispatcher */
    int n;                  /* images in batch; 0 = idle */
    int quit;
    int started, warm; /* thread running; warm-up forward done */
    enum eng_status warm_status;
};

struct srv_batcher {
    const struct eng_model *model;
    struct srv_batcher_opts o;
    int size, classes;
    size_t in_floats; /* per image */

    pthread_mutex_t mu;
    pthread_cond_t cond; /* dispatcher: new job, idle worker, stop */
    pthread_cond_t warm_cond;
    struct srv_job *head, *tail; /* FIFO by enqueue time */
    int depth;
    int nidle;
    int arriving; /* requests being read or decoded (srv_batcher_arrival) */
    int stopping; /* no more submits; run what is queued, then exit */
    int dispatcher_started;
    double batch_ewma_s; /* recent forward pass time of a batch */

    pthread_t dispatcher;
    struct worker *w;
};

/* ------------------------------------------------------------------------ */
/* Queue helpers (mu held)                                                  */
/* ------------------------------------------------------------------------ */

static void q_remove(struct srv_batcher *b, struct srv_job *j) {
    if (j->prev)
        j->prev->next = j->next;
    else
        b->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        b->tail = j->prev;
    j->prev = j->next = NULL;
    b->depth--;
}

static void q_push(struct srv_batcher *b, struct srv_job *j) {
    j->prev = b->tail;
    j->next = NULL;
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->depth++;
}

/* Appends j to a singly linked list of jobs to complete after unlocking
 * (reuses the next pointer; the job has left the queue). */
static void done_push(struct srv_job **list, struct srv_job *j) {
    j->next = *list;
    *list = j;
}

static void done_run(struct srv_job *list) {
    while (list) {
        struct srv_job *next = list->next;
        list->next = NULL;
        list->done(list);
        list = next;
    }
}

/* The client behind fd: 0 connected, 1 it sent FIN (closed, or only
 * half-closed), 2 the connection is broken (reset, error). */
static int client_state(int fd) {
    if (fd < 0) return 0;
    struct pollfd pf = {.fd = fd, .events = POLLRDHUP};
    if (poll(&pf, 1, 0) <= 0) return 0;
    if (pf.revents & (POLLHUP | POLLERR | POLLNVAL)) return 2;
    return (pf.revents & POLLRDHUP) ? 1 : 0;
}

/* Moves every queued job whose client is gone to *done: broken
 * connections always, FINs only when drop_fin (queue under pressure). */
static int sweep_cancelled(struct srv_batcher *b, struct srv_job **done, int drop_fin) {
    int n = 0;
    for (struct srv_job *j = b->head, *next; j; j = next) {
        next = j->next;
        int st = client_state(j->client_fd);
        if (st == 2 || (st == 1 && drop_fin)) {
            q_remove(b, j);
            j->status = SRV_JOB_CANCELLED;
            done_push(done, j);
            n++;
        }
    }
    if (n) srv_metrics_cancelled(n);
    return n;
}

/* Moves every queued job whose deadline has passed to *done; returns the
 * earliest deadline still pending (0 = none). */
static int64_t sweep_expired(struct srv_batcher *b, int64_t now, struct srv_job **done) {
    int64_t earliest = 0;
    int n = 0;
    for (struct srv_job *j = b->head, *next; j; j = next) {
        next = j->next;
        if (!j->deadline_ns) continue;
        if (j->deadline_ns <= now) {
            q_remove(b, j);
            j->status = SRV_JOB_EXPIRED;
            j->queue_s = (now - j->enq_ns) * 1e-9;
            done_push(done, j);
            n++;
        } else if (!earliest || j->deadline_ns < earliest) {
            earliest = j->deadline_ns;
        }
    }
    if (n) srv_metrics_expired(n);
    return earliest;
}

/* Seconds until n more images would fit: the batches ahead of them across
 * all workers, plus the one running, at the recent batch latency. */
static int retry_after(const struct srv_batcher *b, int n) {
    double per_round = (double)b->o.max_batch * b->o.workers;
    int excess = b->depth + n - b->o.queue_limit; /* images that must leave first */
    double rounds = ceil((excess > 1 ? excess : 1) / per_round);
    double s = ceil((rounds + 1) * b->batch_ewma_s); /* + the batches running now */
    if (s < 1) s = 1;
    if (s > 60) s = 60;
    return (int)s;
}

/* ------------------------------------------------------------------------ */
/* Dispatcher                                                               */
/* ------------------------------------------------------------------------ */

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *mu, int64_t until_ns) {
    if (!until_ns) {
        pthread_cond_wait(c, mu);
        return;
    }
    struct timespec ts = {.tv_sec = until_ns / 1000000000, .tv_nsec = until_ns % 1000000000};
    pthread_cond_timedwait(c, mu, &ts); /* the cond uses CLOCK_MONOTONIC */
}

static void *dispatcher_main(void *arg) {
    struct srv_batcher *b = arg;
    const int64_t timeout_ns = (int64_t)b->o.batch_timeout_us * 1000;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        struct srv_job *done = NULL;
        int64_t now = srv_now_ns();
        int64_t wake = sweep_expired(b, now, &done);

        if (b->depth > 0 && b->nidle > 0) {
            int64_t due = b->head->enq_ns + timeout_ns;
            if (b->depth >= b->o.max_batch || now >= due || b->arriving == 0 || b->stopping) {
                sweep_cancelled(b, &done, b->depth * 2 >= b->o.queue_limit);
                struct worker *w = NULL;
                for (int i = 0; i < b->o.workers && !w; i++)
                    if (b->w[i].n == 0) w = &b->w[i];
                assert(w); /* nidle > 0 */
                int n = 0;
                while (b->head && n < b->o.max_batch) {
                    struct srv_job *j = b->head;
                    q_remove(b, j);
                    w->batch[n++] = j;
                }
                if (n > 0) {
                    w->n = n;
                    b->nidle--;
                    pthread_cond_signal(&w->cond);
                }
                pthread_mutex_unlock(&b->mu);
                done_run(done);
                pthread_mutex_lock(&b->mu);
                continue; /* maybe another idle worker and more images */
            }
            if (!wake || due < wake) wake = due;
        }
        if (b->stopping && b->depth == 0 && b->nidle == b->o.workers) break;

        if (done) {
            pthread_mutex_unlock(&b->mu);
            done_run(done);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        timed_wait(&b->cond, &b->mu, wake);
    }
    for (int i = 0; i < b->o.workers; i++) {
        b->w[i].quit = 1;
        pthread_cond_signal(&b->w[i].cond);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Workers                                                                  */
/* ------------------------------------------------------------------------ */

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct srv_batcher *b = w->b;

    /* Warm-up: one forward pass touches the code paths and the workspace
     * for a single image, so the first request does not pay for it. */
    memset(w->in, 0, b->in_floats * sizeof(float));
    int64_t t0 = srv_now_ns();
    enum eng_status st = eng_ctx_forward(w->ctx, w->in, 1, w->logits);
    double warm_s = (srv_now_ns() - t0) * 1e-9;
    pthread_mutex_lock(&b->mu);
    w->warm = 1;
    w->warm_status = st;
    /* A first guess for Retry-After: a full batch costs about max_batch
     * single images. */
    if (warm_s * b->o.max_batch > b->batch_ewma_s) b->batch_ewma_s = warm_s * b->o.max_batch;
    pthread_cond_broadcast(&b->warm_cond);

    for (;;) {
        while (w->n == 0 && !w->quit)
            pthread_cond_wait(&w->cond, &b->mu);
        if (w->n == 0) break; /* quit with nothing assigned */
        int n = w->n;
        pthread_mutex_unlock(&b->mu);

        int64_t start = srv_now_ns();
        for (int i = 0; i < n; i++)
            memcpy(w->in + (size_t)i * b->in_floats, w->batch[i]->input,
                   b->in_floats * sizeof(float));
        int64_t f0 = srv_now_ns();
        st = eng_ctx_forward(w->ctx, w->in, n, w->logits);
        double infer_s = (srv_now_ns() - f0) * 1e-9;
        srv_metrics_batch(n, infer_s);

        struct srv_job *done = NULL;
        int ok = 0;
        for (int i = n - 1; i >= 0; i--) {
            struct srv_job *j = w->batch[i];
            j->queue_s = (start - j->enq_ns) * 1e-9;
            j->infer_s = infer_s;
            j->batch_size = n;
            srv_metrics_queue_wait(j->queue_s);
            if (st == ENG_OK) {
                memcpy(j->logits, w->logits + (size_t)i * b->classes,
                       (size_t)b->classes * sizeof(float));
                j->status = SRV_JOB_OK;
                ok++;
            } else {
                j->status = SRV_JOB_FAILED;
            }
            w->batch[i] = NULL;
            done_push(&done, j);
        }
        srv_metrics_images(ok);
        done_run(done);

        pthread_mutex_lock(&b->mu);
        b->batch_ewma_s = 0.8 * b->batch_ewma_s + 0.2 * infer_s;
        w->n = 0;
        b->nidle++;
        pthread_cond_signal(&b->cond);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */
/* ------------------------------------------------------------------------ */

enum eng_status srv_batcher_new(const struct eng_model *m, const struct srv_batcher_opts *o,
                                struct srv_batcher **out, char *err, size_t errlen) {
    *out = NULL;
    if (!m || !o || o->workers < 1 || o->max_batch < 1 || o->queue_limit < 1 ||
        o->batch_timeout_us < 0) {
        if (err) snprintf(err, errlen, "batcher: invalid options");
        return ENG_ERR_ARG;
    }
    const struct eng_model_info *info = eng_model_get_info(m);
    struct srv_batcher *b = calloc(1, sizeof *b);
    if (!b) {
        if (err) snprintf(err, errlen, "batcher: out of memory");
        return ENG_ERR_NOMEM;
    }
    b->model = m;
    b->o = *o;
    b->size = info->preproc.crop;
    b->classes = info->num_classes;
    b->in_floats = (size_t)3 * b->size * b->size;
    b->batch_ewma_s = 0.05;

    /* The dispatcher's waits have deadlines on the monotonic clock. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cond, &ca);
    pthread_cond_init(&b->warm_cond, NULL);
    pthread_condattr_destroy(&ca);

    b->w = calloc((size_t)o->workers, sizeof *b->w);
    if (!b->w) {
        b->o.workers = 0;
        goto nomem;
    }
    for (int i = 0; i < o->workers; i++) {
        b->w[i].b = b;
        pthread_cond_init(&b->w[i].cond, NULL);
    }
    for (int i = 0; i < o->workers; i++) {
        struct worker *w = &b->w[i];
        w->in = malloc((size_t)o->max_batch * b->in_floats * sizeof(float));
        w->logits = malloc((size_t)o->max_batch * b->classes * sizeof(float));
        w->batch = calloc((size_t)o->max_batch, sizeof *w->batch);
        if (!w->in || !w->logits || !w->batch) goto nomem;
        enum eng_status st = eng_ctx_new(m, o->max_batch, b->size, &w->ctx, err, errlen);
        if (st != ENG_OK) {
            srv_batcher_free(b);
            return st;
        }
    }

    /* Threads: workers first (each warms up), then the dispatcher. */
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < o->workers; i++) {
        if (pthread_create(&b->w[i].thread, NULL, worker_main, &b->w[i]) != 0) {
            pthread_mutex_unlock(&b->mu);
            if (err) snprintf(err, errlen, "batcher: cannot start worker thread %d", i);
            srv_batcher_free(b);
            return ENG_ERR_NOMEM;
        }
        b->w[i].started = 1;
    }
    enum eng_status warm = ENG_OK;
    for (int i = 0; i < o->workers; i++) {
        while (!b->w[i].warm)
            pthread_cond_wait(&b->warm_cond, &b->mu);
        if (b->w[i].warm_status != ENG_OK) warm = b->w[i].warm_status;
    }
    b->nidle = o->workers;
    pthread_mutex_unlock(&b->mu);
    if (warm != ENG_OK) {
        if (err) snprintf(err, errlen, "warm-up forward pass failed: %s", eng_status_name(warm));
        srv_batcher_free(b);
        return warm;
    }
    if (pthread_create(&b->dispatcher, NULL, dispatcher_main, b) != 0) {
        if (err) snprintf(err, errlen, "batcher: cannot start the dispatcher thread");
        srv_batcher_free(b);
        return ENG_ERR_NOMEM;
    }
    b->dispatcher_started = 1;
    *out = b;
    return ENG_OK;

nomem:
    if (err) snprintf(err, errlen, "batcher: out of memory");
    srv_batcher_free(b);
    return ENG_ERR_NOMEM;
}

/* Whether n more images fit, with b->mu held: when the queue looks full,
 * requests whose clients hung up are swept out first (onto *done). */
static enum srv_submit_status room_locked(struct srv_batcher *b, int n, struct srv_job **done,
                                          int *retry_after_s) {
    if (b->stopping) return SRV_SUBMIT_STOPPED;
    if (b->depth + n > b->o.queue_limit) sweep_cancelled(b, done, 1);
    if (b->depth + n <= b->o.queue_limit) return SRV_SUBMIT_OK;
    if (retry_after_s) *retry_after_s = retry_after(b, n);
    return SRV_SUBMIT_FULL;
}

enum srv_submit_status srv_batcher_submit(struct srv_batcher *b, struct srv_job **jobs, int n,
                                          int *retry_after_s) {
    struct srv_job *done = NULL;
    pthread_mutex_lock(&b->mu);
    enum srv_submit_status rc = room_locked(b, n, &done, retry_after_s);
    if (rc == SRV_SUBMIT_OK) {
        int64_t now = srv_now_ns();
        for (int i = 0; i < n; i++) {
            jobs[i]->status = SRV_JOB_PENDING;
            jobs[i]->enq_ns = now;
            q_push(b, jobs[i]);
        }
        pthread_cond_signal(&b->cond);
    }
    pthread_mutex_unlock(&b->mu);
    if (rc == SRV_SUBMIT_FULL) srv_metrics_rejected(n);
    done_run(done);
    return rc;
}

enum srv_submit_status srv_batcher_has_room(struct srv_batcher *b, int n, int *retry_after_s) {
    struct srv_job *done = NULL;
    pthread_mutex_lock(&b->mu);
    enum srv_submit_status rc = room_locked(b, n, &done, retry_after_s);
    pthread_mutex_unlock(&b->mu);
    done_run(done);
    return rc;
}

void srv_batcher_arrival(struct srv_batcher *b, int delta) {
    pthread_mutex_lock(&b->mu);
    b->arriving += delta;
    assert(b->arriving >= 0);
    /* The last one landed (or gave up): queued images need not wait. */
    if (b->arriving == 0 && b->depth > 0) pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
}

int srv_batcher_depth(struct srv_batcher *b) {
    pthread_mutex_lock(&b->mu);
    int d = b->depth;
    pthread_mutex_unlock(&b->mu);
    return d;
}

void srv_batcher_stop(struct srv_batcher *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
    if (b->dispatcher_started) {
        pthread_join(b->dispatcher, NULL);
        b->dispatcher_started = 0;
    } else {
        /* Never dispatched (failed start): just tell the workers to quit. */
        pthread_mutex_lock(&b->mu);
        for (int i = 0; i < b->o.workers; i++) {
            b->w[i].quit = 1;
            pthread_cond_signal(&b->w[i].cond);
        }
        pthread_mutex_unlock(&b->mu);
    }
    for (int i = 0; i < b->o.workers; i++)
        if (b->w[i].started) {
            pthread_join(b->w[i].thread, NULL);
            b->w[i].started = 0;
        }
}

void srv_batcher_free(struct srv_batcher *b) {
    if (!b) return;
    srv_batcher_stop(b);
    if (b->w) {
        for (int i = 0; i < b->o.workers; i++) {
            struct worker *w = &b->w[i];
            eng_ctx_free(w->ctx);
            free(w->in);
            free(w->logits);
            free(w->batch);
            pthread_cond_destroy(&w->cond);
        }
        free(b->w);
    }
    pthread_cond_destroy(&b->cond);
    pthread_cond_destroy(&b->warm_cond);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
