#include "cli_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

/* The last cap - 1 bytes of a file (where a run's verdict is). */
void slurp_tail(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f && fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > (long)cap - 1) fseek(f, size - (long)cap + 1, SEEK_SET);
        else rewind(f);
        n = fread(buf, 1, cap - 1, f);
    }
    buf[n] = '\0';
    if (f) fclose(f);
}

/* Runs a shell command line under a time limit; captures stdout, stderr and the exit code. */
void run_cmd(run_t *r, int limit_s, const char *env, const char *prog, const char *args)
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

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

