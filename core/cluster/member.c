#include "member.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "hostport.h"

static pserv_status_t ps_member_start_heartbeats(ps_member_t *m);

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
                              const ps_tp_handler_t *handler, const ps_member_hooks_t *hooks)
{
    char host[PS_HOST_MAX];
    uint16_t port = 0;
    pserv_status_t st;

    memset(m, 0, sizeof(*m));
    m->role = role;
    m->rank = UINT32_MAX;
    m->next_req = 1;
    if (hooks) m->hooks = *hooks;
    if (coord_addr == NULL || strlen(coord_addr) >= sizeof(m->coord_addr)) return PSERV_ERR_INVALID_ARG;
    snprintf(m->coord_addr, sizeof(m->coord_addr), "%s", coord_addr);
    if (pthread_mutex_init(&m->lock, NULL) != 0) return PSERV_ERR_NO_RESOURCE;
    PS_CHECK_GOTO(ps_cond_init(&m->cond), st, err_destroy_lock);

    char why[160];
    if ((st = ps_progress_get(&m->progress, why, sizeof(why))) < 0) {
        ps_member_error(m, st, "%s", why);
        goto err_destroy_cond;
    }
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
        ps_member_error(m, st, "cannot start the transport%s%s%s", listen_addr ? " listening on " : "",
                        listen_addr ? listen_addr : "", st == PSERV_ERR_ADDR_IN_USE ? ": the port is in use" : "");
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
    ps_ticker_stop(&m->ticker);
    ps_tp_stop(m->tp);
}

void ps_member_fini(ps_member_t *m)
{
    ps_ticker_stop(&m->ticker);
    ps_tp_destroy(m->tp); /* stops the progress thread first: no handler runs after this */
    ps_job_free(&m->job);
    if (m->view) {
        ps_view_free(m->view);
        free(m->view);
    }
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

/* Once the job has formed, a lost coordinator is not the end: it may come back (coord_recover.c). */
static int ps_member_awaits_coord(const ps_member_t *m)
{
    return m->job.servers != NULL && (m->coord_failed || m->rejoining) && !m->aborted && !m->shutdown;
}

/*
 * Sends a control message to the coordinator and waits for the reply of type `expect`. Once the
 * job has formed, a coordinator lost before or during the call is waited for (until the
 * deadline) and the call sent again to the one that comes back.
 */
static pserv_status_t ps_member_ctl(ps_member_t *m, ps_wire_hdr_t *h, const void *data, size_t len,
                                    ps_msg_type_t expect, int timeout_ms)
{
    ps_deadline_t deadline;
    pserv_status_t st = PSERV_OK;

    ps_deadline_set(&deadline, timeout_ms);
    pthread_mutex_lock(&m->lock);
    for (;;) {
        while (ps_member_awaits_coord(m) && st == PSERV_OK)
            if (ps_cond_wait(&m->cond, &m->lock, &deadline) == PSERV_ERR_TIMED_OUT) st = PSERV_ERR_TIMED_OUT;
        if (st < 0 || m->coord_failed || m->aborted) {
            pthread_mutex_unlock(&m->lock);
            return st < 0 ? st : m->aborted ? PSERV_ERR_JOB_FAILED : PSERV_ERR_PEER_FAILED;
        }
        h->req_id = m->next_req++;
        h->sender = m->rank;
        m->ctl_expect = (uint16_t)expect;
        m->ctl_req = h->req_id;
        m->ctl_done = 0;
        ps_tp_peer_t *coord = m->coord;
        pthread_mutex_unlock(&m->lock);

        st = ps_send_msg(coord, h, data, len, NULL, ps_member_ctl_sent, m);
        pthread_mutex_lock(&m->lock);
        while (st == PSERV_OK && !m->ctl_done && !m->coord_failed && !m->aborted)
            if (ps_cond_wait(&m->cond, &m->lock, &deadline) == PSERV_ERR_TIMED_OUT) break;
        if (!m->ctl_done && ps_member_awaits_coord(m)) { /* lost it meanwhile: again, to the next one */
            st = PSERV_OK;
            continue;
        }
        break;
    }
    if (st == PSERV_OK)
        st = m->ctl_done       ? m->ctl_status
             : m->aborted      ? PSERV_ERR_JOB_FAILED
             : m->coord_failed ? PSERV_ERR_PEER_FAILED
                               : PSERV_ERR_TIMED_OUT;
    m->ctl_expect = 0;
    pthread_mutex_unlock(&m->lock);
    return st;
}

static int ps_member_unreachable(pserv_status_t st)
{
    return st == PSERV_ERR_PEER_FAILED || st == PSERV_ERR_UNREACHABLE || st == PSERV_ERR_TRANSPORT;
}

pserv_status_t ps_member_join(ps_member_t *m, const char *advertised_addr, const char *node, const char *settings,
                              int32_t wanted_rank, int timeout_ms)
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
    ps_join_encode(&w, m->role, wanted_rank, advertised_addr, node, settings);
    memcpy(m->join_body, m->ctl_payload, w.len); /* a rejoin sends it again */
    m->join_len = w.len;
    ps_deadline_set(&deadline, timeout_ms);
    /* Members may start before the coordinator listens (mpirun starts every rank at once):
     * a refused connection is retried, with growing pauses, until the timeout. */
    for (;;) {
        ps_tp_peer_t *coord;
        st = ps_tp_connect(m->tp, host, port, &coord);
        if (st < 0) return ps_member_error(m, PSERV_ERR_UNREACHABLE, "cannot reach the coordinator at %s: %s",
                                           m->coord_addr, pserv_strerror(st));
        /* The progress thread compares peers with m->coord under the lock; a failure it handled
         * before this store is caught by asking the peer. */
        pthread_mutex_lock(&m->lock);
        m->coord = coord;
        if (ps_tp_peer_is_failed(coord)) m->coord_failed = 1;
        pthread_mutex_unlock(&m->lock);
        ps_wire_hdr_init(&h, PS_MSG_JOIN);
        h.flags = m->join_flags;
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
    if (st == PSERV_ERR_MISMATCH) {
        char why[sizeof(m->last_error)];
        pthread_mutex_lock(&m->lock);
        memcpy(why, m->last_error, sizeof(why));
        pthread_mutex_unlock(&m->lock);
        return ps_member_error(m, st, "the coordinator at %s refused to join: %s", m->coord_addr, why);
    }
    if (st < 0) return ps_member_error(m, st, "the coordinator at %s refused to join: %s", m->coord_addr,
                                       pserv_strerror(st));
    return ps_member_start_heartbeats(m);
}

pserv_status_t ps_member_call(ps_member_t *m, ps_msg_type_t type, uint64_t round, int timeout_ms)
{
    return ps_member_call_data(m, type, 0, round, NULL, 0, NULL, timeout_ms);
}

pserv_status_t ps_member_call_data(ps_member_t *m, ps_msg_type_t type, uint32_t flags, uint64_t round,
                                   const void *data, size_t len, ps_ctl_reply_t *reply, int timeout_ms)
{
    ps_wire_hdr_t h;
    if (len > PSERV_NODE_BROADCAST_MAX) return PSERV_ERR_INVALID_ARG;
    ps_wire_hdr_init(&h, type);
    h.flags = flags;
    h.round = round;
    h.length = len;
    pthread_mutex_lock(&m->lock);
    /* The payload buffer outlives a timed-out call, so a late send never reads freed memory. */
    if (len) memcpy(m->ctl_payload, data, len);
    m->ctl_reply = reply;
    pthread_mutex_unlock(&m->lock);
    pserv_status_t st = ps_member_ctl(m, &h, len ? m->ctl_payload : NULL, len, (ps_msg_type_t)(type + 1), timeout_ms);
    pthread_mutex_lock(&m->lock);
    m->ctl_reply = NULL;
    pthread_mutex_unlock(&m->lock);
    return st;
}

pserv_status_t ps_member_wait_view(ps_member_t *m, uint32_t version, const ps_deadline_t *deadline)
{
    while (!m->aborted && (m->view == NULL || m->view->version < version))
        if (ps_cond_wait(&m->cond, &m->lock, deadline) == PSERV_ERR_TIMED_OUT) return PSERV_ERR_TIMED_OUT;
    return m->aborted ? PSERV_ERR_JOB_FAILED : PSERV_OK;
}

void ps_member_heard(ps_member_t *m)
{
    __atomic_store_n(&m->last_any_ms, ps_now_ms(), __ATOMIC_RELAXED);
}

/*
 * The coordinator is gone (ticker thread): dial it again and join the running job with JOIN
 * flagged RETRY: our JOIN body, the job and our view, the round of our collectives. Its
 * JOIN_REPLY (ps_member_on_rejoined) ends the rejoin; a failed connection is tried next tick.
 */
static void ps_member_rejoin(ps_member_t *m)
{
    char host[PS_HOST_MAX];
    uint16_t port;
    ps_tp_peer_t *peer;
    if (ps_hostport_parse(m->coord_addr, 0, host, &port) < 0 || ps_tp_connect(m->tp, host, port, &peer) < 0) return;
    pthread_mutex_lock(&m->lock);
    size_t cap = 4 + m->join_len + PS_JOB_FIXED_MAX + (size_t)m->job.num_servers * (PS_ADDR_MAX + 4) +
                 (size_t)m->job.num_workers * 4 + ps_view_encoded_size(m->view);
    uint8_t *payload = malloc(cap);
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_JOIN);
    h.flags = PS_WIRE_FLAG_RETRY;
    h.sender = m->rank;
    h.req_id = m->next_req++;
    h.round = m->rejoin_round;
    h.offset = m->rejoin_bcast;
    h.map_version = m->view->version;
    ps_writer_t w;
    if (payload != NULL) {
        ps_writer_init(&w, payload, cap);
        ps_put_u32(&w, (uint32_t)m->join_len); /* the JOIN body, then the job and the view */
        memcpy(payload + w.len, m->join_body, m->join_len);
        w.len += m->join_len;
        ps_job_encode(&m->job, m->rank, &w);
        ps_view_encode(m->view, &w);
    }
    ps_tp_peer_t *old = m->coord;
    m->coord = peer;
    m->coord_failed = 0;
    m->rejoining = 1;
    m->rejoin_req = h.req_id;
    pthread_mutex_unlock(&m->lock);
    if (old) ps_tp_peer_close(old);
    if (payload == NULL || ps_send_msg(peer, &h, payload, w.len, NULL, ps_send_free_cb, payload) < 0) {
        pthread_mutex_lock(&m->lock);
        m->coord_failed = 1;
        m->rejoining = 0;
        pthread_mutex_unlock(&m->lock);
    }
}

/* The heartbeat: tell the coordinator we live, and end ourselves if cut off from everyone. */
static void ps_member_tick(void *arg, int64_t now)
{
    ps_member_t *m = arg;
    int64_t coord = __atomic_load_n(&m->last_coord_ms, __ATOMIC_RELAXED);
    int64_t any = __atomic_load_n(&m->last_any_ms, __ATOMIC_RELAXED);
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_HEARTBEAT);
    h.sender = m->rank;
    h.round = __atomic_load_n(&m->newest_round, __ATOMIC_RELAXED);
    pthread_mutex_lock(&m->lock);
    h.map_version = m->view ? m->view->version : 0;
    ps_tp_peer_t *coord_peer = m->coord_failed ? NULL : m->coord;
    int64_t timeout = m->job.failure_timeout_ms;
    /* A coordinator whose connection failed is waited for (it may be restarted), for a while. */
    int absent = m->job.servers != NULL && (m->coord_failed || m->rejoining);
    int64_t bound = absent ? PS_MEMBER_COORD_ABSENCE_MS(timeout) : timeout;
    int cut_off = !m->aborted && !m->shutdown && now - coord > bound && (absent || now - any > timeout);
    if (cut_off && absent) {
        __atomic_store_n(&m->aborted, 1, __ATOMIC_RELAXED);
        snprintf(m->last_error, sizeof(m->last_error), "the coordinator at %s has been gone for %lld ms",
                 m->coord_addr, (long long)(now - coord));
        pthread_cond_broadcast(&m->cond);
    } else if (cut_off) {
        __atomic_store_n(&m->aborted, 1, __ATOMIC_RELAXED); /* also read without the lock */
        snprintf(m->last_error, sizeof(m->last_error),
                 "cut off: nothing heard from the coordinator at %s or any peer for %lld ms", m->coord_addr,
                 (long long)(now - (coord > any ? coord : any)));
        pthread_cond_broadcast(&m->cond);
    }
    int redial = m->job.servers != NULL && m->coord_failed && !m->aborted && !m->shutdown;
    pthread_mutex_unlock(&m->lock);
    if (coord_peer) ps_send_msg(coord_peer, &h, NULL, 0, NULL, NULL, NULL);
    if (cut_off) ps_warn("%s", m->last_error);
    if (redial) ps_member_rejoin(m);
}

static pserv_status_t ps_member_start_heartbeats(ps_member_t *m)
{
    int64_t now = ps_now_ms();
    __atomic_store_n(&m->last_coord_ms, now, __ATOMIC_RELAXED);
    __atomic_store_n(&m->last_any_ms, now, __ATOMIC_RELAXED);
    pserv_status_t st = ps_ticker_start(&m->ticker, (int)m->job.heartbeat_ms, ps_member_tick, m);
    if (st < 0) return ps_member_error(m, st, "cannot start the heartbeat thread");
    return PSERV_OK;
}

/* Completes the control call in flight if this reply is its answer. Called with the lock held. */
static void ps_member_ctl_done(ps_member_t *m, const ps_wire_hdr_t *h, pserv_status_t status, const void *data,
                               size_t len)
{
    if (m->ctl_expect != h->type || m->ctl_req != h->req_id || m->ctl_done) {
        ps_debug("stale %s reply (req %llu) ignored", ps_wire_type_name(h->type), (unsigned long long)h->req_id);
        return;
    }
    if (m->ctl_reply) {
        ps_ctl_reply_t *r = m->ctl_reply;
        r->len = len;
        r->round = h->round;
        r->chunk = h->chunk;
        r->offset = h->offset;
        r->answered = 1;
        if (r->buf && r->cap) memcpy(r->buf, data, len < r->cap ? len : r->cap);
    }
    m->ctl_status = status;
    m->ctl_done = 1;
    pthread_cond_broadcast(&m->cond);
}

/* Servers that joined (lock held): the role makes room, then their addresses go into the job. */
static pserv_status_t ps_member_add_servers(ps_member_t *m, const ps_view_t *v)
{
    uint32_t old_n = m->job.num_servers;
    pserv_status_t st = m->hooks.servers_added ? m->hooks.servers_added(m->hooks.arg, old_n, v->num_servers) : PSERV_OK;
    if (st < 0) return st;
    for (uint32_t s = old_n; s < v->num_servers; s++) {
        snprintf(m->job.servers[s], PS_ADDR_MAX, "%s", v->addrs[s]);
        ps_info("server %u joined the job at %s", s, v->addrs[s]);
    }
    m->job.num_servers = v->num_servers;
    return PSERV_OK;
}

/* Gives a decoded job's server list room for every server the job may have. */
static pserv_status_t ps_member_servers_room(ps_job_t *job)
{
    char(*servers)[PS_ADDR_MAX] = realloc(job->servers, PS_VIEW_MAX_SERVERS * sizeof(*servers));
    if (servers == NULL) return PSERV_ERR_NO_MEMORY;
    memset(servers + job->num_servers, 0, (PS_VIEW_MAX_SERVERS - job->num_servers) * sizeof(*servers));
    job->servers = servers;
    return PSERV_OK;
}

/* Installs a newer view (progress thread): swapped under the lock, then the role hears of it. */
static void ps_member_install(ps_member_t *m, const ps_wire_hdr_t *h, const void *data, size_t len)
{
    ps_reader_t r;
    ps_view_t *v = malloc(sizeof(*v));
    if (v == NULL) {
        ps_error("no memory for view %u", h->map_version);
        return;
    }
    ps_reader_init(&r, data, len);
    pserv_status_t st = ps_view_decode(&r, v);
    if (st < 0 || v->version != h->map_version || v->num_servers < m->job.num_servers ||
        v->num_workers != m->job.num_workers) {
        ps_warn("view %u from the coordinator rejected: %s", h->map_version,
                st < 0 ? pserv_strerror(st) : "it does not match the job");
        if (st == PSERV_OK) ps_view_free(v);
        free(v);
        return;
    }
    pthread_mutex_lock(&m->lock);
    ps_view_t *old = m->view;
    if (old && old->version >= v->version) { /* a late, older view */
        pthread_mutex_unlock(&m->lock);
        ps_view_free(v);
        free(v);
        return;
    }
    if (v->num_servers > m->job.num_servers && ps_member_add_servers(m, v) < 0) {
        pthread_mutex_unlock(&m->lock);
        ps_error("view %u refused: no room for its %u servers", v->version, v->num_servers);
        ps_view_free(v);
        free(v);
        return;
    }
    m->view = v;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    ps_debug("view %u installed", v->version);
    if (m->hooks.view_changed) m->hooks.view_changed(m->hooks.arg, old, v);
    if (old) {
        ps_view_free(old);
        free(old);
    }
}

/* A peer's reason text, bounded and printable, as we will print it. */
static void ps_member_reason(char out[PS_WIRE_REASON_MAX + 1], const void *data, size_t len)
{
    size_t n = len < PS_WIRE_REASON_MAX ? len : PS_WIRE_REASON_MAX;
    memcpy(out, data, n);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] == 0x7f) out[i] = ' ';
}

/* The restarted coordinator took us back (or refused: a job that is not ours to rejoin). */
static void ps_member_on_rejoined(ps_member_t *m, const ps_wire_hdr_t *h, const void *data, size_t len)
{
    pthread_mutex_lock(&m->lock);
    int ours = m->rejoining && h->req_id == m->rejoin_req;
    pthread_mutex_unlock(&m->lock);
    if (!ours) return;
    if (h->status < 0) {
        ps_error("the coordinator at %s refused to take this member back: %s", m->coord_addr,
                 pserv_strerror(h->status));
        pthread_mutex_lock(&m->lock);
        m->rejoining = 0;
        m->coord_failed = 1;
        pthread_mutex_unlock(&m->lock);
        return;
    }
    ps_reader_t r;
    ps_job_t job = {0};
    uint32_t rank;
    ps_reader_init(&r, data, len);
    if (ps_job_decode(&r, &job, &rank) == PSERV_OK) /* ours already; the view after it may be newer */
        ps_member_install(m, h, (const uint8_t *)data + r.pos, len - r.pos);
    ps_job_free(&job);
    pthread_mutex_lock(&m->lock);
    m->rejoining = 0;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    ps_warn("rejoined the coordinator at %s", m->coord_addr);
    if (m->hooks.rejoined) m->hooks.rejoined(m->hooks.arg);
}

static void ps_member_on_join_reply(ps_member_t *m, const ps_wire_hdr_t *h, const void *data, size_t len)
{
    pserv_status_t st = h->status;
    ps_job_t job = {0};
    uint32_t rank = UINT32_MAX;
    ps_view_t *v = NULL;
    pthread_mutex_lock(&m->lock);
    int ours = m->ctl_expect == h->type && m->ctl_req == h->req_id && !m->ctl_done && m->job.servers == NULL;
    pthread_mutex_unlock(&m->lock);
    if (!ours) return;
    if (st == PSERV_OK) {
        ps_reader_t r;
        ps_reader_init(&r, data, len);
        st = ps_job_decode(&r, &job, &rank);
        if (st == PSERV_OK) st = ps_member_servers_room(&job);
        if (st == PSERV_OK && (v = malloc(sizeof(*v))) == NULL) st = PSERV_ERR_NO_MEMORY;
        if (st == PSERV_OK && (st = ps_view_decode(&r, v)) < 0) {
            free(v);
            v = NULL;
        }
        if (st == PSERV_OK && (v->num_servers != job.num_servers || v->num_workers != job.num_workers)) {
            st = PSERV_ERR_BAD_MESSAGE;
            ps_view_free(v);
            free(v);
            v = NULL;
        }
        if (st < 0) ps_job_free(&job);
    }
    char why[PS_WIRE_REASON_MAX + 1] = "";
    if (h->status < 0) ps_member_reason(why, data, len);
    pthread_mutex_lock(&m->lock);
    if (st == PSERV_OK) {
        m->job = job;
        m->rank = rank;
        m->view = v;
        m->join_round = h->round;
    } else if (why[0]) {
        snprintf(m->last_error, sizeof(m->last_error), "%s", why);
    }
    ps_member_ctl_done(m, h, st, NULL, 0);
    pthread_mutex_unlock(&m->lock);
    if (v && m->hooks.view_changed) m->hooks.view_changed(m->hooks.arg, NULL, v);
}

static void ps_member_on_abort(ps_member_t *m, const void *data, size_t len)
{
    char why[PS_WIRE_REASON_MAX + 1];
    ps_member_reason(why, data, len);
    pthread_mutex_lock(&m->lock);
    int first = !m->aborted;
    __atomic_store_n(&m->aborted, 1, __ATOMIC_RELAXED); /* also read without the lock */
    snprintf(m->last_error, sizeof(m->last_error), "%s", why); /* the status says the job failed */
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    if (first) {
        /* The coordinator waits for this before it closes (its close could overtake the ABORT). */
        ps_wire_hdr_t ack;
        ps_wire_hdr_init(&ack, PS_MSG_ABORT_ACK);
        ack.sender = m->rank;
        pthread_mutex_lock(&m->lock);
        ps_tp_peer_t *coord = m->coord;
        pthread_mutex_unlock(&m->lock);
        if (coord) ps_send_msg(coord, &ack, NULL, 0, NULL, NULL, NULL);
        ps_warn("the job failed: %s", why);
        if (m->hooks.aborted) m->hooks.aborted(m->hooks.arg);
    }
}

int ps_member_rx(ps_member_t *m, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len)
{
    pthread_mutex_lock(&m->lock);
    int from_coord = peer == m->coord;
    pthread_mutex_unlock(&m->lock);
    if (!from_coord) return 0;
    __atomic_store_n(&m->last_coord_ms, ps_now_ms(), __ATOMIC_RELAXED);
    switch (h->type) {
    case PS_MSG_HEARTBEAT:
        return 1;
    case PS_MSG_VIEW:
        ps_member_install(m, h, data, len);
        return 1;
    case PS_MSG_ABORT:
        ps_member_on_abort(m, data, len);
        return 1;
    case PS_MSG_JOIN_REPLY:
        if (h->flags & PS_WIRE_FLAG_RETRY) ps_member_on_rejoined(m, h, data, len);
        else ps_member_on_join_reply(m, h, data, len);
        return 1;
    case PS_MSG_CHECKPOINT_AT:
        if (m->hooks.checkpoint_at) m->hooks.checkpoint_at(m->hooks.arg, h->round);
        return 1;
    default:
        break;
    }
    pthread_mutex_lock(&m->lock);
    switch (h->type) {
    case PS_MSG_BARRIER_REPLY:
    case PS_MSG_LEAVE_REPLY:
    case PS_MSG_NODE_BCAST_REPLY:
    case PS_MSG_TENSOR_REPLY:
        ps_member_ctl_done(m, h, h->status, data, len);
        break;
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

pserv_status_t ps_member_notify(ps_member_t *m, const ps_wire_hdr_t *h, void *data, size_t len)
{
    pthread_mutex_lock(&m->lock);
    ps_tp_peer_t *coord = m->coord_failed ? NULL : m->coord;
    pthread_mutex_unlock(&m->lock);
    if (coord == NULL) {
        free(data);
        return PSERV_ERR_UNREACHABLE;
    }
    return ps_send_msg(coord, h, data, len, NULL, data ? ps_send_free_cb : NULL, data); /* frees it on failure too */
}

int ps_member_peer_failed(ps_member_t *m, ps_tp_peer_t *peer)
{
    pthread_mutex_lock(&m->lock);
    if (peer != m->coord) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    m->coord_failed = 1;
    m->rejoining = 0; /* a rejoin that failed is tried again next tick */
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return 1;
}
