/*
 * Whole jobs as separate processes on 127.0.0.1: coordinator + 2 server shards + 3 workers.
 * Sync mode must equal one process applying the summed gradients; async mode must converge.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "optim.h"
#include "harness.h"

#define NWORKERS 3
#define NSERVERS 2
#define ROUNDS 12
#define CHUNK_BYTES 4096 /* small chunks: the large tensor spans both shards many times */

static const size_t tensor_sizes[] = {10007, 300, 1}; /* keys 1..3 */
#define NTENSORS (sizeof(tensor_sizes) / sizeof(tensor_sizes[0]))

/* The gradient worker w pushes for tensor t in round k: deterministic, different everywhere. */
static float grad_value(unsigned w, unsigned k, unsigned t, size_t i)
{
    return sinf(0.37f * (float)i + 1.3f * (float)w + 0.71f * (float)k + 2.1f * (float)t) * (1.0f + 0.1f * (float)w);
}

static float init_value(unsigned t, size_t i)
{
    return cosf(0.05f * (float)i + (float)t);
}

/* CLIPPED: SGD with clipping by norm, which is per tensor even for a tensor of many chunks. */
#define CLIPPED PSERV_OPTIM_COUNT

static void optim_for(pserv_optim_type_t type, pserv_optim_params_t *o)
{
    pserv_optim_params_t d = PSERV_OPTIM_PARAMS_INIT;
    *o = d;
    o->type = type == CLIPPED ? PSERV_OPTIM_SGD : type;
    o->lr = type == PSERV_OPTIM_ADAM ? 0.01f : 0.05f;
    o->weight_decay = 0.01f;
    if (type == CLIPPED) o->clip_norm = 5.0f; /* the summed gradients' norms are far above this */
}

typedef struct {
    unsigned worker;
    pserv_optim_type_t optim;
} sync_arg_t;

/* A worker process: registers the tensors, runs ROUNDS fused push-pulls, sends back its final
 * parameters through the pipe. */
static int sync_worker(void *varg, const char *coord, int fd)
{
    sync_arg_t *arg = varg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    pserv_job_info_t job = PSERV_JOB_INFO_INIT;
    wp.coordinator = coord;
    wp.timeout_ms = 20000;
    if (pserv_worker_create(&wp, &w) != PSERV_OK) return 30;
    pserv_worker_job(w, &job);
    float *params[NTENSORS], *grads[NTENSORS];
    for (unsigned t = 0; t < NTENSORS; t++) {
        size_t n = tensor_sizes[t];
        params[t] = malloc(n * sizeof(float));
        grads[t] = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) params[t][i] = init_value(t, i);
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = t + 1;
        tp.count = n;
        tp.init = params[t];
        optim_for(arg->optim, &tp.optim);
        if (pserv_worker_register(w, &tp) != PSERV_OK) return 31;
    }
    if (pserv_worker_barrier(w, 20000) != PSERV_OK) return 32;
    for (unsigned k = 0; k < ROUNDS; k++) {
        pserv_request_t reqs[NTENSORS];
        for (unsigned t = 0; t < NTENSORS; t++) {
            for (size_t i = 0; i < tensor_sizes[t]; i++) grads[t][i] = grad_value(job.rank, k, t, i);
            if (pserv_worker_push_pull(w, t + 1, grads[t], params[t], &reqs[t]) != PSERV_OK) return 33;
        }
        for (unsigned t = 0; t < NTENSORS; t++)
            if (pserv_worker_wait(w, reqs[t], 20000) != PSERV_OK) return 34;
    }
    uint32_t rank = job.rank;
    harness_write(fd, &rank, sizeof(rank));
    for (unsigned t = 0; t < NTENSORS; t++) harness_write(fd, params[t], tensor_sizes[t] * sizeof(float));
    pserv_worker_stats_t st = PSERV_WORKER_STATS_INIT;
    pserv_worker_stats(w, &st);
    pserv_worker_destroy(w);
    return st.errors == 0 ? 0 : 35;
}

/* The single-process reference: every round, sum the workers' gradients and take one step. */
static void reference(pserv_optim_type_t type, unsigned t, float *p)
{
    size_t n = tensor_sizes[t];
    pserv_optim_params_t o;
    ps_optim_state_t state;
    float *sum = malloc(n * sizeof(float));
    optim_for(type, &o);
    cr_assert_eq(ps_optim_state_init(o.type, n, &state), PSERV_OK);
    for (size_t i = 0; i < n; i++) p[i] = init_value(t, i);
    for (unsigned k = 0; k < ROUNDS; k++) {
        for (size_t i = 0; i < n; i++) {
            float s = 0;
            for (unsigned w = 0; w < NWORKERS; w++) s += grad_value(w, k, t, i);
            sum[i] = s;
        }
        ps_optim_step(NULL, &o, p, sum, &state, n);
    }
    ps_optim_state_free(&state);
    free(sum);
}

static void run_sync_job(pserv_optim_type_t type)
{
    harness_t h = {0};
    sync_arg_t args[NWORKERS];
    int fds[NWORKERS];
    harness_start_coordinator(&h, NSERVERS, NWORKERS, PSERV_MODE_SYNC, CHUNK_BYTES);
    for (int s = 0; s < NSERVERS; s++) harness_start_server(&h, 1);
    for (unsigned w = 0; w < NWORKERS; w++) {
        args[w] = (sync_arg_t){w, type};
        harness_start(&h, sync_worker, &args[w], &fds[w]);
    }
    float *ref[NTENSORS], *got[NTENSORS];
    for (unsigned t = 0; t < NTENSORS; t++) {
        ref[t] = malloc(tensor_sizes[t] * sizeof(float));
        got[t] = malloc(tensor_sizes[t] * sizeof(float));
        reference(type, t, ref[t]);
    }
    for (unsigned w = 0; w < NWORKERS; w++) {
        uint32_t rank;
        int ok = harness_read(fds[w], &rank, sizeof(rank), 60000) == 0;
        for (unsigned t = 0; ok && t < NTENSORS; t++)
            ok = harness_read(fds[w], got[t], tensor_sizes[t] * sizeof(float), 10000) == 0;
        if (!ok) harness_kill_all(&h);
        cr_assert(ok, "worker process %u sent no result", w);
        /* Summation order differs (the server adds pushes as they arrive): compare norm-wise
         * per tensor, and element-wise against the tensor's scale. */
        for (unsigned t = 0; t < NTENSORS; t++) {
            double diff2 = 0, ref2 = 0, worst = 0;
            for (size_t i = 0; i < tensor_sizes[t]; i++) {
                double d = fabs((double)got[t][i] - ref[t][i]);
                diff2 += d * d;
                ref2 += (double)ref[t][i] * ref[t][i];
                double e = d / fmax(fabs((double)ref[t][i]), 1.0);
                if (e > worst) worst = e;
            }
            double rel = sqrt(diff2 / fmax(ref2, 1e-30));
            cr_expect_lt(rel, 1e-5, "worker rank %u, tensor %u: relative error %g", rank, t, rel);
            cr_expect_lt(worst, 1e-5, "worker rank %u, tensor %u: element error %g", rank, t, worst);
        }
        close(fds[w]);
    }
    for (unsigned t = 0; t < NTENSORS; t++) {
        free(ref[t]);
        free(got[t]);
    }
    int bad = harness_wait_all(&h, 30000);
    cr_assert_eq(bad, 0, "%d processes failed", bad);
}

Test(multiproc, sync_sgd_equals_single_process, .timeout = 120)
{
    run_sync_job(PSERV_OPTIM_SGD);
}

Test(multiproc, sync_momentum_equals_single_process, .timeout = 120)
{
    run_sync_job(PSERV_OPTIM_MOMENTUM);
}

Test(multiproc, sync_clip_by_norm_is_per_tensor, .timeout = 120)
{
    run_sync_job(CLIPPED);
}

/* Async: least squares, A x = b with a known solution; each worker holds its own rows. */
#define LS_DIM 8
#define LS_ROWS 32
#define LS_ITERS 400

static void ls_problem(unsigned w, float a[LS_ROWS][LS_DIM], float b[LS_ROWS], float x_true[LS_DIM])
{
    unsigned seed = 1234 + w;
    for (int j = 0; j < LS_DIM; j++) x_true[j] = (float)(j + 1) / LS_DIM - 0.4f;
    for (int r = 0; r < LS_ROWS; r++) {
        b[r] = 0;
        for (int j = 0; j < LS_DIM; j++) {
            a[r][j] = (float)rand_r(&seed) / RAND_MAX * 2.0f - 1.0f;
            b[r] += a[r][j] * x_true[j];
        }
    }
}

static int async_worker(void *varg, const char *coord, int fd)
{
    (void)varg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    pserv_job_info_t job = PSERV_JOB_INFO_INIT;
    wp.coordinator = coord;
    wp.timeout_ms = 20000;
    if (pserv_worker_create(&wp, &w) != PSERV_OK) return 40;
    pserv_worker_job(w, &job);
    float a[LS_ROWS][LS_DIM], b[LS_ROWS], x_true[LS_DIM], x[LS_DIM] = {0}, g[LS_DIM];
    ls_problem(job.rank, a, b, x_true);
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 77;
    tp.count = LS_DIM;
    tp.optim.lr = 0.01f;
    if (pserv_worker_register(w, &tp) != PSERV_OK) return 41;
    if (pserv_worker_barrier(w, 20000) != PSERV_OK) return 42;
    pserv_request_t req;
    for (int it = 0; it < LS_ITERS; it++) {
        memset(g, 0, sizeof(g));
        for (int r = 0; r < LS_ROWS; r++) {
            float resid = -b[r];
            for (int j = 0; j < LS_DIM; j++) resid += a[r][j] * x[j];
            for (int j = 0; j < LS_DIM; j++) g[j] += resid * a[r][j];
        }
        if (pserv_worker_push_pull(w, 77, g, x, &req) != PSERV_OK) return 43;
        if (pserv_worker_wait(w, req, 20000) != PSERV_OK) return 44;
    }
    if (pserv_worker_barrier(w, 20000) != PSERV_OK) return 45; /* everyone done pushing */
    if (pserv_worker_pull(w, 77, x, &req) != PSERV_OK || pserv_worker_wait(w, req, 20000) != PSERV_OK) return 46;
    double err = 0, norm = 0;
    for (int j = 0; j < LS_DIM; j++) {
        err += (x[j] - x_true[j]) * (x[j] - x_true[j]);
        norm += x_true[j] * x_true[j];
    }
    double rel = sqrt(err / norm);
    harness_write(fd, &rel, sizeof(rel));
    pserv_worker_destroy(w);
    return 0;
}

Test(multiproc, async_converges_on_least_squares, .timeout = 120)
{
    harness_t h = {0};
    int fds[NWORKERS];
    harness_start_coordinator(&h, NSERVERS, NWORKERS, PSERV_MODE_ASYNC, CHUNK_BYTES);
    for (int s = 0; s < NSERVERS; s++) harness_start_server(&h, 1);
    for (unsigned w = 0; w < NWORKERS; w++) harness_start(&h, async_worker, NULL, &fds[w]);
    for (unsigned w = 0; w < NWORKERS; w++) {
        double rel = 1e9;
        int ok = harness_read(fds[w], &rel, sizeof(rel), 90000) == 0;
        if (!ok) harness_kill_all(&h);
        cr_assert(ok, "worker process %u sent no result", w);
        cr_expect_lt(rel, 1e-3, "async least squares: relative error %g after %d iterations", rel, LS_ITERS);
        close(fds[w]);
    }
    cr_assert_eq(harness_wait_all(&h, 30000), 0);
}
