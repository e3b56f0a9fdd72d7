/* What the pserv program's tests share: running a command under a time limit, reading its output. */
#ifndef PSERV_TEST_CLI_RUN_H
#define PSERV_TEST_CLI_RUN_H

#include <stddef.h>

typedef struct {
    int code;
    char out[16384], err[16384];
} run_t;

/* A whole file (at most cap - 1 bytes), or its last cap - 1 bytes (where a run's verdict is). */
void slurp(const char *path, char *buf, size_t cap);
void slurp_tail(const char *path, char *buf, size_t cap);
/* Runs a shell command line under a time limit; captures stdout, stderr and the exit code. */
void run_cmd(run_t *r, int limit_s, const char *env, const char *prog, const char *args);
double now_s(void);
void sleep_s(double s);

#endif
