/*
 * The staging pipeline's host side (see stager.h). Two fixed rings, both under one lock:
 *
 *   slots[]   submitted operations, in order; a slot is reused only after its op_done returned
 *             (finished <= issued <= submitted, counted in operations)
 *   pieces[]  issued pieces between the issuer and the completer, in issue order
 *             (piece_head <= piece_tail, counted in pieces)
 *
 * Pieces are completed in the order they were issued, so operations finish in the order they
 * were submitted and slots free up in ring order. A slot's contents are written by submit before
 * it publishes `submitted` and are read without the lock by the two threads afterwards; the
 * completer alone writes its first_err. Nothing is allocated per piece or per operation.
 */
#include "stager.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "deadline.h"
#include "log.h"

#define PS_STAGER_MAX_OPS 256
/* Pieces in flight per stager: far more than the overlap of staging, wire and apply needs. */
#define PS_STAGER_MAX_PIECES 128
/* When every request slot of the worker is busy and none is ours, another user of the worker
 * holds them and nobody signals us: poll at this interval. */
#define PS_STAGER_RETRY_MS 1
/* Only float32 tensors exist, and pserv_worker_tensor_info does not report a dtype. */
#define PS_STAGER_ELEM_BYTES sizeof(float)

typedef struct {
    ps_stage_op_t op;
    size_t piece_elems;       /* rounded up to whole chunks */
    unsigned npieces;
    pserv_status_t first_err; /* of the operation's pieces; completer only */
} ps_stager_slot_t;

typedef struct {
    pserv_request_t req;
    pserv_status_t st; /* < 0: the piece failed before it was sent, req means nothing */
    uint32_t slot;
    uint32_t piece;
} ps_stager_piece_t;
_Static_assert(sizeof(ps_stager_piece_t) == 24, "a FIFO entry is three words");

struct ps_stager {
    pserv_worker_h worker;
    pthread_mutex_t lock;
    pthread_cond_t op_cv;    /* issuer: an operation was submitted, or the stager stops */
    pthread_cond_t piece_cv; /* completer: a piece was issued, or the issuer ended */
    pthread_cond_t freed_cv; /* issuer: a piece left the FIFO, so did its request slot */
    pthread_cond_t done_cv;  /* drain: an operation finished */
    uint64_t submitted, issued, finished;
    uint64_t piece_head, piece_tail;
    pserv_status_t first_err; /* of the operations finished since the last drain */
    int stopping, issuer_done;
    pthread_t issuer, completer;
    ps_stager_slot_t slots[PS_STAGER_MAX_OPS];
    ps_stager_piece_t pieces[PS_STAGER_MAX_PIECES];
};

static pserv_status_t ps_stage_geometry(pserv_worker_h w, const ps_stage_op_t *op, size_t *piece_elems,
                                        unsigned *pieces)
{
    size_t total, chunk;
    if (w == NULL || op == NULL) {
        ps_set_last_error("no worker or no operation");
        return PSERV_ERR_INVALID_ARG;
    }
    pserv_status_t st = pserv_worker_tensor_info(w, op->key, &total, &chunk);
    if (st < 0) {
        ps_set_last_error("%s", pserv_worker_last_error(w));
        return st;
    }
    size_t offset = op->offset, count = op->count, stop = offset + count;
    if ((unsigned)op->kind > PS_STAGE_PUSH_PULL || op->host == NULL) {
        ps_set_last_error("staged operation on tensor %llu: bad kind %d or no host buffer",
                          (unsigned long long)op->key, (int)op->kind);
        return PSERV_ERR_INVALID_ARG;
    }
    /* The same rule as the worker's range requests, checked here so that a bad operation fails
     * at submit rather than on every piece. */
    if (count == 0 || offset >= total || count > total - offset || offset % chunk != 0 ||
        (stop % chunk != 0 && stop != total)) {
        ps_set_last_error("staged range [%zu, %zu) of tensor %llu (%zu elements) is not whole chunks of %zu elements",
                          offset, stop, (unsigned long long)op->key, total, chunk);
        return PSERV_ERR_INVALID_ARG;
    }
    size_t pe = op->piece_elems == 0 ? chunk : PS_MIN(op->piece_elems, count); /* no overflow below */
    pe = (pe + chunk - 1) / chunk * chunk;
    size_t n = (count + pe - 1) / pe;
    if (n > UINT32_MAX) {
        ps_set_last_error("staged range of tensor %llu has %zu pieces", (unsigned long long)op->key, n);
        return PSERV_ERR_INVALID_ARG;
    }
    *piece_elems = pe;
    *pieces = (unsigned)n;
    return PSERV_OK;
}

pserv_status_t ps_stage_pieces(pserv_worker_h worker, const ps_stage_op_t *op, unsigned *pieces)
{
    size_t pe;
    unsigned n;
    PS_CHECK_ARG(pieces);
    PS_CHECK(ps_stage_geometry(worker, op, &pe, &n));
    *pieces = n;
    return PSERV_OK;
}

static pserv_status_t ps_stager_issue(ps_stager_t *s, const ps_stage_op_t *op, size_t begin, size_t len,
                                      pserv_request_t *req)
{
    uint8_t *buf = (uint8_t *)op->host + (begin - op->offset) * PS_STAGER_ELEM_BYTES;
    switch (op->kind) {
    case PS_STAGE_PUSH:
        return pserv_worker_push_range(s->worker, op->key, begin, len, buf, req);
    case PS_STAGE_PULL:
        return pserv_worker_pull_range(s->worker, op->key, begin, len, buf, req);
    default:
        return pserv_worker_push_pull_range(s->worker, op->key, begin, len, buf, buf, req);
    }
}

/* Issues a piece, waiting out PSERV_ERR_NO_RESOURCE (all of the worker's request slots in
 * flight): our own pieces free slots as the completer waits them, and the worker fails them
 * quickly if a server dies, so this ends. */
static pserv_status_t ps_stager_issue_retry(ps_stager_t *s, const ps_stage_op_t *op, size_t begin, size_t len,
                                            pserv_request_t *req)
{
    for (;;) {
        pthread_mutex_lock(&s->lock);
        uint64_t seen = s->piece_head;
        pthread_mutex_unlock(&s->lock);
        pserv_status_t st = ps_stager_issue(s, op, begin, len, req);
        if (st != PSERV_ERR_NO_RESOURCE) return st;
        ps_deadline_t d;
        ps_deadline_set(&d, PS_STAGER_RETRY_MS);
        pthread_mutex_lock(&s->lock);
        while (s->piece_head == seen && ps_cond_wait(&s->freed_cv, &s->lock, &d) == PSERV_OK) {
        }
        pthread_mutex_unlock(&s->lock);
    }
}

static void ps_stager_issue_op(ps_stager_t *s, uint32_t slot)
{
    const ps_stager_slot_t *sl = &s->slots[slot];
    const ps_stage_op_t *op = &sl->op;
    size_t stop = op->offset + op->count;
    for (unsigned i = 0; i < sl->npieces; i++) {
        ps_stager_piece_t p = {0, PSERV_OK, slot, i};
        size_t begin = op->offset + (size_t)i * sl->piece_elems;
        if (op->ops.staged) p.st = op->ops.staged(op->arg, i);
        if (p.st >= 0) p.st = ps_stager_issue_retry(s, op, begin, PS_MIN(sl->piece_elems, stop - begin), &p.req);
        if (p.st < 0)
            ps_debug("piece %u of tensor %llu not sent: %s", i, (unsigned long long)op->key, pserv_strerror(p.st));
        pthread_mutex_lock(&s->lock);
        while (s->piece_tail - s->piece_head == PS_STAGER_MAX_PIECES) pthread_cond_wait(&s->freed_cv, &s->lock);
        s->pieces[s->piece_tail++ % PS_STAGER_MAX_PIECES] = p;
        pthread_cond_signal(&s->piece_cv);
        pthread_mutex_unlock(&s->lock);
    }
}

static void *ps_stager_issuer_main(void *arg)
{
    ps_stager_t *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->issued == s->submitted && !s->stopping) pthread_cond_wait(&s->op_cv, &s->lock);
        if (s->issued == s->submitted) break; /* stopping, and everything queued is issued */
        uint32_t slot = (uint32_t)(s->issued % PS_STAGER_MAX_OPS);
        pthread_mutex_unlock(&s->lock);
        ps_stager_issue_op(s, slot);
        pthread_mutex_lock(&s->lock);
        s->issued++;
    }
    s->issuer_done = 1;
    pthread_cond_signal(&s->piece_cv);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void *ps_stager_completer_main(void *arg)
{
    ps_stager_t *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->piece_head == s->piece_tail && !s->issuer_done) pthread_cond_wait(&s->piece_cv, &s->lock);
        if (s->piece_head == s->piece_tail) break;
        ps_stager_piece_t p = s->pieces[s->piece_head % PS_STAGER_MAX_PIECES];
        pthread_mutex_unlock(&s->lock);

        ps_stager_slot_t *sl = &s->slots[p.slot];
        /* Copied: op_done may free what arg points to, and the slot is reused once finished moves. */
        ps_stage_ops_t ops = sl->op.ops;
        void *op_arg = sl->op.arg;
        pserv_status_t st = p.st;
        /* No bound: the worker fails a request itself when its server fails. */
        if (st >= 0) st = pserv_worker_wait(s->worker, p.req, -1);
        if (st < 0 && sl->first_err == PSERV_OK) sl->first_err = st;
        int last = p.piece + 1 == sl->npieces;
        pserv_status_t op_st = sl->first_err;
        if (ops.piece_done) ops.piece_done(op_arg, p.piece, st);
        if (last && ops.op_done) ops.op_done(op_arg, op_st);

        pthread_mutex_lock(&s->lock);
        s->piece_head++;
        pthread_cond_signal(&s->freed_cv);
        if (last) {
            s->finished++;
            if (op_st < 0 && s->first_err == PSERV_OK) s->first_err = op_st;
            pthread_cond_broadcast(&s->done_cv);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

pserv_status_t ps_stager_create(pserv_worker_h worker, ps_stager_t **out)
{
    pserv_status_t st;
    PS_CHECK_ARG(worker && out);
    ps_stager_t *s = calloc(1, sizeof(*s));
    if (s == NULL) return PSERV_ERR_NO_MEMORY;
    s->worker = worker;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        st = PSERV_ERR_NO_RESOURCE;
        goto err_free;
    }
    PS_CHECK_GOTO(ps_cond_init(&s->op_cv), st, err_destroy_lock);
    PS_CHECK_GOTO(ps_cond_init(&s->piece_cv), st, err_destroy_op_cv);
    PS_CHECK_GOTO(ps_cond_init(&s->freed_cv), st, err_destroy_piece_cv);
    PS_CHECK_GOTO(ps_cond_init(&s->done_cv), st, err_destroy_freed_cv);
    st = PSERV_ERR_NO_RESOURCE;
    if (pthread_create(&s->issuer, NULL, ps_stager_issuer_main, s) != 0) goto err_destroy_done_cv;
    if (pthread_create(&s->completer, NULL, ps_stager_completer_main, s) != 0) goto err_stop_issuer;
    *out = s;
    return PSERV_OK;

err_stop_issuer:
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_signal(&s->op_cv);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->issuer, NULL);
err_destroy_done_cv:
    pthread_cond_destroy(&s->done_cv);
err_destroy_freed_cv:
    pthread_cond_destroy(&s->freed_cv);
err_destroy_piece_cv:
    pthread_cond_destroy(&s->piece_cv);
err_destroy_op_cv:
    pthread_cond_destroy(&s->op_cv);
err_destroy_lock:
    pthread_mutex_destroy(&s->lock);
err_free:
    free(s);
    ps_set_last_error("cannot start the stager's threads: %s", pserv_strerror(st));
    return st;
}

pserv_status_t ps_stager_submit(ps_stager_t *s, const ps_stage_op_t *op)
{
    size_t pe;
    unsigned n;
    PS_CHECK_ARG(s);
    PS_CHECK(ps_stage_geometry(s->worker, op, &pe, &n));
    pserv_status_t st = PSERV_OK;
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        st = PSERV_ERR_SHUTDOWN;
        ps_set_last_error("the stager is stopping");
    } else if (s->submitted - s->finished == PS_STAGER_MAX_OPS) {
        st = PSERV_ERR_NO_RESOURCE;
        ps_set_last_error("the stager has %d operations queued already", PS_STAGER_MAX_OPS);
    } else {
        ps_stager_slot_t *sl = &s->slots[s->submitted++ % PS_STAGER_MAX_OPS];
        sl->op = *op;
        sl->piece_elems = pe;
        sl->npieces = n;
        sl->first_err = PSERV_OK;
        pthread_cond_signal(&s->op_cv);
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

pserv_status_t ps_stager_drain(ps_stager_t *s, int timeout_ms)
{
    ps_deadline_t d;
    PS_CHECK_ARG(s);
    ps_deadline_set(&d, timeout_ms);
    pthread_mutex_lock(&s->lock);
    while (s->finished != s->submitted && ps_cond_wait(&s->done_cv, &s->lock, &d) == PSERV_OK) {
    }
    pserv_status_t st = PSERV_ERR_TIMED_OUT;
    if (s->finished == s->submitted) {
        st = s->first_err;
        s->first_err = PSERV_OK;
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

void ps_stager_destroy(ps_stager_t *s)
{
    if (s == NULL) return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_signal(&s->op_cv);
    pthread_mutex_unlock(&s->lock);
    /* The issuer leaves once everything submitted is issued, the completer once that is reported. */
    pthread_join(s->issuer, NULL);
    pthread_join(s->completer, NULL);
    pthread_cond_destroy(&s->done_cv);
    pthread_cond_destroy(&s->freed_cv);
    pthread_cond_destroy(&s->piece_cv);
    pthread_cond_destroy(&s->op_cv);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
