#include "harness.h"
#include "../tsan/fork.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int harness_write(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int harness_read(int fd, void *buf, size_t n, int timeout_ms)
{
    char *p = buf;
    long end = now_ms() + timeout_ms;
    while (n > 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        long left = end - now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) return -1;
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void harness_add(harness_t *h, pid_t pid)
{
    if (h->nprocs < HARNESS_MAX_PROCS) h->pids[h->nprocs++] = pid;
}

void harness_start_coordinator(harness_t *h, unsigned servers, unsigned workers, pserv_mode_t mode,
                               size_t chunk_bytes)
{
    int fds[2];
    TSAN_SKIP_FORKED_THREADS();
    if (pipe(fds) != 0) abort();
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        pserv_coordinator_params_t p = PSERV_COORDINATOR_PARAMS_INIT;
        pserv_coordinator_h c;
        uint16_t port = 0;
        p.num_servers = servers;
        p.num_workers = workers;
        p.mode = mode;
        p.chunk_bytes = chunk_bytes;
        if (pserv_coordinator_create(&p, &c) != PSERV_OK) _exit(10);
        pserv_coordinator_port(c, &port);
        harness_write(fds[1], &port, sizeof(port));
        pserv_status_t st = pserv_coordinator_wait(c, 120000);
        pserv_coordinator_destroy(c);
        _exit(st == PSERV_OK ? 0 : 11);
    }
    close(fds[1]);
    harness_add(h, pid);
    uint16_t port = 0;
    if (harness_read(fds[0], &port, sizeof(port), 20000) != 0) port = 1;
    close(fds[0]);
    snprintf(h->coord, sizeof(h->coord), "127.0.0.1:%u", port);
}

int64_t harness_now_ms(void)
{
    return now_ms();
}

pid_t harness_start_coordinator_params(harness_t *h, const pserv_coordinator_params_t *params, int wait_ms,
                                       int *rfd)
{
    TSAN_SKIP_FORKED_THREADS();
    char host[48] = "127.0.0.1";
    int fds[2];
    if (params->listen) {
        const char *colon = strrchr(params->listen, ':');
        size_t n = colon ? (size_t)(colon - params->listen) : 0;
        if (n > 0 && n < sizeof(host)) {
            memcpy(host, params->listen, n);
            host[n] = '\0';
        }
    }
    if (pipe(fds) != 0) abort();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        pserv_coordinator_h c;
        uint16_t port = 0;
        if (pserv_coordinator_create(params, &c) != PSERV_OK) {
            fprintf(stderr, "coordinator: %s\n", pserv_last_error());
            _exit(10);
        }
        pserv_coordinator_port(c, &port);
        harness_write(fds[1], &port, sizeof(port));
        harness_coord_result_t res;
        memset(&res, 0, sizeof(res));
        res.status = pserv_coordinator_wait(c, wait_ms);
        res.end_ms = now_ms();
        snprintf(res.why, sizeof(res.why), "%s", pserv_coordinator_last_error(c));
        harness_write(fds[1], &res, sizeof(res));
        pserv_coordinator_destroy(c);
        _exit(res.status == PSERV_OK ? 0 : 11);
    }
    close(fds[1]);
    harness_add(h, pid);
    uint16_t port = 0;
    if (harness_read(fds[0], &port, sizeof(port), 20000) != 0) {
        close(fds[0]);
        snprintf(h->coord, sizeof(h->coord), "%s:1", host);
        *rfd = -1;
        return -1;
    }
    snprintf(h->coord, sizeof(h->coord), "%s:%u", host, port);
    *rfd = fds[0];
    return pid;
}

pid_t harness_restart_coordinator(harness_t *h, pserv_coordinator_params_t *params, const char *listen, int wait_ms,
                                  int *rfd)
{
    params->listen = listen;
    pid_t again = -1;
    for (int tries = 0; tries < 50 && again < 0; tries++) { /* the port may take a moment to be free */
        if ((again = harness_start_coordinator_params(h, params, wait_ms, rfd)) < 0) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return again;
}

pid_t harness_start_server(harness_t *h, unsigned threads)
{
    TSAN_SKIP_FORKED_THREADS();
    pid_t pid = fork();
    if (pid == 0) {
        pserv_server_params_t p = PSERV_SERVER_PARAMS_INIT;
        pserv_server_h s;
        p.coordinator = h->coord;
        p.threads = threads;
        p.timeout_ms = 20000;
        if (pserv_server_create(&p, &s) != PSERV_OK) _exit(20);
        pserv_status_t st = pserv_server_wait(s, 120000);
        pserv_server_destroy(s);
        _exit(st == PSERV_OK ? 0 : 21);
    }
    harness_add(h, pid);
    return pid;
}

pid_t harness_start(harness_t *h, int (*fn)(void *arg, const char *coord, int fd), void *arg, int *rfd)
{
    int fds[2];
    TSAN_SKIP_FORKED_THREADS();
    if (pipe(fds) != 0) abort();
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        int rc = fn(arg, h->coord, fds[1]);
        close(fds[1]);
        _exit(rc);
    }
    close(fds[1]);
    harness_add(h, pid);
    if (rfd) *rfd = fds[0];
    else close(fds[0]);
    return pid;
}

int harness_wait(pid_t pid, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0 || now_ms() > end) return -1;
        usleep(10000); /* test harness only: polling a child's exit */
    }
}

int harness_wait_all(harness_t *h, int timeout_ms)
{
    int bad = 0;
    long end = now_ms() + timeout_ms;
    for (int i = 0; i < h->nprocs; i++) {
        if (h->pids[i] <= 0) continue;
        long left = end - now_ms();
        int rc = harness_wait(h->pids[i], left > 0 ? (int)left : 0);
        if (rc != 0) {
            fprintf(stderr, "process %d exited with %d\n", (int)h->pids[i], rc);
            bad++;
            kill(h->pids[i], SIGKILL);
            waitpid(h->pids[i], NULL, 0);
        }
        h->pids[i] = 0;
    }
    return bad;
}

void harness_kill_all(harness_t *h)
{
    for (int i = 0; i < h->nprocs; i++) {
        if (h->pids[i] <= 0) continue;
        kill(h->pids[i], SIGKILL);
        waitpid(h->pids[i], NULL, 0);
        h->pids[i] = 0;
    }
}

typedef struct {
    const char *coord;
    const char *node;
    unsigned max_requests;
    pserv_worker_h worker;
    pserv_status_t st;
} worker_thread_t;

static void *worker_thread(void *arg)
{
    worker_thread_t *t = arg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    wp.coordinator = t->coord;
    wp.max_requests = t->max_requests;
    wp.node = t->node;
    wp.timeout_ms = 20000;
    t->st = pserv_worker_create(&wp, &t->worker);
    return NULL;
}

int inproc_group_start(inproc_job_t *job, pserv_mode_t mode, size_t chunk_bytes, unsigned max_requests,
                       unsigned num_servers, unsigned num_workers, const char *const *nodes)
{
    pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
    worker_thread_t wt[INPROC_MAX_WORKERS];
    pthread_t wtid[INPROC_MAX_WORKERS];
    int bad = 0;

    memset(job, 0, sizeof(*job));
    if (num_workers > INPROC_MAX_WORKERS || num_servers > INPROC_MAX_SERVERS) return -1;
    lp.num_servers = num_servers;
    lp.num_workers = num_workers;
    lp.mode = mode;
    lp.chunk_bytes = chunk_bytes;
    lp.timeout_ms = 20000;
    if (pserv_local_create(&lp, &job->local) != PSERV_OK) {
        fprintf(stderr, "inproc job: %s\n", pserv_last_error());
        return -1;
    }
    job->num_servers = num_servers;
    job->num_workers = num_workers;
    for (unsigned i = 0; i < num_workers; i++) {
        wt[i] = (worker_thread_t){pserv_local_coordinator(job->local), nodes ? nodes[i] : NULL, max_requests, NULL,
                                  PSERV_ERR_INTERNAL};
        pthread_create(&wtid[i], NULL, worker_thread, &wt[i]);
    }
    /* Index workers by rank, whatever order they joined in. */
    for (unsigned i = 0; i < num_workers; i++) {
        pthread_join(wtid[i], NULL);
        pserv_job_info_t info = PSERV_JOB_INFO_INIT;
        if (wt[i].st != PSERV_OK || pserv_worker_job(wt[i].worker, &info) != PSERV_OK || info.rank >= num_workers ||
            job->workers[info.rank] != NULL) {
            bad = 1;
            pserv_worker_destroy(wt[i].worker);
            continue;
        }
        job->workers[info.rank] = wt[i].worker;
        job->nodes[info.rank] = wt[i].node;
    }
    for (unsigned i = 0; i < num_servers && !bad; i++)
        if (pserv_local_server(job->local, i, 20000, &job->servers[i]) != PSERV_OK) {
            fprintf(stderr, "inproc job: %s\n", pserv_last_error());
            bad = 1;
        }
    if (bad) {
        inproc_job_stop(job);
        return -1;
    }
    job->server = job->servers[0];
    job->worker = job->workers[0];
    return 0;
}

int inproc_job_start(inproc_job_t *job, pserv_mode_t mode, size_t chunk_bytes, unsigned max_requests)
{
    return inproc_group_start(job, mode, chunk_bytes, max_requests, 1, 1, NULL);
}

int inproc_job_stop(inproc_job_t *job)
{
    for (unsigned i = 0; i < job->num_workers; i++) pserv_worker_destroy(job->workers[i]);
    pserv_status_t st = pserv_local_destroy(job->local, 10000);
    if (st != PSERV_OK) fprintf(stderr, "inproc job: %s: %s\n", pserv_strerror(st), pserv_last_error());
    memset(job, 0, sizeof(*job));
    return st == PSERV_OK ? 0 : -1;
}

pid_t harness_start_ready_pair(harness_t *h, int (*fn)(void *arg, const char *coord, int fd), int *rfd)
{
    harness_start_coordinator(h, 1, 1, PSERV_MODE_SYNC, 0);
    pid_t server = harness_start_server(h, 1);
    harness_start(h, fn, NULL, rfd);
    char ready = 0;
    return harness_read(*rfd, &ready, 1, 30000) == 0 ? server : -1;
}
