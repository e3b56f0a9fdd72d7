/*
 * Node groups on the device: the group's NCCL communicator and pserv_cuda_node_push_pull.
 *
 * Slices are whole chunks, so a member's slice is a valid range request: with nc chunks and G
 * members, member l owns chunks [l*nc/G, (l+1)*nc/G) (empty when nc < G). Every member computes
 * the same slices from the tensor's registration. When every slice has the same length (the
 * count divides evenly), the reduction is NCCL's in-place reduce-scatter and the gather its
 * in-place all-gather; otherwise one grouped reduce / broadcast per slice, rooted at its owner.
 * Everything is enqueued on the caller's stream, in the order reduce -> staged push-pull of the
 * slice -> gather, so the group's streams meet only inside NCCL's collectives.
 */
#include <stdio.h>
#include <string.h>

#include "cuda_check.h"
#include "cuda_worker.h"

extern "C" {
#include "log.h"
}

/* What local rank 0 broadcasts at create: the id, or why there is none (so that the others
 * fail at once instead of waiting in ncclCommInitRank). */
typedef struct {
    int32_t ok;
    char why[380];
    ps_nccl_id_t id;
} ps_cw_node_msg_t;
static_assert(sizeof(ps_cw_node_msg_t) <= PSERV_NODE_BROADCAST_MAX, "node broadcast payload");

pserv_status_t ps_cw_node_init(struct pserv_cuda_worker *cw)
{
    ps_cw_node_msg_t msg;
    const char *why = "";
    ps_nccl_comm_t comm = NULL;
    pserv_status_t st;
    const ps_nccl_t *nccl = ps_nccl_load(&why);
    memset(&msg, 0, sizeof(msg));
    if (cw->local_rank == 0) {
        ps_nccl_result_t res;
        if (nccl == NULL) {
            snprintf(msg.why, sizeof(msg.why), "%s", why);
        } else if ((res = nccl->get_unique_id(&msg.id)) != PS_NCCL_SUCCESS) {
            snprintf(msg.why, sizeof(msg.why), "ncclGetUniqueId: %s", nccl->get_error_string(res));
        } else {
            msg.ok = 1;
        }
    }
    /* Every member takes part, even when the lead has nothing to give: it is a barrier. */
    if ((st = pserv_worker_node_broadcast(cw->worker, &msg, sizeof(msg), PS_CW_NODE_TIMEOUT_MS)) < 0)
        return PS_CW_FAIL(st, "pserv_cuda_worker_create: sharing the NCCL id over the node group: %s",
                          pserv_worker_last_error(cw->worker));
    msg.why[sizeof(msg.why) - 1] = '\0';
    if (!msg.ok)
        return PS_CW_FAIL(PSERV_ERR_UNSUPPORTED,
                          "pserv_cuda_worker_create: a node group of %u workers needs NCCL; local rank 0: %s",
                          cw->local_size, msg.why);
    if (nccl == NULL) /* the lead has it and will wait in ncclCommInitRank for us: it cannot know */
        return PS_CW_FAIL(PSERV_ERR_UNSUPPORTED,
                          "pserv_cuda_worker_create: a node group of %u workers needs NCCL (local rank %u): %s",
                          cw->local_size, cw->local_rank, why);
    if ((st = PS_NCCL_CALL(nccl, NULL,
                           comm_init_rank(&comm, (int)cw->local_size, msg.id, (int)cw->local_rank))) < 0)
        return st;
    cw->nccl = nccl;
    cw->comm = comm;
    cw->nccl_tried = 1;
    ps_info("node group member %u of %u on device %d: NCCL %d from %s", cw->local_rank, cw->local_size, cw->device,
            nccl->version, nccl->path);
    return PSERV_OK;
}

/* A group of one needs no NCCL (its slice is the whole tensor); it uses NCCL where it loads so
 * that the path a larger group takes is the path tested, and goes on without it otherwise. */
static void ps_cw_node_lazy(struct pserv_cuda_worker *cw)
{
    static int logged;
    const char *why = "";
    ps_nccl_id_t id;
    ps_nccl_comm_t comm = NULL;
    cw->nccl_tried = 1;
    if (cw->no_nccl) return;
    const ps_nccl_t *nccl = ps_nccl_load(&why);
    if (nccl != NULL) {
        pserv_status_t st = PS_NCCL_CALL(nccl, NULL, get_unique_id(&id));
        if (st >= 0) st = PS_NCCL_CALL(nccl, NULL, comm_init_rank(&comm, 1, id, 0));
        if (st >= 0) {
            cw->nccl = nccl;
            cw->comm = comm;
            return;
        }
        why = pserv_cuda_last_error();
    }
    if (!__atomic_exchange_n(&logged, 1, __ATOMIC_RELAXED))
        ps_info("node group of one without NCCL (%s): pserv_cuda_node_push_pull is a push-pull", why);
}

void ps_cw_node_fini(struct pserv_cuda_worker *cw)
{
    if (cw->comm == NULL) return;
    ps_nccl_result_t async = PS_NCCL_SUCCESS;
    /* A communicator that saw an error may have peers that will never answer: abort it. */
    if (cw->nccl->comm_get_async_error(cw->comm, &async) != PS_NCCL_SUCCESS || async != PS_NCCL_SUCCESS)
        (void)cw->nccl->comm_abort(cw->comm);
    else
        (void)PS_NCCL_CALL(cw->nccl, cw->comm, comm_destroy(cw->comm));
    cw->comm = NULL;
}

typedef struct {
    size_t start, len;
} ps_cw_slice_t;

static ps_cw_slice_t ps_cw_slice(size_t count, size_t chunk_elems, unsigned members, unsigned m)
{
    size_t nc = (count + chunk_elems - 1) / chunk_elems;
    size_t c0 = nc * m / members, c1 = nc * (m + 1) / members;
    size_t start = c0 * chunk_elems < count ? c0 * chunk_elems : count;
    size_t end = c1 * chunk_elems < count ? c1 * chunk_elems : count;
    ps_cw_slice_t s = {start, end - start};
    return s;
}

/* The uneven case: one collective per member's slice, rooted at its owner. */
typedef pserv_status_t (*ps_cw_slice_op_t)(struct pserv_cuda_worker *cw, float *buf, ps_cw_slice_t s, int root,
                                           cudaStream_t stream);

static pserv_status_t ps_cw_slice_reduce(struct pserv_cuda_worker *cw, float *g, ps_cw_slice_t s, int root,
                                         cudaStream_t stream)
{
    return PS_NCCL_CALL(cw->nccl, cw->comm,
                        reduce(g + s.start, g + s.start, s.len, PS_NCCL_FLOAT32, PS_NCCL_SUM, root, cw->comm, stream));
}

static pserv_status_t ps_cw_slice_broadcast(struct pserv_cuda_worker *cw, float *p, ps_cw_slice_t s, int root,
                                            cudaStream_t stream)
{
    return PS_NCCL_CALL(cw->nccl, cw->comm,
                        broadcast(p + s.start, p + s.start, s.len, PS_NCCL_FLOAT32, root, cw->comm, stream));
}

/* Runs op on every non-empty slice inside one NCCL group; the group is ended even after an
 * error, or NCCL would be left inside it. */
static pserv_status_t ps_cw_node_per_slice(struct pserv_cuda_worker *cw, float *buf, size_t count, size_t ce,
                                           ps_cw_slice_op_t op, cudaStream_t stream)
{
    const unsigned G = cw->local_size;
    pserv_status_t st = PS_NCCL_CALL(cw->nccl, cw->comm, group_start());
    if (st < 0) return st;
    for (unsigned r = 0; r < G && st >= 0; r++) {
        ps_cw_slice_t s = ps_cw_slice(count, ce, G, r);
        if (s.len > 0) st = op(cw, buf, s, (int)r, stream);
    }
    pserv_status_t est = PS_NCCL_CALL(cw->nccl, cw->comm, group_end());
    return st < 0 ? st : est;
}

/* Sums dgrad over the group into each member's slice (in place). */
static pserv_status_t ps_cw_node_reduce(struct pserv_cuda_worker *cw, float *g, size_t count, size_t ce, int equal,
                                        cudaStream_t stream)
{
    if (!equal) return ps_cw_node_per_slice(cw, g, count, ce, ps_cw_slice_reduce, stream);
    ps_cw_slice_t mine = ps_cw_slice(count, ce, cw->local_size, cw->local_rank);
    return PS_NCCL_CALL(cw->nccl, cw->comm,
                        reduce_scatter(g, g + mine.start, mine.len, PS_NCCL_FLOAT32, PS_NCCL_SUM, cw->comm, stream));
}

/* Gathers every member's slice of dparam into the whole of dparam (in place). */
static pserv_status_t ps_cw_node_gather(struct pserv_cuda_worker *cw, float *p, size_t count, size_t ce, int equal,
                                        cudaStream_t stream)
{
    if (!equal) return ps_cw_node_per_slice(cw, p, count, ce, ps_cw_slice_broadcast, stream);
    ps_cw_slice_t mine = ps_cw_slice(count, ce, cw->local_size, cw->local_rank);
    return PS_NCCL_CALL(cw->nccl, cw->comm, all_gather(p + mine.start, p, mine.len, PS_NCCL_FLOAT32, cw->comm, stream));
}

extern "C" pserv_status_t pserv_cuda_node_push_pull(pserv_cuda_worker_h cw, uint64_t key, void *dgrad, void *dparam,
                                                    pserv_cuda_stream_t stream)
{
    pserv_status_t st, pst = PSERV_OK, gst = PSERV_OK;
    size_t count = 0, ce = 0;
    int prev = -1, equal = 1;
    cudaStream_t s = (cudaStream_t)stream;
    float *g = (float *)dgrad, *p = (float *)dparam;
    if (cw == NULL || dgrad == NULL || dparam == NULL)
        return PS_CW_FAIL(PSERV_ERR_INVALID_ARG, "pserv_cuda_node_push_pull: NULL handle or buffer");
    if ((st = pserv_worker_tensor_info(cw->worker, key, &count, &ce)) < 0)
        return PS_CW_FAIL(st, "pserv_cuda_node_push_pull: key %llu: %s", (unsigned long long)key,
                          pserv_worker_last_error(cw->worker));
    if (ce == 0) return PS_CW_FAIL(PSERV_ERR_INTERNAL, "pserv_cuda_node_push_pull: key %llu: no chunk size",
                                   (unsigned long long)key);
    if ((st = ps_cw_device_enter(cw, &prev)) < 0) return st;
    if (cw->local_size == 1 && !cw->nccl_tried) ps_cw_node_lazy(cw);

    const unsigned G = cw->local_size;
    ps_cw_slice_t mine = ps_cw_slice(count, ce, G, cw->local_rank);
    for (unsigned r = 0; r < G; r++) equal = equal && ps_cw_slice(count, ce, G, r).len == mine.len && mine.len > 0;

    /* Once the reduction is enqueued the group's streams are committed: the gather is enqueued
     * whatever happens in between, or the other members would wait in it forever. */
    if (cw->comm != NULL && (st = ps_cw_node_reduce(cw, g, count, ce, equal, s)) < 0) goto out;
    if (mine.len > 0) {
        ps_cw_rec_t *rec;
        pst = ps_cw_rec_get(cw, key, mine.start, mine.len, "pserv_cuda_node_push_pull", &rec);
        if (pst >= 0) pst = ps_cw_issue(cw, rec, PS_STAGE_PUSH_PULL, g + mine.start, p + mine.start, s);
    }
    if (cw->comm != NULL) gst = ps_cw_node_gather(cw, p, count, ce, equal, s);
    st = pst < 0 ? pst : gst;
out:
    ps_cw_device_leave(cw, prev);
    return st;
}
