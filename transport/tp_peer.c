/*
 * Peers: the listener and accepted connections, outgoing connects, the ep -> peer table that
 * maps a message's reply_ep to its sender, endpoint errors and closing.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "log.h"
#include "tp_internal.h"

ps_tp_peer_t *tp_peer_alloc(ps_tp_t *tp)
{
    ps_tp_peer_t *peer = calloc(1, sizeof(*peer));
    if (peer == NULL) return NULL;
    peer->tp = tp;
    atomic_init(&peer->refs, 1);
    atomic_init(&peer->reported, 0);
    atomic_init(&peer->ctx, NULL);
    peer->state = TP_PEER_NEW;
    peer->connect_cmd.type = TP_CMD_CONNECT;
    peer->close_cmd.type = TP_CMD_CLOSE;
    pthread_mutex_lock(&tp->lock);
    tp_list_add(&tp->peers, &peer->link);
    pthread_mutex_unlock(&tp->lock);
    return peer;
}

void tp_peer_ref(ps_tp_peer_t *peer)
{
    atomic_fetch_add_explicit(&peer->refs, 1, memory_order_relaxed);
}

void tp_peer_unref(ps_tp_peer_t *peer)
{
    if (atomic_fetch_sub_explicit(&peer->refs, 1, memory_order_acq_rel) != 1) return;
    ps_tp_t *tp = peer->tp;
    pthread_mutex_lock(&tp->lock);
    tp_list_del(&peer->link);
    pthread_mutex_unlock(&tp->lock);
    free(peer);
}

size_t tp_peer_snapshot(ps_tp_t *tp, ps_tp_peer_t ***out)
{
    size_t n = 0, cap = 0;
    ps_tp_peer_t **peers = NULL;

    pthread_mutex_lock(&tp->lock);
    for (tp_link_t *l = tp->peers.next; l != &tp->peers; l = l->next) cap++;
    if (cap > 0 && (peers = malloc(cap * sizeof(*peers))) != NULL) {
        for (tp_link_t *l = tp->peers.next; l != &tp->peers; l = l->next) {
            peers[n] = tp_container_of(l, ps_tp_peer_t, link);
            tp_peer_ref(peers[n++]);
        }
    }
    pthread_mutex_unlock(&tp->lock);
    if (cap > 0 && peers == NULL) ps_error("transport: no memory to walk %zu peers", cap);
    *out = peers;
    return n;
}

/* ---- ep -> peer table (progress thread) ---- */

static size_t tp_table_slot(const ps_tp_t *tp, const void *ep)
{
    uint64_t x = (uint64_t)(uintptr_t)ep;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (tp->table_size - 1);
}

static pserv_status_t tp_table_insert(ps_tp_t *tp, ps_tp_peer_t *peer)
{
    if (tp->table_count + 1 > tp->table_size) {
        size_t old_size = tp->table_size, size = old_size ? old_size * 2 : 64;
        ps_tp_peer_t **old = tp->table, **table = calloc(size, sizeof(*table));
        if (table == NULL) return PSERV_ERR_NO_MEMORY;
        tp->table = table;
        tp->table_size = size;
        for (size_t i = 0; i < old_size; i++) {
            for (ps_tp_peer_t *p = old[i], *next; p != NULL; p = next) {
                next = p->hnext;
                size_t s = tp_table_slot(tp, p->ep);
                p->hnext = table[s];
                table[s] = p;
            }
        }
        free(old);
    }
    size_t s = tp_table_slot(tp, peer->ep);
    peer->hnext = tp->table[s];
    tp->table[s] = peer;
    tp->table_count++;
    return PSERV_OK;
}

static void tp_table_remove(ps_tp_t *tp, ps_tp_peer_t *peer)
{
    if (tp->table_size == 0) return;
    for (ps_tp_peer_t **pp = &tp->table[tp_table_slot(tp, peer->ep)]; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == peer) {
            *pp = peer->hnext;
            peer->hnext = NULL;
            tp->table_count--;
            return;
        }
    }
}

ps_tp_peer_t *tp_peer_by_ep(ps_tp_t *tp, ucp_ep_h ep)
{
    if (tp->table_size == 0 || ep == NULL) return NULL;
    for (ps_tp_peer_t *p = tp->table[tp_table_slot(tp, ep)]; p != NULL; p = p->hnext)
        if (p->ep == ep) return p;
    return NULL;
}

void tp_peer_table_free(ps_tp_t *tp)
{
    free(tp->table);
    tp->table = NULL;
    tp->table_size = tp->table_count = 0;
}

/* ---- endpoints (progress thread) ---- */

static void tp_ep_closed_cb(void *req, ucs_status_t st, void *user)
{
    ps_tp_peer_t *peer = user;
    peer->close_req = NULL;
    peer->tp->closing_eps--;
    ucp_request_free(req);
    tp_peer_unref(peer);
}

/*
 * A forced close completes the endpoint's outstanding requests with an error, which is what
 * both ps_tp_peer_close() and a failed peer need; a graceful one tells the remote side.
 * Queued rendezvous receives of the peer must already be declined: declining needs the
 * endpoint.
 */
static void tp_ep_close(ps_tp_peer_t *peer, int force)
{
    ps_tp_t *tp = peer->tp;
    ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK |
                                               UCP_OP_ATTR_FIELD_USER_DATA,
                               .flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0,
                               .cb.send = tp_ep_closed_cb,
                               .user_data = peer};
    if (peer->ep == NULL) return;
    tp_table_remove(tp, peer);
    /* Counted before the call: the callback may run before ucp_ep_close_nbx returns. */
    tp->closing_eps++;
    tp_peer_ref(peer);
    peer->close_req = TP_REQ_STARTING;
    ucs_status_ptr_t sp = ucp_ep_close_nbx(peer->ep, &prm);
    peer->ep = NULL;
    if (UCS_PTR_IS_PTR(sp)) {
        if (peer->close_req != NULL) peer->close_req = sp; /* NULL: its callback already ran */
        return;
    }
    peer->close_req = NULL;
    if (UCS_PTR_IS_ERR(sp))
        ps_debug("closing endpoint to %s: %s", peer->name, ucs_status_string(UCS_PTR_STATUS(sp)));
    tp->closing_eps--;
    tp_peer_unref(peer);
}

/* Marks the peer failed and queues its peer_failed report (sent once its operations end). */
static void tp_peer_set_failed(ps_tp_peer_t *peer, pserv_status_t why)
{
    ps_tp_t *tp = peer->tp;
    if (peer->state == TP_PEER_FAILED || peer->state == TP_PEER_CLOSED) return;
    peer->state = TP_PEER_FAILED;
    peer->why = why;
    tp_peer_ref(peer);
    peer->fnext = NULL;
    *tp->fail_tail = peer;
    tp->fail_tail = &peer->fnext;
}

static pserv_status_t tp_fail_reason(ucs_status_t st)
{
    pserv_status_t why = tp_status(st);
    /* Core tells "never got there" from "went away"; the UCX detail is in the log. */
    return why == PSERV_ERR_UNREACHABLE ? why : PSERV_ERR_PEER_FAILED;
}

/* UCX callback: only record; closing the endpoint and reporting wait for tp_fail_dispatch. */
static void tp_ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t st)
{
    ps_tp_peer_t *peer = arg;
    if (peer->state != TP_PEER_ACTIVE) return;
    if (!peer->tp->closing) ps_info("transport: peer %s failed: %s", peer->name, ucs_status_string(st));
    tp_peer_set_failed(peer, tp_fail_reason(st));
}

static ucs_status_t tp_ep_create(ps_tp_peer_t *peer, ucp_conn_request_h req)
{
    ucp_ep_params_t p;
    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_NAME;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = tp_ep_err_cb;
    p.err_handler.arg = peer;
    p.name = peer->name;
    if (req != NULL) {
        p.field_mask |= UCP_EP_PARAM_FIELD_CONN_REQUEST;
        p.conn_request = req;
    } else {
        p.field_mask |= UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
        p.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        p.sockaddr.addr = (const struct sockaddr *)&peer->addr;
        p.sockaddr.addrlen = peer->addrlen;
    }
    return ucp_ep_create(peer->tp->worker, &p, &peer->ep);
}

/* After ucp_ep_create succeeded: makes the peer findable by its endpoint. */
static pserv_status_t tp_peer_activate(ps_tp_peer_t *peer)
{
    if (tp_table_insert(peer->tp, peer) < 0) {
        ps_error("transport: no memory for the peer table");
        tp_ep_close(peer, 1);
        return PSERV_ERR_NO_MEMORY;
    }
    peer->state = TP_PEER_ACTIVE;
    return PSERV_OK;
}

void tp_peer_connect_run(ps_tp_peer_t *peer)
{
    if (peer->state != TP_PEER_NEW) return; /* closed before the connect got its turn */
    if (peer->tp->closing) {
        tp_peer_set_failed(peer, PSERV_ERR_SHUTDOWN);
        return;
    }
    ucs_status_t st = tp_ep_create(peer, NULL);
    if (st != UCS_OK) {
        peer->ep = NULL;
        ps_warn("transport: cannot connect to %s: %s", peer->name, ucs_status_string(st));
        tp_peer_set_failed(peer, tp_fail_reason(st));
        return;
    }
    if (tp_peer_activate(peer) < 0) tp_peer_set_failed(peer, PSERV_ERR_NO_MEMORY);
}

void tp_peer_close_run(ps_tp_peer_t *peer)
{
    if (peer->state == TP_PEER_CLOSED) return;
    peer->state = TP_PEER_CLOSED;
    tp_rx_purge_peer(peer->tp, peer, 0);
    tp_ep_close(peer, 1);
    tp_peer_unref(peer); /* the owner's reference */
}

void tp_peer_close_all(ps_tp_t *tp, int force)
{
    ps_tp_peer_t **peers;
    size_t n = tp_peer_snapshot(tp, &peers);
    for (size_t i = 0; i < n; i++) {
        if (peers[i]->ep != NULL) {
            tp_rx_purge_peer(tp, peers[i], 0);
            /* UCX 1.13 asserts when a graceful close meets a rendezvous receive in flight. */
            tp_ep_close(peers[i], force || peers[i]->inflight_rx > 0);
        }
        tp_peer_unref(peers[i]);
    }
    free(peers);
}

void tp_peer_release_requests(ps_tp_t *tp)
{
    ps_tp_peer_t **peers;
    size_t n = tp_peer_snapshot(tp, &peers);
    for (size_t i = 0; i < n; i++) {
        ps_tp_peer_t *peer = peers[i];
        if (peer->flush_req != NULL) {
            ucp_request_free(peer->flush_req);
            peer->flush_req = NULL;
            tp->flushing--;
            tp_peer_unref(peer);
        }
        if (peer->close_req != NULL) {
            ucp_request_free(peer->close_req);
            peer->close_req = NULL;
            tp->closing_eps--;
            tp_peer_unref(peer);
        }
        tp_peer_unref(peer);
    }
    free(peers);
}

void tp_peer_free_all(ps_tp_t *tp)
{
    /* The progress thread is gone: whatever references remain are ours to drop. */
    while (!tp_list_empty(&tp->peers)) {
        ps_tp_peer_t *peer = tp_container_of(tp->peers.next, ps_tp_peer_t, link);
        tp_list_del(&peer->link);
        free(peer);
    }
}

void tp_fail_dispatch(ps_tp_t *tp)
{
    ps_tp_peer_t *peer = tp->fail_head, *next;
    tp->fail_head = NULL;
    tp->fail_tail = &tp->fail_head;

    for (; peer != NULL; peer = next) {
        next = peer->fnext;
        if (peer->ep != NULL) {
            tp_rx_purge_peer(tp, peer, 1);
            tp_ep_close(peer, 1);
        }
        if (peer->state != TP_PEER_CLOSED && (peer->inflight_tx > 0 || peer->inflight_rx > 0)) {
            /* Report only after its sends completed and its receives ended. */
            peer->fnext = NULL;
            *tp->fail_tail = peer;
            tp->fail_tail = &peer->fnext;
            continue;
        }
        if (peer->state != TP_PEER_CLOSED) {
            atomic_store_explicit(&peer->reported, 1, memory_order_release);
            if (!tp->closing && tp->h.peer_failed != NULL) tp->h.peer_failed(tp->h.arg, peer, peer->why);
        }
        tp_peer_unref(peer);
    }
}

/* ---- listener and accepted peers ---- */

static void tp_sockaddr_name(const struct sockaddr *sa, socklen_t len, char *name, size_t size)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(name, size, "unknown");
        return;
    }
    snprintf(name, size, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/* UCX callback: the endpoint is created outside, in tp_accept_dispatch. */
void tp_conn_handler(ucp_conn_request_h req, void *arg)
{
    ps_tp_t *tp = arg;
    tp_accept_t *a = malloc(sizeof(*a));
    if (a == NULL) {
        ps_error("transport: no memory for a connection request: rejected");
        ucp_listener_reject(tp->listener, req);
        return;
    }
    a->req = req;
    a->next = NULL;
    *tp->acc_tail = a;
    tp->acc_tail = &a->next;
}

void tp_accept_dispatch(ps_tp_t *tp)
{
    tp_accept_t *a;
    while ((a = tp->acc_head) != NULL) {
        ucp_conn_request_h req = a->req;
        tp->acc_head = a->next;
        if (tp->acc_head == NULL) tp->acc_tail = &tp->acc_head;
        free(a);

        ps_tp_peer_t *peer = tp->closing ? NULL : tp_peer_alloc(tp);
        if (peer == NULL) {
            if (!tp->closing) ps_error("transport: no memory for an accepted peer: rejected");
            ucp_listener_reject(tp->listener, req);
            continue;
        }
        ucp_conn_request_attr_t attr = {.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR};
        if (ucp_conn_request_query(req, &attr) == UCS_OK)
            tp_sockaddr_name((const struct sockaddr *)&attr.client_address, sizeof(attr.client_address),
                             peer->name, sizeof(peer->name));
        else
            snprintf(peer->name, sizeof(peer->name), "unknown");

        ucs_status_t st = tp_ep_create(peer, req);
        if (st != UCS_OK) {
            /* UCX answers the request itself when the endpoint cannot be made. */
            ps_warn("transport: cannot accept %s: %s", peer->name, ucs_status_string(st));
            peer->ep = NULL;
            tp_peer_unref(peer);
            continue;
        }
        if (tp_peer_activate(peer) < 0) {
            tp_peer_unref(peer);
            continue;
        }
        if (tp->h.peer_accepted != NULL) tp->h.peer_accepted(tp->h.arg, peer);
    }
}

pserv_status_t tp_listener_create(ps_tp_t *tp, const char *host, uint16_t port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res, *ai;
    char serv[8];
    ucs_status_t st = UCS_ERR_INVALID_ADDR;

    snprintf(serv, sizeof(serv), "%u", (unsigned)port);
    int rc = getaddrinfo(host[0] != '\0' ? host : NULL, serv, &hints, &res);
    if (rc != 0) {
        ps_error("transport: cannot resolve listen address %s: %s", host, gai_strerror(rc));
        return PSERV_ERR_INVALID_ARG;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        ucp_listener_params_t lp = {.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR |
                                                  UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
                                    .sockaddr = {.addr = ai->ai_addr, .addrlen = ai->ai_addrlen},
                                    .conn_handler = {.cb = tp_conn_handler, .arg = tp}};
        if ((st = ucp_listener_create(tp->worker, &lp, &tp->listener)) == UCS_OK) break;
    }
    freeaddrinfo(res);
    if (st != UCS_OK) {
        ps_error("transport: cannot listen on %s:%u: %s", host, (unsigned)port, ucs_status_string(st));
        /* UCX says "busy" for a port another socket holds: name it as the user knows it. */
        return st == UCS_ERR_BUSY ? PSERV_ERR_ADDR_IN_USE : tp_status(st);
    }

    ucp_listener_attr_t attr = {.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR};
    if ((st = ucp_listener_query(tp->listener, &attr)) != UCS_OK) {
        ps_error("transport: ucp_listener_query failed: %s", ucs_status_string(st));
        ucp_listener_destroy(tp->listener);
        tp->listener = NULL;
        return tp_status(st);
    }
    if (attr.sockaddr.ss_family == AF_INET)
        tp->port = ntohs(((const struct sockaddr_in *)&attr.sockaddr)->sin_port);
    else
        tp->port = ntohs(((const struct sockaddr_in6 *)&attr.sockaddr)->sin6_port);
    return PSERV_OK;
}

/* ---- public ---- */

static pserv_status_t tp_resolve(ps_tp_peer_t *peer, const char *host, uint16_t port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    char serv[8];

    snprintf(serv, sizeof(serv), "%u", (unsigned)port);
    int rc = getaddrinfo(host, serv, &hints, &res);
    if (rc != 0) {
        ps_warn("transport: cannot resolve %s: %s", host, gai_strerror(rc));
        return PSERV_ERR_UNREACHABLE;
    }
    memcpy(&peer->addr, res->ai_addr, res->ai_addrlen);
    peer->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return PSERV_OK;
}

pserv_status_t ps_tp_connect(ps_tp_t *tp, const char *host, uint16_t port, ps_tp_peer_t **out)
{
    PS_CHECK_ARG(tp != NULL && host != NULL && host[0] != '\0' && port != 0 && out != NULL);

    pserv_status_t st;
    ps_tp_peer_t *peer = tp_peer_alloc(tp);
    if (peer == NULL) return PSERV_ERR_NO_MEMORY;
    snprintf(peer->name, sizeof(peer->name), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
    PS_CHECK_GOTO(tp_resolve(peer, host, port), st, err_unref);

    if (tp_on_progress_thread(tp)) {
        tp_peer_connect_run(peer);
    } else {
        tp_peer_ref(peer); /* the command's */
        if ((st = tp_cmd_post(tp, &peer->connect_cmd)) < 0) {
            tp_peer_unref(peer);
            goto err_unref;
        }
    }
    *out = peer;
    return PSERV_OK;

err_unref:
    tp_peer_unref(peer);
    return st;
}

void ps_tp_peer_close(ps_tp_peer_t *peer)
{
    if (peer == NULL) return;
    ps_tp_t *tp = peer->tp;
    if (tp_on_progress_thread(tp)) {
        tp_peer_close_run(peer);
        return;
    }
    /* Wait for the progress thread: once this returns, no handler runs for the peer. */
    tp_peer_ref(peer);
    if (tp_cmd_post(tp, &peer->close_cmd) < 0) {
        tp_peer_unref(peer); /* shutting down: ps_tp_destroy frees it */
        return;
    }
    pthread_mutex_lock(&tp->lock);
    while (!peer->close_done) pthread_cond_wait(&tp->cond, &tp->lock);
    pthread_mutex_unlock(&tp->lock);
    tp_peer_unref(peer);
}

void ps_tp_peer_set_ctx(ps_tp_peer_t *peer, void *ctx)
{
    if (peer != NULL) atomic_store_explicit(&peer->ctx, ctx, memory_order_release);
}

void *ps_tp_peer_get_ctx(const ps_tp_peer_t *peer)
{
    return peer != NULL ? atomic_load_explicit(&((ps_tp_peer_t *)peer)->ctx, memory_order_acquire) : NULL;
}

const char *ps_tp_peer_name(const ps_tp_peer_t *peer)
{
    return peer != NULL ? peer->name : "(none)";
}

int ps_tp_peer_is_failed(const ps_tp_peer_t *peer)
{
    return peer != NULL && atomic_load_explicit(&((ps_tp_peer_t *)peer)->reported, memory_order_acquire);
}
