/* cuda_check.h's recorders for the GPU model: its errors go to pserv_model_last_error(). */
#include <stdio.h>

#include "cuda_check.h"
#include "model_error.h"
#include "pserv/pserv_model.h"

pserv_status_t ps_cuda_status(cudaError_t err, const char *call, const char *file, int line)
{
    if (err == cudaSuccess) return PSERV_OK;
    (void)cudaGetLastError(); /* clear the sticky error */
    return ps_model_error(ps_cuda_map_error(err), "%s: %s (%s:%d)", call, cudaGetErrorString(err), file, line);
}

pserv_status_t ps_cuda_fail(pserv_status_t st, const char *what, const char *file, int line)
{
    return ps_model_error(st, "%s: %s (%s:%d)", what, pserv_strerror(st), file, line);
}

const char *ps_cuda_error_text(void)
{
    return pserv_model_last_error();
}
