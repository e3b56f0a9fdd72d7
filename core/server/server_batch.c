/*
 * BATCH on a shard. Progress thread: a batch is decoded whole (every entry once, ps_batch_decode:
 * a damaged batch is refused before any entry is used), then each entry is admitted exactly like
 * a message of its own (hello, live job, owner in the view, offset, dtype, exact length; a
 * refused entry is answered with its own error) and queued with its payload where it lies in the
 * batch's bytes: one buffer of a pool kept for batches holds the whole batch, released by the
 * BATCH_END queued after its entries. A batch's entries are checked after its bytes moved, unlike
 * a single message's: the batch is bounded (PS_WIRE_BATCH_MAX) and lands in one of those
 * buffers, so a hostile batch costs at most that.
 *
 * Apply thread: between a batch's first entry and its BATCH_END, every answer the shard sends
 * (the entries' own, and the parked pulls of other workers that a completing round releases) is
 * appended to a reply batch per worker; BATCH_END sends them, one message per worker.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "server_internal.h"

/* The shard whose apply thread is coalescing now; only that thread sets it, so elsewhere it is
 * NULL and every send goes straight out. */
static __thread pserv_server_h ps_out_server;

/* Frees what ps_server_batch_init allocated (any of it NULL) and clears the state. */
static void ps_server_batch_free(pserv_server_h s)
{
    ps_server_out_t *o = &s->out;
    free(s->rx_ents);
    free(o->bufs);
    free(o->meta);
    free(o->free_list);
    free(o->open);
    free(o->in_bufs);
    free(o->in_free);
    memset(o, 0, sizeof(*o));
    s->rx_ents = NULL;
}

pserv_status_t ps_server_batch_init(pserv_server_h s, size_t slot_bytes)
{
    ps_server_out_t *o = &s->out;
    o->cap = PS_MIN(slot_bytes, (size_t)PS_WIRE_BATCH_MAX) / 64 * 64;
    o->nbufs = 2 * s->m.job.num_workers + 4;
    o->max_open = 2 * s->m.job.num_workers + 4;
    o->in_n = PS_MIN(8 * s->m.job.num_workers + 16, 256u); /* what the pipeline's slots allow per worker, at most 64 MiB */
    s->rx_ents = malloc(PS_WIRE_BATCH_MAX_ENTRIES * sizeof(*s->rx_ents));
    o->bufs = aligned_alloc(64, o->cap * o->nbufs);
    o->meta = calloc(o->nbufs, sizeof(*o->meta));
    o->free_list = malloc(o->nbufs * sizeof(*o->free_list));
    o->open = calloc(o->max_open, sizeof(*o->open));
    o->in_bufs = aligned_alloc(64, (size_t)o->in_n * PS_WIRE_BATCH_MAX);
    o->in_free = malloc(o->in_n * sizeof(*o->in_free));
    if (s->rx_ents == NULL || o->bufs == NULL || o->meta == NULL || o->free_list == NULL || o->open == NULL ||
        o->in_bufs == NULL || o->in_free == NULL)
        goto err_free;
    if (pthread_mutex_init(&o->lock, NULL) != 0) goto err_free;
    for (uint32_t i = 0; i < o->nbufs; i++) {
        o->meta[i] = (ps_server_outbuf_t){s, i};
        o->free_list[i] = i;
    }
    o->nfree = o->nbufs;
    for (uint32_t i = 0; i < o->in_n; i++) o->in_free[i] = i;
    o->in_nfree = o->in_n;
    o->inited = 1;
    return PSERV_OK;

err_free:
    ps_server_batch_free(s);
    return PSERV_ERR_NO_MEMORY;
}

void ps_server_batch_fini(pserv_server_h s)
{
    if (!s->out.inited) return;
    pthread_mutex_destroy(&s->out.lock);
    ps_server_batch_free(s);
}

void *ps_server_batch_buf_get(pserv_server_h s)
{
    ps_server_out_t *o = &s->out;
    void *buf = NULL;
    if (!o->inited) return NULL;
    pthread_mutex_lock(&o->lock);
    if (o->in_nfree > 0) buf = o->in_bufs + (size_t)o->in_free[--o->in_nfree] * PS_WIRE_BATCH_MAX;
    pthread_mutex_unlock(&o->lock);
    return buf;
}

int ps_server_batch_buf_put(pserv_server_h s, const void *buf)
{
    ps_server_out_t *o = &s->out;
    const uint8_t *b = buf;
    if (!o->inited || b < o->in_bufs || b >= o->in_bufs + (size_t)o->in_n * PS_WIRE_BATCH_MAX) return 0;
    pthread_mutex_lock(&o->lock);
    o->in_free[o->in_nfree++] = (uint32_t)((size_t)(b - o->in_bufs) / PS_WIRE_BATCH_MAX);
    pthread_mutex_unlock(&o->lock);
    return 1;
}

static int ps_server_batch_buf_owns(const pserv_server_h s, const void *buf)
{
    const uint8_t *b = buf;
    return s->out.inited && b >= s->out.in_bufs && b < s->out.in_bufs + (size_t)s->out.in_n * PS_WIRE_BATCH_MAX;
}

void ps_server_on_batch(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, void *data, size_t len)
{
    const char *why;
    uint32_t n = 0, queued = 0;
    uint8_t *bytes = data;
    PS_STAT_ADD(s, batches_in, 1);
    if (!s->ready || s->rx_ents == NULL) {
        why = "before the shard is set up";
        goto err_refuse;
    }
    /* Another server's updates or acknowledgements (its HELLO may not have come before them). */
    int replicas = (h->flags & PS_WIRE_FLAG_SERVER) != 0;
    if (ps_batch_decode(h, data, len, replicas ? PS_BATCH_REPLICAS : PS_BATCH_REQUESTS, s->rx_ents, &n, &why) < 0)
        goto err_refuse;
    /* The entries' payloads are used from the batch's bytes: those must outlive this call. */
    if (!ps_server_batch_buf_owns(s, data)) {
        if ((bytes = ps_server_batch_buf_get(s)) == NULL && (bytes = malloc(len)) == NULL) {
            why = "no memory for the batch";
            goto err_refuse;
        }
        memcpy(bytes, data, len);
    }
    for (uint32_t i = 0; i < n; i++) {
        const ps_batch_entry_t *e = &s->rx_ents[i];
        if ((replicas ? ps_server_from_server(s, peer, &e->h) : ps_server_admit_data(s, peer, &e->h)) < 0)
            continue; /* answered with its error, or dropped */
        ps_work_t w = {.kind = PS_WORK_MSG, .h = e->h, .peer = peer, .data = bytes + e->off,
                       .len = (size_t)e->h.length, .slot = -1, .borrowed = 1, .in_batch = 1};
        ps_pipe_push(&s->pipe, &w);
        queued++;
    }
    if (queued > 0) {
        /* A pool buffer goes back at BATCH_END (borrowed: the pipe leaves it); a heap copy the pipe frees. */
        ps_pipe_push(&s->pipe, &(ps_work_t){.kind = PS_WORK_BATCH_END, .peer = peer, .data = bytes, .slot = -1,
                                            .borrowed = (uint8_t)ps_server_batch_buf_owns(s, bytes)});
        return;
    }
    if (!ps_server_batch_buf_put(s, bytes) && bytes != data) free(bytes);
    return;

err_refuse:
    PS_STAT_ADD(s, rejected, 1);
    ps_warn("BATCH of %zu bytes from %s refused whole: %s", len, ps_tp_peer_name(peer), why);
    ps_server_batch_buf_put(s, data);
}

static void ps_server_out_done(void *arg, pserv_status_t status)
{
    ps_server_outbuf_t *b = arg;
    ps_server_out_t *o = &b->s->out;
    (void)status; /* a failed send means a failed worker: its requests end there */
    pthread_mutex_lock(&o->lock);
    o->free_list[o->nfree++] = b->index;
    pthread_mutex_unlock(&o->lock);
}

static void ps_server_out_flush(pserv_server_h s, ps_tp_peer_t *peer, ps_server_peer_t *p)
{
    ps_wire_hdr_t h;
    uint32_t index = (uint32_t)p->out_buf;
    p->out_buf = -1;
    ps_batch_hdr(&p->out, s->store.rank, 0, &h);
    if (p->server) h.flags |= PS_WIRE_FLAG_SERVER; /* replication between servers, not answers to a worker */
    PS_STAT_ADD(s, batches_out, 1);
    ps_send_msg(peer, &h, p->out.buf, p->out.len, NULL, ps_server_out_done, &s->out.meta[index]);
}

static void ps_server_out_flush_all(pserv_server_h s)
{
    for (uint32_t i = 0; i < s->out.nopen; i++) {
        ps_tp_peer_t *peer = s->out.open[i];
        ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
        if (p->out_buf >= 0) ps_server_out_flush(s, peer, p);
    }
    s->out.nopen = 0;
}

void ps_server_out_begin(pserv_server_h s)
{
    if (s->out.inited) ps_out_server = s;
}

void ps_server_out_end(pserv_server_h s, void *batch)
{
    if (ps_out_server == s) ps_server_out_flush_all(s);
    ps_out_server = NULL;
    ps_server_batch_buf_put(s, batch); /* its entries are done */
}

/* Appends a reply to the peer's batch; 0 if it cannot (no worker state, no free buffer). */
static int ps_server_out_add(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data,
                             size_t len)
{
    ps_server_out_t *o = &s->out;
    ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
    if (p == NULL) return 0; /* set at its hello, before any data of it was queued */
    if (len > o->cap - PS_WIRE_HDR_LEN) return 0; /* would not fit an empty batch (tiny chunk sizes) */
    if (p->out_buf >= 0 && !ps_batch_fits(&p->out, len)) ps_server_out_flush(s, peer, p); /* stays open */
    if (p->out_buf < 0) {
        int32_t index = -1;
        pthread_mutex_lock(&o->lock);
        if (o->nfree > 0) index = (int32_t)o->free_list[--o->nfree];
        pthread_mutex_unlock(&o->lock);
        if (index < 0) return 0;
        int listed = 0;
        for (uint32_t i = 0; i < o->nopen && !listed; i++) listed = o->open[i] == peer;
        if (!listed && o->nopen == o->max_open) ps_server_out_flush_all(s);
        if (!listed) o->open[o->nopen++] = peer;
        p->out_buf = index;
        ps_batch_init(&p->out, o->bufs + (size_t)index * o->cap, o->cap);
    }
    ps_batch_add(&p->out, h, data, len);
    return 1;
}

int ps_server_coalesce(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len)
{
    return ps_out_server == s && len <= PS_BATCH_ENTRY_MAX && ps_server_out_add(s, peer, h, data, len);
}

pserv_status_t ps_server_send(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    if (ps_server_coalesce(s, peer, h, NULL, 0)) return PSERV_OK;
    return ps_send_msg(peer, h, NULL, 0, NULL, NULL, NULL);
}

pserv_status_t ps_server_send_values_of(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, ps_chunk_t *c)
{
    if (ps_server_coalesce(s, peer, h, c->param, c->param_bytes)) return PSERV_OK;
    ps_chunk_send_begin(c);
    return ps_send_msg(peer, h, c->param, c->param_bytes, c->mem, ps_chunk_sent, c);
}

void ps_server_reply(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *req, ps_msg_type_t type,
                     pserv_status_t status)
{
    ps_wire_hdr_t h;
    ps_reply_hdr(&h, req, type, s->store.rank, status);
    ps_server_send(s, peer, &h);
}
