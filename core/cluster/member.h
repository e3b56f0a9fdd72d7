/*
 * What servers and workers share: a transport, the link to the coordinator, joining the job
 * (rank, job description and the first cluster view), control calls to the coordinator
 * (barrier, leave, tensor placement), the installed cluster view, heartbeats, the end of the
 * job (SHUTDOWN, ABORT, or losing everyone) and the handle's last-error text. The role's own
 * receive handler passes coordinator traffic here.
 *
 * Heartbeats: once joined, a ticker thread sends the coordinator a HEARTBEAT every
 * job.heartbeat_ms. A member that has heard neither the coordinator nor any peer for
 * job.failure_timeout_ms is cut off (a partition): it marks itself aborted, so its calls fail and
 * the process ends instead of running forever.
 */
#ifndef PS_MEMBER_H
#define PS_MEMBER_H

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>

#include "deadline.h"
#include "job.h"
#include "progress.h"
#include "send.h"
#include "ticker.h"
#include "transport.h"
#include "view.h"
#include "wire.h"

#define PS_DEFAULT_TIMEOUT_MS 30000

/* What a role hears about the job from its member; both run on the progress thread, lock not held. */
typedef struct {
    void *arg;
    /* A newer view is installed (old is the one it replaced, NULL at join). May be NULL. */
    void (*view_changed)(void *arg, const ps_view_t *old, const ps_view_t *now);
    /* The coordinator aborted the job (the reason is in last_error). May be NULL. */
    void (*aborted)(void *arg);
    /* Servers joined the job (ranks old_n .. new_n - 1, addresses in job.servers once this
     * succeeds): called with the lock held, before the view that has them is installed, so the
     * role grows what it keeps per server. A failure refuses the view. May be NULL. */
    pserv_status_t (*servers_added)(void *arg, uint32_t old_n, uint32_t new_n);
    /* A restarted coordinator took this member back: what it may have missed is said again. May be NULL. */
    void (*rejoined)(void *arg);
    /* The coordinator named a checkpoint round (CHECKPOINT_AT, checkpoints by time). May be NULL. */
    void (*checkpoint_at)(void *arg, uint64_t round);
} ps_member_hooks_t;

/* Where a control call's reply payload goes, and what came back. */
typedef struct {
    void *buf;      /* NULL: no payload expected */
    size_t cap;
    size_t len;     /* bytes the reply carried (at most cap are copied) */
    uint64_t round; /* the reply header's round */
    uint32_t chunk; /* ... chunk and offset (a BARRIER_REPLY's place among the workers that met, and how many) */
    uint64_t offset;
    int answered;   /* the coordinator answered: the fields above are its reply's */
} ps_ctl_reply_t;

/* How long a member waits for a lost coordinator to come back before it gives the job up. */
#define PS_MEMBER_COORD_ABSENCE_MS(failure_timeout_ms) ((int64_t)(failure_timeout_ms) * 20 > 60000 ? (int64_t)(failure_timeout_ms) * 20 : 60000)

typedef struct {
    ps_role_t role;
    ps_tp_t *tp;
    ps_tp_peer_t *coord;
    char coord_addr[PS_ADDR_MAX];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* The one control call to the coordinator in flight (JOIN, BARRIER, LEAVE, NODE_BCAST). */
    uint16_t ctl_expect;
    uint64_t ctl_req;
    int ctl_done;
    pserv_status_t ctl_status;
    ps_ctl_reply_t *ctl_reply; /* where the reply's payload goes, or NULL */
    uint64_t next_req;
    /* outlives the send, even when the call times out */
    uint8_t ctl_payload[PS_ADDR_MAX + PS_NODE_MAX + PS_SETTINGS_MAX + PSERV_NODE_BROADCAST_MAX + 32];
    int coord_failed;
    /* A restarted coordinator (coord_recover.c): once the job has formed, a lost coordinator is
     * dialled again every heartbeat and joined with JOIN flagged RETRY (our JOIN body, then the job
     * and our view); control calls wait for it meanwhile. rejoin_round is the role's place in the
     * job's collectives (a worker's next barrier), rejoin_bcast a worker's next node broadcast. */
    int rejoining;
    uint64_t rejoin_req, rejoin_round, rejoin_bcast;
    uint8_t join_body[PS_WIRE_JOIN_MAX];
    size_t join_len;
    uint32_t join_flags;  /* set before ps_member_join: PS_WIRE_FLAG_REJOIN for a worker taking a dead one's place */
    uint64_t join_round;  /* the JOIN_REPLY's round: the job's next barrier */
    int shutdown; /* the coordinator ended the job */
    int aborted;  /* the job failed (ABORT from the coordinator, or cut off from everyone): last_error says why */
    uint32_t rank;
    ps_job_t job; /* job.servers has room for PS_VIEW_MAX_SERVERS: servers that join are added in place */
    ps_view_t *view; /* the installed view: swapped under lock on the progress thread, which reads it freely */
    ps_member_hooks_t hooks;
    ps_ticker_t ticker;
    ps_progress_t progress; /* PSERV_PROGRESS: how this member's data-path threads wait */
    int64_t last_coord_ms, last_any_ms; /* when we last heard the coordinator / anyone (atomics) */
    uint64_t newest_round; /* atomic: the role's newest round (a server's chunks), sent in heartbeats */
    char last_error[PS_WIRE_REASON_MAX + 128];
} ps_member_t;

/* Creates the transport (listening on listen_addr when not NULL) with the role's handler. */
pserv_status_t ps_member_init(ps_member_t *m, ps_role_t role, const char *coord_addr, const char *listen_addr,
                              const ps_tp_handler_t *handler, const ps_member_hooks_t *hooks);
/* Stops the heartbeats and the transport's progress thread: no handler runs after it returns. */
void ps_member_stop(ps_member_t *m);
/* Destroys the transport and frees the member. */
void ps_member_fini(ps_member_t *m);
/*
 * Connects to the coordinator, sends JOIN and waits for the rank, the job description and the
 * first view, then starts the heartbeats. advertised_addr is where workers reach a server (NULL
 * for workers); node is a worker's node group name (NULL or "": a group of its own); settings
 * are a worker's job settings, which must equal the first worker's (NULL: none).
 */
pserv_status_t ps_member_join(ps_member_t *m, const char *advertised_addr, const char *node, const char *settings,
                              int32_t wanted_rank, int timeout_ms);
/* Sends a control request (BARRIER with its sequence, LEAVE) and waits for its reply. */
pserv_status_t ps_member_call(ps_member_t *m, ps_msg_type_t type, uint64_t round, int timeout_ms);
/*
 * A control request with flags and a payload (len <= PSERV_NODE_BROADCAST_MAX); the reply's
 * payload and round go to reply (may be NULL). Fails with PSERV_ERR_JOB_FAILED once aborted.
 */
pserv_status_t ps_member_call_data(ps_member_t *m, ps_msg_type_t type, uint32_t flags, uint64_t round,
                                   const void *data, size_t len, ps_ctl_reply_t *reply, int timeout_ms);
/* Waits (lock held) until the installed view is at least `version`, or the job failed. */
pserv_status_t ps_member_wait_view(ps_member_t *m, uint32_t version, const ps_deadline_t *deadline);
/* Notes that a message arrived from anyone (for the cut-off check). Any thread. */
void ps_member_heard(ps_member_t *m);
/* Handles a message from the coordinator; returns 1 if it was one. Progress thread only. */
int ps_member_rx(ps_member_t *m, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len);
/* Notes a failed peer; returns 1 if it was the coordinator. Progress thread only. */
int ps_member_peer_failed(ps_member_t *m, ps_tp_peer_t *peer);
/* Sends the coordinator a message that wants no answer (READY, SYNCED, CHECKPOINT); data (NULL, or
 * malloc'd) is the message's from here on. PSERV_ERR_UNREACHABLE while there is no coordinator. */
pserv_status_t ps_member_notify(ps_member_t *m, const ps_wire_hdr_t *h, void *data, size_t len);
/* Records the detail of an error (returned by *_last_error) and logs it; returns status. */
pserv_status_t ps_member_error(ps_member_t *m, pserv_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
