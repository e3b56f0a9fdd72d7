/*
 * The transport interface that core sees. transport/ implements it with UCX (ucp active
 * messages); nothing else includes UCX headers.
 *
 * One ps_tp_t is one UCX worker with its own progress thread, an optional listener, and the
 * peers (endpoints) it connected to or accepted. A message is a small header (opaque bytes,
 * copied by the transport, at most PS_TP_MAX_HDR) plus an optional payload.
 *
 * Threading: one thread at a time holds the transport's progress role: its progress thread,
 * except while that sleeps or yields, when a caller of ps_tp_send() (which then sends straight
 * from its own thread) or of ps_tp_progress() may take it. Handlers and send callbacks run on the
 * holder, one at a time, never inside a UCX callback, so a handler may call ps_tp_send().
 * ps_tp_send() never runs a callback or handler itself (except the synchronous-failure case
 * below). ps_tp_send(), ps_tp_connect(), ps_tp_progress() and the peer accessors are
 * thread-safe. Handlers must not block for long: they hold up all traffic of this ps_tp_t.
 * How the progress thread waits for work follows PSERV_PROGRESS (core/base/progress.h).
 *
 * Ordering and completion: a rendezvous message may be delivered after later eager messages
 * of the same peer. A send's success means UCX finished it, not that the receiver accepted
 * it. ps_tp_peer_close() from another thread blocks until the close has run. Memory must be
 * deregistered before ps_tp_destroy() (ps_tp_stop() first, if handlers still use it).
 */
#ifndef PS_TRANSPORT_H
#define PS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

#define PS_TP_MAX_HDR 256

typedef struct ps_tp ps_tp_t;
typedef struct ps_tp_peer ps_tp_peer_t;
typedef struct ps_tp_mem ps_tp_mem_t;

typedef struct {
    void *arg; /* passed to every handler */
    /*
     * A message whose payload is not yet received (UCX rendezvous) has arrived: choose where
     * the payload lands. Set *buf to a buffer of at least len bytes to receive into it (no
     * copy), leave it NULL to let the transport allocate one, or return an error to drop the
     * message (the transport discards the payload). May be NULL: the transport allocates.
     */
    pserv_status_t (*rx_buffer)(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len,
                                size_t len, void **buf);
    /*
     * A whole message. data/len is the payload (data may be the buffer rx_buffer chose); it is
     * valid only during the call. Required.
     */
    void (*rx)(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len);
    /*
     * A buffer rx_buffer chose will not be delivered to rx (the sender failed mid-transfer, or
     * the peer or transport closed): the caller may reuse it. May be NULL.
     */
    void (*rx_abort)(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *buf);
    /* A peer connected to our listener. May be NULL. */
    void (*peer_accepted)(void *arg, ps_tp_peer_t *peer);
    /*
     * A peer failed or disconnected (UCX endpoint error). Sends in flight to it complete with
     * an error first. Called once per peer. The peer stays valid until ps_tp_peer_close().
     * May be NULL.
     */
    void (*peer_failed)(void *arg, ps_tp_peer_t *peer, pserv_status_t why);
} ps_tp_handler_t;

typedef struct {
    const char *listen_host; /* NULL: no listener */
    uint16_t listen_port;    /* 0: any free port */
    ps_tp_handler_t handler;
} ps_tp_params_t;

/* Send completion: runs on the progress thread (or in the caller if the send failed at once). */
typedef void (*ps_tp_send_cb_t)(void *arg, pserv_status_t status);

pserv_status_t ps_tp_create(const ps_tp_params_t *params, ps_tp_t **tp);
/*
 * Stops the progress thread: no handler runs after it returns, while memory registrations and
 * peers stay valid, so callers can free what handlers used (deregistering its memory) before
 * ps_tp_destroy(). Not from a handler.
 */
void ps_tp_stop(ps_tp_t *tp);
/* Stops the progress thread (if still running), closes every peer and the listener, frees everything. */
void ps_tp_destroy(ps_tp_t *tp);
/*
 * Progresses the transport from the calling thread if no other thread holds the progress role:
 * delivers what is queued and polls UCX once; handlers run here then. Returns 1 if anything
 * happened, 0 if nothing did or the role was taken. For a caller that spins on a result (a wait
 * in spin mode): its reply is handled without a hand-off to the progress thread. Not while
 * holding a lock a handler takes.
 */
int ps_tp_progress(ps_tp_t *tp);
/* The port the listener is bound to. */
uint16_t ps_tp_listen_port(const ps_tp_t *tp);

/*
 * Starts connecting to host:port and returns the peer at once. A failure to connect shows up
 * as peer_failed (and as errors of sends to it); callers confirm reachability with a
 * request/reply of their own under a timeout.
 */
pserv_status_t ps_tp_connect(ps_tp_t *tp, const char *host, uint16_t port, ps_tp_peer_t **peer);
/* Closes the endpoint and frees the peer; sends still in flight complete with an error. */
void ps_tp_peer_close(ps_tp_peer_t *peer);
/* Opaque pointer for core's per-peer state. */
void ps_tp_peer_set_ctx(ps_tp_peer_t *peer, void *ctx);
void *ps_tp_peer_get_ctx(const ps_tp_peer_t *peer);
/* "host:port" of the peer as known (the address connected to, or the remote address). */
const char *ps_tp_peer_name(const ps_tp_peer_t *peer);
/* 1 once peer_failed was reported for it. */
int ps_tp_peer_is_failed(const ps_tp_peer_t *peer);

/*
 * Sends hdr (copied) and payload data/len (len may be 0) to the peer. data must stay valid
 * until cb. mem, if not NULL, is a registration that covers data. Large payloads go by
 * rendezvous (zero copy). cb is called exactly once (if non-NULL), also when this function
 * returns an error.
 */
pserv_status_t ps_tp_send(ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, const void *data,
                          size_t len, ps_tp_mem_t *mem, ps_tp_send_cb_t cb, void *arg);

/* Registers (pins and maps) memory for zero-copy transfers. */
pserv_status_t ps_tp_mem_register(ps_tp_t *tp, void *addr, size_t len, ps_tp_mem_t **mem);
void ps_tp_mem_deregister(ps_tp_mem_t *mem);

#endif
