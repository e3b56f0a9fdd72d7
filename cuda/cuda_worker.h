/*
 * Internals of the device push / pull (pserv_cuda_worker_*, include/pserv/pserv_cuda.h), shared
 * by cuda_worker.cu (staging records, the ops, create / synchronize / destroy) and cuda_node.cu
 * (the node group's NCCL communicator and pserv_cuda_node_push_pull).
 *
 * One staging record per key and range (the whole tensor, or a node member's slice), made on
 * its first use: a pinned host buffer of the range, used in place for the gradient going out
 * and the values coming back; one host-mapped flag per piece, which the stager's completer sets
 * to the op's sequence number when the piece is done and which the caller's stream waits on
 * before it copies the piece back; and a ring of PS_CW_RING event sets, so that an op's events
 * are never recorded again before the stager has waited on them (a caller that runs PS_CW_RING
 * ops of one key ahead of the host side blocks until the oldest one is done).
 */
#ifndef PS_CUDA_WORKER_H
#define PS_CUDA_WORKER_H

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>

#include "nccl_loader.h"
#include "pserv/pserv_cuda.h"

extern "C" {
#include "keymap.h"
#include "stager.h"
}

#define PS_CW_RING 4
/* How long create waits for the node group's NCCL id (a collective over the group). */
#define PS_CW_NODE_TIMEOUT_MS 120000

typedef struct ps_cw_rec ps_cw_rec_t;

/* The events of one op of a record. */
typedef struct {
    ps_cw_rec_t *rec;
    cudaEvent_t ready;   /* on the caller's stream at the call: the op's inputs are written */
    cudaEvent_t done;    /* on the caller's stream after the op's last copy back (destroy waits for it) */
    cudaEvent_t *staged; /* rec->pieces, on the copy stream: piece p is in the pinned buffer */
    uint32_t seq;
    int busy; /* submitted and op_done not yet called (cw->lock) */
} ps_cw_slot_t;

struct ps_cw_rec {
    struct pserv_cuda_worker *cw;
    ps_cw_rec_t *next; /* the same key, another range */
    uint64_t key;
    size_t tensor_count;     /* the whole tensor's elements */
    size_t offset, count;    /* the range staged here (elements) */
    size_t piece_elems;      /* whole chunks */
    unsigned pieces;
    float *host;             /* pinned, count floats */
    uint32_t *flags;         /* pinned and mapped, one per piece: the seq of the last op done with it */
    uint32_t *dflags;        /* the device's view of flags */
    uint32_t seq;            /* of the last op submitted */
    int wait_prev;           /* the last op's pieces are not ordered before the next op by the caller's
                                stream (a push, or a call that failed half-way): the next op's copy
                                stream waits for its flags before writing the pinned buffer */
    unsigned next_slot;
    ps_cw_slot_t slots[PS_CW_RING];
};

struct pserv_cuda_worker {
    pserv_worker_h worker;
    int device;
    size_t piece_bytes;
    int no_nccl;
    ps_stager_t *stager;
    cudaStream_t copy; /* non-blocking: device-to-host copies of every op, in call order */
    pthread_mutex_t lock;
    pthread_cond_t slot_free; /* an op finished: its ring slot, and room in the stager's queue */
    uint64_t ops_done;        /* ops finished (lock) */
    pserv_status_t error; /* first asynchronous error not yet returned (lock) */
    char error_msg[256];
    ps_keymap_t recs; /* key -> ps_cw_rec_t list; touched by the calling thread only */
    /* node group */
    unsigned local_rank, local_size;
    int nccl_tried; /* a group of one sets NCCL up on first use, once */
    const ps_nccl_t *nccl;
    ps_nccl_comm_t comm; /* NULL: no NCCL (a group of one without it) */
};

/* Records a failure found by pserv (printf-style detail) for pserv_cuda_last_error(); returns st. */
pserv_status_t ps_cw_fail(pserv_status_t st, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define PS_CW_FAIL(st, ...) ps_cw_fail((st), __FILE__, __LINE__, __VA_ARGS__)

/* Makes cw's device current in the calling thread; leave restores the previous one. */
pserv_status_t ps_cw_device_enter(const struct pserv_cuda_worker *cw, int *prev);
void ps_cw_device_leave(const struct pserv_cuda_worker *cw, int prev);

/*
 * The staging record of key over [offset, offset + count) (count SIZE_MAX: the whole tensor),
 * made on first use. PSERV_ERR_UNKNOWN_KEY if the worker has not registered the key. who names
 * the API call in messages.
 */
pserv_status_t ps_cw_rec_get(struct pserv_cuda_worker *cw, uint64_t key, size_t offset, size_t count,
                             const char *who, ps_cw_rec_t **out);
/*
 * Enqueues one op on rec's range: src (PUSH, PUSH_PULL) and dst (PULL, PUSH_PULL) are device
 * pointers to the range's first element. The caller has made cw's device current.
 */
pserv_status_t ps_cw_issue(struct pserv_cuda_worker *cw, ps_cw_rec_t *rec, ps_stage_kind_t kind, const float *src,
                           float *dst, cudaStream_t stream);

/* Node group (cuda_node.cu): the communicator of a group of several, formed at create
 * (collective); and its release (abort: after an error, without waiting for the peers). */
pserv_status_t ps_cw_node_init(struct pserv_cuda_worker *cw);
void ps_cw_node_fini(struct pserv_cuda_worker *cw);

#endif
