/*
 * A job as a user runs it, for the fault-tolerance benchmarks: `pserv coordinator` and `pserv
 * server` processes from the CLI, pinned as in pserv_bench_pushpull (servers: the second half of
 * our CPUs, the coordinator: any), and this process as the job's one worker (sync, SGD with lr 1
 * on one tensor). Every round is a push-pull of the whole tensor with the same small-integer
 * gradient, so after n rounds the parameters are exactly -n x the gradient: a round lost or
 * applied twice shows (cli_job_check).
 */
#ifndef PS_BENCH_CLI_JOB_H
#define PS_BENCH_CLI_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "procs.h"
#include "pserv/pserv.h"

#define CLI_JOB_MAX_SERVERS 8
#define CLI_JOB_KEY 1

/* What every job of a benchmark shares. */
typedef struct {
    const char *prog;         /* for messages */
    const char *pserv;        /* the pserv CLI */
    double timeout_s;         /* longest any wait may take */
    const cpus_split_t *cpus; /* where the servers (and the coordinator) run */
    const float *grad;        /* the gradient of every round, at least as long as any tensor */
    size_t move_bytes;        /* the coordinator's --move-bytes (0: its default) */
} cli_job_env_t;

typedef struct {
    const cli_job_env_t *env;
    proc_t coord, server[CLI_JOB_MAX_SERVERS];
    int nservers;
    pserv_worker_h w;
    char addr[64];
    size_t count;    /* floats in the tensor */
    float *out;      /* the parameters its rounds pull */
    uint64_t rounds; /* completed */
} cli_job_t;

/* Starts its coordinator (for `servers` servers, one worker, chunks of chunk bytes, `replicas`;
 * capture as in proc_start) and servers; the tensor has count floats. 0, or -1 with a message. */
int cli_job_spawn(cli_job_t *j, const cli_job_env_t *env, int servers, size_t count, size_t chunk, int replicas,
                  int capture);
/* One more `pserv server` for the job (it joins the running job). 0, or -1 with a message. */
int cli_job_add_server(cli_job_t *j);
/* This process joins it as its one worker and registers the tensor (zeros). */
int cli_job_join(cli_job_t *j);
/* The worker leaves, which ends the job: every server but `killed` (an index, or -1), and the
 * coordinator, must exit by themselves with 0; what is left is stopped. 0 if it ended cleanly. */
int cli_job_stop(cli_job_t *j, int killed);
/* One round. 0, or -1 with the reason. */
int cli_job_round(cli_job_t *j);
/* Rounds until at least `min` ran and `seconds` passed; their count (seconds taken in *took), or -1. */
int cli_job_rounds(cli_job_t *j, int min, double seconds, double *took);
/* The parameters the last round pulled are -(rounds x gradient), exactly; else -1 with a message. */
int cli_job_check(const cli_job_t *j, const char *what);
/* CPU seconds its servers have used so far. */
double cli_job_servers_cpu_s(const cli_job_t *j);

/* Median duration of the rounds [from, to) that began at or after t0 (start/end: their times); -1 if none. */
double cli_job_median_round(const double *start, const double *end, size_t from, size_t to, double t0);

#endif
