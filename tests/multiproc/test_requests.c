/*
 * The worker's request API on a real (one-process) job: many requests in flight, the bounded
 * request table, test/wait semantics, and the errors a caller can meet.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define N 5000

static void register_ones(pserv_worker_h w, uint64_t key, size_t n, float lr, float *init)
{
    for (size_t i = 0; i < n; i++) init[i] = 1.0f;
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = key;
    tp.count = n;
    tp.init = init;
    tp.optim.lr = lr;
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_OK, "%s", pserv_worker_last_error(w));
}

Test(requests, many_async_pushes_in_flight_all_apply, .timeout = 60)
{
    inproc_job_t job;
    static float init[N], grad[N], out[N];
    pserv_request_t reqs[256];
    cr_assert_eq(inproc_job_start(&job, PSERV_MODE_ASYNC, 4096, 512), 0);
    register_ones(job.worker, 3, N, 0.001f, init);
    for (size_t i = 0; i < N; i++) grad[i] = (float)(i % 7);
    /* 256 pushes of 5 chunks each without waiting: every one is one SGD step on the server. */
    for (int k = 0; k < 256; k++) cr_assert_eq(pserv_worker_push(job.worker, 3, grad, &reqs[k]), PSERV_OK);
    for (int k = 255; k >= 0; k--) cr_assert_eq(pserv_worker_wait(job.worker, reqs[k], 20000), PSERV_OK);
    pserv_request_t pull;
    cr_assert_eq(pserv_worker_pull(job.worker, 3, out, &pull), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(job.worker, pull, 20000), PSERV_OK);
    for (size_t i = 0; i < N; i++)
        cr_assert_float_eq(out[i], 1.0f - 0.001f * 256 * (float)(i % 7), 1e-4, "element %zu: %g", i, (double)out[i]);
    pserv_server_stats_t ss = PSERV_SERVER_STATS_INIT;
    pserv_server_stats(job.server, &ss);
    cr_assert_eq(ss.steps, 256 * 5, "optimizer steps %llu", (unsigned long long)ss.steps);
    pserv_worker_stats_t ws = PSERV_WORKER_STATS_INIT;
    pserv_worker_stats(job.worker, &ws);
    cr_assert_eq(ws.requests, 257);
    cr_assert_eq(ws.errors, 0);
    cr_assert_eq(ws.bytes_pushed, 256ull * N * sizeof(float));
    cr_assert_eq(ws.bytes_pulled, (uint64_t)N * sizeof(float));
    cr_assert_eq(inproc_job_stop(&job), 0);
}

Test(requests, bounded_table_test_and_wait, .timeout = 60)
{
    inproc_job_t job;
    static float init[16], grad[16], out[16];
    pserv_request_t reqs[4], extra;
    cr_assert_eq(inproc_job_start(&job, PSERV_MODE_ASYNC, 0, 4), 0);
    register_ones(job.worker, 1, 16, 0.5f, init);
    for (int k = 0; k < 4; k++) cr_assert_eq(pserv_worker_pull(job.worker, 1, out, &reqs[k]), PSERV_OK);
    cr_assert_eq(pserv_worker_push(job.worker, 1, grad, &extra), PSERV_ERR_NO_RESOURCE);
    cr_assert(strstr(pserv_worker_last_error(job.worker), "request slots") != NULL);
    for (int k = 0; k < 4; k++) {
        int done = 0;
        for (int spin = 0; spin < 2000 && !done; spin++) {
            cr_assert_eq(pserv_worker_test(job.worker, reqs[k], &done), PSERV_OK);
            if (!done) usleep(1000);
        }
        cr_assert(done, "request %d never completed", k);
        cr_assert_eq(pserv_worker_wait(job.worker, reqs[k], 0), PSERV_OK);
        /* a finished request id is gone: its slot's generation moved on */
        cr_assert_eq(pserv_worker_wait(job.worker, reqs[k], 0), PSERV_ERR_INVALID_ARG);
    }
    cr_assert_eq(pserv_worker_push(job.worker, 1, grad, &extra), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(job.worker, extra, 10000), PSERV_OK);
    cr_assert_eq(inproc_job_stop(&job), 0);
}

Test(requests, caller_errors_are_clear, .timeout = 60)
{
    inproc_job_t job;
    static float init[100], buf[100];
    pserv_request_t req;
    cr_assert_eq(inproc_job_start(&job, PSERV_MODE_SYNC, 0, 0), 0);
    pserv_worker_h w = job.worker;
    cr_assert_eq(pserv_worker_pull(w, 77, buf, &req), PSERV_ERR_UNKNOWN_KEY);
    cr_assert(strstr(pserv_worker_last_error(w), "77") != NULL);
    register_ones(w, 1, 100, 0.1f, init);
    /* the same key again with another shape */
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 1;
    tp.count = 99;
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_ERR_MISMATCH);
    tp.count = 100;
    tp.optim.lr = -1.0f;
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pserv_worker_push(w, 1, NULL, &req), PSERV_ERR_INVALID_ARG);
    /* sync mode with one worker: each push completes its round, so pushes follow each other */
    pserv_request_t a, b;
    cr_assert_eq(pserv_worker_push(w, 1, buf, &a), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(w, a, 10000), PSERV_OK);
    cr_assert_eq(pserv_worker_push(w, 1, buf, &b), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(w, b, 10000), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(w, 12345, 0), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(inproc_job_stop(&job), 0);
}
