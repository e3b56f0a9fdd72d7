/*
 * The reference MLP on a GPU (models/gpu, library pserv_models): not part of libpserv. Only
 * where pserv_models was built with CUDA.
 */
#ifndef PSERV_MODEL_CUDA_H
#define PSERV_MODEL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* The reference model on a GPU                                                                */

/**
 * The reference MLP (pserv_model.h) on a GPU, for a worker whose gradients come from a device:
 * same tensors (W0, b0, W1, b1, ...), init and arithmetic as pserv_mlp_*, computed with cuBLAS and
 * pserv's kernels on `device`. Host-facing and synchronous: batches come from host memory and
 * gradients and parameters are copied to and from host arrays, one call per step. Not
 * thread-safe. PSERV_ERR_UNSUPPORTED without a driver or device. Detail of an error:
 * pserv_model_last_error().
 */
typedef struct pserv_cuda_mlp *pserv_cuda_mlp_h;

PSERV_API pserv_status_t pserv_cuda_mlp_create(int device, const size_t *dims, unsigned ndims, size_t max_batch,
                                               int tf32, pserv_cuda_mlp_h *mlp);
/** Same initial values as pserv_mlp_init(seed). */
PSERV_API pserv_status_t pserv_cuda_mlp_init(pserv_cuda_mlp_h mlp, uint64_t seed);
/** Copies the parameters from host arrays (host[i]: pserv_mlp_tensor_size(i) floats). */
PSERV_API pserv_status_t pserv_cuda_mlp_set_params(pserv_cuda_mlp_h mlp, const float *const *host);
/** Copies the last step's gradients into host arrays. */
PSERV_API pserv_status_t pserv_cuda_mlp_get_grads(pserv_cuda_mlp_h mlp, float *const *host);
/** Forward and backward over batch host rows; *loss gets the mean loss. */
PSERV_API pserv_status_t pserv_cuda_mlp_train_step(pserv_cuda_mlp_h mlp, const float *x, const uint8_t *y,
                                                   size_t batch, float *loss);
/** Correct predictions over n host samples, and their mean loss (if loss is not NULL). */
PSERV_API pserv_status_t pserv_cuda_mlp_evaluate(pserv_cuda_mlp_h mlp, const float *x, const uint8_t *y, size_t n,
                                                 size_t *correct, float *loss);
PSERV_API pserv_status_t pserv_cuda_mlp_destroy(pserv_cuda_mlp_h mlp);
/** Later train steps write scale times the batch-mean gradients (e.g. 1/workers when servers sum). */
PSERV_API pserv_status_t pserv_cuda_mlp_set_grad_scale(pserv_cuda_mlp_h mlp, float scale);

#define PSERV_CUDA_MLP_MAX_TENSORS 20 /* 10 layers (pserv_model.h), weights and biases */

/**
 * The model's device buckets, for a loop that moves them itself with pserv_cuda_*: parameters and
 * gradients each live in one flat device buffer of count floats, tensor i at offset[i] (zero
 * padding between tensors stays zero), computed in order on `stream`. After a train step the
 * gradient bucket is ready in stream order; parameters written into the bucket in stream order
 * are used by the next step. Pointers stay valid until destroy.
 */
typedef struct {
    size_t size; /**< sizeof(pserv_cuda_mlp_bucket_t) */
    float *params, *grads;
    size_t count;
    size_t offset[PSERV_CUDA_MLP_MAX_TENSORS];
    pserv_cuda_stream_t stream;
    int device;
} pserv_cuda_mlp_bucket_t;

#define PSERV_CUDA_MLP_BUCKET_INIT { sizeof(pserv_cuda_mlp_bucket_t), NULL, NULL, 0, {0}, NULL, 0 }

PSERV_API pserv_status_t pserv_cuda_mlp_bucket(pserv_cuda_mlp_h mlp, pserv_cuda_mlp_bucket_t *bucket);

#ifdef __cplusplus
}
#endif
#endif
