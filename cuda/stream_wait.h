/*
 * Stream waits on host-written flags: the device side of the staging pipeline. A host thread
 * publishes progress by storing a sequence number into pinned, host-mapped memory (a release
 * store); a 1-thread kernel enqueued on a stream polls it, so the work after it on that stream
 * starts only once the host said so, without the host ever blocking on the device.
 */
#ifndef PS_STREAM_WAIT_H
#define PS_STREAM_WAIT_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

/*
 * Enqueues on stream a wait until *flag has reached seq, compared with wrap-around
 * ((int32_t)(*flag - seq) >= 0). flag is the device view (cudaHostGetDevicePointer) of
 * cudaHostAllocMapped memory. The kernel occupies one thread of one SM while it polls (every
 * ~1 us); the flag must eventually be written, or the stream never gets past it.
 */
pserv_status_t ps_stream_wait_flag(const uint32_t *flag, uint32_t seq, cudaStream_t stream);

#endif
