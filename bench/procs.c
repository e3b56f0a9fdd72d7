#include "procs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Every child ever started, so that any exit path can stop those still running. */
static proc_t *registry[PROCS_MAX];
static volatile sig_atomic_t nregistry;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void stop_all_at_exit(void)
{
    procs_stop_all(2.0);
}

/* Async-signal-safe: SIGKILL to the children still running, then end with the signal. */
static void on_signal(int sig)
{
    for (int i = 0; i < nregistry; i++)
        if (registry[i]->running && registry[i]->pid > 0) kill(registry[i]->pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

void procs_install_cleanup(void)
{
    static int installed;
    if (installed++) return;
    atexit(stop_all_at_exit);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* The environment of a child: ours, with env's NAME=VALUE entries added or replacing. */
static char **child_environ(const char *const *env)
{
    size_t n = 0, extra = 0;
    while (environ[n]) n++;
    while (env && env[extra]) extra++;
    char **out = calloc(n + extra + 1, sizeof(char *));
    if (out == NULL) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int replaced = 0;
        for (size_t j = 0; j < extra && !replaced; j++) {
            const char *eq = strchr(env[j], '=');
            size_t len = eq ? (size_t)(eq - env[j]) + 1 : strlen(env[j]);
            replaced = strncmp(environ[i], env[j], len) == 0;
        }
        if (!replaced) out[k++] = environ[i];
    }
    for (size_t j = 0; j < extra; j++) out[k++] = (char *)env[j];
    return out;
}

int proc_start(proc_t *p, const char *name, char *const argv[], const cpu_set_t *cpus, int capture,
               const char *const *env)
{
    int known = 0;
    for (int i = 0; i < nregistry; i++) known |= registry[i] == p;
    if (known && p->running) {
        fprintf(stderr, "%s: its slot still holds %s (pid %d)\n", name, p->name, (int)p->pid);
        return -1;
    }
    memset(p, 0, sizeof(*p));
    p->name = name;
    p->out_fd = -1;
    if (!known && nregistry == PROCS_MAX) {
        fprintf(stderr, "more than %d child processes\n", PROCS_MAX);
        return -1;
    }
    int fds[2] = {-1, -1};
    if (capture && pipe2(fds, O_CLOEXEC) != 0) {
        fprintf(stderr, "cannot make a pipe for %s: %s\n", name, strerror(errno));
        return -1;
    }
    char **envp = child_environ(env);
    if (envp == NULL) {
        if (capture) close(fds[0]), close(fds[1]);
        return -1;
    }
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* Die with the benchmark, even one killed by SIGKILL; it may have died before this line. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        if (cpus && sched_setaffinity(0, sizeof(*cpus), cpus) != 0) _exit(126);
        dup2(capture ? fds[1] : STDERR_FILENO, STDOUT_FILENO); /* dup2 clears FD_CLOEXEC */
        if (capture == PROC_CAPTURE_ALL) dup2(fds[1], STDERR_FILENO);
        if (strchr(argv[0], '/'))
            execve(argv[0], argv, envp);
        else
            execvpe(argv[0], argv, envp);
        static const char msg[] = "cannot run ";
        if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0 || write(STDERR_FILENO, argv[0], strlen(argv[0])) < 0 ||
            write(STDERR_FILENO, "\n", 1) < 0)
            _exit(127);
        _exit(127);
    }
    int err = errno;
    free(envp);
    if (capture) close(fds[1]);
    if (pid < 0) {
        fprintf(stderr, "cannot start %s: %s\n", name, strerror(err));
        if (capture) close(fds[0]);
        return -1;
    }
    p->pid = pid;
    p->running = 1;
    p->out_fd = capture ? fds[0] : -1;
    if (!known) {
        registry[nregistry] = p;
        nregistry = nregistry + 1;
    }
    return 0;
}

int proc_read_line(proc_t *p, char *buf, size_t cap, double timeout_s)
{
    double end = now_s() + timeout_s;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl) {
            size_t n = (size_t)(nl - p->buf);
            snprintf(buf, cap, "%.*s", (int)n, p->buf);
            memmove(p->buf, nl + 1, p->len - n - 1);
            p->len -= n + 1;
            return 0;
        }
        if (p->out_fd < 0 || p->len == sizeof(p->buf)) break;
        double left = end - now_s();
        if (left <= 0) {
            fprintf(stderr, "%s (pid %d) said nothing within %.0f s\n", p->name, (int)p->pid, timeout_s);
            return -1;
        }
        struct pollfd pfd = {p->out_fd, POLLIN, 0};
        int r = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) break;
        if (r <= 0) continue;
        ssize_t got = read(p->out_fd, p->buf + p->len, sizeof(p->buf) - p->len);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            fprintf(stderr, "%s (pid %d) ended its output before the line expected\n", p->name, (int)p->pid);
            return -1;
        }
        p->len += (size_t)got;
    }
    fprintf(stderr, "%s (pid %d): cannot read its output\n", p->name, (int)p->pid);
    return -1;
}

/* Reaps p if it has ended; 1 if it has. */
static int reap(proc_t *p)
{
    if (!p->running) return 1;
    int status;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return 0;
    p->running = 0;
    p->status = r == p->pid ? status : -1;
    if (p->out_fd >= 0) close(p->out_fd);
    p->out_fd = -1;
    return 1;
}

int proc_running(proc_t *p)
{
    return !reap(p);
}

int proc_wait(proc_t *p, double timeout_s)
{
    double end = now_s() + timeout_s;
    while (!reap(p)) {
        if (now_s() > end) {
            fprintf(stderr, "%s (pid %d) did not end within %.0f s\n", p->name, (int)p->pid, timeout_s);
            return -1;
        }
        sleep_ms(5);
    }
    if (WIFEXITED(p->status)) return WEXITSTATUS(p->status);
    if (WIFSIGNALED(p->status))
        fprintf(stderr, "%s (pid %d) was killed by signal %d\n", p->name, (int)p->pid, WTERMSIG(p->status));
    return -1;
}

void proc_stop(proc_t *p, double grace_s)
{
    if (p->pid <= 0 || reap(p)) return;
    kill(p->pid, SIGTERM);
    double end = now_s() + grace_s;
    while (!reap(p) && now_s() < end) sleep_ms(5);
    if (!p->running) return;
    kill(p->pid, SIGKILL);
    end = now_s() + 5.0; /* SIGKILL ends anything not stuck in the kernel */
    while (!reap(p) && now_s() < end) sleep_ms(5);
    if (p->running) fprintf(stderr, "%s (pid %d) could not be reaped\n", p->name, (int)p->pid);
}

void procs_stop_all(double grace_s)
{
    for (int i = 0; i < nregistry; i++) proc_stop(registry[i], grace_s);
}

/* ---- pserv's own processes, from its CLI ------------------------------------------------------ */

const char *proc_next_to_me(const char *rel, char *buf, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return rel;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    size_t dir = slash ? (size_t)(slash - self) : 0, len = strlen(rel);
    if (dir == 0 || dir + 1 + len >= cap) return rel;
    memcpy(buf, self, dir);
    buf[dir] = '/';
    memcpy(buf + dir + 1, rel, len + 1);
    return buf;
}

int proc_pserv_coordinator(proc_t *p, const char *pserv, const char *const *args, const cpu_set_t *cpus,
                           int capture, char *addr, size_t cap, double timeout_s)
{
    const char *argv[32] = {pserv, "coordinator", "--listen", "127.0.0.1:0"};
    size_t n = 4;
    for (; args && *args && n < 28; args++) argv[n++] = *args;
    argv[n++] = "--timeout";
    argv[n++] = "3600";
    argv[n] = NULL;
    char line[512];
    unsigned port;
    if (proc_start(p, "pserv coordinator", (char *const *)argv, cpus, capture ? capture : PROC_CAPTURE_OUT, NULL) != 0 ||
        proc_read_line(p, line, sizeof(line), timeout_s) != 0)
        return -1;
    const char *at = strstr(line, "(port ");
    if (at == NULL || sscanf(at, "(port %u)", &port) != 1) {
        fprintf(stderr, "the coordinator said '%s', not its port\n", line);
        return -1;
    }
    snprintf(addr, cap, "127.0.0.1:%u", port);
    return 0;
}

int proc_pserv_server(proc_t *p, const char *pserv, const char *addr, const cpu_set_t *cpus, double timeout_s)
{
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%.0f", timeout_s);
    const char *argv[] = {pserv, "server", "--coordinator", addr, "--threads", "1", "--timeout", timeout, NULL};
    return proc_start(p, "pserv server", (char *const *)argv, cpus, 0, NULL);
}

/* ---- CPU sets ------------------------------------------------------------------------------------ */

int cpus_parse(const char *text, cpu_set_t *set)
{
    CPU_ZERO(set);
    const char *s = text;
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b;
        if (end == s || a < 0 || a >= CPU_SETSIZE) return -1;
        b = a;
        if (*end == '-') {
            s = end + 1;
            b = strtol(s, &end, 10);
            if (end == s || b < a || b >= CPU_SETSIZE) return -1;
        }
        for (long c = a; c <= b; c++) CPU_SET((int)c, set);
        if (*end == ',') end++;
        else if (*end != '\0') return -1;
        s = end;
    }
    return CPU_COUNT(set) > 0 ? 0 : -1;
}

void cpus_format(const cpu_set_t *set, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE && n < cap; c++) {
        if (!CPU_ISSET(c, set)) continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set)) e++;
        int w = e > c ? snprintf(buf + n, cap - n, "%s%d-%d", n ? "," : "", c, e)
                      : snprintf(buf + n, cap - n, "%s%d", n ? "," : "", c);
        if (w < 0) break;
        n += (size_t)w;
        c = e;
    }
}

int cpus_first(const cpu_set_t *set)
{
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, set)) return c;
    return -1;
}

int cpus_split(const char *prog, const char *worker_list, const char *server_list, cpus_split_t *k)
{
    if (sched_getaffinity(0, sizeof(k->all), &k->all) != 0) CPU_ZERO(&k->all);
    int n = CPU_COUNT(&k->all), seen = 0;
    CPU_ZERO(&k->worker);
    CPU_ZERO(&k->server);
    for (int cpu = 0; cpu < CPU_SETSIZE && n >= 2; cpu++)
        if (CPU_ISSET(cpu, &k->all)) CPU_SET(cpu, seen++ < n / 2 ? &k->worker : &k->server);
    if (worker_list && cpus_parse(worker_list, &k->worker) != 0) {
        fprintf(stderr, "%s: --worker-cpus '%s' is not a CPU list (e.g. 0-3,8)\n", prog, worker_list);
        return -1;
    }
    if (server_list && cpus_parse(server_list, &k->server) != 0) {
        fprintf(stderr, "%s: --server-cpus '%s' is not a CPU list (e.g. 4-7)\n", prog, server_list);
        return -1;
    }
    k->pinned = CPU_COUNT(&k->worker) > 0 && CPU_COUNT(&k->server) > 0;
    if (k->pinned) {
        cpus_format(&k->worker, k->worker_s, sizeof(k->worker_s));
        cpus_format(&k->server, k->server_s, sizeof(k->server_s));
    } else {
        snprintf(k->worker_s, sizeof(k->worker_s), "any");
        snprintf(k->server_s, sizeof(k->server_s), "any");
    }
    return 0;
}

double proc_cpu_s(const proc_t *p)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)p->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *s = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long utime, stime;
    /* after ")": state (3), then fields 4..13, utime (14), stime (15) */
    if (s == NULL || sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

int cpus_pin_worker(const char *prog, const char *worker_list, const char *server_list, cpus_split_t *k)
{
    if (cpus_split(prog, worker_list, server_list, k) != 0) return 2;
    if (k->pinned && sched_setaffinity(0, sizeof(k->worker), &k->worker) != 0) {
        fprintf(stderr, "%s: cannot pin the worker to CPUs %s\n", prog, k->worker_s);
        return 1;
    }
    return 0;
}
