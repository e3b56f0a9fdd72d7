/* CUDA device discovery and host-memory registration; safe without a GPU or driver. */
#include <stdio.h>

#include "cuda_check.h"
#include "pserv/pserv_cuda.h"

extern "C" pserv_status_t pserv_cuda_device_count(int *count)
{
    int n = 0;
    if (count == NULL) return PSERV_ERR_INVALID_ARG;
    *count = 0;
    pserv_status_t st = PS_CUDA_CALL(cudaGetDeviceCount(&n));
    if (st < 0) return st;
    if (n == 0) {
        ps_cuda_fail(PSERV_ERR_UNSUPPORTED, "no CUDA device", __FILE__, __LINE__);
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
    return ps_cuda_error_text();
}
