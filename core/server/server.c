/*
 * A server shard: joins the job, then serves workers. Every message is handled on the
 * transport's progress thread, so the store needs no lock; optimizer steps fan out to the
 * thread pool.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "hostport.h"
#include "pinned.h"
#include "server_internal.h"

#define PS_SCRATCH_MAX_SLOTS 16

static void ps_server_on_hello(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
    if (h->sender >= s->store.num_workers) {
        ps_server_reject(s, peer, h, PSERV_ERR_INVALID_ARG, "worker rank out of range");
        return;
    }
    if (p == NULL) {
        if ((p = calloc(1, sizeof(*p))) == NULL) {
            ps_reply_status(peer, h, PS_MSG_HELLO_REPLY, s->store.rank, PSERV_ERR_NO_MEMORY);
            return;
        }
        ps_tp_peer_set_ctx(peer, p);
        p->next = s->peers;
        s->peers = p;
    }
    p->rank = h->sender;
    p->hello = 1;
    ps_reply_status(peer, h, PS_MSG_HELLO_REPLY, s->store.rank, PSERV_OK);
}

/* Scratch slots receive rendezvous pushes; they are handed back after the push is applied. */
static pserv_status_t ps_server_scratch_init(pserv_server_h s)
{
    s->scratch_slot = s->m.job.chunk_bytes; /* the largest chunk the view makes (but whole clipped tensors) */
    /* Two pushes in flight per worker, but never more than PS_SCRATCH_MAX_SLOTS chunks of
     * pinned memory: beyond that the transport allocates (rare; costs a malloc). */
    s->scratch_slots = PS_MIN(2 * (size_t)s->store.num_workers + 2, PS_SCRATCH_MAX_SLOTS);
    s->scratch_bytes = s->scratch_slot * s->scratch_slots;
    s->scratch_free = malloc(s->scratch_slots * sizeof(*s->scratch_free));
    if (s->scratch_free == NULL) return PSERV_ERR_NO_MEMORY;
    pserv_status_t st = ps_pinned_alloc(s->scratch_bytes, (void **)&s->scratch);
    if (st < 0) {
        free(s->scratch_free);
        s->scratch_free = NULL;
        return st;
    }
    for (size_t i = 0; i < s->scratch_slots; i++) s->scratch_free[i] = (uint32_t)i;
    s->nscratch_free = s->scratch_slots;
    return PSERV_OK;
}

static void ps_server_scratch_put(pserv_server_h s, void *buf)
{
    uint8_t *p = buf;
    if (p < s->scratch || p >= s->scratch + s->scratch_bytes) return; /* transport-owned */
    s->scratch_free[s->nscratch_free++] = (uint32_t)((size_t)(p - s->scratch) / s->scratch_slot);
}

static void ps_server_rx_abort(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *buf)
{
    ps_server_scratch_put(arg, buf);
}

static void ps_server_view_changed(void *arg, const ps_view_t *old, const ps_view_t *now);

/* Runs on the progress thread when the job description arrives, before any worker traffic
 * is served: sets up the store and answers workers that said hello early. */
static void ps_server_setup(pserv_server_h s)
{
    ps_store_init(&s->store, s->m.tp, &s->m.job, s->m.rank);
    if ((s->live_node = calloc(s->m.job.num_nodes, 1)) == NULL) ps_error("no memory for the node groups");
    else ps_server_view_changed(s, NULL, s->m.view);
    if (ps_server_scratch_init(s) < 0)
        ps_warn("no scratch buffers for rendezvous pushes: the transport allocates them");
    s->ready = 1;
    for (size_t i = 0; i < s->nparked; i++) ps_server_on_hello(s, s->parked[i].peer, &s->parked[i].hdr);
    free(s->parked);
    s->parked = NULL;
    s->nparked = 0;
}

static void ps_server_park_hello(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    ps_parked_hello_t *p = realloc(s->parked, (s->nparked + 1) * sizeof(*p));
    if (p == NULL) {
        ps_reply_status(peer, h, PS_MSG_HELLO_REPLY, UINT32_MAX, PSERV_ERR_NO_MEMORY);
        return;
    }
    s->parked = p;
    s->parked[s->nparked++] = (ps_parked_hello_t){peer, *h};
}

static void ps_server_on_register(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data,
                                  size_t len)
{
    ps_reader_t r;
    ps_tensor_desc_t desc;
    const char *why = "malformed tensor descriptor";
    ps_reader_init(&r, data, len);
    pserv_status_t st = ps_tensor_desc_decode(&r, &desc);
    const ps_view_tensor_t *vt = ps_view_tensor(s->m.view, h->key); /* admitted: it is in the view */
    if (st == PSERV_OK && !ps_tensor_desc_same(&vt->desc, &desc)) {
        st = PSERV_ERR_MISMATCH;
        why = "descriptor differs from the one the coordinator placed";
    }
    if (st == PSERV_OK)
        st = ps_store_define(&s->store, h->key, &desc, vt->chunk_elems, h->chunk, (const uint8_t *)data + r.pos,
                             len - r.pos, &why);
    if (st < 0) {
        ps_server_reject(s, peer, h, st, why);
        return;
    }
    ps_reply_status(peer, h, PS_MSG_REGISTER_REPLY, s->store.rank, PSERV_OK);
}

/* Decodes a header and checks that a worker may send it; on failure answers or drops it. */
static pserv_status_t ps_server_admit(pserv_server_h s, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len,
                                      size_t len, ps_wire_hdr_t *h)
{
    const char *why;
    if (ps_wire_decode(hdr, hdr_len, len, h, &why) < 0) {
        PS_STAT_ADD(s, rejected, 1);
        ps_warn("message from %s dropped: %s", ps_tp_peer_name(peer), why);
        return PSERV_ERR_BAD_MESSAGE;
    }
    ps_member_heard(&s->m);
    if (h->type == PS_MSG_PUSH || h->type == PS_MSG_PUSH_PULL || h->type == PS_MSG_PULL ||
        h->type == PS_MSG_REGISTER) {
        const ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
        if (!s->ready || p == NULL || !p->hello || p->rank != h->sender) {
            ps_server_reject(s, peer, h, PSERV_ERR_INVALID_ARG, "sender did not say hello with this rank");
            return PSERV_ERR_INVALID_ARG;
        }
        if (__atomic_load_n(&s->m.aborted, __ATOMIC_RELAXED)) {
            ps_server_reject(s, peer, h, PSERV_ERR_JOB_FAILED, "the job failed");
            return PSERV_ERR_JOB_FAILED;
        }
        /* Every routing decision goes through the view: a chunk this shard does not own there
         * (moved, or a view newer than ours placed it) is refused so the worker re-routes. */
        const ps_view_tensor_t *vt = ps_view_tensor(s->m.view, h->key);
        pserv_status_t st = PSERV_OK;
        why = NULL;
        if (vt == NULL && h->map_version > s->m.view->version) {
            st = PSERV_ERR_VIEW_CHANGED;
            why = "routed by a view this shard has not installed yet";
        } else if (vt == NULL) {
            st = PSERV_ERR_UNKNOWN_KEY;
            why = "key not placed in the view";
        } else if (h->chunk >= vt->num_chunks) {
            st = PSERV_ERR_BAD_MESSAGE;
            why = "chunk out of range";
        } else if (ps_view_owner(s->m.view, h->key, h->chunk) != s->store.rank) {
            st = PSERV_ERR_VIEW_CHANGED;
            why = "chunk not owned by this shard in its view";
        }
        if (st < 0) {
            ps_server_reject(s, peer, h, st, why);
            return st;
        }
    }
    return PSERV_OK;
}

static pserv_status_t ps_server_rx_buffer(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len,
                                          size_t len, void **buf)
{
    pserv_server_h s = arg;
    ps_wire_hdr_t h;
    ps_tensor_t *t;
    ps_chunk_t *c;
    const char *why;
    pserv_status_t st = ps_server_admit(s, peer, hdr, hdr_len, len, &h);
    if (st < 0) return st;
    if (h.type != PS_MSG_PUSH && h.type != PS_MSG_PUSH_PULL) return PSERV_OK; /* transport allocates */
    /* Check before the payload moves: a bad push costs no transfer. */
    if ((st = ps_store_check(&s->store, &h, &t, &c, &why)) < 0) {
        ps_server_reject(s, peer, &h, st, why);
        return st;
    }
    if (s->nscratch_free > 0 && len <= s->scratch_slot)
        *buf = s->scratch + (size_t)s->scratch_free[--s->nscratch_free] * s->scratch_slot;
    return PSERV_OK;
}

static void ps_server_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    pserv_server_h s = arg;
    ps_wire_hdr_t h;

    if (ps_server_admit(s, peer, hdr, hdr_len, len, &h) < 0) goto out;
    if (ps_member_rx(&s->m, peer, &h, data, len)) {
        if (!s->ready && s->m.job.servers != NULL) ps_server_setup(s);
        goto out;
    }
    switch (h.type) {
    case PS_MSG_HELLO:
        if (s->ready) ps_server_on_hello(s, peer, &h);
        else ps_server_park_hello(s, peer, &h);
        break;
    case PS_MSG_REGISTER:
        ps_server_on_register(s, peer, &h, data, len);
        break;
    case PS_MSG_PUSH:
    case PS_MSG_PUSH_PULL:
        ps_server_on_push(s, peer, &h, data);
        break;
    case PS_MSG_PULL:
        ps_server_on_pull(s, peer, &h);
        break;
    case PS_MSG_LEAVE: {
        ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
        if (p) p->left = 1;
        break;
    }
    default:
        PS_STAT_ADD(s, rejected, 1);
        ps_warn("unexpected %s from %s dropped", ps_wire_type_name(h.type), ps_tp_peer_name(peer));
    }
out:
    ps_server_scratch_put(s, data);
}

static void ps_server_peer_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why)
{
    pserv_server_h s = arg;
    if (ps_member_peer_failed(&s->m, peer)) {
        if (s->ready && !s->m.shutdown) ps_warn("lost the coordinator at %s: %s", s->m.coord_addr, pserv_strerror(why));
        return;
    }
    ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
    for (size_t i = 0; i < s->nparked; i++)
        if (s->parked[i].peer == peer) s->parked[i] = s->parked[--s->nparked];
    if (p == NULL) return;
    if (p->left) {
        ps_debug("worker %u at %s disconnected after leaving", p->rank, ps_tp_peer_name(peer));
        return;
    }
    /* What the job does about it is the coordinator's call (a new view, or ABORT). */
    ps_warn("worker %u at %s failed: %s", p->rank, ps_tp_peer_name(peer), pserv_strerror(why));
    if (s->ready) ps_server_drop_peer(s, peer);
}

static void ps_server_view_changed(void *arg, const ps_view_t *old, const ps_view_t *now)
{
    pserv_server_h s = arg;
    if (s->live_node == NULL) return; /* the job's first view: set up with the store */
    uint32_t live = 0;
    memset(s->live_node, 0, s->m.job.num_nodes);
    for (uint32_t w = 0; w < now->num_workers; w++)
        if (ps_view_member_alive(now->worker_state[w]) && !s->live_node[s->m.job.worker_node[w]]) {
            s->live_node[s->m.job.worker_node[w]] = 1;
            live++;
        }
    s->num_live_nodes = live;
    if (s->ready) ps_server_recount_rounds(s);
    (void)old;
}

static void ps_server_aborted(void *arg)
{
    pserv_server_h s = arg;
    if (s->ready) ps_server_fail_rounds(s, PSERV_ERR_JOB_FAILED);
}

/* The address workers use: the listen host, or this host's name when listening on any. */
static void ps_server_advertised(pserv_server_h s, const char *listen, char out[PS_ADDR_MAX])
{
    char host[PS_HOST_MAX] = "127.0.0.1";
    uint16_t port;
    ps_hostport_parse(listen, 0, host, &port);
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) gethostname(host, sizeof(host) - 1);
    snprintf(out, PS_ADDR_MAX, "%s:%u", host, ps_tp_listen_port(s->m.tp));
}

pserv_status_t pserv_server_create(const pserv_server_params_t *params, pserv_server_h *server)
{
    char advertised[PS_ADDR_MAX];
    pserv_status_t st;

    PS_CHECK_ARG(params && server && params->size >= sizeof(pserv_server_params_t) && params->coordinator);
    pserv_server_h s = calloc(1, sizeof(*s));
    if (s == NULL) return PSERV_ERR_NO_MEMORY;
    s->stats.size = sizeof(s->stats);
    const char *listen = params->listen ? params->listen : "127.0.0.1:0";
    if ((st = ps_pool_create(params->threads ? params->threads : 1, &s->pool)) < 0) goto err_free;
    ps_tp_handler_t handler = {.arg = s, .rx_buffer = ps_server_rx_buffer, .rx = ps_server_rx,
                               .rx_abort = ps_server_rx_abort, .peer_failed = ps_server_peer_failed};
    ps_member_hooks_t hooks = {.arg = s, .view_changed = ps_server_view_changed, .aborted = ps_server_aborted};
    if ((st = ps_member_init(&s->m, PS_ROLE_SERVER, params->coordinator, listen, &handler, &hooks)) < 0) goto err_pool;
    ps_server_advertised(s, listen, advertised);
    st = ps_member_join(&s->m, advertised, NULL, NULL, -1,
                        params->timeout_ms ? params->timeout_ms : PS_DEFAULT_TIMEOUT_MS);
    if (st < 0) goto err_member;
    ps_info("server %u serving at %s", s->m.rank, advertised);
    *server = s;
    return PSERV_OK;

err_member:
    ps_member_fini(&s->m);
err_pool:
    ps_pool_destroy(s->pool);
err_free:
    free(s->parked);
    free(s);
    return st;
}

pserv_status_t pserv_server_rank(pserv_server_h server, unsigned *rank)
{
    PS_CHECK_ARG(server && rank);
    *rank = server->m.rank;
    return PSERV_OK;
}

pserv_status_t pserv_server_wait(pserv_server_h server, int timeout_ms)
{
    ps_deadline_t deadline;
    PS_CHECK_ARG(server);
    ps_deadline_set(&deadline, timeout_ms);
    pthread_mutex_lock(&server->m.lock);
    while (!server->m.shutdown && !server->m.coord_failed && !server->m.aborted)
        if (ps_cond_wait(&server->m.cond, &server->m.lock, &deadline) == PSERV_ERR_TIMED_OUT) break;
    pserv_status_t st = server->m.shutdown       ? PSERV_OK
                        : server->m.aborted      ? PSERV_ERR_JOB_FAILED
                        : server->m.coord_failed ? PSERV_ERR_PEER_FAILED
                                                 : PSERV_ERR_TIMED_OUT;
    if (st == PSERV_ERR_PEER_FAILED)
        snprintf(server->m.last_error, sizeof(server->m.last_error), "lost the coordinator at %s",
                 server->m.coord_addr);
    pthread_mutex_unlock(&server->m.lock);
    return st;
}

pserv_status_t pserv_server_stats(pserv_server_h server, pserv_server_stats_t *stats)
{
    PS_CHECK_ARG(server && stats && stats->size >= sizeof(*stats));
    stats->pushes = __atomic_load_n(&server->stats.pushes, __ATOMIC_RELAXED);
    stats->pulls = __atomic_load_n(&server->stats.pulls, __ATOMIC_RELAXED);
    stats->steps = __atomic_load_n(&server->stats.steps, __ATOMIC_RELAXED);
    stats->bytes_in = __atomic_load_n(&server->stats.bytes_in, __ATOMIC_RELAXED);
    stats->bytes_out = __atomic_load_n(&server->stats.bytes_out, __ATOMIC_RELAXED);
    stats->rejected = __atomic_load_n(&server->stats.rejected, __ATOMIC_RELAXED);
    return PSERV_OK;
}

const char *pserv_server_last_error(pserv_server_h server)
{
    return server ? server->m.last_error : "";
}

pserv_status_t pserv_server_destroy(pserv_server_h server)
{
    if (server == NULL) return PSERV_OK;
    ps_member_stop(&server->m); /* no handler runs after this */
    if (server->ready) ps_store_fini(&server->store); /* deregisters its memory: transport still up */
    ps_member_fini(&server->m);
    while (server->peers) {
        ps_server_peer_t *next = server->peers->next;
        free(server->peers);
        server->peers = next;
    }
    ps_pinned_free(server->scratch, server->scratch_bytes);
    free(server->scratch_free);
    free(server->parked);
    free(server->live_node);
    ps_pool_destroy(server->pool);
    free(server);
    return PSERV_OK;
}
