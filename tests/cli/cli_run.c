#include "cli_run.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
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



/* The parent and start time of a process; 0 if there is none with that pid. */
int proc_stat(pid_t pid, pid_t *ppid, unsigned long long *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (p == NULL) return 0;
    p += 2; /* field 3, the state */
    int parent = 0;
    if (sscanf(p, "%*c %d", &parent) != 1) return 0;
    for (int field = 3; field < 22; field++)
        if ((p = strchr(p, ' ')) == NULL) return 0;
        else p++;
    *ppid = parent;
    *start = strtoull(p, NULL, 10);
    return 1;
}

/* The child processes of parent with their role; returns how many (at most cap). */
int children_of(pid_t parent, proc_t *out, int cap)
{
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && n < cap && (e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name), ppid;
        unsigned long long start;
        if (pid <= 0 || !proc_stat(pid, &ppid, &start) || ppid != parent) continue;
        char path[64], cmd[256] = "";
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        int fd = open(path, O_RDONLY);
        ssize_t len = fd >= 0 ? read(fd, cmd, sizeof(cmd) - 1) : 0;
        if (fd >= 0) close(fd);
        cmd[len > 0 ? len : 0] = '\0';
        out[n] = (proc_t){.pid = pid, .start = start};
        if (len > 0 && (size_t)len > strlen(cmd) + 1) /* argv[1] follows argv[0]'s NUL */
            snprintf(out[n].role, sizeof(out[n].role), "%s", cmd + strlen(cmd) + 1);
        n++;
    }
    if (d) closedir(d);
    return n;
}

int still_there(const proc_t *p)
{
    pid_t ppid;
    unsigned long long start;
    return proc_stat(p->pid, &ppid, &start) && start == p->start;
}

pid_t start_train(const char *out, char *const argv[])
{
    return spawn_pserv(out, argv, "info");
}

pid_t spawn_pserv(const char *out, char *const argv[], const char *log_level)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (log_level) setenv("PSERV_LOG_LEVEL", log_level, 1);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(PSERV_CLI, argv);
        _exit(127);
    }
    return pid;
}


int free_port(void)
{
    for (int i = 0; i < 1000; i++) {
        int port = 10000 + (int)((getpid() + i * 7919) % 20000);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (fd >= 0) close(fd);
        if (ok) return port;
    }
    return 10000 + (int)(getpid() % 20000);
}

int wait_exit(pid_t pid, double until)
{
    int status;
    pid_t r;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < until) sleep_s(0.05);
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

double final_accuracy(const char *text)
{
    const char *s = strstr(text, ": test accuracy "), *last = NULL;
    for (; s; s = strstr(s + 1, ": test accuracy ")) last = s;
    return last ? atof(last + strlen(": test accuracy ")) : -1;
}
