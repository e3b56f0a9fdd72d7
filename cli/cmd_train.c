/*
 * `pserv train`: a whole training job. On one machine it runs the coordinator itself and
 * starts the server shards and workers as separate processes (this same program, with the
 * role subcommands) talking over UCX on 127.0.0.1. Under mpirun or srun it is one member of
 * the job, chosen by rank (launch_by_rank.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "launcher_env.h"
#include "progress.h"
#include "train_config.h"
#include "pserv/pserv.h"

#define MAX_CHILDREN 256
#define SUMMARY "Trains an MLP on Fashion-MNIST through pserv server shards: by default a coordinator,\n" \
                "2 server shards and workers on this machine (one per GPU, which reduce over NCCL and\n" \
                "push once; without GPUs, 2 on the CPU), in synchronous mode, until the target\n" \
                "accuracy or the epoch limit."

typedef struct {
    pid_t pid;
    int fd; /* report pipe of a worker, -1 for a server */
    char buf[4096];
    size_t len;
    int role_worker;
} child_t;

static const char *self_exe(void)
{
    static char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (n <= 0) return "pserv";
    path[n] = '\0';
    return path;
}

static pid_t spawn(char **argv, int report_fd)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    /* Each worker's BLAS gets one thread: the job's processes share the machine's cores. */
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    if (report_fd >= 0 && report_fd != 3) {
        dup2(report_fd, 3);
        close(report_fd);
    }
    execv(argv[0], argv);
    fprintf(stderr, "pserv train: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static void kill_all(child_t *kids, int n)
{
    for (int i = 0; i < n; i++)
        if (kids[i].pid > 0) kill(kids[i].pid, SIGTERM);
}

/* Reads what workers report until every pipe is closed. */
static void pump_reports(child_t *kids, int n, progress_t *prog)
{
    for (;;) {
        struct pollfd pfds[MAX_CHILDREN];
        int idx[MAX_CHILDREN], np = 0;
        for (int i = 0; i < n; i++)
            if (kids[i].fd >= 0) {
                pfds[np] = (struct pollfd){kids[i].fd, POLLIN, 0};
                idx[np++] = i;
            }
        if (np == 0) return;
        if (poll(pfds, (nfds_t)np, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int j = 0; j < np; j++) {
            if (!pfds[j].revents) continue;
            child_t *c = &kids[idx[j]];
            ssize_t k = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
            if (k <= 0) {
                close(c->fd);
                c->fd = -1;
                continue;
            }
            c->len += (size_t)k;
            c->buf[c->len] = '\0';
            char *start = c->buf, *nl;
            while ((nl = strchr(start, '\n')) != NULL) {
                *nl = '\0';
                progress_line(prog, start);
                start = nl + 1;
            }
            c->len = strlen(start);
            memmove(c->buf, start, c->len);
        }
    }
}

static int run_local(const train_config_t *cfg)
{
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_coordinator_h coord;
    child_t kids[MAX_CHILDREN];
    int nkids = 0, failed = 0;
    char coord_addr[64];
    uint16_t port = 0;

    if (cfg->servers + cfg->workers > MAX_CHILDREN) {
        fprintf(stderr, "pserv train: at most %d servers and workers on one machine\n", MAX_CHILDREN);
        return 2;
    }
    cp.listen = "127.0.0.1:0";
    cp.num_servers = cfg->servers;
    cp.num_workers = cfg->workers;
    cp.mode = strcmp(cfg->mode, "async") == 0 ? PSERV_MODE_ASYNC : PSERV_MODE_SYNC;
    cp.chunk_bytes = cfg->chunk_bytes;
    pserv_status_t st = pserv_coordinator_create(&cp, &coord);
    if (st < 0) {
        fprintf(stderr, "pserv train: cannot start the coordinator: %s\n", pserv_last_error());
        return 1;
    }
    pserv_coordinator_port(coord, &port);
    snprintf(coord_addr, sizeof(coord_addr), "127.0.0.1:%u", port);
    printf("pserv train: %u servers, %u workers on the %s, %s mode, %s lr %g, batch %u, hidden", cfg->servers,
           cfg->workers, train_config_use_gpu("train", cfg) > 0 ? "GPU" : "CPU", cfg->mode, cfg->optimizer,
           (double)train_config_lr(cfg), cfg->batch);
    for (unsigned i = 0; i < cfg->hidden.n; i++) printf("%s%zu", i ? "," : " ", cfg->hidden.v[i]);
    printf(", coordinator %s\n", coord_addr);
    fflush(stdout);

    signal(SIGPIPE, SIG_IGN);
    const char *exe = self_exe();
    for (unsigned s = 0; s < cfg->servers; s++) {
        char *argv[] = {(char *)exe, "server", "--coordinator", coord_addr, NULL};
        kids[nkids++] = (child_t){.pid = spawn(argv, -1), .fd = -1};
    }
    for (unsigned w = 0; w < cfg->workers; w++) {
        char bufs[TRAIN_FLAGS_MAX][TRAIN_ARG_MAX];
        char *argv[TRAIN_FLAGS_MAX + 8];
        int n = 0;
        argv[n++] = (char *)exe;
        argv[n++] = "worker";
        argv[n++] = "--coordinator";
        argv[n++] = coord_addr;
        argv[n++] = "--report-fd=3";
        n += train_config_worker_args(cfg, bufs, argv + n, TRAIN_FLAGS_MAX);
        argv[n] = NULL;
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
            failed = 1;
            break;
        }
        int child_end = dup(fds[1]); /* without O_CLOEXEC: survives the exec */
        close(fds[1]);
        kids[nkids++] = (child_t){.pid = spawn(argv, child_end), .fd = fds[0], .role_worker = 1};
        close(child_end);
    }

    progress_t prog;
    progress_init(&prog, cfg->workers, cfg->epochs, cfg->batch, cfg->target);
    if (!failed) pump_reports(kids, nkids, &prog);
    /* Workers are done (their pipes closed): collect them, then the coordinator ends the job. */
    for (int i = 0; i < nkids; i++) {
        if (!kids[i].role_worker) continue;
        int status = 0;
        waitpid(kids[i].pid, &status, 0);
        kids[i].pid = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
    }
    if (failed) kill_all(kids, nkids);
    st = pserv_coordinator_wait(coord, 30000);
    if (st == PSERV_ERR_TIMED_OUT) kill_all(kids, nkids);
    for (int i = 0; i < nkids; i++) {
        if (kids[i].pid <= 0) continue;
        int status = 0;
        waitpid(kids[i].pid, &status, 0);
        if (!failed && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) failed = 1;
    }
    pserv_coordinator_destroy(coord);
    if (failed || prog.done != cfg->workers) {
        fprintf(stderr, "pserv train: the job failed (see the messages above)\n");
        return 1;
    }
    progress_summary(&prog, stdout);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    train_config_t cfg;
    cli_opt_t opts[TRAIN_FLAGS_MAX];
    train_config_defaults(&cfg);
    size_t n = train_config_flags(&cfg, 1, 1, opts);
    cli_result_t r = cli_parse("train", SUMMARY, opts, n, argc, argv);
    if (r != CLI_OK) return r == CLI_HELP ? 0 : 2;
    if (train_config_check_data("train", &cfg) != 0) return 2;
    int gpus = train_config_use_gpu("train", &cfg);
    if (gpus < 0) return 2;
    train_config_resolve_workers(&cfg, gpus);
    launcher_env_t env;
    if (launcher_env_detect(&env)) return train_by_rank(&cfg, &env);
    return run_local(&cfg);
}
