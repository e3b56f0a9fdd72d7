#include "job.h"

#include "wire.h"

#include <stdlib.h>

_Static_assert(PS_ADDR_MAX + PS_NODE_MAX + PS_SETTINGS_MAX + 16 <= PS_WIRE_JOIN_MAX, "a JOIN must fit its bound");

/* Bounds what a JOIN_REPLY can make a member allocate. */
#define PS_JOB_MAX_MEMBERS 65536

void ps_job_encode(const ps_job_t *job, uint32_t rank, ps_writer_t *w)
{
    ps_put_u32(w, rank);
    ps_put_u32(w, (uint32_t)job->mode);
    ps_put_u32(w, job->num_servers);
    ps_put_u32(w, job->num_workers);
    ps_put_u64(w, job->chunk_bytes);
    ps_put_u32(w, job->heartbeat_ms);
    ps_put_u32(w, job->failure_timeout_ms);
    ps_put_u32(w, job->on_worker_failure);
    for (uint32_t i = 0; i < job->num_servers; i++) ps_put_str(w, job->servers[i]);
    ps_put_u32(w, job->num_nodes);
    for (uint32_t i = 0; i < job->num_workers; i++) ps_put_u32(w, job->worker_node[i]);
    ps_put_str(w, job->ckpt_dir);
    ps_put_u32(w, job->ckpt_every);
    ps_put_u32(w, job->ckpt_every_ms);
    ps_put_str(w, job->resume_dir);
    ps_put_u64(w, job->resume_round);
}

/* Node indices in range and every group non-empty (the coordinator numbers them densely). */
static int ps_job_nodes_valid(const ps_job_t *j)
{
    if (j->num_nodes == 0 || j->num_nodes > j->num_workers) return 0;
    uint8_t *seen = calloc(j->num_nodes, 1);
    if (seen == NULL) return 0;
    uint32_t distinct = 0;
    int ok = 1;
    for (uint32_t i = 0; i < j->num_workers && ok; i++) {
        if (j->worker_node[i] >= j->num_nodes) ok = 0;
        else if (!seen[j->worker_node[i]]++) distinct++;
    }
    free(seen);
    return ok && distinct == j->num_nodes;
}

pserv_status_t ps_job_decode(ps_reader_t *r, ps_job_t *job, uint32_t *rank)
{
    ps_job_t j = {0};
    uint32_t my_rank = ps_get_u32(r);
    uint32_t mode = ps_get_u32(r);
    j.num_servers = ps_get_u32(r);
    j.num_workers = ps_get_u32(r);
    j.chunk_bytes = ps_get_u64(r);
    j.heartbeat_ms = ps_get_u32(r);
    j.failure_timeout_ms = ps_get_u32(r);
    j.on_worker_failure = ps_get_u32(r);
    if (r->bad || mode > PSERV_MODE_ASYNC || j.num_servers == 0 || j.num_servers > PS_JOB_MAX_MEMBERS ||
        j.num_workers == 0 || j.num_workers > PS_JOB_MAX_MEMBERS || j.chunk_bytes == 0 || j.heartbeat_ms == 0 ||
        j.failure_timeout_ms <= j.heartbeat_ms || j.on_worker_failure > PSERV_ON_FAILURE_CONTINUE)
        return PSERV_ERR_BAD_MESSAGE;
    j.mode = (pserv_mode_t)mode;
    j.servers = calloc(j.num_servers, sizeof(*j.servers));
    if (j.servers == NULL) return PSERV_ERR_NO_MEMORY;
    for (uint32_t i = 0; i < j.num_servers; i++) ps_get_str(r, j.servers[i], PS_ADDR_MAX);
    j.num_nodes = ps_get_u32(r);
    j.worker_node = calloc(j.num_workers, sizeof(*j.worker_node));
    if (j.worker_node == NULL) {
        free(j.servers);
        return PSERV_ERR_NO_MEMORY;
    }
    for (uint32_t i = 0; i < j.num_workers; i++) j.worker_node[i] = ps_get_u32(r);
    ps_get_str(r, j.ckpt_dir, sizeof(j.ckpt_dir));
    j.ckpt_every = ps_get_u32(r);
    j.ckpt_every_ms = ps_get_u32(r);
    ps_get_str(r, j.resume_dir, sizeof(j.resume_dir));
    j.resume_round = ps_get_u64(r);
    /* A checkpoint directory goes with one interval: rounds or time. */
    int every = (j.ckpt_every > 0) + (j.ckpt_every_ms > 0);
    if (r->bad || !ps_job_nodes_valid(&j) || (j.ckpt_dir[0] != '\0' ? every != 1 : every != 0) ||
        (j.resume_round > 0) != (j.resume_dir[0] != '\0')) {
        ps_job_free(&j);
        return PSERV_ERR_BAD_MESSAGE;
    }
    *job = j;
    *rank = my_rank;
    return PSERV_OK;
}

void ps_job_free(ps_job_t *job)
{
    free(job->servers);
    free(job->worker_node);
    job->servers = NULL;
    job->worker_node = NULL;
}

void ps_job_node_of(const ps_job_t *job, uint32_t worker, uint32_t *local_rank, uint32_t *local_size)
{
    uint32_t node = job->worker_node[worker], before = 0, size = 0;
    for (uint32_t i = 0; i < job->num_workers; i++) {
        if (job->worker_node[i] != node) continue;
        size++;
        if (i < worker) before++;
    }
    *local_rank = before;
    *local_size = size;
}

void ps_join_encode(ps_writer_t *w, ps_role_t role, int32_t wanted_rank, const char *addr, const char *node,
                    const char *settings)
{
    ps_put_u32(w, (uint32_t)role);
    ps_put_u32(w, (uint32_t)wanted_rank);
    ps_put_str(w, addr ? addr : "");
    ps_put_str(w, node ? node : "");
    ps_put_str(w, settings ? settings : "");
}

pserv_status_t ps_join_decode(ps_reader_t *r, ps_join_t *join)
{
    uint32_t ro = ps_get_u32(r);
    int32_t wr = (int32_t)ps_get_u32(r);
    ps_get_str(r, join->addr, PS_ADDR_MAX);
    ps_get_str(r, join->node, PS_NODE_MAX);
    ps_get_str(r, join->settings, PS_SETTINGS_MAX);
    if (r->bad || r->pos != r->len || (ro != PS_ROLE_SERVER && ro != PS_ROLE_WORKER) || wr < -1)
        return PSERV_ERR_BAD_MESSAGE;
    join->role = (ps_role_t)ro;
    join->wanted_rank = wr;
    return PSERV_OK;
}
