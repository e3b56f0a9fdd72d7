/*
 * A shard's progress-thread side: every message is decoded once and admitted (a known sender,
 * a live job, a chunk this shard owns in its view, the size the view says), its payload lands in
 * a pipeline slot, and it is queued for the apply thread (server_pipe.h). Control messages (the
 * coordinator's, hellos, leaves) are handled here; nothing here touches the store.
 */
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

/* The bytes a data message must carry, by the view's geometry of its chunk. */
static uint64_t ps_server_expected_len(const ps_view_tensor_t *vt, const ps_wire_hdr_t *h)
{
    if (h->type == PS_MSG_PULL) return 0;
    return (h->type == PS_MSG_REGISTER ? PS_TENSOR_DESC_LEN : 0) + ps_view_chunk_bytes(vt, h->chunk);
}

/*
 * Every routing decision goes through the view: a chunk this shard does not own there (moved, or
 * placed by a view newer than ours) is refused, so the worker re-routes or retries. The size is
 * checked too, before a byte of the payload moves, so a hostile length costs nothing.
 */
static pserv_status_t ps_server_check_route(pserv_server_h s, const ps_wire_hdr_t *h, const char **why)
{
    const ps_view_tensor_t *vt = ps_view_tensor(s->m.view, h->key);
    if (vt == NULL && h->map_version > s->m.view->version) {
        *why = "routed by a view this shard has not installed yet";
        return PSERV_ERR_VIEW_CHANGED;
    }
    if (vt == NULL) {
        *why = "key not placed in the view";
        return PSERV_ERR_UNKNOWN_KEY;
    }
    if (h->chunk >= vt->num_chunks) {
        *why = "chunk out of range";
        return PSERV_ERR_BAD_MESSAGE;
    }
    /* Every copy is registered (backups too); data goes to the primary only. */
    if (h->type == PS_MSG_REGISTER ? !ps_view_holds(s->m.view, h->key, h->chunk, s->store.rank)
                                   : ps_view_owner(s->m.view, h->key, h->chunk) != s->store.rank) {
        *why = "chunk not owned by this shard in its view";
        return PSERV_ERR_VIEW_CHANGED;
    }
    if (h->offset != (uint64_t)h->chunk * vt->chunk_elems) {
        *why = "offset does not match the chunk";
        return PSERV_ERR_BAD_MESSAGE;
    }
    if (h->type != PS_MSG_PULL && h->type != PS_MSG_REGISTER && h->dtype != vt->desc.dtype) {
        *why = "wrong dtype";
        return PSERV_ERR_BAD_MESSAGE;
    }
    if (h->length != ps_server_expected_len(vt, h)) {
        *why = "length does not match the chunk";
        return PSERV_ERR_BAD_MESSAGE;
    }
    return PSERV_OK;
}

/* Checks a decoded data message against the job and the view; on failure answers it. */
pserv_status_t ps_server_admit_data(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    const ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
    const char *why = NULL;
    pserv_status_t st;
    if (!s->ready || p == NULL || !p->hello || p->rank != h->sender) {
        st = PSERV_ERR_INVALID_ARG;
        why = "sender did not say hello with this rank";
    } else if (__atomic_load_n(&s->m.aborted, __ATOMIC_RELAXED)) {
        st = PSERV_ERR_JOB_FAILED;
        why = "the job failed";
    } else {
        st = ps_server_check_route(s, h, &why);
    }
    if (st < 0) ps_server_reject(s, peer, h, st, why);
    return st;
}

static int ps_server_is_data(uint16_t type)
{
    return type == PS_MSG_PUSH || type == PS_MSG_PUSH_PULL || type == PS_MSG_PULL || type == PS_MSG_REGISTER;
}

/* Decodes a header; a data message is also admitted. On failure it is answered or dropped. */
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
    return ps_server_is_data(h->type) ? ps_server_admit_data(s, peer, h) : PSERV_OK;
}

pserv_status_t ps_server_rx_buffer(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, size_t len,
                                   void **buf)
{
    pserv_server_h s = arg;
    ps_wire_hdr_t h;
    pserv_status_t st = ps_server_admit(s, peer, hdr, hdr_len, len, &h);
    if (st < 0) return st;
    if (h.type == PS_MSG_BATCH) {
        *buf = ps_server_batch_buf_get(s); /* bounded by its type; NULL: the transport allocates */
        return PSERV_OK;
    }
    /* Data, and another server's updates, land in a pipeline slot (no allocation per message). */
    if ((!ps_server_is_data(h.type) && h.type != PS_MSG_REPLICATE) || len > s->pipe.slot_bytes)
        return PSERV_OK; /* the transport allocates */
    int32_t slot = ps_pipe_slot_get(&s->pipe);
    if (slot < 0) return PSERV_OK; /* every slot busy: the transport allocates, rx copies nothing */
    /* The header travels with the payload: rx will not decode it again. */
    s->pipe.slot_hdr[slot] = h;
    s->pipe.slot_has_hdr[slot] = 1;
    *buf = ps_pipe_slot_data(&s->pipe, slot);
    return PSERV_OK;
}

void ps_server_rx_abort(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *buf)
{
    pserv_server_h s = arg;
    int32_t slot = ps_pipe_slot_of(&s->pipe, buf);
    if (slot >= 0) ps_pipe_slot_put(&s->pipe, slot);
    else ps_server_batch_buf_put(s, buf);
}

/* A REGISTER's descriptor must be the one the coordinator placed (the view's, which the apply
 * thread cannot read): checked here, and the view's geometry travels with the work. */
static pserv_status_t ps_server_register_check(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h,
                                               const void *data, size_t len)
{
    ps_reader_t r;
    ps_tensor_desc_t desc;
    const ps_view_tensor_t *vt = ps_view_tensor(s->m.view, h->key); /* admitted: it is in the view */
    ps_reader_init(&r, data, len);
    pserv_status_t st = ps_tensor_desc_decode(&r, &desc);
    if (st < 0) ps_server_reject(s, peer, h, st, "malformed tensor descriptor");
    else if (!ps_tensor_desc_same(&vt->desc, &desc))
        ps_server_reject(s, peer, h, st = PSERV_ERR_MISMATCH, "descriptor differs from the one the coordinator placed");
    return st;
}

/* Hands a data message to the apply thread, its payload in a slot (the one it landed in, or a copy). */
static void ps_server_queue(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, void *data, size_t len,
                            int32_t slot)
{
    ps_work_t w = {.kind = PS_WORK_MSG, .h = *h, .peer = peer, .len = len, .slot = slot};
    if (h->type == PS_MSG_REGISTER) {
        w.chunk_elems = ps_view_tensor(s->m.view, h->key)->chunk_elems;
        w.nowners = ps_server_owners(s->m.view, h->key, h->chunk, w.owners);
    }
    if (slot >= 0) {
        w.data = data;
    } else if (len > 0 && len <= s->pipe.slot_bytes && (w.slot = ps_pipe_slot_get(&s->pipe)) >= 0) {
        w.data = ps_pipe_slot_data(&s->pipe, w.slot);
        memcpy(w.data, data, len);
    } else if (len > 0) {
        /* No free slot, or larger than one (a whole tensor clipped by norm): a heap copy. */
        if ((w.data = malloc(len)) == NULL) {
            ps_server_reject(s, peer, h, PSERV_ERR_NO_MEMORY, "no memory for the payload");
            return;
        }
        memcpy(w.data, data, len);
    }
    ps_pipe_push(&s->pipe, &w);
}

/*
 * Replication traffic comes from another server of the job: its rank is checked, and its peer
 * marked as a server's (its HELLO may come later: a first message can overtake a connection's
 * greeting). The apply thread checks the chunk against its store.
 */
pserv_status_t ps_server_from_server(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
    const char *why = !s->ready                                                 ? "the shard is not set up"
                      : h->sender >= s->m.job.num_servers || h->sender == s->store.rank ? "not from another server"
                      : p != NULL && (!p->server || p->rank != h->sender)      ? "from a peer that is not that server"
                                                                               : NULL;
    if (why == NULL && p == NULL && (p = ps_server_greet(s, peer, h->sender, 1)) == NULL) why = "no memory";
    if (why == NULL) return PSERV_OK;
    PS_STAT_ADD(s, rejected, 1);
    ps_warn("%s from %s dropped: %s", ps_wire_type_name(h->type), ps_tp_peer_name(peer), why);
    return PSERV_ERR_INVALID_ARG;
}

void ps_server_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    pserv_server_h s = arg;
    ps_wire_hdr_t h;
    int32_t slot = ps_pipe_slot_of(&s->pipe, data);

    if (slot >= 0 && s->pipe.slot_has_hdr[slot]) {
        h = s->pipe.slot_hdr[slot]; /* decoded and admitted when the slot was chosen */
    } else if (ps_server_admit(s, peer, hdr, hdr_len, len, &h) < 0) {
        goto out;
    }
    if (h.type == PS_MSG_PUSH || h.type == PS_MSG_PULL || h.type == PS_MSG_PUSH_PULL || h.type == PS_MSG_BATCH)
        PS_STAT_ADD(s, messages_in, 1);
    if (ps_member_rx(&s->m, peer, &h, data, len)) {
        if (!s->setup_done && s->m.job.servers != NULL) ps_server_setup(s);
        goto out;
    }
    switch (h.type) {
    case PS_MSG_HELLO:
        if (s->ready) ps_server_on_hello(s, peer, &h);
        else ps_server_park_hello(s, peer, &h);
        break;
    case PS_MSG_REGISTER:
        if (ps_server_register_check(s, peer, &h, data, len) < 0) break;
        /* fall through */
    case PS_MSG_PUSH:
    case PS_MSG_PUSH_PULL:
    case PS_MSG_PULL:
        ps_server_queue(s, peer, &h, data, len, slot);
        return; /* the slot, if any, is the apply thread's now */
    case PS_MSG_BATCH:
        ps_server_on_batch(s, peer, &h, data, len);
        return; /* its buffer, if one of the batch pool, is the apply thread's now */
    case PS_MSG_REPLICATE:
    case PS_MSG_REPLICATE_ACK:
    case PS_MSG_STATE:
        if (ps_server_from_server(s, peer, &h) < 0) break;
        ps_server_queue(s, peer, &h, data, len, slot);
        return;
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
    if (slot >= 0) ps_pipe_slot_put(&s->pipe, slot);
    else ps_server_batch_buf_put(s, data); /* a batch that never reached on_batch (a no-op otherwise) */
}

void ps_server_peer_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why)
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
    if (p->server) { /* another server: the coordinator decides what its death means */
        ps_debug("server %u at %s: connection failed: %s", p->rank, ps_tp_peer_name(peer), pserv_strerror(why));
        __atomic_store_n(&p->failed, 1, __ATOMIC_RELEASE);
        return;
    }
    if (p->left) {
        ps_debug("worker %u at %s disconnected after leaving", p->rank, ps_tp_peer_name(peer));
        return;
    }
    /* What the job does about it is the coordinator's call (a new view, or ABORT); here only the
     * peer's own state goes. */
    ps_warn("worker %u at %s failed: %s", p->rank, ps_tp_peer_name(peer), pserv_strerror(why));
    if (s->ready) ps_pipe_push(&s->pipe, &(ps_work_t){.kind = PS_WORK_PEER_GONE, .peer = peer, .slot = -1});
}

void ps_server_live_nodes(pserv_server_h s, const ps_view_t *v, uint8_t *live, uint32_t *count)
{
    *count = 0;
    memset(live, 0, s->m.job.num_nodes);
    for (uint32_t w = 0; w < v->num_workers; w++) {
        uint32_t node = s->m.job.worker_node[w];
        if (ps_view_member_alive(v->worker_state[w]) && !live[node]) {
            live[node] = 1;
            (*count)++;
        }
    }
}

void ps_server_view_changed(void *arg, const ps_view_t *old, const ps_view_t *now)
{
    pserv_server_h s = arg;
    if (!s->ready) return; /* the job's first view: setup reads it */
    /* Servers that joined: connected now, so that their first chunk's state does not wait for it. */
    for (uint32_t r = old ? old->num_servers : now->num_servers; r < now->num_servers; r++)
        ps_pipe_push(&s->pipe, &(ps_work_t){.kind = PS_WORK_CONNECT, .len = r, .slot = -1});
    ps_work_t w = {.kind = PS_WORK_VIEW, .slot = -1};
    if ((w.data = malloc(s->m.job.num_nodes)) == NULL) {
        ps_error("no memory to apply view %u", now->version);
        return;
    }
    uint32_t count;
    ps_server_live_nodes(s, now, w.data, &count);
    w.len = count;
    w.roles = ps_server_roles(s, now);
    ps_pipe_push(&s->pipe, &w);
}

void ps_server_checkpoint_at(void *arg, uint64_t round)
{
    pserv_server_h s = arg;
    if (s->ready) ps_pipe_push(&s->pipe, &(ps_work_t){.kind = PS_WORK_CKPT_AT, .len = round, .slot = -1});
}

void ps_server_rejoined(void *arg)
{
    pserv_server_h s = arg;
    if (s->ready) ps_pipe_push(&s->pipe, &(ps_work_t){.kind = PS_WORK_RESYNC, .slot = -1});
}

void ps_server_aborted(void *arg)
{
    pserv_server_h s = arg;
    if (s->ready) ps_pipe_push(&s->pipe, &(ps_work_t){.kind = PS_WORK_ABORT, .slot = -1});
}

uint32_t ps_server_owners(const ps_view_t *v, uint64_t key, uint32_t c, uint32_t *owners)
{
    const ps_view_tensor_t *t = ps_view_tensor(v, key);
    uint32_t n = 0;
    for (uint32_t r = 0; t && c < t->num_chunks && r <= v->replicas; r++) {
        uint32_t o = t->owners[(size_t)c * (v->replicas + 1) + r], dup = 0;
        for (uint32_t k = 0; k < n && !dup; k++) dup = owners[k] == o;
        if (!dup && o < v->num_servers && ps_view_member_alive(v->server_state[o])) owners[n++] = o;
    }
    return n;
}

/* This shard holds chunk c of key in v, or a move brings it here. */
static int ps_server_has_role(pserv_server_h s, const ps_view_t *v, uint64_t key, uint32_t c)
{
    return ps_view_holds(v, key, c, s->store.rank) || ps_view_move_to(v, key, c) == s->store.rank;
}

ps_server_roles_t *ps_server_roles(pserv_server_h s, const ps_view_t *v)
{
    size_t n = 0;
    for (uint32_t i = 0; i < v->num_tensors; i++)
        for (uint32_t c = 0; c < v->tensors[i].num_chunks; c++) n += ps_server_has_role(s, v, v->tensors[i].key, c);
    ps_server_roles_t *roles = malloc(sizeof(*roles) + n * sizeof(roles->role[0]));
    if (roles == NULL) return NULL;
    roles->version = v->version;
    roles->n = 0;
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        const ps_view_tensor_t *t = &v->tensors[i];
        for (uint32_t c = 0; c < t->num_chunks; c++) {
            if (!ps_server_has_role(s, v, t->key, c)) continue;
            ps_server_role_t *r = &roles->role[roles->n++];
            r->key = t->key;
            r->chunk = c;
            r->n = ps_server_owners(v, t->key, c, r->owners);
            /* The server it moves to gets the state and every update, as one more backup. */
            uint32_t to = ps_view_move_to(v, t->key, c);
            if (to < v->num_servers && ps_view_member_alive(v->server_state[to]) && !ps_view_holds(v, t->key, c, to))
                r->owners[r->n++] = to;
        }
    }
    return roles;
}
