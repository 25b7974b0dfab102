/* pool.c: the engine's process-wide compute pool. Every context splits each
 * convolution into tasks and hands them here, so one image at idle gets all
 * cores and several busy workers share the cores instead of oversubscribing. */
#include "engine_impl.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

/* One batch of tasks from one caller. Lives on the caller's stack. */
struct pool_job {
    void (*fn)(void *arg, int task);
    void *arg;
    int ntasks;
    int next;    /* next task to hand out */
    int done;    /* tasks finished (read without the lock while spinning) */
    int waiting; /* the caller sleeps on finished */
    pthread_cond_t finished;
    struct pool_job *link; /* the pool's list of jobs with tasks left */
};

/* A forward pass hands the pool a job every few hundred microseconds (one
 * per conv, per image in the early stages). Sleeping between them costs a
 * futex wake and a context switch each (16% of an int8 pass when measured),
 * so a thread that runs out of work first spins this long, watching for the
 * next job, before it sleeps. */
#define SPIN_NS 200000

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a job was queued, or the pool is shutting down */
    struct pool_job *head, *tail;
    pthread_t *threads;
    int nthreads; /* helper threads; the caller of eng_pool_run is one more */
    int ncompute; /* threads that compute: the helpers and one caller */
    int sleepers; /* helpers waiting on work */
    int stopping;
    int active; /* forward passes running now (eng_pool_enter/leave) */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER};

static void unlink_job(struct pool_job *j) {
    struct pool_job *prev = NULL;
    for (struct pool_job *p = pool.head; p != j; p = p->link) prev = p;
    if (prev)
        prev->link = j->link;
    else /* spinning helpers read the head without the lock */
        __atomic_store_n(&pool.head, j->link, __ATOMIC_RELEASE);
    if (pool.tail == j) pool.tail = prev;
}

/* Takes the next task of job j (the first job with tasks left when j is
 * NULL); the lock is held. */
static struct pool_job *claim(struct pool_job *j, int *task) {
    if (!j) j = pool.head;
    if (!j || j->next == j->ntasks) return NULL;
    *task = j->next++;
    if (j->next == j->ntasks) unlink_job(j); /* fully handed out */
    return j;
}

static void finish(struct pool_job *j) {
    __atomic_store_n(&j->done, j->done + 1, __ATOMIC_RELEASE);
    if (j->done == j->ntasks && j->waiting) pthread_cond_signal(&j->finished);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins without the lock until ready() holds or SPIN_NS pass. */
static void spin_until(int (*ready)(const void *), const void *arg) {
    long long end = now_ns() + SPIN_NS;
    for (unsigned i = 1; !ready(arg); i++)
        if (i % 64 == 0 && now_ns() > end) return;
        else cpu_relax();
}

static int work_queued(const void *unused) {
    (void)unused;
    return __atomic_load_n(&pool.head, __ATOMIC_ACQUIRE) != NULL ||
           __atomic_load_n(&pool.stopping, __ATOMIC_RELAXED);
}

static int job_done(const void *arg) {
    const struct pool_job *j = arg;
    return __atomic_load_n(&j->done, __ATOMIC_ACQUIRE) == j->ntasks;
}

static void *pool_main(void *unused) {
    (void)unused;
    bool spun = false;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        int task;
        struct pool_job *j = claim(NULL, &task);
        if (j) {
            pthread_mutex_unlock(&pool.lock);
            j->fn(j->arg, task);
            pthread_mutex_lock(&pool.lock);
            finish(j);
            spun = false;
        } else if (pool.stopping) {
            break;
        } else if (!spun) {
            pthread_mutex_unlock(&pool.lock);
            spin_until(work_queued, NULL);
            pthread_mutex_lock(&pool.lock);
            spun = true; /* look once more under the lock, then sleep */
        } else {
            pool.sleepers++;
            pthread_cond_wait(&pool.work, &pool.lock);
            pool.sleepers--;
            spun = false;
        }
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

static void pool_stop(void) {
    pthread_mutex_lock(&pool.lock);
    __atomic_store_n(&pool.stopping, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.nthreads; i++) pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.nthreads = 0;
    pool.ncompute = 0;
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
    if (pool.ncompute) pool_stop();
    /* the caller of eng_pool_run computes too: n - 1 helpers make n */
    pool.threads = calloc((size_t)n, sizeof *pool.threads);
    if (!pool.threads) return 0;
    for (int i = 0; i < n - 1; i++) {
        if (pthread_create(&pool.threads[i], NULL, pool_main, NULL) != 0) break;
        pool.nthreads++;
    }
    pool.ncompute = pool.nthreads + 1;
    return pool.ncompute;
}

int eng_get_threads(void) {
    return pool.ncompute;
}

void eng_shutdown(void) {
    if (pool.ncompute) pool_stop();
}

void eng_pool_enter(void) {
    __atomic_add_fetch(&pool.active, 1, __ATOMIC_RELAXED);
}

void eng_pool_leave(void) {
    __atomic_sub_fetch(&pool.active, 1, __ATOMIC_RELAXED);
}

int eng_pool_share(int max_tasks) {
    int active = __atomic_load_n(&pool.active, __ATOMIC_RELAXED);
    int share = pool.ncompute / (active > 0 ? active : 1);
    if (share > max_tasks) share = max_tasks;
    return share > 0 ? share : 1;
}

void eng_pool_run(void (*fn)(void *arg, int task), void *arg, int ntasks) {
    if (ntasks <= 0) return;
    /* no helpers (never started, one thread, or one task): run here */
    if (pool.nthreads == 0 || ntasks == 1) {
        for (int t = 0; t < ntasks; t++) fn(arg, t);
        return;
    }
    struct pool_job j = {.fn = fn, .arg = arg, .ntasks = ntasks};
    pthread_mutex_lock(&pool.lock);
    if (pool.tail)
        pool.tail->link = &j;
    else
        __atomic_store_n(&pool.head, &j, __ATOMIC_RELEASE);
    pool.tail = &j;
    if (pool.sleepers) pthread_cond_broadcast(&pool.work);
    /* the caller takes tasks of its own job as the helpers do */
    int task;
    while (claim(&j, &task)) {
        pthread_mutex_unlock(&pool.lock);
        fn(arg, task);
        pthread_mutex_lock(&pool.lock);
        finish(&j);
    }
    if (j.done < j.ntasks) {
        pthread_mutex_unlock(&pool.lock);
        spin_until(job_done, &j);
        pthread_mutex_lock(&pool.lock);
        if (j.done < j.ntasks) {
            pthread_cond_init(&j.finished, NULL);
            j.waiting = 1;
            while (j.done < j.ntasks) pthread_cond_wait(&j.finished, &pool.lock);
            pthread_cond_destroy(&j.finished);
        }
    }
    pthread_mutex_unlock(&pool.lock);
}
