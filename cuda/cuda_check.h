/*
 * CUDA check macros, in one place. PS_CUDA_CALL maps a CUDA error to a pserv status,
 * keeps the message for pserv_cuda_last_error(), and clears CUDA's sticky last error so one
 * failed call does not poison the next one (cuBLAS has its own: models/gpu/cublas_check.h).
 * Kernel launches are checked with PS_CUDA_LAUNCH_CHECK_GOTO right after the <<<>>>.
 */
#ifndef PS_CUDA_CHECK_H
#define PS_CUDA_CHECK_H

#include <cuda_runtime.h>

#include "pserv/pserv_status.h"

/* The pserv status of a CUDA error: no device or driver -> PSERV_ERR_UNSUPPORTED. */
static inline pserv_status_t ps_cuda_map_error(cudaError_t err)
{
    switch (err) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNotSupported:
    case cudaErrorInitializationError:
    case cudaErrorCallRequiresNewerDriver:
        return PSERV_ERR_UNSUPPORTED;
    case cudaErrorMemoryAllocation:
        return PSERV_ERR_NO_MEMORY;
    case cudaErrorInvalidValue:
        return PSERV_ERR_INVALID_ARG;
    default:
        return PSERV_ERR_INTERNAL;
    }
}

/* Records err (with the call's text) and maps it: no device or driver -> PSERV_ERR_UNSUPPORTED. */
pserv_status_t ps_cuda_status(cudaError_t err, const char *call, const char *file, int line);

/* The detail of the calling thread's last error. */
const char *ps_cuda_error_text(void);

#define PS_CUDA_CALL(call) ps_cuda_status((call), #call, __FILE__, __LINE__)

#define PS_CUDA_CHECK_GOTO(call, st, label)                                                  \
    do {                                                                                     \
        (st) = PS_CUDA_CALL(call);                                                           \
        if ((st) < 0) goto label;                                                            \
    } while (0)

/* Records an error found by pserv's own checks (bad argument, bad state) as the last error. */
pserv_status_t ps_cuda_fail(pserv_status_t st, const char *what, const char *file, int line);

/* A kernel launch's configuration error shows up in cudaGetLastError (which also clears it). */
#define PS_CUDA_LAUNCH_CHECK_GOTO(kernel_name, st, label)                                    \
    do {                                                                                     \
        (st) = ps_cuda_status(cudaGetLastError(), "launch " kernel_name, __FILE__, __LINE__); \
        if ((st) < 0) goto label;                                                            \
    } while (0)

#endif
