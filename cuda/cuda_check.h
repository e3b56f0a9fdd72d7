/*
 * CUDA check macros, in one place. PS_CUDA_CHECK maps a CUDA error to a pserv status, keeps the
 * message for pserv_cuda_last_error(), and clears CUDA's sticky last error so one failed call
 * does not poison the next one.
 */
#ifndef PS_CUDA_CHECK_H
#define PS_CUDA_CHECK_H

#include <cuda_runtime.h>

#include "pserv/pserv_status.h"

/* Records err (with the call's text) and maps it: no device or driver -> PSERV_ERR_UNSUPPORTED. */
pserv_status_t ps_cuda_status(cudaError_t err, const char *call, const char *file, int line);

#define PS_CUDA_CALL(call) ps_cuda_status((call), #call, __FILE__, __LINE__)

#define PS_CUDA_CHECK_GOTO(call, st, label)                                                  \
    do {                                                                                     \
        (st) = PS_CUDA_CALL(call);                                                           \
        if ((st) < 0) goto label;                                                            \
    } while (0)

#endif
