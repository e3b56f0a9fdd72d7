/*
 * Device push / pull ordered on a caller's stream (pserv_cuda_worker_*, pserv_cuda.h), on top of
 * core's staging pipeline (core/stager.h). One op on a key's range, with n pieces:
 *
 *   caller's stream   [work before] ready  . . . . . . . . . . . . . wait(flag0) H2D0 wait(flag1) H2D1 ... done
 *   copy stream                     ^wait(ready) D2H0 staged0 D2H1 staged1 ...
 *   stager issuer                                  sync(staged0) -> request 0, sync(staged1) -> request 1 ...
 *   stager completer                                       reply 0 -> flag0 = seq, reply 1 -> flag1 = seq ...
 *
 * A push has no copies back: the caller's stream waits for the copy stream's last D2H instead,
 * so later work may overwrite the gradient. A pull has no D2H; its pieces are still "staged" by
 * events on the copy stream, after ready, so its replies land in the pinned buffer only after
 * the previous op's copies back have read it.
 *
 * Why one pinned buffer per key is safe without more locking (ops of a key are issued in order
 * on one stream): op n+1's D2H (or pull reply) into piece p happens after its ready event,
 * which the caller's stream records after op n's H2D copies; those ran after op n's wait
 * kernels saw every flag of op n, so op n's requests no longer use the buffer. When op n put no
 * wait kernels on the caller's stream (a push; or a call that failed half-way), wait_prev makes
 * the copy stream wait for op n's flags itself before writing piece p.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"
#include "cuda_worker.h"
#include "stream_wait.h"

pserv_status_t ps_cw_fail(pserv_status_t st, const char *file, int line, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return ps_cuda_fail(st, what, file, line);
}

pserv_status_t ps_cw_device_enter(const struct pserv_cuda_worker *cw, int *prev)
{
    pserv_status_t st = PS_CUDA_CALL(cudaGetDevice(prev));
    if (st < 0) return st;
    return *prev == cw->device ? PSERV_OK : PS_CUDA_CALL(cudaSetDevice(cw->device));
}

void ps_cw_device_leave(const struct pserv_cuda_worker *cw, int prev)
{
    if (prev != cw->device) (void)PS_CUDA_CALL(cudaSetDevice(prev));
}

/* Keeps the first asynchronous error for pserv_cuda_worker_synchronize. Any thread. */
static void ps_cw_keep_error(struct pserv_cuda_worker *cw, pserv_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void ps_cw_keep_error(struct pserv_cuda_worker *cw, pserv_status_t st, const char *fmt, ...)
{
    pthread_mutex_lock(&cw->lock);
    if (cw->error == PSERV_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cw->error_msg, sizeof(cw->error_msg), fmt, ap);
        va_end(ap);
        cw->error = st;
    }
    pthread_mutex_unlock(&cw->lock);
}

/* Returns (and forgets) the kept error, recorded as the calling thread's last error. */
static pserv_status_t ps_cw_take_error(struct pserv_cuda_worker *cw)
{
    char msg[sizeof(cw->error_msg)];
    pthread_mutex_lock(&cw->lock);
    pserv_status_t st = cw->error;
    memcpy(msg, cw->error_msg, sizeof(msg));
    cw->error = PSERV_OK;
    pthread_mutex_unlock(&cw->lock);
    return st < 0 ? ps_cuda_fail(st, msg, __FILE__, __LINE__) : PSERV_OK;
}

/* ---- stager callbacks (stager threads) ------------------------------------------------------ */

/* Issuer thread: blocks until piece p's D2H (or, for a pull, its turn on the copy stream) is done. */
static pserv_status_t ps_cw_staged(void *arg, unsigned piece)
{
    ps_cw_slot_t *slot = (ps_cw_slot_t *)arg;
    struct pserv_cuda_worker *cw = slot->rec->cw;
    int dev = -1;
    pserv_status_t st = PSERV_OK;
    /* Once per thread in practice: the stager's threads serve only this worker's device. */
    if (cudaGetDevice(&dev) != cudaSuccess || dev != cw->device) st = PS_CUDA_CALL(cudaSetDevice(cw->device));
    if (st >= 0) st = PS_CUDA_CALL(cudaEventSynchronize(slot->staged[piece]));
    if (st < 0) ps_cw_keep_error(cw, st, "key %llu piece %u: %s", (unsigned long long)slot->rec->key, piece,
                                 pserv_cuda_last_error());
    return st;
}

/* Completer thread, in piece order: releases the streams waiting for the piece, error or not. */
static void ps_cw_piece_done(void *arg, unsigned piece, pserv_status_t st)
{
    ps_cw_slot_t *slot = (ps_cw_slot_t *)arg;
    ps_cw_rec_t *rec = slot->rec;
    if (st < 0) {
        size_t first = rec->offset + (size_t)piece * rec->piece_elems;
        size_t last = first + rec->piece_elems < rec->offset + rec->count ? first + rec->piece_elems
                                                                          : rec->offset + rec->count;
        ps_cw_keep_error(rec->cw, st, "key %llu elements [%zu, %zu)", (unsigned long long)rec->key, first, last);
    }
    /* Release: the pulled values written into the pinned buffer before are seen by whoever sees
     * the flag (the wait kernel, then the H2D copy behind it). */
    __atomic_store_n(&rec->flags[piece], slot->seq, __ATOMIC_RELEASE);
}

/* Completer thread: the slot's events may be recorded again. */
static void ps_cw_op_done(void *arg, pserv_status_t st)
{
    ps_cw_slot_t *slot = (ps_cw_slot_t *)arg;
    struct pserv_cuda_worker *cw = slot->rec->cw;
    if (st < 0) ps_cw_keep_error(cw, st, "key %llu", (unsigned long long)slot->rec->key);
    pthread_mutex_lock(&cw->lock);
    slot->busy = 0;
    cw->ops_done++;
    pthread_cond_broadcast(&cw->slot_free);
    pthread_mutex_unlock(&cw->lock);
}

/* ---- staging records ------------------------------------------------------------------------ */

static void ps_cw_rec_free(ps_cw_rec_t *rec)
{
    for (unsigned s = 0; s < PS_CW_RING; s++) {
        ps_cw_slot_t *slot = &rec->slots[s];
        if (slot->ready) (void)PS_CUDA_CALL(cudaEventDestroy(slot->ready));
        if (slot->done) (void)PS_CUDA_CALL(cudaEventDestroy(slot->done));
        for (unsigned p = 0; slot->staged != NULL && p < rec->pieces; p++)
            if (slot->staged[p]) (void)PS_CUDA_CALL(cudaEventDestroy(slot->staged[p]));
        free(slot->staged);
    }
    if (rec->flags) (void)PS_CUDA_CALL(cudaFreeHost(rec->flags));
    if (rec->host) (void)PS_CUDA_CALL(cudaFreeHost(rec->host));
    free(rec);
}

static pserv_status_t ps_cw_rec_create(struct pserv_cuda_worker *cw, uint64_t key, size_t tensor_count,
                                       size_t chunk_elems, size_t offset, size_t count, ps_cw_rec_t **out)
{
    pserv_status_t st;
    unsigned pieces = 0;
    /* piece_bytes rounded up to whole chunks; default (0) and anything smaller: one chunk */
    size_t want = (cw->piece_bytes + sizeof(float) - 1) / sizeof(float);
    size_t pe = want <= chunk_elems ? chunk_elems : (want + chunk_elems - 1) / chunk_elems * chunk_elems;
    size_t npieces = (count + pe - 1) / pe;
    ps_stage_op_t probe;
    memset(&probe, 0, sizeof(probe));
    probe.kind = PS_STAGE_PUSH_PULL;
    probe.key = key;
    probe.offset = offset;
    probe.count = count;
    probe.piece_elems = pe;
    probe.host = &probe; /* checked for NULL only */
    if ((st = ps_stage_pieces(cw->worker, &probe, &pieces)) < 0)
        return PS_CW_FAIL(st, "key %llu elements [%zu, %zu): %s", (unsigned long long)key, offset, offset + count,
                          pserv_last_error());
    if (npieces > UINT_MAX / 2 || pieces != (unsigned)npieces)
        return PS_CW_FAIL(PSERV_ERR_INTERNAL, "key %llu: the stager cuts %zu elements into %u pieces of %zu, not %zu",
                          (unsigned long long)key, count, pieces, pe, npieces);

    ps_cw_rec_t *rec = (ps_cw_rec_t *)calloc(1, sizeof(*rec));
    if (rec == NULL) return PS_CW_FAIL(PSERV_ERR_NO_MEMORY, "key %llu: staging record", (unsigned long long)key);
    rec->cw = cw;
    rec->key = key;
    rec->tensor_count = tensor_count;
    rec->offset = offset;
    rec->count = count;
    rec->piece_elems = pe;
    rec->pieces = pieces;
    /* Portable: the stager's threads touch it too, whatever device they have current. */
    PS_CUDA_CHECK_GOTO(cudaHostAlloc((void **)&rec->host, count * sizeof(float), cudaHostAllocPortable), st, err_free);
    PS_CUDA_CHECK_GOTO(cudaHostAlloc((void **)&rec->flags, pieces * sizeof(uint32_t),
                                     cudaHostAllocMapped | cudaHostAllocPortable),
                       st, err_free);
    memset(rec->flags, 0, pieces * sizeof(uint32_t)); /* seq 0: "no op yet"; the first op is 1 */
    PS_CUDA_CHECK_GOTO(cudaHostGetDevicePointer((void **)&rec->dflags, rec->flags, 0), st, err_free);
    for (unsigned s = 0; s < PS_CW_RING; s++) {
        ps_cw_slot_t *slot = &rec->slots[s];
        slot->rec = rec;
        PS_CUDA_CHECK_GOTO(cudaEventCreateWithFlags(&slot->ready, cudaEventDisableTiming), st, err_free);
        PS_CUDA_CHECK_GOTO(cudaEventCreateWithFlags(&slot->done, cudaEventDisableTiming), st, err_free);
        if ((slot->staged = (cudaEvent_t *)calloc(pieces, sizeof(cudaEvent_t))) == NULL) {
            st = PS_CW_FAIL(PSERV_ERR_NO_MEMORY, "key %llu: %u events", (unsigned long long)key, pieces);
            goto err_free;
        }
        for (unsigned p = 0; p < pieces; p++)
            PS_CUDA_CHECK_GOTO(cudaEventCreateWithFlags(&slot->staged[p], cudaEventDisableTiming), st, err_free);
    }
    *out = rec;
    return PSERV_OK;

err_free:
    ps_cw_rec_free(rec);
    return st;
}

pserv_status_t ps_cw_rec_get(struct pserv_cuda_worker *cw, uint64_t key, size_t offset, size_t count,
                             const char *who, ps_cw_rec_t **out)
{
    pserv_status_t st;
    size_t tensor_count = 0, chunk_elems = 0;
    ps_cw_rec_t *head = (ps_cw_rec_t *)ps_keymap_get(&cw->recs, key), *rec;
    for (rec = head; rec != NULL; rec = rec->next) {
        int whole = rec->offset == 0 && rec->count == rec->tensor_count;
        if (count == SIZE_MAX ? whole : rec->offset == offset && rec->count == count) {
            *out = rec;
            return PSERV_OK;
        }
    }
    if ((st = pserv_worker_tensor_info(cw->worker, key, &tensor_count, &chunk_elems)) < 0)
        return PS_CW_FAIL(st, "%s: key %llu: %s", who, (unsigned long long)key, pserv_worker_last_error(cw->worker));
    if (count == SIZE_MAX) {
        offset = 0;
        count = tensor_count;
    }
    if (chunk_elems == 0 || count == 0 || offset > tensor_count || count > tensor_count - offset)
        return PS_CW_FAIL(PSERV_ERR_INVALID_ARG, "%s: key %llu: elements [%zu, %zu) of a tensor of %zu", who,
                          (unsigned long long)key, offset, offset + count, tensor_count);
    if ((st = ps_cw_rec_create(cw, key, tensor_count, chunk_elems, offset, count, &rec)) < 0) return st;
    if (head != NULL) {
        rec->next = head->next;
        head->next = rec;
    } else if ((st = ps_keymap_put(&cw->recs, key, rec)) < 0) {
        ps_cw_rec_free(rec);
        return PS_CW_FAIL(st, "%s: key %llu: staging table", who, (unsigned long long)key);
    }
    *out = rec;
    return PSERV_OK;
}

/* ---- one op --------------------------------------------------------------------------------- */

pserv_status_t ps_cw_issue(struct pserv_cuda_worker *cw, ps_cw_rec_t *rec, ps_stage_kind_t kind, const float *src,
                           float *dst, cudaStream_t stream)
{
    pserv_status_t st;
    ps_cw_slot_t *slot = &rec->slots[rec->next_slot];
    const size_t pe = rec->piece_elems;
    const uint32_t seq = rec->seq + 1; /* wraps; compared as int32_t differences */
    ps_stage_op_t op;

    /* The slot's staged events are recorded again below: its previous op (PS_CW_RING ops ago)
     * must be past every staged() wait. Rare: the host side is normally far ahead. */
    pthread_mutex_lock(&cw->lock);
    while (slot->busy) pthread_cond_wait(&cw->slot_free, &cw->lock);
    pthread_mutex_unlock(&cw->lock);

    /* Copy stream: the pieces go to the pinned buffer once the caller's stream got here. */
    PS_CUDA_CHECK_GOTO(cudaEventRecord(slot->ready, stream), st, out);
    PS_CUDA_CHECK_GOTO(cudaStreamWaitEvent(cw->copy, slot->ready, 0), st, out);
    for (unsigned p = 0; p < rec->pieces; p++) {
        size_t off = (size_t)p * pe, n = rec->count - off < pe ? rec->count - off : pe;
        if (rec->wait_prev && (st = ps_stream_wait_flag(rec->dflags + p, rec->seq, cw->copy)) < 0) goto out;
        if (kind != PS_STAGE_PULL)
            PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(rec->host + off, src + off, n * sizeof(float), cudaMemcpyDeviceToHost,
                                               cw->copy),
                               st, out);
        PS_CUDA_CHECK_GOTO(cudaEventRecord(slot->staged[p], cw->copy), st, out);
    }

    memset(&op, 0, sizeof(op));
    op.kind = kind;
    op.key = rec->key;
    op.offset = rec->offset;
    op.count = rec->count;
    op.piece_elems = pe;
    op.host = rec->host;
    op.ops.staged = ps_cw_staged;
    op.ops.piece_done = ps_cw_piece_done;
    op.ops.op_done = ps_cw_op_done;
    op.arg = slot;
    slot->seq = seq;
    pthread_mutex_lock(&cw->lock);
    slot->busy = 1; /* before submit: op_done may run before submit returns */
    for (;;) {
        uint64_t seen = cw->ops_done;
        pthread_mutex_unlock(&cw->lock);
        st = ps_stager_submit(cw->stager, &op);
        pthread_mutex_lock(&cw->lock);
        if (st != PSERV_ERR_NO_RESOURCE) break;
        /* The stager's queue is full of our own ops (hundreds ahead of the device): wait for
         * the oldest to finish; it does not depend on this thread. */
        while (cw->ops_done == seen) pthread_cond_wait(&cw->slot_free, &cw->lock);
    }
    if (st < 0) slot->busy = 0;
    pthread_mutex_unlock(&cw->lock);
    if (st < 0) /* nothing waits on this op; what the copy stream did for it the next op redoes */
        return PS_CW_FAIL(st, "key %llu: %s", (unsigned long long)rec->key, pserv_last_error());
    rec->seq = seq;
    rec->next_slot = (rec->next_slot + 1) % PS_CW_RING;
    /* Until every wait kernel is on the caller's stream, the next op must wait by itself. */
    rec->wait_prev = 1;

    /* Caller's stream: each piece comes back as soon as its flag says it is in. */
    if (kind == PS_STAGE_PUSH) {
        PS_CUDA_CHECK_GOTO(cudaStreamWaitEvent(stream, slot->staged[rec->pieces - 1], 0), st, out_done);
    } else {
        for (unsigned p = 0; p < rec->pieces; p++) {
            size_t off = (size_t)p * pe, n = rec->count - off < pe ? rec->count - off : pe;
            if ((st = ps_stream_wait_flag(rec->dflags + p, seq, stream)) < 0) goto out_done;
            PS_CUDA_CHECK_GOTO(cudaMemcpyAsync(dst + off, rec->host + off, n * sizeof(float), cudaMemcpyHostToDevice,
                                               stream),
                               st, out_done);
        }
        rec->wait_prev = 0;
    }
out_done:
    {
        /* Recorded even after a failure: destroy must wait for whatever part was enqueued. */
        pserv_status_t rst = PS_CUDA_CALL(cudaEventRecord(slot->done, stream));
        if (st >= 0) st = rst;
    }
out:
    return st;
}

/* ---- API ------------------------------------------------------------------------------------ */

extern "C" pserv_status_t pserv_cuda_worker_create(pserv_worker_h worker, const pserv_cuda_worker_params_t *params,
                                                   pserv_cuda_worker_h *out)
{
    pserv_status_t st;
    pserv_cuda_worker_params_t defaults = PSERV_CUDA_WORKER_PARAMS_INIT;
    pserv_job_info_t info = PSERV_JOB_INFO_INIT;
    int ndev = 0, prev = -1;
    if (worker == NULL || out == NULL)
        return PS_CW_FAIL(PSERV_ERR_INVALID_ARG, "pserv_cuda_worker_create: worker and cw are required");
    if (params == NULL) params = &defaults;
    if (params->size < sizeof(*params))
        return PS_CW_FAIL(PSERV_ERR_INVALID_ARG,
                          "pserv_cuda_worker_create: params->size %zu (start from PSERV_CUDA_WORKER_PARAMS_INIT)",
                          params->size);
    if ((st = pserv_cuda_device_count(&ndev)) < 0) return st; /* no driver / device: the reason is kept */
    if ((st = pserv_worker_job(worker, &info)) < 0)
        return PS_CW_FAIL(st, "pserv_cuda_worker_create: %s", pserv_worker_last_error(worker));
    if (info.local_size > 1 && params->no_nccl)
        return PS_CW_FAIL(PSERV_ERR_INVALID_ARG,
                          "pserv_cuda_worker_create: a node group of %u workers needs NCCL, and no_nccl is set",
                          info.local_size);

    pserv_cuda_worker_h cw = (pserv_cuda_worker_h)calloc(1, sizeof(*cw));
    if (cw == NULL) return PS_CW_FAIL(PSERV_ERR_NO_MEMORY, "pserv_cuda_worker_create");
    cw->worker = worker;
    cw->piece_bytes = params->piece_bytes;
    cw->no_nccl = params->no_nccl;
    cw->local_rank = info.local_rank;
    cw->local_size = info.local_size ? info.local_size : 1;
    cw->error = PSERV_OK;
    ps_keymap_init(&cw->recs);
    if (params->device < 0) {
        PS_CUDA_CHECK_GOTO(cudaGetDevice(&cw->device), st, err_free);
    } else if (params->device >= ndev) {
        st = PS_CW_FAIL(PSERV_ERR_INVALID_ARG, "pserv_cuda_worker_create: device %d of %d", params->device, ndev);
        goto err_free;
    } else {
        cw->device = params->device;
    }
    if (pthread_mutex_init(&cw->lock, NULL) != 0) {
        st = PS_CW_FAIL(PSERV_ERR_NO_RESOURCE, "pserv_cuda_worker_create: mutex");
        goto err_free;
    }
    if (pthread_cond_init(&cw->slot_free, NULL) != 0) {
        st = PS_CW_FAIL(PSERV_ERR_NO_RESOURCE, "pserv_cuda_worker_create: condition variable");
        goto err_mutex;
    }
    if ((st = ps_cw_device_enter(cw, &prev)) < 0) goto err_cond;
    PS_CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&cw->copy, cudaStreamNonBlocking), st, err_device);
    if ((st = ps_stager_create(worker, &cw->stager)) < 0) {
        st = PS_CW_FAIL(st, "pserv_cuda_worker_create: staging threads: %s", pserv_last_error());
        goto err_stream;
    }
    /* A group of several forms its communicator now, together; a group of one lazily. */
    if (cw->local_size > 1 && (st = ps_cw_node_init(cw)) < 0) goto err_stager;
    ps_cw_device_leave(cw, prev);
    *out = cw;
    return PSERV_OK;

err_stager:
    ps_stager_destroy(cw->stager);
err_stream:
    (void)PS_CUDA_CALL(cudaStreamDestroy(cw->copy));
err_device:
    ps_cw_device_leave(cw, prev);
err_cond:
    pthread_cond_destroy(&cw->slot_free);
err_mutex:
    pthread_mutex_destroy(&cw->lock);
err_free:
    ps_keymap_fini(&cw->recs);
    free(cw);
    return st;
}

/* Checks the arguments and the key, then issues one op over the whole tensor. */
static pserv_status_t ps_cw_whole(pserv_cuda_worker_h cw, ps_stage_kind_t kind, uint64_t key, const void *src,
                                  void *dst, pserv_cuda_stream_t stream, const char *who)
{
    pserv_status_t st;
    ps_cw_rec_t *rec;
    int prev = -1;
    if (cw == NULL || (kind != PS_STAGE_PULL && src == NULL) || (kind != PS_STAGE_PUSH && dst == NULL))
        return PS_CW_FAIL(PSERV_ERR_INVALID_ARG, "%s: NULL handle or buffer", who);
    if ((st = ps_cw_device_enter(cw, &prev)) < 0) return st;
    if ((st = ps_cw_rec_get(cw, key, 0, SIZE_MAX, who, &rec)) >= 0)
        st = ps_cw_issue(cw, rec, kind, (const float *)src, (float *)dst, (cudaStream_t)stream);
    ps_cw_device_leave(cw, prev);
    return st;
}

extern "C" pserv_status_t pserv_cuda_push(pserv_cuda_worker_h cw, uint64_t key, const void *dgrad,
                                          pserv_cuda_stream_t stream)
{
    return ps_cw_whole(cw, PS_STAGE_PUSH, key, dgrad, NULL, stream, "pserv_cuda_push");
}

extern "C" pserv_status_t pserv_cuda_pull(pserv_cuda_worker_h cw, uint64_t key, void *dparam,
                                          pserv_cuda_stream_t stream)
{
    return ps_cw_whole(cw, PS_STAGE_PULL, key, NULL, dparam, stream, "pserv_cuda_pull");
}

extern "C" pserv_status_t pserv_cuda_push_pull(pserv_cuda_worker_h cw, uint64_t key, const void *dgrad, void *dparam,
                                               pserv_cuda_stream_t stream)
{
    return ps_cw_whole(cw, PS_STAGE_PUSH_PULL, key, dgrad, dparam, stream, "pserv_cuda_push_pull");
}

extern "C" pserv_status_t pserv_cuda_worker_synchronize(pserv_cuda_worker_h cw, int timeout_ms)
{
    if (cw == NULL) return PS_CW_FAIL(PSERV_ERR_INVALID_ARG, "pserv_cuda_worker_synchronize: NULL handle");
    pserv_status_t st = ps_stager_drain(cw->stager, timeout_ms);
    if (st == PSERV_ERR_TIMED_OUT)
        return PS_CW_FAIL(st, "pserv_cuda_worker_synchronize: operations still in flight after %d ms", timeout_ms);
    pserv_status_t kept = ps_cw_take_error(cw);
    if (kept < 0) return kept;
    if (cw->comm != NULL) {
        ps_nccl_result_t async = PS_NCCL_SUCCESS;
        pserv_status_t nst = PS_NCCL_CALL(cw->nccl, cw->comm, comm_get_async_error(cw->comm, &async));
        if (nst < 0) return nst;
        if ((nst = ps_nccl_status(cw->nccl, cw->comm, async, "NCCL (asynchronous)", __FILE__, __LINE__)) < 0)
            return nst;
    }
    return st < 0 ? PS_CW_FAIL(st, "pserv_cuda_worker_synchronize") : st;
}

static void ps_cw_rec_release(void *arg, void *value)
{
    pserv_status_t *st = (pserv_status_t *)arg;
    for (ps_cw_rec_t *rec = (ps_cw_rec_t *)value; rec != NULL; rec = rec->next) {
        /* The stager reported every piece, so this changes nothing unless it did not. */
        for (unsigned p = 0; p < rec->pieces; p++) __atomic_store_n(&rec->flags[p], rec->seq, __ATOMIC_RELEASE);
        for (unsigned s = 0; s < PS_CW_RING; s++) {
            pserv_status_t e = PS_CUDA_CALL(cudaEventSynchronize(rec->slots[s].done));
            if (*st >= 0) *st = e;
        }
    }
}

static void ps_cw_rec_free_all(void *arg, void *value)
{
    ps_cw_rec_t *rec = (ps_cw_rec_t *)value;
    while (rec != NULL) {
        ps_cw_rec_t *next = rec->next;
        ps_cw_rec_free(rec);
        rec = next;
    }
}

extern "C" pserv_status_t pserv_cuda_worker_destroy(pserv_cuda_worker_h cw)
{
    pserv_status_t st = PSERV_OK, dst = PSERV_OK;
    int prev = -1;
    if (cw == NULL) return PSERV_OK;
    int entered = ps_cw_device_enter(cw, &prev) >= 0;
    /* Every queued piece is reported (with an error if need be), so every flag gets written. */
    ps_stager_destroy(cw->stager);
    st = ps_cw_take_error(cw);
    /* The streams' last reads of the pinned buffers and flags (copies back, wait kernels) must
     * be over before they are freed: each slot's done event is its last op's end on its stream. */
    ps_keymap_each(&cw->recs, ps_cw_rec_release, &dst);
    if (dst >= 0) dst = PS_CUDA_CALL(cudaStreamSynchronize(cw->copy));
    if (st >= 0) st = dst;
    ps_cw_node_fini(cw);
    ps_keymap_each(&cw->recs, ps_cw_rec_free_all, NULL);
    ps_keymap_fini(&cw->recs);
    (void)PS_CUDA_CALL(cudaStreamDestroy(cw->copy));
    if (entered) ps_cw_device_leave(cw, prev);
    pthread_cond_destroy(&cw->slot_free);
    pthread_mutex_destroy(&cw->lock);
    free(cw);
    return st;
}
