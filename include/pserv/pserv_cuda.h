/*
 * pserv's CUDA side (present when libpserv was built with nvcc; pserv_HAS_CUDA in the CMake
 * package says so). Every function works on a machine without a GPU or driver: it returns
 * PSERV_ERR_UNSUPPORTED and the host API keeps working.
 *
 * Two layers: device push / pull on a caller's stream (pserv_cuda_worker_*), for a training loop
 * that embeds pserv. (The reference model on the GPU, pserv_cuda_mlp_*, is in models/: pserv_model_cuda.h.)
 */
#ifndef PSERV_CUDA_H
#define PSERV_CUDA_H

#include <stddef.h>
#include <stdint.h>

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
/** A cudaStream_t, without needing the CUDA headers (cudaStream_t is struct CUstream_st *). */
typedef struct CUstream_st *pserv_cuda_stream_t;

/* ------------------------------------------------------------------------------------------ */
/* Device push / pull, ordered on a stream                                                     */

/**
 * The device side of a worker: push, pull and push-pull of device buffers, ordered on a
 * caller's stream the way NCCL calls are. A call returns at once; the stream reads the gradient
 * after the work enqueued before the call, and work enqueued after the call sees the pulled
 * values. Between the two the data moves in pieces through pinned host buffers: piece k+1 is
 * copied off the device while piece k is on the wire and piece k-1 is being applied by its
 * shard, and pulled pieces are copied back as they arrive. No call blocks the host on the
 * device; a call blocks the host only while 4 operations of its key, or 256 in all, are still
 * unfinished on the host side (the caller runs that far ahead of the network).
 *
 * Ordering rules (as for NCCL): operations on one key must be issued in order on one stream.
 * Operations are staged in call order over all keys and streams, so a stream must not wait
 * (through events) for work that a later call enqueued on another stream. In sync mode every
 * worker issues its tensors in the same order (a worker's stream waits for a round that needs
 * the others' pushes). Any stream works, the legacy default one included, but not one being
 * captured into a CUDA graph. A handle is used by one thread at a time. Buffers are device
 * memory of the handle's device; each key (and node slice) keeps a pinned host buffer of its
 * size from its first operation until destroy.
 *
 * Node groups (pserv_worker_params_t.node): pserv_cuda_node_push_pull reduces the gradient over
 * the group's GPUs with NCCL (reduce-scatter), pushes and pulls only this GPU's slice (the group
 * sends its sum once, over every GPU's PCIe link in parallel) and all-gathers the parameters.
 * The NCCL communicator is formed at create (collective over the group; its unique id travels
 * through the coordinator). NCCL is loaded at run time: $PSERV_NCCL_LIBRARY (a path) if set,
 * else libnccl.so.2 from the loader's path; a group of several fails create without it. A group
 * of one needs no NCCL (its slice is the whole tensor): it sets NCCL up at its first
 * pserv_cuda_node_push_pull where it loads, and does without it (logged once) where not.
 *
 * Errors: a call returns what it finds at the call (an unknown key, a bad argument, a CUDA
 * failure; with the detail in pserv_cuda_last_error()); part of its work may be enqueued then.
 * Errors of the asynchronous part (a failed server, a rejected push) are kept: the stream is
 * released anyway (nothing waits forever) with the destination left undefined, and
 * pserv_cuda_worker_synchronize (or destroy) returns the first of them.
 */
typedef struct pserv_cuda_worker *pserv_cuda_worker_h;

typedef struct {
    size_t size;        /**< sizeof(pserv_cuda_worker_params_t) */
    int device;         /**< the CUDA device of the buffers; -1 (default): the current device */
    size_t piece_bytes; /**< pipeline piece (rounded to whole chunks); default: the job's chunk */
    int no_nccl;        /**< 1: never use NCCL (node groups must then have one member) */
} pserv_cuda_worker_params_t;

#define PSERV_CUDA_WORKER_PARAMS_INIT { sizeof(pserv_cuda_worker_params_t), -1, 0, 0 }

/**
 * Creates the device side of a worker (which must outlive it). Collective over the worker's
 * node group when it has more than one member (every member calls it; up to 2 minutes for the
 * others). params may be NULL for the defaults. PSERV_ERR_UNSUPPORTED without a driver/device,
 * or for a group of several without NCCL.
 */
PSERV_API pserv_status_t pserv_cuda_worker_create(pserv_worker_h worker, const pserv_cuda_worker_params_t *params,
                                                  pserv_cuda_worker_h *cw);
/**
 * Pushes a registered tensor's gradient (its whole count, device memory) in stream order. Work
 * enqueued after the call may overwrite dgrad (the stream waits for its copy to the host).
 */
PSERV_API pserv_status_t pserv_cuda_push(pserv_cuda_worker_h cw, uint64_t key, const void *dgrad,
                                         pserv_cuda_stream_t stream);
/**
 * Pulls a registered tensor into device memory in stream order: the request goes out when the
 * stream reaches the call (after the key's previous operation), and work enqueued after the
 * call sees the values.
 */
PSERV_API pserv_status_t pserv_cuda_pull(pserv_cuda_worker_h cw, uint64_t key, void *dparam,
                                         pserv_cuda_stream_t stream);
/** Push then pull of the updated values, one round trip per piece. dgrad may equal dparam. */
PSERV_API pserv_status_t pserv_cuda_push_pull(pserv_cuda_worker_h cw, uint64_t key, const void *dgrad,
                                              void *dparam, pserv_cuda_stream_t stream);
/**
 * The whole step of a node group in one call: NCCL reduce-scatter of dgrad over the group
 * (dgrad is overwritten: it holds partial sums afterwards), push-pull of this GPU's slice,
 * NCCL all-gather into dparam. Every member calls it for the same key in the same order.
 * Member l of G owns chunks [l*n/G, (l+1)*n/G) of the tensor's n chunks. With a group of one
 * this is pserv_cuda_push_pull. dgrad may equal dparam.
 */
PSERV_API pserv_status_t pserv_cuda_node_push_pull(pserv_cuda_worker_h cw, uint64_t key, void *dgrad, void *dparam,
                                                   pserv_cuda_stream_t stream);
/**
 * Waits (up to timeout_ms; < 0 forever) until every operation issued so far has finished on
 * the host side (its values are on their way to the device in stream order), and returns the
 * first error of the asynchronous part (or of NCCL) since the last call, or PSERV_OK;
 * PSERV_ERR_TIMED_OUT keeps it for the next call. Does not wait for the streams.
 */
PSERV_API pserv_status_t pserv_cuda_worker_synchronize(pserv_cuda_worker_h cw, int timeout_ms);
/**
 * Finishes what is in flight, releases every waiting stream, waits for the streams' last reads
 * of the pinned buffers and frees the device side. Returns an error not yet returned by
 * synchronize, if any. NULL is a no-op.
 */
PSERV_API pserv_status_t pserv_cuda_worker_destroy(pserv_cuda_worker_h cw);

/** Detail of the last CUDA error of the calling thread, or "". */
PSERV_API const char *pserv_cuda_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
