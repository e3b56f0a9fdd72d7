/*
 * A worker that dies and rejoins, with the pserv program's role commands: a coordinator with
 * --on-worker-failure continue, 2 servers and 2 workers; one worker is killed with SIGKILL at a
 * random moment of epoch 2 and a `pserv worker --rejoin` is started in its place. The other
 * worker takes over the whole training set while it is alone, the rejoined one takes a share back
 * from the next epoch (unless the target was reached right there), and the job reaches its target: both workers exit 0 with the same final
 * accuracy, at least the target. Repeated, each within its deadline.
 */
#include <criterion/criterion.h>
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

#define RUN_S 180
#define TARGET "0.86"

static pid_t spawn(const char *out, char *const argv[])
{
    return spawn_pserv(out, argv, NULL);
}

static void kill_and_rejoin(int port)
{
    char addr[32], logs[5][64], text[2][16384];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    for (int i = 0; i < 5; i++) snprintf(logs[i], sizeof(logs[i]), "/tmp/pserv_rejoin_%d_%d.log", (int)getpid(), i);
    char *coord[] = {"pserv", "coordinator", "--listen", addr, "--servers", "2", "--workers", "2",
                     "--on-worker-failure", "continue", "--timeout", "170", NULL};
    char *server[] = {"pserv", "server", "--coordinator", addr, NULL};
    char *worker[] = {"pserv", "worker", "--coordinator", addr, "--epochs", "12", "--limit", "24000",
                      "--target-accuracy", TARGET, "--device", "cpu", NULL, NULL};
    double t0 = now_s();
    pid_t c = spawn(logs[0], coord);
    sleep_s(0.3);
    pid_t s0 = spawn(logs[1], server), s1 = spawn(logs[1], server);
    pid_t w0 = spawn(logs[2], worker), w1 = spawn(logs[3], worker);
    pid_t victim = rand() % 2 ? w0 : w1, survivor = victim == w0 ? w1 : w0;
    const char *survivor_log = victim == w0 ? logs[3] : logs[2];
    for (; now_s() < t0 + RUN_S; sleep_s(0.05)) { /* the first epoch is over */
        slurp(logs[2], text[0], sizeof(text[0]));
        slurp(logs[3], text[1], sizeof(text[1]));
        if (strstr(text[0], "epoch  1/") || strstr(text[1], "epoch  1/")) break;
    }
    double delay = 0.8 * rand() / RAND_MAX;
    sleep_s(delay);
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
    sleep_s(0.2);
    worker[12] = "--rejoin";
    pid_t back = spawn(logs[4], worker);
    int rc_back = wait_exit(back, t0 + RUN_S), rc_survivor = wait_exit(survivor, t0 + RUN_S);
    int rc_c = wait_exit(c, t0 + RUN_S);
    wait_exit(s0, t0 + RUN_S);
    wait_exit(s1, t0 + RUN_S);
    slurp(survivor_log, text[0], sizeof(text[0]));
    slurp(logs[4], text[1], sizeof(text[1]));
    for (int i = 0; i < 5; i++) unlink(logs[i]);
    fprintf(stderr, "worker killed %.2f s into epoch 2, rejoined; job over %.1f s after its start\n", delay,
            now_s() - t0);
    cr_assert_eq(rc_back, 0, "the rejoined worker:\n%s", text[1]);
    cr_assert_eq(rc_survivor, 0, "the other worker:\n%s", text[0]);
    cr_assert_eq(rc_c, 0, "the coordinator failed");
    const char *back_at = strstr(text[1], "rejoined after epoch ");
    const char *ended = strstr(text[0], " after ");
    cr_assert(back_at && ended, "%s\n%s", text[1], text[0]);
    unsigned rejoined = (unsigned)atoi(back_at + strlen("rejoined after epoch ")), last = 0;
    for (const char *e = ended; e; e = strstr(e + 1, " after ")) last = (unsigned)atoi(e + strlen(" after "));
    cr_assert(strstr(text[0], "shared among 1 workers"), "the survivor never took the whole set:\n%s", text[0]);
    /* Unless the target was reached at the very barrier the new worker met, they shared the rest. */
    if (last > rejoined)
        cr_assert(strstr(text[0], "shared among 2 workers"), "the survivor never shared again:\n%s", text[0]);
    double a = final_accuracy(text[0]), b = final_accuracy(text[1]);
    cr_assert_eq(a, b, "the workers end with different accuracies: %g and %g", a, b);
    cr_assert_geq(a, atof(TARGET), "the target was not reached:\n%s", text[0]);
}

Test(rejoin_cli, a_killed_worker_rejoins_and_the_job_reaches_its_target, .timeout = 600)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int rep = 0; rep < 2; rep++) kill_and_rejoin(free_port());
}
