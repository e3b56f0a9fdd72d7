/*
 * The UCX side of pserv_raw_ucx_am_echo: one UCP context and worker (single thread, busy
 * polling), one endpoint made by a client-server sockaddr connect, two buffers registered once
 * (ucp_mem_map), and one active message with a 16-byte header. No pserv code: this is the
 * baseline pserv's data path is measured against.
 *
 * Receiving: an eager message is copied into the receive buffer inside the AM callback; a
 * rendezvous message is queued by the callback and received into the receive buffer
 * (ucp_am_recv_data_nbx with its memh) by raw_progress(). Either way a message counts as arrived
 * once its bytes are in the receive buffer, and its (length, flags) goes on the arrived ring.
 * Sending: from the send buffer, with its memh. Nothing here blocks without a deadline.
 */
#ifndef PSERV_RAW_UCX_H
#define PSERV_RAW_UCX_H

#include <stddef.h>
#include <stdint.h>

#include <ucp/api/ucp.h>

/* What a message asks of its receiver (the header's flags). */
enum {
    RAW_ECHO = 1u << 0,  /* answer with a message of the same length */
    RAW_ACK = 1u << 1,   /* answer with a header only (bandwidth mode) */
    RAW_FIN = 1u << 2,   /* the client is done: answer with a header only, then end */
    RAW_REPLY = 1u << 3, /* a server's answer */
};

#define RAW_RING 4096 /* arrived / rendezvous entries; a window is at most RAW_RING / 4 */

typedef struct {
    size_t len;
    uint32_t flags;
    void *desc; /* rendezvous descriptor (pending ring only) */
} raw_msg_t;

typedef struct {
    raw_msg_t m[RAW_RING];
    uint64_t head, tail; /* tail - head entries, head is the oldest */
} raw_ring_t;

typedef struct raw raw_t;

typedef struct { /* a rendezvous receive in flight */
    raw_t *r;
    size_t len;
    uint32_t flags;
} raw_rx_t;

struct raw {
    const char *prog;
    ucp_context_h ctx;
    ucp_worker_h worker;
    ucp_listener_h listener;
    ucp_ep_h ep;
    ucp_conn_request_h conn_req; /* set by the listener's callback */
    ucs_status_t ep_status;      /* UCS_OK until the endpoint's error handler runs */
    ucs_status_t failed;         /* the first failed send or receive */
    size_t max_bytes, rndv_min;
    void *recv_buf, *send_buf;
    ucp_mem_h recv_memh, send_memh;
    raw_ring_t pending; /* rendezvous messages not yet received */
    raw_ring_t arrived; /* messages whose bytes are in recv_buf, not yet taken */
    uint64_t n_arrived; /* all arrivals so far */
    uint64_t sends_inflight;
    raw_rx_t rx[RAW_RING]; /* rendezvous receives, slots from the free stack */
    unsigned rx_free[RAW_RING], rx_nfree;
};

/* Context, worker, and both buffers (max_bytes each, registered). 0, or -1 with a message. */
int raw_init(raw_t *r, const char *prog, size_t max_bytes, size_t rndv_min);
/* Undoes raw_init and whatever came after; closes the endpoint (bounded by timeout_s). */
void raw_fini(raw_t *r, double timeout_s);

/* Server: listens on host:port (port 0: any); *bound gets the port. 0, or -1 with a message. */
int raw_listen(raw_t *r, const char *host, uint16_t port, uint16_t *bound);
/* Server: waits up to timeout_s for a client and accepts it. 0, or -1 with a message. */
int raw_accept(raw_t *r, double timeout_s);
/* Client: connects to host:port (the endpoint wires up with the first message). 0 or -1. */
int raw_connect(raw_t *r, const char *host, uint16_t port);

/*
 * Sends len bytes of the send buffer (0: a header only) with flags in the header. 0, or -1
 * with a message (the endpoint failed, or UCX refused the send).
 */
int raw_send(raw_t *r, uint32_t flags, size_t len);

/* One turn: ucp_worker_progress and posting queued rendezvous receives. -1 once anything failed. */
int raw_progress(raw_t *r);

/* Takes the oldest arrived message into *m; 0 if there was none. */
int raw_take(raw_t *r, raw_msg_t *m);

/*
 * Progresses until n_arrived >= want and, with sends_idle, no send is in flight; for at most
 * timeout_s. 0, or -1 with a message naming what did not happen.
 */
int raw_wait(raw_t *r, uint64_t want, int sends_idle, double timeout_s);

/* Seconds on the monotonic clock. */
double raw_now(void);

#endif
