/*
 * Multi-process jobs for tests: each role runs in its own forked process on 127.0.0.1, and
 * results come back through pipes. Every wait is bounded; leftovers are killed.
 */
#ifndef PS_TEST_HARNESS_H
#define PS_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pserv/pserv.h"

#define HARNESS_MAX_PROCS 16

typedef struct {
    pid_t pids[HARNESS_MAX_PROCS];
    int nprocs;
    char coord[64]; /* "127.0.0.1:port" */
} harness_t;

/* Starts a coordinator process and fills h->coord with its address. */
void harness_start_coordinator(harness_t *h, unsigned servers, unsigned workers, pserv_mode_t mode,
                               size_t chunk_bytes);
/* What a coordinator started by harness_start_coordinator_params reports once its job is over. */
typedef struct {
    int32_t status;  /* pserv_coordinator_wait's result */
    int32_t pad;
    int64_t end_ms;  /* harness_now_ms() when that wait returned */
    char why[512];   /* pserv_coordinator_last_error() */
} harness_coord_result_t;

/* Monotonic milliseconds; one clock for every process of the machine, so times compare across them. */
int64_t harness_now_ms(void);
/* Starts a coordinator process with the given params (listen address, heartbeat, failure policy,
 * ...), waiting up to wait_ms for its job, and fills h->coord with its address (the host of
 * params->listen, or 127.0.0.1). *rfd reads one harness_coord_result_t once the wait returns.
 * Returns the pid, or -1 if the coordinator did not start (h->coord then names port 1). The
 * process dies with its parent. */
pid_t harness_start_coordinator_params(harness_t *h, const pserv_coordinator_params_t *params, int wait_ms,
                                       int *rfd);
/* harness_start_coordinator_params again at `listen` (the address of one killed), trying for up to
 * 5 s while the port is not free yet; the pid, or -1. */
pid_t harness_restart_coordinator(harness_t *h, pserv_coordinator_params_t *params, const char *listen, int wait_ms,
                                  int *rfd);
/* Starts a server shard process (threads optimizer threads). */
pid_t harness_start_server(harness_t *h, unsigned threads);
/* Starts a process that runs fn(arg, coord, fd) and exits with its return value; fd is the write
 * end of a pipe whose read end is returned in *rfd. */
pid_t harness_start(harness_t *h, int (*fn)(void *arg, const char *coord, int fd), void *arg, int *rfd);
/*
 * A sync job of one server and one worker process running fn (which writes one byte once it is
 * ready); returns the server's pid once the worker said it is ready, -1 if it did not within 30 s.
 */
pid_t harness_start_ready_pair(harness_t *h, int (*fn)(void *arg, const char *coord, int fd), int *rfd);
/* Waits for one process (up to timeout_ms); returns its exit code, or -1 on a timeout or signal. */
int harness_wait(pid_t pid, int timeout_ms);
/* Waits for every process; returns how many exited with a code other than 0 or timed out. */
int harness_wait_all(harness_t *h, int timeout_ms);
/* Kills whatever is still running. */
void harness_kill_all(harness_t *h);
/* Reads exactly n bytes from fd within timeout_ms; 0 on success. */
int harness_read(int fd, void *buf, size_t n, int timeout_ms);
int harness_write(int fd, const void *buf, size_t n);

#define INPROC_MAX_WORKERS 8
#define INPROC_MAX_SERVERS 4

/* A one-process job (pserv_local_*): coordinator and server shards, plus workers on threads
 * while they join. */
typedef struct {
    pserv_local_h local;
    pserv_server_h server; /* servers[0] */
    pserv_worker_h worker; /* workers[0] */
    pserv_server_h servers[INPROC_MAX_SERVERS];
    pserv_worker_h workers[INPROC_MAX_WORKERS]; /* index = worker rank */
    const char *nodes[INPROC_MAX_WORKERS];      /* the node group each worker rank named */
    unsigned num_servers, num_workers;
} inproc_job_t;

/* Starts a job of one server and one worker; returns 0 on success. */
int inproc_job_start(inproc_job_t *job, pserv_mode_t mode, size_t chunk_bytes, unsigned max_requests);
/* The same with several servers and workers; nodes[i] (or NULL) is the node group worker i names. */
int inproc_group_start(inproc_job_t *job, pserv_mode_t mode, size_t chunk_bytes, unsigned max_requests,
                       unsigned num_servers, unsigned num_workers, const char *const *nodes);
/* Ends it in order (workers leave, servers and coordinator see the job end); returns 0 if clean. */
int inproc_job_stop(inproc_job_t *job);

#endif
