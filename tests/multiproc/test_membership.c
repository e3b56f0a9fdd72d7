/*
 * Servers that join a running job and servers drained out of it, as separate processes on
 * 127.0.0.1: a sync job of 2 servers and 3 workers (SGD with lr 1 on integer gradients, so every
 * sum is exact in float and the parameters after the job are -(every gradient pushed, once),
 * computed here independently of the library). At a random moment of training a third server
 * process joins (chunks move to it); a little later one of the first two servers, chosen at
 * random, is drained with pserv_drain (its chunks move away, then its process ends). Training
 * must complete, every worker must pull exactly those parameters, the final checkpoint's
 * per-chunk round counters must all equal the rounds run (no round lost, none applied twice),
 * the new server must hold chunks there and the drained one none. Each scenario repeats, with no
 * backups and with one; an async job must count every push exactly once. The same join and drain
 * also runs inside one process (threads), so ThreadSanitizer checks it in full.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exact_job.h"
#include "harness.h"
#include "pserv/pserv.h"

#define NWORKERS 3
#define NSERVERS 2
#define ROUNDS 1000
#define DRAIN_MS 20000 /* a drain of a few chunks on a 2-core machine, with a wide margin */

/* The first of the servers that exits within timeout_ms (its exit code in *code), or -1. */
static int first_exit(const pid_t *pids, int n, int timeout_ms, int *code)
{
    int64_t end = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < end) {
        for (int i = 0; i < n; i++) {
            int status;
            if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
                *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                return i;
            }
        }
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

/* The job's end (exact_job_finish: every worker's parameters into got), with every server process
 * but the drained one (`gone`) ending cleanly; then whatever is left is stopped. */
static void finish_job(harness_t *h, const exact_job_t *job, const pid_t *workers, const int *fds, int seen, int cfd,
                       const pid_t *servers, int nservers, int gone, float (*got)[EXACT_COUNT])
{
    exact_job_finish(job, NWORKERS, workers, fds, seen, got, cfd);
    for (int s = 0; s < nservers; s++)
        if (s != gone) cr_assert_eq(harness_wait(servers[s], 20000), 0, "server process %d did not end cleanly", s);
    harness_kill_all(h);
}

/* pserv_drain once the other servers can hold the copies: the server started to join may not be
 * in the job yet (it is, once it said it is ready), and a drain with no room is refused. */
static pserv_status_t drain_when_room(const char *coord, unsigned rank)
{
    int64_t end = harness_now_ms() + DRAIN_MS;
    for (;;) {
        pserv_status_t st = pserv_drain(coord, rank, DRAIN_MS);
        /* Refused for want of room (the server that joins is not ready yet) or because the server
         * is not known yet (the one started to join has not reached the coordinator): ask again. */
        const char *why = pserv_last_error();
        if (st != PSERV_ERR_INVALID_ARG || (!strstr(why, "cannot hold") && !strstr(why, "has no server")) ||
            harness_now_ms() > end)
            return st;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* drain_new: the server that joined is the one drained (its chunks go back to servers that gave
 * them away, whose old copies must not count); else one of the first two, at random. move_bytes:
 * the coordinator's (0: one chunk at a time; 3 chunks' bytes: three move at once). */
static void run_job(pserv_mode_t mode, int replicas, int drain_new, size_t move_bytes, const char *ckpt_dir)
{
    harness_t h = {0};
    pserv_coordinator_params_t cp;
    exact_job_params(&cp, NSERVERS, NWORKERS, mode, replicas, ckpt_dir);
    cp.move_bytes = move_bytes;
    int cfd;
    pid_t coord = harness_start_coordinator_params(&h, &cp, EXACT_JOB_MS, &cfd);
    cr_assert_gt(coord, 0);
    pid_t servers[NSERVERS + 1], workers[NWORKERS];
    int fds[NWORKERS];
    exact_job_t job = {ROUNDS, 0};
    exact_job_start(&h, &job, NSERVERS, servers, NWORKERS, workers, fds);

    /* A third server joins at a random moment of training. */
    int seen = 2 + rand() % 6;
    cr_assert_eq(exact_job_ticks(fds[0], seen), seen, "training stalled before the join");
    int joined_at = seen * EXACT_TICK;
    servers[NSERVERS] = harness_start_server(&h, 1);

    /* A little later, one of the first two is drained. */
    cr_assert_eq(exact_job_ticks(fds[0], 4), 4, "training stalled after the join");
    seen += 4;
    unsigned victim = drain_new ? NSERVERS : (unsigned)(rand() % NSERVERS);
    int64_t t0 = harness_now_ms();
    pserv_status_t st = drain_when_room(h.coord, victim);
    int64_t drain_ms = harness_now_ms() - t0;
    cr_assert_eq(st, PSERV_OK, "drain of server %u: %s", victim, pserv_last_error());
    int code = -1, gone = first_exit(servers, NSERVERS + 1, 10000, &code);
    cr_assert_geq(gone, 0, "no server process ended after server %u was drained", victim);
    cr_assert_eq(code, 0, "the drained server's process ended with %d", code);
    int64_t exit_ms = harness_now_ms() - t0;
    /* Draining it again: it is not in the job any more. */
    cr_assert_eq(pserv_drain(h.coord, victim, 5000), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_last_error(), "not in the job") != NULL, "%s", pserv_last_error());

    int64_t start = harness_now_ms();
    static float got[NWORKERS][EXACT_COUNT];
    finish_job(&h, &job, workers, fds, seen, cfd, servers, NSERVERS + 1, gone, got);
    fprintf(stderr,
            "%s, replicas %d, %s: server joined after round %d, server %u drained in %lld ms (its process ended %lld ms "
            "after the request); the rest of training took %lld ms\n",
            mode == PSERV_MODE_SYNC ? "sync" : "async", replicas, move_bytes ? "3 moves at once" : "1 move at a time",
            joined_at, victim, (long long)drain_ms, (long long)exit_ms, (long long)(harness_now_ms() - start));

    for (int w = 0; w < NWORKERS; w++) exact_job_check(got[w], NWORKERS, ROUNDS, w);
    /* The counters: every chunk applied exactly ROUNDS rounds (sync) or every push (async), on the
     * servers still there. */
    exact_job_shard_t shards[NSERVERS + 1] = {{0}};
    exact_job_check_counters(ckpt_dir, mode, NWORKERS, ROUNDS, shards, NSERVERS + 1);
    cr_assert_eq(shards[victim].files, 0, "the drained server wrote the final state");
    if (!drain_new) cr_assert_gt(shards[NSERVERS].chunks, 0, "the server that joined holds no chunk at the end");
}

static void run_reps(pserv_mode_t mode, int replicas, int drain_new, int reps)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int rep = 0; rep < reps; rep++) {
        char dir[64];
        exact_job_temp_dir(dir, "membership");
        /* Every other repetition, several chunks move at once. */
        run_job(mode, replicas, drain_new, rep % 2 ? 3 * EXACT_CHUNK_BYTES : 0, dir);
        exact_job_remove_dir(dir);
    }
}

Test(membership, server_joins_and_another_is_drained_without_backups, .timeout = 600)
{
    run_reps(PSERV_MODE_SYNC, 0, 0, 3);
}

Test(membership, server_joins_and_another_is_drained_with_backups, .timeout = 600)
{
    run_reps(PSERV_MODE_SYNC, 1, 0, 3);
}

/* The server that joined is drained again: chunks return to servers that gave them away earlier
 * (their old copies are stale: only a STATE makes them copies again). */
Test(membership, the_server_that_joined_is_drained_again, .timeout = 600)
{
    run_reps(PSERV_MODE_SYNC, 0, 1, 2);
    run_reps(PSERV_MODE_SYNC, 1, 1, 2);
}

Test(membership, async_job_counts_every_push_once_across_a_join_and_a_drain, .timeout = 600)
{
    run_reps(PSERV_MODE_ASYNC, 0, 0, 2);
    run_reps(PSERV_MODE_ASYNC, 1, 0, 2);
}

/* Refusals name the problem: a rank the job does not have, and a drain that would leave the
 * copies nowhere to go. */
Test(membership, bad_drains_are_refused, .timeout = 120)
{
    harness_t h = {0};
    pserv_coordinator_params_t cp;
    exact_job_params(&cp, NSERVERS, 1, PSERV_MODE_SYNC, 1, NULL);
    int cfd;
    cr_assert_gt(harness_start_coordinator_params(&h, &cp, EXACT_JOB_MS, &cfd), 0);
    pid_t servers[NSERVERS], workers[1];
    int fds[1];
    exact_job_t job = {ROUNDS, 0};
    exact_job_start(&h, &job, NSERVERS, servers, 1, workers, fds);
    cr_assert_eq(pserv_drain(h.coord, 7, 5000), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_last_error(), "no server 7") != NULL, "%s", pserv_last_error());
    cr_assert_eq(pserv_drain(h.coord, 0, 5000), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_last_error(), "cannot hold 2 copies") != NULL, "%s", pserv_last_error());
    cr_assert_eq(pserv_drain("127.0.0.1:1", 0, 5000), PSERV_ERR_PEER_FAILED);
    cr_assert_eq(pserv_drain("nonsense", 0, 5000), PSERV_ERR_INVALID_ARG);
    static float got[1][EXACT_COUNT];
    exact_job_finish(&job, 1, workers, fds, 0, got, cfd);
    exact_job_check(got[0], 1, ROUNDS, 0);
    harness_kill_all(&h);
}

/* ---- the same in one process: threads, so ThreadSanitizer checks it in full ---- */

typedef struct {
    const char *coord;
    const exact_job_t *job;
    int fd, rc;
    pthread_t thread;
    unsigned rank;
    pserv_server_stats_t stats; /* at the job's end */
} inproc_member_t;

/* The job's chunks, from its size and chunk size (not the library's geometry). */
#define INPROC_CHUNKS ((EXACT_COUNT * sizeof(float) + EXACT_CHUNK_BYTES - 1) / EXACT_CHUNK_BYTES)
#define INPROC_DRAINED 1u

static void *inproc_worker(void *arg)
{
    inproc_member_t *m = arg;
    m->rc = exact_job_worker((void *)m->job, m->coord, m->fd);
    close(m->fd);
    return NULL;
}

static void *inproc_server(void *arg)
{
    inproc_member_t *m = arg;
    pserv_server_params_t p = PSERV_SERVER_PARAMS_INIT;
    pserv_server_h s;
    p.coordinator = m->coord;
    p.timeout_ms = 20000;
    m->rc = 20;
    if (pserv_server_create(&p, &s) != PSERV_OK) return NULL;
    pserv_status_t st = pserv_server_wait(s, EXACT_JOB_MS);
    /* The memory of chunks moved away goes once their last sends complete: the drained server
     * keeps none, the two left keep a copy of every chunk each (2 copies, 2 servers). */
    pserv_server_rank(s, &m->rank);
    size_t want = m->rank == INPROC_DRAINED ? 0 : INPROC_CHUNKS;
    m->stats = (pserv_server_stats_t)PSERV_SERVER_STATS_INIT;
    for (int64_t end = harness_now_ms() + 5000; pserv_server_stats(s, &m->stats) == PSERV_OK &&
                                                m->stats.chunks != want && harness_now_ms() < end;) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    pserv_server_destroy(s);
    m->rc = st == PSERV_OK ? 0 : 21;
    return NULL;
}

Test(membership, join_and_drain_in_one_process, .timeout = 300)
{
    enum { W = 2, ROUNDS_INPROC = 400 };
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    cp.num_servers = NSERVERS;
    cp.num_workers = W;
    cp.chunk_bytes = EXACT_CHUNK_BYTES;
    cp.move_bytes = 3 * EXACT_CHUNK_BYTES; /* several chunks move at once */
    cp.replicas = 1;
    pserv_coordinator_h c;
    cr_assert_eq(pserv_coordinator_create(&cp, &c), PSERV_OK);
    uint16_t port;
    pserv_coordinator_port(c, &port);
    char coord[32];
    snprintf(coord, sizeof(coord), "127.0.0.1:%u", port);
    exact_job_t job = {ROUNDS_INPROC, 0};
    inproc_member_t servers[NSERVERS + 1], workers[W];
    int fds[W];
    for (int s = 0; s < NSERVERS; s++) {
        servers[s] = (inproc_member_t){.coord = coord};
        cr_assert_eq(pthread_create(&servers[s].thread, NULL, inproc_server, &servers[s]), 0);
    }
    for (int w = 0; w < W; w++) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        fds[w] = p[0];
        workers[w] = (inproc_member_t){.coord = coord, .job = &job, .fd = p[1]};
        cr_assert_eq(pthread_create(&workers[w].thread, NULL, inproc_worker, &workers[w]), 0);
    }
    char ready;
    for (int w = 0; w < W; w++) cr_assert_eq(harness_read(fds[w], &ready, 1, 30000), 0, "worker %d never started", w);
    cr_assert_eq(exact_job_ticks(fds[0], 3), 3);
    servers[NSERVERS] = (inproc_member_t){.coord = coord};
    cr_assert_eq(pthread_create(&servers[NSERVERS].thread, NULL, inproc_server, &servers[NSERVERS]), 0);
    cr_assert_eq(exact_job_ticks(fds[0], 3), 3);
    cr_assert_eq(drain_when_room(coord, INPROC_DRAINED), PSERV_OK, "%s", pserv_last_error());
    static float got[W][EXACT_COUNT];
    for (int w = 0; w < W; w++)
        cr_assert_eq(exact_job_result(fds[w], &job, w == 0 ? 6 : 0, got[w]), 0, "worker %d did not finish", w);
    for (int w = 0; w < W; w++) {
        pthread_join(workers[w].thread, NULL);
        cr_assert_eq(workers[w].rc, 0, "worker %d", w);
        close(fds[w]);
    }
    cr_assert_eq(pserv_coordinator_wait(c, 30000), PSERV_OK, "%s", pserv_coordinator_last_error(c));
    for (int s = 0; s <= NSERVERS; s++) {
        pthread_join(servers[s].thread, NULL);
        cr_assert_eq(servers[s].rc, 0, "server thread %d", s);
        const pserv_server_stats_t *st = &servers[s].stats;
        int drained = servers[s].rank == INPROC_DRAINED;
        cr_assert_eq(st->chunks, drained ? 0 : INPROC_CHUNKS, "server %u keeps the memory of %llu chunks (%llu freed)",
                     servers[s].rank, (unsigned long long)st->chunks, (unsigned long long)st->chunks_freed);
        /* The drained server held a copy of every chunk (2 copies, 2 servers) and gave each away. */
        if (drained)
            cr_assert_geq(st->chunks_freed, INPROC_CHUNKS, "the drained server freed %llu chunks",
                          (unsigned long long)st->chunks_freed);
    }
    pserv_coordinator_destroy(c);
    for (int w = 0; w < W; w++) exact_job_check(got[w], W, ROUNDS_INPROC, w);
}

/* ---- a drain across a coordinator restart ---- */

typedef struct {
    const char *coord;
    unsigned rank;
    pserv_status_t st;
    int64_t sent_ms;
} drain_call_t;

static void *drain_thread(void *arg)
{
    drain_call_t *d = arg;
    __atomic_store_n(&d->sent_ms, harness_now_ms(), __ATOMIC_RELEASE);
    d->st = pserv_drain(d->coord, d->rank, DRAIN_MS);
    return NULL;
}

/*
 * The coordinator is killed (SIGKILL) 0-40 ms into a drain, while its chunks move, and started
 * again at its address: the members rejoin with the view (the server LEAVING, a move under way),
 * the servers say again which copies they hold in sync, and the drain finishes without anyone
 * asking again: the drained server's process ends by itself, and the job completes exactly.
 */
Test(membership, a_drain_goes_on_across_a_coordinator_restart, .timeout = 600)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int rep = 0; rep < 3; rep++) {
        harness_t h = {0};
        pserv_coordinator_params_t cp;
        exact_job_params(&cp, NSERVERS + 1, NWORKERS, PSERV_MODE_SYNC, 1, NULL);
        cp.failure_timeout_ms = 1000; /* members wait for the restarted coordinator this long */
        int cfd;
        pid_t coord = harness_start_coordinator_params(&h, &cp, EXACT_JOB_MS, &cfd);
        cr_assert_gt(coord, 0);
        char listen[64];
        snprintf(listen, sizeof(listen), "%s", h.coord);
        pid_t servers[NSERVERS + 1], workers[NWORKERS];
        int fds[NWORKERS];
        exact_job_t job = {ROUNDS, 0};
        exact_job_start(&h, &job, NSERVERS + 1, servers, NWORKERS, workers, fds);
        int seen = 2 + rand() % 6;
        cr_assert_eq(exact_job_ticks(fds[0], seen), seen, "training stalled before the drain");

        drain_call_t d = {.coord = listen, .rank = (unsigned)(rand() % (NSERVERS + 1))};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, drain_thread, &d), 0);
        while (__atomic_load_n(&d.sent_ms, __ATOMIC_ACQUIRE) == 0) sched_yield();
        int after_ms = rand() % 40;
        struct timespec ts = {0, after_ms * 1000000L};
        nanosleep(&ts, NULL);
        kill(coord, SIGKILL);
        int64_t killed = harness_now_ms();
        pthread_join(th, NULL);
        ts = (struct timespec){0, (200 + rand() % 300) * 1000000L};
        nanosleep(&ts, NULL);
        pid_t again = harness_restart_coordinator(&h, &cp, listen, EXACT_JOB_MS, &cfd);
        cr_assert_gt(again, 0, "the coordinator could not listen at %s again", listen);
        int code = -1, gone = first_exit(servers, NSERVERS + 1, 20000, &code);
        int64_t left_ms = harness_now_ms() - killed;
        cr_assert_geq(gone, 0, "the drained server never ended (the drain call: %s)", pserv_strerror(d.st));
        cr_assert_eq(code, 0, "the drained server's process ended with %d", code);
        static float got[NWORKERS][EXACT_COUNT];
        finish_job(&h, &job, workers, fds, seen, cfd, servers, NSERVERS + 1, gone, got);
        fprintf(stderr,
                "drain of server %u, coordinator killed %d ms into it (the call: %s); the server left %lld ms after "
                "the kill\n",
                d.rank, after_ms, pserv_strerror(d.st), (long long)left_ms);
        for (int w = 0; w < NWORKERS; w++) exact_job_check(got[w], NWORKERS, ROUNDS, w);
    }
}
