/* cuBLAS check macros: PS_CUBLAS_CALL maps a cublasStatus_t like PS_CUDA_CALL (cuda_check.h)
 * maps a CUDA error, and records the detail the same way. */
#ifndef PS_CUBLAS_CHECK_H
#define PS_CUBLAS_CHECK_H

#include <cublas_v2.h>

#include "cuda_check.h"

/* Records a cuBLAS failure: not initialized (no driver/device) or unsupported -> UNSUPPORTED. */
pserv_status_t ps_cublas_status(cublasStatus_t err, const char *call, const char *file, int line);

#define PS_CUBLAS_CALL(call) ps_cublas_status((call), #call, __FILE__, __LINE__)

#define PS_CUBLAS_CHECK_GOTO(call, st, label)                                                \
    do {                                                                                     \
        (st) = PS_CUBLAS_CALL(call);                                                         \
        if ((st) < 0) goto label;                                                            \
    } while (0)

#endif
