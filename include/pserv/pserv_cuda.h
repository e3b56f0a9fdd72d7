/*
 * pserv's CUDA side (present when libpserv was built with nvcc; pserv_HAS_CUDA in the CMake
 * package says so). Every function works on a machine without a GPU or driver: it returns
 * PSERV_ERR_UNSUPPORTED and the host API keeps working.
 *
 * The device-pointer push/pull API, ordered on a caller's cudaStream_t, is built on these.
 */
#ifndef PSERV_CUDA_H
#define PSERV_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Number of CUDA devices usable by this process. PSERV_ERR_UNSUPPORTED (and *count = 0) when
 * there is no driver or no device; the reason is in pserv_cuda_last_error().
 */
PSERV_API pserv_status_t pserv_cuda_device_count(int *count);
/**
 * Page-locks host memory for the CUDA driver too (cudaHostRegister), so device copies from it
 * run at full speed and asynchronously. The memory may already be locked and registered with
 * the transport. PSERV_ERR_UNSUPPORTED without a device.
 */
PSERV_API pserv_status_t pserv_cuda_host_register(void *ptr, size_t len);
PSERV_API pserv_status_t pserv_cuda_host_unregister(void *ptr);
/**
 * The reference MLP (pserv_model.h) on a GPU, for a worker whose gradients come from a device:
 * same tensors (W0, b0, W1, b1, ...), init and arithmetic as pserv_mlp_*, computed with cuBLAS and
 * pserv's kernels on `device`. Host-facing and synchronous: batches come from host memory and
 * gradients and parameters are copied to and from host arrays, one call per step. Not
 * thread-safe. PSERV_ERR_UNSUPPORTED without a driver or device.
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

/** Detail of the last CUDA error of the calling thread, or "". */
PSERV_API const char *pserv_cuda_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
