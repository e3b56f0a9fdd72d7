/*
 * pserv_bench_gpu_step: time of one training step (forward + backward of a batch, no optimizer:
 * pserv's optimizer runs on the server) of an MLP on one GPU through pserv's model
 * (cuda/mlp_gpu.h: cuBLAS GEMMs plus pserv's fused kernels), in float32 and in TF32.
 *
 *   pserv_bench_gpu_step [--dims 784,4096,4096,10] [--batch 512] [--steps K] [--reps R]
 *                        [--warmup W] [--device D] [--json FILE]
 *
 * Its baseline is the same model in PyTorch, bench/torch_mlp_step.py, which takes the same
 * options and times the same way; bench/gpu_step_vs_torch.py runs both in one run and reports
 * ratio = pserv / PyTorch step time. Timing: W warm-up steps, then R repetitions of K steps
 * enqueued back to back on one stream between two CUDA events (so a step's launch cost counts
 * when the host cannot keep ahead of the GPU); a step's time is a repetition's elapsed time / K,
 * and the table gives the median and the minimum over the R repetitions. Inputs are random and
 * uploaded once. Without a CUDA device it prints "skipped: <reason>" and exits 0.
 */
#include <cuda_runtime_api.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "mlp_gpu.h"
#include "pserv/pserv_cuda.h"
#include "pserv/pserv_model.h"

#define PROG "pserv_bench_gpu_step"
#define MAX_LAYERS 16

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int cuda_ok(cudaError_t err, const char *what)
{
    return bench_cuda_ok(PROG, err, what);
}

static int pserv_ok(pserv_status_t st, const char *what)
{
    if (st == PSERV_OK) return 1;
    fprintf(stderr, PROG ": %s: %s (%s)\n", what, pserv_strerror(st), pserv_model_last_error());
    return 0;
}

typedef struct {
    size_t d[MAX_LAYERS + 1];
    unsigned n;
} dims_t;

/* "784,4096,4096,10" -> dims (a bench_opt_t parse function); -1 on a malformed list. */
static int parse_dims(const char *s, void *out)
{
    dims_t dims = {{0}, 0};
    while (*s) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || errno || v == 0 || dims.n == MAX_LAYERS + 1) return -1;
        dims.d[dims.n++] = v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    if (dims.n < 2) return -1;
    *(dims_t *)out = dims;
    return 0;
}

/* GEMM flops of one step: forward 2*B*in*out per layer; backward the weight gradient (same) and
 * the input gradient (same) of every layer but the first, whose input needs no gradient. */
static double step_flops(const size_t *dims, unsigned ndims, size_t batch)
{
    double f = 0;
    for (unsigned l = 0; l + 1 < ndims; l++) {
        double g = 2.0 * (double)batch * (double)dims[l] * (double)dims[l + 1];
        f += g * (l == 0 ? 2 : 3);
    }
    return f;
}

typedef struct {
    const char *precision;
    int tf32;
    double median_s, min_s, tflops;
    float loss;
} row_t;

/* Times one precision; 0 on success. */
static int time_precision(row_t *row, const size_t *dims, unsigned ndims, size_t batch, const float *x_dev,
                          const uint8_t *y_dev, cudaStream_t stream, int steps, int reps, int warmup)
{
    ps_mlp_gpu_t *m = NULL;
    cudaEvent_t ev0 = NULL, ev1 = NULL;
    double *t = calloc((size_t)reps, sizeof(double));
    int rc = 1;
    if (t == NULL) return 1;
    if (!pserv_ok(ps_mlp_gpu_create(dims, ndims, batch, row->tf32, &m), "ps_mlp_gpu_create")) goto out;
    if (!pserv_ok(ps_mlp_gpu_init_params(m, 42), "ps_mlp_gpu_init_params")) goto out;
    if (!cuda_ok(cudaEventCreate(&ev0), "cudaEventCreate") || !cuda_ok(cudaEventCreate(&ev1), "cudaEventCreate"))
        goto out;
    for (int i = 0; i < warmup; i++)
        if (!pserv_ok(ps_mlp_gpu_train_step(m, x_dev, y_dev, batch, stream), "ps_mlp_gpu_train_step")) goto out;
    if (!cuda_ok(cudaStreamSynchronize(stream), "warm-up")) goto out;
    for (int r = 0; r < reps; r++) {
        float ms = 0;
        if (!cuda_ok(cudaEventRecord(ev0, stream), "cudaEventRecord")) goto out;
        for (int i = 0; i < steps; i++)
            if (!pserv_ok(ps_mlp_gpu_train_step(m, x_dev, y_dev, batch, stream), "ps_mlp_gpu_train_step")) goto out;
        if (!cuda_ok(cudaEventRecord(ev1, stream), "cudaEventRecord") ||
            !cuda_ok(cudaEventSynchronize(ev1), "cudaEventSynchronize") ||
            !cuda_ok(cudaEventElapsedTime(&ms, ev0, ev1), "cudaEventElapsedTime"))
            goto out;
        t[r] = (double)ms * 1e-3 / steps;
    }
    /* The loss of the last step: a finite value says the step computed something. */
    if (!pserv_ok(ps_mlp_gpu_loss(m, &row->loss), "ps_mlp_gpu_loss")) goto out;
    if (!isfinite(row->loss)) {
        fprintf(stderr, PROG ": %s step gave a non-finite loss\n", row->precision);
        goto out;
    }
    row->median_s = bench_median(t, (size_t)reps);
    row->min_s = t[0]; /* sorted by bench_median */
    row->tflops = step_flops(dims, ndims, batch) / row->median_s * 1e-12;
    rc = 0;
out:
    if (ev1) cudaEventDestroy(ev1);
    if (ev0) cudaEventDestroy(ev0);
    ps_mlp_gpu_destroy(m);
    free(t);
    return rc;
}

int main(int argc, char **argv)
{
    dims_t dims_opt = {{784, 4096, 4096, 10}, 4};
    size_t batch = 512;
    int steps = 10, reps = 20, warmup = 5, device = 0;
    const char *json = NULL;
    char device_name[256];
    const bench_opt_t opts[] = {
        BENCH_PARSE("--dims", "784,4096,4096,10", "layer widths, input first (2 to 17 of them)", &dims_opt, parse_dims),
        BENCH_SIZE("--batch", "B", "batch size (default 512)", &batch, 1, 1 << 20),
        BENCH_INT("--steps", "K", "steps per timed repetition (default 10)", &steps, 1, 1000000),
        BENCH_INT("--reps", "R", "timed repetitions, median and minimum reported (default 20)", &reps, 1, 1000000),
        BENCH_INT("--warmup", "W", "warm-up steps (default 5)", &warmup, 0, 1000000),
        BENCH_DEVICE(&device),
        BENCH_JSON(&json),
    };
    int rc = bench_cuda_args(PROG, argc, argv, opts, BENCH_NOPTS(opts), &device, device_name, sizeof(device_name));
    if (rc != BENCH_CONTINUE) return rc;
    const size_t *dims = dims_opt.d;
    const unsigned ndims = dims_opt.n;

    cudaStream_t stream = NULL;
    float *x_dev = NULL;
    uint8_t *y_dev = NULL;
    float *x = malloc(batch * dims[0] * sizeof(float));
    uint8_t *y = malloc(batch);
    rc = 1;
    if (x == NULL || y == NULL) goto out;
    if (!cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate")) goto out;
    uint64_t seed = 7;
    for (size_t i = 0; i < batch * dims[0]; i++) x[i] = (float)((double)(rng_next(&seed) >> 40) * 0x1.0p-24);
    for (size_t i = 0; i < batch; i++) y[i] = (uint8_t)(rng_next(&seed) % dims[ndims - 1] % 256);
    if (!cuda_ok(cudaMalloc((void **)&x_dev, batch * dims[0] * sizeof(float)), "cudaMalloc") ||
        !cuda_ok(cudaMalloc((void **)&y_dev, batch), "cudaMalloc") ||
        !cuda_ok(cudaMemcpy(x_dev, x, batch * dims[0] * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy") ||
        !cuda_ok(cudaMemcpy(y_dev, y, batch, cudaMemcpyHostToDevice), "cudaMemcpy"))
        goto out;

    row_t rows[2] = {{"fp32", 0, 0, 0, 0, 0}, {"tf32", 1, 0, 0, 0, 0}};
    for (int r = 0; r < 2; r++)
        if (time_precision(&rows[r], dims, ndims, batch, x_dev, y_dev, stream, steps, reps, warmup) != 0) goto out;

    char dims_text[256] = "", dims_json[256] = "";
    for (unsigned l = 0; l < ndims; l++) {
        size_t n = strlen(dims_text), nj = strlen(dims_json);
        snprintf(dims_text + n, sizeof(dims_text) - n, "%s%zu", l ? "-" : "", dims[l]);
        snprintf(dims_json + nj, sizeof(dims_json) - nj, "%s%zu", l ? ", " : "", dims[l]);
    }
    printf(PROG ": MLP %s, batch %zu, %s; %d warm-up steps, %d reps of %d steps (cudaEvent)\n",
           dims_text, batch, device_name, warmup, reps, steps);
    printf("%-9s %12s %12s %10s %10s\n", "precision", "median_ms", "min_ms", "TFLOP/s", "loss");
    for (int r = 0; r < 2; r++)
        printf("%-9s %12.4f %12.4f %10.2f %10.4f\n", rows[r].precision, rows[r].median_s * 1e3, rows[r].min_s * 1e3,
               rows[r].tflops, (double)rows[r].loss);
    if (json) {
        FILE *jf = bench_json_open(PROG, json);
        if (jf == NULL) goto out;
        fprintf(jf,
                "{\"benchmark\": \"gpu_step\", \"impl\": \"pserv\", \"device\": \"%s\", \"dims\": [%s], "
                "\"batch\": %zu, \"steps\": %d, \"reps\": %d, \"warmup\": %d, \"rows\": [",
                device_name, dims_json, batch, steps, reps, warmup);
        for (int r = 0; r < 2; r++)
            fprintf(jf,
                    "%s{\"precision\": \"%s\", \"step_s\": %.9f, \"min_s\": %.9f, \"tflops\": %.3f, "
                    "\"loss\": %.6f}",
                    r ? ", " : "", rows[r].precision, rows[r].median_s, rows[r].min_s, rows[r].tflops,
                    (double)rows[r].loss);
        if (bench_json_finish(PROG, &jf, json) != 0) goto out;
    }
    rc = 0;
out:
    if (y_dev) cudaFree(y_dev);
    if (x_dev) cudaFree(x_dev);
    if (stream) cudaStreamDestroy(stream);
    free(y);
    free(x);
    return rc;
}
