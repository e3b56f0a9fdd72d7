/*
 * A server shard's store: the tensors it knows and, of each, the chunks it owns. Chunk
 * parameters live in pinned memory registered with the transport, so pull replies are sent
 * from them without a copy. Every lookup by a message's key/chunk/offset/length goes through
 * ps_store_check, which names what is wrong.
 */
#ifndef PS_SHARD_STORE_H
#define PS_SHARD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "keymap.h"
#include "optim.h"
#include "partition.h"
#include "tensor_desc.h"
#include "transport.h"
#include "wire.h"

/* An answer waiting for a round to be applied and held by every backup: a pull's values
 * (PULL_REPLY) or, with backups, a push's acknowledgement (PUSH_REPLY). */
typedef struct {
    ps_tp_peer_t *peer;
    uint64_t req_id;
    uint64_t round;
    uint32_t map_version;
    uint16_t reply; /* PS_MSG_PULL_REPLY or PS_MSG_PUSH_REPLY */
} ps_pending_pull_t;

/* Backups a chunk may have: the view's PS_VIEW_MAX_REPLICAS, and a server it is moving to. */
#define PS_STORE_MAX_BACKUPS 8

struct ps_store;

typedef struct {
    struct ps_store *store;
    uint64_t key;            /* of its tensor */
    float *param;            /* pinned, registered: len elements */
    size_t param_bytes;
    ps_tp_mem_t *mem;
    float *accum;            /* sync mode: sum of this round's pushes */
    ps_optim_state_t state;
    size_t offset, len;      /* elements */
    uint32_t index;
    uint64_t version;        /* rounds (sync) or updates (async) applied */
    uint32_t npushed;        /* node groups that pushed the current round */
    uint64_t *pushed;        /* bitmap: bits 0..W-1 workers, then W..W+N-1 node groups, that pushed the round */
    ps_pending_pull_t *pulls;
    uint32_t npulls, max_pulls;
    /* Replication (server_replica.c), by the view: */
    uint8_t primary;                          /* this shard serves the chunk (else it is a backup) */
    uint8_t held;                             /* the view has it here (0: moved away, freed once idle) */
    uint8_t stale;                            /* moved away once: its values are old until a STATE */
    uint8_t in_view;                          /* scratch while a view's roles are applied */
    uint32_t nbackups;                        /* primary: the live backups, not this shard */
    uint32_t backups[PS_STORE_MAX_BACKUPS];
    uint64_t acked[PS_STORE_MAX_BACKUPS];     /* the version each backup confirmed holding */
    uint64_t *last_seq; /* async with backups: per worker, 1 + the newest push sequence applied (0: none) */
    uint32_t state_from; /* a backup: the primary whose STATE it holds, and that STATE's number */
    uint64_t state_seq;
    float *repl;        /* sync with backups: the update on its way to them (kept: no allocation per round) */
    /* Zero-copy sends from param or repl in flight, 2 each, | 1 once the view moved the chunk
     * away: it is freed when this is 1 (atomics: send completions run on the progress thread). */
    uint64_t refs;
} ps_chunk_t;

typedef struct {
    uint64_t key;
    ps_tensor_desc_t desc;
    ps_layout_t layout;
    ps_chunk_t **chunks; /* num_chunks, NULL where another shard owns the chunk */
} ps_tensor_t;

typedef struct ps_store {
    ps_keymap_t tensors;
    ps_tp_t *tp;
    uint32_t rank;
    uint32_t num_workers;
    uint32_t num_nodes;          /* a sync round of a chunk is complete with one push per node group */
    const uint32_t *worker_node; /* the job's: node group of each worker rank */
    int sync;
    /* A moved-away chunk's last send completed (progress thread): the apply thread may free it
     * now (ps_store_reclaim). */
    void (*idle)(void *arg, uint64_t key, uint32_t chunk);
    void *idle_arg;
    uint64_t chunks, freed; /* chunks whose memory is here; moved-away ones freed (atomics: stats read them) */
} ps_store_t;

/* Words of a chunk's `pushed` bitmap. */
#define PS_PUSHED_WORDS(store) (((store)->num_workers + (store)->num_nodes + 63) / 64)

/* The job must outlive the store (its worker_node array is used). */
void ps_store_init(ps_store_t *s, ps_tp_t *tp, const ps_job_t *job, uint32_t rank);
void ps_store_fini(ps_store_t *s);
/*
 * Defines chunk c of a tensor with its initial values (len elements), cut into chunks of
 * chunk_elems elements (the view's geometry). The first definition of a tensor wins; a later one
 * with a different descriptor is PSERV_ERR_MISMATCH, and one of a chunk already defined is
 * accepted (idempotent) without changing its values. Ownership is the caller's check.
 * *created is the chunk when this call created it, else NULL.
 */
pserv_status_t ps_store_define(ps_store_t *s, uint64_t key, const ps_tensor_desc_t *desc, uint64_t chunk_elems,
                               uint32_t c, const void *values, size_t values_len, ps_chunk_t **created,
                               const char **why);
/*
 * Finds the chunk a data message (PUSH, PUSH_PULL, PULL) addresses and checks the message
 * against it: known key, chunk in range and owned here, dtype, offset, and for pushes the
 * length of a whole chunk. On error *why names the problem.
 */
pserv_status_t ps_store_check(ps_store_t *s, const ps_wire_hdr_t *h, ps_tensor_t **tensor, ps_chunk_t **chunk,
                              const char **why);
/* A zero-copy send from the chunk's memory begins; ps_chunk_sent (its argument: the chunk) is
 * its completion. */
void ps_chunk_send_begin(ps_chunk_t *c);
void ps_chunk_sent(void *arg, pserv_status_t status);
/* The view moved the chunk away (held = 0): 1 when nothing is sent from it any more, so it may
 * be freed now; else the last send's completion calls the store's idle. */
int ps_chunk_retire(ps_chunk_t *c);
/* The view has the chunk here again, before it was freed. */
void ps_chunk_hold(ps_chunk_t *c);
/* Frees chunk `index` of tensor key if it was moved away and nothing is sent from it; 1 if it did.
 * A chunk the view brings back is defined anew by its STATE. */
int ps_store_reclaim(ps_store_t *s, uint64_t key, uint32_t index);
/* Calls fn on every chunk this shard owns. */
void ps_store_each_chunk(ps_store_t *s, void (*fn)(void *arg, ps_tensor_t *t, ps_chunk_t *c), void *arg);

#endif
