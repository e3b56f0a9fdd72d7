/*
 * Device push / pull (pserv_cuda_worker_*, cuda/cuda_worker.cu) against an in-process job: the
 * device results must equal the server's SGD arithmetic exactly (lr 1, values that are exact in
 * float32), whatever the stream was doing around the calls. Without a GPU only the refusals run.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_worker_test.h"
#include "mlp_gpu.h" /* ps_cuda_test_alloc / _free / _download / _fill_nan */
#include "pserv/pserv_cuda.h"

#define CHUNK_BYTES 4096
#define CE (CHUNK_BYTES / sizeof(float)) /* 1024 elements per chunk */
#define MAXW 2
#define MAXS 2

#define NEED_GPU()                                                                               \
    do {                                                                                         \
        int n_ = 0;                                                                              \
        if (pserv_cuda_device_count(&n_) != PSERV_OK)                                            \
            cr_skip_test("no CUDA device: %s", pserv_cuda_last_error());                         \
    } while (0)

/* ---- an in-process job (pserv_local_*), its workers on threads while it forms --------------- */

typedef struct {
    pserv_local_h local;
    pserv_worker_h workers[MAXW];
    unsigned nw;
} job_t;

typedef struct {
    const char *addr, *node;
    pserv_worker_h worker;
    pserv_status_t st;
} member_t;

static void *worker_main(void *arg)
{
    member_t *m = arg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    wp.coordinator = m->addr;
    wp.node = m->node;
    wp.timeout_ms = 20000;
    m->st = pserv_worker_create(&wp, &m->worker);
    return NULL;
}

/* Starts ns servers and nw workers (worker i names node group nodes[i]); workers by rank. */
static void job_start(job_t *job, unsigned ns, unsigned nw, const char *const *nodes)
{
    pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
    member_t mw[MAXW];
    pthread_t tw[MAXW];
    memset(job, 0, sizeof(*job));
    job->nw = nw;
    lp.num_servers = ns;
    lp.num_workers = nw;
    lp.mode = PSERV_MODE_SYNC;
    lp.chunk_bytes = CHUNK_BYTES;
    lp.timeout_ms = 20000;
    cr_assert_eq(pserv_local_create(&lp, &job->local), PSERV_OK, "%s", pserv_last_error());
    for (unsigned i = 0; i < nw; i++) {
        mw[i] = (member_t){pserv_local_coordinator(job->local), nodes ? nodes[i] : NULL, NULL, PSERV_ERR_INTERNAL};
        pthread_create(&tw[i], NULL, worker_main, &mw[i]);
    }
    for (unsigned i = 0; i < nw; i++) {
        pserv_job_info_t info = PSERV_JOB_INFO_INIT;
        pthread_join(tw[i], NULL);
        cr_assert_eq(mw[i].st, PSERV_OK, "worker %u: %s", i, pserv_strerror(mw[i].st));
        cr_assert_eq(pserv_worker_job(mw[i].worker, &info), PSERV_OK);
        cr_assert_lt(info.rank, nw);
        job->workers[info.rank] = mw[i].worker;
    }
    for (unsigned i = 0; i < ns; i++) {
        pserv_server_h server;
        pserv_status_t st = pserv_local_server(job->local, i, 20000, &server);
        cr_assert_eq(st, PSERV_OK, "server %u: %s (%s)", i, pserv_strerror(st), pserv_last_error());
    }
}

static void job_stop(job_t *job)
{
    for (unsigned i = 0; i < job->nw; i++) pserv_worker_destroy(job->workers[i]);
    cr_expect_eq(pserv_local_destroy(job->local, 10000), PSERV_OK, "%s", pserv_last_error());
}

/* ---- values: all multiples of 1/4 far below 2^22, so every sum is exact in float32 ---------- */

static float init_of(size_t i)
{
    return (float)(i % 101) * 0.5f;
}

/* What ps_cw_test_fill(dst, n, base, 0.25f, ...) writes. */
static float grad_of(size_t i, float base)
{
    return base + (float)(i % 97) * 0.25f;
}

static void register_tensor(pserv_worker_h w, uint64_t key, size_t count)
{
    float *init = malloc(count * sizeof(float));
    cr_assert_not_null(init);
    for (size_t i = 0; i < count; i++) init[i] = init_of(i);
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = key;
    tp.count = count;
    tp.init = init;
    tp.optim.type = PSERV_OPTIM_SGD;
    tp.optim.lr = 1.0f;
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_OK, "%s", pserv_worker_last_error(w));
    free(init);
}

static float *dev_alloc(size_t n)
{
    void *p = NULL;
    cr_assert_eq(ps_cuda_test_alloc(n * sizeof(float), &p), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(ps_cuda_test_fill_nan(p, n), PSERV_OK, "%s", pserv_cuda_last_error());
    return p;
}

/* Device values must equal want[] exactly. */
static void expect_values(const float *dev, const float *want, size_t n, const char *what)
{
    float *got = malloc(n * sizeof(float));
    cr_assert_not_null(got);
    cr_assert_eq(ps_cuda_test_download(got, dev, n * sizeof(float)), PSERV_OK, "%s", pserv_cuda_last_error());
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (!(got[i] == want[i]) && bad++ == 0) first = i;
    cr_assert_eq(bad, 0, "%s: %zu of %zu elements differ, first [%zu] = %g, want %g", what, bad, n, first,
                 (double)got[first], (double)want[first]);
    free(got);
}

/* A job of `servers` shards and one worker with a device side and a stream of its own. */
typedef struct {
    job_t job;
    pserv_cuda_worker_h cw;
    pserv_cuda_stream_t s;
} fx_t;

static void fx_start(fx_t *f, unsigned servers, size_t piece_bytes)
{
    pserv_cuda_worker_params_t cp = PSERV_CUDA_WORKER_PARAMS_INIT;
    job_start(&f->job, servers, 1, NULL);
    cp.piece_bytes = piece_bytes;
    cr_assert_eq(pserv_cuda_worker_create(f->job.workers[0], &cp, &f->cw), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(ps_cw_test_stream_create(&f->s), PSERV_OK, "%s", pserv_cuda_last_error());
}

static void fx_stop(fx_t *f)
{
    ps_cw_test_stream_destroy(f->s);
    cr_assert_eq(pserv_cuda_worker_destroy(f->cw), PSERV_OK, "%s", pserv_cuda_last_error());
    job_stop(&f->job);
}

static void sync_ok(fx_t *f)
{
    cr_assert_eq(ps_cw_test_stream_sync(f->s), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(pserv_cuda_worker_synchronize(f->cw, 20000), PSERV_OK, "%s", pserv_cuda_last_error());
}

/* ---- without a device ---------------------------------------------------------------------- */

Test(cuda_worker, refuses_clearly_without_a_device, .timeout = 60)
{
    int n = 0;
    job_t job;
    pserv_cuda_worker_h cw = NULL;
    if (pserv_cuda_device_count(&n) == PSERV_OK) cr_skip_test("a GPU is present: the other tests cover it");
    job_start(&job, 1, 1, NULL);
    cr_assert_eq(pserv_cuda_worker_create(job.workers[0], NULL, &cw), PSERV_ERR_UNSUPPORTED);
    cr_assert_null(cw);
    cr_assert_neq(strlen(pserv_cuda_last_error()), 0, "no reason given");
    job_stop(&job);
}

Test(cuda_worker, null_arguments_are_refused)
{
    pserv_cuda_worker_h cw = NULL;
    float x;
    cr_assert_eq(pserv_cuda_worker_create(NULL, NULL, &cw), PSERV_ERR_INVALID_ARG);
    cr_assert_null(cw);
    cr_assert_eq(pserv_cuda_push(NULL, 1, &x, NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pserv_cuda_pull(NULL, 1, &x, NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pserv_cuda_push_pull(NULL, 1, &x, &x, NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pserv_cuda_node_push_pull(NULL, 1, &x, &x, NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pserv_cuda_worker_synchronize(NULL, 0), PSERV_ERR_INVALID_ARG);
    cr_assert_neq(strlen(pserv_cuda_last_error()), 0);
    cr_assert_eq(pserv_cuda_worker_destroy(NULL), PSERV_OK);
}

/* ---- with a device ------------------------------------------------------------------------- */

/* 5 pieces (one chunk each, the last partial) over two shards; the gradient is written by a
 * kernel that first sleeps 20 ms, so a D2H that does not wait for the stream copies NaN. */
Test(cuda_worker, push_pull_applies_the_update_in_stream_order, .timeout = 90)
{
    NEED_GPU();
    const size_t n = 5 * CE - 120;
    fx_t f;
    fx_start(&f, 2, 0);
    register_tensor(f.job.workers[0], 1, n);
    float *g = dev_alloc(n), *p = dev_alloc(n), *want = malloc(n * sizeof(float));
    cr_assert_eq(ps_cw_test_fill(g, n, 1.0f, 0.25f, 20000, f.s), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(pserv_cuda_push_pull(f.cw, 1, g, p, f.s), PSERV_OK, "%s", pserv_cuda_last_error());
    sync_ok(&f);
    for (size_t i = 0; i < n; i++) want[i] = init_of(i) - grad_of(i, 1.0f);
    expect_values(p, want, n, "parameters");
    for (size_t i = 0; i < n; i++) want[i] = grad_of(i, 1.0f);
    expect_values(g, want, n, "gradient (read only)");
    ps_cuda_test_free(g);
    ps_cuda_test_free(p);
    free(want);
    fx_stop(&f);
}

/* Two keys, six steps each, no host synchronization in between: more ops of a key than the
 * ring of event sets holds, pieces of two chunks (3 per op, the last partial). */
Test(cuda_worker, consecutive_ops_chain_on_the_stream, .timeout = 120)
{
    NEED_GPU();
    const size_t na = 5 * CE + 7, nb = 3 * CE;
    const unsigned steps = 6;
    fx_t f;
    fx_start(&f, 2, 2 * CHUNK_BYTES);
    register_tensor(f.job.workers[0], 10, na);
    register_tensor(f.job.workers[0], 11, nb);
    float *ga = dev_alloc(na), *pa = dev_alloc(na), *gb = dev_alloc(nb), *pb = dev_alloc(nb);
    for (unsigned k = 0; k < steps; k++) {
        cr_assert_eq(ps_cw_test_fill(ga, na, (float)(k + 1), 0.25f, 3000, f.s), PSERV_OK);
        cr_assert_eq(pserv_cuda_push_pull(f.cw, 10, ga, pa, f.s), PSERV_OK, "step %u: %s", k, pserv_cuda_last_error());
        cr_assert_eq(ps_cw_test_fill(gb, nb, -(float)k, 0.25f, 3000, f.s), PSERV_OK);
        cr_assert_eq(pserv_cuda_push_pull(f.cw, 11, gb, pb, f.s), PSERV_OK, "step %u: %s", k, pserv_cuda_last_error());
    }
    sync_ok(&f);
    float *want = malloc(na * sizeof(float));
    for (size_t i = 0; i < na; i++) {
        want[i] = init_of(i);
        for (unsigned k = 0; k < steps; k++) want[i] -= grad_of(i, (float)(k + 1));
    }
    expect_values(pa, want, na, "key 10");
    for (size_t i = 0; i < nb; i++) {
        want[i] = init_of(i);
        for (unsigned k = 0; k < steps; k++) want[i] -= grad_of(i, -(float)k);
    }
    expect_values(pb, want, nb, "key 11");
    ps_cuda_test_free(ga);
    ps_cuda_test_free(pa);
    ps_cuda_test_free(gb);
    ps_cuda_test_free(pb);
    free(want);
    fx_stop(&f);
}

/* A push lets the stream overwrite the gradient at once; the pull after it sees the update. */
Test(cuda_worker, push_then_pull, .timeout = 90)
{
    NEED_GPU();
    const size_t n = 4 * CE;
    fx_t f;
    fx_start(&f, 1, 0);
    register_tensor(f.job.workers[0], 2, n);
    float *g = dev_alloc(n), *p = dev_alloc(n), *want = malloc(n * sizeof(float));
    cr_assert_eq(ps_cw_test_fill(g, n, 2.0f, 0.25f, 10000, f.s), PSERV_OK);
    cr_assert_eq(pserv_cuda_push(f.cw, 2, g, f.s), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(ps_cw_test_fill(g, n, 1000.0f, 0.0f, 0, f.s), PSERV_OK); /* must not be what was pushed */
    cr_assert_eq(pserv_cuda_pull(f.cw, 2, p, f.s), PSERV_OK, "%s", pserv_cuda_last_error());
    sync_ok(&f);
    for (size_t i = 0; i < n; i++) want[i] = init_of(i) - grad_of(i, 2.0f);
    expect_values(p, want, n, "pulled after push");
    ps_cuda_test_free(g);
    ps_cuda_test_free(p);
    free(want);
    fx_stop(&f);
}

/* Kernels before the pull read the old contents of the destination, kernels after it the
 * pulled values. */
Test(cuda_worker, pull_is_ordered_between_kernels, .timeout = 90)
{
    NEED_GPU();
    const size_t n = 3 * CE + 1;
    fx_t f;
    fx_start(&f, 1, 0);
    register_tensor(f.job.workers[0], 3, n);
    float *p = dev_alloc(n), *before = dev_alloc(n), *after = dev_alloc(n), *want = malloc(n * sizeof(float));
    cr_assert_eq(ps_cw_test_fill(p, n, 7.0f, 0.0f, 0, f.s), PSERV_OK);
    cr_assert_eq(ps_cw_test_copy(before, p, n, 20000, f.s), PSERV_OK); /* reads p 20 ms from now */
    cr_assert_eq(pserv_cuda_pull(f.cw, 3, p, f.s), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(ps_cw_test_copy(after, p, n, 0, f.s), PSERV_OK);
    sync_ok(&f);
    for (size_t i = 0; i < n; i++) want[i] = 7.0f;
    expect_values(before, want, n, "read before the pull");
    for (size_t i = 0; i < n; i++) want[i] = init_of(i);
    expect_values(after, want, n, "read after the pull");
    ps_cuda_test_free(p);
    ps_cuda_test_free(before);
    ps_cuda_test_free(after);
    free(want);
    fx_stop(&f);
}

/* dgrad == dparam, with one piece larger than the tensor. */
Test(cuda_worker, in_place_push_pull, .timeout = 90)
{
    NEED_GPU();
    const size_t n = 2 * CE + 5;
    fx_t f;
    fx_start(&f, 1, 64 * CHUNK_BYTES);
    register_tensor(f.job.workers[0], 4, n);
    float *b = dev_alloc(n), *want = malloc(n * sizeof(float));
    for (unsigned k = 0; k < 2; k++) {
        cr_assert_eq(ps_cw_test_fill(b, n, 0.5f, 0.25f, 5000, f.s), PSERV_OK);
        cr_assert_eq(pserv_cuda_push_pull(f.cw, 4, b, b, f.s), PSERV_OK, "%s", pserv_cuda_last_error());
    }
    sync_ok(&f);
    for (size_t i = 0; i < n; i++) want[i] = init_of(i) - 2.0f * grad_of(i, 0.5f);
    expect_values(b, want, n, "in place");
    ps_cuda_test_free(b);
    free(want);
    fx_stop(&f);
}

/* A group of one: NCCL where it loads (a reduce-scatter and all-gather over one rank), a plain
 * push-pull where not; either way the gradient is the group's sum (itself) afterwards. */
Test(cuda_worker, node_push_pull_in_a_group_of_one, .timeout = 120)
{
    NEED_GPU();
    const size_t n = 6 * CE - 3;
    fx_t f;
    fx_start(&f, 2, 0);
    register_tensor(f.job.workers[0], 5, n);
    float *g = dev_alloc(n), *p = dev_alloc(n), *want = malloc(n * sizeof(float));
    for (unsigned k = 0; k < 3; k++) {
        cr_assert_eq(ps_cw_test_fill(g, n, (float)k, 0.25f, 5000, f.s), PSERV_OK);
        cr_assert_eq(pserv_cuda_node_push_pull(f.cw, 5, g, p, f.s), PSERV_OK, "step %u: %s", k,
                     pserv_cuda_last_error());
    }
    sync_ok(&f);
    for (size_t i = 0; i < n; i++) want[i] = init_of(i) - grad_of(i, 0.0f) - grad_of(i, 1.0f) - grad_of(i, 2.0f);
    expect_values(p, want, n, "parameters");
    for (size_t i = 0; i < n; i++) want[i] = grad_of(i, 2.0f);
    expect_values(g, want, n, "gradient (sum over one)");
    /* the whole-tensor API on the same key afterwards */
    cr_assert_eq(pserv_cuda_pull(f.cw, 5, g, f.s), PSERV_OK, "%s", pserv_cuda_last_error());
    sync_ok(&f);
    for (size_t i = 0; i < n; i++) want[i] = init_of(i) - grad_of(i, 0.0f) - grad_of(i, 1.0f) - grad_of(i, 2.0f);
    expect_values(g, want, n, "pulled");
    ps_cuda_test_free(g);
    ps_cuda_test_free(p);
    free(want);
    fx_stop(&f);
}

Test(cuda_worker, unknown_key_fails_at_the_call, .timeout = 60)
{
    NEED_GPU();
    fx_t f;
    fx_start(&f, 1, 0);
    float *b = dev_alloc(CE);
    cr_assert_eq(pserv_cuda_push_pull(f.cw, 999, b, b, f.s), PSERV_ERR_UNKNOWN_KEY);
    cr_assert_neq(strlen(pserv_cuda_last_error()), 0);
    cr_assert_eq(pserv_cuda_push(f.cw, 999, b, f.s), PSERV_ERR_UNKNOWN_KEY);
    cr_assert_eq(pserv_cuda_pull(f.cw, 999, b, f.s), PSERV_ERR_UNKNOWN_KEY);
    cr_assert_eq(pserv_cuda_node_push_pull(f.cw, 999, b, b, f.s), PSERV_ERR_UNKNOWN_KEY);
    cr_assert_eq(pserv_cuda_push_pull(f.cw, 1, NULL, b, f.s), PSERV_ERR_INVALID_ARG);
    sync_ok(&f);
    ps_cuda_test_free(b);
    fx_stop(&f);
}

/* Two workers of one node group: without NCCL (no_nccl) create refuses at once, on both. */
Test(cuda_worker, group_of_two_needs_nccl, .timeout = 60)
{
    NEED_GPU();
    job_t job;
    const char *nodes[] = {"n0", "n0"};
    pserv_cuda_worker_params_t cp = PSERV_CUDA_WORKER_PARAMS_INIT;
    pserv_cuda_worker_h cw = NULL;
    cp.no_nccl = 1;
    job_start(&job, 1, 2, nodes);
    for (unsigned w = 0; w < 2; w++) {
        cr_assert_eq(pserv_cuda_worker_create(job.workers[w], &cp, &cw), PSERV_ERR_INVALID_ARG);
        cr_assert_null(cw);
        cr_assert(strstr(pserv_cuda_last_error(), "NCCL") != NULL, "%s", pserv_cuda_last_error());
    }
    job_stop(&job);
}

/* A node group over two GPUs (one worker thread each): NCCL sums the group's gradients, each
 * member pushes its slice once, the all-gather gives both the whole result. An even tensor takes
 * reduce-scatter / all-gather, an uneven one the grouped reduce / broadcast path. */
typedef struct {
    pserv_worker_h w;
    int device;
    float base; /* the member's gradient: grad_of(i, base + step) */
    pserv_status_t st;
    char why[256];
    float *got[2]; /* host copies of the parameters of keys 1 and 2 */
} gpu_member_t;

static const size_t group_counts[2] = {4 * CE, 5 * CE - 3}; /* even slices, uneven slices */
#define GROUP_STEPS 3

static pserv_status_t member_run(gpu_member_t *m, pserv_cuda_worker_h *cw, pserv_cuda_stream_t *s, float **g,
                                 float **p)
{
    pserv_cuda_worker_params_t cp = PSERV_CUDA_WORKER_PARAMS_INIT;
    pserv_status_t st;
    cp.device = m->device;
    if ((st = ps_cw_test_set_device(m->device)) < 0 || (st = pserv_cuda_worker_create(m->w, &cp, cw)) < 0 ||
        (st = ps_cw_test_stream_create(s)) < 0)
        return st;
    for (unsigned k = 0; k < 2; k++) {
        size_t n = group_counts[k];
        if ((st = ps_cuda_test_alloc(n * sizeof(float), (void **)&g[k])) < 0 ||
            (st = ps_cuda_test_alloc(n * sizeof(float), (void **)&p[k])) < 0 || (st = ps_cuda_test_fill_nan(p[k], n)) < 0)
            return st;
    }
    for (unsigned step = 0; step < GROUP_STEPS; step++)
        for (unsigned k = 0; k < 2; k++) {
            if ((st = ps_cw_test_fill(g[k], group_counts[k], m->base + (float)step, 0.25f, 2000, *s)) < 0 ||
                (st = pserv_cuda_node_push_pull(*cw, k + 1, g[k], p[k], *s)) < 0)
                return st;
        }
    if ((st = ps_cw_test_stream_sync(*s)) < 0 || (st = pserv_cuda_worker_synchronize(*cw, 20000)) < 0) return st;
    for (unsigned k = 0; k < 2; k++) {
        if ((m->got[k] = malloc(group_counts[k] * sizeof(float))) == NULL) return PSERV_ERR_NO_MEMORY;
        if ((st = ps_cuda_test_download(m->got[k], p[k], group_counts[k] * sizeof(float))) < 0) return st;
    }
    return PSERV_OK;
}

static void *member_main(void *arg)
{
    gpu_member_t *m = arg;
    pserv_cuda_worker_h cw = NULL;
    pserv_cuda_stream_t s = NULL;
    float *g[2] = {NULL, NULL}, *p[2] = {NULL, NULL};
    m->st = member_run(m, &cw, &s, g, p);
    snprintf(m->why, sizeof(m->why), "%s", pserv_cuda_last_error());
    if (s) ps_cw_test_stream_destroy(s);
    for (unsigned k = 0; k < 2; k++) {
        ps_cuda_test_free(g[k]);
        ps_cuda_test_free(p[k]);
    }
    pserv_status_t dst = pserv_cuda_worker_destroy(cw);
    if (m->st == PSERV_OK) m->st = dst;
    return NULL;
}

Test(cuda_worker, node_push_pull_over_two_gpus, .timeout = 180)
{
    int ndev = 0;
    if (pserv_cuda_device_count(&ndev) != PSERV_OK || ndev < 2)
        cr_skip_test("needs 2 CUDA devices, found %d: %s", ndev, pserv_cuda_last_error());
    job_t job;
    const char *nodes[] = {"n0", "n0"};
    gpu_member_t m[2];
    pthread_t tid[2];
    job_start(&job, 2, 2, nodes);
    for (unsigned k = 0; k < 2; k++)
        for (unsigned r = 0; r < 2; r++) register_tensor(job.workers[r], k + 1, group_counts[k]);
    for (unsigned r = 0; r < 2; r++) {
        m[r] = (gpu_member_t){.w = job.workers[r], .device = (int)r, .base = 10.0f * (float)r};
        pthread_create(&tid[r], NULL, member_main, &m[r]);
    }
    for (unsigned r = 0; r < 2; r++) pthread_join(tid[r], NULL);
    for (unsigned r = 0; r < 2; r++) cr_assert_eq(m[r].st, PSERV_OK, "member %u: %s", r, m[r].why);
    for (unsigned k = 0; k < 2; k++)
        for (unsigned r = 0; r < 2; r++)
            for (size_t i = 0; i < group_counts[k]; i++) {
                float want = init_of(i);
                for (unsigned step = 0; step < GROUP_STEPS; step++)
                    want -= grad_of(i, (float)step) + grad_of(i, 10.0f + (float)step);
                cr_assert_eq(m[r].got[k][i], want, "key %u member %u element %zu: %g, want %g", k + 1, r, i,
                             (double)m[r].got[k][i], (double)want);
            }
    for (unsigned r = 0; r < 2; r++) free(m[r].got[0]), free(m[r].got[1]);
    job_stop(&job);
}

/* The server dies under a running job: the ops after it fail, the stream is released (it
 * finishes, with undefined values) and synchronize reports the error. The coordinator and the
 * server run in a child forked before this process touches CUDA. */
Test(cuda_worker, dead_server_releases_the_stream, .timeout = 120)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t child = fork();
    cr_assert_neq(child, -1);
    if (child == 0) {
        pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
        pserv_local_h local;
        pserv_server_h server;
        char addr[64] = "";
        close(fds[0]);
        lp.num_servers = 1;
        lp.num_workers = 1;
        lp.chunk_bytes = CHUNK_BYTES;
        lp.timeout_ms = 30000;
        if (pserv_local_create(&lp, &local) != PSERV_OK) _exit(1);
        snprintf(addr, sizeof(addr), "%s", pserv_local_coordinator(local));
        if (write(fds[1], addr, sizeof(addr)) != (ssize_t)sizeof(addr)) _exit(2);
        if (pserv_local_server(local, 0, 30000, &server) != PSERV_OK) _exit(3);
        pserv_server_wait(server, 100000);
        _exit(0);
    }
    close(fds[1]);
    char addr[64] = "";
    ssize_t got = read(fds[0], addr, sizeof(addr));
    close(fds[0]);
    int n = 0;
    if (got != (ssize_t)sizeof(addr) || pserv_cuda_device_count(&n) != PSERV_OK) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        cr_assert_eq(got, (ssize_t)sizeof(addr), "the child's coordinator did not start");
        cr_skip_test("no CUDA device: %s", pserv_cuda_last_error());
    }
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = addr;
    wp.timeout_ms = 30000;
    cr_assert_eq(pserv_worker_create(&wp, &w), PSERV_OK, "%s", pserv_last_error());
    const size_t n_el = 4 * CE;
    register_tensor(w, 6, n_el);
    pserv_cuda_worker_h cw;
    pserv_cuda_stream_t s;
    cr_assert_eq(pserv_cuda_worker_create(w, NULL, &cw), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(ps_cw_test_stream_create(&s), PSERV_OK);
    float *g = dev_alloc(n_el), *p = dev_alloc(n_el);
    cr_assert_eq(ps_cw_test_fill(g, n_el, 1.0f, 0.25f, 0, s), PSERV_OK);
    cr_assert_eq(pserv_cuda_push_pull(cw, 6, g, p, s), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(ps_cw_test_stream_sync(s), PSERV_OK);
    cr_assert_eq(pserv_cuda_worker_synchronize(cw, 20000), PSERV_OK, "%s", pserv_cuda_last_error());

    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    pserv_status_t st = pserv_cuda_push_pull(cw, 6, g, p, s);
    cr_assert(st == PSERV_OK || st == PSERV_ERR_PEER_FAILED, "%s: %s", pserv_strerror(st), pserv_cuda_last_error());
    st = pserv_cuda_worker_synchronize(cw, 30000);
    cr_assert(st < 0 && st != PSERV_ERR_TIMED_OUT, "synchronize after the server died: %s", pserv_strerror(st));
    cr_assert_eq(ps_cw_test_stream_sync(s), PSERV_OK, "the stream was not released: %s", pserv_cuda_last_error());
    cr_assert_eq(pserv_cuda_worker_synchronize(cw, 1000), PSERV_OK, "the error is returned once");
    ps_cw_test_stream_destroy(s);
    pserv_cuda_worker_destroy(cw);
    ps_cuda_test_free(g);
    ps_cuda_test_free(p);
    pserv_worker_destroy(w);
}
