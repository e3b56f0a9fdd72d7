/*
 * The reference MLP on one GPU (see cuda/mlp_gpu.h): cuBLAS GEMMs plus the fused kernels of
 * cuda/mlp_kernels.cu, all enqueued on one stream, no synchronization inside a step.
 *
 * Row-major on a column-major BLAS: a row-major R x C matrix with leading dimension ld is, byte
 * for byte, the column-major C x R matrix X^T with the same ld. So the row-major product
 *     C (M x N) = op(A) (M x K) . op(B) (K x N)
 * is computed as the column-major product C^T = op(B)^T . op(A)^T, i.e.
 *     cublasSgemm(h, opB, opA, N, M, K, 1, B, ldb, A, lda, 0, C, ldc)
 * with the operands swapped and the transposition flags kept. ps_gemm_rm does that, so each
 * call below reads exactly like the cblas_sgemm(CblasRowMajor, ...) call in core/mlp_cpu.c.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cublas_check.h"
#include "mlp_gpu.h"
#include "mlp_kernels.cuh"
#include "pserv/pserv_cuda.h"
#include "pserv/pserv_model_cuda.h"

extern "C" {
#include "mlp_cpu.h"
}

#define PS_MLP_GPU_TENSORS (2 * PS_MLP_MAX_LAYERS)

struct ps_mlp_gpu {
    unsigned layers;
    size_t dims[PS_MLP_MAX_LAYERS + 1];
    size_t max_batch;
    float grad_scale; /* multiplies the batch-mean gradients (1 by default) */
    size_t size[PS_MLP_GPU_TENSORS], off[PS_MLP_GPU_TENSORS], bucket; /* floats */
    float *params, *grads;                                            /* buckets, device */
    /* One device allocation for everything a step needs besides the buckets. act[l] (l >= 1):
     * layer l's input after ReLU, act[layers]: logits; delta[l]: loss gradient with respect to
     * act[l]'s pre-activation (as in core/mlp_cpu.c). */
    void *work;
    float *act[PS_MLP_MAX_LAYERS + 1], *delta[PS_MLP_MAX_LAYERS + 1];
    float *loss_rows, *loss;
    uint8_t *correct_rows;
    double *acc_loss;
    unsigned long long *acc_correct;
    void *blas_ws; /* cuBLAS workspace, so cuBLAS never allocates behind a step's back */
    size_t blas_ws_bytes;
    cublasHandle_t blas;
    cudaStream_t own, last; /* the model's own stream; the stream of the last enqueued work */
};

static size_t ps_round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

pserv_status_t ps_mlp_gpu_create(const size_t *dims, unsigned ndims, size_t max_batch, int tf32, ps_mlp_gpu_t **out)
{
    pserv_status_t st;
    int ndev = 0, dev = 0, major = 0;
    /* the same limits as ps_mlp_create: every product reaches cuBLAS as int */
    if (out == NULL || !ps_mlp_shape_ok(dims, ndims, max_batch))
        return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu_create: dims", __FILE__, __LINE__);
    st = pserv_cuda_device_count(&ndev);
    if (st < 0) return st;

    ps_mlp_gpu_t *m = (ps_mlp_gpu_t *)calloc(1, sizeof(*m));
    if (m == NULL) return PSERV_ERR_NO_MEMORY;
    m->layers = ndims - 1;
    m->max_batch = max_batch;
    m->grad_scale = 1.0f;
    memcpy(m->dims, dims, ndims * sizeof(*dims));
    size_t end = 0;
    for (unsigned l = 0; l < m->layers; l++) {
        m->size[2 * l] = dims[l + 1] * dims[l];
        m->size[2 * l + 1] = dims[l + 1];
        for (unsigned k = 2 * l; k <= 2 * l + 1; k++) {
            m->off[k] = ps_round_up(end, PS_MLP_GPU_ALIGN);
            end = m->off[k] + m->size[k];
        }
    }
    m->bucket = ps_round_up(end, PS_MLP_GPU_ALIGN);

    /* workspace layout, each piece 256-byte aligned */
    size_t bytes = 0, at[2 * PS_MLP_MAX_LAYERS + 5];
    unsigned n = 0;
    for (unsigned l = 1; l <= m->layers; l++) {
        at[n++] = bytes, bytes = ps_round_up(bytes + max_batch * dims[l] * sizeof(float), 256); /* act */
        at[n++] = bytes, bytes = ps_round_up(bytes + max_batch * dims[l] * sizeof(float), 256); /* delta */
    }
    size_t at_loss_rows = bytes;
    bytes = ps_round_up(bytes + max_batch * sizeof(float), 256);
    size_t at_correct = bytes;
    bytes = ps_round_up(bytes + max_batch, 256);
    size_t at_loss = bytes;
    bytes = ps_round_up(bytes + sizeof(float), 256);
    size_t at_acc = bytes;
    bytes = ps_round_up(bytes + sizeof(double) + sizeof(unsigned long long), 256);

    PS_CUDA_CHECK_GOTO(cudaGetDevice(&dev), st, err_free_m);
    PS_CUDA_CHECK_GOTO(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), st, err_free_m);
    /* cuBLAS's recommended workspace: 32 MiB on Hopper and later, 4 MiB before */
    m->blas_ws_bytes = major >= 9 ? (32u << 20) : (4u << 20);
    PS_CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&m->own, cudaStreamNonBlocking), st, err_free_m);
    m->last = m->own;
    PS_CUBLAS_CHECK_GOTO(cublasCreate(&m->blas), st, err_destroy_stream);
    PS_CUBLAS_CHECK_GOTO(cublasSetMathMode(m->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), st,
                         err_destroy_blas);
    PS_CUDA_CHECK_GOTO(cudaMalloc((void **)&m->params, m->bucket * sizeof(float)), st, err_destroy_blas);
    PS_CUDA_CHECK_GOTO(cudaMalloc((void **)&m->grads, m->bucket * sizeof(float)), st, err_free_params);
    PS_CUDA_CHECK_GOTO(cudaMalloc(&m->work, bytes), st, err_free_grads);
    PS_CUDA_CHECK_GOTO(cudaMalloc(&m->blas_ws, m->blas_ws_bytes), st, err_free_work);
    /* zero parameters, gradients and the padding between tensors, once */
    PS_CUDA_CHECK_GOTO(cudaMemsetAsync(m->params, 0, m->bucket * sizeof(float), m->own), st, err_free_ws);
    PS_CUDA_CHECK_GOTO(cudaMemsetAsync(m->grads, 0, m->bucket * sizeof(float), m->own), st, err_free_ws);
    PS_CUDA_CHECK_GOTO(cudaMemsetAsync(m->work, 0, bytes, m->own), st, err_free_ws);
    PS_CUDA_CHECK_GOTO(cudaStreamSynchronize(m->own), st, err_free_ws);

    n = 0;
    for (unsigned l = 1; l <= m->layers; l++) {
        m->act[l] = (float *)((char *)m->work + at[n++]);
        m->delta[l] = (float *)((char *)m->work + at[n++]);
    }
    m->loss_rows = (float *)((char *)m->work + at_loss_rows);
    m->correct_rows = (uint8_t *)m->work + at_correct;
    m->loss = (float *)((char *)m->work + at_loss);
    m->acc_loss = (double *)((char *)m->work + at_acc);
    m->acc_correct = (unsigned long long *)((char *)m->work + at_acc + sizeof(double));
    *out = m;
    return PSERV_OK;

err_free_ws:
    cudaFree(m->blas_ws);
err_free_work:
    cudaFree(m->work);
err_free_grads:
    cudaFree(m->grads);
err_free_params:
    cudaFree(m->params);
err_destroy_blas:
    cublasDestroy(m->blas);
err_destroy_stream:
    cudaStreamDestroy(m->own);
err_free_m:
    free(m);
    return st;
}

void ps_mlp_gpu_destroy(ps_mlp_gpu_t *m)
{
    if (m == NULL) return;
    /* No wait on m->last: the caller's stream may already be gone. cudaFree itself waits for
     * the device to finish work that may still use the memory. */
    cudaFree(m->blas_ws);
    cudaFree(m->work);
    cudaFree(m->grads);
    cudaFree(m->params);
    cublasDestroy(m->blas);
    cudaStreamDestroy(m->own);
    free(m);
}

unsigned ps_mlp_gpu_num_tensors(const ps_mlp_gpu_t *m) { return 2 * m->layers; }
size_t ps_mlp_gpu_tensor_size(const ps_mlp_gpu_t *m, unsigned i) { return i < 2 * m->layers ? m->size[i] : 0; }
size_t ps_mlp_gpu_tensor_offset(const ps_mlp_gpu_t *m, unsigned i) { return i < 2 * m->layers ? m->off[i] : 0; }
size_t ps_mlp_gpu_bucket_floats(const ps_mlp_gpu_t *m) { return m->bucket; }
size_t ps_mlp_gpu_max_batch(const ps_mlp_gpu_t *m) { return m->max_batch; }
float *ps_mlp_gpu_params_device(ps_mlp_gpu_t *m) { return m->params; }
float *ps_mlp_gpu_grads_device(ps_mlp_gpu_t *m) { return m->grads; }
float *ps_mlp_gpu_loss_device(ps_mlp_gpu_t *m) { return m->loss; }
void ps_mlp_gpu_set_grad_scale(ps_mlp_gpu_t *m, float scale) { m->grad_scale = scale; }

/* Points cuBLAS at the step's stream. cublasSetStream resets the workspace to cuBLAS's own
 * pool, so ours is set again after it. */
static pserv_status_t ps_mlp_gpu_bind(ps_mlp_gpu_t *m, void *stream)
{
    pserv_status_t st;
    cudaStream_t s = stream ? (cudaStream_t)stream : m->own;
    PS_CUBLAS_CHECK_GOTO(cublasSetStream(m->blas, s), st, out);
    PS_CUBLAS_CHECK_GOTO(cublasSetWorkspace(m->blas, m->blas_ws, m->blas_ws_bytes), st, out);
    m->last = s;
out:
    return st;
}

/* Row-major C (M x N) = op(A) . op(B), beta 0 (C is not read); see the top of this file. */
static pserv_status_t ps_gemm_rm(cublasHandle_t h, int trans_a, int trans_b, size_t M, size_t N, size_t K,
                                 const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc)
{
    const float one = 1.0f, zero = 0.0f;
    return PS_CUBLAS_CALL(cublasSgemm(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                      (int)N, (int)M, (int)K, &one, B, (int)ldb, A, (int)lda, &zero, C, (int)ldc));
}

/* Logits: act[l+1] = relu(act[l] W_l^T + b_l), the last layer without ReLU. */
static pserv_status_t ps_mlp_gpu_forward(ps_mlp_gpu_t *m, const float *x, size_t batch)
{
    pserv_status_t st = PSERV_OK;
    for (unsigned l = 0; l < m->layers; l++) {
        size_t in = m->dims[l], out = m->dims[l + 1];
        const float *a = l == 0 ? x : m->act[l];
        st = ps_gemm_rm(m->blas, 0, 1, batch, out, in, a, in, m->params + m->off[2 * l], in, m->act[l + 1], out);
        if (st < 0) return st;
        st = ps_k_bias_act(m->act[l + 1], m->params + m->off[2 * l + 1], batch, out, l + 1 < m->layers, m->last);
        if (st < 0) return st;
    }
    return st;
}

pserv_status_t ps_mlp_gpu_train_step(ps_mlp_gpu_t *m, const float *x_dev, const uint8_t *y_dev, size_t batch,
                                     void *stream)
{
    pserv_status_t st;
    if (m == NULL || x_dev == NULL || y_dev == NULL || batch == 0 || batch > m->max_batch)
        return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu_train_step", __FILE__, __LINE__);
    size_t classes = m->dims[m->layers];
    if ((st = ps_mlp_gpu_bind(m, stream)) < 0) return st;
    if ((st = ps_mlp_gpu_forward(m, x_dev, batch)) < 0) return st;
    st = ps_k_softmax_xent(m->act[m->layers], y_dev, batch, classes, m->grad_scale / (float)batch, m->delta[m->layers],
                           m->loss_rows, NULL, m->last);
    if (st < 0) return st;
    if ((st = ps_k_row_reduce(m->loss_rows, NULL, batch, m->loss, NULL, NULL, m->last)) < 0) return st;
    for (unsigned l = m->layers; l-- > 0;) {
        size_t in = m->dims[l], out = m->dims[l + 1];
        const float *a = l == 0 ? x_dev : m->act[l];
        const float *dz = m->delta[l + 1];
        /* dW = dz^T a ; db = column sums of dz */
        st = ps_gemm_rm(m->blas, 1, 0, out, in, batch, dz, out, a, in, m->grads + m->off[2 * l], in);
        if (st < 0) return st;
        if ((st = ps_k_bias_grad(dz, batch, out, m->grads + m->off[2 * l + 1], m->last)) < 0) return st;
        if (l == 0) break;
        /* da = dz W, then through the ReLU of layer l's output */
        st = ps_gemm_rm(m->blas, 0, 0, batch, in, out, dz, out, m->params + m->off[2 * l], in, m->delta[l], in);
        if (st < 0) return st;
        if ((st = ps_k_relu_backward(m->delta[l], m->act[l], batch * in, m->last)) < 0) return st;
    }
    return PSERV_OK;
}

pserv_status_t ps_mlp_gpu_loss(ps_mlp_gpu_t *m, float *loss)
{
    pserv_status_t st;
    float h = 0.0f;
    if (m == NULL || loss == NULL) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu_loss", __FILE__, __LINE__);
    PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(&h, m->loss, sizeof(h), cudaMemcpyDeviceToHost, m->last), st, out);
    PS_CUDA_CHECK_GOTO(cudaStreamSynchronize(m->last), st, out);
    *loss = h;
out:
    return st;
}

pserv_status_t ps_mlp_gpu_evaluate(ps_mlp_gpu_t *m, const float *x_dev, const uint8_t *y_dev, size_t n,
                                   void *stream, size_t *correct, float *loss)
{
    pserv_status_t st;
    double total = 0.0;
    unsigned long long right = 0;
    if (m == NULL || correct == NULL || (n > 0 && (x_dev == NULL || y_dev == NULL)))
        return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu_evaluate", __FILE__, __LINE__);
    size_t classes = m->dims[m->layers];
    if ((st = ps_mlp_gpu_bind(m, stream)) < 0) return st;
    PS_CUDA_CHECK_GOTO(cudaMemsetAsync(m->acc_loss, 0, sizeof(double) + sizeof(unsigned long long), m->last), st,
                       out);
    for (size_t done = 0; done < n; done += m->max_batch) {
        size_t batch = n - done < m->max_batch ? n - done : m->max_batch;
        if ((st = ps_mlp_gpu_forward(m, x_dev + done * m->dims[0], batch)) < 0) goto out;
        st = ps_k_softmax_xent(m->act[m->layers], y_dev + done, batch, classes, 0.0f, NULL, m->loss_rows,
                               m->correct_rows, m->last);
        if (st < 0) goto out;
        st = ps_k_row_reduce(m->loss_rows, m->correct_rows, batch, NULL, m->acc_loss, m->acc_correct, m->last);
        if (st < 0) goto out;
    }
    PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(&total, m->acc_loss, sizeof(total), cudaMemcpyDeviceToHost, m->last), st, out);
    PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(&right, m->acc_correct, sizeof(right), cudaMemcpyDeviceToHost, m->last), st,
                       out);
    PS_CUDA_CHECK_GOTO(cudaStreamSynchronize(m->last), st, out);
    *correct = (size_t)right;
    if (loss) *loss = n ? (float)(total / (double)n) : 0.0f;
    return PSERV_OK;
out:
    (void)cudaStreamSynchronize(m->last); /* nothing enqueued may outlive total and right */
    return st;
}

/* Host <-> bucket copies of every tensor, ordered after the model's last work, then waited for. */
static pserv_status_t ps_mlp_gpu_copy(ps_mlp_gpu_t *m, float *bucket, const float *const *src, float *const *dst)
{
    pserv_status_t st = PSERV_OK;
    for (unsigned i = 0; i < 2 * m->layers; i++) {
        if (src) {
            if (src[i] == NULL) {
                st = ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu: NULL tensor", __FILE__, __LINE__);
                goto out;
            }
            PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(bucket + m->off[i], src[i], m->size[i] * sizeof(float),
                                               cudaMemcpyHostToDevice, m->last),
                               st, out);
        } else {
            if (dst[i] == NULL) {
                st = ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu: NULL tensor", __FILE__, __LINE__);
                goto out;
            }
            PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(dst[i], bucket + m->off[i], m->size[i] * sizeof(float),
                                               cudaMemcpyDeviceToHost, m->last),
                               st, out);
        }
    }
out:
    /* wait even after a failed copy: earlier ones may still read the caller's memory */
    pserv_status_t st2 = PS_CUDA_CALL(cudaStreamSynchronize(m->last));
    return st < 0 ? st : st2;
}

pserv_status_t ps_mlp_gpu_set_params(ps_mlp_gpu_t *m, const float *const *host)
{
    if (m == NULL || host == NULL) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu_set_params", __FILE__, __LINE__);
    return ps_mlp_gpu_copy(m, m->params, host, NULL);
}

pserv_status_t ps_mlp_gpu_get_params(ps_mlp_gpu_t *m, float *const *host)
{
    if (m == NULL || host == NULL) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu_get_params", __FILE__, __LINE__);
    return ps_mlp_gpu_copy(m, m->params, NULL, host);
}

pserv_status_t ps_mlp_gpu_get_grads(ps_mlp_gpu_t *m, float *const *host)
{
    if (m == NULL || host == NULL) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu_get_grads", __FILE__, __LINE__);
    return ps_mlp_gpu_copy(m, m->grads, NULL, host);
}

/* The CPU model generates the values, so both initialize identically by construction. */
pserv_status_t ps_mlp_gpu_init_params(ps_mlp_gpu_t *m, uint64_t seed)
{
    ps_mlp_t *cpu = NULL;
    const float *host[PS_MLP_GPU_TENSORS];
    if (m == NULL) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_mlp_gpu_init_params", __FILE__, __LINE__);
    pserv_status_t st = ps_mlp_create(m->dims, m->layers + 1, 1, &cpu);
    if (st < 0) return ps_cuda_fail(st, "ps_mlp_gpu_init_params: ps_mlp_create", __FILE__, __LINE__);
    ps_mlp_init_params(cpu, seed);
    for (unsigned i = 0; i < 2 * m->layers; i++) host[i] = ps_mlp_param(cpu, i);
    st = ps_mlp_gpu_copy(m, m->params, host, NULL);
    ps_mlp_destroy(cpu);
    return st;
}
