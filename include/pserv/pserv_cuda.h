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
/** Detail of the last CUDA error of the calling thread, or "". */
PSERV_API const char *pserv_cuda_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
