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
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pserv/pserv.h"
#include "pserv/pserv_cuda.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return t[n / 2];
}

static int cuda_ok(cudaError_t err, const char *what)
{
    if (err == cudaSuccess) return 1;
    fprintf(stderr, "pserv_bench_cuda_pushpull: %s: %s\n", what, cudaGetErrorString(err));
    return 0;
}

/* --- one coordinator, one server shard, one worker, in this process ---------------------------- */

typedef struct {
    char coord[64];
    pserv_server_h server;
    pserv_status_t st;
} server_start_t;

static void *start_server(void *arg)
{
    server_start_t *s = arg;
    pserv_server_params_t sp = PSERV_SERVER_PARAMS_INIT;
    sp.coordinator = s->coord;
    s->st = pserv_server_create(&sp, &s->server);
    return NULL;
}

typedef struct {
    pserv_coordinator_h coord;
    pserv_server_h server;
    pserv_worker_h worker;
} job_t;

static int job_start(job_t *job)
{
    pserv_coordinator_params_t cop = PSERV_COORDINATOR_PARAMS_INIT;
    uint16_t port;
    memset(job, 0, sizeof(*job));
    cop.num_servers = 1;
    cop.num_workers = 1;
    if (pserv_coordinator_create(&cop, &job->coord) != PSERV_OK) return -1;
    pserv_coordinator_port(job->coord, &port);
    server_start_t ss = {.st = PSERV_ERR_INTERNAL};
    snprintf(ss.coord, sizeof(ss.coord), "127.0.0.1:%u", port);
    pthread_t tid;
    if (pthread_create(&tid, NULL, start_server, &ss) != 0) return -1;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    wp.coordinator = ss.coord;
    pserv_status_t wst = pserv_worker_create(&wp, &job->worker);
    pthread_join(tid, NULL);
    job->server = ss.st == PSERV_OK ? ss.server : NULL;
    if (wst != PSERV_OK) job->worker = NULL;
    return wst == PSERV_OK && ss.st == PSERV_OK ? 0 : -1;
}

static void job_stop(job_t *job)
{
    if (job->worker) pserv_worker_destroy(job->worker);
    if (job->server) {
        pserv_server_wait(job->server, 10000);
        pserv_server_destroy(job->server);
    }
    if (job->coord) {
        pserv_coordinator_wait(job->coord, 10000);
        pserv_coordinator_destroy(job->coord);
    }
}

/* --- the two measurements ------------------------------------------------------------------------ */

/* Seconds of one D2H + H2D of bytes through pinned host memory, to the end of the stream. */
static int time_copies(void *dgrad, void *dparam, void *pinned, size_t bytes, cudaStream_t s, double *t)
{
    double t0 = now_s();
    if (!cuda_ok(cudaMemcpyAsync(pinned, dgrad, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync D2H") ||
        !cuda_ok(cudaMemcpyAsync(dparam, pinned, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync H2D") ||
        !cuda_ok(cudaStreamSynchronize(s), "cudaStreamSynchronize"))
        return -1;
    *t = now_s() - t0;
    return 0;
}

/* Seconds of one pserv_cuda_push_pull, to the end of the stream. */
static int time_pserv(pserv_cuda_worker_h cw, uint64_t key, void *dgrad, void *dparam, cudaStream_t s, double *t)
{
    double t0 = now_s();
    pserv_status_t st = pserv_cuda_push_pull(cw, key, dgrad, dparam, (pserv_cuda_stream_t)s);
    if (st != PSERV_OK) {
        fprintf(stderr, "pserv_bench_cuda_pushpull: pserv_cuda_push_pull: %s (%s)\n", pserv_strerror(st),
                pserv_cuda_last_error());
        return -1;
    }
    if (!cuda_ok(cudaStreamSynchronize(s), "cudaStreamSynchronize")) return -1;
    *t = now_s() - t0;
    /* Errors of the asynchronous part surface here (outside the timed part). */
    st = pserv_cuda_worker_synchronize(cw, 60000);
    if (st != PSERV_OK) {
        fprintf(stderr, "pserv_bench_cuda_pushpull: push-pull failed: %s (%s)\n", pserv_strerror(st),
                pserv_cuda_last_error());
        return -1;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: pserv_bench_cuda_pushpull [--reps R] [--max-mib M] [--piece-bytes B] [--device D] "
                    "[--json FILE]\n");
}

int main(int argc, char **argv)
{
    int reps = 20, device = 0;
    size_t max_mib = 64, piece_bytes = 0;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v && strcmp(a, "--reps") == 0) reps = atoi(v);
        else if (v && strcmp(a, "--max-mib") == 0) max_mib = (size_t)atol(v);
        else if (v && strcmp(a, "--piece-bytes") == 0) piece_bytes = (size_t)atol(v);
        else if (v && strcmp(a, "--device") == 0) device = atoi(v);
        else if (v && strcmp(a, "--json") == 0) json = v;
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (reps < 1 || max_mib < 1 || device < 0) {
        usage();
        return 2;
    }

    int ndev = 0;
    if (pserv_cuda_device_count(&ndev) != PSERV_OK || ndev == 0) {
        printf("pserv_bench_cuda_pushpull: skipped: no CUDA device (%s)\n", pserv_cuda_last_error());
        return 0;
    }
    if (device >= ndev) {
        fprintf(stderr, "pserv_bench_cuda_pushpull: --device %d, but only %d device(s)\n", device, ndev);
        return 2;
    }

    size_t max_bytes = max_mib << 20;
    struct cudaDeviceProp prop;
    cudaStream_t stream = NULL;
    void *dgrad = NULL, *dparam = NULL, *pinned = NULL;
    double *tc = calloc((size_t)reps, sizeof(double)), *tp = calloc((size_t)reps, sizeof(double));
    job_t job = {0};
    pserv_cuda_worker_h cw = NULL;
    FILE *jf = NULL;
    pserv_cuda_worker_params_t cp = PSERV_CUDA_WORKER_PARAMS_INIT;
    pserv_status_t st;
    int rc = 1;
    if (tc == NULL || tp == NULL) goto out;
    if (!cuda_ok(cudaSetDevice(device), "cudaSetDevice") ||
        !cuda_ok(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties") ||
        !cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate") ||
        !cuda_ok(cudaMalloc(&dgrad, max_bytes), "cudaMalloc") ||
        !cuda_ok(cudaMalloc(&dparam, max_bytes), "cudaMalloc") ||
        !cuda_ok(cudaHostAlloc(&pinned, max_bytes, cudaHostAllocDefault), "cudaHostAlloc") ||
        !cuda_ok(cudaMemset(dgrad, 0, max_bytes), "cudaMemset") ||
        !cuda_ok(cudaMemset(dparam, 0, max_bytes), "cudaMemset") ||
        !cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize")) /* the memsets ran on the legacy stream */
        goto out;

    if (job_start(&job) != 0) {
        fprintf(stderr, "pserv_bench_cuda_pushpull: cannot start the job: %s\n", pserv_last_error());
        goto out;
    }
    cp.device = device;
    cp.piece_bytes = piece_bytes;
    st = pserv_cuda_worker_create(job.worker, &cp, &cw);
    if (st != PSERV_OK) {
        fprintf(stderr, "pserv_bench_cuda_pushpull: pserv_cuda_worker_create: %s (%s)\n", pserv_strerror(st),
                pserv_cuda_last_error());
        cw = NULL;
        goto out;
    }

    if (json) {
        jf = fopen(json, "w");
        if (jf == NULL) {
            fprintf(stderr, "pserv_bench_cuda_pushpull: cannot write %s: %s\n", json, strerror(errno));
            goto out;
        }
        fprintf(jf,
                "{\"benchmark\": \"cuda_pushpull\", \"device\": \"%s\", \"reps\": %d, \"piece_bytes\": %zu, "
                "\"rows\": [",
                prop.name, reps, piece_bytes);
    }
    printf("pserv_bench_cuda_pushpull: %s, 1 server, 1 worker, loopback, %d reps (median), "
           "GB/s = 2 x bytes / time to cudaStreamSynchronize\n",
           prop.name, reps);
    printf("%10s %12s %10s %12s %10s %8s\n", "bytes", "copy_us", "copy_GB/s", "pserv_us", "pserv_GB/s", "ratio");
    uint64_t key = 1;
    for (size_t bytes = (size_t)1 << 20; bytes <= max_bytes; bytes *= 4, key++) {
        pserv_tensor_params_t tparams = PSERV_TENSOR_PARAMS_INIT;
        tparams.key = key;
        tparams.count = bytes / sizeof(float);
        tparams.optim.lr = 1e-6f; /* the gradient is zero: the parameters stay zero */
        st = pserv_worker_register(job.worker, &tparams);
        if (st != PSERV_OK) {
            fprintf(stderr, "pserv_bench_cuda_pushpull: register: %s (%s)\n", pserv_strerror(st),
                    pserv_worker_last_error(job.worker));
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
        double copy = median(tc, reps), ps = median(tp, reps);
        double copy_gbs = 2.0 * (double)bytes / copy / 1e9, ps_gbs = 2.0 * (double)bytes / ps / 1e9;
        printf("%10zu %12.1f %10.3f %12.1f %10.3f %8.3f\n", bytes, copy * 1e6, copy_gbs, ps * 1e6, ps_gbs, copy / ps);
        if (jf)
            fprintf(jf,
                    "%s{\"bytes\": %zu, \"copy_s\": %.9f, \"pserv_s\": %.9f, \"copy_gbs\": %.4f, "
                    "\"pserv_gbs\": %.4f, \"ratio\": %.4f}",
                    key > 1 ? ", " : "", bytes, copy, ps, copy_gbs, ps_gbs, copy / ps);
    }
    if (jf) {
        fprintf(jf, "]}\n");
        int bad = fclose(jf) != 0;
        jf = NULL;
        if (bad) goto out;
    }
    rc = 0;
out:
    if (jf) fclose(jf);
    if (cw) {
        st = pserv_cuda_worker_destroy(cw);
        if (st != PSERV_OK) {
            fprintf(stderr, "pserv_bench_cuda_pushpull: pserv_cuda_worker_destroy: %s\n", pserv_strerror(st));
            rc = 1;
        }
    }
    job_stop(&job);
    if (pinned) cudaFreeHost(pinned);
    if (dparam) cudaFree(dparam);
    if (dgrad) cudaFree(dgrad);
    if (stream) cudaStreamDestroy(stream);
    free(tp);
    free(tc);
    return rc;
}
