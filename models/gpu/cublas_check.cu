/* cuBLAS status mapping (cublas_check.h): the GPU model is the only cuBLAS user. */
#include <stdio.h>

#include "cublas_check.h"

pserv_status_t ps_cublas_status(cublasStatus_t err, const char *call, const char *file, int line)
{
    if (err == CUBLAS_STATUS_SUCCESS) return PSERV_OK;
    (void)cudaGetLastError(); /* a failed cuBLAS call may leave a runtime error behind */
    char what[256];
    snprintf(what, sizeof(what), "%s: %s", call, cublasGetStatusString(err));
    pserv_status_t st;
    switch (err) {
    case CUBLAS_STATUS_NOT_INITIALIZED: /* cublasCreate without a driver or device */
    case CUBLAS_STATUS_ARCH_MISMATCH:
    case CUBLAS_STATUS_NOT_SUPPORTED:
        st = PSERV_ERR_UNSUPPORTED;
        break;
    case CUBLAS_STATUS_ALLOC_FAILED:
        st = PSERV_ERR_NO_MEMORY;
        break;
    case CUBLAS_STATUS_INVALID_VALUE:
        st = PSERV_ERR_INVALID_ARG;
        break;
    default:
        st = PSERV_ERR_INTERNAL;
    }
    return ps_cuda_fail(st, what, file, line);
}
