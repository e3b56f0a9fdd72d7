/*
 * The reference MLP (core/mlp_cpu.h) on one GPU: the same tensors, the same forward and
 * backward, the same init, computed with cuBLAS for the matrix products and cuda/mlp_kernels.cu
 * for the element-wise work. Internal to pserv (the CUDA worker builds on it; tests reach it
 * through pserv_static). Plain C: no CUDA types, streams are passed as void * (a cudaStream_t).
 *
 * Parameters and gradients each live in ONE flat device buffer (a "bucket") with the tensors
 * W0, b0, W1, b1, ... at offsets aligned to PS_MLP_GPU_ALIGN floats, so a bucket reduces
 * (NCCL) and moves (D2H/H2D) as large chunks. Padding between tensors is zero and stays so.
 *
 * Streams: a NULL stream means the model's own (non-blocking) stream. Functions that copy to or
 * from the host, and ps_mlp_gpu_loss/evaluate, run on the stream of the model's last
 * train_step/evaluate (which must still exist) and wait for it; ps_mlp_gpu_train_step only
 * enqueues. Device inputs written on another stream must be complete (or ordered by the caller
 * with an event) before the step's stream reads them. A model is used by one thread at a time. Errors: pserv statuses, with the detail in pserv_model_last_error();
 * PSERV_ERR_UNSUPPORTED without a driver or device.
 */
#ifndef PS_MLP_GPU_H
#define PS_MLP_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PS_MLP_GPU_ALIGN 64 /* floats: 256 bytes */

typedef struct ps_mlp_gpu ps_mlp_gpu_t;

/* dims and max_batch as ps_mlp_create. tf32 != 0 lets cuBLAS use TF32 tensor cores for the
 * GEMMs (faster, ~1e-3 relative); 0 keeps them float32. Parameters start at zero. The model
 * lives on the device current at create; calls must be made with that device current. */
pserv_status_t ps_mlp_gpu_create(const size_t *dims, unsigned ndims, size_t max_batch, int tf32,
                                 ps_mlp_gpu_t **out);
/* Frees everything (cudaFree waits for the device); NULL is a no-op. */
void ps_mlp_gpu_destroy(ps_mlp_gpu_t *m);

unsigned ps_mlp_gpu_num_tensors(const ps_mlp_gpu_t *m);
size_t ps_mlp_gpu_tensor_size(const ps_mlp_gpu_t *m, unsigned i); /* floats; 0 if i is out of range */
size_t ps_mlp_gpu_tensor_offset(const ps_mlp_gpu_t *m, unsigned i); /* floats into a bucket */
size_t ps_mlp_gpu_bucket_floats(const ps_mlp_gpu_t *m);             /* a bucket's length, padded */
size_t ps_mlp_gpu_max_batch(const ps_mlp_gpu_t *m);
float *ps_mlp_gpu_params_device(ps_mlp_gpu_t *m); /* the parameter bucket (device memory) */
float *ps_mlp_gpu_grads_device(ps_mlp_gpu_t *m);  /* the gradient bucket (device memory) */
float *ps_mlp_gpu_loss_device(ps_mlp_gpu_t *m);   /* one float: the last step's mean loss */
/* Later steps write scale x the batch-mean gradients (e.g. 1/workers when a server sums them). */
void ps_mlp_gpu_set_grad_scale(ps_mlp_gpu_t *m, float scale);

/* The same He-uniform parameters as ps_mlp_init_params(seed) on the CPU model. Synchronous. */
pserv_status_t ps_mlp_gpu_init_params(ps_mlp_gpu_t *m, uint64_t seed);
/* Copies every tensor from / to host arrays (host[i] has ps_mlp_gpu_tensor_size(m, i) floats).
 * Synchronous. */
pserv_status_t ps_mlp_gpu_set_params(ps_mlp_gpu_t *m, const float *const *host);
pserv_status_t ps_mlp_gpu_get_params(ps_mlp_gpu_t *m, float *const *host);
pserv_status_t ps_mlp_gpu_get_grads(ps_mlp_gpu_t *m, float *const *host);

/*
 * Enqueues forward and backward of batch rows on `stream`: x_dev is batch x dims[0] floats,
 * y_dev batch labels, both device memory, read in stream order. Afterwards the gradient bucket
 * holds the batch-mean gradients and ps_mlp_gpu_loss_device() the mean loss. No host
 * synchronization. PSERV_ERR_INVALID_ARG for batch 0 or > max_batch. A label >= the number of
 * classes cannot be seen from the host without a sync: it makes the loss and gradients NaN.
 */
pserv_status_t ps_mlp_gpu_train_step(ps_mlp_gpu_t *m, const float *x_dev, const uint8_t *y_dev, size_t batch,
                                     void *stream);
/* Waits for the last step's stream and reads its mean loss. */
pserv_status_t ps_mlp_gpu_loss(ps_mlp_gpu_t *m, float *loss);
/*
 * Correct argmax predictions over n samples (device memory, in batches of max_batch) into
 * *correct, and the mean loss into *loss if not NULL (+inf when a label has no class), as
 * ps_mlp_evaluate. Enqueued on `stream`, then waits for it.
 */
pserv_status_t ps_mlp_gpu_evaluate(ps_mlp_gpu_t *m, const float *x_dev, const uint8_t *y_dev, size_t n,
                                   void *stream, size_t *correct, float *loss);

/*
 * Test hooks: each runs one kernel alone on host data (allocates, copies in, runs, copies out,
 * frees; outputs that are not also inputs are NaN-poisoned first, so an element a kernel does
 * not write comes back NaN). Synchronous; for tests only.
 */
pserv_status_t ps_cuda_test_bias_relu(float *z, const float *b, size_t rows, size_t cols, int relu);
pserv_status_t ps_cuda_test_relu_backward(float *da, const float *act, size_t n);
/* dz may be NULL (evaluation form); correct may be NULL. */
pserv_status_t ps_cuda_test_softmax_xent(const float *logits, const uint8_t *y, size_t rows, size_t classes,
                                         float scale, float *dz, float *loss_rows, uint8_t *correct);
pserv_status_t ps_cuda_test_bias_grad(const float *dz, size_t rows, size_t cols, float *db);
/* Device memory for tests: alloc/free, copies, NaN fill (all synchronous). */
pserv_status_t ps_cuda_test_alloc(size_t bytes, void **dev);
void ps_cuda_test_free(void *dev);
pserv_status_t ps_cuda_test_upload(void *dev, const void *host, size_t bytes);
pserv_status_t ps_cuda_test_download(void *host, const void *dev, size_t bytes);
pserv_status_t ps_cuda_test_fill_nan(float *dev, size_t n);

#ifdef __cplusplus
}
#endif
#endif
