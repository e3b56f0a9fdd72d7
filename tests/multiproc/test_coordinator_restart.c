/*
 * The coordinator is not a single point of failure: killed with SIGKILL in the middle of a sync
 * job (2 servers with backups, 3 workers that also meet at a barrier every 50 rounds) and started
 * again at the same address 0.2-1 s later, it takes the job back from its members' reports, and
 * the job completes: exact parameters (exact_job.h), every process ends cleanly, and the new
 * coordinator's wait says the job ended well. Repeated in one run, each within its deadline.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exact_job.h"
#include "harness.h"
#include "pserv/pserv.h"

#define NWORKERS 3
#define NSERVERS 2
#define ROUNDS 600

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void restart_once(void)
{
    harness_t h = {0};
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    cp.num_servers = NSERVERS;
    cp.num_workers = NWORKERS;
    cp.chunk_bytes = EXACT_CHUNK_BYTES;
    cp.heartbeat_ms = 100;
    cp.failure_timeout_ms = 1000;
    int cfd;
    pid_t coord = harness_start_coordinator_params(&h, &cp, EXACT_JOB_MS, &cfd);
    cr_assert_gt(coord, 0);
    char listen[64];
    snprintf(listen, sizeof(listen), "%s", h.coord); /* the same address again after the restart */
    pid_t servers[NSERVERS], workers[NWORKERS];
    int fds[NWORKERS];
    exact_job_t job = {ROUNDS, 50};
    exact_job_start(&h, &job, NSERVERS, servers, NWORKERS, workers, fds);

    int first = 2 + rand() % 12, down_ms = 200 + rand() % 800;
    cr_assert_eq(exact_job_ticks(fds[0], first), first, "training stalled before the kill");
    kill(coord, SIGKILL);
    int64_t killed = harness_now_ms();
    sleep_ms(down_ms);
    pid_t again = harness_restart_coordinator(&h, &cp, listen, EXACT_JOB_MS, &cfd);
    cr_assert_gt(again, 0, "the coordinator could not listen at %s again", listen);
    static float got[NWORKERS][EXACT_COUNT];
    int64_t took = exact_job_finish(&job, NWORKERS, workers, fds, first, got, cfd) - killed;
    for (int s = 0; s < NSERVERS; s++) cr_assert_eq(harness_wait(servers[s], 20000), 0, "server %d did not end cleanly", s);
    harness_kill_all(&h);
    fprintf(stderr, "coordinator killed after round %d, down %d ms; the job ended %lld ms after the kill\n",
            first * EXACT_TICK, down_ms, (long long)took);
    for (int w = 0; w < NWORKERS; w++) exact_job_check(got[w], NWORKERS, ROUNDS, w);
}

Test(coordinator_restart, a_killed_coordinator_restarted_takes_the_job_back, .timeout = 600)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int rep = 0; rep < 3; rep++) restart_once();
}
