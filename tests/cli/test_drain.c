/*
 * Servers joining and drained, with the pserv program's role commands: a coordinator, 2 servers
 * and 2 workers training the MLP; in epoch 2 a third `pserv server` joins the running job, then
 * `pserv drain` moves every chunk off one of the first two, chosen at random, whose process then
 * ends on its own. The job goes on and reaches its target: both workers exit 0 with the same
 * final accuracy. Bad drains are refused with the reason, and usage errors exit 2.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_run.h"

#define RUN_S 180
#define TARGET "0.86"

static void join_and_drain(int port)
{
    char addr[32], logs[6][64], text[2][16384], args[128];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    for (int i = 0; i < 6; i++) snprintf(logs[i], sizeof(logs[i]), "/tmp/pserv_drain_%d_%d.log", (int)getpid(), i);
    char *coord[] = {"pserv", "coordinator", "--listen", addr, "--servers", "2", "--workers", "2", "--timeout", "170",
                     NULL};
    char *server[] = {"pserv", "server", "--coordinator", addr, NULL};
    char *worker[] = {"pserv", "worker", "--coordinator", addr, "--epochs", "12", "--limit", "24000",
                      "--target-accuracy", TARGET, "--device", "cpu", NULL};
    double t0 = now_s();
    pid_t c = spawn_pserv(logs[0], coord, NULL);
    sleep_s(0.3);
    pid_t s[3] = {spawn_pserv(logs[1], server, NULL), spawn_pserv(logs[2], server, NULL), -1};
    pid_t w0 = spawn_pserv(logs[3], worker, NULL), w1 = spawn_pserv(logs[4], worker, NULL);
    for (; now_s() < t0 + RUN_S; sleep_s(0.05)) { /* the first epoch is over (rank 0 says so) */
        slurp(logs[3], text[0], sizeof(text[0]));
        slurp(logs[4], text[1], sizeof(text[1]));
        if (strstr(text[0], "epoch  1/") || strstr(text[1], "epoch  1/")) break;
    }
    run_t r;
    /* Refused with the reason: a rank the job does not have. */
    snprintf(args, sizeof(args), "drain --coordinator %s --server 9 --timeout 20", addr);
    run_cmd(&r, 30, NULL, PSERV_CLI, args);
    cr_assert_eq(r.code, 1, "%s", r.err);
    cr_assert(strstr(r.err, "the job has no server 9"), "%s", r.err);

    s[2] = spawn_pserv(logs[5], server, NULL);
    sleep_s(0.3 + 0.5 * rand() / RAND_MAX);
    unsigned victim = (unsigned)(rand() % 2);
    snprintf(args, sizeof(args), "drain --coordinator %s --server %u --timeout 60", addr, victim);
    double d0 = now_s();
    /* Refused while the server that joins is not ready yet (no room for the copies): again. */
    do
        run_cmd(&r, 90, NULL, PSERV_CLI, args);
    while (r.code == 1 && strstr(r.err, "cannot hold") && now_s() < d0 + 30 && (sleep_s(0.05), 1));
    double drain_s = now_s() - d0;
    cr_assert_eq(r.code, 0, "pserv drain failed:\n%s", r.err);
    char want[64];
    snprintf(want, sizeof(want), "server %u drained", victim);
    cr_assert(strstr(r.out, want), "%s", r.out);
    /* Exactly one server process ends now, cleanly. */
    int gone = -1, code = -1;
    for (double until = now_s() + 10; gone < 0 && now_s() < until; sleep_s(0.05))
        for (int i = 0; i < 3 && gone < 0; i++) {
            int status;
            if (waitpid(s[i], &status, WNOHANG) == s[i]) {
                gone = i;
                code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
        }
    cr_assert_geq(gone, 0, "no server process ended after the drain");
    cr_assert_eq(code, 0, "the drained server's process ended with %d", code);
    cr_assert_neq(gone, 2, "the server that joined ended, not the one drained");

    int rc0 = wait_exit(w0, t0 + RUN_S), rc1 = wait_exit(w1, t0 + RUN_S), rc_c = wait_exit(c, t0 + RUN_S);
    for (int i = 0; i < 3; i++)
        if (i != gone) cr_assert_eq(wait_exit(s[i], t0 + RUN_S), 0, "server process %d", i);
    slurp(logs[3], text[0], sizeof(text[0]));
    slurp(logs[4], text[1], sizeof(text[1]));
    char joined[4096];
    slurp(logs[5], joined, sizeof(joined));
    for (int i = 0; i < 6; i++) unlink(logs[i]);
    fprintf(stderr, "server %u drained in %.2f s; job over %.1f s after its start\n", victim, drain_s, now_s() - t0);
    cr_assert_eq(rc0, 0, "worker 0:\n%s", text[0]);
    cr_assert_eq(rc1, 0, "worker 1:\n%s", text[1]);
    cr_assert_eq(rc_c, 0, "the coordinator failed");
    /* The server that joined served: its exit line counts optimizer steps. */
    const char *steps = strstr(joined, " pulls, ");
    cr_assert(steps && atol(steps + strlen(" pulls, ")) > 0, "the server that joined took no step:\n%s", joined);
    double a = final_accuracy(text[0]), b = final_accuracy(text[1]);
    cr_assert_eq(a, b, "the workers end with different accuracies: %g and %g", a, b);
    cr_assert_geq(a, atof(TARGET), "the target was not reached:\n%s", text[0]);
}

Test(drain_cli, a_server_joins_and_another_is_drained_while_the_job_trains, .timeout = 600)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int rep = 0; rep < 2; rep++) join_and_drain(free_port());
}

Test(drain_cli, usage_errors_exit_2, .timeout = 60)
{
    run_t r;
    run_cmd(&r, 30, NULL, PSERV_CLI, "drain --server 0");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--coordinator HOST:PORT and --server RANK are required"), "%s", r.err);
    run_cmd(&r, 30, NULL, PSERV_CLI, "drain --coordinator 127.0.0.1:1 --server 0 --timeout 5");
    cr_assert_eq(r.code, 1);
    cr_assert(strstr(r.err, "connection to the coordinator failed"), "%s", r.err);
}
