/*
 * Internals of the UCX transport. Everything here belongs to one ps_tp_t.
 *
 * Threading model: the UCX worker is created UCS_THREAD_MODE_SERIALIZED and only the holder of
 * the progress role (tp->role) touches it and every field marked "progress thread": the
 * progress thread holds it except while it sleeps or yields; then ps_tp_send() takes it to send
 * directly, and ps_tp_progress() to progress from a waiting caller. tp_on_progress_thread() is
 * true on the holder. Other threads hand work over through the command queue (tp->lock,
 * tp->cmd_head, flagged in tp->cmd_ready so the loop looks without the lock) and wake the progress
 * thread with an eventfd, only when it sleeps (tp->sleeping): a spinning thread (PSERV_PROGRESS,
 * core/base/progress.h) sees the flag on its next turn. Fields marked "progress thread" are
 * touched by nobody else; fields marked "lock" need tp->lock.
 */
#ifndef PS_TP_INTERNAL_H
#define PS_TP_INTERNAL_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ucp/api/ucp.h>

#include "progress.h"
#include "transport.h"

/* Active message id of every pserv message: the transport moves opaque header + payload. */
#define TP_AM_ID 7
/*
 * Payloads from this size on always go by rendezvous, so the receiver's rx_buffer places
 * them. UCX alone picks eager for any size while an endpoint is still wiring up.
 */
#define TP_RNDV_MIN (256u * 1024)
/* Eager payloads up to this size are copied into the receive descriptor itself. */
#define TP_RX_INLINE 512
/* Bounds of the descriptor free lists: enough for a burst, no unbounded growth. */
#define TP_SEND_FREE_MAX 1024
#define TP_RX_FREE_MAX 256
/* Receive buffer classes (tp_rxbuf.c): 1 KiB << 0 .. 1 KiB << 8 = 256 KiB, the largest eager payload. */
#define TP_RXBUF_MIN_SHIFT 10
#define TP_RXBUF_CLASSES 9
#define TP_RXBUF_CLASS_BYTES (1u << 20)
/* ucp_worker_progress calls per loop turn before queued handlers get a turn. */
#define TP_PROGRESS_BATCH 64
/* ps_tp_stop: time for in-flight sends to finish, then for endpoint closes to complete. */
#define TP_FLUSH_TIMEOUT_MS 1000
/*
 * How long the progress thread sleeps at most while UCX still holds sends or rendezvous receives:
 * a send waiting for room in a shared-memory peer's queue moves only when we progress again, and
 * nothing wakes us when the room appears (TCP would: its socket becomes writable).
 */
#define TP_INFLIGHT_POLL_MS 1
/* A graceful close is one round trip to a live peer; a hung (stopped) one never answers. */
#define TP_CLOSE_TIMEOUT_MS 1000
/* A peer's flush_req/close_req while ucp_*_nbx runs: its callback may come before it returns. */
#define TP_REQ_STARTING ((void *)1)
/* "host:port" or "[v6]:port" */
#define TP_NAME_MAX 96

#define tp_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Intrusive circular doubly linked list (the list head is a sentinel). */
typedef struct tp_link {
    struct tp_link *next, *prev;
} tp_link_t;

static inline void tp_list_init(tp_link_t *head) { head->next = head->prev = head; }
static inline int tp_list_empty(const tp_link_t *head) { return head->next == head; }
static inline int tp_list_linked(const tp_link_t *l) { return l->next != l; }
static inline void tp_list_add(tp_link_t *head, tp_link_t *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}
static inline void tp_list_del(tp_link_t *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = l;
}

/* Work handed to the progress thread. Embedded in the object it concerns: never allocated. */
typedef enum { TP_CMD_SEND, TP_CMD_CONNECT, TP_CMD_CLOSE } tp_cmd_type_t;
typedef struct tp_cmd {
    struct tp_cmd *next;
    tp_cmd_type_t type;
} tp_cmd_t;

typedef enum {
    TP_PEER_NEW,    /* connect queued, no endpoint yet */
    TP_PEER_ACTIVE, /* endpoint usable */
    TP_PEER_FAILED, /* endpoint error seen; the endpoint gets force-closed */
    TP_PEER_CLOSED  /* ps_tp_peer_close() ran; only references keep it alive */
} tp_peer_state_t;

struct ps_tp_peer {
    ps_tp_t *tp;
    _Atomic(void *) ctx;
    /* Set just before peer_failed runs; read by any thread (ps_tp_send fails fast). */
    atomic_int reported;
    /* One for the owner (dropped by close) plus one per queued command, in-flight send,
     * queued receive, pending close request and pending failure report. */
    atomic_uint refs;
    int close_done; /* lock: a blocked ps_tp_peer_close() may return */

    /* progress thread */
    ucp_ep_h ep;
    tp_peer_state_t state;
    pserv_status_t why;      /* failure reason, valid once state is FAILED */
    unsigned inflight_tx;    /* sends handed to UCX, completion not yet delivered */
    unsigned inflight_rx;    /* rendezvous receives started, not yet finished */
    /* UCX requests until their callbacks run: shutdown's flush, the endpoint's close. Each holds
     * a reference. ucp_worker_destroy aborts on a close still in UCX's hands: tp_shutdown
     * releases what is left. */
    void *flush_req;
    void *close_req;
    struct ps_tp_peer *hnext; /* ep -> peer hash chain */
    struct ps_tp_peer *fnext; /* tp->fail_head: failed, peer_failed not yet reported */
    tp_link_t link;           /* tp->peers: every peer not yet freed */

    tp_cmd_t connect_cmd;
    tp_cmd_t close_cmd;
    struct sockaddr_storage addr; /* where to connect (connected peers) */
    socklen_t addrlen;
    char name[TP_NAME_MAX];
};

typedef struct tp_send {
    tp_cmd_t cmd;            /* queued from another thread */
    struct tp_send *next;    /* free list or completion queue */
    tp_link_t active;        /* tp->tx_active while UCX owns it */
    ps_tp_peer_t *peer;
    const void *data;
    size_t len;
    ucp_mem_h memh;
    ps_tp_send_cb_t cb;
    void *arg;
    ucs_status_t ucs_status;
    uint32_t hdr_len;
    uint8_t hdr[PS_TP_MAX_HDR];
} tp_send_t;
_Static_assert(sizeof(tp_send_t) <= 384, "tp_send_t is on the data path: keep it small");

typedef enum {
    TP_RX_EAGER_UCX,  /* data is UCX's, give back with ucp_am_data_release */
    TP_RX_EAGER_COPY, /* data copied into inline_data or a malloc'd buffer */
    TP_RX_RNDV,       /* data still at the sender: rx_buffer, then ucp_am_recv_data_nbx */
    TP_RX_RNDV_DONE   /* rendezvous receive finished (ucs_status says how) */
} tp_rx_kind_t;

typedef struct tp_recv {
    struct tp_recv *next; /* free list or tp->rxq_head */
    tp_link_t active;     /* tp->rx_active while a rendezvous receive runs */
    ps_tp_peer_t *peer;
    tp_rx_kind_t kind;
    void *desc; /* UCX data pointer (EAGER_UCX) or rendezvous descriptor (RNDV) */
    void *data;
    size_t len;
    int data_owned; /* data is ours, from tp_rxbuf_get */
    int delivered;  /* handed to the rx handler */
    ucs_status_t ucs_status;
    uint32_t hdr_len;
    uint8_t hdr[PS_TP_MAX_HDR];
    uint8_t inline_data[TP_RX_INLINE];
} tp_recv_t;

struct ps_tp_mem {
    ps_tp_t *tp;
    tp_link_t link; /* tp->mems */
    ucp_mem_h memh;
    const uint8_t *addr;
    size_t len;
};

static inline int tp_mem_covers(const ps_tp_mem_t *mem, const void *data, size_t len)
{
    const uint8_t *p = data;
    return p >= mem->addr && len <= mem->len && (size_t)(p - mem->addr) <= mem->len - len;
}

typedef struct tp_accept {
    struct tp_accept *next;
    ucp_conn_request_h req;
} tp_accept_t;

struct ps_tp {
    ps_tp_handler_t h;
    ucp_context_h context;
    ucp_worker_h worker;
    ucp_listener_h listener;
    uint16_t port;
    int worker_fd; /* ucp_worker_get_efd */
    int wake_fd;   /* eventfd: commands queued or stop requested */
    pthread_t thread;
    int joined; /* the progress thread has been joined (the ps_tp_stop/destroy caller's) */
    ps_progress_t progress; /* how the progress thread waits */
    /* Set (under lock) when commands are queued or stop is asked; read without it by the loop. */
    atomic_int cmd_ready;

    /* lock */
    pthread_mutex_t role; /* the progress role: see the top of this file */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* ps_tp_peer_close() waiters */
    tp_cmd_t *cmd_head, **cmd_tail;
    int wake_pending; /* wake_fd already written since the last drain */
    int sleeping;     /* the progress thread is (about to be) in poll: posting must wake it */
    int stop;         /* ps_tp_stop() called */
    int cmds_closed;  /* the progress thread ran its last drain: posting fails */
    tp_send_t *send_free;
    unsigned send_free_n;
    tp_link_t mems; /* live registrations: ucp_cleanup aborts on mapped memory */

    /* progress thread */
    int closing; /* shutdown started: sends fail; only send callbacks still run */
    tp_link_t peers;
    ps_tp_peer_t **table; /* ep -> peer */
    size_t table_size, table_count;
    tp_send_t *done_head, **done_tail; /* send completions to deliver */
    tp_recv_t *rxq_head, **rxq_tail;   /* receives to deliver or to start */
    ps_tp_peer_t *fail_head, **fail_tail;
    tp_accept_t *acc_head, **acc_tail;
    tp_link_t tx_active; /* sends UCX owns */
    tp_link_t rx_active; /* rendezvous receives UCX owns */
    tp_recv_t *rx_free;
    unsigned rx_free_n;
    struct tp_rxbuf *rxbuf_free[TP_RXBUF_CLASSES]; /* tp_rxbuf.c */
    unsigned rxbuf_count[TP_RXBUF_CLASSES];
    tp_recv_t *rx_current; /* rendezvous receive whose rx_buffer handler is running */
    unsigned flushing; /* flush requests of shutdown not yet complete */
    unsigned closing_eps; /* ucp_ep_close_nbx requests not yet complete */
};

/* tp_status.c */
pserv_status_t tp_status(ucs_status_t st);

/* tp_context.c */
/* 1 if this thread holds the progress role of tp (the progress thread, or a direct sender). */
int tp_on_progress_thread(const ps_tp_t *tp);
/* Takes the progress role if it is free (the role this thread held before goes to *prev). */
int tp_role_try(ps_tp_t *tp, const ps_tp_t **prev);
/* Gives the role back, waking a sleeping progress thread for whatever was left queued or in flight. */
void tp_role_leave(ps_tp_t *tp, const ps_tp_t *prev);
/* Queues cmd for the progress thread; PSERV_ERR_SHUTDOWN once it no longer takes commands. */
pserv_status_t tp_cmd_post(ps_tp_t *tp, tp_cmd_t *cmd);

/* tp_peer.c */
pserv_status_t tp_listener_create(ps_tp_t *tp, const char *host, uint16_t port);
ps_tp_peer_t *tp_peer_alloc(ps_tp_t *tp);
void tp_peer_ref(ps_tp_peer_t *peer);
void tp_peer_unref(ps_tp_peer_t *peer);
ps_tp_peer_t *tp_peer_by_ep(ps_tp_t *tp, ucp_ep_h ep);
void tp_peer_connect_run(ps_tp_peer_t *peer);
void tp_peer_close_run(ps_tp_peer_t *peer);
void tp_conn_handler(ucp_conn_request_h req, void *arg);
void tp_accept_dispatch(ps_tp_t *tp);
void tp_fail_dispatch(ps_tp_t *tp);
/* Every peer not yet freed, each with a reference taken; NULL array when none or no memory. */
size_t tp_peer_snapshot(ps_tp_t *tp, ps_tp_peer_t ***peers);
/* Shutdown: closes every endpoint, gracefully unless force. */
void tp_peer_close_all(ps_tp_t *tp, int force);
/* Shutdown, just before ucp_worker_destroy: releases the flush and close requests still
 * pending (their callbacks will not run) and drops what those callbacks would have. */
void tp_peer_release_requests(ps_tp_t *tp);
/* Frees every peer; only after the progress thread has exited. */
void tp_peer_free_all(ps_tp_t *tp);
void tp_peer_table_free(ps_tp_t *tp);

/* tp_rxbuf.c: payload buffers of the receive side (progress thread). */
void *tp_rxbuf_get(ps_tp_t *tp, size_t len);
void tp_rxbuf_put(ps_tp_t *tp, void *buf, size_t len);
void tp_rxbuf_free_all(ps_tp_t *tp);

/* tp_mem.c: releases registrations the user left behind, before ucp_cleanup. */
void tp_mem_release_all(ps_tp_t *tp);

/* tp_am.c */
pserv_status_t tp_am_init(ps_tp_t *tp);
/* Hands a send to UCX (role held). A direct sender (direct = 1) finishes a callback-less send
 * that completed at once right there, instead of queueing its completion. */
void tp_send_run(ps_tp_t *tp, tp_send_t *sd, int direct);
void tp_send_dispatch(ps_tp_t *tp);
void tp_rx_dispatch(ps_tp_t *tp);
/* Gives back the receives queued for peer (all of them, or only not-yet-started rendezvous). */
void tp_rx_purge_peer(ps_tp_t *tp, ps_tp_peer_t *peer, int rndv_only);
/* After ucp_worker_destroy: completes or frees whatever UCX never finished. */
void tp_am_abandon(ps_tp_t *tp);
void tp_am_free_all(ps_tp_t *tp);

#endif
