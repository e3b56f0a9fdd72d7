/*
 * Replicated shards and failover, as separate processes on 127.0.0.1: 3 servers with one backup
 * of every chunk, 3 workers, SGD with lr 1 on integer gradients, so every sum is exact in float
 * and the parameters after the job are -(every gradient pushed, once), computed here
 * independently of the library. A server is killed with SIGKILL at a random moment of training
 * (in sync mode mid-round), or stopped with SIGSTOP (only its silence shows, so the coordinator
 * declares it dead after the failure timeout); training must complete within its deadline, every worker must pull
 * exactly those parameters, and the final checkpoint's per-chunk round counters must all equal
 * the rounds run (no round lost, none applied twice). Each scenario repeats in one run; one
 * kills two servers, the second after the first one's chunks were re-replicated.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exact_job.h"
#include "harness.h"
#include "pserv/pserv.h"

#define NWORKERS 3
#define NSERVERS 3
#define ROUNDS 1000 /* sync rounds, or async pushes per worker */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}


/*
 * One job: starts it, sends `kills` servers the signal (the first 2-12 of the first worker's reports into training, the
 * second 10 reports later, once the first one's chunks have their second copy again: both while
 * training runs), checks the outcome.
 */
static void run_job(pserv_mode_t mode, int kills, int sig, const char *ckpt_dir)
{
    harness_t h = {0};
    pserv_coordinator_params_t cp;
    exact_job_params(&cp, NSERVERS, NWORKERS, mode, 1, ckpt_dir);
    int cfd;
    pid_t coord = harness_start_coordinator_params(&h, &cp, EXACT_JOB_MS, &cfd);
    cr_assert_gt(coord, 0);
    pid_t servers[NSERVERS], workers[NWORKERS];
    int fds[NWORKERS];
    exact_job_t job = {ROUNDS, 0};
    exact_job_start(&h, &job, NSERVERS, servers, NWORKERS, workers, fds);

    int64_t start = harness_now_ms();
    int victims[2] = {rand() % NSERVERS, 0};
    victims[1] = (victims[0] + 1 + rand() % (NSERVERS - 1)) % NSERVERS;
    int seen = 0, first = 2 + rand() % 10, at[2] = {0, 0};
    for (int k = 0; k < kills; k++) {
        int wait = k == 0 ? first : 10;
        cr_assert_eq(exact_job_ticks(fds[0], wait), wait, "training stalled before kill %d", k + 1);
        seen += wait;
        at[k] = seen * EXACT_TICK;
        sleep_ms(rand() % 3); /* mid-round */
        kill(servers[victims[k]], sig);
    }
    static float got[NWORKERS][EXACT_COUNT];
    int64_t took = exact_job_finish(&job, NWORKERS, workers, fds, seen, got, cfd) - start;
    /* The survivors end with the job, writing the state it ended with. */
    for (int s = 0; s < NSERVERS; s++)
        if (s != victims[0] && (kills < 2 || s != victims[1]))
            cr_assert_eq(harness_wait(servers[s], 20000), 0, "server %d did not end cleanly", s);
    harness_kill_all(&h);
    fprintf(stderr, "%s: %d server(s) got %s (after rounds %d and %d of %d), training took %lld ms\n",
            mode == PSERV_MODE_SYNC ? "sync" : "async", kills, strsignal(sig), at[0], at[1], ROUNDS, (long long)took);

    for (int w = 0; w < NWORKERS; w++) exact_job_check(got[w], NWORKERS, ROUNDS, w);
    /* The counters: every chunk applied exactly ROUNDS rounds (sync) or all pushes (async). */
    exact_job_check_counters(ckpt_dir, mode, NWORKERS, ROUNDS, NULL, 0);
}

static void run_reps(pserv_mode_t mode, int kills, int sig, int reps)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int rep = 0; rep < reps; rep++) {
        char dir[64];
        exact_job_temp_dir(dir, "failover");
        run_job(mode, kills, sig, dir);
        exact_job_remove_dir(dir);
    }
}

Test(failover, sync_job_survives_a_killed_server_exactly_once, .timeout = 600)
{
    run_reps(PSERV_MODE_SYNC, 1, SIGKILL, 3);
}

Test(failover, sync_job_survives_a_stopped_server_exactly_once, .timeout = 600)
{
    run_reps(PSERV_MODE_SYNC, 1, SIGSTOP, 2);
}

Test(failover, sync_job_survives_two_servers_killed_one_after_the_other, .timeout = 600)
{
    run_reps(PSERV_MODE_SYNC, 2, SIGKILL, 2);
}

Test(failover, async_job_counts_every_push_once_across_a_killed_server, .timeout = 600)
{
    run_reps(PSERV_MODE_ASYNC, 1, SIGKILL, 3);
}
