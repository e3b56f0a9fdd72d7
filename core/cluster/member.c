#include "member.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "hostport.h"

pserv_status_t ps_member_error(ps_member_t *m, pserv_status_t status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&m->lock);
    vsnprintf(m->last_error, sizeof(m->last_error), fmt, ap);
    ps_set_last_error("%s", m->last_error);
    pthread_mutex_unlock(&m->lock);
    va_end(ap);
    /* The caller gets the detail (last_error); logging it is for a daemon's record. */
    ps_info("%s: %s", pserv_strerror(status), m->last_error);
    return status;
}

pserv_status_t ps_member_init(ps_member_t *m, ps_role_t role, const char *coord_addr, const char *listen_addr,
                              const ps_tp_handler_t *handler)
{
    char host[PS_HOST_MAX];
    uint16_t port = 0;
    pserv_status_t st;

    memset(m, 0, sizeof(*m));
    m->role = role;
    m->rank = UINT32_MAX;
    m->next_req = 1;
    if (coord_addr == NULL || strlen(coord_addr) >= sizeof(m->coord_addr)) return PSERV_ERR_INVALID_ARG;
    snprintf(m->coord_addr, sizeof(m->coord_addr), "%s", coord_addr);
    if (pthread_mutex_init(&m->lock, NULL) != 0) return PSERV_ERR_NO_RESOURCE;
    PS_CHECK_GOTO(ps_cond_init(&m->cond), st, err_destroy_lock);

    ps_tp_params_t tp_params = {.handler = *handler};
    if (listen_addr) {
        st = ps_hostport_parse(listen_addr, 0, host, &port);
        if (st < 0) {
            ps_member_error(m, st, "bad listen address '%s' (want host:port)", listen_addr);
            goto err_destroy_cond;
        }
        tp_params.listen_host = host;
        tp_params.listen_port = port;
    }
    st = ps_tp_create(&tp_params, &m->tp);
    if (st < 0) {
        ps_member_error(m, st, "cannot start the transport%s%s", listen_addr ? " listening on " : "",
                        listen_addr ? listen_addr : "");
        goto err_destroy_cond;
    }
    return PSERV_OK;

err_destroy_cond:
    pthread_cond_destroy(&m->cond);
err_destroy_lock:
    pthread_mutex_destroy(&m->lock);
    return st;
}

void ps_member_stop(ps_member_t *m)
{
    ps_tp_stop(m->tp);
}

void ps_member_fini(ps_member_t *m)
{
    ps_tp_destroy(m->tp); /* stops the progress thread first: no handler runs after this */
    ps_job_free(&m->job);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
}

/* A control message that cannot be sent means the coordinator is gone (or never answered the
 * connection): wake the caller now rather than at its timeout. */
static void ps_member_ctl_sent(void *arg, pserv_status_t status)
{
    ps_member_t *m = arg;
    if (status >= 0) return;
    pthread_mutex_lock(&m->lock);
    m->coord_failed = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

/* Sends a control message to the coordinator and waits for the reply of type `expect`. */
static pserv_status_t ps_member_ctl(ps_member_t *m, ps_wire_hdr_t *h, const void *data, size_t len,
                                    ps_msg_type_t expect, int timeout_ms)
{
    ps_deadline_t deadline;
    pserv_status_t st;

    ps_deadline_set(&deadline, timeout_ms);
    pthread_mutex_lock(&m->lock);
    if (m->coord_failed) {
        pthread_mutex_unlock(&m->lock);
        return PSERV_ERR_PEER_FAILED;
    }
    h->req_id = m->next_req++;
    h->sender = m->rank;
    m->ctl_expect = (uint16_t)expect;
    m->ctl_req = h->req_id;
    m->ctl_done = 0;
    pthread_mutex_unlock(&m->lock);

    st = ps_send_msg(m->coord, h, data, len, NULL, ps_member_ctl_sent, m);
    pthread_mutex_lock(&m->lock);
    while (st == PSERV_OK && !m->ctl_done && !m->coord_failed)
        if (ps_cond_wait(&m->cond, &m->lock, &deadline) == PSERV_ERR_TIMED_OUT) break;
    if (st == PSERV_OK)
        st = m->ctl_done ? m->ctl_status : m->coord_failed ? PSERV_ERR_PEER_FAILED : PSERV_ERR_TIMED_OUT;
    m->ctl_expect = 0;
    pthread_mutex_unlock(&m->lock);
    return st;
}

static int ps_member_unreachable(pserv_status_t st)
{
    return st == PSERV_ERR_PEER_FAILED || st == PSERV_ERR_UNREACHABLE || st == PSERV_ERR_TRANSPORT;
}

pserv_status_t ps_member_join(ps_member_t *m, const char *advertised_addr, const char *node, int32_t wanted_rank,
                              int timeout_ms)
{
    char host[PS_HOST_MAX];
    uint16_t port;
    ps_writer_t w;
    ps_wire_hdr_t h;
    ps_deadline_t deadline;
    pserv_status_t st;
    unsigned delay_ms = 20;

    if (ps_hostport_parse(m->coord_addr, 0, host, &port) < 0 || port == 0)
        return ps_member_error(m, PSERV_ERR_INVALID_ARG, "bad coordinator address '%s' (want host:port)",
                               m->coord_addr);
    ps_writer_init(&w, m->ctl_payload, sizeof(m->ctl_payload));
    ps_join_encode(&w, m->role, wanted_rank, advertised_addr, node);
    ps_deadline_set(&deadline, timeout_ms);
    /* Members may start before the coordinator listens (mpirun starts every rank at once):
     * a refused connection is retried, with growing pauses, until the timeout. */
    for (;;) {
        st = ps_tp_connect(m->tp, host, port, &m->coord);
        if (st < 0) return ps_member_error(m, PSERV_ERR_UNREACHABLE, "cannot reach the coordinator at %s: %s",
                                           m->coord_addr, pserv_strerror(st));
        ps_wire_hdr_init(&h, PS_MSG_JOIN);
        st = ps_member_ctl(m, &h, m->ctl_payload, w.len, PS_MSG_JOIN_REPLY, ps_deadline_left_ms(&deadline));
        int left = ps_deadline_left_ms(&deadline);
        if (!ps_member_unreachable(st) || (left >= 0 && left <= (int)delay_ms)) break;
        ps_tp_peer_close(m->coord);
        pthread_mutex_lock(&m->lock);
        m->coord = NULL;
        m->coord_failed = 0;
        pthread_mutex_unlock(&m->lock);
        usleep(delay_ms * 1000);
        delay_ms = delay_ms * 2 > 1000 ? 1000 : delay_ms * 2;
    }
    if (ps_member_unreachable(st))
        return ps_member_error(m, PSERV_ERR_UNREACHABLE, "cannot reach the coordinator at %s (tried for %d ms)",
                               m->coord_addr, timeout_ms);
    if (st == PSERV_ERR_TIMED_OUT)
        return ps_member_error(m, st, "no answer from the coordinator at %s within %d ms (job not formed)",
                               m->coord_addr, timeout_ms);
    if (st < 0) return ps_member_error(m, st, "the coordinator at %s refused to join: %s", m->coord_addr,
                                       pserv_strerror(st));
    return PSERV_OK;
}

pserv_status_t ps_member_call(ps_member_t *m, ps_msg_type_t type, uint64_t round, int timeout_ms)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, type);
    h.round = round;
    return ps_member_ctl(m, &h, NULL, 0, (ps_msg_type_t)(type + 1), timeout_ms);
}

pserv_status_t ps_member_call_data(ps_member_t *m, ps_msg_type_t type, uint64_t round, const void *data, size_t len,
                                   void *reply, int timeout_ms)
{
    ps_wire_hdr_t h;
    if (len > PSERV_NODE_BROADCAST_MAX) return PSERV_ERR_INVALID_ARG;
    ps_wire_hdr_init(&h, type);
    h.round = round;
    h.length = len;
    pthread_mutex_lock(&m->lock);
    /* The payload buffer outlives a timed-out call, so a late send never reads freed memory. */
    memcpy(m->ctl_payload, data, len);
    m->ctl_reply = reply;
    m->ctl_reply_len = len;
    pthread_mutex_unlock(&m->lock);
    pserv_status_t st = ps_member_ctl(m, &h, m->ctl_payload, len, (ps_msg_type_t)(type + 1), timeout_ms);
    pthread_mutex_lock(&m->lock);
    m->ctl_reply = NULL;
    pthread_mutex_unlock(&m->lock);
    return st;
}

/* Completes the control call in flight if this reply is its answer. Called with the lock held. */
static void ps_member_ctl_done(ps_member_t *m, const ps_wire_hdr_t *h, pserv_status_t status)
{
    if (m->ctl_expect != h->type || m->ctl_req != h->req_id || m->ctl_done) {
        ps_debug("stale %s reply (req %llu) ignored", ps_wire_type_name(h->type), (unsigned long long)h->req_id);
        return;
    }
    m->ctl_status = status;
    m->ctl_done = 1;
    pthread_cond_broadcast(&m->cond);
}

int ps_member_rx(ps_member_t *m, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len)
{
    if (peer != m->coord) return 0;
    pthread_mutex_lock(&m->lock);
    switch (h->type) {
    case PS_MSG_JOIN_REPLY: {
        pserv_status_t st = h->status;
        if (st == PSERV_OK && m->job.servers == NULL) {
            ps_reader_t r;
            ps_reader_init(&r, data, len);
            st = ps_job_decode(&r, &m->job, &m->rank);
        }
        ps_member_ctl_done(m, h, st);
        break;
    }
    case PS_MSG_BARRIER_REPLY:
    case PS_MSG_LEAVE_REPLY:
        ps_member_ctl_done(m, h, h->status);
        break;
    case PS_MSG_NODE_BCAST_REPLY: {
        int ours = m->ctl_expect == h->type && m->ctl_req == h->req_id && !m->ctl_done;
        pserv_status_t st = h->status;
        if (ours && st == PSERV_OK) {
            if (len != m->ctl_reply_len || m->ctl_reply == NULL) st = PSERV_ERR_BAD_MESSAGE;
            else memcpy(m->ctl_reply, data, len);
        }
        ps_member_ctl_done(m, h, st);
        break;
    }
    case PS_MSG_SHUTDOWN:
        m->shutdown = 1;
        pthread_cond_broadcast(&m->cond);
        break;
    default:
        ps_warn("unexpected %s from the coordinator ignored", ps_wire_type_name(h->type));
    }
    pthread_mutex_unlock(&m->lock);
    return 1;
}

int ps_member_peer_failed(ps_member_t *m, ps_tp_peer_t *peer)
{
    if (peer != m->coord) return 0;
    pthread_mutex_lock(&m->lock);
    m->coord_failed = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return 1;
}
