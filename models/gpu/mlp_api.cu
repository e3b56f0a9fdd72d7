/*
 * pserv_cuda_mlp_*: the public, host-facing face of mlp_gpu (pserv_model_cuda.h). Batches are
 * staged through device buffers owned here; every call waits for its work, so a CPU worker loop
 * can use a GPU model without knowing CUDA. The stream-ordered device API comes on top of
 * mlp_gpu itself, not of this.
 */
#include <cuda_runtime.h>
#include <stdlib.h>

#include "cuda_check.h"
#include "mlp_gpu.h"
#include "pserv/pserv_cuda.h"
#include "pserv/pserv_model_cuda.h"

struct pserv_cuda_mlp {
    ps_mlp_gpu_t *m;
    int device;
    size_t features, max_batch;
    float *x;   /* device: max_batch x features */
    uint8_t *y; /* device: max_batch labels */
    cudaStream_t stream; /* copies and steps, in order */
};

extern "C" pserv_status_t pserv_cuda_mlp_create(int device, const size_t *dims, unsigned ndims, size_t max_batch,
                                                int tf32, pserv_cuda_mlp_h *out)
{
    pserv_status_t st;
    int n = 0;
    if (out == NULL || dims == NULL || ndims < 2) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "pserv_cuda_mlp_create", __FILE__, __LINE__);
    if ((st = pserv_cuda_device_count(&n)) < 0) return st;
    if (device < 0 || device >= n) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "pserv_cuda_mlp_create: no such device", __FILE__, __LINE__);
    pserv_cuda_mlp_h h = (pserv_cuda_mlp_h)calloc(1, sizeof(*h));
    if (h == NULL) return PSERV_ERR_NO_MEMORY;
    h->device = device;
    h->features = dims[0];
    h->max_batch = max_batch;
    PS_CUDA_CHECK_GOTO(cudaSetDevice(device), st, err_free);
    if ((st = ps_mlp_gpu_create(dims, ndims, max_batch, tf32, &h->m)) < 0) goto err_free;
    PS_CUDA_CHECK_GOTO(cudaMalloc((void **)&h->x, max_batch * h->features * sizeof(float)), st, err_destroy);
    PS_CUDA_CHECK_GOTO(cudaMalloc((void **)&h->y, max_batch), st, err_free_x);
    PS_CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&h->stream, cudaStreamNonBlocking), st, err_free_y);
    *out = h;
    return PSERV_OK;

err_free_y:
    cudaFree(h->y);
err_free_x:
    cudaFree(h->x);
err_destroy:
    ps_mlp_gpu_destroy(h->m);
err_free:
    free(h);
    return st;
}

extern "C" pserv_status_t pserv_cuda_mlp_init(pserv_cuda_mlp_h h, uint64_t seed)
{
    if (h == NULL) return PSERV_ERR_INVALID_ARG;
    pserv_status_t st = PS_CUDA_CALL(cudaSetDevice(h->device));
    return st < 0 ? st : ps_mlp_gpu_init_params(h->m, seed);
}

extern "C" pserv_status_t pserv_cuda_mlp_set_params(pserv_cuda_mlp_h h, const float *const *host)
{
    if (h == NULL || host == NULL) return PSERV_ERR_INVALID_ARG;
    pserv_status_t st = PS_CUDA_CALL(cudaSetDevice(h->device));
    return st < 0 ? st : ps_mlp_gpu_set_params(h->m, host);
}

extern "C" pserv_status_t pserv_cuda_mlp_get_grads(pserv_cuda_mlp_h h, float *const *host)
{
    if (h == NULL || host == NULL) return PSERV_ERR_INVALID_ARG;
    pserv_status_t st = PS_CUDA_CALL(cudaSetDevice(h->device));
    return st < 0 ? st : ps_mlp_gpu_get_grads(h->m, host);
}

/* Copies up to max_batch host samples into the staging buffers, on the stream the step then
 * runs on (the previous user of the buffers was waited for). */
static pserv_status_t ps_cuda_mlp_stage(pserv_cuda_mlp_h h, const float *x, const uint8_t *y, size_t n)
{
    pserv_status_t st;
    PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(h->x, x, n * h->features * sizeof(float), cudaMemcpyHostToDevice, h->stream),
                       st, out);
    PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(h->y, y, n, cudaMemcpyHostToDevice, h->stream), st, out);
out:
    return st;
}

extern "C" pserv_status_t pserv_cuda_mlp_train_step(pserv_cuda_mlp_h h, const float *x, const uint8_t *y, size_t batch,
                                                    float *loss)
{
    pserv_status_t st;
    if (h == NULL || x == NULL || y == NULL || batch == 0 || batch > h->max_batch) return PSERV_ERR_INVALID_ARG;
    if ((st = PS_CUDA_CALL(cudaSetDevice(h->device))) < 0 || (st = ps_cuda_mlp_stage(h, x, y, batch)) < 0) return st;
    if ((st = ps_mlp_gpu_train_step(h->m, h->x, h->y, batch, h->stream)) < 0) return st;
    float l = 0;
    if ((st = ps_mlp_gpu_loss(h->m, &l)) < 0) return st;
    if (loss) *loss = l;
    return PSERV_OK;
}

extern "C" pserv_status_t pserv_cuda_mlp_evaluate(pserv_cuda_mlp_h h, const float *x, const uint8_t *y, size_t n,
                                                  size_t *correct, float *loss)
{
    pserv_status_t st;
    double total = 0;
    size_t right = 0;
    if (h == NULL || x == NULL || y == NULL || correct == NULL) return PSERV_ERR_INVALID_ARG;
    if ((st = PS_CUDA_CALL(cudaSetDevice(h->device))) < 0) return st;
    for (size_t done = 0; done < n; done += h->max_batch) {
        size_t b = n - done < h->max_batch ? n - done : h->max_batch, c = 0;
        float l = 0;
        if ((st = ps_cuda_mlp_stage(h, x + done * h->features, y + done, b)) < 0) return st;
        if ((st = ps_mlp_gpu_evaluate(h->m, h->x, h->y, b, h->stream, &c, &l)) < 0) return st;
        right += c;
        total += (double)l * (double)b;
    }
    *correct = right;
    if (loss) *loss = n ? (float)(total / (double)n) : 0.0f;
    return PSERV_OK;
}

extern "C" pserv_status_t pserv_cuda_mlp_set_grad_scale(pserv_cuda_mlp_h h, float scale)
{
    if (h == NULL || !(scale > 0.0f)) return PSERV_ERR_INVALID_ARG;
    ps_mlp_gpu_set_grad_scale(h->m, scale);
    return PSERV_OK;
}

extern "C" pserv_status_t pserv_cuda_mlp_bucket(pserv_cuda_mlp_h h, pserv_cuda_mlp_bucket_t *b)
{
    if (h == NULL || b == NULL || b->size < sizeof(*b)) return PSERV_ERR_INVALID_ARG;
    b->params = ps_mlp_gpu_params_device(h->m);
    b->grads = ps_mlp_gpu_grads_device(h->m);
    b->count = ps_mlp_gpu_bucket_floats(h->m);
    b->stream = h->stream;
    b->device = h->device;
    unsigned n = ps_mlp_gpu_num_tensors(h->m);
    for (unsigned i = 0; i < n && i < PSERV_CUDA_MLP_MAX_TENSORS; i++) b->offset[i] = ps_mlp_gpu_tensor_offset(h->m, i);
    return PSERV_OK;
}

extern "C" pserv_status_t pserv_cuda_mlp_destroy(pserv_cuda_mlp_h h)
{
    if (h == NULL) return PSERV_OK;
    cudaSetDevice(h->device);
    ps_mlp_gpu_destroy(h->m); /* waits for its work, which used the stream below */
    cudaStreamDestroy(h->stream);
    cudaFree(h->x);
    cudaFree(h->y);
    free(h);
    return PSERV_OK;
}
