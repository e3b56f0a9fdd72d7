/*
 * Messages: ps_tp_send() over ucp_am_send_nbx, and the receive side (eager data kept or
 * copied, rendezvous data received straight into the buffer core picks). UCX callbacks here
 * only queue; handlers run from the dispatch functions on the progress thread.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tp_internal.h"

/* ---- send descriptors: taken by any thread, returned by the progress thread ---- */

static tp_send_t *tp_send_get(ps_tp_t *tp)
{
    pthread_mutex_lock(&tp->lock);
    tp_send_t *sd = tp->send_free;
    if (sd != NULL) {
        tp->send_free = sd->next;
        tp->send_free_n--;
    }
    pthread_mutex_unlock(&tp->lock);
    return sd != NULL ? sd : malloc(sizeof(*sd));
}

static void tp_send_put(ps_tp_t *tp, tp_send_t *sd)
{
    pthread_mutex_lock(&tp->lock);
    if (tp->send_free_n < TP_SEND_FREE_MAX) {
        sd->next = tp->send_free;
        tp->send_free = sd;
        tp->send_free_n++;
        sd = NULL;
    }
    pthread_mutex_unlock(&tp->lock);
    free(sd);
}

static void tp_done_push(ps_tp_t *tp, tp_send_t *sd)
{
    sd->next = NULL;
    *tp->done_tail = sd;
    tp->done_tail = &sd->next;
}

/* UCX callback */
static void tp_send_cb(void *req, ucs_status_t st, void *user)
{
    tp_send_t *sd = user;
    sd->ucs_status = st;
    tp_list_del(&sd->active);
    ucp_request_free(req);
    tp_done_push(sd->peer->tp, sd);
}

static void tp_send_fail(ps_tp_t *tp, tp_send_t *sd, ucs_status_t st)
{
    sd->peer->inflight_tx++;
    sd->ucs_status = st;
    tp_done_push(tp, sd);
}

void tp_send_run(ps_tp_t *tp, tp_send_t *sd, int direct)
{
    ps_tp_peer_t *peer = sd->peer;

    if (tp->closing) {
        tp_send_fail(tp, sd, UCS_ERR_CANCELED);
        return;
    }
    if (peer->state == TP_PEER_NEW) {
        /* Its connect is still queued: stay behind it so the endpoint exists first. */
        if (tp_cmd_post(tp, &sd->cmd) < 0) tp_send_fail(tp, sd, UCS_ERR_CANCELED);
        return;
    }
    if (peer->state != TP_PEER_ACTIVE) {
        tp_send_fail(tp, sd, UCS_ERR_CANCELED); /* status from the peer's state at delivery */
        return;
    }

    ucp_request_param_t prm = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS,
        /* REPLY carries our endpoint id: the receiver maps reply_ep to its peer. */
        .flags = UCP_AM_SEND_FLAG_REPLY,
        .cb.send = tp_send_cb,
        .user_data = sd,
    };
    if (sd->len >= TP_RNDV_MIN) prm.flags |= UCP_AM_SEND_FLAG_RNDV;
    if (sd->memh != NULL) {
        prm.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        prm.memh = sd->memh;
    }
    peer->inflight_tx++;
    /* On the list before the call: UCX may run the callback before returning the request. */
    tp_list_add(&tp->tx_active, &sd->active);
    ucs_status_ptr_t sp = ucp_am_send_nbx(peer->ep, TP_AM_ID, sd->hdr, sd->hdr_len, sd->data, sd->len, &prm);
    /* A callback that already ran has unlinked and queued it. */
    if (UCS_PTR_IS_PTR(sp) || !tp_list_linked(&sd->active)) return;
    tp_list_del(&sd->active);
    sd->ucs_status = UCS_PTR_STATUS(sp); /* UCS_OK when it completed at once */
    if (direct && sd->cb == NULL && sd->ucs_status == UCS_OK) {
        /* Nobody to tell: done here, so a sleeping progress thread need not wake for it. */
        peer->inflight_tx--;
        tp_send_put(tp, sd);
        tp_peer_unref(peer);
        return;
    }
    tp_done_push(tp, sd);
}

static pserv_status_t tp_send_status(const ps_tp_t *tp, const tp_send_t *sd)
{
    const ps_tp_peer_t *peer = sd->peer;
    if (sd->ucs_status == UCS_OK) return PSERV_OK;
    if (peer->state == TP_PEER_FAILED) return peer->why;
    if (peer->state == TP_PEER_CLOSED || tp->closing) return PSERV_ERR_SHUTDOWN;
    ps_debug("send to %s failed: %s", peer->name, ucs_status_string(sd->ucs_status));
    return tp_status(sd->ucs_status);
}

void tp_send_dispatch(ps_tp_t *tp)
{
    tp_send_t *sd;
    while ((sd = tp->done_head) != NULL) {
        tp->done_head = sd->next;
        if (tp->done_head == NULL) tp->done_tail = &tp->done_head;

        ps_tp_peer_t *peer = sd->peer;
        ps_tp_send_cb_t cb = sd->cb;
        void *arg = sd->arg;
        pserv_status_t st = tp_send_status(tp, sd);
        peer->inflight_tx--;
        tp_send_put(tp, sd); /* before cb: a callback that sends again reuses it */
        if (cb != NULL) cb(arg, st);
        tp_peer_unref(peer);
    }
}

pserv_status_t ps_tp_send(ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, const void *data, size_t len,
                          ps_tp_mem_t *mem, ps_tp_send_cb_t cb, void *arg)
{
    pserv_status_t st = PSERV_ERR_INVALID_ARG;
    tp_send_t *sd;
    ps_tp_t *tp;

    if (peer == NULL || hdr_len > PS_TP_MAX_HDR || (hdr_len > 0 && hdr == NULL) || (len > 0 && data == NULL)) {
        ps_debug("ps_tp_send: invalid argument");
        goto fail;
    }
    tp = peer->tp;
    if (mem != NULL && (mem->tp != tp || !tp_mem_covers(mem, data, len))) {
        ps_debug("ps_tp_send: registration does not cover the payload");
        goto fail;
    }
    if (atomic_load_explicit(&peer->reported, memory_order_acquire)) {
        st = peer->why; /* written before reported was set */
        goto fail;
    }
    if ((sd = tp_send_get(tp)) == NULL) {
        st = PSERV_ERR_NO_MEMORY;
        goto fail;
    }
    sd->cmd.type = TP_CMD_SEND;
    sd->peer = peer;
    sd->data = data;
    sd->len = len;
    sd->memh = mem != NULL ? mem->memh : NULL;
    sd->cb = cb;
    sd->arg = arg;
    sd->hdr_len = (uint32_t)hdr_len;
    /* UCX reads the header until completion, and the caller's may be on its stack. */
    if (hdr_len > 0) memcpy(sd->hdr, hdr, hdr_len);
    tp_list_init(&sd->active);
    tp_peer_ref(peer);

    if (tp_on_progress_thread(tp)) {
        tp_send_run(tp, sd, 0);
        return PSERV_OK;
    }
    /* Straight to UCX from this thread when the progress role is free (its thread sleeps or
     * yields) and nothing queued before could be overtaken; otherwise through the queue. */
    const ps_tp_t *prev;
    if (!atomic_load_explicit(&tp->cmd_ready, memory_order_acquire) && tp_role_try(tp, &prev)) {
        int direct = !tp->closing && !atomic_load_explicit(&tp->cmd_ready, memory_order_acquire);
        if (direct) tp_send_run(tp, sd, 1);
        tp_role_leave(tp, prev);
        if (direct) return PSERV_OK;
    }
    if ((st = tp_cmd_post(tp, &sd->cmd)) < 0) {
        tp_peer_unref(peer);
        tp_send_put(tp, sd);
        goto fail;
    }
    return PSERV_OK;

fail:
    if (cb != NULL) cb(arg, st);
    return st;
}

/* ---- receive descriptors: progress thread only ---- */

static tp_recv_t *tp_rx_get(ps_tp_t *tp)
{
    tp_recv_t *rx = tp->rx_free;
    if (rx != NULL) {
        tp->rx_free = rx->next;
        tp->rx_free_n--;
        return rx;
    }
    return malloc(sizeof(*rx));
}

static void tp_rx_put(ps_tp_t *tp, tp_recv_t *rx)
{
    if (tp->rx_free_n < TP_RX_FREE_MAX) {
        rx->next = tp->rx_free;
        tp->rx_free = rx;
        tp->rx_free_n++;
        return;
    }
    free(rx);
}

static void tp_rxq_push(ps_tp_t *tp, tp_recv_t *rx)
{
    rx->next = NULL;
    *tp->rxq_tail = rx;
    tp->rxq_tail = &rx->next;
}

/* Gives everything the receive holds back (UCX data, our buffer, the peer reference). */
static void tp_rx_release(ps_tp_t *tp, tp_recv_t *rx)
{
    ps_tp_peer_t *peer = rx->peer;
    switch (rx->kind) {
    case TP_RX_EAGER_UCX:
        ucp_am_data_release(tp->worker, rx->desc);
        break;
    case TP_RX_RNDV:
        /* Declines the rendezvous: UCX tells the sender, whose send completes. */
        if (rx->desc != NULL) ucp_am_data_release(tp->worker, rx->desc);
        break;
    case TP_RX_RNDV_DONE:
        peer->inflight_rx--;
        /* A buffer core chose will never reach rx: give it back. */
        if (!rx->delivered && !rx->data_owned && tp->h.rx_abort != NULL)
            tp->h.rx_abort(tp->h.arg, peer, rx->hdr, rx->hdr_len, rx->data);
        break;
    case TP_RX_EAGER_COPY:
        break;
    }
    if (rx->data_owned) tp_rxbuf_put(tp, rx->data, rx->len);
    tp_rx_put(tp, rx);
    tp_peer_unref(peer);
}

/* UCX callback: queue the message; data stays with UCX (INPROGRESS), is copied, or waits. */
static ucs_status_t tp_am_recv_cb(void *arg, const void *header, size_t header_length, void *data,
                                  size_t length, const ucp_am_recv_param_t *param)
{
    ps_tp_t *tp = arg;
    int rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    ps_tp_peer_t *peer = NULL;

    if (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) peer = tp_peer_by_ep(tp, param->reply_ep);
    /* A failed peer's eager messages still count: they were sent before it failed, and UCX may
     * report the failure (on one lane) before it read them (from another), so they are delivered
     * ahead of peer_failed. Its rendezvous cannot complete any more. */
    int usable = peer != NULL && (peer->state == TP_PEER_ACTIVE || (peer->state == TP_PEER_FAILED && !rndv));
    if (!usable || tp->closing) {
        /* A peer we closed or are closing: nobody wants it. A rendezvous declined this way
         * completes the sender's send. */
        ps_debug("transport: message from an unknown or closing peer dropped");
        return UCS_OK;
    }
    if (header_length > PS_TP_MAX_HDR) {
        ps_warn("transport: message from %s with a %zu-byte header dropped", peer->name, header_length);
        return UCS_OK;
    }
    tp_recv_t *rx = tp_rx_get(tp);
    if (rx == NULL) {
        ps_error("transport: no memory for a receive from %s: message dropped", peer->name);
        return UCS_OK;
    }
    rx->peer = peer;
    rx->len = length;
    rx->desc = NULL;
    rx->data = NULL;
    rx->data_owned = 0;
    rx->delivered = 0;
    rx->ucs_status = UCS_OK;
    rx->hdr_len = (uint32_t)header_length;
    if (header_length > 0) memcpy(rx->hdr, header, header_length);
    tp_list_init(&rx->active);

    ucs_status_t ret = UCS_INPROGRESS;
    if (rndv) {
        rx->kind = TP_RX_RNDV;
        rx->desc = data;
    } else if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA) {
        rx->kind = TP_RX_EAGER_UCX;
        rx->desc = rx->data = data;
    } else {
        rx->kind = TP_RX_EAGER_COPY;
        rx->data = rx->inline_data;
        if (length > TP_RX_INLINE) {
            rx->data = tp_rxbuf_get(tp, length);
            rx->data_owned = 1;
            if (rx->data == NULL) {
                ps_error("transport: no memory for %zu bytes from %s: message dropped", length, peer->name);
                tp_rx_put(tp, rx);
                return UCS_OK;
            }
        }
        if (length > 0) memcpy(rx->data, data, length);
        ret = UCS_OK;
    }
    tp_peer_ref(peer);
    tp_rxq_push(tp, rx);
    return ret;
}

/* UCX callback */
static void tp_rx_rndv_cb(void *req, ucs_status_t st, size_t length, void *user)
{
    tp_recv_t *rx = user;
    rx->ucs_status = st;
    rx->kind = TP_RX_RNDV_DONE;
    tp_list_del(&rx->active);
    ucp_request_free(req);
    tp_rxq_push(rx->peer->tp, rx);
}

/* A rendezvous announcement: ask core where the payload goes, then pull it there. */
static void tp_rx_start(ps_tp_t *tp, tp_recv_t *rx)
{
    ps_tp_peer_t *peer = rx->peer;
    pserv_status_t st = PSERV_OK;
    void *buf = NULL;

    if (tp->closing || peer->state != TP_PEER_ACTIVE) goto err_release;
    if (tp->h.rx_buffer != NULL) {
        tp->rx_current = rx;
        st = tp->h.rx_buffer(tp->h.arg, peer, rx->hdr, rx->hdr_len, rx->len, &buf);
        tp->rx_current = NULL;
        if (rx->desc == NULL) goto err_release; /* the handler closed the peer: declined there */
        if (st < 0) {
            ps_debug("transport: %zu-byte message from %s refused: %s", rx->len, peer->name, pserv_strerror(st));
            goto err_release;
        }
    }
    if (buf == NULL) {
        buf = tp_rxbuf_get(tp, rx->len > 0 ? rx->len : 1);
        if (buf == NULL) {
            ps_error("transport: no memory for %zu bytes from %s: message dropped", rx->len, peer->name);
            goto err_release;
        }
        rx->data_owned = 1;
    }
    rx->data = buf;

    ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
                               .cb.recv_am = tp_rx_rndv_cb,
                               .user_data = rx};
    peer->inflight_rx++;
    /* On the list before the call: a receive that fails at once (the sender's endpoint is
     * already dead) runs its callback before ucp_am_recv_data_nbx returns the request. */
    tp_list_add(&tp->rx_active, &rx->active);
    void *desc = rx->desc;
    rx->desc = NULL; /* UCX owns the descriptor from here, whatever the outcome */
    ucs_status_ptr_t sp = ucp_am_recv_data_nbx(tp->worker, desc, buf, rx->len, &prm);
    if (UCS_PTR_IS_PTR(sp) || !tp_list_linked(&rx->active)) return; /* the callback queues it */
    tp_list_del(&rx->active);
    rx->kind = TP_RX_RNDV_DONE;
    rx->ucs_status = UCS_PTR_STATUS(sp);
    tp_rxq_push(tp, rx);
    return;

err_release:
    tp_rx_release(tp, rx);
}

void tp_rx_dispatch(ps_tp_t *tp)
{
    tp_recv_t *rx;
    while ((rx = tp->rxq_head) != NULL) {
        tp->rxq_head = rx->next;
        if (tp->rxq_head == NULL) tp->rxq_tail = &tp->rxq_head;

        ps_tp_peer_t *peer = rx->peer;
        if (rx->kind == TP_RX_RNDV) {
            tp_rx_start(tp, rx);
            continue;
        }
        if (rx->kind == TP_RX_RNDV_DONE && rx->ucs_status != UCS_OK) {
            if (!tp->closing && peer->state == TP_PEER_ACTIVE)
                ps_warn("transport: receive from %s failed: %s", peer->name, ucs_status_string(rx->ucs_status));
        } else if (!tp->closing && peer->state != TP_PEER_CLOSED) {
            rx->delivered = 1;
            tp->h.rx(tp->h.arg, peer, rx->hdr, rx->hdr_len, rx->data, rx->len);
        }
        tp_rx_release(tp, rx);
    }
}

void tp_rx_purge_peer(ps_tp_t *tp, ps_tp_peer_t *peer, int rndv_only)
{
    if (tp->rx_current != NULL && tp->rx_current->peer == peer && tp->rx_current->desc != NULL) {
        ucp_am_data_release(tp->worker, tp->rx_current->desc);
        tp->rx_current->desc = NULL;
    }
    tp_recv_t **pp = &tp->rxq_head, *rx;
    tp->rxq_tail = &tp->rxq_head;
    while ((rx = *pp) != NULL) {
        if (rx->peer == peer && (!rndv_only || rx->kind == TP_RX_RNDV)) {
            *pp = rx->next;
            tp_rx_release(tp, rx);
            continue;
        }
        tp->rxq_tail = &rx->next;
        pp = &rx->next;
    }
}

pserv_status_t tp_am_init(ps_tp_t *tp)
{
    ucp_am_handler_param_t p = {.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                                              UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS,
                                .id = TP_AM_ID,
                                .flags = UCP_AM_FLAG_WHOLE_MSG,
                                .cb = tp_am_recv_cb,
                                .arg = tp};
    ucs_status_t st = ucp_worker_set_am_recv_handler(tp->worker, &p);
    if (st != UCS_OK) {
        ps_error("ucp_worker_set_am_recv_handler failed: %s", ucs_status_string(st));
        return tp_status(st);
    }
    return PSERV_OK;
}

void tp_am_abandon(ps_tp_t *tp)
{
    /* UCX is gone; anything it still held ends here, and send callbacks still run once. */
    while (!tp_list_empty(&tp->tx_active)) {
        tp_send_t *sd = tp_container_of(tp->tx_active.next, tp_send_t, active);
        tp_list_del(&sd->active);
        sd->ucs_status = UCS_ERR_CANCELED;
        tp_done_push(tp, sd);
    }
    while (!tp_list_empty(&tp->rx_active)) {
        tp_recv_t *rx = tp_container_of(tp->rx_active.next, tp_recv_t, active);
        tp_list_del(&rx->active);
        rx->kind = TP_RX_RNDV_DONE;
        rx->ucs_status = UCS_ERR_CANCELED;
        tp_rxq_push(tp, rx);
    }
    tp_send_dispatch(tp);
    tp_rx_dispatch(tp);
}

void tp_am_free_all(ps_tp_t *tp)
{
    while (tp->send_free != NULL) {
        tp_send_t *sd = tp->send_free;
        tp->send_free = sd->next;
        free(sd);
    }
    while (tp->rx_free != NULL) {
        tp_recv_t *rx = tp->rx_free;
        tp->rx_free = rx->next;
        free(rx);
    }
    tp->send_free_n = tp->rx_free_n = 0;
    tp_rxbuf_free_all(tp);
}
