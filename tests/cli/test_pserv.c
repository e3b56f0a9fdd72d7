/*
 * The pserv program end to end: a short real training run, the launchers (local and mpirun),
 * and the errors a user meets (bad flags, missing data, unreachable coordinator), each with the
 * expected message and exit code, never a hang; a server or worker killed mid-job ends the local
 * launcher within seconds, and none of its processes is left.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_run.h"

/* Runs `pserv ARGS`. */
static void run(run_t *r, int limit_s, const char *env, const char *args)
{
    run_cmd(r, limit_s, env, PSERV_CLI, args);
}

static double summary_accuracy(const char *out)
{
    const char *s = strstr(out, "summary: test accuracy ");
    return s ? atof(s + strlen("summary: test accuracy ")) : -1;
}

Test(cli, short_training_run_learns, .timeout = 300)
{
    run_t *r = malloc(sizeof(*r));
    run(r, 240, NULL, "train --epochs 1 --limit 6000 --seed 3");
    cr_assert_eq(r->code, 0, "exit %d\nstdout:\n%s\nstderr:\n%s", r->code, r->out, r->err);
    double acc = summary_accuracy(r->out);
    cr_assert_geq(acc, 0.65, "accuracy %.4f after one epoch on 6000 samples\n%s", acc, r->out);
    cr_assert(strstr(r->out, "epoch  1/1") != NULL, "no epoch line:\n%s", r->out);
    cr_assert(strstr(r->out, "pushed") != NULL, "no bytes in the summary:\n%s", r->out);
    free(r);
}

Test(cli, async_run_learns, .timeout = 300)
{
    run_t *r = malloc(sizeof(*r));
    run(r, 240, NULL, "train --mode async --epochs 2 --limit 6000");
    cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    cr_assert_geq(summary_accuracy(r->out), 0.65, "%s", r->out);
    free(r);
}

/*
 * A port for mpirun's coordinator: below the kernel's ephemeral range (32768 and up), where the
 * job's own connections take theirs, and free when probed.
 */
Test(cli, mpirun_trains_like_the_local_launcher, .timeout = 300)
{
    run_t *local = malloc(sizeof(*local)), *mpi = malloc(sizeof(*mpi));
    run(local, 240, NULL, "train --epochs 1 --limit 6000 --seed 5");
    cr_assert_eq(local->code, 0, "%s", local->err);
    char args[512];
    snprintf(args, sizeof(args),
             "--allow-run-as-root --oversubscribe -np 4 %s train --servers 2 --coordinator 127.0.0.1:%d "
             "--epochs 1 --limit 6000 --seed 5",
             PSERV_CLI, free_port());
    run_cmd(mpi, 240, NULL, MPIRUN, args);
    cr_assert_eq(mpi->code, 0, "mpirun failed:\n%s\n%s", mpi->out, mpi->err);
    const char *line = strstr(mpi->out, "worker 0: test accuracy ");
    cr_assert_not_null(line, "no worker summary:\n%s", mpi->out);
    double acc_mpi = atof(line + strlen("worker 0: test accuracy "));
    double acc_local = summary_accuracy(local->out);
    cr_assert_geq(acc_mpi, 0.65, "%s", mpi->out);
    cr_assert_lt(acc_mpi > acc_local ? acc_mpi - acc_local : acc_local - acc_mpi, 0.01,
                 "mpirun %.4f vs local %.4f", acc_mpi, acc_local);
    free(local);
    free(mpi);
}

Test(cli, missing_data_directory_is_exit_2, .timeout = 60)
{
    run_t *r = malloc(sizeof(*r));
    run(r, 30, NULL, "train --data /nonexistent/fmnist");
    cr_assert_eq(r->code, 2);
    cr_assert(strstr(r->err, "/nonexistent/fmnist") && strstr(r->err, "does not exist"), "%s", r->err);
    free(r);
}

Test(cli, bad_flags_are_exit_2_with_one_line, .timeout = 60)
{
    static const struct {
        const char *env, *args, *want;
    } cases[] = {
        {NULL, "train --no-such-flag", "unknown flag --no-such-flag"},
        {NULL, "train --servers zero", "--servers must be a whole number"},
        {NULL, "train --workers 0", "--workers must be at least 1"},
        {NULL, "train --mode eventually", "--mode must be one of sync|async"},
        {NULL, "train --hidden 256,,128", "--hidden must be a comma-separated list"},
        {NULL, "train --chunk-bytes 4Q", "--chunk-bytes must be a size"},
        {NULL, "train --lr", "--lr needs a value"},
        {"PSERV_EPOCHS=-3", "train", "PSERV_EPOCHS (from the environment)"},
        {"PSERV_PROGRESS=fast", "train", "PSERV_PROGRESS (from the environment) for --progress must be one of auto|spin|sleep, not 'fast'"},
        {NULL, "server --coordinator 127.0.0.1:1 --progress busy", "--progress must be one of auto|spin|sleep"},
        {NULL, "frobnicate", "unknown command 'frobnicate'"},
        {NULL, "server", "--coordinator HOST:PORT is required"},
    };
    run_t *r = malloc(sizeof(*r));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run(r, 30, cases[i].env, cases[i].args);
        cr_expect_eq(r->code, 2, "%s: exit %d", cases[i].args, r->code);
        cr_expect(strstr(r->err, cases[i].want) != NULL, "%s: stderr was: %s", cases[i].args, r->err);
        cr_expect(strchr(r->err, '\n') == r->err + strlen(r->err) - 1, "%s: not one line: %s", cases[i].args, r->err);
    }
    free(r);
}

Test(cli, unreachable_coordinator_names_the_address, .timeout = 60)
{
    run_t *r = malloc(sizeof(*r));
    run(r, 30, NULL, "worker --coordinator 127.0.0.1:1 --timeout 5");
    cr_assert_eq(r->code, 1, "exit %d: %s", r->code, r->err);
    cr_assert(strstr(r->err, "127.0.0.1:1") != NULL, "%s", r->err);
    run(r, 30, NULL, "server --coordinator 127.0.0.1:1 --timeout 5");
    cr_assert_eq(r->code, 1, "exit %d: %s", r->code, r->err);
    cr_assert(strstr(r->err, "127.0.0.1:1") != NULL, "%s", r->err);
    free(r);
}

Test(cli, help_and_version, .timeout = 30)
{
    run_t *r = malloc(sizeof(*r));
    run(r, 10, NULL, "train --help");
    cr_assert_eq(r->code, 0);
    cr_assert(strstr(r->out, "--optimizer") && strstr(r->out, "PSERV_LR"), "%s", r->out);
    run(r, 10, NULL, "version");
    cr_assert_eq(r->code, 0);
    cr_assert(strncmp(r->out, "pserv ", 6) == 0, "%s", r->out);
    free(r);
}

/* With a GPU this is the short `--device cuda` training run; without one, a clear refusal. */
Test(cli, device_cuda_trains_or_says_why, .timeout = 300)
{
    run_t *r = malloc(sizeof(*r));
    run(r, 240, NULL, "train --device cuda --epochs 1 --limit 6000 --seed 3");
    if (r->code == 0) {
        cr_assert(strstr(r->out, "on the GPU") != NULL, "%s", r->out);
        cr_assert_geq(summary_accuracy(r->out), 0.65, "%s", r->out);
    } else {
        cr_assert_eq(r->code, 2, "exit %d: %s", r->code, r->err);
        cr_assert(strstr(r->err, "--device cuda:") != NULL, "%s", r->err);
    }
    run(r, 240, NULL, "train --device cpu --epochs 1 --limit 6000 --seed 3");
    cr_assert_eq(r->code, 0, "%s", r->err);
    cr_assert(strstr(r->out, "on the CPU") != NULL, "%s", r->out);
    free(r);
}

/* ---- a member of a local job dies: `pserv train` ends at once and leaves nothing behind ---- */

/*
 * Starts a job of 2 servers and 2 workers that would train for minutes, sends one child of role
 * the signal (SIGKILL: it dies; SIGSTOP: it hangs with its connections up) at a random moment
 * 0.5-3 s after the job formed, and checks that `pserv train` exits non-zero within 10 s naming a member of that
 * role, and that none of its children is left (a stopped one too).
 */
static void signal_member_once(const char *role, int sig)
{
    /* No backups: a dead server ends the job (test_failover.c covers a job that survives it). */
    char *argv[] = {"pserv", "train", "--servers", "2", "--replicas", "0", "--workers", "2", "--epochs", "50",
                    "--target-accuracy", "0.99", NULL};
    char out[64], text[16384];
    proc_t kids[16];
    int nkids = 0, status = 0;
    snprintf(out, sizeof(out), "/tmp/pserv_test_kill_%d.out", (int)getpid());
    pid_t train = start_train(out, argv);
    cr_assert_gt(train, 0);
    /* Once every member has joined (a member stopped before it joins only holds the job back
     * until the join timeout), at a random moment of training. */
    for (double until = now_s() + 30; now_s() < until; sleep_s(0.05)) {
        slurp(out, text, sizeof(text));
        if (strstr(text, "job formed")) break;
    }
    double delay = 0.5 + 2.5 * (double)rand() / RAND_MAX;
    sleep_s(delay);
    for (double until = now_s() + 5; (nkids = children_of(train, kids, 16)) < 4 && now_s() < until;) sleep_s(0.05);
    int pick = -1, seen = 0;
    for (int i = 0; i < nkids; i++)
        if (strcmp(kids[i].role, role) == 0 && rand() % ++seen == 0) pick = i;
    if (nkids != 4 || pick < 0) {
        kill(train, SIGKILL);
        waitpid(train, NULL, 0);
        cr_assert_fail("after %.2f s pserv train has %d children, none a %s", delay, nkids, role);
    }

    double killed = now_s(), took = 0;
    kill(kids[pick].pid, sig);
    pid_t r = 0;
    while ((r = waitpid(train, &status, WNOHANG)) == 0 && (took = now_s() - killed) < 10) sleep_s(0.01);
    if (r == 0) { /* it hangs: take it all down before failing */
        kill(train, SIGKILL);
        for (int i = 0; i < nkids; i++) kill(kids[i].pid, SIGKILL);
        waitpid(train, &status, 0);
    }
    slurp_tail(out, text, sizeof(text));
    unlink(out);
    fprintf(stderr, "%s to %s pid %d %.2f s after the start: pserv train exited %.3f s later\n", strsignal(sig),
            role, (int)kids[pick].pid, delay, took);
    cr_assert_neq(r, 0, "pserv train still runs 10 s after its %s got %s\n%s", role, strsignal(sig), text);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "status 0x%x\n%s", status, text);
    char named[64], failed[64];
    snprintf(named, sizeof(named), "\npserv train: %s ", role);
    snprintf(failed, sizeof(failed), "\npserv train: the job failed: %s ", role);
    cr_assert(strstr(text, named) || strstr(text, failed), "no line names the %s:\n%s", role, text);
    cr_assert_null(strstr(text, "summary:"), "%s", text);
    for (int i = 0; i < nkids; i++)
        cr_assert(!still_there(&kids[i]), "%s pid %d is left\n%s", kids[i].role, (int)kids[i].pid, text);
    if (sig == SIGSTOP) cr_assert(strstr(text, "no heartbeat"), "the reason is not the silence:\n%s", text);
}

static void kill_member_once(const char *role)
{
    signal_member_once(role, SIGKILL);
}

Test(cli, stopped_server_ends_the_job_within_10_s_and_leaves_no_process, .timeout = 120)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int round = 0; round < 2; round++) signal_member_once("server", SIGSTOP);
}

Test(cli, stopped_worker_ends_the_job_within_10_s_and_leaves_no_process, .timeout = 120)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int round = 0; round < 2; round++) signal_member_once("worker", SIGSTOP);
}

/* --on-worker-failure continue: a worker killed mid-training, the other finishes and the job succeeds. */
Test(cli, continue_policy_finishes_without_a_killed_worker, .timeout = 180)
{
    char *argv[] = {"pserv", "train", "--servers", "2", "--workers", "2", "--epochs", "3", "--target-accuracy",
                    "0.99", "--on-worker-failure", "continue", NULL};
    char out[64], text[16384];
    proc_t kids[16];
    int nkids = 0, status = 0;
    snprintf(out, sizeof(out), "/tmp/pserv_test_continue_%d.out", (int)getpid());
    pid_t train = start_train(out, argv);
    for (double until = now_s() + 30; now_s() < until; sleep_s(0.05)) {
        slurp(out, text, sizeof(text));
        if (strstr(text, "job formed")) break;
    }
    sleep_s(1.0);
    for (double until = now_s() + 5; (nkids = children_of(train, kids, 16)) < 4 && now_s() < until;) sleep_s(0.05);
    int pick = -1;
    for (int i = 0; i < nkids && pick < 0; i++)
        if (strcmp(kids[i].role, "worker") == 0) pick = i;
    cr_assert_geq(pick, 0, "no worker among %d children", nkids);
    kill(kids[pick].pid, SIGKILL);
    pid_t r = 0;
    for (double until = now_s() + 150; (r = waitpid(train, &status, WNOHANG)) == 0 && now_s() < until;) sleep_s(0.05);
    if (r == 0) {
        kill(train, SIGKILL);
        waitpid(train, &status, 0);
    }
    slurp_tail(out, text, sizeof(text));
    unlink(out);
    cr_assert_neq(r, 0, "pserv train did not finish\n%s", text);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x\n%s", status, text);
    cr_assert(strstr(text, "the others go on"), "the death was not reported:\n%s", text);
    cr_assert(strstr(text, "summary:"), "%s", text);
}

Test(cli, killed_server_ends_the_job_and_leaves_no_process, .timeout = 120)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int round = 0; round < 3; round++) kill_member_once("server");
}

Test(cli, killed_worker_ends_the_job_and_leaves_no_process, .timeout = 120)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int round = 0; round < 3; round++) kill_member_once("worker");
}
