/*
 * A job inside one process (core/local_job.c, pserv_local_*): a sync job of two shards and
 * three workers on threads gives the server's arithmetic and counters, bad params are refused
 * with a reason, and a job whose workers never come ends in bounded time with an error.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pserv/pserv.h"

#define CHUNK_BYTES 4096
#define CHUNK_FLOATS (CHUNK_BYTES / sizeof(float))
#define CHUNKS 5
#define N (CHUNKS * CHUNK_FLOATS - 100) /* the last chunk partial */
/* Placement cuts a tensor large enough into a multiple of the live servers (docs/design.md): 5 -> 6. */
#define PLACED_CHUNKS 6
#define WORKERS 3
#define LR 0.5f

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Exact in float32: multiples of 1/4, far below 2^22. */
static float grad_of(unsigned rank, size_t i)
{
    return (float)(rank + 1) * (float)(i % 13) * 0.25f;
}

/* One worker on its own thread: joins, registers, one push-pull; the main thread asserts. */
typedef struct {
    const char *coord;
    pserv_worker_h worker;
    pserv_job_info_t info;
    pserv_status_t st;
    const char *what; /* the step that failed */
    float grad[N], out[N];
} member_t;

static void *member_main(void *arg)
{
    member_t *m = arg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    pserv_request_t req;
    wp.coordinator = m->coord;
    wp.timeout_ms = 20000;
    m->what = "create";
    if ((m->st = pserv_worker_create(&wp, &m->worker)) != PSERV_OK) return NULL;
    m->what = "job info";
    if ((m->st = pserv_worker_job(m->worker, &m->info)) != PSERV_OK) return NULL;
    tp.key = 7;
    tp.count = N;
    tp.init_value = 1.0f;
    tp.optim.lr = LR;
    m->what = "register";
    if ((m->st = pserv_worker_register(m->worker, &tp)) != PSERV_OK) return NULL;
    for (size_t i = 0; i < N; i++) m->grad[i] = grad_of(m->info.rank, i);
    m->what = "push-pull";
    if ((m->st = pserv_worker_push_pull(m->worker, 7, m->grad, m->out, &req)) != PSERV_OK) return NULL;
    m->st = pserv_worker_wait(m->worker, req, 20000);
    return NULL;
}

Test(local, sync_job_of_two_shards_and_three_workers, .timeout = 60)
{
    static member_t members[WORKERS];
    pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
    pserv_local_h local = NULL;
    pthread_t tids[WORKERS];
    pserv_server_h servers[2];
    lp.num_servers = 2;
    lp.num_workers = WORKERS;
    lp.mode = PSERV_MODE_SYNC;
    lp.chunk_bytes = CHUNK_BYTES;
    lp.timeout_ms = 20000;
    cr_assert_eq(pserv_local_create(&lp, &local), PSERV_OK, "%s", pserv_last_error());
    cr_assert_not_null(local);
    cr_assert_eq(strncmp(pserv_local_coordinator(local), "127.0.0.1:", 10), 0, "%s", pserv_local_coordinator(local));
    /* no worker yet: the shards cannot have joined */
    cr_assert_eq(pserv_local_server(local, 0, 0, &servers[0]), PSERV_ERR_TIMED_OUT);
    cr_assert_neq(strlen(pserv_last_error()), 0);
    cr_assert_eq(pserv_local_server(local, 2, 0, &servers[0]), PSERV_ERR_INVALID_ARG);

    for (unsigned w = 0; w < WORKERS; w++) {
        members[w] = (member_t){.coord = pserv_local_coordinator(local), .st = PSERV_ERR_INTERNAL};
        members[w].info = (pserv_job_info_t)PSERV_JOB_INFO_INIT;
        cr_assert_eq(pthread_create(&tids[w], NULL, member_main, &members[w]), 0);
    }
    for (unsigned w = 0; w < WORKERS; w++) pthread_join(tids[w], NULL);
    unsigned ranks_seen = 0;
    for (unsigned w = 0; w < WORKERS; w++) {
        member_t *m = &members[w];
        cr_assert_eq(m->st, PSERV_OK, "worker %u: %s: %s (%s)", w, m->what, pserv_strerror(m->st),
                     m->worker ? pserv_worker_last_error(m->worker) : "");
        cr_assert_eq(m->info.num_servers, 2);
        cr_assert_eq(m->info.num_workers, WORKERS);
        cr_assert_lt(m->info.rank, WORKERS);
        ranks_seen |= 1u << m->info.rank;
        /* one sync round: the parameters moved by lr times the sum of the three gradients */
        for (size_t i = 0; i < N; i++) {
            float want = 1.0f - LR * (grad_of(0, i) + grad_of(1, i) + grad_of(2, i));
            cr_assert_eq(m->out[i], want, "worker %u element %zu: %g, want %g", w, i, (double)m->out[i], (double)want);
        }
    }
    cr_assert_eq(ranks_seen, (1u << WORKERS) - 1, "ranks are not 0..%d", WORKERS - 1);

    pserv_server_stats_t ss[2] = {PSERV_SERVER_STATS_INIT, PSERV_SERVER_STATS_INIT};
    unsigned rank_bits = 0;
    for (unsigned s = 0; s < 2; s++) {
        unsigned rank = 99;
        cr_assert_eq(pserv_local_server(local, s, 1000, &servers[s]), PSERV_OK, "%s", pserv_last_error());
        cr_assert_eq(pserv_server_rank(servers[s], &rank), PSERV_OK);
        cr_assert_lt(rank, 2);
        rank_bits |= 1u << rank;
        cr_assert_eq(pserv_server_stats(servers[s], &ss[s]), PSERV_OK);
        cr_assert_gt(ss[s].steps, 0, "shard %u owns no chunk", s);
    }
    cr_assert_eq(rank_bits, 3u, "the shards do not have ranks 0 and 1");
    cr_assert_eq(ss[0].steps + ss[1].steps, PLACED_CHUNKS, "one step per chunk");
    cr_assert_eq(ss[0].steps, ss[1].steps, "an even tensor spreads evenly over the shards");
    cr_assert_eq(ss[0].pushes + ss[1].pushes, (uint64_t)PLACED_CHUNKS * WORKERS, "one push per chunk and worker");
    cr_assert_eq(ss[0].pulls + ss[1].pulls, (uint64_t)PLACED_CHUNKS * WORKERS, "one reply per chunk and worker");
    cr_assert_eq(ss[0].bytes_in + ss[1].bytes_in, (uint64_t)N * sizeof(float) * WORKERS);
    cr_assert_eq(ss[0].rejected + ss[1].rejected, 0);

    for (unsigned w = 0; w < WORKERS; w++) cr_assert_eq(pserv_worker_destroy(members[w].worker), PSERV_OK);
    cr_assert_eq(pserv_local_destroy(local, 10000), PSERV_OK, "%s", pserv_last_error());
}

Test(local, bad_params_are_refused_with_a_reason, .timeout = 30)
{
    pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
    pserv_local_h local = NULL;

    cr_assert_eq(pserv_local_create(&lp, &local), PSERV_ERR_INVALID_ARG, "num_workers 0");
    cr_assert_null(local);
    cr_assert(strstr(pserv_last_error(), "num_workers") != NULL, "%s", pserv_last_error());

    lp.num_workers = 1;
    lp.size = sizeof(size_t); /* a caller built against a smaller struct, or no initializer */
    cr_assert_eq(pserv_local_create(&lp, &local), PSERV_ERR_INVALID_ARG, "size too small");
    cr_assert_null(local);
    cr_assert(strstr(pserv_last_error(), "size") != NULL, "%s", pserv_last_error());

    lp = (pserv_local_params_t)PSERV_LOCAL_PARAMS_INIT;
    lp.num_workers = 1;
    lp.mode = (pserv_mode_t)7;
    cr_assert_eq(pserv_local_create(&lp, &local), PSERV_ERR_INVALID_ARG, "unknown mode");
    cr_assert_neq(strlen(pserv_last_error()), 0);

    lp.mode = PSERV_MODE_ASYNC;
    lp.timeout_ms = -1; /* shards that wait forever would make destroy unbounded */
    cr_assert_eq(pserv_local_create(&lp, &local), PSERV_ERR_INVALID_ARG, "timeout_ms < 0");
    cr_assert_null(local);
    cr_assert_neq(strlen(pserv_last_error()), 0);

    cr_assert_eq(pserv_local_create(NULL, &local), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pserv_local_destroy(NULL, 0), PSERV_OK);
    cr_assert_str_eq(pserv_local_coordinator(NULL), "");
}

/* Nobody joins: destroy ends the job in bounded time (the shards' timeout) with an error. */
Test(local, destroy_of_a_job_that_never_formed_is_bounded, .timeout = 30)
{
    pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
    pserv_local_h local = NULL;
    pserv_server_h server = NULL;
    lp.num_servers = 2;
    lp.num_workers = 2;
    lp.timeout_ms = 1500;
    cr_assert_eq(pserv_local_create(&lp, &local), PSERV_OK, "%s", pserv_last_error());
    double t0 = now_s();
    pserv_status_t st = pserv_local_destroy(local, 200);
    double took = now_s() - t0;
    cr_assert_lt(st, 0, "destroy of a job that never formed returned %s", pserv_strerror(st));
    cr_assert_neq(strlen(pserv_last_error()), 0);
    cr_assert_lt(took, 5.0, "destroy took %.1f s", took);

    /* Once a shard gave up, pserv_local_server reports its error. */
    lp.num_servers = 1;
    lp.timeout_ms = 300;
    cr_assert_eq(pserv_local_create(&lp, &local), PSERV_OK, "%s", pserv_last_error());
    st = pserv_local_server(local, 0, 10000, &server);
    cr_assert_eq(st, PSERV_ERR_TIMED_OUT, "%s: %s", pserv_strerror(st), pserv_last_error());
    cr_assert_null(server);
    cr_assert(strstr(pserv_last_error(), "shard 0") != NULL, "%s", pserv_last_error());
    t0 = now_s();
    st = pserv_local_destroy(local, 10000);
    cr_assert_eq(st, PSERV_ERR_TIMED_OUT, "%s", pserv_strerror(st));
    cr_assert_lt(now_s() - t0, 1.0, "destroy after the shards gave up must not wait");
}
