/*
 * Replication: every chunk has a primary and, with replicas > 0, backups on other servers (the
 * view's owners). Registration defines the chunk on every owner with the same values. Then:
 *
 *   primary                                   backup
 *   a round completes (sync) or a push comes (async)
 *   REPLICATE(round r, the update) ---------> version r: applies the same update (same code,
 *   applies it: version r + 1                  same state, so the same bits): version r + 1
 *                         <------------------ REPLICATE_ACK(r + 1)
 *   answers what waits for r + 1 once every backup has acknowledged it
 *
 * So an update a worker has seen acknowledged exists on every copy ("durable", ps_chunk_durable).
 * The update sent is the aggregated gradient before the optimizer touches it (clipping and weight
 * decay change it in place), with the pushing worker and its sequence in async mode, so a push
 * re-sent after a failover is recognised. A backup that is not at round r (new, or one that missed
 * an update) answers STALE and gets the chunk's whole state (STATE) instead; so does a backup the
 * view adds, at once: that is how the copies a dead server held are rebuilt, and how a chunk
 * moves (the server it moves to is one more backup until the view switches owners; it tells the
 * coordinator SYNCED once it holds the state). A server that is the chunk's primary by a newer
 * view answers VIEW_CHANGED: the sender keeps its answers waiting until its own view moves the
 * chunk away, and then refuses them, so the workers re-send them to the new primary.
 *
 * Everything here runs on the apply thread, which owns the store; the progress thread only admits
 * and queues. The primary reaches its backups over connections of its own, opened on first use
 * with a server HELLO.
 */
#include <stdlib.h>
#include <string.h>

#include "hostport.h"
#include "server_internal.h"

_Static_assert(PS_STORE_MAX_BACKUPS == PS_VIEW_MAX_REPLICAS + 1, "a chunk's backups: the view's, and a move's target");
_Static_assert(PS_VIEW_MAX_REPLICAS + 1 <= sizeof(((ps_work_t *)0)->owners) / sizeof(uint32_t), "owners fit a work");

/* REPLICATE: the payload is the update; req_id the pushing worker's sequence (async) and status
 * its rank, or PS_REPL_ROUND for a sync round. Inside a BATCH (the entries of a worker's batch
 * being applied) it travels in one message per backup with the others, and so do the backup's
 * acknowledgements, and the answers they release. */
#define PS_REPL_ROUND (-1)
/* STATE payload: the tensor's descriptor and chunk size (a new backup defines the chunk from
 * them), u64 version, u64 step, u32 state arrays, u32 workers (of last_seq, or 0), the workers'
 * sequences (u64 each), the parameters, the state arrays. */
#define PS_STATE_PREFIX (PS_TENSOR_DESC_LEN + 8 + 24u)

uint64_t ps_chunk_durable(const ps_chunk_t *c)
{
    uint64_t v = c->version;
    for (uint32_t i = 0; i < c->nbackups; i++)
        if (c->acked[i] < v) v = c->acked[i];
    return v;
}

static uint32_t ps_chunk_nstate(const ps_chunk_t *c)
{
    return c->state.s1 ? 2 : c->state.s0 ? 1 : 0;
}

/* The connection to server r (apply thread): opened and greeted once, again after it failed. */
static ps_tp_peer_t *ps_replica_peer(pserv_server_h s, uint32_t r)
{
    ps_server_replicas_t *k = &s->replicas;
    if (k->peer[r] != NULL && !__atomic_load_n(&k->ctx[r].failed, __ATOMIC_ACQUIRE)) return k->peer[r];
    char host[PS_ADDR_MAX];
    uint16_t port;
    if (ps_hostport_parse(s->m.job.servers[r], 1, host, &port) < 0) return NULL;
    if (k->peer[r] != NULL) ps_tp_peer_close(k->peer[r]);
    k->peer[r] = NULL;
    ps_tp_peer_t *peer;
    if (ps_tp_connect(s->m.tp, host, port, &peer) < 0) return NULL;
    k->ctx[r] = (ps_server_peer_t){.rank = r, .hello = 1, .server = 1, .out_buf = -1};
    ps_tp_peer_set_ctx(peer, &k->ctx[r]);
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_HELLO);
    h.flags = PS_WIRE_FLAG_SERVER;
    h.sender = s->store.rank;
    if (ps_send_msg(peer, &h, NULL, 0, NULL, NULL, NULL) < 0) {
        ps_tp_peer_close(peer);
        return NULL;
    }
    return k->peer[r] = peer;
}

void ps_server_connect_server(pserv_server_h s, uint32_t r)
{
    if (r != s->store.rank && r < PS_VIEW_MAX_SERVERS && ps_replica_peer(s, r) == NULL)
        ps_warn("cannot reach server %u at %s, which joined the job", r, s->m.job.servers[r]);
}

static void ps_replica_hdr(pserv_server_h s, ps_wire_hdr_t *h, ps_msg_type_t type, const ps_tensor_t *t,
                           const ps_chunk_t *c, uint64_t round)
{
    ps_wire_hdr_init(h, type);
    h->sender = s->store.rank;
    h->key = t->key;
    h->chunk = c->index;
    h->dtype = t->desc.dtype;
    h->offset = c->offset;
    h->round = round;
    h->map_version = s->roles ? s->roles->version : 0; /* the view that sends it */
}

/*
 * Outside a batch an update travels from a buffer of its own (the optimizer changes `update`
 * next). Sync: the chunk's kept buffer, free again by the next round (which needs every backup's
 * acknowledgement of this one, so its sends are done). Async: several may be in flight, so each
 * send has a copy it frees.
 */
void ps_server_replicate(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, const float *update, uint32_t worker,
                         uint64_t seq)
{
    if (!c->primary || c->nbackups == 0) return;
    ps_wire_hdr_t h;
    ps_replica_hdr(s, &h, PS_MSG_REPLICATE, t, c, c->version);
    h.req_id = seq;
    h.status = worker == UINT32_MAX ? PS_REPL_ROUND : (int32_t)worker;
    int kept = 0; /* sync: c->repl holds this update */
    for (uint32_t i = 0; i < c->nbackups; i++) {
        ps_tp_peer_t *peer = ps_replica_peer(s, c->backups[i]);
        if (peer == NULL) continue; /* that backup stays behind: a STATE catches it up */
        PS_STAT_ADD(s, replicated_bytes, c->param_bytes);
        if (ps_server_coalesce(s, peer, &h, update, c->param_bytes)) continue; /* copied into the batch */
        if (s->store.sync && !kept) {
            if (c->repl == NULL && posix_memalign((void **)&c->repl, 64, c->param_bytes) != 0) c->repl = NULL;
            if (c->repl == NULL) continue;
            memcpy(c->repl, update, c->param_bytes);
            kept = 1;
        }
        if (s->store.sync) {
            ps_chunk_send_begin(c); /* from c->repl: the chunk's memory is kept until it completes */
            ps_send_msg(peer, &h, c->repl, c->param_bytes, NULL, ps_chunk_sent, c);
            continue;
        }
        void *copy = malloc(c->param_bytes);
        if (copy == NULL) continue;
        memcpy(copy, update, c->param_bytes);
        ps_send_msg(peer, &h, copy, c->param_bytes, NULL, ps_send_free_cb, copy);
    }
}

/* The chunk's whole state to backup `to`: what it needs to serve as a copy from now on. */
static void ps_replica_send_state(pserv_server_h s, const ps_tensor_t *t, const ps_chunk_t *c, uint32_t to)
{
    ps_tp_peer_t *peer = ps_replica_peer(s, to);
    uint32_t nstate = ps_chunk_nstate(c), nw = c->last_seq ? s->store.num_workers : 0;
    size_t len = PS_STATE_PREFIX + (size_t)nw * 8 + (size_t)(1 + nstate) * c->param_bytes;
    uint8_t *msg = peer ? malloc(len) : NULL;
    if (msg == NULL) return;
    ps_writer_t w;
    ps_writer_init(&w, msg, PS_STATE_PREFIX + (size_t)nw * 8);
    ps_tensor_desc_encode(&t->desc, &w);
    ps_put_u64(&w, t->layout.chunk_elems);
    ps_put_u64(&w, c->version);
    ps_put_u64(&w, c->state.step);
    ps_put_u32(&w, nstate);
    ps_put_u32(&w, nw);
    for (uint32_t i = 0; i < nw; i++) ps_put_u64(&w, c->last_seq[i]);
    const float *arrays[3] = {c->param, c->state.s0, c->state.s1};
    for (uint32_t a = 0; a <= nstate; a++) memcpy(msg + w.len + a * c->param_bytes, arrays[a], c->param_bytes);
    ps_wire_hdr_t h;
    ps_replica_hdr(s, &h, PS_MSG_STATE, t, c, c->version);
    h.req_id = ++s->replicas.state_seq; /* a later state from us replaces an earlier one, never the reverse */
    ps_send_msg(peer, &h, msg, len, NULL, ps_send_free_cb, msg);
    PS_STAT_ADD(s, state_transfers, 1);
}

/* A backup's answer: the chunk is at round `round` there (OK), or is not where we are (STALE). */
static void ps_replica_ack(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *req, uint64_t round,
                           pserv_status_t st)
{
    ps_wire_hdr_t h;
    ps_reply_hdr(&h, req, PS_MSG_REPLICATE_ACK, s->store.rank, st);
    h.round = round;
    ps_server_send(s, peer, &h); /* with the others of its batch, if it came in one */
}

/* The chunk a replication message names (a chunk this shard holds), or NULL. */
static ps_chunk_t *ps_replica_chunk(pserv_server_h s, const ps_wire_hdr_t *h, ps_tensor_t **tensor)
{
    ps_tensor_t *t = ps_keymap_get(&s->store.tensors, h->key);
    ps_chunk_t *c = t && h->chunk < t->layout.num_chunks ? t->chunks[h->chunk] : NULL;
    *tensor = t;
    return c;
}

static void ps_replica_on_update(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, uint8_t *data,
                                 size_t len)
{
    ps_tensor_t *t;
    ps_chunk_t *c = ps_replica_chunk(s, h, &t);
    if (c != NULL && c->primary) { /* from a server that is no longer its primary by our view */
        ps_replica_ack(s, peer, h, c->version, PSERV_ERR_VIEW_CHANGED);
        return;
    }
    if (c == NULL || !c->held || c->stale || len != c->param_bytes) {
        ps_replica_ack(s, peer, h, c ? c->version : 0, PSERV_ERR_STALE);
        return;
    }
    if (c->version == h->round) {
        uint64_t seq = h->req_id;
        int32_t worker = h->status;
        if (worker != PS_REPL_ROUND && (uint32_t)worker < s->store.num_workers && ps_server_seq_table(s, c) == PSERV_OK &&
            seq + 1 > c->last_seq[worker])
            c->last_seq[worker] = seq + 1;
        ps_server_apply(s, t, c, (float *)(void *)data);
        PS_STAT_ADD(s, replica_updates, 1);
    }
    ps_replica_ack(s, peer, h, c->version, c->version > h->round ? PSERV_OK : PSERV_ERR_STALE);
}

/* A new backup: the chunk defined from the STATE's descriptor and parameters (NULL if it cannot be). */
static ps_chunk_t *ps_replica_define(pserv_server_h s, const ps_wire_hdr_t *h, const ps_tensor_desc_t *desc,
                                     uint64_t chunk_elems, const uint8_t *param, size_t avail, ps_tensor_t **t)
{
    ps_chunk_t *c = NULL;
    const char *why = "";
    uint64_t esize = ps_dtype_size(desc->dtype);
    uint64_t off = (uint64_t)h->chunk * chunk_elems, n = desc->count > off ? desc->count - off : 0;
    size_t bytes = (size_t)((n < chunk_elems ? n : chunk_elems) * esize);
    if (bytes == 0 || bytes > avail ||
        ps_store_define(&s->store, h->key, desc, chunk_elems, h->chunk, param, bytes, &c, &why) < 0) {
        ps_warn("cannot hold tensor %llu chunk %u as a backup: %s", (unsigned long long)h->key, h->chunk, why);
        return NULL;
    }
    *t = ps_keymap_get(&s->store.tensors, h->key);
    c->primary = 0;
    return c;
}

/* Tells the coordinator that this copy holds the chunk's state: a move to this shard may finish. */
static void ps_replica_synced(pserv_server_h s, uint64_t key, const ps_chunk_t *c)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_SYNCED);
    h.sender = s->store.rank;
    h.key = key;
    h.chunk = c->index;
    h.round = c->version;
    if (ps_member_notify(&s->m, &h, NULL, 0) < 0)
        ps_warn("tensor %llu chunk %u in sync here, but the coordinator is not there to hear it",
                (unsigned long long)h.key, h.chunk);
}

static void ps_replica_resync_chunk(void *arg, ps_tensor_t *t, ps_chunk_t *c)
{
    if (c->held && !c->stale && !c->primary) ps_replica_synced(arg, t->key, c);
}

void ps_server_resync(pserv_server_h s)
{
    ps_server_say_ready(s);
    ps_store_each_chunk(&s->store, ps_replica_resync_chunk, s);
}

/* The chunk a replication message names may have a role here: 0 only when the sender's view is
 * known and older than the newest applied here, which gives the chunk no role here (the sender
 * then applies that view, or a newer one, and stops sending; an unknown or equal view is trusted). */
static int ps_replica_role_here(pserv_server_h s, const ps_wire_hdr_t *h)
{
    if (s->roles == NULL || h->map_version == 0 || h->map_version >= s->roles->version) return 1;
    for (uint32_t i = 0; i < s->roles->n; i++)
        if (s->roles->role[i].key == h->key && s->roles->role[i].chunk == h->chunk) return 1;
    return 0;
}

static void ps_replica_on_state(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const uint8_t *data,
                                size_t len)
{
    ps_tensor_t *t;
    ps_chunk_t *c = ps_replica_chunk(s, h, &t);
    if (!ps_replica_role_here(s, h)) {
        /* From a primary whose view is older than ours, which moved the chunk away from here:
         * holding it again would keep memory no view gives a role. Its next view drops us. */
        ps_replica_ack(s, peer, h, c ? c->version : 0, PSERV_ERR_VIEW_CHANGED);
        return;
    }
    ps_reader_t r;
    ps_tensor_desc_t desc;
    ps_reader_init(&r, data, len);
    pserv_status_t dst = ps_tensor_desc_decode(&r, &desc);
    uint64_t chunk_elems = ps_get_u64(&r);
    uint64_t version = ps_get_u64(&r), step = ps_get_u64(&r);
    uint32_t nstate = ps_get_u32(&r), nw = ps_get_u32(&r);
    size_t head = PS_STATE_PREFIX + (size_t)nw * 8;
    if (c == NULL && dst == PSERV_OK && !r.bad && nw <= s->store.num_workers && head <= len)
        c = ps_replica_define(s, h, &desc, chunk_elems, data + head, len - head, &t);
    if (c != NULL && c->primary) { /* we are its primary by a newer view than the sender's */
        ps_replica_ack(s, peer, h, c->version, PSERV_ERR_VIEW_CHANGED);
        return;
    }
    if (c != NULL && c->held && c->state_from == h->sender && h->req_id <= c->state_seq) {
        /* An earlier state of that primary, overtaken by a later one (UCX may reorder a new
         * connection's first messages): installing it would undo updates acknowledged since. */
        ps_replica_ack(s, peer, h, c->version, PSERV_OK);
        return;
    }
    int fits = c && !r.bad && nstate == ps_chunk_nstate(c) && (nw == 0 || nw == s->store.num_workers) &&
               len == PS_STATE_PREFIX + (size_t)nw * 8 + (size_t)(1 + nstate) * c->param_bytes;
    if (!fits || (nw > 0 && ps_server_seq_table(s, c) < 0)) {
        ps_warn("STATE of tensor %llu chunk %u from server %u refused: it does not fit the chunk here",
                (unsigned long long)h->key, h->chunk, h->sender);
        ps_replica_ack(s, peer, h, c ? c->version : 0, PSERV_ERR_MISMATCH);
        return;
    }
    for (uint32_t i = 0; i < nw; i++) c->last_seq[i] = ps_get_u64(&r);
    float *arrays[3] = {c->param, c->state.s0, c->state.s1};
    for (uint32_t a = 0; a <= nstate; a++) memcpy(arrays[a], data + r.pos + a * c->param_bytes, c->param_bytes);
    c->version = version;
    c->state.step = step;
    ps_chunk_hold(c);
    c->stale = 0;
    c->state_from = h->sender;
    c->state_seq = h->req_id;
    ps_replica_ack(s, peer, h, c->version, PSERV_OK);
    ps_replica_synced(s, h->key, c);
}

static void ps_replica_on_ack(pserv_server_h s, const ps_wire_hdr_t *h)
{
    ps_tensor_t *t;
    ps_chunk_t *c = ps_replica_chunk(s, h, &t);
    uint32_t i = 0;
    while (c && i < c->nbackups && c->backups[i] != h->sender) i++;
    if (c == NULL || !c->primary || i == c->nbackups) return; /* no longer its backup: nothing waits for it */
    if (h->status == PSERV_ERR_STALE) {
        ps_replica_send_state(s, t, c, h->sender);
        return;
    }
    if (h->status == PSERV_ERR_VIEW_CHANGED) return; /* it is primary by a newer view: ours moves the chunk away */
    if (h->status == PSERV_ERR_MISMATCH) { /* it cannot hold this chunk: go on without that copy */
        ps_error("server %u cannot be a backup of tensor %llu chunk %u: dropped", h->sender,
                 (unsigned long long)h->key, h->chunk);
        c->backups[i] = c->backups[c->nbackups - 1];
        c->acked[i] = c->acked[--c->nbackups];
        ps_server_answer_pulls(s, t, c);
        return;
    }
    if (h->status < 0 || h->round > c->version || h->round <= c->acked[i]) return;
    c->acked[i] = h->round;
    ps_server_answer_pulls(s, t, c);
}

void ps_server_on_replica(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, uint8_t *data, size_t len)
{
    if (h->type == PS_MSG_REPLICATE) ps_replica_on_update(s, peer, h, data, len);
    else if (h->type == PS_MSG_STATE) ps_replica_on_state(s, peer, h, data, len);
    else ps_replica_on_ack(s, h);
}

pserv_status_t ps_server_seq_table(pserv_server_h s, ps_chunk_t *c)
{
    if (c->last_seq == NULL && (c->last_seq = calloc(s->store.num_workers, sizeof(*c->last_seq))) == NULL)
        return PSERV_ERR_NO_MEMORY;
    return PSERV_OK;
}

void ps_server_set_owners(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, const uint32_t *owners, uint32_t n,
                          int fresh)
{
    uint32_t old[PS_STORE_MAX_BACKUPS], nold = c->nbackups;
    uint64_t old_acked[PS_STORE_MAX_BACKUPS];
    memcpy(old, c->backups, sizeof(old));
    memcpy(old_acked, c->acked, sizeof(old_acked));
    c->primary = n > 0 && owners[0] == s->store.rank;
    c->nbackups = 0;
    for (uint32_t k = 1; c->primary && k < n && c->nbackups < PS_STORE_MAX_BACKUPS; k++) {
        uint32_t b = owners[k], j = 0;
        while (j < nold && old[j] != b) j++;
        c->backups[c->nbackups] = b;
        c->acked[c->nbackups++] = j < nold ? old_acked[j] : 0;
        if (j == nold && !fresh) ps_replica_send_state(s, t, c, b); /* a new copy: rebuilt now */
        if (j == nold && fresh) c->acked[c->nbackups - 1] = c->version; /* registered there too */
    }
    if (c->primary && c->last_seq == NULL && !s->store.sync && n > 1) ps_server_seq_table(s, c);
    if (c->primary) ps_server_answer_pulls(s, t, c); /* a backup gone may be what they waited for */
}
