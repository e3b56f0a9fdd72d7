/*
 * The host side of the staging pipeline, shared by the CUDA worker (cuda/cuda_worker.cu) and
 * the CPU path, which is how the CPU tests exercise it: an operation on a range of a tensor is
 * cut into pieces of whole chunks; each piece's range request goes out as soon as its bytes are
 * in host memory, and each piece is reported done, in order, as soon as its reply is in.
 *
 * Two threads per stager: the issuer waits until a piece is staged (ops.staged: for the GPU, the
 * event recorded after the piece's device-to-host copy) and issues its request; the completer
 * waits for requests in issue order and reports each piece (ops.piece_done: for the GPU, the
 * flag a stream waits on before it copies the piece back). So piece k+1 is being staged while
 * piece k is on the wire and piece k-1 is applied by its shard.
 *
 * An error of one piece (a failed server, a rejected push) does not stop the others: every
 * piece is reported, with its status, so a waiting stream is always released.
 */
#ifndef PS_STAGER_H
#define PS_STAGER_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv.h"

typedef struct ps_stager ps_stager_t;

typedef enum { PS_STAGE_PUSH = 0, PS_STAGE_PULL, PS_STAGE_PUSH_PULL } ps_stage_kind_t;

typedef struct {
    /* Blocks until piece i's bytes are in host memory; an error fails the piece without sending
     * it. NULL: the data is staged already. Issuer thread. */
    pserv_status_t (*staged)(void *arg, unsigned piece);
    /* Piece i finished with st (for pulls: its values are in host memory when st is OK).
     * Completer thread, in piece order. May be NULL. */
    void (*piece_done)(void *arg, unsigned piece, pserv_status_t st);
    /* The whole operation finished, after its last piece_done; st is its first error. The
     * operation's resources may be freed here. Completer thread. May be NULL. */
    void (*op_done)(void *arg, pserv_status_t st);
} ps_stage_ops_t;

typedef struct {
    ps_stage_kind_t kind;
    uint64_t key;
    size_t offset, count; /* elements of the tensor: a range as pserv_worker_*_range accept */
    size_t piece_elems;   /* elements per piece, rounded up to whole chunks; 0: one chunk */
    void *host;           /* count elements: the gradient to push, where pulled values land (push-pull: in place) */
    ps_stage_ops_t ops;
    void *arg;
} ps_stage_op_t;

/* Starts a stager on a worker (which must outlive it). */
pserv_status_t ps_stager_create(pserv_worker_h worker, ps_stager_t **out);
/*
 * Number of pieces op will be cut into, after checking its key and range (PSERV_ERR_UNKNOWN_KEY,
 * PSERV_ERR_INVALID_ARG with the detail in this thread's pserv_last_error(): the stager cannot
 * write the worker's). Piece i covers [offset + i * p, min(offset + count, offset + (i + 1) * p))
 * with p the piece size rounded up to whole chunks.
 */
pserv_status_t ps_stage_pieces(pserv_worker_h worker, const ps_stage_op_t *op, unsigned *pieces);
/*
 * Queues an operation (copied; host and arg must stay valid until op_done) after checking it as
 * ps_stage_pieces; returns at once. Operations run in submission order, each piece in order.
 * PSERV_ERR_NO_RESOURCE when 256 operations are queued and unfinished (nothing is queued then),
 * PSERV_ERR_SHUTDOWN once destroy began. Thread-safe, also from the callbacks.
 */
pserv_status_t ps_stager_submit(ps_stager_t *s, const ps_stage_op_t *op);
/*
 * Waits until every operation submitted so far has finished, op_done included (timeout_ms < 0:
 * forever), and returns the first error since the last drain (then forgets it), or PSERV_OK;
 * PSERV_ERR_TIMED_OUT keeps the error for the next drain. Not from a callback (it would wait
 * for itself).
 */
pserv_status_t ps_stager_drain(ps_stager_t *s, int timeout_ms);
/* Finishes the queued operations (their pieces are all reported) and stops the threads. Not
 * from a callback; no submit may race with it from another thread. */
void ps_stager_destroy(ps_stager_t *s);

#endif
