/*
 * Thread pool for data-parallel loops.
 *
 * Each helper has its own cache line with a "go" word, a mutex and a condition variable. A run
 * publishes the job in the pool, then stores the run's generation into the go word of each
 * helper it needs; a helper spins briefly on its go word, then sleeps on its condition
 * variable. The caller runs block 0 and waits the same way (spin, then sleep) for the count of
 * outstanding helper blocks to reach zero.
 *
 * Sleeping without lost wake-ups, and without taking a lock on every run when nobody sleeps:
 * the sleeper sets its `sleeping` flag and then re-reads the word it waits on; the waker writes
 * the word and then reads the flag (all seq_cst). At least one of them sees the other's store,
 * so either the sleeper does not sleep or the waker signals (under the sleeper's mutex, which
 * the sleeper holds from setting the flag until it is inside pthread_cond_wait).
 */
#include "threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "log.h"

/* Spin iterations (each a CPU pause, 10-150 cycles) before a thread sleeps: tens of
 * microseconds, enough to catch back-to-back runs (chunk after chunk) without keeping an idle
 * pool on the CPU. Longer spins did not help on a 2-vCPU VM (pause-loop exits deschedule the
 * spinning vCPU), and a wake-up from sleep there costs 50-100 us either way. */
#define PS_POOL_SPIN 2000
#define PS_POOL_STOP UINT64_MAX

typedef struct {
    _Alignas(64) _Atomic uint64_t go; /* generation of the run this helper must work on */
    atomic_int sleeping;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t tid;
    ps_pool_t *pool;
    unsigned index; /* block index, 1 .. nthreads-1 */
} ps_pool_helper_t;

struct ps_pool {
    unsigned nthreads;
    ps_pool_helper_t *helpers; /* nthreads - 1 of them */
    pthread_mutex_t run_lock;  /* serializes callers of ps_pool_run */
    uint64_t gen;              /* generation of the last run (under run_lock) */

    /* The job of the current run: written by the caller before the go stores (release),
     * read by helpers after their go load (acquire); unchanged until pending reaches 0. */
    ps_pool_fn_t fn;
    void *arg;
    size_t n, block;

    _Alignas(64) atomic_size_t pending; /* helper blocks of the current run not finished yet */
    _Alignas(64) atomic_int caller_sleeping;
    pthread_mutex_t done_mu;
    pthread_cond_t done_cv;
};

/* The pool this thread is working for (helpers: always; a caller: during its run). A run
 * issued from inside a block of the same pool executes inline instead of deadlocking. */
static _Thread_local const ps_pool_t *ps_pool_self;

static inline void ps_pool_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void ps_pool_run_block(const ps_pool_t *pool, unsigned index)
{
    size_t begin = (size_t)index * pool->block;
    size_t end = PS_MIN(begin + pool->block, pool->n);
    if (begin < end) pool->fn(pool->arg, begin, end);
}

static uint64_t ps_pool_helper_wait(ps_pool_helper_t *h, uint64_t seen)
{
    uint64_t go;
    for (int i = 0; i < PS_POOL_SPIN; i++) {
        go = atomic_load_explicit(&h->go, memory_order_acquire);
        if (go != seen) return go;
        ps_pool_relax();
    }
    pthread_mutex_lock(&h->mu);
    atomic_store(&h->sleeping, 1);
    while ((go = atomic_load(&h->go)) == seen) pthread_cond_wait(&h->cv, &h->mu);
    atomic_store(&h->sleeping, 0);
    pthread_mutex_unlock(&h->mu);
    return go;
}

static void *ps_pool_helper_main(void *arg)
{
    ps_pool_helper_t *h = arg;
    ps_pool_t *pool = h->pool;
    uint64_t seen = 0;
    ps_pool_self = pool;
    for (;;) {
        seen = ps_pool_helper_wait(h, seen);
        if (seen == PS_POOL_STOP) break;
        ps_pool_run_block(pool, h->index);
        if (atomic_fetch_sub(&pool->pending, 1) == 1 && atomic_load(&pool->caller_sleeping)) {
            pthread_mutex_lock(&pool->done_mu);
            pthread_cond_signal(&pool->done_cv);
            pthread_mutex_unlock(&pool->done_mu);
        }
    }
    return NULL;
}

static void ps_pool_wake(ps_pool_helper_t *h, uint64_t go)
{
    atomic_store(&h->go, go);
    if (atomic_load(&h->sleeping)) {
        pthread_mutex_lock(&h->mu);
        pthread_cond_signal(&h->cv);
        pthread_mutex_unlock(&h->mu);
    }
}

static void ps_pool_wait_done(ps_pool_t *pool)
{
    for (int i = 0; i < PS_POOL_SPIN; i++) {
        if (atomic_load_explicit(&pool->pending, memory_order_acquire) == 0) return;
        ps_pool_relax();
    }
    pthread_mutex_lock(&pool->done_mu);
    atomic_store(&pool->caller_sleeping, 1);
    while (atomic_load(&pool->pending) != 0) pthread_cond_wait(&pool->done_cv, &pool->done_mu);
    atomic_store(&pool->caller_sleeping, 0);
    pthread_mutex_unlock(&pool->done_mu);
}

/* Stops and joins helpers [0, count) and frees the pool. */
static void ps_pool_teardown(ps_pool_t *pool, unsigned count)
{
    for (unsigned i = 0; i < count; i++) ps_pool_wake(&pool->helpers[i], PS_POOL_STOP);
    for (unsigned i = 0; i < count; i++) pthread_join(pool->helpers[i].tid, NULL);
    for (unsigned i = 0; i < pool->nthreads - 1; i++) {
        pthread_cond_destroy(&pool->helpers[i].cv);
        pthread_mutex_destroy(&pool->helpers[i].mu);
    }
    pthread_cond_destroy(&pool->done_cv);
    pthread_mutex_destroy(&pool->done_mu);
    pthread_mutex_destroy(&pool->run_lock);
    free(pool->helpers);
    free(pool);
}

pserv_status_t ps_pool_create(unsigned nthreads, ps_pool_t **pool_out)
{
    PS_CHECK_ARG(nthreads >= 1 && nthreads <= 4096);
    PS_CHECK_ARG(pool_out != NULL);

    ps_pool_t *pool = NULL;
    if (posix_memalign((void **)&pool, 64, sizeof(*pool)) != 0) return PSERV_ERR_NO_MEMORY;
    memset(pool, 0, sizeof(*pool));
    pool->nthreads = nthreads;
    pthread_mutex_init(&pool->run_lock, NULL);
    pthread_mutex_init(&pool->done_mu, NULL);
    pthread_cond_init(&pool->done_cv, NULL);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->caller_sleeping, 0);

    size_t bytes = sizeof(ps_pool_helper_t) * (nthreads - 1);
    if (bytes > 0 && posix_memalign((void **)&pool->helpers, 64, bytes) != 0) {
        pool->helpers = NULL;
        pool->nthreads = 1; /* nothing of the helpers to undo */
        ps_pool_teardown(pool, 0);
        return PSERV_ERR_NO_MEMORY;
    }
    for (unsigned i = 0; i < nthreads - 1; i++) {
        ps_pool_helper_t *h = &pool->helpers[i];
        memset(h, 0, sizeof(*h));
        atomic_init(&h->go, 0);
        atomic_init(&h->sleeping, 0);
        pthread_mutex_init(&h->mu, NULL);
        pthread_cond_init(&h->cv, NULL);
        h->pool = pool;
        h->index = i + 1;
    }

    /* Helpers take no signals: they belong to the application's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    unsigned started = 0;
    int err = 0;
    for (; started < nthreads - 1; started++) {
        err = pthread_create(&pool->helpers[started].tid, NULL, ps_pool_helper_main,
                             &pool->helpers[started]);
        if (err != 0) break;
        char name[16];
        snprintf(name, sizeof(name), "pserv-pool-%u", started + 1);
        pthread_setname_np(pool->helpers[started].tid, name);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        ps_error("thread pool: cannot start helper %u of %u: %s", started + 1, nthreads - 1,
                 strerror(err));
        ps_pool_teardown(pool, started);
        return err == EAGAIN ? PSERV_ERR_NO_RESOURCE : PSERV_ERR_INTERNAL;
    }
    *pool_out = pool;
    return PSERV_OK;
}

void ps_pool_destroy(ps_pool_t *pool)
{
    if (pool == NULL) return;
    ps_pool_teardown(pool, pool->nthreads - 1);
}

unsigned ps_pool_size(const ps_pool_t *pool)
{
    return pool ? pool->nthreads : 1;
}

void ps_pool_run(ps_pool_t *pool, size_t n, size_t align, size_t min_per_thread, ps_pool_fn_t fn,
                 void *arg)
{
    if (n == 0) return;
    if (align == 0) align = 1;
    if (min_per_thread == 0) min_per_thread = 1;

    /* Threads: at most one per min_per_thread elements, and one per align unit. */
    size_t units = n / align + (n % align != 0);
    size_t active = pool ? pool->nthreads : 1;
    active = PS_MIN(active, n / min_per_thread);
    active = PS_MIN(active, units);
    if (active <= 1 || ps_pool_self == pool) {
        fn(arg, 0, n);
        return;
    }
    size_t block = (units / active + (units % active != 0)) * align;
    active = n / block + (n % block != 0); /* rounding up the block may leave fewer blocks */

    pthread_mutex_lock(&pool->run_lock);
    pool->fn = fn;
    pool->arg = arg;
    pool->n = n;
    pool->block = block;
    uint64_t gen = ++pool->gen;
    atomic_store_explicit(&pool->pending, active - 1, memory_order_relaxed);
    for (size_t i = 1; i < active; i++) ps_pool_wake(&pool->helpers[i - 1], gen);

    const ps_pool_t *outer = ps_pool_self;
    ps_pool_self = pool;
    ps_pool_run_block(pool, 0);
    ps_pool_self = outer;
    ps_pool_wait_done(pool);
    pthread_mutex_unlock(&pool->run_lock);
}
