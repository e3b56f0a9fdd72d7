/*
 * A small CUDA training loop that embeds pserv: least-squares linear regression, y = X w_true.
 * The data, the residual, the loss and the gradient are computed on the GPU by this program's
 * own kernels; the weights w live on a pserv server shard, which applies SGD to the gradients the
 * workers push. Each step is, all in the order of one CUDA stream, with no host synchronization:
 *
 *   residual r = X w - y, loss[step] = mean(r^2)     (kernel)
 *   gradient g = 2/(N * workers) X^T r               (memset, kernel)
 *   pserv_cuda_push_pull(cw, key, g, w, stream)      (g to the server, updated w back into w)
 *
 * The host only enqueues; it waits once, after the last step, then checks that the loss fell and
 * that w approached w_true.
 *
 *   linear_regression --local [--steps S] [--dim D] [--samples N] [--lr LR]
 *   linear_regression --coordinator HOST:PORT [...]
 *
 * --local starts a coordinator and one server shard in this process (pserv_local_create) and runs
 * alone.
 * --coordinator joins a running job (pserv coordinator / pserv server, see README.md) as one of its
 * workers; every worker generates its own samples (seeded by its rank) of the same w_true, and
 * scales its gradient by 1/workers because the server sums the pushes of a synchronous round.
 * Without a CUDA device it prints "skipped: ..." and exits 0; exit 1 on an error or when it did
 * not converge, 2 on bad arguments.
 */
#include <cuda_runtime.h>
#include <pserv/pserv.h>
#include <pserv/pserv_cuda.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const uint64_t KEY = 1; /* pserv key of w */

#define CUDA_OK(call) cuda_ok((call), #call)

static bool cuda_ok(cudaError_t err, const char *what)
{
    if (err == cudaSuccess) return true;
    fprintf(stderr, "linear_regression: %s: %s\n", what, cudaGetErrorString(err));
    return false;
}

/* --- data ---------------------------------------------------------------------------------------- */

__host__ __device__ static float w_true_at(unsigned j)
{
    return sinf(0.37f * (float)j) + 0.5f * cosf(1.3f * (float)j);
}

__device__ static float uniform(uint64_t seed, uint64_t i) /* [-1, 1), a hash of (seed, i) */
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + i;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 40) * 0x1.0p-23 - 1.0);
}

__global__ void make_x(float *x, size_t n, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = uniform(seed, i);
}

/* One warp per row: out[i] = X[i,:] . v (- sub[i]); with loss != NULL, also adds out[i]^2 * scale. */
__global__ void row_dot(const float *x, const float *v, const float *sub, float *out, float *loss, float scale,
                        unsigned rows, unsigned dim, int v_is_w_true)
{
    unsigned warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (warp >= rows) return;
    const float *row = x + (size_t)warp * dim;
    float s = 0;
    for (unsigned j = lane; j < dim; j += 32) s += row[j] * (v_is_w_true ? w_true_at(j) : v[j]);
    for (int o = 16; o > 0; o /= 2) s += __shfl_down_sync(0xffffffffu, s, o);
    if (lane == 0) {
        if (sub) s -= sub[warp];
        out[warp] = s;
        if (loss) atomicAdd(loss, s * s * scale);
    }
}

/* g[j] += scale * sum over this block's rows of X[i,j] r[i]: one thread per column (consecutive
 * threads read consecutive columns of a row: coalesced), rows split over blockIdx.y so that there
 * are enough threads; g must be zero first. */
__global__ void grad_kernel(const float *x, const float *r, float *g, float scale, unsigned rows, unsigned dim)
{
    unsigned j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= dim) return;
    unsigned per = (rows + gridDim.y - 1) / gridDim.y, begin = blockIdx.y * per;
    unsigned end = begin + per < rows ? begin + per : rows;
    float s = 0;
    for (unsigned i = begin; i < end; i++) s += x[(size_t)i * dim + j] * r[i];
    atomicAdd(&g[j], s * scale);
}

/* --- the training loop --------------------------------------------------------------------------- */

struct options {
    const char *coordinator;
    bool local;
    unsigned steps, dim, samples;
    float lr;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Registers w, trains, checks. 0: converged; 1: error or no convergence. */
static int train(pserv_worker_h worker, const options &o)
{
    pserv_job_info_t info = PSERV_JOB_INFO_INIT;
    pserv_status_t st = pserv_worker_job(worker, &info);
    if (st != PSERV_OK) return 1;
    const unsigned n = o.samples, d = o.dim;
    /* The server sums one push per node group per synchronous round: average instead. */
    const unsigned pushes = info.num_nodes ? info.num_nodes : info.num_workers;

    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = KEY;
    tp.count = d;
    tp.init_value = 0.0f; /* every worker registers the same initial w */
    tp.optim.type = PSERV_OPTIM_SGD;
    tp.optim.lr = o.lr;
    st = pserv_worker_register(worker, &tp);
    if (st != PSERV_OK) {
        fprintf(stderr, "linear_regression: register: %s (%s)\n", pserv_strerror(st), pserv_worker_last_error(worker));
        return 1;
    }

    pserv_cuda_worker_params_t cwp = PSERV_CUDA_WORKER_PARAMS_INIT;
    pserv_cuda_worker_h cw = NULL;
    cudaStream_t stream = NULL;
    float *x = NULL, *y = NULL, *r = NULL, *w = NULL, *g = NULL, *loss = NULL;
    float *loss_host = (float *)calloc(o.steps + 1, sizeof(float)), *w_host = (float *)calloc(d, sizeof(float));
    int rc = 1;
    double t0 = 0, t1 = 0;
    if (!loss_host || !w_host) goto out;
    st = pserv_cuda_worker_create(worker, &cwp, &cw);
    if (st != PSERV_OK) {
        fprintf(stderr, "linear_regression: pserv_cuda_worker_create: %s (%s)\n", pserv_strerror(st),
                pserv_cuda_last_error());
        cw = NULL;
        goto out;
    }
    if (!CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)) ||
        !CUDA_OK(cudaMalloc(&x, (size_t)n * d * sizeof(float))) || !CUDA_OK(cudaMalloc(&y, n * sizeof(float))) ||
        !CUDA_OK(cudaMalloc(&r, n * sizeof(float))) || !CUDA_OK(cudaMalloc(&w, d * sizeof(float))) ||
        !CUDA_OK(cudaMalloc(&g, d * sizeof(float))) || !CUDA_OK(cudaMalloc(&loss, (o.steps + 1) * sizeof(float))))
        goto out;

    {
        const unsigned row_threads = 256, row_blocks = (n * 32 + row_threads - 1) / row_threads;
        const unsigned col_threads = 128;
        const dim3 col_blocks((d + col_threads - 1) / col_threads, n < 64 ? n : 64);
        const float loss_scale = 1.0f / (float)n, grad_scale = 2.0f / ((float)n * (float)pushes);

        /* This worker's samples: X uniform in [-1, 1), y = X w_true. */
        make_x<<<1024, 256, 0, stream>>>(x, (size_t)n * d, 1000 + info.rank);
        row_dot<<<row_blocks, row_threads, 0, stream>>>(x, NULL, NULL, y, NULL, 0.0f, n, d, 1);
        if (!CUDA_OK(cudaGetLastError()) || !CUDA_OK(cudaMemsetAsync(loss, 0, (o.steps + 1) * sizeof(float), stream)))
            goto out;
        /* w from the server (the registered initial values, or where other workers have got to). */
        st = pserv_cuda_pull(cw, KEY, w, stream);
        if (st != PSERV_OK) {
            fprintf(stderr, "linear_regression: pserv_cuda_pull: %s (%s)\n", pserv_strerror(st),
                    pserv_cuda_last_error());
            goto out;
        }

        t0 = now_s();
        for (unsigned s = 0; s < o.steps; s++) {
            row_dot<<<row_blocks, row_threads, 0, stream>>>(x, w, y, r, loss + s, loss_scale, n, d, 0);
            if (!CUDA_OK(cudaMemsetAsync(g, 0, d * sizeof(float), stream))) goto out;
            grad_kernel<<<col_blocks, col_threads, 0, stream>>>(x, r, g, grad_scale, n, d);
            if (!CUDA_OK(cudaGetLastError())) goto out;
            st = pserv_cuda_push_pull(cw, KEY, g, w, stream);
            if (st != PSERV_OK) {
                fprintf(stderr, "linear_regression: step %u: pserv_cuda_push_pull: %s (%s)\n", s, pserv_strerror(st),
                        pserv_cuda_last_error());
                goto out;
            }
        }
        /* The loss of the final w. */
        row_dot<<<row_blocks, row_threads, 0, stream>>>(x, w, y, r, loss + o.steps, loss_scale, n, d, 0);
        if (!CUDA_OK(cudaGetLastError()) || !CUDA_OK(cudaStreamSynchronize(stream))) goto out;
        t1 = now_s();
    }
    st = pserv_cuda_worker_synchronize(cw, 60000);
    if (st != PSERV_OK) {
        fprintf(stderr, "linear_regression: a push-pull failed: %s (%s)\n", pserv_strerror(st),
                pserv_cuda_last_error());
        goto out;
    }
    if (!CUDA_OK(cudaMemcpy(loss_host, loss, (o.steps + 1) * sizeof(float), cudaMemcpyDeviceToHost)) ||
        !CUDA_OK(cudaMemcpy(w_host, w, d * sizeof(float), cudaMemcpyDeviceToHost)))
        goto out;

    {
        for (unsigned s = 0; s <= o.steps; s += (o.steps >= 10 ? o.steps / 10 : 1))
            printf("step %5u  loss %.6e\n", s, (double)loss_host[s]);
        double err = 0, scale = 0;
        for (unsigned j = 0; j < d; j++) {
            err = fmax(err, fabs((double)w_host[j] - (double)w_true_at(j)));
            scale = fmax(scale, fabs((double)w_true_at(j)));
        }
        double first = loss_host[0], last = loss_host[o.steps];
        bool ok = isfinite(last) && last <= 1e-4 * first && err <= 1e-2 * scale;
        printf("worker %u of %u: %u steps in %.3f s (%.1f us/step), loss %.4e -> %.4e, max |w - w_true| = %.3e: %s\n",
               info.rank, info.num_workers, o.steps, t1 - t0, (t1 - t0) / o.steps * 1e6, first, last, err,
               ok ? "converged" : "DID NOT CONVERGE");
        rc = ok ? 0 : 1;
    }
out:
    if (cw) {
        st = pserv_cuda_worker_destroy(cw);
        if (st != PSERV_OK) {
            fprintf(stderr, "linear_regression: pserv_cuda_worker_destroy: %s\n", pserv_strerror(st));
            rc = 1;
        }
    }
    cudaFree(loss);
    cudaFree(g);
    cudaFree(w);
    cudaFree(r);
    cudaFree(y);
    cudaFree(x);
    if (stream) cudaStreamDestroy(stream);
    free(w_host);
    free(loss_host);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: linear_regression (--local | --coordinator HOST:PORT) [--steps S] [--dim D] "
                    "[--samples N] [--lr LR]\n");
}

int main(int argc, char **argv)
{
    options o = {NULL, false, 100, 512, 8192, 0.5f};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--local") == 0) {
            o.local = true;
            continue;
        }
        if (v && strcmp(a, "--coordinator") == 0) o.coordinator = v;
        else if (v && strcmp(a, "--steps") == 0) o.steps = (unsigned)atoi(v);
        else if (v && strcmp(a, "--dim") == 0) o.dim = (unsigned)atoi(v);
        else if (v && strcmp(a, "--samples") == 0) o.samples = (unsigned)atoi(v);
        else if (v && strcmp(a, "--lr") == 0) o.lr = (float)atof(v);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (o.local == (o.coordinator != NULL) || o.steps < 1 || o.dim < 1 || o.samples < 1 || !(o.lr > 0)) {
        usage();
        return 2;
    }

    int devices = 0;
    if (pserv_cuda_device_count(&devices) != PSERV_OK || devices == 0) {
        printf("linear_regression: skipped: no GPU (%s)\n", pserv_cuda_last_error());
        return 0;
    }

    /* --local: a job of one worker, its coordinator and server shard in this process. */
    pserv_local_h local = NULL;
    if (o.local) {
        pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
        lp.num_workers = 1;
        lp.mode = PSERV_MODE_SYNC;
        pserv_status_t st = pserv_local_create(&lp, &local);
        if (st != PSERV_OK) {
            fprintf(stderr, "linear_regression: cannot start a local job: %s (%s)\n", pserv_strerror(st),
                    pserv_last_error());
            return 1;
        }
        o.coordinator = pserv_local_coordinator(local);
    }
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    wp.coordinator = o.coordinator;
    pserv_worker_h worker = NULL;
    pserv_status_t st = pserv_worker_create(&wp, &worker);
    int rc = 1;
    if (st != PSERV_OK) {
        fprintf(stderr, "linear_regression: cannot join %s: %s (%s)\n", o.coordinator, pserv_strerror(st),
                pserv_last_error());
        worker = NULL;
    } else {
        rc = train(worker, o);
    }
    if (worker) pserv_worker_destroy(worker); /* leaving: the coordinator ends the job when all have left */
    if (local) {
        st = pserv_local_destroy(local, 10000);
        if (st != PSERV_OK) {
            fprintf(stderr, "linear_regression: the local job did not end cleanly: %s (%s)\n", pserv_strerror(st),
                    pserv_last_error());
            rc = 1;
        }
    }
    return rc;
}
