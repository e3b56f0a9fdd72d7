#include "children.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const int caught_signals[] = {SIGINT, SIGTERM, SIGHUP};
static volatile sig_atomic_t caught;

static void on_signal(int sig)
{
    caught = sig;
}

void children_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: a wait in poll() returns at once */
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(caught_signals) / sizeof(caught_signals[0]); i++)
        sigaction(caught_signals[i], &sa, NULL);
}

int children_caught_signal(void)
{
    return caught;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void children_init(children_t *k)
{
    k->n = 0;
}

/*
 * Between fork and exec the launcher may have other threads (the coordinator's), so the child
 * calls only async-signal-safe functions. Signals stay blocked across fork so that none runs the
 * launcher's handler in the child; the child restores the defaults, then unblocks.
 */
static void child_exec(char *const argv[], int report_fd, pid_t parent, const sigset_t *mask)
{
    for (size_t i = 0; i < sizeof(caught_signals) / sizeof(caught_signals[0]); i++)
        signal(caught_signals[i], SIG_DFL);
    /* Die with the launcher, even one killed by SIGKILL; it may have died before this line. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    if (report_fd == 3)
        fcntl(3, F_SETFD, 0); /* keep it open across exec */
    else if (report_fd >= 0)
        dup2(report_fd, 3); /* the copy does not close on exec */
    sigprocmask(SIG_SETMASK, mask, NULL);
    execv(argv[0], argv);
    static const char msg[] = "pserv train: cannot run ";
    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0 || write(STDERR_FILENO, argv[0], strlen(argv[0])) < 0 ||
        write(STDERR_FILENO, "\n", 1) < 0)
        _exit(127);
    _exit(127);
}

int children_spawn(children_t *k, const char *role, unsigned index, char *const argv[], int report)
{
    int fds[2] = {-1, -1};
    if (k->n >= CHILDREN_MAX) {
        fprintf(stderr, "pserv train: more than %d processes\n", CHILDREN_MAX);
        return -1;
    }
    if (report && pipe2(fds, O_CLOEXEC) != 0) {
        fprintf(stderr, "pserv train: cannot make a pipe for %s %u: %s\n", role, index, strerror(errno));
        return -1;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) child_exec(argv, fds[1], parent, &old);
    int err = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (fds[1] >= 0) close(fds[1]);
    if (pid < 0) {
        fprintf(stderr, "pserv train: cannot start %s %u: %s\n", role, index, strerror(err));
        if (fds[0] >= 0) close(fds[0]);
        return -1;
    }
    child_t *c = &k->c[k->n++];
    *c = (child_t){.pid = pid, .running = 1, .role = role, .index = index, .fd = fds[0]};
    return 0;
}

static void close_pipe(child_t *c)
{
    close(c->fd);
    c->fd = -1;
    c->len = 0;
}

/* Reads what one pipe holds and hands on its complete lines. */
static void read_pipe(child_t *c, children_line_cb_t on_line, void *arg)
{
    ssize_t got = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (got <= 0) {
        close_pipe(c);
        return;
    }
    c->len += (size_t)got;
    c->buf[c->len] = '\0';
    char *start = c->buf, *nl;
    while ((nl = strchr(start, '\n')) != NULL) {
        *nl = '\0';
        on_line(arg, start);
        start = nl + 1;
    }
    c->len = strlen(start);
    if (c->len == sizeof(c->buf) - 1) c->len = 0; /* a line longer than any report: drop it */
    memmove(c->buf, start, c->len);
}

int children_read(children_t *k, int timeout_ms, children_line_cb_t on_line, void *arg)
{
    struct pollfd pfds[CHILDREN_MAX];
    int idx[CHILDREN_MAX], np = 0;
    for (int i = 0; i < k->n; i++)
        if (k->c[i].fd >= 0) {
            pfds[np] = (struct pollfd){k->c[i].fd, POLLIN, 0};
            idx[np++] = i;
        }
    /* With no pipe open this is the tick's sleep; EINTR (a signal) ends it early. */
    if (poll(pfds, (nfds_t)np, timeout_ms) > 0)
        for (int j = 0; j < np; j++)
            if (pfds[j].revents) read_pipe(&k->c[idx[j]], on_line, arg);
    int open = 0;
    for (int i = 0; i < k->n; i++) open += k->c[i].fd >= 0;
    return open;
}

static int child_failed(const child_t *c)
{
    return !c->running && !(WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0);
}

child_t *children_reap(children_t *k)
{
    child_t *worst = NULL;
    for (int i = 0; i < k->n; i++) {
        child_t *c = &k->c[i];
        if (!c->running) continue;
        int status = 0;
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR)) continue;
        c->running = 0;
        c->status = r == c->pid ? status : -1; /* -1: lost (ECHILD), reads as neither exited nor killed */
        if (!child_failed(c)) continue;
        if (worst == NULL || (WIFSIGNALED(c->status) && !WIFSIGNALED(worst->status))) worst = c;
    }
    return worst;
}

int children_running(const children_t *k, const char *role)
{
    int n = 0;
    for (int i = 0; i < k->n; i++) n += k->c[i].running && (role == NULL || strcmp(k->c[i].role, role) == 0);
    return n;
}

void children_describe(const child_t *c, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s %u (pid %d) ", c->role, c->index, (int)c->pid);
    if (n < 0 || (size_t)n >= cap) return;
    if (c->running)
        snprintf(buf + n, cap - (size_t)n, "is running");
    else if (WIFSIGNALED(c->status))
        snprintf(buf + n, cap - (size_t)n, "was killed by signal %d (%s)", WTERMSIG(c->status),
                 strsignal(WTERMSIG(c->status)));
    else if (WIFEXITED(c->status))
        snprintf(buf + n, cap - (size_t)n, "exited with code %d", WEXITSTATUS(c->status));
    else
        snprintf(buf + n, cap - (size_t)n, "ended in an unknown way");
}

static void signal_running(children_t *k, int sig)
{
    for (int i = 0; i < k->n; i++)
        if (k->c[i].running) kill(k->c[i].pid, sig); /* not reaped, so the pid is still its own */
}

/* Reaps until none is running or deadline_ms passes; returns how many are left. */
static int reap_until(children_t *k, double deadline_ms)
{
    for (;;) {
        children_reap(k);
        int left = children_running(k, NULL);
        if (left == 0 || now_ms() >= deadline_ms) return left;
        sleep_ms(10);
    }
}

int children_stop(children_t *k, int grace_ms)
{
    signal_running(k, SIGTERM);
    if (reap_until(k, now_ms() + grace_ms) > 0) {
        signal_running(k, SIGKILL);
        /* SIGKILL cannot be caught: only a process stuck in the kernel outlasts this. */
        reap_until(k, now_ms() + 2000);
    }
    int left = 0;
    for (int i = 0; i < k->n; i++) {
        child_t *c = &k->c[i];
        if (c->fd >= 0) close_pipe(c);
        if (!c->running) continue;
        fprintf(stderr, "pserv train: %s %u (pid %d) did not end after SIGKILL\n", c->role, c->index, (int)c->pid);
        left++;
    }
    return left;
}
