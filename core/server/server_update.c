/*
 * Rounds on a server shard. Sync mode (bulk synchronous): a chunk sums the pushes of every
 * node group for its current round (one worker of each group pushes a chunk: the group's sum;
 * a worker without a group is a group of one), then runs one optimizer step, and only then answers pulls of
 * that round. Async mode: each push is one optimizer step on arrival; pulls answer at once.
 *
 * Pushes carry the worker's round: a repeat of a round already counted is acknowledged and
 * ignored (so a retried request is safe), a round ahead of the chunk is refused as stale.
 *
 * Who must push is the view's business: a round completes when every node group with a worker
 * still in the job has pushed. When a view marks a worker dead or gone (PSERV_ON_FAILURE_CONTINUE,
 * or a worker that left early), rounds waiting only for it complete at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

/* Answers one chunk may have waiting (pulls, and with backups pushes) before it refuses more. */
#define PS_MAX_PARKED 65536u

#define PS_BIT_TEST(words, i) (((words)[(i) / 64] >> ((i) % 64)) & 1u)
#define PS_BIT_SET(words, i) ((words)[(i) / 64] |= 1ull << ((i) % 64))

void ps_server_reject(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, pserv_status_t st,
                      const char *why)
{
    PS_STAT_ADD(s, rejected, 1);
    /* A chunk that moved (or a view not installed yet) is routine while the job's servers change. */
    ps_log_(st == PSERV_ERR_VIEW_CHANGED ? PS_LOG_INFO : PS_LOG_WARN, "%s from %s (key %llu chunk %u round %llu) rejected: %s",
           ps_wire_type_name(h->type), ps_tp_peer_name(peer), (unsigned long long)h->key, h->chunk,
           (unsigned long long)h->round, why);
    ps_msg_type_t reply = h->type == PS_MSG_PUSH ? PS_MSG_PUSH_REPLY
                          : h->type == PS_MSG_REGISTER ? PS_MSG_REGISTER_REPLY
                          : h->type == PS_MSG_HELLO ? PS_MSG_HELLO_REPLY
                                                    : PS_MSG_PULL_REPLY;
    ps_server_reply(s, peer, h, reply, st);
}

static void ps_server_send_values(pserv_server_h s, ps_tp_peer_t *peer, uint64_t req_id, uint64_t key,
                                  const ps_tensor_t *t, ps_chunk_t *c, uint32_t map_version)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_PULL_REPLY);
    h.sender = s->store.rank;
    h.req_id = req_id;
    h.key = key;
    h.chunk = c->index;
    h.dtype = t->desc.dtype;
    h.offset = c->offset;
    h.length = c->param_bytes;
    h.round = c->version;
    h.map_version = map_version;
    /* Straight from the pinned, registered parameters: no copy. In sync mode they cannot change
     * before this worker's next push, which comes after it received this reply. */
    /* Counted before the send: the reply may reach the worker (and a caller read the stats)
     * before ps_send_msg returns. */
    PS_STAT_ADD(s, pulls, 1);
    PS_STAT_ADD(s, bytes_out, c->param_bytes);
    if (ps_server_send_values_of(s, peer, &h, c) != PSERV_OK) {
        PS_STAT_ADD(s, pulls, -1);
        PS_STAT_ADD(s, bytes_out, -(uint64_t)c->param_bytes);
    }
}

/* The request a parked answer answers, as far as its reply needs it. */
static void ps_pending_request(ps_wire_hdr_t *h, const ps_tensor_t *t, const ps_chunk_t *c, const ps_pending_pull_t *p)
{
    ps_wire_hdr_init(h, p->reply == PS_MSG_PUSH_REPLY ? PS_MSG_PUSH : PS_MSG_PULL);
    h->req_id = p->req_id;
    h->key = t->key;
    h->chunk = c->index;
    h->offset = c->offset;
    h->round = p->reply == PS_MSG_PUSH_REPLY ? p->round - 1 : p->round;
    h->map_version = p->map_version;
}

/* A waiting answer: the values (a pull) or the acknowledgement (a push, with backups). */
static void ps_server_answer(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, const ps_pending_pull_t *p)
{
    if (p->reply == PS_MSG_PULL_REPLY) {
        ps_server_send_values(s, p->peer, p->req_id, t->key, t, c, p->map_version);
        return;
    }
    ps_wire_hdr_t h;
    ps_pending_request(&h, t, c, p);
    ps_server_reply(s, p->peer, &h, PS_MSG_PUSH_REPLY, PSERV_OK);
}

void ps_server_answer_pulls(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c)
{
    uint64_t durable = ps_chunk_durable(c);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->npulls; i++) {
        ps_pending_pull_t *p = &c->pulls[i];
        if (p->round <= durable) ps_server_answer(s, t, c, p);
        else c->pulls[kept++] = *p;
    }
    c->npulls = kept;
}

/* Answers now when every copy holds round `round`, else parks the answer until they do. */
static void ps_server_pull_chunk(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, uint64_t round,
                                 const ps_tensor_t *t, ps_chunk_t *c, uint16_t reply)
{
    ps_pending_pull_t p = {peer, h->req_id, round, h->map_version, reply};
    if (round <= ps_chunk_durable(c)) {
        ps_server_answer(s, t, c, &p);
        return;
    }
    if (c->npulls == c->max_pulls) {
        /* Sync: a few per worker; async with backups: every request in flight may wait. */
        uint32_t cap = c->max_pulls ? 2 * c->max_pulls : 4 * s->store.num_workers;
        ps_pending_pull_t *more = cap <= PS_MAX_PARKED ? realloc(c->pulls, cap * sizeof(*more)) : NULL;
        if (more == NULL) {
            ps_server_reject(s, peer, h, PSERV_ERR_NO_RESOURCE, "too many answers waiting on this chunk");
            return;
        }
        c->pulls = more;
        c->max_pulls = cap;
    }
    c->pulls[c->npulls++] = p;
}

void ps_server_apply(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, float *grad)
{
    ps_optim_step(s->pool, &t->desc.optim, c->param, grad, &c->state, c->len);
    c->version++;
    if (!c->primary) return; /* a backup's steps are replica_updates */
    PS_STAT_ADD(s, steps, 1);
    if (c->version > __atomic_load_n(&s->m.newest_round, __ATOMIC_RELAXED)) /* for the coordinator, in heartbeats */
        __atomic_store_n(&s->m.newest_round, c->version, __ATOMIC_RELAXED);
    if (ps_server_ckpt_due(s, c->version)) ps_server_ckpt_chunk(s, t, c);
}

/* Sync: every node group still in the job has pushed this round. */
static int ps_server_round_complete(pserv_server_h s, const ps_chunk_t *c)
{
    uint32_t have = 0, W = s->store.num_workers;
    if (c->npushed == 0) return 0;
    for (uint32_t n = 0; n < s->store.num_nodes; n++)
        if (s->live_node[n] && PS_BIT_TEST(c->pushed, W + n)) have++;
    return have == s->num_live_nodes;
}

/* Sync: applies the round if it is complete, then answers the pulls waiting for it. */
static void ps_server_round_try(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c)
{
    if (!ps_server_round_complete(s, c)) return;
    ps_server_replicate(s, t, c, c->accum, UINT32_MAX, 0); /* before the optimizer changes the sum */
    ps_server_apply(s, t, c, c->accum);
    c->npushed = 0;
    memset(c->pushed, 0, PS_PUSHED_WORDS(&s->store) * sizeof(uint64_t));
    ps_server_answer_pulls(s, t, c);
}

void ps_server_on_push(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, float *grad)
{
    ps_tensor_t *t;
    ps_chunk_t *c;
    const char *why;
    pserv_status_t st = ps_store_check(&s->store, h, &t, &c, &why);
    if (st < 0) {
        ps_server_reject(s, peer, h, st, why);
        return;
    }
    uint32_t worker = h->sender;
    PS_STAT_ADD(s, bytes_in, h->length);
    /* One bad gradient must not poison the parameters: refused whole, the round left open. */
    if (!ps_optim_all_finite(grad, c->len)) {
        char text[96];
        snprintf(text, sizeof(text), "the gradient of tensor %llu from worker %u has a NaN or infinity",
                 (unsigned long long)t->key, worker);
        ps_server_reject(s, peer, h, PSERV_ERR_NOT_FINITE, text);
        return;
    }

    int fresh = 0; /* sync: the first push of this round from this worker */
    uint32_t node_bit = s->store.num_workers + s->store.worker_node[worker];
    if (s->store.sync) {
        if (h->round > c->version) {
            ps_server_reject(s, peer, h, PSERV_ERR_STALE, "round ahead of the chunk (pull round r before pushing r+1)");
            return;
        }
        fresh = h->round == c->version && !PS_BIT_TEST(c->pushed, worker);
        if (fresh && PS_BIT_TEST(c->pushed, node_bit)) {
            ps_server_reject(s, peer, h, PSERV_ERR_INVALID_ARG,
                             "another worker of its node group pushed this chunk's round already");
            return;
        }
    }
    /* Async with backups: a push re-sent after a failover that its first owner had already applied
     * (and replicated) is recognised by the worker's sequence and acknowledged, not applied again. */
    int repeat = !s->store.sync && c->last_seq && (h->flags & PS_WIRE_FLAG_RETRY) && worker < s->store.num_workers &&
                 h->round < c->last_seq[worker];
    /* Counted before any reply this push may release (a caller may read the stats then). */
    if (!repeat) PS_STAT_ADD(s, pushes, 1);

    if (!s->store.sync && !repeat) {
        if (c->last_seq && worker < s->store.num_workers && h->round + 1 > c->last_seq[worker])
            c->last_seq[worker] = h->round + 1;
        ps_server_replicate(s, t, c, grad, worker, h->round);
        ps_server_apply(s, t, c, grad);
    } else if (fresh) {
        if (c->npushed == 0)
            memcpy(c->accum, grad, c->param_bytes);
        else
            ps_optim_accumulate(s->pool, c->accum, grad, c->len);
        PS_BIT_SET(c->pushed, worker);
        PS_BIT_SET(c->pushed, node_bit);
        c->npushed++;
        ps_server_round_try(s, t, c);
    } /* else: a repeat of a round already counted: acknowledge, change nothing */

    /* What holds this push: sync, the round it completes; async, the chunk as it is now. With
     * backups, it is answered once every copy holds that (a push's acknowledgement too). */
    uint64_t holds = s->store.sync ? h->round + 1 : c->version;
    if (h->type == PS_MSG_PUSH_PULL)
        ps_server_pull_chunk(s, peer, h, holds, t, c, PS_MSG_PULL_REPLY);
    else if (c->nbackups > 0)
        ps_server_pull_chunk(s, peer, h, holds, t, c, PS_MSG_PUSH_REPLY);
    else
        ps_server_reply(s, peer, h, PS_MSG_PUSH_REPLY, PSERV_OK);
}

void ps_server_on_pull(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    ps_tensor_t *t;
    ps_chunk_t *c;
    const char *why;
    pserv_status_t st = ps_store_check(&s->store, h, &t, &c, &why);
    if (st < 0) {
        ps_server_reject(s, peer, h, st, why);
        return;
    }
    if (!s->store.sync) ps_server_send_values(s, peer, h->req_id, t->key, t, c, h->map_version); /* the latest */
    else ps_server_pull_chunk(s, peer, h, h->round, t, c, PS_MSG_PULL_REPLY);
}

typedef struct {
    pserv_server_h s;
    pserv_status_t st;
    ps_tp_peer_t *peer; /* only this peer's pulls (drop), or every pull (fail) */
} ps_server_sweep_t;

static void ps_server_sweep_chunk(void *arg, ps_tensor_t *t, ps_chunk_t *c)
{
    ps_server_sweep_t *sw = arg;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->npulls; i++) {
        ps_pending_pull_t *p = &c->pulls[i];
        if (sw->peer != NULL && p->peer != sw->peer) {
            c->pulls[kept++] = *p;
            continue;
        }
        if (sw->peer != NULL) continue; /* its connection is gone: nobody to answer */
        ps_wire_hdr_t h;
        ps_pending_request(&h, t, c, p);
        ps_server_reply(sw->s, p->peer, &h, (ps_msg_type_t)p->reply, sw->st);
    }
    c->npulls = kept;
}

void ps_server_release_chunk(pserv_server_h s, ps_tensor_t *t, ps_chunk_t *c)
{
    ps_server_sweep_t sw = {s, PSERV_ERR_VIEW_CHANGED, NULL};
    ps_server_sweep_chunk(&sw, t, c);
    c->stale = 1; /* should it come back before it is freed, only a STATE makes it a copy again */
    c->primary = 0;
    c->nbackups = 0;
    c->npushed = 0;
    if (c->pushed) memset(c->pushed, 0, PS_PUSHED_WORDS(&s->store) * sizeof(uint64_t));
    ps_debug("tensor %llu chunk %u moved away from this shard", (unsigned long long)t->key, c->index);
    /* Its memory goes once no send from it is in flight: now, or when the last one completes. */
    if (ps_chunk_retire(c)) ps_store_reclaim(&s->store, t->key, c->index);
}

void ps_server_chunk_idle(void *arg, uint64_t key, uint32_t chunk)
{
    pserv_server_h s = arg;
    ps_pipe_push(&s->pipe, &(ps_work_t){.kind = PS_WORK_RECLAIM, .h = {.key = key, .chunk = chunk}, .slot = -1});
}

void ps_server_fail_rounds(pserv_server_h s, pserv_status_t st)
{
    ps_server_sweep_t sw = {s, st, NULL};
    ps_store_each_chunk(&s->store, ps_server_sweep_chunk, &sw);
}

void ps_server_drop_peer(pserv_server_h s, ps_tp_peer_t *peer)
{
    ps_server_sweep_t sw = {s, PSERV_OK, peer};
    ps_store_each_chunk(&s->store, ps_server_sweep_chunk, &sw);
}

static void ps_server_recount_chunk(void *arg, ps_tensor_t *t, ps_chunk_t *c)
{
    ps_server_round_try(arg, t, c);
}

void ps_server_recount_rounds(pserv_server_h s)
{
    if (s->store.sync) ps_store_each_chunk(&s->store, ps_server_recount_chunk, s);
}

/* A refused REGISTER carries the reason: a checkpoint's problem names its file. */
static void ps_server_refuse_register(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h,
                                      pserv_status_t st, const char *why)
{
    PS_STAT_ADD(s, rejected, 1);
    ps_warn("REGISTER from %s (key %llu chunk %u) rejected: %s", ps_tp_peer_name(peer), (unsigned long long)h->key,
            h->chunk, why);
    ps_wire_hdr_t r;
    ps_reply_hdr(&r, h, PS_MSG_REGISTER_REPLY, s->store.rank, st);
    char *text = strndup(why, PS_WIRE_REASON_MAX - 1);
    ps_send_msg(peer, &r, text, text ? strlen(text) : 0, NULL, ps_send_free_cb, text);
}

static void ps_server_on_register(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data,
                                  size_t len, uint64_t chunk_elems, const uint32_t *owners, uint32_t nowners)
{
    ps_reader_t r;
    ps_tensor_desc_t desc;
    ps_chunk_t *fresh = NULL;
    const char *why = "malformed tensor descriptor";
    int resuming = s->m.job.resume_round > 0;
    if (resuming && s->ckpt.resume_open && s->ckpt.resume_status < 0) {
        /* The checkpoint failed an earlier chunk: nothing starts from initial values instead. */
        ps_server_refuse_register(s, peer, h, s->ckpt.resume_status, s->ckpt.resume_error);
        return;
    }
    ps_reader_init(&r, data, len);
    pserv_status_t st = ps_tensor_desc_decode(&r, &desc);
    if (st == PSERV_OK)
        st = ps_store_define(&s->store, h->key, &desc, chunk_elems, h->chunk, (const uint8_t *)data + r.pos,
                             len - r.pos, &fresh, &why);
    ps_tensor_t *t = st == PSERV_OK ? ps_keymap_get(&s->store.tensors, h->key) : NULL;
    if (fresh != NULL && resuming && (st = ps_server_ckpt_restore(s, t, fresh, &why)) < 0) {
        s->ckpt.resume_status = st;
        snprintf(s->ckpt.resume_error, sizeof(s->ckpt.resume_error), "%s", why);
    }
    if (st < 0) {
        ps_server_refuse_register(s, peer, h, st, why);
        return;
    }
    ps_server_set_owners(s, t, t->chunks[h->chunk], owners, nowners, 1);
    /* The chunk's rounds so far: a resumed job's workers go on from them. */
    ps_wire_hdr_t q = *h;
    q.round = t->chunks[h->chunk]->version;
    ps_server_reply(s, peer, &q, PS_MSG_REGISTER_REPLY, PSERV_OK);
}

static void ps_server_unmark(void *arg, ps_tensor_t *t, ps_chunk_t *c)
{
    (void)arg;
    (void)t;
    c->in_view = 0;
}

static void ps_server_release_unmarked(void *arg, ps_tensor_t *t, ps_chunk_t *c)
{
    if (c->held && !c->in_view) ps_server_release_chunk(arg, t, c);
}

/* A view's roles: who is primary of each chunk held here, and its backups; a chunk the view no
 * longer has here is released. */
static void ps_server_apply_roles(pserv_server_h s, const ps_server_roles_t *roles)
{
    if (roles == NULL) return; /* no memory for them: the next view has them */
    ps_store_each_chunk(&s->store, ps_server_unmark, NULL);
    for (uint32_t i = 0; i < roles->n; i++) {
        const ps_server_role_t *r = &roles->role[i];
        ps_tensor_t *t = ps_keymap_get(&s->store.tensors, r->key);
        ps_chunk_t *c = t && r->chunk < t->layout.num_chunks ? t->chunks[r->chunk] : NULL;
        if (c == NULL) continue;
        c->in_view = 1;
        ps_chunk_hold(c);
        ps_server_set_owners(s, t, c, r->owners, r->n, 0);
    }
    ps_store_each_chunk(&s->store, ps_server_release_unmarked, s);
}

void ps_server_run(void *arg, ps_work_t *w)
{
    pserv_server_h s = arg;
    switch (w->kind) {
    case PS_WORK_MSG:
        if (w->in_batch) ps_server_out_begin(s);
        if (w->h.type == PS_MSG_REGISTER)
            ps_server_on_register(s, w->peer, &w->h, w->data, w->len, w->chunk_elems, w->owners, w->nowners);
        else if (w->h.type == PS_MSG_PULL) ps_server_on_pull(s, w->peer, &w->h);
        else if (w->h.type == PS_MSG_REPLICATE || w->h.type == PS_MSG_REPLICATE_ACK || w->h.type == PS_MSG_STATE)
            ps_server_on_replica(s, w->peer, &w->h, w->data, w->len);
        else ps_server_on_push(s, w->peer, &w->h, (float *)(void *)w->data);
        break;
    case PS_WORK_VIEW:
        free(s->live_node);
        s->live_node = w->data;
        s->num_live_nodes = (uint32_t)w->len;
        ps_server_apply_roles(s, w->roles);
        free(s->roles);
        s->roles = w->roles; /* kept: a STATE is checked against them */
        w->roles = NULL;
        ps_server_recount_rounds(s);
        break;
    case PS_WORK_ABORT:
        ps_server_fail_rounds(s, PSERV_ERR_JOB_FAILED);
        break;
    case PS_WORK_CKPT_AT:
        ps_server_ckpt_at(s, w->len);
        break;
    case PS_WORK_CONNECT:
        ps_server_connect_server(s, (uint32_t)w->len);
        break;
    case PS_WORK_RESYNC:
        ps_server_resync(s);
        break;
    case PS_WORK_PEER_GONE:
        ps_server_drop_peer(s, w->peer);
        break;
    case PS_WORK_BATCH_END:
        ps_server_out_end(s, w->data);
        break;
    case PS_WORK_RECLAIM:
        ps_store_reclaim(&s->store, w->h.key, w->h.chunk);
        break;
    }
}
