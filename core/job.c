#include "core/job.h"

#include <stdlib.h>

/* Bounds what a JOIN_REPLY can make a member allocate. */
#define PS_JOB_MAX_MEMBERS 65536

void ps_job_encode(const ps_job_t *job, uint32_t rank, ps_writer_t *w)
{
    ps_put_u32(w, rank);
    ps_put_u32(w, (uint32_t)job->mode);
    ps_put_u32(w, job->num_servers);
    ps_put_u32(w, job->num_workers);
    ps_put_u64(w, job->chunk_bytes);
    ps_put_u32(w, job->map.version);
    for (uint32_t i = 0; i < job->num_servers; i++) ps_put_str(w, job->servers[i]);
}

pserv_status_t ps_job_decode(ps_reader_t *r, ps_job_t *job, uint32_t *rank)
{
    ps_job_t j = {0};
    uint32_t my_rank = ps_get_u32(r);
    uint32_t mode = ps_get_u32(r);
    j.num_servers = ps_get_u32(r);
    j.num_workers = ps_get_u32(r);
    j.chunk_bytes = ps_get_u64(r);
    j.map.version = ps_get_u32(r);
    j.map.num_servers = j.num_servers;
    if (r->bad || mode > PSERV_MODE_ASYNC || j.num_servers == 0 || j.num_servers > PS_JOB_MAX_MEMBERS ||
        j.num_workers == 0 || j.num_workers > PS_JOB_MAX_MEMBERS || j.chunk_bytes == 0)
        return PSERV_ERR_BAD_MESSAGE;
    j.mode = (pserv_mode_t)mode;
    j.servers = calloc(j.num_servers, sizeof(*j.servers));
    if (j.servers == NULL) return PSERV_ERR_NO_MEMORY;
    for (uint32_t i = 0; i < j.num_servers; i++) ps_get_str(r, j.servers[i], PS_ADDR_MAX);
    if (r->bad) {
        free(j.servers);
        return PSERV_ERR_BAD_MESSAGE;
    }
    *job = j;
    *rank = my_rank;
    return PSERV_OK;
}

void ps_job_free(ps_job_t *job)
{
    free(job->servers);
    job->servers = NULL;
}

void ps_join_encode(ps_writer_t *w, ps_role_t role, int32_t wanted_rank, const char *addr)
{
    ps_put_u32(w, (uint32_t)role);
    ps_put_u32(w, (uint32_t)wanted_rank);
    ps_put_str(w, addr ? addr : "");
}

pserv_status_t ps_join_decode(ps_reader_t *r, ps_role_t *role, int32_t *wanted_rank, char addr[PS_ADDR_MAX])
{
    uint32_t ro = ps_get_u32(r);
    int32_t wr = (int32_t)ps_get_u32(r);
    ps_get_str(r, addr, PS_ADDR_MAX);
    if (r->bad || (ro != PS_ROLE_SERVER && ro != PS_ROLE_WORKER) || wr < -1) return PSERV_ERR_BAD_MESSAGE;
    *role = (ps_role_t)ro;
    *wanted_rank = wr;
    return PSERV_OK;
}
