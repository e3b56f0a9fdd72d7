/*
 * `pserv train --servers 3 --replicas 1` survives a server killed with SIGKILL at a random moment
 * of its second epoch: it reaches the default target accuracy (0.88) and exits 0, having said
 * which server died and that its chunks failed over. Repeated; each run within its deadline.
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

#define RUN_S 240 /* the whole training run on a 2-core machine, with margin */

static double summary_accuracy(const char *out)
{
    const char *s = strstr(out, "summary: test accuracy ");
    return s ? atof(s + strlen("summary: test accuracy ")) : -1;
}

static void kill_a_server_in_epoch_2(void)
{
    char *argv[] = {"pserv", "train", "--servers", "3", "--replicas", "1", "--device", "cpu", NULL};
    char out[64], text[16384];
    snprintf(out, sizeof(out), "/tmp/pserv_test_failover_%d.out", (int)getpid());
    pid_t train = start_train(out, argv);
    cr_assert_gt(train, 0);
    double t0 = now_s();
    for (; now_s() < t0 + RUN_S; sleep_s(0.02)) { /* epoch 1 is over: epoch 2 has begun */
        slurp(out, text, sizeof(text));
        if (strstr(text, "epoch  1/")) break;
    }
    double delay = 1.5 * rand() / RAND_MAX;
    sleep_s(delay);
    proc_t kids[16];
    int n = children_of(train, kids, 16), pick = -1, seen = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(kids[i].role, "server") == 0 && rand() % ++seen == 0) pick = i;
    if (pick < 0) {
        kill(train, SIGKILL);
        waitpid(train, NULL, 0);
        cr_assert_fail("no server to kill %.2f s into epoch 2", delay);
    }
    kill(kids[pick].pid, SIGKILL);
    int status = 0;
    pid_t r = 0;
    while ((r = waitpid(train, &status, WNOHANG)) == 0 && now_s() < t0 + RUN_S) sleep_s(0.05);
    if (r == 0) {
        kill(train, SIGKILL);
        waitpid(train, &status, 0);
    }
    slurp_tail(out, text, sizeof(text));
    unlink(out);
    fprintf(stderr, "server pid %d killed %.2f s into epoch 2; pserv train ended %.1f s after its start\n",
            (int)kids[pick].pid, delay, now_s() - t0);
    cr_assert_neq(r, 0, "pserv train still runs after %d s:\n%s", RUN_S, text);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x:\n%s", status, text);
    cr_assert(strstr(text, "its chunks fail over to their backups"), "the failover is not reported:\n%s", text);
    cr_assert_geq(summary_accuracy(text), 0.88, "%s", text);
    for (int i = 0; i < n; i++)
        cr_assert(!still_there(&kids[i]), "%s pid %d is left\n%s", kids[i].role, (int)kids[i].pid, text);
}

Test(failover_cli, training_survives_a_server_killed_in_epoch_2, .timeout = 900)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int rep = 0; rep < 2; rep++) kill_a_server_in_epoch_2();
}
