/*
 * pserv_bench_membership: what a server joining a running job, and one drained out of it, cost
 * the training that goes on meanwhile (bench/README.md has the details).
 *
 *   pserv_bench_membership [--reps R] [--chunks C] [--chunk-bytes B] [--replicas K] [--move-bytes B]
 *                          [--settle-s S]
 *                          [--quick] [--pserv PATH] [--raw PATH] [--worker-cpus LIST]
 *                          [--server-cpus LIST] [--json FILE]
 *
 * Each rep is a sync job of 2 `pserv server` processes with this process as its one worker
 * (cli_job.h), running push-pull rounds of C chunks of B bytes back to back. After S seconds a
 * third `pserv server` starts and joins (the chunks that balance the load move to it: each
 * chunk's state is copied, then its owner switches); S seconds later (or once it is ready, if
 * that is later: until then the drain is refused for want of room) a thread drains server 0
 * with pserv_drain (every copy it holds moves away, then it leaves) while the rounds go on. From
 * every round's start and end: the median round before the join, the longest round while each
 * change runs, and its pause (longest - median). The baseline, in the same run: one chunk's
 * transfer between two processes with raw UCX (pserv_raw_ucx_am_echo, no pserv code: half the
 * median round trip of a B-byte echo), over TCP as pserv's processes talk by default
 * (transport/README.md) and over UCX's own choice (shared memory here): the bound the issue sets
 * for a pause. The parameters are checked exactly at the end of every job: a round lost or
 * applied twice in a move shows.
 */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "cli_job.h"
#include "procs.h"
#include "pserv/pserv.h"
#include "ucx_ref.h"

#define PROG "pserv_bench_membership"
#define MAX_REPS 50
#define MAX_ROUNDS 200000

static struct {
    const char *pserv, *raw, *json, *worker_cpus, *server_cpus;
    int reps, chunks, replicas, quick;
    size_t chunk_bytes, move_bytes;
    double settle_s, timeout_s;
} cfg = {.reps = 5, .chunks = 8, .replicas = 1, .chunk_bytes = 1 << 20, .settle_s = 0.5, .timeout_s = 60};
static cpus_split_t cpus;
static cli_job_env_t env;

enum { M_BEFORE, M_JOIN_MAX, M_JOIN_PAUSE, M_DRAIN_MAX, M_DRAIN_PAUSE, M_DRAIN_S, M_NMETRICS };
static const char *const m_names[M_NMETRICS] = {"round_before_s", "join_longest_round_s", "join_pause_s",
                                                "drain_longest_round_s", "drain_pause_s", "drain_s"};
static const char *const m_labels[M_NMETRICS] = {
    "round before the join (median)", "longest round while the join's moves run", "pause of the join (longest - median)",
    "longest round while the drain runs", "pause of the drain (longest - median)", "pserv_drain, request to answer"};

/* The changes, on a thread of their own while the main thread runs rounds. The thread lives until
 * the job ends: the server it starts gets the death signal when the thread that started it ends
 * (PR_SET_PDEATHSIG follows the thread, not the process). */
typedef struct {
    cli_job_t *job;
    double t_join, t_drain, t_drained; /* bench_now() at each step */
    int rc, done, release;
} changer_t;

static void sleep_s(double s)
{
    struct timespec d = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&d, NULL);
}

static void *changer(void *arg)
{
    changer_t *ch = arg;
    sleep_s(cfg.settle_s);
    ch->t_join = bench_now();
    ch->rc = cli_job_add_server(ch->job); /* it joins the running job */
    sleep_s(cfg.settle_s);
    /* Refused while the new server is not ready yet (the others cannot hold every copy): again,
     * and the drain is timed from the request that is taken. */
    pserv_status_t st = PSERV_ERR_INVALID_ARG;
    double until = bench_now() + cfg.timeout_s;
    while (ch->rc == 0) {
        ch->t_drain = bench_now();
        st = pserv_drain(ch->job->addr, 0, (int)(cfg.timeout_s * 1000));
        if (st != PSERV_ERR_INVALID_ARG || !strstr(pserv_last_error(), "cannot hold") || bench_now() > until) break;
        sleep_s(0.01);
    }
    if (ch->rc == 0 && st != PSERV_OK) {
        fprintf(stderr, PROG ": drain: %s\n", pserv_last_error());
        ch->rc = -1;
    }
    ch->t_drained = bench_now();
    __atomic_store_n(&ch->done, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&ch->release, __ATOMIC_ACQUIRE)) sleep_s(0.01);
    return NULL;
}

/* The longest of the rounds [0, n) that overlap [t0, t1); -1 if none. */
static double longest_round(const double *start, const double *end, size_t n, double t0, double t1)
{
    double best = -1;
    for (size_t i = 0; i < n; i++)
        if (end[i] > t0 && start[i] < t1 && end[i] - start[i] > best) best = end[i] - start[i];
    return best;
}

static int one_job(double m[M_NMETRICS])
{
    static cli_job_t j;
    static double start[MAX_ROUNDS], end[MAX_ROUNDS];
    changer_t ch = {.job = &j};
    size_t n = 0, before = 0;
    double took;
    for (int k = 0; k < M_NMETRICS; k++) m[k] = -1;
    size_t count = (size_t)cfg.chunks * cfg.chunk_bytes / sizeof(float);
    if (cli_job_spawn(&j, &env, 2, count, cfg.chunk_bytes, cfg.replicas, PROC_CAPTURE_OUT) != 0 ||
        cli_job_join(&j) != 0 || cli_job_rounds(&j, 3, 0.2, &took) < 0)
        return cli_job_stop(&j, -1), -1;
    pthread_t th;
    if (pthread_create(&th, NULL, changer, &ch) != 0) return cli_job_stop(&j, -1), -1;
    int rc = 0;
    /* Rounds until the drain is answered, and a little more (the moves' last views). */
    for (; n < MAX_ROUNDS; n++) {
        start[n] = bench_now();
        if (cli_job_round(&j) != 0) {
            rc = -1;
            break;
        }
        end[n] = bench_now();
        if (__atomic_load_n(&ch.done, __ATOMIC_ACQUIRE) && end[n] > ch.t_drained + 0.2) break;
    }
    if (rc == 0) rc = cli_job_check(&j, "join and drain");
    int stopped = cli_job_stop(&j, -1); /* the worker leaves: every server and the coordinator end */
    __atomic_store_n(&ch.release, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    if (ch.rc != 0 || stopped != 0) rc = -1;
    while (before < n && end[before] <= ch.t_join) before++;
    m[M_BEFORE] = cli_job_median_round(start, end, 0, before, 0);
    m[M_JOIN_MAX] = longest_round(start, end, n, ch.t_join, ch.t_drain);
    m[M_DRAIN_MAX] = longest_round(start, end, n, ch.t_drain, ch.t_drained + 0.2);
    if (m[M_BEFORE] >= 0 && m[M_JOIN_MAX] >= 0) m[M_JOIN_PAUSE] = m[M_JOIN_MAX] - m[M_BEFORE];
    if (m[M_BEFORE] >= 0 && m[M_DRAIN_MAX] >= 0) m[M_DRAIN_PAUSE] = m[M_DRAIN_MAX] - m[M_BEFORE];
    m[M_DRAIN_S] = ch.t_drained - ch.t_drain;
    return rc;
}

/* The echo's environment over TCP only (the children inherit ours): the echo asks for shared
 * memory's error handling unless told, and UCX would warn (on stdout) that nothing uses it. */
static const char *const tcp_env[][2] = {
    {"UCX_TLS", "tcp"}, {"UCX_MM_ERROR_HANDLING", "n"}, {"UCX_WARN_UNUSED_ENV_VARS", "n"}};
#define TCP_ENV_N (sizeof(tcp_env) / sizeof(tcp_env[0]))

/* One chunk's transfer between two processes over raw UCX: half the median round trip of an echo;
 * over TCP only (tcp), or over UCX's choice. Our environment is as it was afterwards. */
static int raw_chunk_transfer(int tcp, double *one_way_s, char *ucx_version, size_t cap)
{
    ucx_ref_cfg_t rc = {.client_cpu = cpus.pinned ? cpus_first(&cpus.worker) : -1,
                        .server_cpu = cpus.pinned ? cpus_first(&cpus.server) : -1,
                        .target_s = cfg.quick ? 0.2 : 1.0,
                        .window = 4,
                        .timeout_s = cfg.timeout_s};
    size_t bytes = cfg.chunk_bytes;
    raw_row_t row;
    char saved[TCP_ENV_N][256];
    int had[TCP_ENV_N];
    for (size_t i = 0; tcp && i < TCP_ENV_N; i++) {
        const char *old = getenv(tcp_env[i][0]);
        had[i] = old != NULL;
        snprintf(saved[i], sizeof(saved[i]), "%s", old ? old : "");
        setenv(tcp_env[i][0], tcp_env[i][1], 1);
    }
    int st = ucx_raw_run(cfg.raw, &rc, &bytes, 1, &row, ucx_version, cap);
    for (size_t i = 0; tcp && i < TCP_ENV_N; i++) {
        if (had[i]) setenv(tcp_env[i][0], saved[i], 1);
        else unsetenv(tcp_env[i][0]);
    }
    if (st != 0) return -1;
    *one_way_s = row.p50_s / 2;
    return 0;
}

static void print_table(double v[M_NMETRICS][MAX_REPS], double st[M_NMETRICS][3], double chunk_s, double shm_s)
{
    printf("\njoin and drain: 1 worker, 2 servers, a third joins, then server 0 is drained; %d chunks of %zu KiB,\n"
           "--replicas %d, sync, %zu KiB moving at once; %d reps, ms: median [min, max]\n",
           cfg.chunks, cfg.chunk_bytes >> 10, cfg.replicas, (cfg.move_bytes ? cfg.move_bytes : cfg.chunk_bytes) >> 10,
           cfg.reps);
    for (int k = 0; k < M_NMETRICS; k++)
        printf("  %-45s %9.1f [%.1f, %.1f]\n", m_labels[k], st[k][0] * 1e3, st[k][1] * 1e3, st[k][2] * 1e3);
    printf("  %-45s %9.3f\n", "one chunk's transfer, raw UCX over TCP", chunk_s * 1e3);
    printf("  %-45s %9.3f\n", "  (UCX's own choice of transport)", shm_s * 1e3);
    double rj = st[M_JOIN_PAUSE][0] / chunk_s, rd = st[M_DRAIN_PAUSE][0] / chunk_s;
    printf("  pause / one chunk's transfer over TCP (medians): join %.1f, drain %.1f; goal <= 1: %s\n", rj, rd,
           rj <= 1 && rd <= 1 ? "met" : "MISSED");
    printf("  pause / round before (medians): join %.1f, drain %.1f\n", st[M_JOIN_PAUSE][0] / st[M_BEFORE][0],
           st[M_DRAIN_PAUSE][0] / st[M_BEFORE][0]);
    (void)v;
}

static int write_json(double v[M_NMETRICS][MAX_REPS], double st[M_NMETRICS][3], double chunk_s, double shm_s,
                      const char *ver)
{
    FILE *f = bench_json_begin(PROG, cfg.json, "membership");
    if (f == NULL) return -1;
    fprintf(f, ", \"ucx\": ");
    bench_json_str(f, ver);
    fprintf(f, ", \"worker_cpus\": \"%s\", \"server_cpus\": \"%s\", \"chunks\": %d, \"chunk_bytes\": %zu, "
               "\"replicas\": %d, \"reps\": %d, \"settle_s\": %g, \"move_bytes\": %zu, \"raw_chunk_transfer_tcp_s\": %.6g, "
               "\"raw_chunk_transfer_ucx_choice_s\": %.6g",
            cpus.worker_s, cpus.server_s, cfg.chunks, cfg.chunk_bytes, cfg.replicas, cfg.reps, cfg.settle_s,
            cfg.move_bytes ? cfg.move_bytes : cfg.chunk_bytes, chunk_s, shm_s);
    for (int k = 0; k < M_NMETRICS; k++) bench_json_series(f, m_names[k], st[k], v[k], cfg.reps);
    fprintf(f, ", \"join_pause_per_chunk_transfer\": %.4g, \"drain_pause_per_chunk_transfer\": %.4g",
            st[M_JOIN_PAUSE][0] / chunk_s, st[M_DRAIN_PAUSE][0] / chunk_s);
    return bench_json_finish(PROG, &f, cfg.json);
}

int main(int argc, char **argv)
{
    char pserv_buf[PATH_MAX], raw_buf[PATH_MAX];
    cfg.pserv = proc_next_to_me("../cli/pserv", pserv_buf, sizeof(pserv_buf));
    cfg.raw = proc_next_to_me("raw/pserv_raw_ucx_am_echo", raw_buf, sizeof(raw_buf));
    const bench_opt_t opts[] = {
        BENCH_INT("--reps", "R", "jobs, each with a join and a drain (default 5)", &cfg.reps, 1, MAX_REPS),
        BENCH_INT("--chunks", "C", "chunks in the tensor (default 8)", &cfg.chunks, 1, 64),
        BENCH_SIZE("--chunk-bytes", "B", "bytes per chunk (default 1 MiB)", &cfg.chunk_bytes, 1024, 1ll << 28),
        BENCH_INT("--replicas", "K", "backups of every chunk (default 1)", &cfg.replicas, 0, 1),
        BENCH_SIZE("--move-bytes", "B", "the coordinator's --move-bytes (default: one chunk)", &cfg.move_bytes, 1024,
                   1ll << 30),
        BENCH_PARSE("--settle-s", "S", "seconds of rounds before the join and before the drain (default 0.5)",
                    &cfg.settle_s, bench_parse_seconds),
        BENCH_FLAG("--quick", "2 reps: a check that it runs, not numbers to keep", &cfg.quick),
        BENCH_STRING("--pserv", "PATH", "the pserv CLI (default: ../cli/pserv next to this program)", &cfg.pserv),
        BENCH_STRING("--raw", "PATH", "the raw UCX echo (default: raw/pserv_raw_ucx_am_echo next to this program)",
                     &cfg.raw),
        BENCH_STRING("--worker-cpus", "LIST", "CPUs of the worker (default: first half of ours)", &cfg.worker_cpus),
        BENCH_STRING("--server-cpus", "LIST", "CPUs of the servers (default: second half)", &cfg.server_cpus),
        BENCH_JSON(&cfg.json),
    };
    int rc = bench_parse_args(PROG, argc, argv, opts, BENCH_NOPTS(opts));
    if (rc != BENCH_CONTINUE) return rc;
    if (cfg.quick && cfg.reps > 2) cfg.reps = 2;
    if (access(cfg.pserv, X_OK) != 0 || access(cfg.raw, X_OK) != 0) {
        fprintf(stderr, PROG ": cannot run %s or %s (--pserv and --raw name them)\n", cfg.pserv, cfg.raw);
        return 2;
    }
    if ((rc = cpus_pin_worker(PROG, cfg.worker_cpus, cfg.server_cpus, &cpus)) != 0) return rc;
    procs_install_cleanup();
    size_t count = (size_t)cfg.chunks * cfg.chunk_bytes / sizeof(float);
    float *grad = malloc(count * sizeof(float));
    if (grad == NULL) return 1;
    for (size_t i = 0; i < count; i++) grad[i] = (float)((int)(i % 7) - 3);
    env = (cli_job_env_t){.prog = PROG, .pserv = cfg.pserv, .timeout_s = cfg.timeout_s, .cpus = &cpus, .grad = grad,
                            .move_bytes = cfg.move_bytes};

    char cpu[256], ver[64] = "";
    bench_cpu_model(cpu, sizeof(cpu));
    printf(PROG ": pserv %s, %s, %ld cores; worker CPUs %s, server CPUs %s\n", pserv_version(), cpu,
           sysconf(_SC_NPROCESSORS_ONLN), cpus.worker_s, cpus.server_s);
    fflush(stdout);
    double chunk_s, shm_s;
    fprintf(stderr, PROG ": raw UCX echo of %zu bytes (%s), over TCP and over UCX's choice...\n", cfg.chunk_bytes,
            cfg.raw);
    if (raw_chunk_transfer(1, &chunk_s, ver, sizeof(ver)) != 0 || raw_chunk_transfer(0, &shm_s, ver, sizeof(ver)) != 0)
        return 1;
    static double v[M_NMETRICS][MAX_REPS], st[M_NMETRICS][3];
    for (int r = 0; r < cfg.reps; r++) {
        double m[M_NMETRICS];
        fprintf(stderr, PROG ": job %d/%d: a server joins, then server 0 is drained\n", r + 1, cfg.reps);
        if (one_job(m) != 0) return 1;
        for (int k = 0; k < M_NMETRICS; k++) v[k][r] = m[k];
    }
    for (int k = 0; k < M_NMETRICS; k++) bench_summarize(v[k], cfg.reps, st[k]);
    print_table(v, st, chunk_s, shm_s);
    free(grad);
    return cfg.json && write_json(v, st, chunk_s, shm_s, ver) != 0 ? 1 : 0;
}
