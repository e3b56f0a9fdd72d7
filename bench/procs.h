/*
 * Child processes of a benchmark (pserv's coordinator and server, the raw UCX echo, ucx_perftest):
 * started pinned to a CPU set, watched with deadlines, and never left behind. Each child dies
 * with the benchmark even if it is killed outright (PR_SET_PDEATHSIG); every child still running
 * is stopped at exit and on SIGINT, SIGTERM and SIGHUP (procs_install_cleanup).
 *
 * Start children while the benchmark has one thread (before a pserv worker exists): the child
 * side between fork and exec calls only async-signal-safe functions all the same.
 */
#ifndef PS_BENCH_PROCS_H
#define PS_BENCH_PROCS_H

#include <sched.h>
#include <stddef.h>
#include <sys/types.h>

#define PROCS_MAX 16

typedef struct {
    const char *name; /* "pserv server", for messages */
    pid_t pid;
    int out_fd;  /* read end of its stdout when captured, else -1 */
    int running; /* 1 until reaped */
    int status;  /* waitpid status once reaped */
    char buf[1024];
    size_t len; /* unread bytes of a line in buf */
} proc_t;

/* Registers the atexit hook and the signal handlers that stop every running child. */
void procs_install_cleanup(void);

/*
 * Starts argv[0] (a path, or a name looked up in PATH) with argv. cpus: its affinity, or NULL
 * to inherit. capture: PROC_CAPTURE_OUT, its stdout goes to a pipe read with proc_read_line
 * (else to our stderr, so that a child's table does not mix with ours); PROC_CAPTURE_ALL, its
 * stderr too (its log lines, in order with its output). env: "NAME=VALUE" strings added to (or
 * replacing in) its environment, NULL-terminated, or NULL. 0, or -1 with a message on stderr.
 */
/* p may be a slot used before, once its child has ended: slots are registered once. */
#define PROC_CAPTURE_OUT 1
#define PROC_CAPTURE_ALL 2
int proc_start(proc_t *p, const char *name, char *const argv[], const cpu_set_t *cpus, int capture,
               const char *const *env);

/* Reads one line of its stdout into buf (without the newline) within timeout_s; 0, or -1 with a message. */
int proc_read_line(proc_t *p, char *buf, size_t cap, double timeout_s);

/* 1 while it runs (reaps it once it has ended). */
int proc_running(proc_t *p);

/* Waits up to timeout_s for it to end; its exit code, or -1 (killed, or still running) with a message. */
int proc_wait(proc_t *p, double timeout_s);

/* SIGTERM, up to grace_s to end, then SIGKILL (and a bounded reap). Nothing if it has ended. */
void proc_stop(proc_t *p, double grace_s);

/* CPU seconds (user + system) it has used so far, from /proc; -1 if it cannot be read. */
double proc_cpu_s(const proc_t *p);

/* proc_stop of every child still running. */
void procs_stop_all(double grace_s);

/* ---- pserv's own processes, from its CLI ------------------------------------------------------ */

/* dir/rel, where dir holds this program (/proc/self/exe): "../cli/pserv" from bench/. rel itself
 * when that cannot be read. */
const char *proc_next_to_me(const char *rel, char *buf, size_t cap);

/*
 * Starts `pserv coordinator --listen 127.0.0.1:0 ARGS... --timeout 3600` (args NULL-terminated,
 * at most 24; the job's own end is then ours to make), capture as in proc_start (at least
 * PROC_CAPTURE_OUT), reads the line that names its port and writes "127.0.0.1:PORT" into addr.
 * 0, or -1 with a message.
 */
int proc_pserv_coordinator(proc_t *p, const char *pserv, const char *const *args, const cpu_set_t *cpus,
                           int capture, char *addr, size_t cap, double timeout_s);
/* Starts `pserv server --coordinator ADDR --threads 1 --timeout S` (S: timeout_s, for the job to form). */
int proc_pserv_server(proc_t *p, const char *pserv, const char *addr, const cpu_set_t *cpus, double timeout_s);

/* ---- CPU sets ----------------------------------------------------------------------------------- */

/* Parses "0-3,8" into set; 0, or -1 if the text is not a CPU list. */
int cpus_parse(const char *text, cpu_set_t *set);
/* Writes set as a CPU list ("0-3,8") into buf. */
void cpus_format(const cpu_set_t *set, char *buf, size_t cap);
/* The lowest CPU in set, or -1 if it is empty. */
int cpus_first(const cpu_set_t *set);

/* Where a benchmark's worker (this process) and pserv's servers run. */
typedef struct {
    cpu_set_t all, worker, server;
    int pinned; /* 0 with one CPU: nothing is pinned */
    char worker_s[128], server_s[128]; /* as CPU lists, or "any" */
} cpus_split_t;

/*
 * The CPUs we may run on, the first half for the worker and the second half for the servers;
 * worker_list / server_list (CPU lists given with --worker-cpus / --server-cpus, or NULL)
 * replace either. 0, or -1 with a message naming the option that is not a CPU list.
 */
int cpus_split(const char *prog, const char *worker_list, const char *server_list, cpus_split_t *k);
/* cpus_split, then this process (the worker) pinned to its CPUs: 0; 2 for a list that is not one,
 * 1 when it cannot be pinned (each with a message): a benchmark's exit code. */
int cpus_pin_worker(const char *prog, const char *worker_list, const char *server_list, cpus_split_t *k);

#endif
