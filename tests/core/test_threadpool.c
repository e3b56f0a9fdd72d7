/* Tests of core/threadpool.c: partitioning, coverage, serialization, idling. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "threadpool.h"

#define POOL_MAX_BLOCKS 64

typedef struct {
    atomic_uchar *hits;
    size_t n;
    atomic_size_t nblocks;
    size_t begin[POOL_MAX_BLOCKS], end[POOL_MAX_BLOCKS];
    pthread_t thread[POOL_MAX_BLOCKS];
} pool_cover_t;

static void pool_cover_fn(void *arg, size_t begin, size_t end)
{
    pool_cover_t *c = arg;
    size_t k = atomic_fetch_add(&c->nblocks, 1);
    if (k < POOL_MAX_BLOCKS) {
        c->begin[k] = begin;
        c->end[k] = end;
        c->thread[k] = pthread_self();
    }
    for (size_t i = begin; i < end && i < c->n; i++) atomic_fetch_add(&c->hits[i], 1);
}

/* Runs one (n, align, min_per_thread) case and checks the partition. */
static void pool_check_cover(ps_pool_t *pool, unsigned threads, size_t n, size_t align,
                             size_t min_per_thread)
{
    pool_cover_t *c = calloc(1, sizeof(*c));
    cr_assert_not_null(c);
    c->n = n;
    c->hits = calloc(n + 1, sizeof(*c->hits));
    cr_assert_not_null(c->hits);
    atomic_init(&c->nblocks, 0);

    ps_pool_run(pool, n, align, min_per_thread, pool_cover_fn, c);

    size_t nb = atomic_load(&c->nblocks);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(c->hits[i], 1, "threads=%u n=%zu align=%zu min=%zu: element %zu hit %d times",
                     threads, n, align, min_per_thread, i, (int)c->hits[i]);
    if (n == 0) {
        cr_assert_eq(nb, 0, "n=0 ran %zu blocks", nb);
    } else {
        size_t cap = n / (min_per_thread ? min_per_thread : 1);
        if (cap < 1) cap = 1;
        cr_assert(nb >= 1 && nb <= threads, "threads=%u n=%zu: %zu blocks", threads, n, nb);
        cr_assert(nb <= cap, "n=%zu min=%zu: %zu blocks", n, min_per_thread, nb);
        int caller_ran_first = 0;
        for (size_t k = 0; k < nb; k++) {
            cr_assert_lt(c->begin[k], c->end[k], "empty block");
            cr_assert_eq(c->begin[k] % (align ? align : 1), 0,
                         "n=%zu align=%zu: block starts at %zu", n, align, c->begin[k]);
            if (c->begin[k] == 0) caller_ran_first = pthread_equal(c->thread[k], pthread_self());
        }
        cr_assert(caller_ran_first, "block 0 did not run on the caller");
    }
    free(c->hits);
    free(c);
}

Test(threadpool, covers_every_element_once, .timeout = 30)
{
    static const unsigned threads[] = {1, 2, 3, 4, 7, 8};
    static const size_t sizes[] = {0,  1,   2,    3,    5,           15, 16,
                                   17, 31, 33, 100, 1000, 4097, 65536 * 3 + 5};
    static const size_t aligns[] = {0, 1, 4, 16, 64, 1000};
    static const size_t mins[] = {0, 1, 16, 1000};
    for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++) {
        ps_pool_t *pool = NULL;
        cr_assert_eq(ps_pool_create(threads[t], &pool), PSERV_OK);
        cr_assert_eq(ps_pool_size(pool), threads[t]);
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
            for (size_t a = 0; a < sizeof(aligns) / sizeof(aligns[0]); a++)
                for (size_t m = 0; m < sizeof(mins) / sizeof(mins[0]); m++)
                    pool_check_cover(pool, threads[t], sizes[s], aligns[a], mins[m]);
        ps_pool_destroy(pool);
    }
    /* NULL pool: the caller runs everything */
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
        pool_check_cover(NULL, 1, sizes[s], 16, 1);
    cr_assert_eq(ps_pool_size(NULL), 1);
}

/* Blocks are as even as alignment allows: with n a multiple of align * threads, equal. */
Test(threadpool, blocks_are_balanced)
{
    ps_pool_t *pool = NULL;
    cr_assert_eq(ps_pool_create(4, &pool), PSERV_OK);
    pool_cover_t *c = calloc(1, sizeof(*c));
    c->n = 4 * 16 * 1000;
    c->hits = calloc(c->n, 1);
    ps_pool_run(pool, c->n, 16, 1, pool_cover_fn, c);
    cr_assert_eq(atomic_load(&c->nblocks), 4);
    for (int k = 0; k < 4; k++) cr_assert_eq(c->end[k] - c->begin[k], 16000);
    free(c->hits);
    free(c);
    ps_pool_destroy(pool);
}

static double pool_now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void pool_sleep_fn(void *arg, size_t begin, size_t end)
{
    (void)arg;
    (void)begin;
    (void)end;
    usleep(50 * 1000);
}

/* Blocks run at the same time on different threads (sleeping needs no free core). */
Test(threadpool, blocks_run_in_parallel, .timeout = 10)
{
    ps_pool_t *pool = NULL;
    cr_assert_eq(ps_pool_create(4, &pool), PSERV_OK);
    double t0 = pool_now(CLOCK_MONOTONIC);
    ps_pool_run(pool, 4, 1, 1, pool_sleep_fn, NULL);
    double dt = pool_now(CLOCK_MONOTONIC) - t0;
    cr_assert(dt >= 0.049 && dt < 0.150, "4 blocks of 50 ms took %.3f s", dt);
    ps_pool_destroy(pool);
}

typedef struct {
    atomic_int *current;
    atomic_int *overlaps;
    atomic_size_t *sum;
    int id;
} pool_serial_t;

static void pool_serial_fn(void *arg, size_t begin, size_t end)
{
    pool_serial_t *s = arg;
    atomic_store(s->current, s->id);
    for (volatile int spin = 0; spin < 2000; spin++) {
    }
    if (atomic_load(s->current) != s->id) atomic_fetch_add(s->overlaps, 1);
    atomic_fetch_add(s->sum, end - begin);
}

typedef struct {
    ps_pool_t *pool;
    atomic_int *current, *overlaps;
    int id;
    int ok;
} pool_caller_t;

static void *pool_caller_main(void *arg)
{
    pool_caller_t *c = arg;
    c->ok = 1;
    for (int r = 0; r < 300; r++) {
        atomic_size_t sum;
        atomic_init(&sum, 0);
        pool_serial_t s = {c->current, c->overlaps, &sum, c->id};
        size_t n = 1000 + (size_t)r * 7;
        ps_pool_run(c->pool, n, 8, 1, pool_serial_fn, &s);
        if (atomic_load(&sum) != n) c->ok = 0;
    }
    return NULL;
}

/* Several application threads share one pool: runs are serialized and each completes. */
Test(threadpool, concurrent_callers_are_serialized, .timeout = 30)
{
    ps_pool_t *pool = NULL;
    cr_assert_eq(ps_pool_create(3, &pool), PSERV_OK);
    atomic_int current, overlaps;
    atomic_init(&current, 0);
    atomic_init(&overlaps, 0);
    pthread_t tid[4];
    pool_caller_t callers[4];
    for (int i = 0; i < 4; i++) {
        callers[i] = (pool_caller_t){pool, &current, &overlaps, i + 1, 0};
        cr_assert_eq(pthread_create(&tid[i], NULL, pool_caller_main, &callers[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(tid[i], NULL);
        cr_assert(callers[i].ok, "caller %d: a run did not cover its range", i);
    }
    cr_assert_eq(atomic_load(&overlaps), 0, "runs of different callers overlapped");
    ps_pool_destroy(pool);
}

typedef struct {
    ps_pool_t *pool;
    atomic_size_t inner;
} pool_nested_t;

static void pool_inner_fn(void *arg, size_t begin, size_t end)
{
    pool_nested_t *nest = arg;
    atomic_fetch_add(&nest->inner, end - begin);
}

static void pool_outer_fn(void *arg, size_t begin, size_t end)
{
    pool_nested_t *nest = arg;
    ps_pool_run(nest->pool, end - begin, 1, 1, pool_inner_fn, nest);
}

/* A block that runs the same pool again does not deadlock: the inner run is inline. */
Test(threadpool, nested_run_runs_inline, .timeout = 10)
{
    pool_nested_t nest = {NULL, 0};
    cr_assert_eq(ps_pool_create(3, &nest.pool), PSERV_OK);
    atomic_init(&nest.inner, 0);
    ps_pool_run(nest.pool, 3000, 1, 1, pool_outer_fn, &nest);
    cr_assert_eq(atomic_load(&nest.inner), 3000);
    ps_pool_destroy(nest.pool);
}

static void pool_noop_fn(void *arg, size_t begin, size_t end)
{
    atomic_fetch_add((atomic_size_t *)arg, end - begin);
}

/* Helpers sleep when idle: an idle pool of 4 uses almost no CPU. */
Test(threadpool, idle_pool_does_not_spin, .timeout = 10)
{
    ps_pool_t *pool = NULL;
    cr_assert_eq(ps_pool_create(4, &pool), PSERV_OK);
    atomic_size_t count;
    atomic_init(&count, 0);
    for (int r = 0; r < 100; r++) ps_pool_run(pool, 4096, 16, 1, pool_noop_fn, &count);
    cr_assert_eq(atomic_load(&count), 100 * 4096);
    usleep(50 * 1000); /* past the short spin */
    double cpu0 = pool_now(CLOCK_PROCESS_CPUTIME_ID);
    usleep(300 * 1000);
    double cpu = pool_now(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    cr_assert(cpu < 0.03, "idle pool used %.3f s of CPU in 0.3 s", cpu);
    /* and still works after sleeping */
    ps_pool_run(pool, 4096, 16, 1, pool_noop_fn, &count);
    cr_assert_eq(atomic_load(&count), 101 * 4096);
    ps_pool_destroy(pool);
}

Test(threadpool, many_short_runs, .timeout = 30)
{
    ps_pool_t *pool = NULL;
    cr_assert_eq(ps_pool_create(2, &pool), PSERV_OK);
    atomic_size_t count;
    atomic_init(&count, 0);
    size_t want = 0;
    for (int r = 0; r < 20000; r++) {
        size_t n = 1 + (size_t)(r % 97) * 13;
        ps_pool_run(pool, n, 4, 1, pool_noop_fn, &count);
        want += n;
    }
    cr_assert_eq(atomic_load(&count), want);
    ps_pool_destroy(pool);
}

Test(threadpool, create_rejects_bad_arguments)
{
    ps_pool_t *pool = (ps_pool_t *)0x1;
    cr_assert_eq(ps_pool_create(0, &pool), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pool, (ps_pool_t *)0x1, "output set on failure");
    cr_assert_eq(ps_pool_create(2, NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_pool_create(1, &pool), PSERV_OK);
    cr_assert_eq(ps_pool_size(pool), 1);
    ps_pool_destroy(pool);
    ps_pool_destroy(NULL);
}
