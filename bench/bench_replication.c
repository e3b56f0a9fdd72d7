/*
 * pserv_bench_replication: what replicated shards cost, and how long a job takes to get past a
 * killed server, as a user runs pserv (bench/README.md has the details).
 *
 *   pserv_bench_replication [--reps R] [--target-s S] [--servers N] [--chunks C]
 *                           [--failover-reps F] [--after-s A] [--seed X] [--quick] [--pserv PATH]
 *                           [--worker-cpus LIST] [--server-cpus LIST] [--json FILE]
 *
 * `pserv coordinator` and `pserv server` are processes from the CLI, this program each job's one
 * worker (sync, SGD), pinned as in pserv_bench_pushpull (worker: first half of our CPUs, servers:
 * second half, coordinator: any).
 * 1. Throughput: a tensor of C chunks over N servers, a round = one push-pull of all of it; per
 *    chunk size, a --replicas 0 job (the baseline) and a --replicas 1 job side by side, timed in
 *    ABBA turns of S seconds; GB/s, rounds/s, the servers' CPU per round; cost ratio = r1 / r0.
 * 2. Failover: 3 servers, --replicas 1; a thread SIGKILLs one at a random moment; from the rounds'
 *    starts and ends, the time to the first round completed and to the first begun after the kill;
 *    the coordinator's timestamped "died" warning (its stderr, captured) gives the detection.
 * Every job ends by checking the parameters: lr 1 on small integer gradients, so after n rounds
 * they are exactly -n x the gradient; a round lost or applied twice (a failover's too) shows.
 */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
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

#define PROG "pserv_bench_replication"
#define KEY 1
#define MAX_SERVERS CLI_JOB_MAX_SERVERS
#define MAX_REPS 100
#define FO_SERVERS 3
#define FO_CHUNK (1u << 20)
#define FO_MAX_ROUNDS 200000
#define GOAL 0.85

static const size_t sizes[] = {1u << 20, 4u << 20};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static struct {
    const char *pserv, *json, *worker_cpus, *server_cpus;
    int reps, servers, chunks, fo_reps, quick, seed;
    double target_s, after_s, timeout_s;
} cfg = {.reps = 5, .servers = 2, .chunks = 8, .fo_reps = 5, .target_s = 1.5, .after_s = 1.0, .timeout_s = 60};
static cpus_split_t cpus;
static float *grad; /* every tensor's gradient: sized for the largest */

static cli_job_env_t env;

/* ---- 1. throughput ------------------------------------------------------------------------------ */

typedef struct {
    size_t chunk;
    double gbps[2][MAX_REPS], rps[2][MAX_REPS], cpu[2][MAX_REPS], paired[MAX_REPS]; /* [replicas][turn] */
    double st_gbps[2][3], st_rps[2][3], st_cpu[2][3], st_paired[3], ratio;           /* median, min, max */
} tput_t;

static int measure_size(size_t chunk, tput_t *t)
{
    static cli_job_t jobs[2];
    double took;
    int rc = 0;
    t->chunk = chunk;
    for (int r = 0; r < 2 && rc == 0; r++) rc = cli_job_spawn(&jobs[r], &env, cfg.servers, cfg.chunks * chunk / sizeof(float), chunk, r, PROC_CAPTURE_OUT);
    for (int r = 0; r < 2 && rc == 0; r++) rc = cli_job_join(&jobs[r]);
    for (int r = 0; r < 2 && rc == 0; r++) rc = cli_job_rounds(&jobs[r], 3, cfg.target_s / 4, &took) < 0 ? -1 : 0;
    for (int turn = 0; turn < cfg.reps * 2 && rc == 0; turn++) {
        int r = (turn & 1) ^ ((turn >> 1) & 1); /* ABBA... */
        double cpu0 = cli_job_servers_cpu_s(&jobs[r]);
        int n = cli_job_rounds(&jobs[r], 5, cfg.target_s, &took);
        if (n < 0) {
            rc = -1;
            break;
        }
        t->gbps[r][turn / 2] = 2.0 * (double)(jobs[r].count * sizeof(float)) * n / took / 1e9;
        t->rps[r][turn / 2] = n / took;
        t->cpu[r][turn / 2] = (cli_job_servers_cpu_s(&jobs[r]) - cpu0) / n;
    }
    for (int r = 0; r < 2 && rc == 0; r++) rc = cli_job_check(&jobs[r], r ? "replicas 1" : "replicas 0");
    for (int r = 0; r < 2; r++)
        if (cli_job_stop(&jobs[r], -1) != 0) rc = -1;
    for (int r = 0; r < 2; r++) {
        bench_summarize(t->gbps[r], cfg.reps, t->st_gbps[r]);
        bench_summarize(t->rps[r], cfg.reps, t->st_rps[r]);
        bench_summarize(t->cpu[r], cfg.reps, t->st_cpu[r]);
    }
    for (int i = 0; i < cfg.reps; i++) t->paired[i] = t->gbps[1][i] / t->gbps[0][i];
    bench_summarize(t->paired, cfg.reps, t->st_paired);
    t->ratio = t->st_gbps[1][0] / t->st_gbps[0][0];
    return rc;
}

/* ---- 2. failover -------------------------------------------------------------------------------- */

enum { FO_BEFORE, FO_FIRST, FO_FIRST_NEW, FO_DETECT, FO_AFTER, FO_NMETRICS };
static const char *const fo_names[FO_NMETRICS] = {"round_before_s", "kill_to_first_round_s",
                                                  "kill_to_first_new_round_s", "detect_s", "round_after_s"};
static const char *const fo_labels[FO_NMETRICS] = {
    "round before the kill (median)", "kill -> first round completed", "kill -> first round begun after it, completed",
    "kill -> coordinator's \"died\" warning", "round after (median, last half)"};

typedef struct {
    int victim, rounds_after; /* victim: the server's start index (the logs name its rank) */
    double delay_s, m[FO_NMETRICS]; /* seconds; -1 where unknown */
} fo_t;

typedef struct {
    pid_t pid;
    double delay_s, t_kill; /* t_kill: bench_now() just before kill() */
    struct timespec kill_rt;
    int done;
} killer_t;

static void *killer(void *arg)
{
    killer_t *k = arg;
    struct timespec d = {(time_t)k->delay_s, (long)((k->delay_s - (double)(time_t)k->delay_s) * 1e9)};
    nanosleep(&d, NULL);
    clock_gettime(CLOCK_REALTIME, &k->kill_rt);
    k->t_kill = bench_now();
    kill(k->pid, SIGKILL);
    __atomic_store_n(&k->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Seconds from the kill to the coordinator's warning that the server died (its log lines are
 * "[SEC.USEC] pserv W ..."), or -1; the other lines it printed go to our stderr. */
static double detect_s(proc_t *coord, const struct timespec *kill_rt)
{
    char line[1024];
    long sec, usec;
    while (proc_read_line(coord, line, sizeof(line), 5.0) == 0) {
        if (strstr(line, " died: ") && sscanf(line, "[%ld.%ld]", &sec, &usec) == 2)
            return (double)(sec - kill_rt->tv_sec) + ((double)usec * 1e3 - (double)kill_rt->tv_nsec) * 1e-9;
        fprintf(stderr, "(coordinator) %s\n", line);
    }
    return -1;
}

static int fo_job(fo_t *r)
{
    static cli_job_t j;
    static double start[FO_MAX_ROUNDS], end[FO_MAX_ROUNDS];
    killer_t k = {.delay_s = 0.3 + 0.7 * rand() / (double)RAND_MAX};
    double took;
    size_t n = 0, first = 0, first_new = 0;
    int rc = -1;
    r->victim = rand() % FO_SERVERS;
    r->delay_s = k.delay_s;
    for (int m = 0; m < FO_NMETRICS; m++) r->m[m] = -1;
    pthread_t th;
    if (cli_job_spawn(&j, &env, FO_SERVERS, cfg.chunks * FO_CHUNK / sizeof(float), FO_CHUNK, 1, PROC_CAPTURE_ALL) != 0 ||
        cli_job_join(&j) != 0 ||
        cli_job_rounds(&j, 3, 0.2, &took) < 0)
        return cli_job_stop(&j, -1), -1;
    k.pid = j.server[r->victim].pid;
    if (pthread_create(&th, NULL, killer, &k) != 0) return cli_job_stop(&j, -1), -1;
    for (; n < FO_MAX_ROUNDS && rc != 0; n++) {
        start[n] = bench_now();
        if (cli_job_round(&j) != 0) break;
        end[n] = bench_now();
        if (__atomic_load_n(&k.done, __ATOMIC_ACQUIRE) && end[n] > k.t_kill + cfg.after_s) rc = 0;
    }
    pthread_join(th, NULL);
    while (first < n && end[first] <= k.t_kill) first++;
    while (first_new < n && start[first_new] <= k.t_kill) first_new++;
    r->m[FO_BEFORE] = cli_job_median_round(start, end, 0, first, 0);
    if (first < n) r->m[FO_FIRST] = end[first] - k.t_kill;
    if (first_new < n) r->m[FO_FIRST_NEW] = end[first_new] - k.t_kill;
    r->m[FO_DETECT] = detect_s(&j.coord, &k.kill_rt);
    r->m[FO_AFTER] = cli_job_median_round(start, end, first_new, n, k.t_kill + cfg.after_s / 2);
    r->rounds_after = (int)(n - first);
    if (rc == 0) rc = cli_job_check(&j, "failover");
    return cli_job_stop(&j, r->victim) == 0 ? rc : -1;
}

/* ---- output ----------------------------------------------------------------------------------- */

/* Metric m of every failover into v, and its median, min and max. */
static void fo_stats(const fo_t *fo, int m, double *v, double st[3])
{
    for (int i = 0; i < cfg.fo_reps; i++) v[i] = fo[i].m[m];
    bench_summarize(v, cfg.fo_reps, st);
}

static void print_tables(const tput_t *rows, const fo_t *fo)
{
    for (size_t i = 0; i < NSIZES && cfg.reps > 0; i++) {
        const tput_t *t = &rows[i];
        if (i == 0)
            printf("\npush-pull throughput: 1 worker, %d servers, a tensor of %d chunks; GB/s = (pushed + pulled) / s;\n"
                   "medians of %d turns of ~%.1f s; cost ratio = --replicas 1 / --replicas 0 (paired: per turn pair)\n"
                   "%6s %7s | %8s %9s | %8s %9s | %6s %6s %13s | %s\n",
                   cfg.servers, cfg.chunks, cfg.reps, cfg.target_s, "chunk", "tensor", "r0 GB/s", "r0 rnd/s",
                   "r1 GB/s", "r1 rnd/s", "ratio", "paired", "[min, max]", "goal >= 0.85");
        printf("%4zuMi %5zuMi | %8.3f %9.2f | %8.3f %9.2f | %6.3f %6.3f [%5.3f,%5.3f] | %s\n", t->chunk >> 20,
               (t->chunk >> 20) * (size_t)cfg.chunks, t->st_gbps[0][0], t->st_rps[0][0], t->st_gbps[1][0],
               t->st_rps[1][0], t->ratio, t->st_paired[0], t->st_paired[1], t->st_paired[2],
               t->ratio >= GOAL ? "met" : "MISSED");
    }
    for (size_t i = 0; i < NSIZES && cfg.reps > 0; i++) {
        const tput_t *t = &rows[i];
        double c0 = t->st_cpu[0][0], c1 = t->st_cpu[1][0];
        if (i == 0)
            printf("\nthe servers' CPU time (all of them, /proc; medians): ms per round; cores busy = CPU s / s\n"
                   "%6s | %9s %9s %6s | %8s %8s\n", "chunk", "r0 ms/rnd", "r1 ms/rnd", "r1/r0", "r0 cores", "r1 cores");
        printf("%4zuMi | %9.2f %9.2f %6.2f | %8.2f %8.2f\n", t->chunk >> 20, c0 * 1e3, c1 * 1e3, c1 / c0,
               c0 * t->st_rps[0][0], c1 * t->st_rps[1][0]);
    }
    if (cfg.fo_reps > 0)
        printf("\nfailover: %d servers, --replicas 1, %d chunks of %u MiB; one server killed (SIGKILL) at a random\n"
               "moment; %d reps, ms: median [min, max]\n", FO_SERVERS, cfg.chunks, FO_CHUNK >> 20, cfg.fo_reps);
    for (int m = 0; m < FO_NMETRICS && cfg.fo_reps > 0; m++) {
        double st[3], v[MAX_REPS];
        fo_stats(fo, m, v, st);
        printf("  %-48s %9.1f [%.1f, %.1f]\n", fo_labels[m], st[0] * 1e3, st[1] * 1e3, st[2] * 1e3);
    }
}

static int write_json(const tput_t *rows, const fo_t *fo)
{
    FILE *f = bench_json_begin(PROG, cfg.json, "replication");
    if (f == NULL) return -1;
    fprintf(f, ", \"progress\": ");
    bench_json_str(f, getenv("PSERV_PROGRESS"));
    fprintf(f, ", \"worker_cpus\": \"%s\", \"server_cpus\": \"%s\", \"servers\": %d, \"chunks\": %d, \"reps\": %d, "
               "\"target_s\": %g, \"seed\": %d, \"goal_ratio\": %g, \"failover\": {\"servers\": %d, \"replicas\": 1, "
               "\"chunk_bytes\": %u, \"chunks\": %d, \"reps\": %d, \"after_s\": %g",
            cpus.worker_s, cpus.server_s, cfg.servers, cfg.chunks, cfg.reps, cfg.target_s, cfg.seed, GOAL, FO_SERVERS,
            FO_CHUNK, cfg.chunks, cfg.fo_reps, cfg.after_s);
    for (int m = 0; m < FO_NMETRICS; m++) {
        double st[3], v[MAX_REPS];
        fo_stats(fo, m, v, st);
        bench_json_series(f, fo_names[m], st, v, cfg.fo_reps);
    }
    fprintf(f, ", \"runs\": [");
    for (int i = 0; i < cfg.fo_reps; i++)
        fprintf(f, "%s{\"victim_index\": %d, \"kill_after_s\": %.4f, \"rounds_after_kill\": %d}", i ? ", " : "",
                fo[i].victim, fo[i].delay_s, fo[i].rounds_after);
    fprintf(f, "]}, \"rows\": [");
    for (size_t i = 0; i < NSIZES && cfg.reps > 0; i++) {
        const tput_t *t = &rows[i];
        fprintf(f, "%s{\"chunk_bytes\": %zu, \"tensor_bytes\": %zu", i ? ", " : "", t->chunk, t->chunk * (size_t)cfg.chunks);
        for (int r = 0; r < 2; r++) {
            fprintf(f, ", \"replicas%d\": {\"replicas\": %d", r, r);
            bench_json_series(f, "GBps", t->st_gbps[r], t->gbps[r], cfg.reps);
            bench_json_series(f, "rounds_per_s", t->st_rps[r], t->rps[r], cfg.reps);
            bench_json_series(f, "server_cpu_s_per_round", t->st_cpu[r], t->cpu[r], cfg.reps);
            fprintf(f, "}");
        }
        fprintf(f, ", \"ratio\": %.4f", t->ratio);
        bench_json_series(f, "paired_ratio", t->st_paired, t->paired, cfg.reps);
        fprintf(f, ", \"goal_met\": %s}", t->ratio >= GOAL ? "true" : "false");
    }
    return bench_json_finish(PROG, &f, cfg.json);
}

/* ---- main ------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    char pserv_buf[PATH_MAX];
    cfg.pserv = proc_next_to_me("../cli/pserv", pserv_buf, sizeof(pserv_buf));
    cfg.seed = (int)((unsigned)time(NULL) ^ (unsigned)getpid()) & INT_MAX;
    const bench_opt_t opts[] = {
        BENCH_INT("--reps", "R", "throughput turns of each job (default 5; 0: no throughput)", &cfg.reps, 0, MAX_REPS),
        BENCH_PARSE("--target-s", "S", "seconds of rounds per turn (default 1.5)", &cfg.target_s, bench_parse_seconds),
        BENCH_INT("--servers", "N", "servers of the throughput jobs (default 2)", &cfg.servers, 2, MAX_SERVERS),
        BENCH_INT("--chunks", "C", "chunks in the tensor (default 8)", &cfg.chunks, 1, 64),
        BENCH_INT("--failover-reps", "F", "failovers (default 5; 0: none)", &cfg.fo_reps, 0, MAX_REPS),
        BENCH_PARSE("--after-s", "A", "seconds of rounds after the kill (default 1)", &cfg.after_s, bench_parse_seconds),
        BENCH_INT("--seed", "X", "seed of the kills' moments and victims (default: from the clock)", &cfg.seed, 0, INT_MAX),
        BENCH_FLAG("--quick", "2 turns of 0.3 s, 2 failovers: a check that it runs, not numbers to keep", &cfg.quick),
        BENCH_STRING("--pserv", "PATH", "the pserv CLI (default: ../cli/pserv next to this program)", &cfg.pserv),
        BENCH_STRING("--worker-cpus", "LIST", "CPUs of the worker (default: first half of ours)", &cfg.worker_cpus),
        BENCH_STRING("--server-cpus", "LIST", "CPUs of the servers (default: second half)", &cfg.server_cpus),
        BENCH_JSON(&cfg.json),
    };
    int rc = bench_parse_args(PROG, argc, argv, opts, BENCH_NOPTS(opts));
    if (rc != BENCH_CONTINUE) return rc;
    if (cfg.quick) {
        cfg.reps = cfg.reps < 2 ? cfg.reps : 2;
        cfg.target_s = 0.3;
        cfg.fo_reps = cfg.fo_reps < 2 ? cfg.fo_reps : 2;
    }
    if (access(cfg.pserv, X_OK) != 0) {
        fprintf(stderr, PROG ": cannot run %s (--pserv names the program)\n", cfg.pserv);
        return 2;
    }
    if ((rc = cpus_pin_worker(PROG, cfg.worker_cpus, cfg.server_cpus, &cpus)) != 0) return rc;
    procs_install_cleanup();
    srand((unsigned)cfg.seed);
    size_t max_count = (size_t)cfg.chunks * sizes[NSIZES - 1] / sizeof(float);
    static tput_t rows[NSIZES];
    static fo_t fo[MAX_REPS];
    if ((grad = malloc(max_count * sizeof(float))) == NULL) return 1;
    for (size_t i = 0; i < max_count; i++) grad[i] = (float)((int)(i % 7) - 3);
    env = (cli_job_env_t){.prog = PROG, .pserv = cfg.pserv, .timeout_s = cfg.timeout_s, .cpus = &cpus, .grad = grad};

    char cpu[256];
    bench_cpu_model(cpu, sizeof(cpu));
    printf(PROG ": pserv %s, %s, %ld cores; worker CPUs %s, server CPUs %s; PSERV_PROGRESS=%s; seed %d\n",
           pserv_version(), cpu, sysconf(_SC_NPROCESSORS_ONLN), cpus.worker_s, cpus.server_s,
           getenv("PSERV_PROGRESS") ? getenv("PSERV_PROGRESS") : "(unset)", cfg.seed);
    fflush(stdout);
    for (size_t i = 0; i < NSIZES && cfg.reps > 0; i++) {
        fprintf(stderr, PROG ": %zu MiB chunks, --replicas 0 and 1 in turns...\n", sizes[i] >> 20);
        if (measure_size(sizes[i], &rows[i]) != 0) return 1;
    }
    for (int i = 0; i < cfg.fo_reps; i++) {
        fprintf(stderr, PROG ": failover %d/%d\n", i + 1, cfg.fo_reps);
        if (fo_job(&fo[i]) != 0) return 1;
    }
    print_tables(rows, fo);
    return cfg.json && write_json(rows, fo) != 0 ? 1 : 0;
}
