/* CUDA device discovery and host-memory registration; safe without a GPU or driver. */
#include <stdio.h>

#include "cuda_check.h"
#include "pserv/pserv_cuda.h"

static __thread char ps_cuda_error[256];

pserv_status_t ps_cuda_status(cudaError_t err, const char *call, const char *file, int line)
{
    if (err == cudaSuccess) return PSERV_OK;
    (void)cudaGetLastError(); /* clear the sticky error */
    snprintf(ps_cuda_error, sizeof(ps_cuda_error), "%s: %s (%s:%d)", call, cudaGetErrorString(err), file, line);
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

pserv_status_t ps_cublas_status(cublasStatus_t err, const char *call, const char *file, int line)
{
    if (err == CUBLAS_STATUS_SUCCESS) return PSERV_OK;
    (void)cudaGetLastError(); /* a failed cuBLAS call may leave a runtime error behind */
    snprintf(ps_cuda_error, sizeof(ps_cuda_error), "%s: %s (%s:%d)", call, cublasGetStatusString(err), file, line);
    switch (err) {
    case CUBLAS_STATUS_NOT_INITIALIZED: /* cublasCreate without a driver or device */
    case CUBLAS_STATUS_ARCH_MISMATCH:
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return PSERV_ERR_UNSUPPORTED;
    case CUBLAS_STATUS_ALLOC_FAILED:
        return PSERV_ERR_NO_MEMORY;
    case CUBLAS_STATUS_INVALID_VALUE:
        return PSERV_ERR_INVALID_ARG;
    default:
        return PSERV_ERR_INTERNAL;
    }
}

pserv_status_t ps_cuda_fail(pserv_status_t st, const char *what, const char *file, int line)
{
    snprintf(ps_cuda_error, sizeof(ps_cuda_error), "%s: %s (%s:%d)", what, pserv_strerror(st), file, line);
    return st;
}

extern "C" pserv_status_t pserv_cuda_device_count(int *count)
{
    int n = 0;
    if (count == NULL) return PSERV_ERR_INVALID_ARG;
    *count = 0;
    pserv_status_t st = PS_CUDA_CALL(cudaGetDeviceCount(&n));
    if (st < 0) return st;
    if (n == 0) {
        snprintf(ps_cuda_error, sizeof(ps_cuda_error), "no CUDA device");
        return PSERV_ERR_UNSUPPORTED;
    }
    *count = n;
    return PSERV_OK;
}

extern "C" pserv_status_t pserv_cuda_host_register(void *ptr, size_t len)
{
    int n;
    if (ptr == NULL || len == 0) return PSERV_ERR_INVALID_ARG;
    pserv_status_t st = pserv_cuda_device_count(&n);
    if (st < 0) return st;
    return PS_CUDA_CALL(cudaHostRegister(ptr, len, cudaHostRegisterPortable));
}

extern "C" pserv_status_t pserv_cuda_host_unregister(void *ptr)
{
    if (ptr == NULL) return PSERV_ERR_INVALID_ARG;
    return PS_CUDA_CALL(cudaHostUnregister(ptr));
}

extern "C" const char *pserv_cuda_last_error(void)
{
    return ps_cuda_error;
}
