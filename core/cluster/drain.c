/*
 * pserv_drain: an operator's request to the coordinator that a server leave the running job
 * (coord_membership.c does the work). A transport of its own, one DRAIN, and its answer, which
 * comes once the server has left; every wait is bounded by the caller's deadline.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "deadline.h"
#include "hostport.h"
#include "log.h"
#include "send.h"
#include "transport.h"
#include "wire.h"

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    pserv_status_t status;
    char why[PS_WIRE_REASON_MAX + 1];
} ps_drain_call_t;

static void ps_drain_finish(ps_drain_call_t *d, pserv_status_t st, const void *why, size_t len)
{
    pthread_mutex_lock(&d->lock);
    if (!d->done) {
        d->done = 1;
        d->status = st;
        size_t n = len < PS_WIRE_REASON_MAX ? len : PS_WIRE_REASON_MAX;
        for (size_t i = 0; i < n; i++) {
            char ch = ((const char *)why)[i];
            d->why[i] = ch >= 32 && ch < 127 ? ch : '?';
        }
        d->why[n] = '\0';
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->lock);
}

static void ps_drain_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    ps_wire_hdr_t h;
    const char *why;
    (void)peer;
    if (ps_wire_decode(hdr, hdr_len, len, &h, &why) < 0 || h.type != PS_MSG_DRAIN_REPLY) return;
    ps_drain_finish(arg, h.status, data, len);
}

static void ps_drain_peer_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why)
{
    static const char text[] = "the connection to the coordinator failed before the server left (unreachable, or it "
                               "went away: a drain it began goes on)";
    (void)peer;
    (void)why;
    ps_drain_finish(arg, PSERV_ERR_PEER_FAILED, text, sizeof(text) - 1);
}

pserv_status_t pserv_drain(const char *coordinator, unsigned server_rank, int timeout_ms)
{
    char host[PS_HOST_MAX];
    uint16_t port;
    PS_CHECK_ARG(coordinator);
    if (ps_hostport_parse(coordinator, 0, host, &port) < 0 || port == 0) {
        ps_set_last_error("bad coordinator address '%s' (want host:port)", coordinator);
        return PSERV_ERR_INVALID_ARG;
    }
    ps_drain_call_t d = {.status = PSERV_ERR_TIMED_OUT};
    pthread_mutex_init(&d.lock, NULL);
    pserv_status_t st = ps_cond_init(&d.cond);
    if (st < 0) {
        pthread_mutex_destroy(&d.lock);
        return st;
    }
    ps_tp_params_t params = {.handler = {.arg = &d, .rx = ps_drain_rx, .peer_failed = ps_drain_peer_failed}};
    ps_tp_t *tp = NULL;
    ps_tp_peer_t *peer = NULL;
    if ((st = ps_tp_create(&params, &tp)) < 0 || (st = ps_tp_connect(tp, host, port, &peer)) < 0) {
        ps_set_last_error("cannot reach the coordinator at %s: %s", coordinator, pserv_strerror(st));
        goto out;
    }
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_DRAIN);
    h.req_id = 1;
    h.chunk = server_rank;
    if ((st = ps_send_msg(peer, &h, NULL, 0, NULL, NULL, NULL)) < 0) {
        ps_set_last_error("cannot send to the coordinator at %s: %s", coordinator, pserv_strerror(st));
        goto out;
    }
    ps_deadline_t deadline;
    ps_deadline_set(&deadline, timeout_ms);
    pthread_mutex_lock(&d.lock);
    while (!d.done && ps_cond_wait(&d.cond, &d.lock, &deadline) == PSERV_OK) {
    }
    st = d.done ? d.status : PSERV_ERR_TIMED_OUT;
    pthread_mutex_unlock(&d.lock);
    if (st == PSERV_ERR_TIMED_OUT)
        ps_set_last_error("server %u has not left within %d ms (the drain goes on)", server_rank, timeout_ms);
    else if (st < 0)
        ps_set_last_error("draining server %u: %s", server_rank, d.why[0] ? d.why : pserv_strerror(st));
out:
    if (tp) ps_tp_destroy(tp); /* stops the progress thread before d goes */
    pthread_cond_destroy(&d.cond);
    pthread_mutex_destroy(&d.lock);
    return st;
}
