/* Worker internals shared by worker.c (membership, registration) and worker_request.c (data path). */
#ifndef PS_WORKER_INTERNAL_H
#define PS_WORKER_INTERNAL_H

#include <stdatomic.h>

#include "batch.h"
#include "keymap.h"
#include "log.h"
#include "member.h"
#include "partition.h"
#include "tensor_desc.h"

typedef struct {
    uint64_t key;
    ps_tensor_desc_t desc;
    ps_layout_t layout;
    uint64_t rounds[]; /* per chunk, pushes issued: the round of the chunk's next push */
} ps_wtensor_t;

typedef enum { PS_REQ_FREE = 0, PS_REQ_ACTIVE } ps_req_state_t;

/* Where a data request's chunk message went and with which round, until it is answered: what a
 * failover re-sends to the chunk's new owner. */
typedef struct {
    uint32_t server; /* UINT32_MAX once answered */
    uint32_t held;   /* not sent yet: its server joined the job and has not answered our HELLO */
    uint64_t round;
    uint32_t flags;
} ps_req_chunk_t;

/*
 * A request slot. Its id is (generation << 32 | slot): ids are bounded, and a late reply or
 * completion for a slot that was reused does not match the new generation.
 */
typedef struct {
    uint32_t gen;
    ps_req_state_t state;
    uint32_t pending;       /* chunk messages not answered yet */
    uint32_t *per_server;   /* of those, per server rank (to fail them when a server dies) */
    pserv_status_t status;  /* first error, or OK */
    ps_msg_type_t type;     /* what was sent */
    const ps_wtensor_t *tensor;
    uint8_t *dst;           /* pull destination: holds elements from `base` on */
    const uint8_t *src;     /* push source (same base), kept to re-send a chunk the view moved */
    uint64_t base;          /* element offset of dst[0] in the tensor */
    uint32_t first, end;    /* chunks [first, end) the request covers */
    ps_req_chunk_t *chunks; /* data requests: end - first of them (kept and grown across uses) */
    uint32_t chunks_cap;
} ps_req_t;

/* A batch buffer of the group pool; its send completion hands it back. */
typedef struct {
    struct pserv_worker *w;
    uint32_t index;
} ps_wbuf_t;

/*
 * Groups (worker_group.c). One thread at a time has a group open on a worker (owner, depth:
 * m.lock); its small chunk messages are appended to a batch per server and sent at group_end,
 * or when a batch is full. Buffers come from a pool that grows to what a step needs in flight
 * (at most PS_GROUP_MAX_BUFS) and is reused; the send completion (progress thread) returns one
 * under pool_lock.
 */
typedef struct {
    pthread_t owner;
    unsigned depth;
    uint8_t **bufs; /* up to PS_GROUP_MAX_BUFS of cap bytes, allocated as needed and kept */
    size_t cap;
    uint32_t nbufs;
    ps_wbuf_t *meta;
    pthread_mutex_t pool_lock;
    uint32_t *free_list;
    uint32_t nfree;
    int32_t *open;     /* per server: the buffer being filled, or -1 (grown when servers join) */
    ps_batch_t *batch; /* per server */
} ps_wgroup_t;

struct pserv_worker {
    ps_member_t m; /* m.lock guards everything below */
    ps_tp_peer_t **servers;  /* by server rank: m.job.num_servers of them (servers join a running job) */
    int *server_failed;
    int *server_greeted;     /* answered our HELLO: only then does it get data (UCX may deliver a
                              * connection's first messages out of order) */
    uint32_t num_connected;  /* servers connected and greeted so far: later ones join the job */
    ps_keymap_t tensors;
    ps_req_t *reqs;
    uint32_t *req_counts; /* backing store of every slot's per_server */
    uint32_t nreqs;
    uint32_t *free_slots;
    uint32_t nfree;
    uint64_t barrier_seq;
    uint32_t share_index, share_count; /* this worker's place among those at the last barrier */
    uint64_t bcast_seq; /* its node group's next broadcast (each answer from the coordinator says which) */
    int leaving; /* destroy has begun: servers closing now is the normal end */
    int saw_failure; /* a request failed because a member died: leaving now is a failure, not the end */
    pserv_worker_stats_t stats;
    /* Bumped (with the lock held) whenever a request completes or fails, so a waiter that spins
     * without the lock sees it; spin_ns is how long a wait spins before it sleeps (PSERV_PROGRESS). */
    atomic_uint wake_seq;
    uint64_t spin_ns;
    ps_wgroup_t group;
    ps_batch_entry_t *rx_ents; /* transport handlers: a BATCH reply's decoded entries */
    uint8_t *rx_bufs;          /* transport handlers: where rendezvous BATCH replies land (PS_WORKER_RX_BUFS) */
    uint32_t rx_free[8], rx_nfree;
};

/* A request completed or failed (lock held): wakes waiters, spinning or asleep. */
static inline void ps_worker_wake(pserv_worker_h w)
{
    atomic_fetch_add_explicit(&w->wake_seq, 1, memory_order_release);
    pthread_cond_broadcast(&w->m.cond);
}

/* Request table: allocated once the job (and so the number of servers) is known (lock held). */
pserv_status_t ps_worker_reqs_init(pserv_worker_h w, uint32_t max_requests);
/* Member hook (lock held): servers joined the job; what the worker keeps per server grows. */
pserv_status_t ps_worker_servers_added(void *arg, uint32_t old_n, uint32_t new_n);
/* Connects to and greets the servers that joined the job since (lock held; progress thread or not). */
void ps_worker_connect_new(pserv_worker_h w);
/* A HELLO_REPLY from a server that joined the job (lock held): it gets the chunks held for it. */
void ps_worker_greeted(pserv_worker_h w, ps_tp_peer_t *peer, const ps_wire_hdr_t *h);
void ps_worker_reqs_fini(pserv_worker_h w);
/* Takes a free slot (lock held); PSERV_ERR_NO_RESOURCE when every slot is in flight. */
pserv_status_t ps_worker_req_alloc(pserv_worker_h w, ps_msg_type_t type, const ps_wtensor_t *t, void *dst,
                                   uint64_t *id);
/* Sends one message of a request to a server (lock held); accounts a failure at once. */
void ps_worker_req_send(pserv_worker_h w, uint64_t id, uint32_t server, const ps_wire_hdr_t *h, const void *data,
                        size_t len, ps_tp_send_cb_t cb, void *cb_arg);
/* worker_group.c. Set up with the request table / freed with it (after the transport). */
pserv_status_t ps_worker_group_init(pserv_worker_h w);
/* Servers joined: the per-server batches grow from old_n to new_n (lock held). */
pserv_status_t ps_worker_group_grow(pserv_worker_h w, uint32_t old_n, uint32_t new_n);
void ps_worker_group_fini(pserv_worker_h w);
/* Appends a chunk message to the open group's batch for the server (lock held); 0 if it goes alone. */
int ps_worker_group_add(pserv_worker_h w, uint32_t server, const ps_wire_hdr_t *h, const void *data, size_t len);
/* Where a rendezvous BATCH reply of len bytes lands (progress thread): a buffer of a small pool
 * kept for them, or NULL (the transport allocates). ps_worker_rx_put returns it. */
void *ps_worker_rx_get(pserv_worker_h w, size_t len);
void ps_worker_rx_put(pserv_worker_h w, const void *buf);
void ps_worker_rx_abort(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *buf);
/* A BATCH reply (progress thread): every entry handled as a reply of its own. */
void ps_worker_rx_batch(pserv_worker_h w, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const uint8_t *data, size_t len);
/* One reply of a server to a chunk message (lock held). */
void ps_worker_on_reply(pserv_worker_h w, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len);
/* Finds an active request by id (lock held), or NULL. */
ps_req_t *ps_worker_req_find(pserv_worker_h w, uint64_t id);
/* Progress-thread handlers. */
pserv_status_t ps_worker_rx_buffer(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, size_t len,
                                   void **buf);
void ps_worker_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len);
void ps_worker_peer_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why);
/* Member hook: the job failed; every request in flight completes with PSERV_ERR_JOB_FAILED. */
void ps_worker_aborted(void *arg);
/* Member hook: a new view. Chunk messages waiting on a failed server go to the chunk's new owner. */
void ps_worker_view_changed(void *arg, const ps_view_t *old, const ps_view_t *now);

#define PS_WSTAT_ADD(w, field, n) __atomic_fetch_add(&(w)->stats.field, (uint64_t)(n), __ATOMIC_RELAXED)

#endif
