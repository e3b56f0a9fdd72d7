/*
 * A job whose result is known exactly, for failure tests: workers push integer gradients to one
 * tensor with SGD at lr 1, so every sum is exact in float whatever the order, and the parameters
 * after the job are -(every gradient pushed, once), computed by exact_job_check independently of
 * the library. Workers report their progress on their pipe (one byte every EXACT_TICK rounds), so
 * a test can strike in the middle of training, then send the final parameters.
 */
#ifndef PS_TEST_EXACT_JOB_H
#define PS_TEST_EXACT_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

#define EXACT_COUNT 6000  /* floats: with 4 KiB chunks, 6 chunks */
#define EXACT_CHUNK_BYTES 4096
#define EXACT_TICK 20
#define EXACT_JOB_MS 60000 /* a whole job on a 2-core machine, with margin */

typedef struct {
    unsigned rounds;        /* sync rounds, or async pushes of each worker */
    unsigned barrier_every; /* > 0: a barrier every that many rounds (control calls in training) */
} exact_job_t;

/* The coordinator of such a job: sizes, mode, replicas (0: none), EXACT_CHUNK_BYTES, heartbeats
 * every 100 ms with an 800 ms failure timeout, and with ckpt_dir (or NULL) checkpoints only of
 * the state the job ends with (its per-chunk rounds count the updates applied). */
void exact_job_params(pserv_coordinator_params_t *cp, unsigned servers, unsigned workers, pserv_mode_t mode,
                      int replicas, const char *ckpt_dir);
/* harness_start's function of a worker (arg: an exact_job_t): one byte when ready, a byte every
 * EXACT_TICK rounds, then the final parameters (EXACT_COUNT floats). */
int exact_job_worker(void *arg, const char *coord, int fd);
/* Starts nservers servers and nworkers workers of the job in h (its coordinator started), and
 * waits until every worker is ready. */
void exact_job_start(harness_t *h, const exact_job_t *job, int nservers, pid_t *servers, int nworkers, pid_t *workers,
                     int *fds);
/* Reads n progress bytes of a worker within the job's deadline; returns how many came. */
int exact_job_ticks(int fd, int n);
/* Reads the rest of worker `fd`'s progress (all of it when seen is 0) and its parameters into got;
 * 0 on success. */
int exact_job_result(int fd, const exact_job_t *job, int seen, float *got);
/*
 * The end of a job: every worker's parameters into got (worker 0 had `seen` reports read already),
 * every worker and the coordinator (result on cfd) ending well; returns when the last worker
 * reported, in harness_now_ms() time.
 */
int64_t exact_job_finish(const exact_job_t *job, int nworkers, const pid_t *workers, const int *fds, int seen,
                         float (*got)[EXACT_COUNT], int cfd);
/* Checks a worker's parameters against -(the sum of every gradient of nworkers workers). */
void exact_job_check(const float *got, unsigned nworkers, unsigned rounds, int worker);

/* What one server rank left in a checkpoint: files and chunks. */
typedef struct {
    uint32_t files, chunks;
} exact_job_shard_t;
/* The final checkpoint in ckpt_dir (exact_job_params) counts, chunk by chunk, every round (sync)
 * or every push of nworkers workers (async) exactly once; shards (NULL, or nranks of them, by
 * rank) get what each server wrote. */
void exact_job_check_counters(const char *ckpt_dir, pserv_mode_t mode, unsigned nworkers, unsigned rounds,
                              exact_job_shard_t *shards, uint32_t nranks);
/* A fresh directory /tmp/pserv_TAG_XXXXXX into dir (64 bytes), and its removal. */
void exact_job_temp_dir(char *dir, const char *tag);
void exact_job_remove_dir(const char *dir);

#endif
