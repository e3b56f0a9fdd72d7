/*
 * pserv_bench_cuda_pushpull: a device buffer's push-pull through pserv (pserv_cuda_push_pull on
 * a stream: device -> pinned staging -> server shard, SGD step, -> pinned -> device, pipelined in
 * pieces) against the bare copies it cannot avoid: cudaMemcpyAsync device -> pinned host, then
 * pinned host -> device, of the same bytes on the same stream, in the same run.
 *
 *   pserv_bench_cuda_pushpull [--reps R] [--max-mib M] [--piece-bytes B] [--device D] [--json FILE]
 *
 * One coordinator, one server shard and one worker in this process (threads), over UCX on
 * 127.0.0.1, 4 MiB chunks. For 1, 4, 16, ... M MiB (default 64) both are timed from the call to
 * the return of cudaStreamSynchronize (host wall clock), one warm-up then R reps (default 20),
 * the two interleaved; the table gives medians. GB/s counts both directions (2 x bytes); ratio =
 * baseline time / pserv time = pserv's GB/s over the bare copies' GB/s: 1 means pserv moves a
 * buffer through a server as fast as the GPU copies it to the host and back; pserv can exceed 1
 * because its pipeline overlaps the D2H and H2D copies, which the baseline runs one after the
 * other. Without a CUDA device it prints "skipped: <reason>" and exits 0.
 */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "pserv/pserv.h"
#include "pserv/pserv_cuda.h"

#define PROG "pserv_bench_cuda_pushpull"

static int cuda_ok(cudaError_t err, const char *what)
{
    return bench_cuda_ok(PROG, err, what);
}

/* --- the two measurements ------------------------------------------------------------------------ */

/* Seconds of one D2H + H2D of bytes through pinned host memory, to the end of the stream. */
static int time_copies(void *dgrad, void *dparam, void *pinned, size_t bytes, cudaStream_t s, double *t)
{
    double t0 = bench_now();
    if (!cuda_ok(cudaMemcpyAsync(pinned, dgrad, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync D2H") ||
        !cuda_ok(cudaMemcpyAsync(dparam, pinned, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync H2D") ||
        !cuda_ok(cudaStreamSynchronize(s), "cudaStreamSynchronize"))
        return -1;
    *t = bench_now() - t0;
    return 0;
}

/* Seconds of one pserv_cuda_push_pull, to the end of the stream. */
static int time_pserv(pserv_cuda_worker_h cw, uint64_t key, void *dgrad, void *dparam, cudaStream_t s, double *t)
{
    double t0 = bench_now();
    pserv_status_t st = pserv_cuda_push_pull(cw, key, dgrad, dparam, (pserv_cuda_stream_t)s);
    if (st != PSERV_OK) {
        fprintf(stderr, PROG ": pserv_cuda_push_pull: %s (%s)\n", pserv_strerror(st),
                pserv_cuda_last_error());
        return -1;
    }
    if (!cuda_ok(cudaStreamSynchronize(s), "cudaStreamSynchronize")) return -1;
    *t = bench_now() - t0;
    /* Errors of the asynchronous part surface here (outside the timed part). */
    st = pserv_cuda_worker_synchronize(cw, 60000);
    if (st != PSERV_OK) {
        fprintf(stderr, PROG ": push-pull failed: %s (%s)\n", pserv_strerror(st),
                pserv_cuda_last_error());
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int reps = 20, device = 0;
    size_t max_mib = 64, piece_bytes = 0;
    const char *json = NULL;
    char device_name[256];
    const bench_opt_t opts[] = {
        BENCH_INT("--reps", "R", "timed reps per size, median reported (default 20)", &reps, 1, 1000000),
        BENCH_SIZE("--max-mib", "M", "largest buffer in MiB (default 64)", &max_mib, 1, 65536),
        BENCH_SIZE("--piece-bytes", "B", "pipeline piece (default: the job's chunk)", &piece_bytes, 0, 1ll << 40),
        BENCH_DEVICE(&device),
        BENCH_JSON(&json),
    };
    int rc = bench_cuda_args(PROG, argc, argv, opts, BENCH_NOPTS(opts), &device, device_name, sizeof(device_name));
    if (rc != BENCH_CONTINUE) return rc;

    size_t max_bytes = max_mib << 20;
    cudaStream_t stream = NULL;
    void *dgrad = NULL, *dparam = NULL, *pinned = NULL;
    double *tc = calloc((size_t)reps, sizeof(double)), *tp = calloc((size_t)reps, sizeof(double));
    pserv_local_h job = NULL;
    pserv_worker_h worker = NULL;
    pserv_cuda_worker_h cw = NULL;
    FILE *jf = NULL;
    pserv_cuda_worker_params_t cp = PSERV_CUDA_WORKER_PARAMS_INIT;
    pserv_status_t st;
    rc = 1;
    if (tc == NULL || tp == NULL) goto out;
    if (!cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate") ||
        !cuda_ok(cudaMalloc(&dgrad, max_bytes), "cudaMalloc") ||
        !cuda_ok(cudaMalloc(&dparam, max_bytes), "cudaMalloc") ||
        !cuda_ok(cudaHostAlloc(&pinned, max_bytes, cudaHostAllocDefault), "cudaHostAlloc") ||
        !cuda_ok(cudaMemset(dgrad, 0, max_bytes), "cudaMemset") ||
        !cuda_ok(cudaMemset(dparam, 0, max_bytes), "cudaMemset") ||
        !cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize")) /* the memsets ran on the legacy stream */
        goto out;

    if (bench_job_start(PROG, &job, &worker) != 0) goto out;
    cp.device = device;
    cp.piece_bytes = piece_bytes;
    st = pserv_cuda_worker_create(worker, &cp, &cw);
    if (st != PSERV_OK) {
        fprintf(stderr, PROG ": pserv_cuda_worker_create: %s (%s)\n", pserv_strerror(st),
                pserv_cuda_last_error());
        cw = NULL;
        goto out;
    }

    if (json) {
        if ((jf = bench_json_open(PROG, json)) == NULL) goto out;
        fprintf(jf,
                "{\"benchmark\": \"cuda_pushpull\", \"device\": \"%s\", \"reps\": %d, \"piece_bytes\": %zu, "
                "\"rows\": [",
                device_name, reps, piece_bytes);
    }
    printf(PROG ": %s, 1 server, 1 worker, loopback, %d reps (median), "
           "GB/s = 2 x bytes / time to cudaStreamSynchronize\n",
           device_name, reps);
    printf("%10s %12s %10s %12s %10s %8s\n", "bytes", "copy_us", "copy_GB/s", "pserv_us", "pserv_GB/s", "ratio");
    uint64_t key = 1;
    for (size_t bytes = (size_t)1 << 20; bytes <= max_bytes; bytes *= 4, key++) {
        pserv_tensor_params_t tparams = PSERV_TENSOR_PARAMS_INIT;
        tparams.key = key;
        tparams.count = bytes / sizeof(float);
        tparams.optim.lr = 1e-6f; /* the gradient is zero: the parameters stay zero */
        st = pserv_worker_register(worker, &tparams);
        if (st != PSERV_OK) {
            fprintf(stderr, PROG ": register: %s (%s)\n", pserv_strerror(st),
                    pserv_worker_last_error(worker));
            goto out;
        }
        double t;
        if (time_copies(dgrad, dparam, pinned, bytes, stream, &t) != 0 ||
            time_pserv(cw, key, dgrad, dparam, stream, &t) != 0) /* warm-up */
            goto out;
        for (int r = 0; r < reps; r++)
            if (time_copies(dgrad, dparam, pinned, bytes, stream, &tc[r]) != 0 ||
                time_pserv(cw, key, dgrad, dparam, stream, &tp[r]) != 0)
                goto out;
        double copy = bench_median(tc, (size_t)reps), ps = bench_median(tp, (size_t)reps);
        double copy_gbs = 2.0 * (double)bytes / copy / 1e9, ps_gbs = 2.0 * (double)bytes / ps / 1e9;
        printf("%10zu %12.1f %10.3f %12.1f %10.3f %8.3f\n", bytes, copy * 1e6, copy_gbs, ps * 1e6, ps_gbs, copy / ps);
        if (jf)
            fprintf(jf,
                    "%s{\"bytes\": %zu, \"copy_s\": %.9f, \"pserv_s\": %.9f, \"copy_gbs\": %.4f, "
                    "\"pserv_gbs\": %.4f, \"ratio\": %.4f}",
                    key > 1 ? ", " : "", bytes, copy, ps, copy_gbs, ps_gbs, copy / ps);
    }
    if (jf && bench_json_finish(PROG, &jf, json) != 0) goto out;
    rc = 0;
out:
    if (jf) fclose(jf);
    if (cw) {
        st = pserv_cuda_worker_destroy(cw);
        if (st != PSERV_OK) {
            fprintf(stderr, PROG ": pserv_cuda_worker_destroy: %s\n", pserv_strerror(st));
            rc = 1;
        }
    }
    if (job && bench_job_stop(PROG, job, worker) != 0) rc = 1;
    if (pinned) cudaFreeHost(pinned);
    if (dparam) cudaFree(dparam);
    if (dgrad) cudaFree(dgrad);
    if (stream) cudaStreamDestroy(stream);
    free(tp);
    free(tc);
    return rc;
}
