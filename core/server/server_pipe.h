/*
 * A shard's pipeline between the network thread and its apply thread.
 *
 * The transport's progress thread only moves bytes: it decodes and admits a message (against the
 * view), lands its payload in a slot and queues it. The apply thread takes the queue in order
 * and runs everything that touches the store: the consistency policy (sync rounds, async),
 * aggregation, the optimizer step (fanned out to the shard's pool) and the answers. So a message
 * crosses one thread boundary, the optimizer never runs on the progress thread (heartbeats and
 * receives go on while it steps), and the store has a single owner and needs no lock.
 *
 * Slots: one region of equal slots, each big enough for one chunk's message (a push, or a
 * REGISTER's descriptor and values), reused round after round with no allocation. A rendezvous
 * payload is received straight into a slot, with the header decoded once beside it; an eager
 * payload is copied into one. The progress thread never waits for a slot: slots it handed to
 * rendezvous receives come back only once it has progressed them, so waiting could deadlock.
 * When every slot is in use, the payload goes to the heap instead (counted in `overflows`; the
 * slot count is chosen so that steady state needs none). The queue is what pushes back: when it
 * is full the progress thread waits for the apply thread, which needs nothing from it.
 */
#ifndef PS_SERVER_PIPE_H
#define PS_SERVER_PIPE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"
#include "wire.h"

typedef enum {
    PS_WORK_MSG = 1,   /* a data message: h, peer, data/len (a slot, or NULL) */
    PS_WORK_VIEW,      /* who is in the job changed: data = the new live-node array (owned by the work) */
    PS_WORK_ABORT,     /* the job failed: answer every parked pull with the error */
    PS_WORK_CKPT_AT,   /* the coordinator named a checkpoint round (len) */
    PS_WORK_CONNECT,   /* a server joined (rank: len): open the connection to it before chunks move */
    PS_WORK_RESYNC,    /* a restarted coordinator took us back: say READY and SYNCED again */
    PS_WORK_PEER_GONE, /* a worker's connection is gone: drop its parked pulls */
    PS_WORK_BATCH_END, /* the entries of a BATCH (queued before it) are done: send the replies they
                        * coalesced; data = the batch's bytes (a batch buffer, borrowed and returned
                        * by the shard, or a heap copy freed after it) */
    PS_WORK_RECLAIM,   /* a chunk moved away (h.key, h.chunk) has no send in flight any more: free it */
} ps_work_kind_t;

typedef struct {
    ps_work_kind_t kind;
    ps_wire_hdr_t h;
    ps_tp_peer_t *peer;
    uint8_t *data;
    size_t len;
    int32_t slot; /* the slot data is in, or -1 (no payload, or a heap copy freed after the work) */
    uint64_t chunk_elems; /* REGISTER: the view's geometry of the tensor */
    /* REGISTER: the chunk's owners by the view (primary first, live, distinct); VIEW: the roles of
     * every chunk this shard holds (ps_server_roles_t, owned by the work). */
    uint32_t owners[8];
    uint32_t nowners;
    void *roles;
    uint8_t borrowed; /* data is not the pipe's to free: it lies in a batch's bytes (returned at its BATCH_END) */
    uint8_t in_batch; /* an entry of a BATCH: its replies are coalesced until BATCH_END */
} ps_work_t;

typedef struct {
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ps_work_t *ring;
    uint32_t cap, head, count; /* count: atomic stores under lock (the apply thread spins on it) */
    int stop;                  /* atomic store under lock */
    int sleeping;              /* lock: the apply thread waits on cond, a push must signal */
    unsigned pushers_waiting;  /* lock: pushes waiting for room */
    uint64_t spin_ns;          /* how long the apply thread spins after its last work (PSERV_PROGRESS) */
    uint8_t *slots; /* pinned: nslots x slot_bytes */
    size_t slot_bytes, region_bytes;
    uint32_t nslots, nfree;
    uint64_t overflows; /* payloads that found no free slot (atomic) */
    uint32_t *free_slots;
    ps_wire_hdr_t *slot_hdr; /* the header decoded when the slot was chosen for a rendezvous */
    uint8_t *slot_has_hdr;
    void (*run)(void *arg, ps_work_t *work);
    void *arg;
} ps_pipe_t;

/*
 * Slots of slot_bytes each, a queue, and the apply thread calling run(arg, work) for each item.
 * With nothing queued the apply thread spins for spin_ns after its last work (UINT64_MAX: always,
 * 0: never), then sleeps (core/base/progress.h).
 */
pserv_status_t ps_pipe_start(ps_pipe_t *p, uint32_t nslots, size_t slot_bytes, uint64_t spin_ns,
                             void (*run)(void *, ps_work_t *), void *arg);
/* Stops the apply thread (work still queued is dropped, its slots freed) and frees everything. */
void ps_pipe_stop(ps_pipe_t *p);
/* A free slot (progress thread), or -1 when none is free (never waits). */
int32_t ps_pipe_slot_get(ps_pipe_t *p);
/* The slot a buffer is, or -1. */
int32_t ps_pipe_slot_of(const ps_pipe_t *p, const void *buf);
uint8_t *ps_pipe_slot_data(ps_pipe_t *p, int32_t slot);
/* Returns a slot that will not be queued (a refused or aborted receive). */
void ps_pipe_slot_put(ps_pipe_t *p, int32_t slot);
/* Queues work for the apply thread (progress thread), waiting while the queue is full. */
void ps_pipe_push(ps_pipe_t *p, const ps_work_t *work);

#endif
