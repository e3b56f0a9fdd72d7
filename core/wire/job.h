/*
 * The job description the coordinator hands to every member when the job has formed:
 * consistency mode, sizes, chunk size, failure detection settings, the servers' addresses and
 * the workers' node groups. Who owns what is not here: that is the cluster view (cluster/view.h),
 * which JOIN_REPLY carries after the job and VIEW messages update.
 */
#ifndef PS_JOB_H
#define PS_JOB_H

#include <stdint.h>

#include "codec.h"
#include "partition.h"
#include "pserv/pserv.h"

#define PS_ADDR_MAX 280 /* "host:port" */
#define PS_NODE_MAX 128 /* a worker's node group name */
#define PS_SETTINGS_MAX 1024
#define PS_PATH_MAX 1024 /* a checkpoint directory */ /* a worker's job settings ("key=value ..."), compared across workers */

typedef enum { PS_ROLE_SERVER = 1, PS_ROLE_WORKER = 2 } ps_role_t;

typedef struct {
    pserv_mode_t mode;
    uint32_t num_servers, num_workers;
    uint64_t chunk_bytes;
    uint32_t heartbeat_ms, failure_timeout_ms; /* failure detection, the same for every member */
    uint32_t on_worker_failure;               /* pserv_failure_policy_t */
    char (*servers)[PS_ADDR_MAX]; /* num_servers addresses, index = server rank */
    uint32_t num_nodes;           /* worker node groups: the pushes a chunk needs per sync round */
    uint32_t *worker_node;        /* num_workers entries: node group of each worker rank */
    /* Checkpoints (pserv_coordinator_params_t): where shards write them and how often ("" / 0:
     * none), and the checkpoint the job resumed from (resume_round 0: a fresh start). */
    char ckpt_dir[PS_PATH_MAX];
    uint32_t ckpt_every;    /* rounds, or 0 ... */
    uint32_t ckpt_every_ms; /* ... time: the coordinator names the rounds (CHECKPOINT_AT) */
    char resume_dir[PS_PATH_MAX];
    uint64_t resume_round;
} ps_job_t;

/* Bytes of the job's encoding beside the servers' addresses and the workers' node groups. */
#define PS_JOB_FIXED_MAX (64 + 2 * PS_PATH_MAX)

/* A worker's place in its node group, from job->worker_node. */
void ps_job_node_of(const ps_job_t *job, uint32_t worker, uint32_t *local_rank, uint32_t *local_size);

/* Writes a member's rank and the job. */
void ps_job_encode(const ps_job_t *job, uint32_t rank, ps_writer_t *w);
/* Reads what ps_job_encode wrote; allocates job->servers and job->worker_node. Validates sizes,
 * the mode and the node groups (every index below num_nodes, every group non-empty). */
pserv_status_t ps_job_decode(ps_reader_t *r, ps_job_t *job, uint32_t *rank);
void ps_job_free(ps_job_t *job);

/* JOIN payload: role, wanted rank (-1: any), the address a server listens on, a worker's node
 * group name ("" or NULL: a group of its own) and its job settings ("" or NULL: none). */
typedef struct {
    ps_role_t role;
    int32_t wanted_rank;
    char addr[PS_ADDR_MAX];
    char node[PS_NODE_MAX];
    char settings[PS_SETTINGS_MAX];
} ps_join_t;

void ps_join_encode(ps_writer_t *w, ps_role_t role, int32_t wanted_rank, const char *addr, const char *node,
                    const char *settings);
pserv_status_t ps_join_decode(ps_reader_t *r, ps_join_t *join);

#endif
