/* Server shard internals shared by server.c (membership, dispatch) and server_update.c (rounds). */
#ifndef PS_SERVER_INTERNAL_H
#define PS_SERVER_INTERNAL_H

#include "log.h"
#include "member.h"
#include "shard_store.h"
#include "threadpool.h"

/* Per-worker connection state, attached to the transport peer. */
typedef struct ps_server_peer {
    uint32_t rank; /* worker rank, set by HELLO */
    int hello;
    int left; /* said LEAVE: its disconnect is the normal end, not a failure */
    struct ps_server_peer *next; /* all of them, freed with the server */
} ps_server_peer_t;

/* A HELLO that arrived before this shard knew the job (workers may be quicker than us). */
typedef struct {
    ps_tp_peer_t *peer;
    ps_wire_hdr_t hdr;
} ps_parked_hello_t;

struct pserv_server {
    ps_member_t m;
    ps_pool_t *pool;
    ps_store_t store;
    int ready;          /* the job is known and the store set up (progress thread only) */
    uint8_t *live_node; /* by node group: 1 while it has a worker still in the job (from the view) */
    uint32_t num_live_nodes; /* sync: a round completes when every live group pushed it */
    ps_server_peer_t *peers;
    ps_parked_hello_t *parked;
    size_t nparked;
    /* Receive buffers for pushes that arrive by rendezvous: one region, fixed slots. */
    uint8_t *scratch;
    size_t scratch_slot, scratch_slots, scratch_bytes;
    uint32_t *scratch_free;
    size_t nscratch_free;
    pserv_server_stats_t stats; /* updated with atomics */
};

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
/* Replies with an error status and counts the rejection. */
void ps_server_reject(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, pserv_status_t st,
                      const char *why);

#define PS_STAT_ADD(s, field, n) __atomic_fetch_add(&(s)->stats.field, (uint64_t)(n), __ATOMIC_RELAXED)

#endif
