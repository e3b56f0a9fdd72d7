/*
 * The worker's data path: requests (push, pull, push-pull) split into one message per chunk,
 * each sent to the shard that owns the chunk; replies count down the request. Pull replies that
 * arrive by rendezvous land straight in the caller's buffer.
 *
 * Data-path sends have no completion callback: a send can only fail when its server fails, and
 * then peer_failed fails every chunk still outstanding on that server.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "progress.h"
#include "worker_internal.h"

#define PS_REQ_ID(gen, slot) (((uint64_t)(gen) << 32) | (uint32_t)(slot))
/* A spinning wait looks at the request under the lock at least this often (an abort, a deadline). */
#define PS_WAIT_SPIN_SLICE_NS 1000000u

pserv_status_t ps_worker_reqs_init(pserv_worker_h w, uint32_t max_requests)
{
    uint32_t nservers = w->m.job.num_servers;
    w->nreqs = max_requests;
    w->reqs = calloc(max_requests, sizeof(*w->reqs));
    w->req_counts = calloc((size_t)max_requests * nservers, sizeof(*w->req_counts));
    w->free_slots = malloc(max_requests * sizeof(*w->free_slots));
    if (w->reqs == NULL || w->req_counts == NULL || w->free_slots == NULL) {
        ps_worker_reqs_fini(w);
        return PSERV_ERR_NO_MEMORY;
    }
    for (uint32_t i = 0; i < max_requests; i++) {
        w->reqs[i].per_server = w->req_counts + (size_t)i * nservers;
        w->reqs[i].gen = 1;
        w->free_slots[i] = max_requests - 1 - i;
    }
    w->nfree = max_requests;
    pserv_status_t st = ps_worker_group_init(w);
    if (st < 0) ps_worker_reqs_fini(w);
    return st;
}

pserv_status_t ps_worker_servers_added(void *arg, uint32_t old_n, uint32_t new_n)
{
    pserv_worker_h w = arg;
    if (w->servers != NULL) {
        ps_tp_peer_t **servers = realloc(w->servers, new_n * sizeof(*servers));
        if (servers == NULL) return PSERV_ERR_NO_MEMORY;
        w->servers = servers;
        int *failed = realloc(w->server_failed, new_n * sizeof(*failed));
        if (failed == NULL) return PSERV_ERR_NO_MEMORY;
        w->server_failed = failed;
        int *greeted = realloc(w->server_greeted, new_n * sizeof(*greeted));
        if (greeted == NULL) return PSERV_ERR_NO_MEMORY;
        w->server_greeted = greeted;
        for (uint32_t s = old_n; s < new_n; s++) {
            servers[s] = NULL;
            failed[s] = greeted[s] = 0;
        }
    }
    if (w->reqs == NULL) return PSERV_OK; /* sized by the job when it is made */
    /* Every slot's per-server counts, at the new stride. */
    uint32_t *counts = calloc((size_t)w->nreqs * new_n, sizeof(*counts));
    if (counts == NULL || ps_worker_group_grow(w, old_n, new_n) < 0) {
        free(counts);
        return PSERV_ERR_NO_MEMORY;
    }
    for (uint32_t i = 0; i < w->nreqs; i++) {
        memcpy(counts + (size_t)i * new_n, w->reqs[i].per_server, old_n * sizeof(*counts));
        w->reqs[i].per_server = counts + (size_t)i * new_n;
    }
    free(w->req_counts);
    w->req_counts = counts;
    return PSERV_OK;
}

void ps_worker_reqs_fini(pserv_worker_h w)
{
    ps_worker_group_fini(w);
    for (uint32_t i = 0; w->reqs && i < w->nreqs; i++) free(w->reqs[i].chunks);
    free(w->reqs);
    free(w->req_counts);
    free(w->free_slots);
    w->reqs = NULL;
    w->req_counts = w->free_slots = NULL;
    w->nreqs = w->nfree = 0;
}

pserv_status_t ps_worker_req_alloc(pserv_worker_h w, ps_msg_type_t type, const ps_wtensor_t *t, void *dst,
                                   uint64_t *id)
{
    if (w->nfree == 0) return PSERV_ERR_NO_RESOURCE;
    uint32_t slot = w->free_slots[--w->nfree];
    ps_req_t *r = &w->reqs[slot];
    r->state = PS_REQ_ACTIVE;
    r->pending = 0;
    r->status = PSERV_OK;
    r->type = type;
    r->tensor = t;
    r->dst = dst;
    r->src = NULL;
    r->base = 0;
    r->first = 0;
    r->end = t ? t->layout.num_chunks : 0;
    memset(r->per_server, 0, w->m.job.num_servers * sizeof(*r->per_server));
    *id = PS_REQ_ID(r->gen, slot);
    return PSERV_OK;
}

ps_req_t *ps_worker_req_find(pserv_worker_h w, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    if (slot >= w->nreqs) return NULL;
    ps_req_t *r = &w->reqs[slot];
    return r->state == PS_REQ_ACTIVE && r->gen == (uint32_t)(id >> 32) ? r : NULL;
}

static void ps_worker_req_free(pserv_worker_h w, ps_req_t *r)
{
    r->state = PS_REQ_FREE;
    r->gen++;
    w->free_slots[w->nfree++] = (uint32_t)(r - w->reqs);
}

static void ps_worker_req_fail(ps_req_t *r, pserv_status_t st)
{
    if (r->status == PSERV_OK) r->status = st;
}

static int ps_worker_is_data(uint16_t type)
{
    return type == PS_MSG_PUSH || type == PS_MSG_PULL || type == PS_MSG_PUSH_PULL;
}

/* A server gone whose chunks another takes over (lock held): a backup's (replicas), or it was
 * being drained (its chunks move; it ends once it holds none). Else its requests fail. */
static int ps_worker_taken_over(pserv_worker_h w, uint32_t s)
{
    return w->m.view->replicas > 0 || (s < w->m.view->num_servers && w->m.view->server_state[s] >= PS_MEMBER_LEAVING);
}

void ps_worker_req_send(pserv_worker_h w, uint64_t id, uint32_t server, const ps_wire_hdr_t *h, const void *data,
                        size_t len, ps_tp_send_cb_t cb, void *cb_arg)
{
    ps_req_t *r = ps_worker_req_find(w, id);
    pserv_status_t st = PSERV_ERR_PEER_FAILED;
    if (server >= w->m.job.num_servers) {
        /* Not placed in our view (cannot happen for a registered tensor): the view is behind. */
        st = PSERV_ERR_VIEW_CHANGED;
        if (cb) cb(cb_arg, st);
    } else if (!w->server_failed[server]) {
        /* Inside the calling thread's group a small chunk message waits in its server's batch. */
        if (cb == NULL && ps_worker_group_add(w, server, h, data, len)) st = PSERV_OK;
        else st = ps_send_msg(w->servers[server], h, data, len, NULL, cb, cb_arg);
    } else if (cb == NULL && ps_worker_is_data(h->type) && ps_worker_taken_over(w, server)) {
        st = PSERV_OK; /* another server takes over its chunks: the failover sends it (ps_worker_failover) */
    } else if (cb) {
        cb(cb_arg, st);
    }
    if (st < 0) {
        ps_worker_req_fail(r, st);
        return;
    }
    r->pending++;
    r->per_server[server]++;
}

/*
 * Sends chunk c of a request to its owner in the installed view (lock held): the whole message
 * from the request (type, tensor, the caller's buffer) and the chunk's round. flags marks a
 * re-send (PS_WIRE_FLAG_RETRY).
 */
static void ps_worker_send_chunk(pserv_worker_h w, ps_req_t *r, uint64_t id, uint32_t c, uint64_t round,
                                 uint32_t flags)
{
    const ps_wtensor_t *t = r->tensor;
    const ps_layout_t *l = &t->layout;
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, r->type);
    h.flags = flags;
    h.sender = w->m.rank;
    h.req_id = id;
    h.key = t->key;
    h.chunk = c;
    h.dtype = t->desc.dtype;
    h.offset = ps_layout_chunk_offset(l, c);
    h.round = round;
    h.map_version = w->m.view->version;
    const void *payload = NULL;
    if (r->type != PS_MSG_PULL) {
        h.length = ps_layout_chunk_len(l, c) * l->elem_size;
        payload = r->src + (h.offset - r->base) * l->elem_size;
    }
    uint32_t owner = ps_view_owner(w->m.view, t->key, c);
    r->chunks[c - r->first] = (ps_req_chunk_t){.server = owner, .round = round, .flags = flags};
    if (owner < w->m.job.num_servers && !w->server_greeted[owner] && !w->server_failed[owner]) {
        /* A server that joined and has not answered our HELLO: the chunk waits for it (counted as
         * sent there, so its failure or a new view handles it like any other). */
        r->chunks[c - r->first].held = 1;
        r->pending++;
        r->per_server[owner]++;
        return;
    }
    ps_worker_req_send(w, id, owner, &h, payload, h.length, NULL, NULL);
}

void ps_worker_greeted(pserv_worker_h w, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    uint32_t s = h->sender;
    if (s >= w->m.job.num_servers || w->servers[s] != peer || w->server_greeted[s]) return;
    if (h->status < 0) {
        ps_warn("server %u at %s, which joined the job, refused our HELLO: %s", s, w->m.job.servers[s],
                pserv_strerror(h->status));
        return;
    }
    w->server_greeted[s] = 1;
    for (uint32_t i = 0; i < w->nreqs; i++) {
        ps_req_t *r = &w->reqs[i];
        if (r->state != PS_REQ_ACTIVE || !ps_worker_is_data(r->type)) continue;
        for (uint32_t c = r->first; c < r->end; c++) {
            ps_req_chunk_t *k = &r->chunks[c - r->first];
            if (!k->held || k->server != s) continue;
            r->per_server[s]--;
            r->pending--; /* the send counts itself */
            ps_worker_send_chunk(w, r, PS_REQ_ID(r->gen, i), c, k->round, k->flags);
        }
        if (r->pending == 0) ps_worker_wake(w);
    }
}

/* The chunks [*first, *end) that elements [offset, offset + count) cover, if they are whole. */
static pserv_status_t ps_worker_range_chunks(pserv_worker_h w, const ps_wtensor_t *t, size_t offset, size_t count,
                                             uint32_t *first, uint32_t *end)
{
    const ps_layout_t *l = &t->layout;
    size_t chunk = l->chunk_elems, stop = offset + count;
    if (count == 0 || offset >= l->count || count > l->count - offset || offset % chunk != 0 ||
        (stop % chunk != 0 && stop != l->count)) {
        snprintf(w->m.last_error, sizeof(w->m.last_error),
                 "range [%zu, %zu) of tensor %llu (%zu elements) is not whole chunks of %zu elements", offset, stop,
                 (unsigned long long)t->key, (size_t)l->count, chunk);
        return PSERV_ERR_INVALID_ARG;
    }
    *first = (uint32_t)(offset / chunk);
    *end = (uint32_t)((stop + chunk - 1) / chunk);
    return PSERV_OK;
}

/* Issues one message per chunk of a range of a tensor; the caller holds the lock. grad and dst
 * hold the range's elements. count == SIZE_MAX means the whole tensor. */
static pserv_status_t ps_worker_issue(pserv_worker_h w, ps_msg_type_t type, uint64_t key, size_t offset,
                                      size_t count, const void *grad, void *dst, pserv_request_t *req)
{
    ps_wtensor_t *t = ps_keymap_get(&w->tensors, key);
    uint64_t id;
    uint32_t first, end;
    if (w->m.aborted) return PSERV_ERR_JOB_FAILED; /* last_error says why */
    if (t == NULL) {
        snprintf(w->m.last_error, sizeof(w->m.last_error), "key %llu is not registered", (unsigned long long)key);
        return PSERV_ERR_UNKNOWN_KEY;
    }
    if (count == SIZE_MAX) count = t->layout.count;
    pserv_status_t st = ps_worker_range_chunks(w, t, offset, count, &first, &end);
    if (st < 0) return st;
    st = ps_worker_req_alloc(w, type, t, dst, &id);
    if (st < 0) {
        snprintf(w->m.last_error, sizeof(w->m.last_error), "all %u request slots are in flight", w->nreqs);
        return st;
    }
    ps_req_t *r = &w->reqs[(uint32_t)id];
    if (r->chunks_cap < end - first) {
        ps_req_chunk_t *more = realloc(r->chunks, (end - first) * sizeof(*more));
        if (more == NULL) {
            ps_worker_req_free(w, r);
            return PSERV_ERR_NO_MEMORY;
        }
        r->chunks = more;
        r->chunks_cap = end - first;
    }
    r->base = offset;
    r->src = grad;
    r->first = first;
    r->end = end;
    size_t esize = t->layout.elem_size;
    for (uint32_t c = first; c < end; c++) {
        ps_worker_send_chunk(w, r, id, c, t->rounds[c], 0);
        if (type != PS_MSG_PULL) t->rounds[c]++;
    }
    if (type != PS_MSG_PULL) PS_WSTAT_ADD(w, bytes_pushed, count * esize);
    *req = id;
    return PSERV_OK;
}

static pserv_status_t ps_worker_issue_locked(pserv_worker_h w, ps_msg_type_t type, uint64_t key, size_t offset,
                                             size_t count, const void *grad, void *dst, pserv_request_t *req)
{
    PS_CHECK_ARG(w && req && (type == PS_MSG_PULL || grad) && (type == PS_MSG_PUSH || dst));
    pthread_mutex_lock(&w->m.lock);
    pserv_status_t st = ps_worker_issue(w, type, key, offset, count, grad, dst, req);
    pthread_mutex_unlock(&w->m.lock);
    return st;
}

pserv_status_t pserv_worker_push(pserv_worker_h worker, uint64_t key, const void *grad, pserv_request_t *req)
{
    return ps_worker_issue_locked(worker, PS_MSG_PUSH, key, 0, SIZE_MAX, grad, NULL, req);
}

pserv_status_t pserv_worker_pull(pserv_worker_h worker, uint64_t key, void *dst, pserv_request_t *req)
{
    return ps_worker_issue_locked(worker, PS_MSG_PULL, key, 0, SIZE_MAX, NULL, dst, req);
}

pserv_status_t pserv_worker_push_pull(pserv_worker_h worker, uint64_t key, const void *grad, void *dst,
                                      pserv_request_t *req)
{
    return ps_worker_issue_locked(worker, PS_MSG_PUSH_PULL, key, 0, SIZE_MAX, grad, dst, req);
}

pserv_status_t pserv_worker_push_range(pserv_worker_h worker, uint64_t key, size_t offset, size_t count,
                                       const void *grad, pserv_request_t *req)
{
    return ps_worker_issue_locked(worker, PS_MSG_PUSH, key, offset, count, grad, NULL, req);
}

pserv_status_t pserv_worker_pull_range(pserv_worker_h worker, uint64_t key, size_t offset, size_t count, void *dst,
                                       pserv_request_t *req)
{
    return ps_worker_issue_locked(worker, PS_MSG_PULL, key, offset, count, NULL, dst, req);
}

pserv_status_t pserv_worker_push_pull_range(pserv_worker_h worker, uint64_t key, size_t offset, size_t count,
                                            const void *grad, void *dst, pserv_request_t *req)
{
    return ps_worker_issue_locked(worker, PS_MSG_PUSH_PULL, key, offset, count, grad, dst, req);
}

pserv_status_t pserv_worker_tensor_info(pserv_worker_h worker, uint64_t key, size_t *count, size_t *chunk_elems)
{
    PS_CHECK_ARG(worker && count && chunk_elems);
    pthread_mutex_lock(&worker->m.lock);
    const ps_wtensor_t *t = ps_keymap_get(&worker->tensors, key);
    if (t) {
        *count = t->layout.count;
        *chunk_elems = t->layout.chunk_elems;
    } else {
        snprintf(worker->m.last_error, sizeof(worker->m.last_error), "key %llu is not registered",
                 (unsigned long long)key);
    }
    pthread_mutex_unlock(&worker->m.lock);
    return t ? PSERV_OK : PSERV_ERR_UNKNOWN_KEY;
}

/*
 * Spins with the lock released until a request completes (wake_seq moves) or until_ns; returns
 * with the lock held again. The caller re-checks its request under the lock. While it spins it
 * progresses the transport itself whenever the progress thread is not (Open MPI's progress on
 * wait): a reply is then handled on this thread, with no hand-off at all.
 */
static void ps_worker_spin(pserv_worker_h w, uint64_t until_ns)
{
    unsigned seq = atomic_load_explicit(&w->wake_seq, memory_order_acquire);
    pthread_mutex_unlock(&w->m.lock);
    while (atomic_load_explicit(&w->wake_seq, memory_order_acquire) == seq && ps_now_ns() < until_ns)
        if (!ps_tp_progress(w->m.tp)) ps_spin_pause();
    pthread_mutex_lock(&w->m.lock);
}

pserv_status_t pserv_worker_wait(pserv_worker_h worker, pserv_request_t req, int timeout_ms)
{
    ps_deadline_t deadline;
    PS_CHECK_ARG(worker);
    ps_deadline_set(&deadline, timeout_ms);
    /* PSERV_PROGRESS: spin for spin_ns (bounded by the deadline), then sleep on the condition. */
    uint64_t spin_end = ps_spin_end(worker->spin_ns, timeout_ms), now;
    pthread_mutex_lock(&worker->m.lock);
    ps_req_t *r = ps_worker_req_find(worker, req);
    pserv_status_t st = PSERV_ERR_INVALID_ARG;
    if (r == NULL) goto out;
    st = PSERV_OK;
    while (r->pending > 0 && !worker->m.aborted && st == PSERV_OK) {
        if (spin_end != 0 && (now = ps_now_ns()) < spin_end) {
            ps_worker_spin(worker, spin_end - now > PS_WAIT_SPIN_SLICE_NS ? now + PS_WAIT_SPIN_SLICE_NS : spin_end);
            continue;
        }
        st = ps_cond_wait(&worker->m.cond, &worker->m.lock, &deadline);
    }
    if (r->pending > 0 && !worker->m.aborted) {
        st = PSERV_ERR_TIMED_OUT;
        goto out;
    }
    /* Once the job failed nothing more will come: the request ends with that. */
    st = r->pending > 0 ? PSERV_ERR_JOB_FAILED : r->status;
    /* A shard's "the job failed" can overtake the coordinator's ABORT, which says why, and so can
     * a shard that went away because the job was aborted (it closed before the ABORT reached us:
     * shared memory has no single ordered channel): give the reason a moment (a heartbeat) to
     * arrive, so last_error names the member that died. */
    if ((st == PSERV_ERR_JOB_FAILED || st == PSERV_ERR_PEER_FAILED) && !worker->m.aborted) {
        ps_deadline_t reason;
        ps_deadline_set(&reason, (int)worker->m.job.heartbeat_ms);
        while (!worker->m.aborted && ps_cond_wait(&worker->m.cond, &worker->m.lock, &reason) == PSERV_OK) {
        }
    }
    if (r->type == PS_MSG_PUSH || r->type == PS_MSG_PULL || r->type == PS_MSG_PUSH_PULL) {
        PS_WSTAT_ADD(worker, requests, 1);
        if (st < 0) PS_WSTAT_ADD(worker, errors, 1);
    }
    ps_worker_req_free(worker, r);
out:
    pthread_mutex_unlock(&worker->m.lock);
    return st;
}

pserv_status_t pserv_worker_test(pserv_worker_h worker, pserv_request_t req, int *done)
{
    PS_CHECK_ARG(worker && done);
    pthread_mutex_lock(&worker->m.lock);
    ps_req_t *r = ps_worker_req_find(worker, req);
    if (r) *done = r->pending == 0;
    pthread_mutex_unlock(&worker->m.lock);
    return r ? PSERV_OK : PSERV_ERR_INVALID_ARG;
}

/* The reply type each request type expects. */
static ps_msg_type_t ps_worker_reply_type(ps_msg_type_t sent)
{
    return sent == PS_MSG_PUSH_PULL ? PS_MSG_PULL_REPLY : (ps_msg_type_t)(sent + 1);
}

/*
 * Finds the request a server's reply answers and checks it: sender, type, and for values the
 * key, chunk, offset and length against the tensor. Returns NULL (and *why) if it does not fit.
 */
static ps_req_t *ps_worker_match(pserv_worker_h w, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const char **why)
{
    ps_req_t *r = NULL;
    *why = NULL;
    if (h->sender >= w->m.job.num_servers || w->servers[h->sender] != peer) *why = "reply from an unknown server";
    else if ((r = ps_worker_req_find(w, h->req_id)) == NULL) *why = "reply to no request in flight";
    else if (ps_worker_reply_type(r->type) != h->type) *why = "reply of the wrong type";
    else if (r->per_server[h->sender] == 0) *why = "more replies than messages sent";
    else if (ps_worker_is_data(r->type) && h->chunk >= r->first && h->chunk < r->end &&
             r->chunks[h->chunk - r->first].server != h->sender)
        *why = "reply from a server the chunk no longer waits on"; /* it moved, and was re-sent */
    else if (h->type == PS_MSG_PULL_REPLY && h->status >= 0) {
        const ps_layout_t *l = &r->tensor->layout;
        if (h->key != r->tensor->key || h->chunk < r->first || h->chunk >= r->end)
            *why = "values of another tensor or chunk";
        else if (h->offset != ps_layout_chunk_offset(l, h->chunk)) *why = "offset does not match the chunk";
        else if (h->length != ps_layout_chunk_len(l, h->chunk) * l->elem_size) *why = "length does not match the chunk";
        else if (h->dtype != r->tensor->desc.dtype) *why = "wrong dtype";
    }
    return *why ? NULL : r;
}

pserv_status_t ps_worker_rx_buffer(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, size_t len,
                                   void **buf)
{
    pserv_worker_h w = arg;
    ps_wire_hdr_t h;
    const char *why;
    if (ps_wire_decode(hdr, hdr_len, len, &h, &why) < 0) {
        ps_warn("%zu-byte message from %s refused before it moved: %s", len, ps_tp_peer_name(peer), why);
        return PSERV_ERR_BAD_MESSAGE; /* a size its type may not carry: never allocated */
    }
    if (h.type == PS_MSG_BATCH) {
        *buf = ps_worker_rx_get(w, len); /* bounded by its type; NULL: the transport holds it */
        return PSERV_OK;
    }
    if (h.type != PS_MSG_PULL_REPLY || h.status < 0) return PSERV_OK; /* bounded by its type: the transport holds it */
    pthread_mutex_lock(&w->m.lock);
    ps_req_t *r = ps_worker_match(w, peer, &h, &why);
    if (r) *buf = r->dst + (h.offset - r->base) * r->tensor->layout.elem_size;
    pthread_mutex_unlock(&w->m.lock);
    if (r == NULL) ps_debug("values from %s refused before they moved: %s", ps_tp_peer_name(peer), why);
    return r ? PSERV_OK : PSERV_ERR_BAD_MESSAGE; /* values nobody asked for are never allocated */
}

/*
 * A shard refused a chunk message because it does not own the chunk in its view. If our view
 * names another owner, the message goes there (same round: the resend is idempotent) and the
 * request keeps waiting; returns 1 then. Registration handles its own refusals (it re-defines).
 */
static int ps_worker_reroute(pserv_worker_h w, ps_req_t *r, const ps_wire_hdr_t *h)
{
    if (r->type != PS_MSG_PUSH && r->type != PS_MSG_PULL && r->type != PS_MSG_PUSH_PULL) return 0;
    if (h->key != r->tensor->key || h->chunk < r->first || h->chunk >= r->end) return 0;
    uint32_t owner = ps_view_owner(w->m.view, h->key, h->chunk);
    if (owner == UINT32_MAX || owner >= w->m.job.num_servers) return 0;
    /* The same owner: by our view it is the owner and has not installed that view yet (a failover
     * or a move just named it), or it is ahead of us and our next view moves the chunk (already on
     * its way): again, to it. Either way a view in flight ends it. */
    r->pending--; /* the re-send counts itself */
    /* With the round it was sent with: a refusal of a parked answer names the round it waited for. */
    ps_worker_send_chunk(w, r, h->req_id, h->chunk, r->chunks[h->chunk - r->first].round, PS_WIRE_FLAG_RETRY);
    ps_debug("key %llu chunk %u re-sent to server %u (view %u)", (unsigned long long)h->key, h->chunk, owner,
             w->m.view->version);
    if (r->pending == 0) ps_worker_wake(w);
    return 1;
}

void ps_worker_aborted(void *arg)
{
    pserv_worker_h w = arg;
    pthread_mutex_lock(&w->m.lock);
    for (uint32_t i = 0; i < w->nreqs; i++) {
        ps_req_t *r = &w->reqs[i];
        if (r->state != PS_REQ_ACTIVE || r->pending == 0) continue;
        ps_worker_req_fail(r, PSERV_ERR_JOB_FAILED);
        r->pending = 0;
        memset(r->per_server, 0, w->m.job.num_servers * sizeof(*r->per_server));
    }
    ps_worker_wake(w);
    pthread_mutex_unlock(&w->m.lock);
}

void ps_worker_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    pserv_worker_h w = arg;
    ps_wire_hdr_t h;
    const char *why;
    if (ps_wire_decode(hdr, hdr_len, len, &h, &why) < 0) {
        ps_warn("message from %s dropped: %s", ps_tp_peer_name(peer), why);
        ps_worker_rx_put(w, data); /* (a no-op unless it landed in a batch buffer) */
        return;
    }
    ps_member_heard(&w->m);
    if (ps_member_rx(&w->m, peer, &h, data, len)) {
        ps_worker_rx_put(w, data);
        return;
    }
    if (h.type == PS_MSG_BATCH) {
        ps_worker_rx_batch(w, peer, &h, data, len);
        return;
    }
    pthread_mutex_lock(&w->m.lock);
    if (h.type == PS_MSG_HELLO_REPLY && h.req_id == 0) ps_worker_greeted(w, peer, &h); /* a server that joined */
    else ps_worker_on_reply(w, peer, &h, data, len);
    pthread_mutex_unlock(&w->m.lock);
}

/* A refusal's reason, as a printable string (thread-local: valid until the next call). */
static const char *ps_worker_reason(const void *data, size_t len)
{
    static __thread char text[PS_WIRE_REASON_MAX + 1];
    size_t n = len < PS_WIRE_REASON_MAX ? len : PS_WIRE_REASON_MAX;
    for (size_t i = 0; i < n; i++) {
        char ch = ((const char *)data)[i];
        text[i] = ch >= 32 && ch < 127 ? ch : '?';
    }
    text[n] = '\0';
    return text;
}

void ps_worker_on_reply(pserv_worker_h w, ps_tp_peer_t *peer, const ps_wire_hdr_t *hp, const void *data, size_t len)
{
    const ps_wire_hdr_t h = *hp;
    const char *why;
    ps_req_t *r = ps_worker_match(w, peer, &h, &why);
    if (r == NULL) {
        ps_debug("%s from %s dropped: %s", ps_wire_type_name(h.type), ps_tp_peer_name(peer), why);
        return;
    }
    r->per_server[h.sender]--; /* answered, whether it is re-routed or completes */
    if (ps_worker_is_data(r->type) && h.chunk >= r->first && h.chunk < r->end)
        r->chunks[h.chunk - r->first].server = UINT32_MAX;
    if (h.status == PSERV_ERR_VIEW_CHANGED && ps_worker_reroute(w, r, &h)) return;
    if (h.status < 0) {
        /* Once aborted, last_error holds the coordinator's reason: nothing overwrites it. */
        if (r->status == PSERV_OK && !w->m.aborted && h.status != PSERV_ERR_JOB_FAILED)
            snprintf(w->m.last_error, sizeof(w->m.last_error), "worker %u, tensor %llu chunk %u: server %u refused it: %s",
                     w->m.rank, (unsigned long long)h.key, h.chunk, h.sender,
                     h.type == PS_MSG_REGISTER_REPLY && len > 0 ? ps_worker_reason(data, len) : pserv_strerror(h.status));
        if (h.status == PSERV_ERR_JOB_FAILED || h.status == PSERV_ERR_PEER_FAILED) w->saw_failure = 1;
        ps_worker_req_fail(r, h.status);
    } else if (h.type == PS_MSG_REGISTER_REPLY && h.key == r->tensor->key && h.chunk < r->tensor->layout.num_chunks) {
        /* The chunk's rounds so far (a resumed job's): its next push is that round. */
        ((ps_wtensor_t *)r->tensor)->rounds[h.chunk] = h.round;
    } else if (h.type == PS_MSG_PULL_REPLY) {
        /* The chunk's rounds so far: a worker that rejoined a running job pushes the next one. */
        ps_wtensor_t *t = (ps_wtensor_t *)r->tensor;
        if (h.round > t->rounds[h.chunk]) t->rounds[h.chunk] = h.round;
        uint8_t *dst = r->dst + (h.offset - r->base) * r->tensor->layout.elem_size;
        if (data != dst) memcpy(dst, data, len);
        PS_WSTAT_ADD(w, bytes_pulled, len);
    }
    if (--r->pending == 0) ps_worker_wake(w);
}

/*
 * Chunk messages still waiting on a server that failed, or that is no longer the chunk's owner in
 * the installed view (the coordinator promoted a backup, or moved the chunk): each goes to the
 * owner the view names, with the round it had, so the new owner counts it once (a round it has
 * already applied is acknowledged, not applied). A late answer from the old owner is dropped
 * (ps_worker_match). Until the view names a live owner they wait: the coordinator either fails
 * the server over or ends the job.
 */
static void ps_worker_failover(pserv_worker_h w)
{
    for (uint32_t i = 0; i < w->nreqs; i++) {
        ps_req_t *r = &w->reqs[i];
        if (r->state != PS_REQ_ACTIVE || !ps_worker_is_data(r->type)) continue;
        for (uint32_t c = r->first; c < r->end; c++) {
            ps_req_chunk_t *k = &r->chunks[c - r->first];
            if (k->server == UINT32_MAX) continue;
            uint32_t owner = ps_view_owner(w->m.view, r->tensor->key, c);
            if (owner == k->server || owner >= w->m.job.num_servers || w->server_failed[owner])
                continue; /* the view has not moved it (to a live server) yet */
            r->per_server[k->server]--;
            r->pending--; /* the re-send counts itself */
            ps_worker_send_chunk(w, r, PS_REQ_ID(r->gen, i), c, k->round, PS_WIRE_FLAG_RETRY);
            ps_debug("key %llu chunk %u re-sent to server %u, its owner now (view %u)", (unsigned long long)r->tensor->key,
                     c, owner, w->m.view->version);
        }
        if (r->pending == 0) ps_worker_wake(w);
    }
}

void ps_worker_view_changed(void *arg, const ps_view_t *old, const ps_view_t *now)
{
    pserv_worker_h w = arg;
    (void)old;
    pthread_mutex_lock(&w->m.lock);
    /* A server declared dead may still hold its connection (stopped, or cut off): it is done with;
     * so is one drained out of the job (its disconnect is no failure). */
    for (uint32_t s = 0; w->servers != NULL && s < w->m.job.num_servers && s < now->num_servers; s++) {
        if (w->server_failed[s] || (now->server_state[s] != PS_MEMBER_DEAD && now->server_state[s] != PS_MEMBER_LEFT))
            continue;
        if (now->server_state[s] == PS_MEMBER_DEAD) ps_warn("server %u at %s declared dead by the coordinator", s, w->m.job.servers[s]);
        else ps_info("server %u at %s left the job", s, w->m.job.servers[s]);
        w->server_failed[s] = 1;
    }
    ps_worker_connect_new(w); /* servers that joined */
    if (w->servers != NULL) ps_worker_failover(w);
    pthread_mutex_unlock(&w->m.lock);
}

void ps_worker_peer_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why)
{
    pserv_worker_h w = arg;
    if (ps_member_peer_failed(&w->m, peer)) {
        if (!w->leaving && w->m.job.servers != NULL) ps_warn("lost the coordinator at %s: %s", w->m.coord_addr, pserv_strerror(why));
        return;
    }
    pthread_mutex_lock(&w->m.lock);
    for (uint32_t s = 0; w->servers && s < w->m.job.num_servers; s++) {
        if (w->servers[s] != peer || w->server_failed[s]) continue;
        w->server_failed[s] = 1;
        int drained = w->m.view->server_state[s] == PS_MEMBER_LEAVING;
        if (w->leaving || drained) ps_debug("server %u at %s closed (we left, or it was drained)", s, w->m.job.servers[s]);
        else ps_warn("server %u at %s failed: %s", s, w->m.job.servers[s], pserv_strerror(why));
        if (!w->m.aborted && !drained)
            snprintf(w->m.last_error, sizeof(w->m.last_error), "server %u at %s failed", s, w->m.job.servers[s]);
        int failover = ps_worker_taken_over(w, s) && !w->leaving;
        if (!w->leaving && !failover) w->saw_failure = 1;
        for (uint32_t i = 0; i < w->nreqs; i++) {
            ps_req_t *r = &w->reqs[i];
            if (r->state != PS_REQ_ACTIVE || r->per_server[s] == 0) continue;
            if (failover && ps_worker_is_data(r->type)) continue; /* its backup takes over */
            r->pending -= r->per_server[s];
            r->per_server[s] = 0;
            ps_worker_req_fail(r, PSERV_ERR_PEER_FAILED);
        }
        if (failover) ps_worker_failover(w);
        ps_worker_wake(w);
    }
    pthread_mutex_unlock(&w->m.lock);
}
