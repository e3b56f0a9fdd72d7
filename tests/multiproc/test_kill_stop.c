/*
 * Members that die, hang or are cut off in a real multi-process job (core/cluster's failure
 * detection): a server or a worker is SIGKILLed or SIGSTOPped at a random moment of training, in
 * sync and async mode and under both worker-failure policies, and a server is cut off by taking
 * its link down in a network namespace of the test's own. Every surviving process must end within
 * a bound, with the status and the reason the API promises; a job that continues without a dead
 * worker must finish its rounds with the right parameters. Workers that see a failure leave as
 * pserv train does, with pserv_worker_abort; one test has them leave with pserv_worker_destroy,
 * and the job must fail all the same. Each scenario is repeated and prints the measured times
 * (min / median / max): when the coordinator's wait returned and when the last surviving process
 * had exited, counted from the blow.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "../tsan/fork.h"

/* Small chunks so that every tensor spans the servers; SGD with lr 1 and gradients of 1 make
 * every applied push subtract exactly 1 from every element. */
#define CHUNK_BYTES 4096
#define NTENSORS 3
static const size_t tensor_count[NTENSORS] = {3000, 2500, 1500};
#define TOTAL_ELEMS 7000
#define TRAIN_LIMIT_MS 30000 /* a worker that sees no failure stops on its own after this */
#define REQ_WAIT_MS 60000    /* a worker's waits; the parent's deadlines are what the test checks */
#define MAX_REPS 10

/* ---- what the processes report ------------------------------------------------------------- */

enum { MSG_READY = 1, MSG_MID, MSG_END };

typedef struct {
    int32_t kind;
    int32_t rank;
    int32_t status;  /* END: the first failing status, or PSERV_OK */
    int32_t rounds;  /* END: rounds completed */
    int64_t t_ms;    /* END: harness_now_ms() when training (or the server's wait) ended */
    int64_t stall_ms; /* END (worker): the longest round */
    char why[480];   /* END: the handle's last error */
} msg_t;

typedef struct {
    int rounds;      /* 0: train until the job fails (at most TRAIN_LIMIT_MS) */
    int mid_round;   /* > 0: report MSG_MID after this round */
    int pace_us;     /* pause between rounds */
    int send_params; /* after END, the final pulled parameters (TOTAL_ELEMS floats) */
    int plain_leave; /* after a failure, pserv_worker_destroy rather than pserv_worker_abort */
} worker_arg_t;

typedef struct {
    const char *netns;       /* join this network namespace first (NULL: stay) */
    const char *net_devices; /* UCX_NET_DEVICES there (NULL: as inherited) */
    const char *listen;      /* NULL: the default */
} server_arg_t;

static void msg_send(int fd, int kind, int rank)
{
    msg_t m;
    memset(&m, 0, sizeof(m));
    m.kind = kind;
    m.rank = rank;
    harness_write(fd, &m, sizeof(m));
}

/* A worker: registers the tensors, then push-pulls all of them every round, as fast as it can. */
static int worker_main(void *argp, const char *coord, int fd)
{
    const worker_arg_t *a = argp;
    static float grad[TOTAL_ELEMS], out[TOTAL_ELEMS];
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_job_info_t info = PSERV_JOB_INFO_INIT;
    pserv_worker_h w;
    msg_t m;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    wp.coordinator = coord;
    wp.timeout_ms = 20000;
    if (pserv_worker_create(&wp, &w) != PSERV_OK) {
        fprintf(stderr, "worker: %s\n", pserv_last_error());
        return 60;
    }
    pserv_worker_job(w, &info);
    for (size_t i = 0; i < TOTAL_ELEMS; i++) grad[i] = 1.0f;
    for (int t = 0; t < NTENSORS; t++) {
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = (uint64_t)t + 1;
        tp.count = tensor_count[t];
        tp.init_value = 0.0f;
        tp.optim.type = PSERV_OPTIM_SGD;
        tp.optim.lr = 1.0f;
        if (pserv_worker_register(w, &tp) != PSERV_OK) {
            fprintf(stderr, "worker %u: %s\n", info.rank, pserv_worker_last_error(w));
            return 61;
        }
    }
    pserv_status_t st = PSERV_OK;
    int done = 0;
    int64_t start = harness_now_ms(), stall = 0;
    while (a->rounds == 0 || done < a->rounds) {
        pserv_request_t req[NTENSORS];
        int issued[NTENSORS] = {0};
        int64_t t0 = harness_now_ms();
        size_t off = 0;
        for (int t = 0; t < NTENSORS; off += tensor_count[t], t++) {
            pserv_status_t s = pserv_worker_push_pull(w, (uint64_t)t + 1, grad + off, out + off, &req[t]);
            if (s == PSERV_OK) issued[t] = 1;
            else if (st == PSERV_OK) st = s;
        }
        /* Every request of the round is waited on before the error is read, as a program would. */
        for (int t = 0; t < NTENSORS; t++) {
            if (!issued[t]) continue;
            pserv_status_t s = pserv_worker_wait(w, req[t], REQ_WAIT_MS);
            if (s != PSERV_OK && st == PSERV_OK) st = s;
        }
        if (st != PSERV_OK) break;
        done++;
        if (harness_now_ms() - t0 > stall) stall = harness_now_ms() - t0;
        if (done == 1) msg_send(fd, MSG_READY, (int)info.rank);
        if (done == a->mid_round) msg_send(fd, MSG_MID, (int)info.rank);
        if (a->rounds == 0 && harness_now_ms() - start > TRAIN_LIMIT_MS) break;
        if (a->pace_us) usleep((useconds_t)a->pace_us);
    }
    memset(&m, 0, sizeof(m));
    m.kind = MSG_END;
    m.rank = (int32_t)info.rank;
    m.status = st;
    m.rounds = done;
    m.t_ms = harness_now_ms();
    m.stall_ms = stall;
    snprintf(m.why, sizeof(m.why), "%s", pserv_worker_last_error(w));
    harness_write(fd, &m, sizeof(m));
    if (a->send_params) harness_write(fd, out, sizeof(out));
    /* The documented error path (and pserv train's) reports the failure; a plain leave does not. */
    if (st != PSERV_OK && !a->plain_leave) pserv_worker_abort(w, m.why[0] ? m.why : pserv_strerror(st));
    else pserv_worker_destroy(w);
    return 0;
}

/* A server shard, optionally inside a network namespace; reports how its wait ended. */
static int server_main(void *argp, const char *coord, int fd)
{
    const server_arg_t *a = argp;
    pserv_server_params_t p = PSERV_SERVER_PARAMS_INIT;
    pserv_server_h s;
    msg_t m;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (a->netns) {
        char path[128];
        snprintf(path, sizeof(path), "/var/run/netns/%s", a->netns);
        int nsfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) {
            fprintf(stderr, "server: cannot enter %s: %s\n", path, strerror(errno));
            return 71;
        }
        close(nsfd);
        /* As `ip netns exec` does: a /sys of this namespace, where UCX finds its network devices. */
        if (unshare(CLONE_NEWNS) != 0 || mount("", "/", NULL, MS_SLAVE | MS_REC, NULL) != 0 ||
            umount2("/sys", MNT_DETACH) != 0 || mount(a->netns, "/sys", "sysfs", 0, NULL) != 0) {
            fprintf(stderr, "server: cannot mount /sys for %s: %s\n", a->netns, strerror(errno));
            return 72;
        }
    }
    if (a->net_devices) setenv("UCX_NET_DEVICES", a->net_devices, 1);
    p.coordinator = coord;
    p.listen = a->listen;
    p.timeout_ms = 20000;
    if (pserv_server_create(&p, &s) != PSERV_OK) {
        fprintf(stderr, "server: %s\n", pserv_last_error());
        return 70;
    }
    unsigned rank = 0;
    pserv_server_rank(s, &rank);
    msg_send(fd, MSG_READY, (int)rank); /* read after the blow: who the victim was */
    memset(&m, 0, sizeof(m));
    m.kind = MSG_END;
    m.rank = (int32_t)rank;
    m.status = pserv_server_wait(s, REQ_WAIT_MS);
    m.t_ms = harness_now_ms();
    snprintf(m.why, sizeof(m.why), "%s", pserv_server_last_error(s));
    harness_write(fd, &m, sizeof(m));
    pserv_server_destroy(s);
    return 0;
}

/* ---- scenarios ------------------------------------------------------------------------------ */

typedef enum { BLOW_KILL, BLOW_STOP, BLOW_PARTITION } blow_t;

typedef struct {
    const char *name;
    pserv_mode_t mode;
    unsigned servers, workers;
    int heartbeat_ms, failure_timeout_ms; /* 0: the library's defaults */
    pserv_failure_policy_t policy;
    char victim; /* 's' a server, 'w' a worker */
    blow_t blow;
    int bound_ms; /* every surviving process has exited this long after the blow */
    int rounds;   /* > 0 (CONTINUE): the rounds every worker runs */
    int plain_leave; /* workers leave with pserv_worker_destroy after a failure */
} scenario_t;

#define DEFAULT_HEARTBEAT_MS 500
#define DEFAULT_FAILURE_TIMEOUT_MS 3000

static int timeout_of(const scenario_t *sc)
{
    return sc->failure_timeout_ms ? sc->failure_timeout_ms : DEFAULT_FAILURE_TIMEOUT_MS;
}

static int heartbeat_of(const scenario_t *sc)
{
    return sc->heartbeat_ms ? sc->heartbeat_ms : DEFAULT_HEARTBEAT_MS;
}

/* The test's own namespace and veth pair (partition scenario). */
typedef struct {
    char ns[32], va[16], vb[16]; /* va in the root namespace, vb inside */
    int x;                       /* 10.213.x.0/24 */
    int up;
} net_t;

typedef struct {
    pid_t pid;
    int fd;
    char role; /* 'c', 's', 'w' */
    int victim;
    int rank; /* -1: unknown */
    int exited;
    int64_t exit_ms;
    int wstatus;
    int have_end;
    msg_t end;
} proc_t;

typedef struct {
    harness_t h;
    proc_t p[HARNESS_MAX_PROCS];
    int n;
    harness_coord_result_t coord;
    int have_coord;
    float params[HARNESS_MAX_PROCS][TOTAL_ELEMS];
    int have_params[HARNESS_MAX_PROCS];
} run_t;

/* What one repetition measured (ms after the blow; -1 when it did not happen). */
typedef struct {
    int64_t delay;       /* from the workers' first round to the blow */
    int64_t detect;      /* the coordinator's wait returned */
    int64_t end;         /* the last surviving process exited */
    int64_t victim_gave_up; /* the partitioned server's wait returned */
    int64_t victim_end;  /* the partitioned server exited */
    int64_t stall;       /* CONTINUE: the survivors' longest round */
    int by_worker;       /* the coordinator's reason was a worker's report, not its own detection */
    char note[256];      /* the partitioned server's status and error; CONTINUE: the parameters */
} rep_t;

static void errf(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(err);
    va_list ap;
    if (len + 1 >= cap) return;
    va_start(ap, fmt);
    vsnprintf(err + len, cap - len, fmt, ap);
    va_end(ap);
}

static const char *role_name(char role)
{
    return role == 'c' ? "coordinator" : role == 's' ? "server" : "worker";
}

static void forget_pid(harness_t *h, pid_t pid)
{
    for (int i = 0; i < h->nprocs; i++)
        if (h->pids[i] == pid) h->pids[i] = 0;
}

/* Reaps until every process in `want` has exited or the deadline passed (others are reaped too
 * when they exit, so their times are exact); returns how many of `want` are still running. */
static int reap_until(run_t *r, const int *want, int64_t deadline)
{
    for (;;) {
        int left = 0;
        for (int i = 0; i < r->n; i++) {
            proc_t *p = &r->p[i];
            if (p->exited) continue;
            int status;
            if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
                p->exited = 1;
                p->exit_ms = harness_now_ms();
                p->wstatus = status;
                forget_pid(&r->h, p->pid);
            } else if (want[i]) {
                left++;
            }
        }
        if (left == 0 || harness_now_ms() >= deadline) return left;
        usleep(2000); /* test harness only: polling children's exits */
    }
}

/* Reads messages until END (skipping READY / MID); 0 on success. */
static int read_end(int fd, msg_t *m, int timeout_ms)
{
    int64_t end = harness_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - harness_now_ms();
        if (left < 0) left = 0;
        if (harness_read(fd, m, sizeof(*m), (int)left) != 0) return -1;
        if (m->kind == MSG_END) return 0;
    }
}

static int read_kind(int fd, int kind, int timeout_ms, int *rank)
{
    msg_t m;
    int64_t end = harness_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - harness_now_ms();
        if (left < 0) left = 0;
        if (harness_read(fd, &m, sizeof(m), (int)left) != 0) return -1;
        if (m.kind == kind) {
            if (rank) *rank = m.rank;
            return 0;
        }
    }
}

static void start_proc(run_t *r, char role, int (*fn)(void *, const char *, int), void *arg)
{
    proc_t *p = &r->p[r->n++];
    memset(p, 0, sizeof(*p));
    p->role = role;
    p->rank = -1;
    p->pid = harness_start(&r->h, fn, arg, &p->fd);
}

static int net_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int net_cmd(const char *fmt, ...)
{
    char cmd[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

/* Takes the link down on both sides; the root side's own address stays local, so the root
 * namespace's processes still reach the coordinator on it. */
static void net_cut(const net_t *net)
{
    net_cmd("ip -n %s link set %s down", net->ns, net->vb);
    net_cmd("ip link set %s down", net->va);
}

/*
 * One repetition: start the job, let it train, strike the victim at a random moment, then check
 * every process. Returns with every process gone; failures are appended to err.
 */
static void run_once(const scenario_t *sc, const net_t *net, unsigned *seed, rep_t *rep, char *err, size_t cap)
{
    static run_t run;
    run_t *r = &run;
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    char coord_listen[64], ns_listen[64];
    worker_arg_t wa = {sc->rounds, sc->rounds ? sc->rounds / 5 : 0, sc->rounds ? 2000 : 0, sc->rounds > 0,
                       sc->plain_leave};
    server_arg_t sa_root = {NULL, NULL, NULL}, sa_ns = {NULL, NULL, NULL};
    int want[HARNESS_MAX_PROCS];
    /* Without backups a dead server always fails the job; a dead worker only under PSERV_ON_FAILURE_FAIL. */
    int job_fails = sc->policy == PSERV_ON_FAILURE_FAIL || sc->victim == 's';

    memset(r, 0, sizeof(*r));
    memset(rep, 0, sizeof(*rep));
    rep->detect = rep->end = rep->victim_gave_up = rep->victim_end = rep->stall = -1;
    cp.num_servers = sc->servers;
    cp.num_workers = sc->workers;
    cp.mode = sc->mode;
    cp.chunk_bytes = CHUNK_BYTES;
    cp.heartbeat_ms = sc->heartbeat_ms;
    cp.failure_timeout_ms = sc->failure_timeout_ms;
    cp.on_worker_failure = sc->policy;
    cp.replicas = PSERV_REPLICAS_NONE; /* a dead server ends these jobs; test_failover.c has jobs that survive it */
    if (net) {
        snprintf(coord_listen, sizeof(coord_listen), "10.213.%d.1:0", net->x);
        snprintf(ns_listen, sizeof(ns_listen), "10.213.%d.2:0", net->x);
        cp.listen = coord_listen;
        sa_root.listen = coord_listen; /* the root namespace speaks over the root side's address */
        sa_ns.netns = net->ns;
        sa_ns.net_devices = net->vb;
        sa_ns.listen = ns_listen;
    }

    /* p[0] the coordinator, then the servers (p[1] the namespaced one), then the workers. */
    proc_t *c = &r->p[r->n++];
    c->role = 'c';
    c->pid = harness_start_coordinator_params(&r->h, &cp, REQ_WAIT_MS, &c->fd);
    if (c->pid < 0) {
        errf(err, cap, "the coordinator did not start; ");
        c->exited = 1;
        goto out;
    }
    for (unsigned i = 0; i < sc->servers; i++)
        start_proc(r, 's', server_main, net && i == 0 ? &sa_ns : &sa_root);
    for (unsigned i = 0; i < sc->workers; i++) start_proc(r, 'w', worker_main, &wa);
    int first_worker = 1 + (int)sc->servers;
    for (int i = first_worker; i < r->n; i++)
        if (read_kind(r->p[i].fd, MSG_READY, 30000, &r->p[i].rank) != 0) {
            errf(err, cap, "worker process %d never finished its first round; ", (int)r->p[i].pid);
            goto out;
        }

    /* The victim, and a random moment; the workers push continuously, so most blows land mid-round. */
    proc_t *v;
    if (net) v = &r->p[1];
    else if (sc->victim == 's') v = &r->p[1 + (int)(rand_r(seed) % sc->servers)];
    else v = &r->p[first_worker + (int)(rand_r(seed) % sc->workers)];
    v->victim = 1;
    if (sc->rounds) {
        /* CONTINUE: strike after the victim's round rounds/5, well before the end. */
        if (read_kind(v->fd, MSG_MID, 30000, NULL) != 0) {
            errf(err, cap, "the victim never reached round %d; ", wa.mid_round);
            goto out;
        }
        rep->delay = 10 + rand_r(seed) % 90;
    } else {
        rep->delay = 100 + rand_r(seed) % 900;
    }
    usleep((useconds_t)rep->delay * 1000);
    int64_t t0 = harness_now_ms();
    if (sc->blow == BLOW_KILL) kill(v->pid, SIGKILL);
    else if (sc->blow == BLOW_STOP) kill(v->pid, SIGSTOP);
    else net_cut(net);

    /* Every survivor must be gone by the bound; the partitioned server by its own (later) one. */
    for (int i = 0; i < r->n; i++) want[i] = !r->p[i].victim;
    int left = reap_until(r, want, t0 + sc->bound_ms);
    int victim_bound = 2 * timeout_of(sc) + 1000;
    if (net) {
        for (int i = 0; i < r->n; i++) want[i] = r->p[i].victim;
        reap_until(r, want, t0 + (victim_bound > sc->bound_ms ? victim_bound : sc->bound_ms));
    }
    if (left > 0) {
        /* For the report: does it end at all, and when? */
        for (int i = 0; i < r->n; i++) want[i] = !r->p[i].victim;
        reap_until(r, want, t0 + sc->bound_ms + 5000);
        for (int i = 0; i < r->n; i++) {
            proc_t *p = &r->p[i];
            if (p->victim || (p->exited && p->exit_ms <= t0 + sc->bound_ms)) continue;
            if (p->exited)
                errf(err, cap, "%s process %d exited only %lld ms after the blow (bound %d ms); ", role_name(p->role),
                     (int)p->pid, (long long)(p->exit_ms - t0), sc->bound_ms);
            else
                errf(err, cap, "%s process %d still running %d ms after the blow (bound %d ms); ", role_name(p->role),
                     (int)p->pid, sc->bound_ms + 5000, sc->bound_ms);
        }
    }

    /* The victim by name, "server 1 at" as the library names members (a server said its rank first). */
    char victim_name[32];
    if (v->role == 's') read_kind(v->fd, MSG_READY, 50, &v->rank);
    snprintf(victim_name, sizeof(victim_name), "%s %d at", role_name(v->role), v->rank);
    if (v->rank < 0) errf(err, cap, "the victim's rank is unknown; ");

    /* Collect the reports (written before each process exits). */
    if (harness_read(c->fd, &r->coord, sizeof(r->coord), c->exited ? 1000 : 50) == 0) r->have_coord = 1;
    for (int i = 1; i < r->n; i++) {
        proc_t *p = &r->p[i];
        if (p->victim && sc->blow != BLOW_PARTITION) continue;
        p->have_end = read_end(p->fd, &p->end, p->exited ? 1000 : 50) == 0;
        if (p->have_end && wa.send_params && p->role == 'w')
            r->have_params[i] = harness_read(p->fd, r->params[i], sizeof(r->params[i]), 1000) == 0;
    }

    /* Times. */
    if (r->have_coord) rep->detect = r->coord.end_ms - t0;
    for (int i = 0; i < r->n; i++) {
        proc_t *p = &r->p[i];
        if (!p->exited) continue;
        if (p->victim) {
            if (net) rep->victim_end = p->exit_ms - t0;
            continue;
        }
        if (p->exit_ms - t0 > rep->end) rep->end = p->exit_ms - t0;
        if (p->role == 'w' && p->have_end && p->end.stall_ms > rep->stall) rep->stall = p->end.stall_ms;
        /* Our process functions return 0 whatever the job did (the coordinator: 11 on a failed job). */
        int code = WIFEXITED(p->wstatus) ? WEXITSTATUS(p->wstatus) : -WTERMSIG(p->wstatus);
        int want_code = p->role == 'c' && job_fails ? 11 : 0;
        if (code != want_code)
            errf(err, cap, "%s process %d ended with %s %d; ", role_name(p->role), (int)p->pid,
                 code < 0 ? "signal" : "code", code < 0 ? -code : code);
    }

    /* The coordinator's verdict. */
    const char *victim_word = sc->victim == 's' ? "server" : "worker";
    if (!r->have_coord) {
        errf(err, cap, "no result from the coordinator; ");
    } else if (job_fails) {
        if (r->coord.status != PSERV_ERR_JOB_FAILED)
            errf(err, cap, "coordinator: %s, want JOB_FAILED (reason '%s'); ", pserv_strerror(r->coord.status),
                 r->coord.why);
        /* Its own detection names the victim. With a server killed, a worker that saw its request
         * fail may report first (pserv_worker_abort): then the reason is that worker's, naming the server. */
        if (strncmp(r->coord.why, victim_word, strlen(victim_word)) == 0) {
            if (strncmp(r->coord.why, victim_name, strlen(victim_name)) != 0)
                errf(err, cap, "coordinator's reason '%s' does not name the dead %s; ", r->coord.why, victim_name);
            if (strstr(r->coord.why, "died") == NULL)
                errf(err, cap, "coordinator's reason '%s' does not say the %s died; ", r->coord.why, victim_word);
            if (sc->blow == BLOW_KILL && strstr(r->coord.why, "connection failed") == NULL)
                errf(err, cap, "coordinator's reason '%s': a killed process should be seen by its connection; ",
                     r->coord.why);
            if (sc->blow != BLOW_KILL) {
                const char *nh = strstr(r->coord.why, "no heartbeat for ");
                long silent = nh ? strtol(nh + strlen("no heartbeat for "), NULL, 10) : -1;
                if (nh == NULL)
                    errf(err, cap, "coordinator's reason '%s' does not say no heartbeat; ", r->coord.why);
                else if (silent < timeout_of(sc))
                    errf(err, cap, "declared dead after %ld ms of silence, under the timeout %d ms; ", silent,
                         timeout_of(sc));
                /* Not before it could have been silent that long (its last beat left <= heartbeat_ms before). */
                if (rep->detect >= 0 && rep->detect < timeout_of(sc) / 2)
                    errf(err, cap, "declared dead %lld ms after it went silent, too early for a timeout of %d ms; ",
                         (long long)rep->detect, timeout_of(sc));
            }
        } else if (sc->victim == 's' && sc->blow == BLOW_KILL && strncmp(r->coord.why, "worker", 6) == 0 &&
                   strstr(r->coord.why, "it failed:") && strstr(r->coord.why, victim_name)) {
            rep->by_worker = 1;
        } else {
            errf(err, cap, "coordinator's reason '%s' does not name the dead %s; ", r->coord.why, victim_word);
        }
        if (rep->detect > sc->bound_ms)
            errf(err, cap, "the coordinator ended %lld ms after the blow (bound %d ms); ", (long long)rep->detect,
                 sc->bound_ms);
    } else {
        if (r->coord.status != PSERV_OK)
            errf(err, cap, "coordinator: %s (reason '%s'), want OK; ", pserv_strerror(r->coord.status), r->coord.why);
    }

    /* Every survivor's own account. */
    for (int i = 1; i < r->n; i++) {
        proc_t *p = &r->p[i];
        if (p->victim && sc->blow != BLOW_PARTITION) continue;
        if (!p->have_end) {
            errf(err, cap, "%s process %d%s reported nothing; ", role_name(p->role), (int)p->pid,
                 p->victim ? " (partitioned)" : "");
            continue;
        }
        const msg_t *m = &p->end;
        if (p->victim) { /* the partitioned server: ends on its own, cut off from everyone */
            rep->victim_gave_up = m->t_ms - t0;
            snprintf(rep->note, sizeof(rep->note), "%s: '%s'", pserv_strerror(m->status), m->why);
            if (m->status != PSERV_ERR_JOB_FAILED && m->status != PSERV_ERR_PEER_FAILED)
                errf(err, cap, "partitioned server: %s ('%s'), want JOB_FAILED or PEER_FAILED; ",
                     pserv_strerror(m->status), m->why);
            if (m->t_ms - t0 > 2 * timeout_of(sc))
                errf(err, cap, "partitioned server gave up %lld ms after the cut (bound %d ms); ",
                     (long long)(m->t_ms - t0), 2 * timeout_of(sc));
            if (!p->exited || p->exit_ms - t0 > victim_bound)
                errf(err, cap, "partitioned server %s (bound %d ms); ", p->exited ? "exited late" : "never exited",
                     victim_bound);
            continue;
        }
        if (!job_fails) {
            if (m->status != PSERV_OK)
                errf(err, cap, "%s %d: %s ('%s'), want OK; ", role_name(p->role), m->rank, pserv_strerror(m->status),
                     m->why);
            if (p->role == 'w' && m->rounds != sc->rounds)
                errf(err, cap, "worker %d completed %d of %d rounds; ", m->rank, m->rounds, sc->rounds);
            continue;
        }
        if (p->role == 's') {
            if (m->status != PSERV_ERR_JOB_FAILED)
                errf(err, cap, "surviving server %d: %s ('%s'), want JOB_FAILED; ", m->rank, pserv_strerror(m->status),
                     m->why);
            continue;
        }
        if (m->status != PSERV_ERR_JOB_FAILED && m->status != PSERV_ERR_PEER_FAILED)
            errf(err, cap, "worker %d: %s after %d rounds ('%s'), want JOB_FAILED or PEER_FAILED; ", m->rank,
                 pserv_strerror(m->status), m->rounds, m->why);
        /* JOB_FAILED carries the coordinator's reason (or, first, a worker's report of the lost
         * server); PEER_FAILED the worker's own lost server: either way the dead member. */
        const char *need = m->status == PSERV_ERR_JOB_FAILED || sc->victim == 's' ? victim_name : "server";
        if (strstr(m->why, need) == NULL)
            errf(err, cap, "worker %d (pid %d): %s with error text '%s', which does not name %s%s; ", m->rank,
                 (int)p->pid, pserv_strerror(m->status), m->why, need == victim_name ? "the dead " : "a ", need);
    }

    /* CONTINUE: the survivors trained on, with the same parameters. */
    if (!job_fails) {
        const float *ref = NULL;
        int R = sc->rounds, mid = wa.mid_round;
        for (int i = first_worker; i < r->n; i++) {
            if (r->p[i].victim) continue;
            if (!r->have_params[i]) {
                errf(err, cap, "no parameters from worker process %d; ", (int)r->p[i].pid);
                continue;
            }
            const float *x = r->params[i];
            if (ref && memcmp(ref, x, sizeof(r->params[i])) != 0)
                errf(err, cap, "the surviving workers pulled different parameters; ");
            ref = x;
            for (size_t j = 0; j < TOTAL_ELEMS; j++) {
                /* Rounds 1..mid had all three pushes, the last ones only the survivors'; and the
                 * victim died before the end, so not every round had three. */
                if (x[j] != floorf(x[j]) || x[j] <= -3.0f * R || x[j] > -(2.0f * R + mid)) {
                    errf(err, cap, "element %zu is %g, want an integer in [%d, %d]; ", j, (double)x[j], -3 * R + 1,
                         -(2 * R + mid));
                    break;
                }
            }
        }
        if (ref) {
            float lo = ref[0], hi = ref[0];
            for (size_t j = 1; j < TOTAL_ELEMS; j++) {
                if (ref[j] < lo) lo = ref[j];
                if (ref[j] > hi) hi = ref[j];
            }
            snprintf(rep->note, sizeof(rep->note),
                     "parameters in [%g, %g]: the dead worker's push counted in %d to %d of %d rounds (>= %d)",
                     (double)lo, (double)hi, (int)(-hi) - 2 * R, (int)(-lo) - 2 * R, R, mid);
        }
        if (rep->stall > timeout_of(sc) + 2000)
            errf(err, cap, "a survivor's round stalled %lld ms (bound %d ms); ", (long long)rep->stall,
                 timeout_of(sc) + 2000);
    }

out:
    /* Nothing is left: the stopped victim is killed, then let go. */
    for (int i = 0; i < r->n; i++) {
        proc_t *p = &r->p[i];
        if (!p->exited && p->pid > 0) {
            kill(p->pid, SIGKILL);
            kill(p->pid, SIGCONT);
        }
    }
    harness_kill_all(&r->h);
    for (int i = 0; i < r->n; i++)
        if (r->p[i].fd > 0) close(r->p[i].fd);
}

/* ---- statistics ----------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void stat_line(char *out, size_t cap, const char *what, const rep_t *reps, int n, size_t field)
{
    int64_t v[MAX_REPS];
    int k = 0;
    for (int i = 0; i < n; i++) {
        int64_t x = *(const int64_t *)((const char *)&reps[i] + field);
        if (x >= 0) v[k++] = x;
    }
    if (k == 0) return;
    qsort(v, (size_t)k, sizeof(v[0]), cmp_i64);
    size_t len = strlen(out);
    snprintf(out + len, cap - len, "\n    %-40s min %5lld  median %5lld  max %5lld ms", what, (long long)v[0],
             (long long)(k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2), (long long)v[k - 1]);
}

static void report(const scenario_t *sc, const rep_t *reps, int n)
{
    char out[2048];
    snprintf(out, sizeof(out), "[kill_stop] %s: %d runs, %u servers, %u workers, heartbeat %d ms, timeout %d ms%s",
             sc->name, n, sc->servers, sc->workers, heartbeat_of(sc), timeout_of(sc),
             sc->heartbeat_ms ? "" : " (defaults)");
    stat_line(out, sizeof(out), "blow after training started", reps, n, offsetof(rep_t, delay));
    stat_line(out, sizeof(out), "coordinator's wait returned", reps, n, offsetof(rep_t, detect));
    stat_line(out, sizeof(out), "last survivor exited", reps, n, offsetof(rep_t, end));
    stat_line(out, sizeof(out), "partitioned server's wait returned", reps, n, offsetof(rep_t, victim_gave_up));
    stat_line(out, sizeof(out), "partitioned server exited", reps, n, offsetof(rep_t, victim_end));
    if (sc->rounds) stat_line(out, sizeof(out), "survivors' longest round", reps, n, offsetof(rep_t, stall));
    int by_worker = 0;
    for (int i = 0; i < n; i++) by_worker += reps[i].by_worker;
    if (by_worker) {
        size_t len = strlen(out);
        snprintf(out + len, sizeof(out) - len,
                 "\n    coordinator's reason: a worker's report of the lost server in %d runs, its own detection in %d",
                 by_worker, n - by_worker);
    }
    fprintf(stderr, "%s\n", out);
    cr_log_info("%s", out);
}

/*
 * One scenario at a time, even when Criterion runs tests in parallel (its default, one per core):
 * each runs seven processes against timing bounds, and two at once on a small machine measure the
 * machine, not the library. The lock goes with the test's process.
 */
static void serialize(void)
{
    int fd = open("/tmp/pserv-test-kill-stop.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    int64_t deadline = harness_now_ms() + 60000;
    cr_assert_geq(fd, 0, "cannot open the lock file: %s", strerror(errno));
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        cr_assert_lt(harness_now_ms(), deadline, "another kill_stop test held the lock for 60 s");
        usleep(20000);
    }
}

static void run_scenario(const scenario_t *sc, const net_t *net, int reps)
{
    serialize();
    rep_t rep[MAX_REPS];
    char err[4096];
    unsigned seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 8);
    fprintf(stderr, "[kill_stop] %s: seed %u\n", sc->name, seed);
    for (int i = 0; i < reps; i++) {
        err[0] = '\0';
        run_once(sc, net, &seed, &rep[i], err, sizeof(err));
        fprintf(stderr, "[kill_stop] %s #%d: blow %lld ms in; coordinator %lld ms, last exit %lld ms%s%s%s%s%s\n",
                sc->name, i + 1, (long long)rep[i].delay, (long long)rep[i].detect, (long long)rep[i].end,
                rep[i].by_worker ? " (a worker reported it)" : "", rep[i].note[0] ? "; " : "", rep[i].note,
                err[0] ? " FAILED: " : "", err);
        if (err[0]) {
            report(sc, rep, i + 1);
            cr_assert_fail("%s, run %d of %d: %s", sc->name, i + 1, reps, err);
        }
    }
    report(sc, rep, reps);
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* SIGKILL: the connection fails at once; the defaults (500 / 3000 ms) show no heartbeat is needed. */
Test(kill_stop, server_sigkill_sync_two_servers, .timeout = 90)
{
    scenario_t sc = {.name = "server SIGKILL, sync", .mode = PSERV_MODE_SYNC, .servers = 2, .workers = 3,
                     .victim = 's', .blow = BLOW_KILL, .bound_ms = 5000};
    run_scenario(&sc, NULL, 10);
}

Test(kill_stop, server_sigkill_sync_three_servers, .timeout = 90)
{
    scenario_t sc = {.name = "server SIGKILL, sync, 3 servers", .mode = PSERV_MODE_SYNC, .servers = 3, .workers = 3,
                     .victim = 's', .blow = BLOW_KILL, .bound_ms = 5000};
    run_scenario(&sc, NULL, 5);
}

/*
 * The workers leave with pserv_worker_destroy after their requests failed (as
 * examples/linear_regression.cu does on every path), not pserv_worker_abort: the server still
 * died mid-job, so the job must still fail, whichever the coordinator hears of first.
 */
Test(kill_stop, server_sigkill_then_workers_leave_plainly, .timeout = 90)
{
    scenario_t sc = {.name = "server SIGKILL, sync, workers leave plainly", .mode = PSERV_MODE_SYNC, .servers = 2,
                     .workers = 3, .victim = 's', .blow = BLOW_KILL, .bound_ms = 5000, .plain_leave = 1};
    run_scenario(&sc, NULL, 5);
}

/* SIGSTOP: only missing heartbeats show it; bound failure_timeout + 2 s. */
Test(kill_stop, server_sigstop_sync, .timeout = 90)
{
    scenario_t sc = {.name = "server SIGSTOP, sync", .mode = PSERV_MODE_SYNC, .servers = 2, .workers = 3,
                     .heartbeat_ms = 200, .failure_timeout_ms = 1000, .victim = 's', .blow = BLOW_STOP,
                     .bound_ms = 3000};
    run_scenario(&sc, NULL, 10);
}

Test(kill_stop, server_sigstop_default_timeouts, .timeout = 90)
{
    scenario_t sc = {.name = "server SIGSTOP, sync, default timeouts", .mode = PSERV_MODE_SYNC, .servers = 2,
                     .workers = 3, .victim = 's', .blow = BLOW_STOP, .bound_ms = 5000};
    run_scenario(&sc, NULL, 4);
}

Test(kill_stop, worker_sigkill_fails_the_job, .timeout = 90)
{
    scenario_t sc = {.name = "worker SIGKILL, sync, policy fail", .mode = PSERV_MODE_SYNC, .servers = 2, .workers = 3,
                     .victim = 'w', .blow = BLOW_KILL, .bound_ms = 5000};
    run_scenario(&sc, NULL, 10);
}

Test(kill_stop, worker_sigstop_fails_the_job, .timeout = 90)
{
    scenario_t sc = {.name = "worker SIGSTOP, sync, policy fail", .mode = PSERV_MODE_SYNC, .servers = 2, .workers = 3,
                     .heartbeat_ms = 200, .failure_timeout_ms = 1000, .victim = 'w', .blow = BLOW_STOP,
                     .bound_ms = 3000};
    run_scenario(&sc, NULL, 5);
}

Test(kill_stop, server_sigkill_async, .timeout = 90)
{
    scenario_t sc = {.name = "server SIGKILL, async", .mode = PSERV_MODE_ASYNC, .servers = 2, .workers = 3,
                     .victim = 's', .blow = BLOW_KILL, .bound_ms = 5000};
    run_scenario(&sc, NULL, 10);
}

/* CONTINUE: the two survivors finish all their rounds and the job ends OK. */
Test(kill_stop, worker_sigkill_continue, .timeout = 90)
{
    scenario_t sc = {.name = "worker SIGKILL, sync, policy continue", .mode = PSERV_MODE_SYNC, .servers = 2,
                     .workers = 3, .heartbeat_ms = 200, .failure_timeout_ms = 1000,
                     .policy = PSERV_ON_FAILURE_CONTINUE, .victim = 'w', .blow = BLOW_KILL, .bound_ms = 15000,
                     .rounds = 300};
    run_scenario(&sc, NULL, 5);
}

/* ---- a silent partition ------------------------------------------------------------------- */

static net_t g_net;

/* Namespaces of earlier runs of this test whose process is gone (a run killed by its timeout). */
static void net_sweep_stale(void)
{
    DIR *d = opendir("/var/run/netns");
    struct dirent *e;
    if (d == NULL) return;
    while ((e = readdir(d)) != NULL) {
        int pid;
        if (sscanf(e->d_name, "psv-test-%d", &pid) == 1 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH)
            net_cmd("ip netns del %s 2>/dev/null", e->d_name);
    }
    closedir(d);
}

static void net_teardown(void)
{
    if (!g_net.up) return;
    net_cmd("ip netns del %s 2>/dev/null", g_net.ns); /* the veth pair goes with it */
    net_cmd("ip link del %s 2>/dev/null", g_net.va);  /* if the pair never moved */
    g_net.up = 0;
}

static int net_setup(net_t *net, char *why, size_t cap)
{
    int pid = (int)getpid();
    memset(net, 0, sizeof(*net));
    snprintf(net->ns, sizeof(net->ns), "psv-test-%d", pid);
    snprintf(net->va, sizeof(net->va), "psva%d", pid % 10000000);
    snprintf(net->vb, sizeof(net->vb), "psvb%d", pid % 10000000);
    net->x = 10 + pid % 240;
    net_sweep_stale();
    if (net_cmd("ip netns add %s 2>/dev/null", net->ns) != 0) {
        snprintf(why, cap, "cannot create a network namespace (ip netns add %s failed: not root?)", net->ns);
        return -1;
    }
    net->up = 1;
    if (net_cmd("ip link add %s type veth peer name %s", net->va, net->vb) != 0 ||
        net_cmd("ip link set %s netns %s", net->vb, net->ns) != 0 ||
        net_cmd("ip addr add 10.213.%d.1/24 dev %s", net->x, net->va) != 0 ||
        net_cmd("ip link set %s up", net->va) != 0 ||
        net_cmd("ip -n %s addr add 10.213.%d.2/24 dev %s", net->ns, net->x, net->vb) != 0 ||
        net_cmd("ip -n %s link set %s up", net->ns, net->vb) != 0 || net_cmd("ip -n %s link set lo up", net->ns) != 0) {
        snprintf(why, cap, "cannot set up the veth pair %s/%s", net->va, net->vb);
        return -1;
    }
    return 0;
}

static void partition_fini(void)
{
    net_teardown();
}

/*
 * One server in a namespace of its own, reached over a veth pair; the link goes down mid-training,
 * silently (no process dies, no connection is refused). TCP only: shared memory between processes
 * of one host would not be cut. Each side's UCX uses only its end of the pair, so that no process
 * advertises an interface (lo, eth0) the other namespace would reach wrongly or not at all.
 */
Test(kill_stop, partitioned_server, .timeout = 90, .fini = partition_fini)
{
    char why[256];
    scenario_t sc = {.name = "server partitioned (link down), sync", .mode = PSERV_MODE_SYNC, .servers = 2,
                     .workers = 3, .heartbeat_ms = 200, .failure_timeout_ms = 1000, .victim = 's',
                     .blow = BLOW_PARTITION, .bound_ms = 3000};
    if (getuid() != 0) cr_skip_test("needs root for a network namespace");
    TSAN_SKIP_FORKED_THREADS(); /* before the namespace exists: a skip after it would leave it */
    serialize();
    setenv("UCX_TLS", "tcp", 1);
    for (int rep = 0; rep < 3; rep++) {
        /* A fresh link per run: the last one was cut. */
        if (net_setup(&g_net, why, sizeof(why)) != 0) {
            int created = g_net.up;
            net_teardown();
            if (!created) cr_skip_test("%s", why);
            cr_assert_fail("%s", why);
        }
        setenv("UCX_NET_DEVICES", g_net.va, 1);
        rep_t r;
        char err[4096] = "";
        unsigned seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 8) ^ (unsigned)rep;
        run_once(&sc, &g_net, &seed, &r, err, sizeof(err));
        net_teardown();
        fprintf(stderr,
                "[kill_stop] %s #%d: cut %lld ms in; coordinator %lld ms, last root-namespace exit %lld ms, "
                "partitioned server gave up %lld ms, exit %lld ms (%s)%s%s\n",
                sc.name, rep + 1, (long long)r.delay, (long long)r.detect, (long long)r.end,
                (long long)r.victim_gave_up, (long long)r.victim_end, r.note, err[0] ? " FAILED: " : "", err);
        static rep_t all[3];
        all[rep] = r;
        if (err[0]) {
            report(&sc, all, rep + 1);
            cr_assert_fail("%s, run %d: %s", sc.name, rep + 1, err);
        }
        if (rep == 2) report(&sc, all, 3);
    }
}

