/* pool.c: the engine's process-wide compute pool. Every context splits each
 * convolution into tasks and hands them here, so one image at idle gets all
 * cores and several busy workers share the cores instead of oversubscribing. */
#include "engine_impl.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

/* One batch of tasks from one caller. Lives on the caller's stack. */
struct pool_job {
    void (*fn)(void *arg, int task);
    void *arg;
    int ntasks;
    int next; /* next task to hand out */
    int done; /* tasks finished */
    pthread_cond_t finished;
    struct pool_job *link; /* the pool's list of jobs with tasks left */
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a job was queued, or the pool is shutting down */
    struct pool_job *head, *tail;
    pthread_t *threads;
    int nthreads;
    int stopping;
    int active; /* forward passes running now (eng_pool_enter/leave) */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER};

/* Takes the next task of the first job that has one; the lock is held. */
static struct pool_job *claim(int *task) {
    struct pool_job *j = pool.head;
    if (!j) return NULL;
    *task = j->next++;
    if (j->next == j->ntasks) { /* fully handed out: unlink */
        pool.head = j->link;
        if (!pool.head) pool.tail = NULL;
    }
    return j;
}

static void finish(struct pool_job *j) {
    if (++j->done == j->ntasks) pthread_cond_signal(&j->finished);
}

static void *pool_main(void *unused) {
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        int task;
        struct pool_job *j;
        while (!(j = claim(&task)) && !pool.stopping) pthread_cond_wait(&pool.work, &pool.lock);
        if (!j) break;
        pthread_mutex_unlock(&pool.lock);
        j->fn(j->arg, task);
        pthread_mutex_lock(&pool.lock);
        finish(j);
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

static void pool_stop(void) {
    pthread_mutex_lock(&pool.lock);
    pool.stopping = 1;
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.nthreads; i++) pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.nthreads = 0;
    pool.stopping = 0;
}

static int online_cpus(void) {
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    return n > 0 ? n : 1;
}

int eng_set_threads(int n) {
    if (n <= 0) n = online_cpus();
    if (n > 256) n = 256;
    /* Each task runs a single-threaded sgemm: the pool, not OpenBLAS, is
     * what spreads work over the cores. */
    openblas_set_num_threads(1);
    if (pool.nthreads) pool_stop();
    pool.threads = calloc((size_t)n, sizeof *pool.threads);
    if (!pool.threads) return 0;
    for (int i = 0; i < n; i++) {
        if (pthread_create(&pool.threads[i], NULL, pool_main, NULL) != 0) break;
        pool.nthreads++;
    }
    return pool.nthreads;
}

int eng_get_threads(void) {
    return pool.nthreads;
}

void eng_shutdown(void) {
    if (pool.nthreads) pool_stop();
}

void eng_pool_enter(void) {
    __atomic_add_fetch(&pool.active, 1, __ATOMIC_RELAXED);
}

void eng_pool_leave(void) {
    __atomic_sub_fetch(&pool.active, 1, __ATOMIC_RELAXED);
}

int eng_pool_share(int max_tasks) {
    int active = __atomic_load_n(&pool.active, __ATOMIC_RELAXED);
    int share = pool.nthreads / (active > 0 ? active : 1);
    if (share > max_tasks) share = max_tasks;
    return share > 0 ? share : 1;
}

void eng_pool_run(void (*fn)(void *arg, int task), void *arg, int ntasks) {
    if (ntasks <= 0) return;
    /* no pool (never started, or one task): run in the caller */
    if (pool.nthreads == 0 || ntasks == 1) {
        for (int t = 0; t < ntasks; t++) fn(arg, t);
        return;
    }
    struct pool_job j = {.fn = fn, .arg = arg, .ntasks = ntasks};
    pthread_cond_init(&j.finished, NULL);
    pthread_mutex_lock(&pool.lock);
    if (pool.tail)
        pool.tail->link = &j;
    else
        pool.head = &j;
    pool.tail = &j;
    pthread_cond_broadcast(&pool.work);
    while (j.done < j.ntasks) pthread_cond_wait(&j.finished, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    pthread_cond_destroy(&j.finished);
}
