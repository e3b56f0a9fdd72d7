/*
 * A shard's checkpoints. Taking one stops the apply thread only for copies: when a chunk
 * completes a round R that is a multiple of the job's checkpoint_every, the apply thread copies
 * its parameters and optimizer state (ps_server_ckpt_chunk). Once every chunk of the shard has
 * been copied at R, the copies go to the writer thread, which writes
 * DIR/round-R/shard-RANK.ckpt atomically (ckpt/) and tells the coordinator, which removes older
 * rounds once R is complete everywhere. In sync mode every chunk's round R is the same step of
 * every worker, on every shard: the files of one round make one consistent state.
 *
 * If the writer is still busy with two rounds when a third is ready, the new one is dropped
 * (counted in checkpoints_skipped): training never waits for the disk.
 *
 * Resuming (the job's resume_dir): a chunk defined by REGISTER takes its values, optimizer
 * state and rounds from the checkpoint instead, by element range, whatever the chunks were
 * when it was written (ps_server_ckpt_restore).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_set.h"
#include "progress.h"
#include "server_internal.h"

/* Copies of one round's chunks, filled on the apply thread, written by the writer thread. */
struct ps_ckpt_snap {
    uint64_t round;
    uint32_t want, have, cap;
    ps_ckpt_chunk_t *chunks;
    float **copies;
    ps_ckpt_tensor_t *tensors; /* every tensor the shard knows, listed when the round is complete */
    uint32_t num_tensors;
};

/*
 * Copy buffers are kept for the next checkpoint, by size (a shard's chunks are the same every
 * round): a fresh allocation is page faults on the apply thread, most of a copy's cost.
 */
typedef struct {
    uint32_t n, cap;
    void **bufs;
} ps_spare_t;

static void *ps_spare_take(ps_server_ckpt_t *k, size_t bytes)
{
    pthread_mutex_lock(&k->lock);
    ps_spare_t *sp = ps_keymap_get(&k->spare, bytes);
    void *buf = sp && sp->n > 0 ? sp->bufs[--sp->n] : NULL;
    pthread_mutex_unlock(&k->lock);
    return buf ? buf : malloc(bytes);
}

/* Lock held. Frees the buffer when it cannot be kept. */
static void ps_spare_give(ps_server_ckpt_t *k, void *buf, size_t bytes)
{
    ps_spare_t *sp = ps_keymap_get(&k->spare, bytes);
    if (sp == NULL && (sp = calloc(1, sizeof(*sp))) != NULL && ps_keymap_put(&k->spare, bytes, sp) < 0) {
        free(sp);
        sp = NULL;
    }
    if (sp && sp->n == sp->cap) {
        void **more = realloc(sp->bufs, (sp->cap ? 2 * sp->cap : 8) * sizeof(*more));
        if (more != NULL) {
            sp->bufs = more;
            sp->cap = sp->cap ? 2 * sp->cap : 8;
        }
    }
    if (sp && sp->n < sp->cap) sp->bufs[sp->n++] = buf;
    else free(buf);
}

static void ps_spare_free(void *arg, void *value)
{
    ps_spare_t *sp = value;
    (void)arg;
    for (uint32_t i = 0; i < sp->n; i++) free(sp->bufs[i]);
    free(sp->bufs);
    free(sp);
}

static void ps_snap_free(ps_server_ckpt_t *k, ps_ckpt_snap_t *snap)
{
    if (snap == NULL) return;
    pthread_mutex_lock(&k->lock);
    for (uint32_t i = 0; i < snap->have; i++)
        ps_spare_give(k, snap->copies[i], (size_t)(1 + snap->chunks[i].nstate) * snap->chunks[i].len * sizeof(float));
    pthread_mutex_unlock(&k->lock);
    free(snap->copies);
    free(snap->chunks);
    free(snap->tensors);
    free(snap);
}

/* A shard's checkpoint holds the chunks it is primary of: each chunk is in one file. */
static void ps_count_chunk(void *arg, ps_tensor_t *t, ps_chunk_t *c)
{
    (void)t;
    *(uint32_t *)arg += c->primary;
}

static ps_ckpt_snap_t *ps_snap_new(pserv_server_h s, uint64_t round)
{
    ps_ckpt_snap_t *snap = calloc(1, sizeof(*snap));
    if (snap == NULL) return NULL;
    snap->round = round;
    ps_store_each_chunk(&s->store, ps_count_chunk, &snap->want);
    snap->cap = snap->want ? snap->want : 1;
    snap->chunks = calloc(snap->cap, sizeof(*snap->chunks));
    snap->copies = calloc(snap->cap, sizeof(*snap->copies));
    if (snap->chunks == NULL || snap->copies == NULL) {
        ps_snap_free(&s->ckpt, snap);
        return NULL;
    }
    return snap;
}

/* Adds a copy of chunk c of t as it is now; 0 without memory. */
static int ps_snap_add(ps_server_ckpt_t *k, ps_ckpt_snap_t *snap, const ps_tensor_t *t, const ps_chunk_t *c)
{
    if (snap->have == snap->cap) return 0;
    uint32_t nstate = c->state.s1 ? 2 : c->state.s0 ? 1 : 0;
    float *copy = ps_spare_take(k, (size_t)(1 + nstate) * c->len * sizeof(float));
    if (copy == NULL) return 0;
    const float *src[1 + PS_CKPT_MAX_STATE] = {c->param, c->state.s0, c->state.s1};
    ps_ckpt_chunk_t *e = &snap->chunks[snap->have];
    *e = (ps_ckpt_chunk_t){.key = t->key, .chunk = c->index, .nstate = nstate, .offset = c->offset, .len = c->len,
                           .version = c->version, .step = c->state.step};
    for (uint32_t a = 0; a <= nstate; a++) {
        memcpy(copy + (size_t)a * c->len, src[a], c->len * sizeof(float));
        e->arrays[a] = copy + (size_t)a * c->len;
    }
    snap->copies[snap->have++] = copy;
    return 1;
}

typedef struct {
    ps_ckpt_tensor_t *tensors;
    uint32_t n;
} ps_tensor_list_t;

static void ps_list_tensor(void *arg, void *value)
{
    ps_tensor_list_t *l = arg;
    const ps_tensor_t *t = value;
    l->tensors[l->n++] = (ps_ckpt_tensor_t){t->key, t->desc, t->layout.chunk_elems};
}

/* To the writer, with every tensor the shard knows (one it holds no chunk of is still named).
 * When its queue is full the newest round is dropped, never one being written. */
static void ps_ckpt_enqueue(pserv_server_h s, ps_ckpt_snap_t *snap)
{
    ps_server_ckpt_t *k = &s->ckpt;
    ps_tensor_list_t l = {calloc(s->store.tensors.count + 1, sizeof(ps_ckpt_tensor_t)), 0};
    if (l.tensors == NULL) {
        ps_warn("no memory for checkpoint round %llu", (unsigned long long)snap->round);
        ps_snap_free(k, snap);
        return;
    }
    ps_keymap_each(&s->store.tensors, ps_list_tensor, &l);
    snap->tensors = l.tensors;
    snap->num_tensors = l.n;
    pthread_mutex_lock(&k->lock);
    if (k->nqueue == PS_CKPT_QUEUE) {
        pthread_mutex_unlock(&k->lock);
        ps_warn("checkpoint round %llu dropped: the disk is still writing earlier ones", (unsigned long long)snap->round);
        PS_STAT_ADD(s, checkpoints_skipped, 1);
        ps_snap_free(k, snap);
        return;
    }
    k->last_round = snap->round; /* dropped ones are not: the final state is then still written */
    k->queue[k->nqueue++] = snap;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->lock);
}

void ps_server_ckpt_chunk(pserv_server_h s, const ps_tensor_t *t, const ps_chunk_t *c)
{
    ps_server_ckpt_t *k = &s->ckpt;
    uint64_t t0 = ps_now_ns();
    ps_ckpt_snap_t *snap = NULL;
    uint32_t i;
    for (i = 0; i < PS_CKPT_OPEN && k->open[i] != NULL && k->open[i]->round != c->version; i++) {
    }
    if (i < PS_CKPT_OPEN && k->open[i] != NULL) {
        snap = k->open[i];
    } else {
        /* A new round (async chunks may be at several at once): the oldest gives way. */
        if (i == PS_CKPT_OPEN) {
            ps_warn("checkpoint round %llu dropped: its chunks never all reached it",
                    (unsigned long long)k->open[0]->round);
            PS_STAT_ADD(s, checkpoints_skipped, 1);
            ps_snap_free(k, k->open[0]);
            memmove(&k->open[0], &k->open[1], (PS_CKPT_OPEN - 1) * sizeof(k->open[0]));
            i = PS_CKPT_OPEN - 1;
        }
        if ((k->open[i] = snap = ps_snap_new(s, c->version)) == NULL) {
            ps_warn("no memory for checkpoint round %llu", (unsigned long long)c->version);
            return;
        }
    }
    if (!ps_snap_add(k, snap, t, c)) {
        ps_warn("no memory for checkpoint round %llu", (unsigned long long)snap->round);
        snap->want = UINT32_MAX; /* never completes: dropped when it is the oldest */
    }
    PS_STAT_ADD(s, checkpoint_pause_ns, ps_now_ns() - t0);
    if (snap->have < snap->want) return;
    memmove(&k->open[i], &k->open[i + 1], (PS_CKPT_OPEN - 1 - i) * sizeof(k->open[0]));
    k->open[PS_CKPT_OPEN - 1] = NULL;
    ps_ckpt_enqueue(s, snap);
}

/* Tells the coordinator the round is written (or why not). */
static void ps_ckpt_report(pserv_server_h s, uint64_t round, pserv_status_t st, const char *why)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_CHECKPOINT);
    h.sender = s->m.rank;
    h.round = round;
    h.status = st;
    char *text = st < 0 ? strndup(why, PS_WIRE_REASON_MAX - 1) : NULL;
    if (__atomic_load_n(&s->ckpt.quiet, __ATOMIC_ACQUIRE)) { /* the transport is stopped: nobody to tell */
        free(text);
        return;
    }
    if (ps_member_notify(&s->m, &h, text, text ? strlen(text) : 0) < 0)
        ps_debug("checkpoint round %llu not reported: no coordinator", (unsigned long long)round);
}

static pserv_status_t ps_ckpt_write(pserv_server_h s, ps_ckpt_snap_t *snap)
{
    char path[PS_CKPT_PATH_MAX];
    const char *dir = s->m.job.ckpt_dir;
    uint64_t bytes = 0, t0 = ps_now_ns(); /* the directories' fsyncs are part of the write */
    pserv_status_t st = ps_dir_make(dir);
    ps_ckpt_round_dir(dir, snap->round, path, sizeof(path));
    if (st == PSERV_OK) st = ps_dir_make(path);
    ps_ckpt_shard_path(dir, snap->round, s->m.rank, path, sizeof(path));
    ps_ckpt_header_t h = {.round = snap->round, .rank = s->m.rank,
                          .mode = (uint32_t)s->m.job.mode, .num_tensors = snap->num_tensors,
                          .num_chunks = snap->have, .tensors = snap->tensors, .chunks = snap->chunks};
    pthread_mutex_lock(&s->m.lock);
    h.view_version = s->m.view ? s->m.view->version : 0;
    h.num_servers = s->m.job.num_servers; /* servers may join */
    pthread_mutex_unlock(&s->m.lock);
    if (st == PSERV_OK) st = ps_ckpt_write_file(path, &h, &bytes);
    if (st == PSERV_OK) {
        PS_STAT_ADD(s, checkpoints, 1);
        PS_STAT_ADD(s, checkpoint_bytes, bytes);
        PS_STAT_ADD(s, checkpoint_write_ns, ps_now_ns() - t0);
        ps_info("checkpoint %s written: %llu bytes", path, (unsigned long long)bytes);
    } else {
        ps_error("checkpoint round %llu not written: %s", (unsigned long long)snap->round, pserv_last_error());
    }
    return st;
}

static void *ps_ckpt_writer(void *arg)
{
    pserv_server_h s = arg;
    ps_server_ckpt_t *k = &s->ckpt;
    pthread_mutex_lock(&k->lock);
    for (;;) {
        while (k->nqueue == 0 && !k->stop) pthread_cond_wait(&k->cond, &k->lock);
        if (k->nqueue == 0) break;
        ps_ckpt_snap_t *snap = k->queue[0];
        pthread_mutex_unlock(&k->lock);
        pserv_status_t st = ps_ckpt_write(s, snap);
        ps_ckpt_report(s, snap->round, st, pserv_last_error());
        ps_snap_free(k, snap);
        pthread_mutex_lock(&k->lock);
        memmove(&k->queue[0], &k->queue[1], (PS_CKPT_QUEUE - 1) * sizeof(k->queue[0]));
        k->nqueue--;
        pthread_cond_broadcast(&k->cond);
    }
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

pserv_status_t ps_server_ckpt_start(pserv_server_h s)
{
    ps_server_ckpt_t *k = &s->ckpt;
    if (s->m.job.ckpt_dir[0] == '\0') return PSERV_OK;
    if (pthread_mutex_init(&k->lock, NULL) != 0) return PSERV_ERR_NO_RESOURCE;
    ps_keymap_init(&k->spare);
    if (pthread_cond_init(&k->cond, NULL) != 0) {
        pthread_mutex_destroy(&k->lock);
        return PSERV_ERR_NO_RESOURCE;
    }
    if (pthread_create(&k->writer, NULL, ps_ckpt_writer, s) != 0) {
        pthread_cond_destroy(&k->cond);
        pthread_mutex_destroy(&k->lock);
        return PSERV_ERR_NO_RESOURCE;
    }
    k->running = 1;
    return PSERV_OK;
}

void ps_server_ckpt_drain(pserv_server_h s)
{
    ps_server_ckpt_t *k = &s->ckpt;
    if (!k->running) return;
    pthread_mutex_lock(&k->lock);
    while (k->nqueue > 0) pthread_cond_wait(&k->cond, &k->lock);
    pthread_mutex_unlock(&k->lock);
}

typedef struct {
    ps_server_ckpt_t *k;
    ps_ckpt_snap_t *snap;
} ps_snap_walk_t;

static void ps_snap_chunk(void *arg, ps_tensor_t *t, ps_chunk_t *c)
{
    ps_snap_walk_t *walk = arg;
    ps_ckpt_snap_t *snap = walk->snap;
    if (c->primary && (c->version != snap->round || !ps_snap_add(walk->k, snap, t, c))) snap->want = UINT32_MAX;
}

static void ps_snap_max_round(void *arg, ps_tensor_t *t, ps_chunk_t *c)
{
    (void)t;
    uint64_t *round = arg;
    if (c->primary && c->version > *round) *round = c->version;
}

/* The job ended well: the state it ended with, unless a checkpoint has it already, or its
 * chunks are not all at one round (a job that pushed some tensors more than others). */
static void ps_server_ckpt_final(pserv_server_h s)
{
    uint64_t round = 0;
    ps_store_each_chunk(&s->store, ps_snap_max_round, &round);
    if (round == 0 || round == s->ckpt.last_round) return;
    ps_ckpt_snap_t *snap = ps_snap_new(s, round);
    if (snap == NULL) return;
    ps_snap_walk_t walk = {&s->ckpt, snap};
    ps_store_each_chunk(&s->store, ps_snap_chunk, &walk);
    if (snap->have != snap->want) {
        ps_snap_free(&s->ckpt, snap);
        return;
    }
    ps_ckpt_enqueue(s, snap);
}

void ps_server_ckpt_at(pserv_server_h s, uint64_t round)
{
    if (!s->ckpt.running) return;
    uint64_t newest = 0;
    ps_store_each_chunk(&s->store, ps_snap_max_round, &newest);
    if (newest >= round) {
        char why[96];
        snprintf(why, sizeof(why), "round %llu passed here already (at %llu)", (unsigned long long)round,
                 (unsigned long long)newest);
        ps_ckpt_report(s, round, PSERV_ERR_STALE, why);
        return;
    }
    s->ckpt.at_round = round;
}

void ps_server_ckpt_stop(pserv_server_h s)
{
    ps_server_ckpt_t *k = &s->ckpt;
    if (!k->running) return;
    for (uint32_t i = 0; i < PS_CKPT_OPEN; i++) ps_snap_free(k, k->open[i]);
    if (s->m.shutdown && !s->m.aborted) ps_server_ckpt_final(s);
    pthread_mutex_lock(&k->lock);
    __atomic_store_n(&k->quiet, 1, __ATOMIC_RELEASE); /* the transport is stopped: nobody to tell */
    k->stop = 1;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->lock);
    pthread_join(k->writer, NULL);
    ps_keymap_each(&k->spare, ps_spare_free, NULL);
    ps_keymap_fini(&k->spare);
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->lock);
    k->running = 0;
}

pserv_status_t ps_server_ckpt_restore(pserv_server_h s, const ps_tensor_t *t, ps_chunk_t *c, const char **why)
{
    ps_server_ckpt_t *k = &s->ckpt;
    static __thread char text[600];
    if (!k->resume_open) {
        k->resume_status = ps_ckpt_set_open(&k->resume, s->m.job.resume_dir, s->m.job.resume_round);
        snprintf(k->resume_error, sizeof(k->resume_error), "%s", pserv_last_error());
        k->resume_open = 1;
    }
    pserv_status_t st = k->resume_status;
    const ps_ckpt_tensor_t *ct = st < 0 ? NULL : ps_ckpt_set_tensor(&k->resume, t->key);
    if (st < 0) {
        snprintf(text, sizeof(text), "%s", k->resume_error);
    } else if (ct == NULL) {
        snprintf(text, sizeof(text), "checkpoint %.400s has no tensor %llu: it is of another model", k->resume.dir,
                 (unsigned long long)t->key);
        st = PSERV_ERR_MISMATCH;
    } else if (ct->desc.count != t->desc.count || ct->desc.dtype != t->desc.dtype ||
               ct->desc.optim.type != t->desc.optim.type) {
        snprintf(text, sizeof(text),
                 "checkpoint %.400s holds tensor %llu with %llu elements and optimizer %s; this job registers %llu "
                 "elements and optimizer %s",
                 k->resume.dir, (unsigned long long)t->key, (unsigned long long)ct->desc.count,
                 pserv_optim_name(ct->desc.optim.type), (unsigned long long)t->desc.count,
                 pserv_optim_name(t->desc.optim.type));
        st = PSERV_ERR_MISMATCH;
    } else {
        float *state[PS_CKPT_MAX_STATE] = {c->state.s0, c->state.s1};
        uint32_t nstate = c->state.s1 ? 2 : c->state.s0 ? 1 : 0;
        uint64_t version, step;
        st = ps_ckpt_set_fill(&k->resume, t->key, c->offset, c->len, c->param, state, nstate, &version, &step);
        if (st == PSERV_OK) {
            c->version = version;
            c->state.step = step;
        } else {
            snprintf(text, sizeof(text), "%s", pserv_last_error());
        }
    }
    if (st < 0) *why = text;
    return st;
}

void ps_server_ckpt_fini(pserv_server_h s)
{
    if (s->ckpt.resume_open && s->ckpt.resume_status == PSERV_OK) ps_ckpt_set_close(&s->ckpt.resume);
    s->ckpt.resume_open = 0;
}
