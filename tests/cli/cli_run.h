/* What the pserv program's tests share: running a command under a time limit, reading its output. */
#ifndef PSERV_TEST_CLI_RUN_H
#define PSERV_TEST_CLI_RUN_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    int code;
    char out[16384], err[16384];
} run_t;

/* A whole file (at most cap - 1 bytes), or its last cap - 1 bytes (where a run's verdict is). */
void slurp(const char *path, char *buf, size_t cap);
void slurp_tail(const char *path, char *buf, size_t cap);
/* Runs a shell command line under a time limit; captures stdout, stderr and the exit code. */
void run_cmd(run_t *r, int limit_s, const char *env, const char *prog, const char *args);
/* A TCP port of 127.0.0.1 free right now (a coordinator's fixed address). */
int free_port(void);
double now_s(void);
void sleep_s(double s);

/* A child process of `pserv train`, told apart from a later process with its pid. */
typedef struct {
    pid_t pid;
    unsigned long long start; /* field 22 of /proc/PID/stat: tells a pid's reuse apart */
    char role[16];            /* argv[1]: "server" or "worker" */
} proc_t;
/* The parent and start time of a process; 0 if there is none with that pid. */
int proc_stat(pid_t pid, pid_t *ppid, unsigned long long *start);
/* The child processes of parent with their role; returns how many (at most cap). */
int children_of(pid_t parent, proc_t *out, int cap);
/* 1 while that process (not a later one with its pid) is there. */
int still_there(const proc_t *p);
/* Starts `pserv train ARGS...` with stdout and stderr into out; it dies with the caller. Its log
 * level is info, so the coordinator says when the job formed. */
pid_t start_train(const char *out, char *const argv[]);
/* Starts `pserv ARGS...` (argv[0] is its name) with stdout and stderr into out; it dies with the
 * caller. log_level: PSERV_LOG_LEVEL for it, or NULL. */
pid_t spawn_pserv(const char *out, char *const argv[], const char *log_level);
/* The exit code of a child gone by `until` (now_s() time), or -1 (then it is killed and reaped). */
int wait_exit(pid_t pid, double until);
/* The last "...: test accuracy X" a worker printed, or -1. */
double final_accuracy(const char *text);

#endif
