/*
 * Coordinator internals shared by its files: coordinator.c (create, join, forming the job,
 * dispatch), coord_collective.c (barriers, node broadcasts), coord_failure.c (heartbeats, a
 * member's death, the failure policy, the end of the job) and coord_tensor.c (placing tensors,
 * publishing views), coord_checkpoint.c, coord_recover.c (a restarted coordinator) and
 * coord_membership.c (servers joining and drained). All state is changed under c->lock: on the progress thread (messages) or on
 * the ticker thread (heartbeats). Control traffic only, never the data path.
 */
#ifndef PS_COORDINATOR_INTERNAL_H
#define PS_COORDINATOR_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "job.h"
#include "log.h"
#include "send.h"
#include "ticker.h"
#include "transport.h"
#include "view.h"
#include "wire.h"

#define PS_DEFAULT_HEARTBEAT_MS 500
#define PS_DEFAULT_FAILURE_TIMEOUT_MS 3000
/* How long destroy waits for the members told the job ended to close (SHUTDOWN) or acknowledge (ABORT). */
#define PS_COORD_END_GRACE_MS 1000
/* Below this a chunk is all message overhead; above this one message would not carry it. */
#define PS_MIN_CHUNK_BYTES 64u
#define PS_MAX_CHUNK_BYTES ((size_t)1 << 30)

typedef struct {
    ps_tp_peer_t *peer;
    ps_role_t role;
    int32_t wanted_rank;
    uint32_t rank;
    uint64_t join_req;
    char addr[PS_ADDR_MAX];
    char node[PS_NODE_MAX]; /* a worker's node group name, "" for a group of its own */
    int used, left, failed;
    int told_end;           /* told the job ended (SHUTDOWN, ABORT); neither acknowledged nor gone yet */
    int64_t last_heard_ms;  /* any message from it */
    uint64_t barrier_req;   /* req id of its barrier call, while it waits at the barrier */
    int at_barrier;
    uint64_t bcast_req;     /* req id of its node broadcast call, while it waits in one */
    int at_bcast;
    uint64_t ckpt_round;    /* a server's newest checkpoint written */
    uint64_t progress;      /* a server's newest round, by its heartbeats */
    ps_tp_peer_t *drain_peer; /* a server being drained: who asked (answered once it left), or NULL */
    uint64_t drain_req;
    int drained;              /* a drained server that holds nothing: told SHUTDOWN once its last view is out */
    int filling;              /* a server that joined: chunks move to it while that lowers the maximum load */
} ps_coord_member_t;

/* A node group's broadcast in progress (NODE_BCAST): local rank 0's bytes go to every member. */
typedef struct {
    uint64_t seq;   /* the group's next broadcast */
    uint64_t floor; /* recovered: broadcasts from here to seq were completed before (bytes lost) */
    uint32_t arrived, size;
    uint32_t len;
    pserv_status_t fail; /* the round's outcome so far: members disagreed on the length */
    uint8_t data[PSERV_NODE_BROADCAST_MAX];
} ps_coord_node_t;

struct pserv_coordinator {
    ps_tp_t *tp;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ps_job_t job;
    ps_view_t view;             /* the cluster view: the coordinator owns it */
    ps_coord_member_t *members; /* num_servers + num_workers slots */
    uint32_t capacity;
    uint32_t joined[3];         /* by role */
    int formed;
    int recovering;  /* restarted: taking a running job back from its members (coord_recover.c) */
    char settings[PS_SETTINGS_MAX]; /* the first worker's job settings: every later one must match */
    uint32_t settings_from;         /* the member slot that set them */
    int have_settings;
    uint64_t barrier_seq;
    uint64_t barrier_floor; /* recovered: barriers from here to barrier_seq were completed before */
    uint32_t barrier_arrived;
    ps_coord_node_t *nodes; /* job.num_nodes, once formed */
    uint32_t workers_done;  /* left or failed */
    uint32_t members_told;  /* members with told_end: destroy gives them time */
    int done;
    pserv_status_t result;
    char why[PS_WIRE_REASON_MAX]; /* why the job failed, for pserv_coordinator_last_error */
    /* A worker gave up because another member died: the job fails, but the report of the member
     * that died (its connection error, its silence) names the cause better; it has until then. */
    int cause_pending;
    int64_t cause_deadline_ms;
    char cause_fallback[PS_WIRE_REASON_MAX];
    uint64_t rejected;
    uint64_t ckpt_complete; /* the newest checkpoint round every live server has written */
    int ckpt_prune;         /* atomic: a round completed; the ticker prunes older ones */
    /* Checkpoints by time (coord_checkpoint.c): the round named and until when it may take, when
     * the next is due, the rounds' pace and the lead's multiplier (doubled by each round missed). */
    uint64_t ckpt_at;
    int64_t ckpt_at_deadline_ms, ckpt_next_ms;
    double ckpt_pace;
    int64_t ckpt_pace_ms;
    uint64_t ckpt_pace_round;
    uint64_t ckpt_top; /* the newest round heard, and when it was first heard */
    int64_t ckpt_top_ms;
    uint32_t ckpt_lead;
    uint64_t move_bytes; /* chunk bytes that may move at once (coord_membership.c) */
    ps_ticker_t ticker;
};

/* JOIN_REPLY: the member's rank, the job, then the view (flags: PS_WIRE_FLAG_RETRY for a rejoin). */
void ps_coord_send_job(pserv_coordinator_h c, ps_coord_member_t *m, uint32_t flags);
/* A JOIN flagged RETRY: a member of a running job whose coordinator restarted (rest: its job and view). */
void ps_coord_on_rejoin(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const ps_join_t *j,
                        ps_reader_t *rest);

/* Workers' settings must equal the job's: NULL when they do, else the reason (in why). */
const char *ps_coord_settings_differ(const char *job, const char *mine, char *why, size_t cap);
/* Refuses a request with a status and the reason in words. */
void ps_coord_refuse(ps_tp_peer_t *peer, const ps_wire_hdr_t *h, ps_msg_type_t type, pserv_status_t st,
                     const char *why);
/* A JOIN flagged REJOIN: a restarted worker takes the place of a dead one (on_worker_failure
 * continue); it is JOINING until the next barrier, where it is in the job again. */
void ps_coord_on_worker_rejoin(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const ps_join_t *j);

/* "server 1 at 127.0.0.1:4242" */
void ps_coord_member_name(const ps_coord_member_t *m, char *out, size_t cap);
/* The member's state in the view. */
uint8_t *ps_coord_member_state(pserv_coordinator_h c, const ps_coord_member_t *m);

/* Collectives: a barrier arrival / a node broadcast, and releasing them when members are gone. */
void ps_coord_on_barrier(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h);
void ps_coord_barrier_check(pserv_coordinator_h c, pserv_status_t fail);
/* A restarted coordinator hears a worker passed every barrier below `next` (coord_recover.c). */
void ps_coord_barrier_reported(pserv_coordinator_h c, uint64_t next);
/* ... and that it passed every broadcast of its node group below `next`. */
void ps_coord_bcast_reported(pserv_coordinator_h c, uint32_t node, uint64_t next);
/* The node groups' broadcasts from scratch: sizes from the job, none waiting, none done before. */
void ps_coord_nodes_reset(pserv_coordinator_h c);
void ps_coord_on_bcast(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                       size_t len);
/* A worker is gone: its barrier place and its node group's broadcast no longer wait for it. */
void ps_coord_collectives_drop(pserv_coordinator_h c, ps_coord_member_t *m);

/* Failure: a member is dead (why in words); the policy decides between a new view and ABORT. */
void ps_coord_member_dead(pserv_coordinator_h c, ps_coord_member_t *m, const char *why);
/* A worker said LEAVE: done (or, with PS_WIRE_FLAG_FAILED, failed with the payload's reason). */
void ps_coord_on_leave(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                       size_t len);
/* Heartbeats and the silent-member check, every job.heartbeat_ms (ticker thread). */
void ps_coord_tick(void *arg, int64_t now_ms);

/* CHECKPOINT from a server: once a round is written by every live server, older ones go. */
void ps_coord_on_checkpoint(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                            size_t len);
/* Ticker thread, lock not held: removes the rounds older than the newest complete one, if one completed. */
void ps_coord_ckpt_prune(pserv_coordinator_h c);
/* Ticker (lock held): with checkpoints by time, names the next round when one is due. */
void ps_coord_ckpt_tick(pserv_coordinator_h c, int64_t now_ms);
/* create: checks the checkpoint parameters and picks the round to resume from; sets last error. */
pserv_status_t ps_coord_ckpt_setup(pserv_coordinator_h c, const pserv_coordinator_params_t *p);

/* Servers joining a running job and drained out of it (coord_membership.c). */
/* A JOIN from a server once the job has formed: the next rank, and the chunks that balance the load. */
void ps_coord_on_server_join(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const ps_join_t *j);
/* READY from a server: one that joined a running job is LIVE, and chunks move to it. */
void ps_coord_on_ready(pserv_coordinator_h c, ps_coord_member_t *m);
/* DRAIN (any peer): server h->chunk gives every copy away, then leaves; answered then. */
void ps_coord_on_drain(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h);
/* SYNCED from a server: its copy of h->key/h->chunk holds the state; a move to it finishes. */
void ps_coord_on_synced(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h);
/* A server died (before its failover): the moves from or to it end, and its drain is answered. */
void ps_coord_moves_server_gone(pserv_coordinator_h c, ps_coord_member_t *m, const char *why);
/* After a failover: drains still going plan moves again; publishes if the view changed. */
void ps_coord_membership_changed(pserv_coordinator_h c);
/* A peer that is not a member went away: it asked for no drain any more. */
void ps_coord_drain_requester_gone(pserv_coordinator_h c, ps_tp_peer_t *peer);

/* Tensors and views: TENSOR from a worker, and sending the view after every change. */
void ps_coord_on_tensor(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                        size_t len);
/* Bumps the view's version and sends it to every member still in the job. */
void ps_coord_publish(pserv_coordinator_h c);
/* The view's bytes in a fresh buffer (freed by the caller); NULL without memory. */
uint8_t *ps_coord_view_bytes(pserv_coordinator_h c, size_t *len);

#endif
