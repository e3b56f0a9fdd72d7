/*
 * `pserv train`: a whole training job. On one machine it runs the coordinator itself and
 * starts the server shards and workers as separate processes (this same program, with the
 * role subcommands) talking over UCX on 127.0.0.1. Under mpirun or srun it is one member of
 * the job, chosen by rank (launch_by_rank.c).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "children.h"
#include "commands.h"
#include "launcher_env.h"
#include "progress.h"
#include "train_config.h"
#include "pserv/pserv.h"

#define SUMMARY "Trains an MLP on Fashion-MNIST through pserv server shards: by default a coordinator,\n" \
                "2 server shards and workers on this machine (one per GPU, which reduce over NCCL and\n" \
                "push once; without GPUs, 2 on the CPU), in synchronous mode, until the target\n" \
                "accuracy or the epoch limit."

/* How often the launcher looks at its children and the coordinator: the delay before it notices
 * a death, at the cost of ten wake-ups a second. */
#define TICK_MS 100
/* From SIGTERM to SIGKILL when the job is stopped. */
#define GRACE_MS 2000
/* After the last worker exited: time for the coordinator to end the job and the servers to exit. */
#define END_MS 10000

static const char *self_exe(void)
{
    static char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (n <= 0) return "pserv";
    path[n] = '\0';
    return path;
}

static void on_report(void *arg, const char *line)
{
    progress_line(arg, line);
}

/* Before the launcher says why it stops the job: that line goes below a progress bar, not into it. */
static void end_bar(const progress_t *prog)
{
    if (prog->tty) printf("\r%*s\r", 100, "");
    fflush(stdout);
}

/*
 * Pumps the workers' reports until the job is over and every child has exited (0), or stops at
 * the first sign of failure: a child that died or exited with an error, a server that exited
 * while the job ran, the coordinator failing the job, a job that does not end once its workers
 * are gone, or a signal to the launcher (1, or 128 + the signal).
 */
static int watch_job(pserv_coordinator_h coord, children_t *kids, unsigned servers, int workers_may_die,
                     int servers_may_die, progress_t *prog)
{
    char why[512];
    double end_by = 0;
    int open = children_read(kids, 0, on_report, prog);
    for (;;) {
        int sig = children_caught_signal();
        if (sig) {
            end_bar(prog);
            fprintf(stderr, "pserv train: caught signal %d (%s): stopping the servers and workers\n", sig,
                    strsignal(sig));
            return 128 + sig;
        }
        /* Reap first: a server that exited after the job ended is then seen with the end. */
        child_t *dead = children_reap(kids);
        pserv_status_t st = pserv_coordinator_wait(coord, 0);
        if (dead) {
            children_describe(dead, why, sizeof(why));
            end_bar(prog);
            /* --on-worker-failure continue: the coordinator goes on without it, and so do we. */
            if (workers_may_die && strcmp(dead->role, "worker") == 0) {
                fprintf(stderr, "pserv train: %s; the others go on\n", why);
                continue;
            }
            /* --replicas: its chunks fail over to their backups (the coordinator ends the job if
             * some chunk has no copy left, and we see that next). */
            if (servers_may_die && strcmp(dead->role, "server") == 0 && st != PSERV_OK) {
                fprintf(stderr, "pserv train: %s; its chunks fail over to their backups\n", why);
                servers--;
                continue;
            }
            fprintf(stderr, "pserv train: %s\n", why);
            return 1;
        }
        if (st < 0 && st != PSERV_ERR_TIMED_OUT) {
            const char *reason = pserv_coordinator_last_error(coord);
            end_bar(prog);
            fprintf(stderr, "pserv train: the job failed: %s\n", reason[0] ? reason : pserv_strerror(st));
            return 1;
        }
        int over = st == PSERV_OK;
        if (!over && (unsigned)children_running(kids, "server") < servers) {
            for (int i = 0; i < kids->n; i++)
                if (!kids->c[i].running && strcmp(kids->c[i].role, "server") == 0)
                    children_describe(&kids->c[i], why, sizeof(why));
            end_bar(prog);
            fprintf(stderr, "pserv train: %s before the job ended\n", why);
            return 1;
        }
        if (over && open == 0 && children_running(kids, NULL) == 0) return 0;
        if (end_by == 0 && children_running(kids, "worker") == 0) end_by = progress_now() + END_MS / 1000.0;
        if (end_by > 0 && progress_now() > end_by) {
            end_bar(prog);
            fprintf(stderr, "pserv train: %s within %d s of the last worker's exit\n",
                    over ? "the servers did not exit" : "the coordinator did not end the job", END_MS / 1000);
            return 1;
        }
        open = children_read(kids, TICK_MS, on_report, prog);
    }
}

static int run_local(const train_config_t *cfg)
{
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_coordinator_h coord;
    children_t *kids = malloc(sizeof(*kids)); /* a megabyte of line buffers: not on the stack */
    char coord_addr[64];
    uint16_t port = 0;
    int rc = 1;

    if (kids == NULL) return 1;
    children_init(kids);
    if (cfg->servers + cfg->workers > CHILDREN_MAX) {
        fprintf(stderr, "pserv train: at most %d servers and workers on one machine\n", CHILDREN_MAX);
        free(kids);
        return 2;
    }
    train_config_coordinator_params(cfg, &cp);
    cp.listen = "127.0.0.1:0";
    cp.num_servers = cfg->servers;
    cp.num_workers = cfg->workers;
    pserv_status_t st = pserv_coordinator_create(&cp, &coord);
    if (st < 0) {
        fprintf(stderr, "pserv train: cannot start the coordinator: %s\n", pserv_last_error());
        free(kids);
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
    children_catch_signals();
    /* Each worker's BLAS gets one thread: the job's processes share the machine's cores. (Set
     * here, not in the forked child, where only async-signal-safe calls belong.) */
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    const char *exe = self_exe();
    int started = 1;
    for (unsigned s = 0; s < cfg->servers && started; s++) {
        char *argv[] = {(char *)exe, "server", "--coordinator", coord_addr, NULL};
        started = children_spawn(kids, "server", s, argv, 0) == 0;
    }
    for (unsigned w = 0; w < cfg->workers && started; w++) {
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
        started = children_spawn(kids, "worker", w, argv, 1) == 0;
    }

    progress_t prog;
    progress_init(&prog, cfg->workers, cfg->epochs, cfg->batch, cfg->target);
    int may_die = strcmp(cfg->on_worker_failure, "continue") == 0;
    int replicated = cfg->replicas == TRAIN_REPLICAS_DEFAULT ? cfg->servers >= 2 : cfg->replicas > 0;
    if (started) rc = watch_job(coord, kids, cfg->servers, may_die, replicated, &prog);
    /* On success every child has exited already; otherwise this ends them, SIGKILL last. */
    int left = children_stop(kids, GRACE_MS);
    pserv_coordinator_destroy(coord);
    free(kids);
    if (rc == 0 && (left > 0 || prog.done == 0 || (!may_die && prog.done != cfg->workers))) {
        fprintf(stderr, "pserv train: the job failed (see the messages above)\n");
        rc = 1;
    }
    if (rc == 0) progress_summary(&prog, stdout);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    train_config_t cfg;
    cli_opt_t opts[TRAIN_FLAGS_MAX];
    train_config_defaults(&cfg);
    size_t n = train_config_flags(&cfg, 1, 1, opts);
    cli_result_t r = cli_parse("train", SUMMARY, opts, n, argc, argv);
    if (r != CLI_OK) return r == CLI_HELP ? 0 : 2;
    cli_progress_apply(cfg.progress);
    if (train_config_check_data("train", &cfg) != 0) return 2;
    int gpus = train_config_use_gpu("train", &cfg);
    if (gpus < 0) return 2;
    train_config_resolve_workers(&cfg, gpus);
    launcher_env_t env;
    if (launcher_env_detect(&env)) return train_by_rank(&cfg, &env);
    return run_local(&cfg);
}
