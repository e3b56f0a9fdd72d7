/* Where libpserv's CUDA errors are recorded (pserv_cuda_last_error). The models' GPU library
 * implements the same three functions over its own last error (models/gpu/gpu_check.cu). */
#include <stdio.h>

#include "cuda_check.h"

static __thread char ps_cuda_error[256];

pserv_status_t ps_cuda_status(cudaError_t err, const char *call, const char *file, int line)
{
    if (err == cudaSuccess) return PSERV_OK;
    (void)cudaGetLastError(); /* clear the sticky error */
    snprintf(ps_cuda_error, sizeof(ps_cuda_error), "%s: %s (%s:%d)", call, cudaGetErrorString(err), file, line);
    return ps_cuda_map_error(err);
}

pserv_status_t ps_cuda_fail(pserv_status_t st, const char *what, const char *file, int line)
{
    snprintf(ps_cuda_error, sizeof(ps_cuda_error), "%s: %s (%s:%d)", what, pserv_strerror(st), file, line);
    return st;
}

const char *ps_cuda_error_text(void)
{
    return ps_cuda_error;
}
