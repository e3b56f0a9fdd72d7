/*
 * The push-pull benchmark and its raw UCX baseline run and report what they measured:
 * pserv_raw_ucx_am_echo as two processes (eager and forced-rendezvous sizes), and
 * pserv_bench_pushpull end to end (its pserv processes, the raw echo, the table it writes).
 * Short runs: these check results are there and consistent, not how fast anything is.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PSERV_BENCH_PUSHPULL
#error "PSERV_BENCH_PUSHPULL (the benchmark's path) is set by tests/CMakeLists.txt"
#endif

/* Starts argv; with out_fd, its stdout is a pipe whose read end lands there. */
static pid_t spawn(char *const argv[], int *out_fd)
{
    int fds[2] = {-1, -1};
    if (out_fd) cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (out_fd) {
            dup2(fds[1], STDOUT_FILENO);
            close(fds[0]);
            close(fds[1]);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (out_fd) {
        close(fds[1]);
        *out_fd = fds[0];
    }
    return pid;
}

static int exit_code(pid_t pid)
{
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void temp_path(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "/tmp/pserv_test_bench_%s_%d", tag, (int)getpid());
}

Test(raw_echo, every_size_comes_back, .timeout = 120)
{
    int out;
    char *sargv[] = {PSERV_RAW_ECHO, "server", "--cpu", "0", "--max-bytes", "300000", "--rndv-min", "262144",
                     "--timeout-s", "30", NULL};
    pid_t server = spawn(sargv, &out);
    FILE *f = fdopen(out, "r");
    char line[256], addr[64], tsv[128];
    unsigned port = 0;
    cr_assert_not_null(fgets(line, sizeof(line), f));
    cr_assert_eq(sscanf(line, "listening on port %u", &port), 1, "server said: %s", line);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    temp_path(tsv, sizeof(tsv), "raw");
    /* 8 B and 4 KiB go eager, 300000 B with rendezvous forced (its receive goes straight into the buffer). */
    char *cargv[] = {PSERV_RAW_ECHO, "client", "--connect", addr, "--sizes", "8,4096,300000", "--max-bytes", "300000",
                     "--reps", "20", "--target-s", "0.01", "--window", "8", "--rndv-min", "262144",
                     "--timeout-s", "30", "--tsv", tsv, NULL};
    cr_assert_eq(exit_code(spawn(cargv, NULL)), 0);
    cr_assert_eq(exit_code(server), 0, "the server ends when the client says so");
    fclose(f);

    FILE *t = fopen(tsv, "r");
    cr_assert_not_null(t);
    size_t want[] = {8, 4096, 300000}, lat = 0, bw = 0;
    while (fgets(line, sizeof(line), t)) {
        size_t bytes;
        int reps, window;
        unsigned long long msgs;
        double p50, p99, mean, secs;
        if (sscanf(line, "lat %zu %d %lf %lf %lf", &bytes, &reps, &p50, &p99, &mean) == 5) {
            cr_assert_lt(lat, 3);
            cr_expect_eq(bytes, want[lat]);
            cr_expect_eq(reps, 20);
            cr_expect(p50 > 0 && p50 <= p99 && mean > 0, "%s", line);
            lat++;
        } else if (sscanf(line, "bw %zu %d %llu %lf", &bytes, &window, &msgs, &secs) == 4) {
            cr_assert_lt(bw, 3);
            cr_expect_eq(bytes, want[bw]);
            cr_expect_eq(window, 8);
            cr_expect(msgs >= 16 && secs > 0, "%s", line);
            bw++;
        }
    }
    fclose(t);
    unlink(tsv);
    cr_expect_eq(lat, 3);
    cr_expect_eq(bw, 3);
}

Test(pushpull, pserv_beside_raw_ucx, .timeout = 300)
{
    char json[128], table[128];
    temp_path(json, sizeof(json), "json");
    temp_path(table, sizeof(table), "table");
    char *argv[] = {PSERV_BENCH_PUSHPULL, "--max-mib", "1", "--target-s", "0.02", "--perftest", "none",
                    "--json", json, "--table", table, NULL};
    int devnull = open("/dev/null", O_WRONLY);
    int saved = dup(STDOUT_FILENO);
    dup2(devnull, STDOUT_FILENO); /* its tables: the files are what is checked */
    pid_t pid = spawn(argv, NULL);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    close(devnull);
    cr_assert_eq(exit_code(pid), 0);

    /* 8 B .. 1 MiB: 8, 64, 512, 4K, 16K, 64K, 256K, 1M */
    size_t want[] = {8, 64, 512, 4096, 16384, 65536, 262144, 1 << 20}, rows = 0;
    FILE *t = fopen(table, "r");
    cr_assert_not_null(t);
    char line[1024];
    while (fgets(line, sizeof(line), t)) {
        if (line[0] == '#') continue;
        size_t bytes;
        double raw_us, ps_us, raw2, ps2, ps1, stream, time_ratio, goodput_ratio;
        cr_assert_eq(sscanf(line, "%zu %lf %lf %lf %lf %lf %lf %*s %*s %*s %*s %lf %lf", &bytes, &raw_us, &ps_us, &raw2,
                            &ps2, &ps1, &stream, &time_ratio, &goodput_ratio),
                     9, "%s", line);
        cr_assert_lt(rows, 8);
        cr_expect_eq(bytes, want[rows]);
        cr_expect(raw_us > 0 && ps_us > 0 && stream > 0, "%s", line);
        cr_expect(fabs(time_ratio - ps_us / raw_us) < 0.01 * time_ratio + 1e-3, "%s", line);
        cr_expect(fabs(time_ratio * goodput_ratio - 1) < 0.01, "%s", line);
        cr_expect(fabs(ps2 - 2 * ps1) < 1e-5 + 1e-3 * ps2, "%s", line);
        rows++;
    }
    fclose(t);
    cr_expect_eq(rows, 8);

    FILE *j = fopen(json, "r");
    cr_assert_not_null(j);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof(text) - 1, j);
    text[n] = '\0';
    fclose(j);
    cr_expect_not_null(strstr(text, "\"benchmark\": \"pushpull\""));
    cr_expect_not_null(strstr(text, "\"mode\": \"processes\""));
    cr_expect_not_null(strstr(text, "\"pserv_version\": \""));
    cr_expect_not_null(strstr(text, "\"ucx_version\": \""));
    cr_expect_not_null(strstr(text, "\"progress\": null"));
    cr_expect_not_null(strstr(text, "\"raw_forced_rndv\""), "256 KiB and 1 MiB also run with rendezvous forced");
    unlink(json);
    unlink(table);
}

Test(pushpull, bad_options_exit_2, .timeout = 30)
{
    char *bad_progress[] = {PSERV_BENCH_PUSHPULL, "--progress", "fast", NULL};
    char *bad_cpus[] = {PSERV_BENCH_PUSHPULL, "--worker-cpus", "0-", NULL};
    char *no_pserv[] = {PSERV_BENCH_PUSHPULL, "--pserv", "/nonexistent/pserv", NULL};
    int devnull = open("/dev/null", O_WRONLY), saved = dup(STDERR_FILENO);
    dup2(devnull, STDERR_FILENO);
    int a = exit_code(spawn(bad_progress, NULL)), b = exit_code(spawn(bad_cpus, NULL)),
        c = exit_code(spawn(no_pserv, NULL));
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(devnull);
    cr_expect_eq(a, 2);
    cr_expect_eq(b, 2);
    cr_expect_eq(c, 2);
}
