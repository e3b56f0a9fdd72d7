/*
 * The pserv program end to end: a short real training run, the launchers (local and mpirun),
 * and the errors a user meets (bad flags, missing data, unreachable coordinator), each with the
 * expected message and exit code, never a hang.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    int code;
    char out[16384], err[16384];
} run_t;

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

/* Runs a shell command line under a time limit; captures stdout, stderr and the exit code. */
static void run_cmd(run_t *r, int limit_s, const char *env, const char *prog, const char *args)
{
    char cmd[4096], out[64], err[64];
    snprintf(out, sizeof(out), "/tmp/pserv_test_%d.out", (int)getpid());
    snprintf(err, sizeof(err), "/tmp/pserv_test_%d.err", (int)getpid());
    snprintf(cmd, sizeof(cmd), "%s timeout -k 5 %d %s %s > %s 2> %s", env ? env : "", limit_s, prog, args, out, err);
    int status = system(cmd);
    r->code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    slurp(out, r->out, sizeof(r->out));
    slurp(err, r->err, sizeof(r->err));
    unlink(out);
    unlink(err);
}

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

Test(cli, mpirun_trains_like_the_local_launcher, .timeout = 300)
{
    run_t *local = malloc(sizeof(*local)), *mpi = malloc(sizeof(*mpi));
    run(local, 240, NULL, "train --epochs 1 --limit 6000 --seed 5");
    cr_assert_eq(local->code, 0, "%s", local->err);
    char args[512];
    snprintf(args, sizeof(args),
             "--allow-run-as-root --oversubscribe -np 4 %s train --servers 2 --coordinator 127.0.0.1:%d "
             "--epochs 1 --limit 6000 --seed 5",
             PSERV_CLI, 20000 + (int)(getpid() % 20000));
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
