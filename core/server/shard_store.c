#include "shard_store.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pinned.h"

void ps_store_init(ps_store_t *s, ps_tp_t *tp, const ps_job_t *job, uint32_t rank)
{
    memset(s, 0, sizeof(*s));
    ps_keymap_init(&s->tensors);
    s->tp = tp;
    s->rank = rank;
    s->num_workers = job->num_workers;
    s->num_nodes = job->num_nodes;
    s->worker_node = job->worker_node;
    s->sync = job->mode == PSERV_MODE_SYNC;
}

static void ps_chunk_free(ps_chunk_t *c)
{
    if (c == NULL) return;
    if (c->mem) ps_tp_mem_deregister(c->mem); /* before the transport is destroyed */
    ps_pinned_free(c->param, c->param_bytes);
    free(c->accum);
    ps_optim_state_free(&c->state);
    free(c->pushed);
    free(c->pulls);
    free(c->last_seq);
    free(c->repl);
    free(c);
}

static void ps_tensor_free(void *arg, void *value)
{
    ps_tensor_t *t = value;
    (void)arg;
    for (uint32_t i = 0; i < t->layout.num_chunks; i++) ps_chunk_free(t->chunks[i]);
    free(t->chunks);
    free(t);
}

void ps_store_fini(ps_store_t *s)
{
    ps_keymap_each(&s->tensors, ps_tensor_free, NULL);
    ps_keymap_fini(&s->tensors);
}

static pserv_status_t ps_chunk_create(ps_store_t *s, const ps_tensor_t *t, uint32_t index, const void *values,
                                      ps_chunk_t **out)
{
    pserv_status_t st = PSERV_ERR_NO_MEMORY;
    ps_chunk_t *c = calloc(1, sizeof(*c));
    if (c == NULL) return st;
    c->store = s;
    c->key = t->key;
    c->index = index;
    c->primary = 1;
    c->held = 1;
    c->offset = ps_layout_chunk_offset(&t->layout, index);
    c->len = ps_layout_chunk_len(&t->layout, index);
    c->param_bytes = c->len * t->layout.elem_size;
    if ((st = ps_pinned_alloc(c->param_bytes, (void **)&c->param)) < 0) goto err_free;
    memcpy(c->param, values, c->param_bytes);
    if ((st = ps_tp_mem_register(s->tp, c->param, c->param_bytes, &c->mem)) < 0) {
        ps_warn("cannot register %zu bytes with the transport: pulls copy", c->param_bytes);
        c->mem = NULL;
    }
    if ((st = ps_optim_state_init(t->desc.optim.type, c->len, &c->state)) < 0) goto err_free;
    st = PSERV_ERR_NO_MEMORY;
    if (s->sync) {
        if (posix_memalign((void **)&c->accum, 64, c->param_bytes) != 0) {
            c->accum = NULL;
            goto err_free;
        }
        c->pushed = calloc(PS_PUSHED_WORDS(s), sizeof(uint64_t));
        /* Each worker may have a few pulls of one chunk waiting at once. */
        c->max_pulls = 4 * s->num_workers;
        c->pulls = calloc(c->max_pulls, sizeof(*c->pulls));
        if (c->pushed == NULL || c->pulls == NULL) goto err_free;
    }
    *out = c;
    __atomic_fetch_add(&s->chunks, 1, __ATOMIC_RELAXED);
    return PSERV_OK;

err_free:
    ps_chunk_free(c);
    return st;
}

static pserv_status_t ps_tensor_create(ps_store_t *s, uint64_t key, const ps_tensor_desc_t *desc,
                                       uint64_t chunk_elems, ps_tensor_t **out)
{
    pserv_status_t st;
    ps_tensor_t *t = calloc(1, sizeof(*t));
    if (t == NULL) return PSERV_ERR_NO_MEMORY;
    t->key = key;
    t->desc = *desc;
    size_t esize = ps_dtype_size(desc->dtype);
    st = chunk_elems == 0 || chunk_elems > SIZE_MAX / esize ? PSERV_ERR_INVALID_ARG
                                                            : ps_layout_init(&t->layout, desc->count, esize, chunk_elems * esize);
    if (st < 0) goto err_free;
    st = PSERV_ERR_NO_MEMORY;
    t->chunks = calloc(t->layout.num_chunks, sizeof(*t->chunks));
    if (t->chunks == NULL) goto err_free;
    if ((st = ps_keymap_put(&s->tensors, key, t)) < 0) goto err_free_chunks;
    *out = t;
    return PSERV_OK;

err_free_chunks:
    free(t->chunks);
err_free:
    free(t);
    return st;
}

pserv_status_t ps_store_define(ps_store_t *s, uint64_t key, const ps_tensor_desc_t *desc, uint64_t chunk_elems,
                               uint32_t c, const void *values, size_t values_len, ps_chunk_t **created,
                               const char **why)
{
    pserv_status_t st;
    *created = NULL;
    if (ps_optim_validate(&desc->optim) < 0) {
        *why = "invalid optimizer hyper-parameters";
        return PSERV_ERR_INVALID_ARG;
    }
    ps_tensor_t *t = ps_keymap_get(&s->tensors, key);
    if (t == NULL) {
        if ((st = ps_tensor_create(s, key, desc, chunk_elems, &t)) < 0) {
            *why = "cannot create the tensor";
            return st;
        }
    } else if (!ps_tensor_desc_same(&t->desc, desc)) {
        *why = "tensor registered before with another count, dtype or optimizer setting";
        return PSERV_ERR_MISMATCH;
    }
    if (c >= t->layout.num_chunks) {
        *why = "chunk out of range";
        return PSERV_ERR_BAD_MESSAGE;
    }
    if (values_len != ps_layout_chunk_len(&t->layout, c) * t->layout.elem_size) {
        *why = "initial values do not match the chunk's length";
        return PSERV_ERR_BAD_MESSAGE;
    }
    if (t->chunks[c] != NULL) return PSERV_OK; /* defined by another worker first */
    if ((st = ps_chunk_create(s, t, c, values, &t->chunks[c])) < 0) *why = "out of memory for the chunk";
    else *created = t->chunks[c];
    return st;
}

pserv_status_t ps_store_check(ps_store_t *s, const ps_wire_hdr_t *h, ps_tensor_t **tensor, ps_chunk_t **chunk,
                              const char **why)
{
    ps_tensor_t *t = ps_keymap_get(&s->tensors, h->key);
    if (t == NULL) {
        *why = "unknown key";
        return PSERV_ERR_UNKNOWN_KEY;
    }
    if (h->chunk >= t->layout.num_chunks) {
        *why = "chunk out of range";
        return PSERV_ERR_BAD_MESSAGE;
    }
    ps_chunk_t *c = t->chunks[h->chunk];
    if (c == NULL) {
        *why = "chunk not owned by this shard (or not registered)";
        return PSERV_ERR_UNKNOWN_KEY;
    }
    if (!c->held) {
        *why = "chunk moved to another shard";
        return PSERV_ERR_VIEW_CHANGED;
    }
    if (c->stale) { /* back here, and its primary lost before this copy got its state */
        *why = "this copy of the chunk is not in sync (its state never came back here)";
        return PSERV_ERR_STALE;
    }
    if (h->offset != c->offset) {
        *why = "offset does not match the chunk";
        return PSERV_ERR_BAD_MESSAGE;
    }
    if (h->type != PS_MSG_PULL) {
        if (h->dtype != t->desc.dtype) {
            *why = "wrong dtype";
            return PSERV_ERR_BAD_MESSAGE;
        }
        if (h->length != c->param_bytes) {
            *why = "length does not match the chunk";
            return PSERV_ERR_BAD_MESSAGE;
        }
    }
    *tensor = t;
    *chunk = c;
    return PSERV_OK;
}

void ps_chunk_send_begin(ps_chunk_t *c)
{
    /* Only a held chunk sends: so a completion that runs at once on the sending (apply) thread,
     * as a failed send's does, never finds the chunk idle and pushes to that thread's own pipe. */
    assert(c->held);
    __atomic_fetch_add(&c->refs, 2, __ATOMIC_RELAXED);
}

void ps_chunk_sent(void *arg, pserv_status_t status)
{
    (void)status;
    ps_chunk_t *c = arg;
    ps_store_t *s = c->store;
    uint64_t key = c->key;
    uint32_t index = c->index;
    /* After this, c may be freed by the apply thread: read above, never below. */
    if (__atomic_sub_fetch(&c->refs, 2, __ATOMIC_ACQ_REL) == 1 && s->idle) s->idle(s->idle_arg, key, index);
}

int ps_chunk_retire(ps_chunk_t *c)
{
    c->held = 0;
    return __atomic_or_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 1;
}

void ps_chunk_hold(ps_chunk_t *c)
{
    c->held = 1;
    __atomic_and_fetch(&c->refs, ~(uint64_t)1, __ATOMIC_ACQ_REL);
}

int ps_store_reclaim(ps_store_t *s, uint64_t key, uint32_t index)
{
    ps_tensor_t *t = ps_keymap_get(&s->tensors, key);
    ps_chunk_t *c = t && index < t->layout.num_chunks ? t->chunks[index] : NULL;
    /* A chunk held again (and maybe sending again) since it was retired is not idle. */
    if (c == NULL || c->held || __atomic_load_n(&c->refs, __ATOMIC_ACQUIRE) != 1) return 0;
    t->chunks[index] = NULL;
    ps_chunk_free(c);
    __atomic_fetch_sub(&s->chunks, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->freed, 1, __ATOMIC_RELAXED);
    return 1;
}

typedef struct {
    void (*fn)(void *arg, ps_tensor_t *t, ps_chunk_t *c);
    void *arg;
} ps_store_each_ctx_t;

static void ps_store_each_tensor(void *arg, void *value)
{
    ps_store_each_ctx_t *ctx = arg;
    ps_tensor_t *t = value;
    for (uint32_t i = 0; i < t->layout.num_chunks; i++)
        if (t->chunks[i]) ctx->fn(ctx->arg, t, t->chunks[i]);
}

void ps_store_each_chunk(ps_store_t *s, void (*fn)(void *arg, ps_tensor_t *t, ps_chunk_t *c), void *arg)
{
    ps_store_each_ctx_t ctx = {fn, arg};
    ps_keymap_each(&s->tensors, ps_store_each_tensor, &ctx);
}
