/*
 * What servers and workers share: a transport, the link to the coordinator, joining the job
 * (rank and job description), control calls to the coordinator (barrier, leave) and the
 * handle's last-error text. The role's own receive handler passes coordinator traffic here.
 */
#ifndef PS_MEMBER_H
#define PS_MEMBER_H

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>

#include "deadline.h"
#include "job.h"
#include "transport.h"
#include "send.h"
#include "wire.h"

#define PS_DEFAULT_TIMEOUT_MS 30000

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
    void *ctl_reply;        /* where a reply's payload goes (NODE_BCAST), ctl_reply_len bytes */
    size_t ctl_reply_len;
    uint64_t next_req;
    /* outlives the send, even when the call times out */
    uint8_t ctl_payload[PS_ADDR_MAX + PS_NODE_MAX + PSERV_NODE_BROADCAST_MAX + 16];
    int coord_failed;
    int shutdown; /* the coordinator ended the job */
    uint32_t rank;
    ps_job_t job;
    char last_error[512];
} ps_member_t;

/* Creates the transport (listening on listen_addr when not NULL) with the role's handler. */
pserv_status_t ps_member_init(ps_member_t *m, ps_role_t role, const char *coord_addr, const char *listen_addr,
                              const ps_tp_handler_t *handler);
/* Stops the transport's progress thread: no handler runs after it returns. */
void ps_member_stop(ps_member_t *m);
/* Destroys the transport and frees the member. */
void ps_member_fini(ps_member_t *m);
/*
 * Connects to the coordinator, sends JOIN and waits for the rank and job description.
 * advertised_addr is where workers reach a server (NULL for workers); node is a worker's node
 * group name (NULL or "": a group of its own).
 */
pserv_status_t ps_member_join(ps_member_t *m, const char *advertised_addr, const char *node, int32_t wanted_rank,
                              int timeout_ms);
/* Sends a control request (BARRIER with its sequence, LEAVE) and waits for its reply. */
pserv_status_t ps_member_call(ps_member_t *m, ps_msg_type_t type, uint64_t round, int timeout_ms);
/*
 * A control request with a payload whose reply carries one of the same length back into
 * reply (NODE_BCAST): len <= PSERV_NODE_BROADCAST_MAX.
 */
pserv_status_t ps_member_call_data(ps_member_t *m, ps_msg_type_t type, uint64_t round, const void *data, size_t len,
                                   void *reply, int timeout_ms);
/* Handles a message from the coordinator; returns 1 if it was one. Progress thread only. */
int ps_member_rx(ps_member_t *m, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len);
/* Notes a failed peer; returns 1 if it was the coordinator. Progress thread only. */
int ps_member_peer_failed(ps_member_t *m, ps_tp_peer_t *peer);
/* Records the detail of an error (returned by *_last_error) and logs it; returns status. */
pserv_status_t ps_member_error(ps_member_t *m, pserv_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
