/*
 * The job description the coordinator hands to every member when the job has formed:
 * consistency mode, sizes, chunk size, the versioned shard map and the servers' addresses.
 */
#ifndef PS_JOB_H
#define PS_JOB_H

#include <stdint.h>

#include "codec.h"
#include "partition.h"
#include "pserv/pserv.h"

#define PS_ADDR_MAX 280 /* "host:port" */
#define PS_NODE_MAX 128 /* a worker's node group name */

typedef enum { PS_ROLE_SERVER = 1, PS_ROLE_WORKER = 2 } ps_role_t;

typedef struct {
    pserv_mode_t mode;
    uint32_t num_servers, num_workers;
    uint64_t chunk_bytes;
    ps_shard_map_t map;
    char (*servers)[PS_ADDR_MAX]; /* num_servers addresses, index = server rank */
    uint32_t num_nodes;           /* worker node groups: the pushes a chunk needs per sync round */
    uint32_t *worker_node;        /* num_workers entries: node group of each worker rank */
} ps_job_t;

/* A worker's place in its node group, from job->worker_node. */
void ps_job_node_of(const ps_job_t *job, uint32_t worker, uint32_t *local_rank, uint32_t *local_size);

/* Writes a member's rank and the job. */
void ps_job_encode(const ps_job_t *job, uint32_t rank, ps_writer_t *w);
/* Reads what ps_job_encode wrote; allocates job->servers and job->worker_node. Validates sizes,
 * the mode and the node groups (every index below num_nodes, every group non-empty). */
pserv_status_t ps_job_decode(ps_reader_t *r, ps_job_t *job, uint32_t *rank);
void ps_job_free(ps_job_t *job);

/* JOIN payload: role, wanted rank (-1: any), the address a server listens on and a worker's node
 * group name ("" or NULL: a group of its own). */
void ps_join_encode(ps_writer_t *w, ps_role_t role, int32_t wanted_rank, const char *addr, const char *node);
pserv_status_t ps_join_decode(ps_reader_t *r, ps_role_t *role, int32_t *wanted_rank, char addr[PS_ADDR_MAX],
                              char node[PS_NODE_MAX]);

#endif
