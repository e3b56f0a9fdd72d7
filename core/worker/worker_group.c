/*
 * Groups and BATCH messages on a worker.
 *
 * Between pserv_worker_group_start and _end, the requests the owning thread issues are split
 * into chunk messages as usual (each counted on its request and server as if sent), but a
 * message of at most PS_BATCH_ENTRY_MAX payload bytes is appended to a batch for its server
 * instead of sent; a batch that fills goes out at once, the rest at group_end. Bigger chunks go
 * alone, as without a group. So a request's accounting, re-routing (a re-send from the progress
 * thread is never in a group) and failure paths are the ones of single messages.
 *
 * Replies: a shard coalesces its answers to one worker into a BATCH; each entry is handled as a
 * reply of its own (ps_worker_on_reply), under one lock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "worker_internal.h"

/* Batch buffers a worker keeps at most (16 MiB of 256 KiB): a step of small tensors in flight. */
#define PS_GROUP_MAX_BUFS 64u

/* Frees whatever the group holds (any of it may be NULL) and clears it; the lock is the caller's. */
static void ps_worker_group_release(pserv_worker_h w)
{
    ps_wgroup_t *g = &w->group;
    for (uint32_t i = 0; i < g->nbufs; i++) free(g->bufs[i]);
    free(g->bufs);
    free(g->meta);
    free(g->free_list);
    free(g->open);
    free(g->batch);
    free(w->rx_ents);
    free(w->rx_bufs);
    w->rx_ents = NULL;
    w->rx_bufs = NULL;
    memset(g, 0, sizeof(*g));
}

pserv_status_t ps_worker_group_init(pserv_worker_h w)
{
    ps_wgroup_t *g = &w->group;
    uint32_t nservers = w->m.job.num_servers;
    memset(g, 0, sizeof(*g));
    w->rx_ents = malloc(PS_WIRE_BATCH_MAX_ENTRIES * sizeof(*w->rx_ents));
    g->open = malloc(nservers * sizeof(*g->open));
    g->batch = calloc(nservers, sizeof(*g->batch));
    if (w->rx_ents == NULL || g->open == NULL || g->batch == NULL || pthread_mutex_init(&g->pool_lock, NULL) != 0) {
        ps_worker_group_release(w);
        return PSERV_ERR_NO_MEMORY;
    }
    for (uint32_t s = 0; s < nservers; s++) g->open[s] = -1;
    /* A batch must fit the shard's slot (a chunk's message), where it lands whole. */
    g->cap = PS_MIN((size_t)w->m.job.chunk_bytes + PS_TENSOR_DESC_LEN, (size_t)PS_WIRE_BATCH_MAX) / 64 * 64;
    return PSERV_OK;
}

pserv_status_t ps_worker_group_grow(pserv_worker_h w, uint32_t old_n, uint32_t new_n)
{
    ps_wgroup_t *g = &w->group;
    int32_t *open = realloc(g->open, new_n * sizeof(*open));
    if (open == NULL) return PSERV_ERR_NO_MEMORY;
    g->open = open;
    ps_batch_t *batch = realloc(g->batch, new_n * sizeof(*batch));
    if (batch == NULL) return PSERV_ERR_NO_MEMORY;
    g->batch = batch;
    for (uint32_t s = old_n; s < new_n; s++) {
        g->open[s] = -1;
        memset(&g->batch[s], 0, sizeof(g->batch[s]));
    }
    return PSERV_OK;
}

void ps_worker_group_fini(pserv_worker_h w)
{
    ps_wgroup_t *g = &w->group;
    if (g->open == NULL) return;
    pthread_mutex_destroy(&g->pool_lock);
    ps_worker_group_release(w);
}

#define PS_WORKER_RX_BUFS 8u

void *ps_worker_rx_get(pserv_worker_h w, size_t len)
{
    if (len > PS_WIRE_BATCH_MAX) return NULL;
    if (w->rx_bufs == NULL) { /* once, at the first batch reply */
        if ((w->rx_bufs = aligned_alloc(64, PS_WORKER_RX_BUFS * PS_WIRE_BATCH_MAX)) == NULL) return NULL;
        for (uint32_t i = 0; i < PS_WORKER_RX_BUFS; i++) w->rx_free[i] = i;
        w->rx_nfree = PS_WORKER_RX_BUFS;
    }
    if (w->rx_nfree == 0) return NULL;
    return w->rx_bufs + (size_t)w->rx_free[--w->rx_nfree] * PS_WIRE_BATCH_MAX;
}

void ps_worker_rx_put(pserv_worker_h w, const void *buf)
{
    const uint8_t *b = buf;
    if (w->rx_bufs == NULL || b < w->rx_bufs || b >= w->rx_bufs + PS_WORKER_RX_BUFS * PS_WIRE_BATCH_MAX) return;
    w->rx_free[w->rx_nfree++] = (uint32_t)((size_t)(b - w->rx_bufs) / PS_WIRE_BATCH_MAX);
}

void ps_worker_rx_abort(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *buf)
{
    (void)peer, (void)hdr, (void)hdr_len;
    ps_worker_rx_put(arg, buf);
}

/* The pool's tables, once (lock held); buffers come later, as needed. */
static pserv_status_t ps_worker_group_pool(pserv_worker_h w)
{
    ps_wgroup_t *g = &w->group;
    if (g->bufs != NULL) return PSERV_OK;
    g->bufs = calloc(PS_GROUP_MAX_BUFS, sizeof(*g->bufs));
    g->meta = calloc(PS_GROUP_MAX_BUFS, sizeof(*g->meta));
    g->free_list = malloc(PS_GROUP_MAX_BUFS * sizeof(*g->free_list));
    if (g->bufs == NULL || g->meta == NULL || g->free_list == NULL) {
        free(g->bufs);
        free(g->meta);
        free(g->free_list);
        g->bufs = NULL;
        g->meta = NULL;
        g->free_list = NULL;
        return PSERV_ERR_NO_MEMORY;
    }
    return PSERV_OK;
}

/* A free buffer (lock held): one handed back, else a new one while under the cap; -1 if none. */
static int32_t ps_worker_group_buf(pserv_worker_h w)
{
    ps_wgroup_t *g = &w->group;
    int32_t index = -1;
    pthread_mutex_lock(&g->pool_lock);
    if (g->nfree > 0) index = (int32_t)g->free_list[--g->nfree];
    pthread_mutex_unlock(&g->pool_lock);
    if (index >= 0 || g->nbufs == PS_GROUP_MAX_BUFS) return index;
    /* Only holders of m.lock grow the pool; completions only touch the free list. */
    if ((g->bufs[g->nbufs] = aligned_alloc(64, g->cap)) == NULL) return -1;
    g->meta[g->nbufs] = (ps_wbuf_t){w, g->nbufs};
    return (int32_t)g->nbufs++;
}

static void ps_worker_group_done(void *arg, pserv_status_t status)
{
    ps_wbuf_t *b = arg;
    ps_wgroup_t *g = &b->w->group;
    (void)status; /* a failed send means a failed server: peer_failed fails what it carried */
    pthread_mutex_lock(&g->pool_lock);
    g->free_list[g->nfree++] = b->index;
    pthread_mutex_unlock(&g->pool_lock);
}

typedef struct {
    pserv_worker_h w;
    uint32_t server;
    pserv_status_t st;
} ps_group_fail_t;

static void ps_worker_group_fail_entry(void *arg, const ps_wire_hdr_t *h)
{
    ps_group_fail_t *f = arg;
    ps_req_t *r = ps_worker_req_find(f->w, h->req_id);
    if (r == NULL || r->per_server[f->server] == 0) return; /* already failed with its server */
    r->per_server[f->server]--;
    if (r->status == PSERV_OK) r->status = f->st;
    if (--r->pending == 0) ps_worker_wake(f->w);
}

/* Sends the server's batch (lock held). */
static void ps_worker_group_flush(pserv_worker_h w, uint32_t server)
{
    ps_wgroup_t *g = &w->group;
    int32_t index = g->open[server];
    ps_batch_t *b = &g->batch[server];
    if (index < 0) return;
    g->open[server] = -1;
    if (w->server_failed[server]) {
        /* peer_failed already failed every message counted on it, these included. */
        ps_worker_group_done(&g->meta[index], PSERV_ERR_PEER_FAILED);
        return;
    }
    ps_wire_hdr_t h;
    ps_batch_hdr(b, w->m.rank, w->m.view->version, &h);
    PS_WSTAT_ADD(w, batches_sent, 1);
    PS_WSTAT_ADD(w, batched_messages, b->n);
    pserv_status_t st = ps_send_msg(w->servers[server], &h, b->buf, b->len, NULL,
                                    ps_worker_group_done, &g->meta[index]);
    if (st < 0) {
        /* The completion gave the buffer back already, but only a holder of m.lock (us) takes
         * one: its bytes are still these. */
        ps_group_fail_t f = {w, server, st};
        ps_batch_each(b->buf, b->len, ps_worker_group_fail_entry, &f);
    }
}

int ps_worker_group_add(pserv_worker_h w, uint32_t server, const ps_wire_hdr_t *h, const void *data, size_t len)
{
    ps_wgroup_t *g = &w->group;
    if (g->depth == 0 || !pthread_equal(g->owner, pthread_self()) || len > PS_BATCH_ENTRY_MAX || g->bufs == NULL)
        return 0;
    if (h->type != PS_MSG_PUSH && h->type != PS_MSG_PULL && h->type != PS_MSG_PUSH_PULL) return 0;
    ps_batch_t *b = &g->batch[server];
    if (g->open[server] >= 0 && !ps_batch_fits(b, len)) ps_worker_group_flush(w, server);
    if (g->open[server] < 0) {
        int32_t index = ps_worker_group_buf(w);
        if (index < 0) return 0; /* every buffer on the wire: this message goes alone */
        g->open[server] = index;
        ps_batch_init(b, g->bufs[index], g->cap);
        if (!ps_batch_fits(b, len)) { /* a batch smaller than the entry (tiny chunk sizes) */
            g->open[server] = -1;
            ps_worker_group_done(&g->meta[index], PSERV_OK);
            return 0;
        }
    }
    ps_batch_add(b, h, data, len);
    return 1;
}

pserv_status_t pserv_worker_group_start(pserv_worker_h worker)
{
    PS_CHECK_ARG(worker);
    pserv_status_t st = PSERV_OK;
    pthread_mutex_lock(&worker->m.lock);
    ps_wgroup_t *g = &worker->group;
    if (g->depth > 0 && !pthread_equal(g->owner, pthread_self())) {
        snprintf(worker->m.last_error, sizeof(worker->m.last_error),
                 "another thread has a group open on this worker");
        st = PSERV_ERR_NO_RESOURCE;
    } else if ((st = ps_worker_group_pool(worker)) < 0) {
        snprintf(worker->m.last_error, sizeof(worker->m.last_error), "no memory for the group's batches");
    } else {
        g->owner = pthread_self();
        g->depth++;
    }
    pthread_mutex_unlock(&worker->m.lock);
    return st;
}

pserv_status_t pserv_worker_group_end(pserv_worker_h worker)
{
    PS_CHECK_ARG(worker);
    pserv_status_t st = PSERV_OK;
    pthread_mutex_lock(&worker->m.lock);
    ps_wgroup_t *g = &worker->group;
    if (g->depth == 0 || !pthread_equal(g->owner, pthread_self())) {
        snprintf(worker->m.last_error, sizeof(worker->m.last_error), "no group of this thread is open");
        st = PSERV_ERR_INVALID_ARG;
    } else if (--g->depth == 0) {
        for (uint32_t s = 0; s < worker->m.job.num_servers; s++) ps_worker_group_flush(worker, s);
    }
    pthread_mutex_unlock(&worker->m.lock);
    return st;
}

/* A request that failed before it was issued, as a request: its wait returns the error. */
static pserv_request_t ps_worker_failed_request(pserv_worker_h w, pserv_status_t st)
{
    uint64_t id = 0;
    pthread_mutex_lock(&w->m.lock);
    if (ps_worker_req_alloc(w, PS_MSG_PUSH_PULL, NULL, NULL, &id) == PSERV_OK) w->reqs[(uint32_t)id].status = st;
    pthread_mutex_unlock(&w->m.lock);
    return id;
}

pserv_status_t pserv_worker_push_pull_many(pserv_worker_h worker, size_t n, const uint64_t *keys,
                                           const void *const *grads, void *const *dsts, pserv_request_t *reqs)
{
    PS_CHECK_ARG(worker && (n == 0 || (keys && grads && dsts && reqs)));
    pserv_status_t first = pserv_worker_group_start(worker);
    if (first < 0) return first;
    for (size_t i = 0; i < n; i++) {
        pserv_status_t st = pserv_worker_push_pull(worker, keys[i], grads[i], dsts[i], &reqs[i]);
        if (st < 0) {
            reqs[i] = ps_worker_failed_request(worker, st);
            if (first == PSERV_OK) first = st;
        }
    }
    pserv_status_t st = pserv_worker_group_end(worker);
    return first < 0 ? first : st;
}

void ps_worker_rx_batch(pserv_worker_h w, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const uint8_t *data, size_t len)
{
    uint32_t n;
    const char *why;
    if (w->rx_ents == NULL || ps_batch_decode(h, data, len, PS_BATCH_REPLIES, w->rx_ents, &n, &why) < 0) {
        ps_warn("BATCH of %zu bytes from %s dropped whole: %s", len, ps_tp_peer_name(peer),
                w->rx_ents ? why : "no entry table");
        ps_worker_rx_put(w, data);
        return;
    }
    PS_WSTAT_ADD(w, batches_received, 1);
    pthread_mutex_lock(&w->m.lock);
    for (uint32_t i = 0; i < n; i++)
        ps_worker_on_reply(w, peer, &w->rx_ents[i].h, data + w->rx_ents[i].off, (size_t)w->rx_ents[i].h.length);
    pthread_mutex_unlock(&w->m.lock);
    ps_worker_rx_put(w, data);
}
