/*
 * The local launcher's child processes (servers and workers of `pserv train`): started from
 * this program, watched without ever blocking, and stopped so that none outlives the launcher.
 *
 * Every wait here is bounded. A child dies with the launcher even if the launcher is killed
 * outright (PR_SET_PDEATHSIG). Not thread-safe: one thread launches and watches.
 */
#ifndef PSERV_CLI_CHILDREN_H
#define PSERV_CLI_CHILDREN_H

#include <stddef.h>
#include <sys/types.h>

#define CHILDREN_MAX 256

typedef struct {
    pid_t pid;        /* its process id; stays set after it was reaped */
    int running;      /* 1 until it has been reaped */
    int status;       /* its waitpid status once reaped */
    const char *role; /* "server" or "worker" */
    unsigned index;   /* among the children of its role, in launch order */
    int fd;           /* read end of its report pipe, -1 when none or closed */
    size_t len;       /* bytes of an unfinished report line in buf */
    char buf[4096];
} child_t;

typedef struct {
    child_t c[CHILDREN_MAX];
    int n;
} children_t;

typedef void (*children_line_cb_t)(void *arg, const char *line);

void children_init(children_t *k);

/*
 * Starts argv[0] (with argv) as the index-th child of role. With report != 0 the child's
 * fd 3 is the write end of a pipe whose lines children_read() delivers. 0, or -1 with a
 * message on stderr.
 */
int children_spawn(children_t *k, const char *role, unsigned index, char *const argv[], int report);

/*
 * Waits up to timeout_ms for report lines and calls on_line with each complete one; closes a
 * pipe at its end. timeout_ms 0 only reads what is there. Returns the pipes still open.
 */
int children_read(children_t *k, int timeout_ms, children_line_cb_t on_line, void *arg);

/*
 * Reaps every child that has ended, without blocking. Returns the one that failed (exited
 * non-zero or was killed), the most telling first: a killed child before one that exited with
 * an error (usually in consequence), then in launch order; NULL if none failed.
 */
child_t *children_reap(children_t *k);

/* Children of role (NULL: of any role) that have not been reaped. */
int children_running(const children_t *k, const char *role);

/* How a reaped child ended: "server 1 (pid 1234) was killed by signal 9 (Killed)". */
void children_describe(const child_t *c, char *buf, size_t cap);

/*
 * Sends SIGTERM to every running child, reaps them for up to grace_ms, then SIGKILLs what is
 * left and reaps it (bounded too); closes the report pipes. Returns how many could not be
 * reaped (0 unless a process is stuck in the kernel), each named on stderr.
 */
int children_stop(children_t *k, int grace_ms);

/*
 * SIGINT, SIGTERM and SIGHUP only record that they came, so the launcher can stop its children
 * and exit; children_caught_signal() names the last one (0: none).
 */
void children_catch_signals(void);
int children_caught_signal(void);

#endif
