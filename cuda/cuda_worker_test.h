/*
 * Test hooks for the device push / pull (tests/gpu/test_cuda_worker.c): streams and stream-
 * ordered kernels that C tests can enqueue without the CUDA headers. Not for the data path.
 * Device memory: ps_cuda_test_alloc / _free / _download (cuda/mlp_gpu.h).
 */
#ifndef PS_CUDA_WORKER_TEST_H
#define PS_CUDA_WORKER_TEST_H

#include <stddef.h>

#include "pserv/pserv_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Makes a device current for the calling thread (the hooks below use the current device). */
pserv_status_t ps_cw_test_set_device(int device);
/* A non-blocking stream on the current device; destroy waits for it first. */
pserv_status_t ps_cw_test_stream_create(pserv_cuda_stream_t *stream);
void ps_cw_test_stream_destroy(pserv_cuda_stream_t stream);
pserv_status_t ps_cw_test_stream_sync(pserv_cuda_stream_t stream);
/* Enqueues: the stream sleeps delay_us on the device, then dst[i] = base + (i % 97) * step. */
pserv_status_t ps_cw_test_fill(float *dst, size_t n, float base, float step, unsigned delay_us,
                               pserv_cuda_stream_t stream);
/* Enqueues: the stream sleeps delay_us, then a kernel copies src to dst (a device read of src in
 * stream order). */
pserv_status_t ps_cw_test_copy(float *dst, const float *src, size_t n, unsigned delay_us, pserv_cuda_stream_t stream);

#ifdef __cplusplus
}
#endif
#endif
