/* The MLP's fused element-wise kernels; the matrix products are cuBLAS (cuda/mlp_gpu.cu). */
#include <math.h>

#include "cuda_check.h"
#include "mlp_kernels.cuh"

#define PS_K_THREADS 256
#define PS_K_WARPS (PS_K_THREADS / 32)
#define PS_K_MAX_BLOCKS 65535u /* grid-stride loops cover the rest */

static unsigned ps_k_blocks(size_t n)
{
    size_t b = (n + PS_K_THREADS - 1) / PS_K_THREADS;
    return b == 0 ? 1u : b > PS_K_MAX_BLOCKS ? PS_K_MAX_BLOCKS : (unsigned)b;
}

__global__ void ps_k_bias_act_kernel(float *z, const float *b, size_t rows, size_t cols, int relu)
{
    size_t n = rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = z[i] + b[i % cols];
        z[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

pserv_status_t ps_k_bias_act(float *z, const float *b, size_t rows, size_t cols, int relu, cudaStream_t s)
{
    pserv_status_t st = PSERV_OK;
    if (rows == 0 || cols == 0) return PSERV_OK;
    ps_k_bias_act_kernel<<<ps_k_blocks(rows * cols), PS_K_THREADS, 0, s>>>(z, b, rows, cols, relu);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_k_bias_act_kernel", st, out);
out:
    return st;
}

__global__ void ps_k_relu_backward_kernel(float *da, const float *act, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        if (!(act[i] > 0.0f)) da[i] = 0.0f;
}

pserv_status_t ps_k_relu_backward(float *da, const float *act, size_t n, cudaStream_t s)
{
    pserv_status_t st = PSERV_OK;
    if (n == 0) return PSERV_OK;
    ps_k_relu_backward_kernel<<<ps_k_blocks(n), PS_K_THREADS, 0, s>>>(da, act, n);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_k_relu_backward_kernel", st, out);
out:
    return st;
}

/*
 * One warp per row. Lane j looks at columns j, j+32, ...; the max, the sum of exponentials and
 * the argmax are combined with butterfly shuffles, so every lane ends with the row's values.
 * The arithmetic follows core/mlp_cpu.c's ps_mlp_xent_row (float max, double exp/sum/log), so
 * results agree to rounding; argmax ties go to the lowest index, as the CPU's first maximum.
 */
__global__ void ps_k_softmax_xent_kernel(const float *logits, const uint8_t *y, size_t rows, size_t classes,
                                         float scale, float *dz, float *loss_rows, uint8_t *correct_rows)
{
    const unsigned lane = threadIdx.x & 31u;
    const size_t warps = (size_t)gridDim.x * (blockDim.x / 32);
    for (size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
        const float *row = logits + r * classes;
        float max = -INFINITY;
        size_t best = (size_t)-1;
        for (size_t j = lane; j < classes; j += 32)
            if (best == (size_t)-1 || row[j] > max) {
                max = row[j];
                best = j;
            }
        for (int off = 16; off > 0; off >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, max, off);
            size_t b2 = __shfl_xor_sync(0xffffffffu, (unsigned long long)best, off);
            /* (size_t)-1 marks a lane without columns; it never wins */
            if (b2 != (size_t)-1 && (best == (size_t)-1 || m2 > max || (m2 == max && b2 < best))) {
                max = m2;
                best = b2;
            }
        }
        double sum = 0.0;
        for (size_t j = lane; j < classes; j += 32) sum += exp((double)(row[j] - max));
        for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        const double log_sum = log(sum);
        const unsigned label = y[r];
        if (label >= classes) { /* no such class */
            if (dz)
                for (size_t j = lane; j < classes; j += 32) dz[r * classes + j] = nanf("");
            if (lane == 0) {
                loss_rows[r] = dz ? nanf("") : INFINITY;
                if (correct_rows) correct_rows[r] = 0;
            }
            continue;
        }
        if (dz)
            for (size_t j = lane; j < classes; j += 32)
                dz[r * classes + j] =
                    scale * ((float)exp((double)(row[j] - max) - log_sum) - (j == label ? 1.0f : 0.0f));
        if (lane == 0) {
            loss_rows[r] = (float)(log_sum - (double)(row[label] - max));
            if (correct_rows) correct_rows[r] = best == label;
        }
    }
}

pserv_status_t ps_k_softmax_xent(const float *logits, const uint8_t *y, size_t rows, size_t classes, float scale,
                                 float *dz, float *loss_rows, uint8_t *correct_rows, cudaStream_t s)
{
    pserv_status_t st = PSERV_OK;
    if (rows == 0) return PSERV_OK;
    if (classes == 0) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_k_softmax_xent: no classes", __FILE__, __LINE__);
    size_t blocks = (rows + PS_K_WARPS - 1) / PS_K_WARPS;
    ps_k_softmax_xent_kernel<<<blocks > PS_K_MAX_BLOCKS ? PS_K_MAX_BLOCKS : (unsigned)blocks, PS_K_THREADS, 0, s>>>(
        logits, y, rows, classes, scale, dz, loss_rows, correct_rows);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_k_softmax_xent_kernel", st, out);
out:
    return st;
}

/*
 * Column sums. A block is 32 columns x 8 row groups: a warp reads 32 consecutive floats of one
 * row (coalesced), each thread sums every 8th row of its column, and the 8 partials are added
 * through shared memory. Deterministic (fixed order), no atomics. For very tall, narrow
 * matrices a split over rows would use more SMs; batch sizes here keep this off the critical path.
 */
__global__ void ps_k_bias_grad_kernel(const float *dz, size_t rows, size_t cols, float *db)
{
    __shared__ float part[8][33];
    const size_t j = (size_t)blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (j < cols)
        for (size_t r = threadIdx.y; r < rows; r += 8) acc += dz[r * cols + j];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        float sum = 0.0f;
        for (int k = 0; k < 8; k++) sum += part[k][threadIdx.x];
        db[j] = sum;
    }
}

pserv_status_t ps_k_bias_grad(const float *dz, size_t rows, size_t cols, float *db, cudaStream_t s)
{
    pserv_status_t st = PSERV_OK;
    if (cols == 0) return PSERV_OK;
    size_t blocks = (cols + 31) / 32;
    if (blocks > 0x7fffffffu) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_k_bias_grad: too many columns", __FILE__, __LINE__);
    ps_k_bias_grad_kernel<<<(unsigned)blocks, dim3(32, 8), 0, s>>>(dz, rows, cols, db);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_k_bias_grad_kernel", st, out);
out:
    return st;
}

__global__ void ps_k_row_reduce_kernel(const float *loss_rows, const uint8_t *correct_rows, size_t rows,
                                       float *mean_out, double *acc_loss, unsigned long long *acc_correct)
{
    __shared__ double sl[PS_K_THREADS];
    __shared__ unsigned long long sc[PS_K_THREADS];
    double l = 0.0;
    unsigned long long c = 0;
    for (size_t r = threadIdx.x; r < rows; r += blockDim.x) {
        l += (double)loss_rows[r];
        if (correct_rows) c += correct_rows[r];
    }
    sl[threadIdx.x] = l;
    sc[threadIdx.x] = c;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            sl[threadIdx.x] += sl[threadIdx.x + half];
            sc[threadIdx.x] += sc[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (mean_out) *mean_out = (float)(sl[0] / (double)rows);
        if (acc_loss) *acc_loss += sl[0];
        if (acc_correct) *acc_correct += sc[0];
    }
}

pserv_status_t ps_k_row_reduce(const float *loss_rows, const uint8_t *correct_rows, size_t rows, float *mean_out,
                               double *acc_loss, unsigned long long *acc_correct, cudaStream_t s)
{
    pserv_status_t st = PSERV_OK;
    if (rows == 0) return PSERV_OK;
    ps_k_row_reduce_kernel<<<1, PS_K_THREADS, 0, s>>>(loss_rows, correct_rows, rows, mean_out, acc_loss, acc_correct);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_k_row_reduce_kernel", st, out);
out:
    return st;
}

__global__ void ps_k_fill_nan_kernel(float *p, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = nanf("");
}

pserv_status_t ps_k_fill_nan(float *p, size_t n, cudaStream_t s)
{
    pserv_status_t st = PSERV_OK;
    if (n == 0) return PSERV_OK;
    ps_k_fill_nan_kernel<<<ps_k_blocks(n), PS_K_THREADS, 0, s>>>(p, n);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_k_fill_nan_kernel", st, out);
out:
    return st;
}
