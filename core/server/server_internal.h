/*
 * Server shard internals shared by server.c (life cycle), server_rx.c (the progress thread:
 * admit, land payloads, queue) and server_update.c (the apply thread: store, rounds, answers).
 * Ownership: the store, live_node and the chunks' parked pulls belong to the apply thread; the
 * peers, parked hellos and the view to the progress thread.
 */
#ifndef PS_SERVER_INTERNAL_H
#define PS_SERVER_INTERNAL_H

#include "batch.h"
#include "ckpt_set.h"
#include "log.h"
#include "member.h"
#include "server_pipe.h"
#include "shard_store.h"
#include "threadpool.h"

/* Per-worker connection state, attached to the transport peer. */
typedef struct ps_server_peer {
    uint32_t rank; /* worker rank, set by HELLO (a server's rank for a server peer) */
    int hello;
    int server; /* another server: a primary that greeted us, or a backup we connected to */
    int failed; /* a backup's connection failed (atomic): the apply thread opens a new one */
    int left; /* said LEAVE: its disconnect is the normal end, not a failure */
    struct ps_server_peer *next; /* all of them, freed with the server */
    int32_t out_buf;  /* apply thread: the reply batch being filled for this worker, or -1 */
    ps_batch_t out;
} ps_server_peer_t;

/* A reply batch buffer (server_batch.c); its send completion hands it back. */
typedef struct {
    struct pserv_server *s;
    uint32_t index;
} ps_server_outbuf_t;

/*
 * Batches (server_batch.c). Reply coalescing: while the apply thread works through a BATCH's entries, its replies to each
 * worker (including pulls of other workers that a push completes) are appended to a batch per
 * worker and sent at the BATCH_END. Buffers come from a fixed pool; the progress thread's send
 * completions return them (under lock).
 */
typedef struct {
    uint8_t *bufs;     /* nbufs x cap */
    size_t cap;
    uint32_t nbufs;
    ps_server_outbuf_t *meta;
    pthread_mutex_t lock; /* free list */
    uint32_t *free_list;
    uint32_t nfree;
    ps_tp_peer_t **open; /* apply thread: peers with a batch being filled */
    uint32_t nopen, max_open;
    /* Where incoming batches land (PS_WIRE_BATCH_MAX each): taken by the progress thread,
     * returned by the apply thread at the batch's BATCH_END (under lock). A batch needs no
     * chunk-sized pipeline slot, and none comes from the heap while one of these is free. */
    uint8_t *in_bufs;
    uint32_t in_n, in_nfree;
    uint32_t *in_free;
    int inited;
} ps_server_out_t;

/* Checkpoints (server_ckpt.c): copies taken on the apply thread, written by a writer thread. */
#define PS_CKPT_OPEN 4  /* rounds being copied at once (async chunks reach rounds at their own pace) */
#define PS_CKPT_QUEUE 2 /* rounds waiting for the disk, the one being written included */
typedef struct ps_ckpt_snap ps_ckpt_snap_t;
typedef struct {
    int running;
    ps_ckpt_snap_t *open[PS_CKPT_OPEN]; /* apply thread: rounds not every chunk reached yet, oldest first */
    uint64_t last_round;                /* apply thread: the newest round handed to the writer */
    uint64_t at_round;                  /* apply thread: the round the coordinator named (checkpoints by time) */
    pthread_t writer;
    pthread_mutex_t lock; /* the queue */
    pthread_cond_t cond;
    ps_ckpt_snap_t *queue[PS_CKPT_QUEUE];
    uint32_t nqueue;
    ps_keymap_t spare; /* lock: copy buffers kept for the next checkpoint, by size */
    int stop, quiet;
    /* Resuming: the checkpoint the job resumes from, opened at the first REGISTER (apply thread). */
    int resume_open;
    pserv_status_t resume_status;
    char resume_error[512];
    ps_ckpt_set_t resume;
} ps_server_ckpt_t;

/* Replication (server_replica.c): the apply thread's connections to the other servers. */
typedef struct {
    uint64_t state_seq;    /* STATEs sent: a backup takes a primary's later one over an earlier one */
    ps_tp_peer_t **peer;   /* by server rank, opened on first use */
    ps_server_peer_t *ctx; /* their peer state (server = 1) */
} ps_server_replicas_t;

/* A VIEW's roles for the apply thread: every chunk this shard holds or a move brings here, with
 * its live owners (a server the chunk moves to counts as one more backup). */
typedef struct {
    uint64_t key;
    uint32_t chunk, n;
    uint32_t owners[PS_VIEW_MAX_REPLICAS + 2]; /* and last, a server the chunk is moving to */
} ps_server_role_t;
typedef struct {
    uint32_t version; /* of the view */
    uint32_t n;
    ps_server_role_t role[];
} ps_server_roles_t;

/* A HELLO that arrived before this shard knew the job (workers may be quicker than us). */
typedef struct {
    ps_tp_peer_t *peer;
    ps_wire_hdr_t hdr;
} ps_parked_hello_t;

struct pserv_server {
    ps_member_t m;
    ps_pool_t *pool;
    ps_store_t store;
    int setup_done;     /* the job arrived and setup ran (progress thread) */
    int ready;          /* ... and it worked: the store set up and the apply thread running */
    uint8_t *live_node; /* apply thread: by node group, 1 while it has a worker still in the job */
    ps_server_roles_t *roles; /* apply thread: the roles of the newest view applied (NULL: none yet) */
    uint32_t num_live_nodes; /* sync: a round completes when every live group pushed it */
    ps_pipe_t pipe;
    ps_server_peer_t *peers;
    ps_parked_hello_t *parked;
    size_t nparked;
    pserv_server_stats_t stats; /* updated with atomics */
    ps_batch_entry_t *rx_ents; /* progress thread: a BATCH's decoded entries */
    ps_server_out_t out;
    ps_server_ckpt_t ckpt;
    ps_server_replicas_t replicas;
};

/* server.c: the job arrived (progress thread): the store, the apply thread, then parked hellos. */
void ps_server_setup(pserv_server_h s);
void ps_server_on_hello(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h);
/* The peer's state as a worker's or a server's of this rank (progress thread); NULL without memory. */
ps_server_peer_t *ps_server_greet(pserv_server_h s, ps_tp_peer_t *peer, uint32_t rank, int server);
void ps_server_park_hello(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h);

/* server_rx.c: the transport's handlers and the member's hooks (progress thread). */
pserv_status_t ps_server_rx_buffer(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, size_t len,
                                   void **buf);
void ps_server_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len);
void ps_server_rx_abort(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *buf);
void ps_server_peer_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why);
void ps_server_view_changed(void *arg, const ps_view_t *old, const ps_view_t *now);
void ps_server_aborted(void *arg);
void ps_server_rejoined(void *arg);
void ps_server_checkpoint_at(void *arg, uint64_t round);
/* Checks a decoded data message against the job and the view; on failure answers it. */
pserv_status_t ps_server_admit_data(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h);
/* Replication traffic (and its batches) must come from another server of the job: 0 if it does. */
pserv_status_t ps_server_from_server(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h);
/* Which node groups still have a worker in the job, by the view. */
void ps_server_live_nodes(pserv_server_h s, const ps_view_t *v, uint8_t *live, uint32_t *count);

/* server_update.c: the apply thread's work. */
void ps_server_run(void *arg, ps_work_t *work);
/* Applies a PUSH or PUSH_PULL (data = gradient, writable scratch) and answers it. */
void ps_server_on_push(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, float *grad);
/* Answers a PULL now, or parks it until its round is applied. */
void ps_server_on_pull(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h);
/* The job failed: every parked pull is answered with the error. */
void ps_server_fail_rounds(pserv_server_h s, pserv_status_t st);
/* The view changed who is in the job: rounds that now have every live group's push complete. */
void ps_server_recount_rounds(pserv_server_h s);
/* A worker's connection is gone: drop its parked pulls (nobody will read the answers). */
void ps_server_drop_peer(pserv_server_h s, ps_tp_peer_t *peer);
/* The view moved the chunk away (apply thread): what waits here is refused (VIEW_CHANGED), so the
 * workers re-send it to the new owner, and the chunk serves nothing more. Its memory is freed
 * once no send from it is in flight (ps_store_reclaim: now, or by ps_server_chunk_idle). */
void ps_server_release_chunk(pserv_server_h s, ps_tensor_t *t, ps_chunk_t *c);
/* Replies with an error status and counts the rejection. */
void ps_server_reject(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, pserv_status_t st,
                      const char *why);

/* server_update.c: one optimizer step on a chunk (version + 1); answers what waits for durable rounds. */
void ps_server_apply(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, float *grad);
void ps_server_answer_pulls(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c);

/* server_replica.c (apply thread). */
/* The newest version every copy of the chunk holds (its version when it has no backups). */
uint64_t ps_chunk_durable(const ps_chunk_t *c);
/* Primary with backups: sends them the update about to be applied (worker/seq: an async push's). */
void ps_server_replicate(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, const float *update, uint32_t worker,
                         uint64_t seq);
/* Opens (and greets) the connection to server r ahead of need: a server that joined gets chunks soon. */
void ps_server_connect_server(pserv_server_h s, uint32_t r);
/* A restarted coordinator took us back (apply thread): READY, and SYNCED for every copy held here
 * that is not ours to serve, since the old coordinator may have died before it acted on them. */
void ps_server_resync(pserv_server_h s);
/* server.c: tells the coordinator this shard is set up (a server that joined a running job takes
 * chunks then). */
void ps_server_say_ready(pserv_server_h s);
/* REPLICATE, STATE (on a backup) and REPLICATE_ACK (on the primary). */
void ps_server_on_replica(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, uint8_t *data, size_t len);
/* The chunk's owners by the view (primary first); a backup new to it gets the chunk's state unless
 * fresh (just registered on every owner alike). */
void ps_server_set_owners(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, const uint32_t *owners, uint32_t n,
                          int fresh);
/* The chunk's per-worker push sequences (async with backups), allocated on first use. */
pserv_status_t ps_server_seq_table(pserv_server_h s, ps_chunk_t *c);
/* Progress thread: the roles of every chunk this shard holds in view v (NULL without memory). */
ps_server_roles_t *ps_server_roles(pserv_server_h s, const ps_view_t *v);
/* The owners of chunk c of key in v, live and distinct, primary first; returns how many. */
uint32_t ps_server_owners(const ps_view_t *v, uint64_t key, uint32_t c, uint32_t *owners);

/* server_batch.c: BATCH on the progress thread, reply coalescing on the apply thread. */
pserv_status_t ps_server_batch_init(pserv_server_h s, size_t slot_bytes);
void ps_server_batch_fini(pserv_server_h s);
/* Splits a BATCH into its entries, each admitted like a message of its own and queued; data is
 * the transport's (valid during the call) or a batch buffer, which it then owns. */
void ps_server_on_batch(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, void *data, size_t len);
/* The apply thread starts (entry of a batch) or ends (BATCH_END: sends them) coalescing replies. */
void ps_server_out_begin(pserv_server_h s);
void ps_server_out_end(pserv_server_h s, void *batch);
/* A buffer for an incoming batch, or NULL when none is free; _put returns one (0 if buf is not one). */
void *ps_server_batch_buf_get(pserv_server_h s);
int ps_server_batch_buf_put(pserv_server_h s, const void *buf);
/* Inside a batch (apply thread): appends the message (copied) to the peer's batch; 0 if it goes alone. */
int ps_server_coalesce(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len);
/* Every send of the shard's answers: coalesced on the apply thread inside a batch, else sent.
 * A header alone: */
pserv_status_t ps_server_send(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h);
/* With the chunk's parameters: sent alone, from its registered memory without a copy, the chunk
 * is kept until the send completes. */
pserv_status_t ps_server_send_values_of(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, ps_chunk_t *c);
/* A chunk moved away has no send in flight any more (progress thread): its memory goes. */
void ps_server_chunk_idle(void *arg, uint64_t key, uint32_t chunk);
/* A header-only reply (status) to a request, through ps_server_send. */
void ps_server_reply(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *req, ps_msg_type_t type,
                     pserv_status_t status);

/* server_ckpt.c: checkpoints. start/drain/stop: the writer thread (drain waits for what is queued,
 * stop ends it, first queueing the state a well-ended job finished with). */
pserv_status_t ps_server_ckpt_start(pserv_server_h s);
void ps_server_ckpt_drain(pserv_server_h s);
void ps_server_ckpt_stop(pserv_server_h s);
void ps_server_ckpt_fini(pserv_server_h s);
/* Apply thread: chunk c completed a round that is a checkpoint round; copies it. */
void ps_server_ckpt_chunk(pserv_server_h s, const ps_tensor_t *t, const ps_chunk_t *c);
/* Apply thread: a round the coordinator named (CHECKPOINT_AT); one this shard's chunks passed
 * already is reported back (STALE), so it names a later one. */
void ps_server_ckpt_at(pserv_server_h s, uint64_t round);
/* A checkpoint round: a multiple of the job's checkpoint_every, or the round the coordinator named. */
static inline int ps_server_ckpt_due(const pserv_server_h s, uint64_t version)
{
    return (s->m.job.ckpt_every && version % s->m.job.ckpt_every == 0) || (version != 0 && version == s->ckpt.at_round);
}
/* Apply thread: a chunk just defined takes its state from the checkpoint the job resumes from. */
pserv_status_t ps_server_ckpt_restore(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, const char **why);

#define PS_STAT_ADD(s, field, n) __atomic_fetch_add(&(s)->stats.field, (uint64_t)(n), __ATOMIC_RELAXED)

#endif
