#include "exact_job.h"
#include "../tsan/fork.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "ckpt_set.h"
#include "harness.h"
#include "pserv/pserv.h"

/* The gradient worker w pushes in round r for element i: a small integer. */
static float exact_grad(unsigned w, unsigned r, size_t i)
{
    return (float)((int)((w + 1) * 3 + (i % 11) + (r % 5)) - 9);
}

void exact_job_params(pserv_coordinator_params_t *cp, unsigned servers, unsigned workers, pserv_mode_t mode,
                      int replicas, const char *ckpt_dir)
{
    *cp = (pserv_coordinator_params_t)PSERV_COORDINATOR_PARAMS_INIT;
    cp->num_servers = servers;
    cp->num_workers = workers;
    cp->mode = mode;
    cp->chunk_bytes = EXACT_CHUNK_BYTES;
    cp->replicas = replicas ? replicas : PSERV_REPLICAS_NONE;
    cp->checkpoint_dir = ckpt_dir;
    cp->checkpoint_every = ckpt_dir ? 1000000 : 0; /* only the state the job ends with */
    cp->heartbeat_ms = 100;
    cp->failure_timeout_ms = 800;
}

int exact_job_worker(void *arg, const char *coord, int fd)
{
    const exact_job_t *job = arg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = coord;
    wp.timeout_ms = 20000;
    if (pserv_worker_create(&wp, &w) != PSERV_OK) return 10;
    pserv_job_info_t info = PSERV_JOB_INFO_INIT;
    pserv_worker_job(w, &info);
    pserv_tensor_params_t t = PSERV_TENSOR_PARAMS_INIT;
    t.key = 1;
    t.count = EXACT_COUNT;
    t.optim.type = PSERV_OPTIM_SGD;
    t.optim.lr = 1.0f;
    /* Its own buffers: workers may be threads of one process. */
    float *grad = malloc(EXACT_COUNT * sizeof(*grad)), *values = malloc(EXACT_COUNT * sizeof(*values));
    int rc = grad && values ? 0 : 14;
    if (pserv_worker_register(w, &t) != PSERV_OK || pserv_worker_barrier(w, 20000) != PSERV_OK) rc = 11;
    char ready = 1;
    if (rc == 0) harness_write(fd, &ready, 1);
    for (unsigned r = 0; r < job->rounds && rc == 0; r++) {
        for (size_t i = 0; i < EXACT_COUNT; i++) grad[i] = exact_grad(info.rank, r, i);
        pserv_request_t req;
        pserv_status_t st = pserv_worker_push_pull(w, 1, grad, values, &req);
        if (st == PSERV_OK) st = pserv_worker_wait(w, req, 20000);
        if (st == PSERV_OK && job->barrier_every && (r + 1) % job->barrier_every == 0)
            st = pserv_worker_barrier(w, EXACT_JOB_MS);
        if (st != PSERV_OK) {
            fprintf(stderr, "worker %u round %u: %s: %s\n", info.rank, r, pserv_strerror(st), pserv_worker_last_error(w));
            rc = 12;
        }
        char tick = 't';
        if (rc == 0 && (r + 1) % EXACT_TICK == 0) harness_write(fd, &tick, 1);
    }
    /* Everyone is done pushing: the parameters are final; pull them and report. */
    pserv_request_t req;
    if (rc == 0 && (pserv_worker_barrier(w, 20000) != PSERV_OK || pserv_worker_pull(w, 1, values, &req) != PSERV_OK ||
                    pserv_worker_wait(w, req, 20000) != PSERV_OK))
        rc = 13;
    if (rc == 0) harness_write(fd, values, EXACT_COUNT * sizeof(*values));
    pserv_worker_destroy(w);
    free(grad);
    free(values);
    return rc;
}

void exact_job_start(harness_t *h, const exact_job_t *job, int nservers, pid_t *servers, int nworkers, pid_t *workers,
                     int *fds)
{
    for (int s = 0; s < nservers; s++) servers[s] = harness_start_server(h, 1);
    for (int w = 0; w < nworkers; w++) workers[w] = harness_start(h, exact_job_worker, (void *)job, &fds[w]);
    char ready;
    for (int w = 0; w < nworkers; w++) cr_assert_eq(harness_read(fds[w], &ready, 1, 30000), 0, "worker %d never started", w);
}

int exact_job_ticks(int fd, int n)
{
    char t;
    int got = 0;
    while (got < n && harness_read(fd, &t, 1, EXACT_JOB_MS) == 0) got++;
    return got;
}

int exact_job_result(int fd, const exact_job_t *job, int seen, float *got)
{
    int rest = (int)(job->rounds / EXACT_TICK) - seen;
    if (exact_job_ticks(fd, rest) != rest) return -1;
    return harness_read(fd, got, EXACT_COUNT * sizeof(float), EXACT_JOB_MS);
}

int64_t exact_job_finish(const exact_job_t *job, int nworkers, const pid_t *workers, const int *fds, int seen,
                         float (*got)[EXACT_COUNT], int cfd)
{
    for (int w = 0; w < nworkers; w++)
        cr_assert_eq(exact_job_result(fds[w], job, w == 0 ? seen : 0, got[w]), 0, "worker %d did not finish", w);
    int64_t done = harness_now_ms();
    for (int w = 0; w < nworkers; w++) cr_assert_eq(harness_wait(workers[w], 20000), 0, "worker %d failed", w);
    harness_coord_result_t res;
    cr_assert_eq(harness_read(cfd, &res, sizeof(res), 30000), 0);
    cr_assert_eq(res.status, PSERV_OK, "the job failed: %s", res.why);
    return done;
}

void exact_job_check(const float *got, unsigned nworkers, unsigned rounds, int worker)
{
    for (size_t i = 0; i < EXACT_COUNT; i++) {
        double want = 0;
        for (unsigned w = 0; w < nworkers; w++)
            for (unsigned r = 0; r < rounds; r++) want -= exact_grad(w, r, i);
        cr_assert_eq(got[i], (float)want, "worker %d element %zu: %g, want %g", worker, i, got[i], want);
    }
}

void exact_job_check_counters(const char *ckpt_dir, pserv_mode_t mode, unsigned nworkers, unsigned rounds,
                              exact_job_shard_t *shards, uint32_t nranks)
{
    uint64_t want = mode == PSERV_MODE_SYNC ? rounds : (uint64_t)rounds * nworkers;
    ps_ckpt_set_t set;
    cr_assert_eq(ps_ckpt_set_open(&set, ckpt_dir, 0), PSERV_OK, "%s", pserv_last_error());
    cr_assert_eq(set.round, want);
    for (uint32_t f = 0; f < set.nfiles; f++) {
        const ps_ckpt_header_t *hd = &set.hdrs[f];
        if (shards && hd->rank < nranks) {
            shards[hd->rank].files++;
            shards[hd->rank].chunks += hd->num_chunks;
        }
        for (uint32_t c = 0; c < hd->num_chunks; c++)
            cr_assert_eq(hd->chunks[c].version, want, "chunk %u: %llu updates, want %llu", hd->chunks[c].chunk,
                         (unsigned long long)hd->chunks[c].version, (unsigned long long)want);
    }
    ps_ckpt_set_close(&set);
}

void exact_job_temp_dir(char *dir, const char *tag)
{
    TSAN_SKIP_FORKED_THREADS(); /* its job forks: skip before the directory exists, not after */
    snprintf(dir, 64, "/tmp/pserv_%s_XXXXXX", tag);
    cr_assert_not_null(mkdtemp(dir));
}

void exact_job_remove_dir(const char *dir)
{
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
