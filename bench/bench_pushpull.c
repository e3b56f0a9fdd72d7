/*
 * pserv_bench_pushpull: a worker's fused push-pull as a user runs it, against UCX alone.
 *
 *   pserv_bench_pushpull [--max-mib M] [--reps R] [--target-s S] [--quick] [--progress MODE]
 *                        [--pserv PATH] [--raw PATH] [--raw-rndv-min B] [--perftest PATH|none]
 *                        [--worker-cpus LIST] [--server-cpus LIST] [--json FILE] [--table FILE]
 *
 * pserv: `pserv coordinator` and `pserv server` run as separate processes (the CLI), this
 * program is the job's one worker (pserv_worker_*, SGD), the server pinned to other CPUs than
 * the worker. Per size, 8 B to 64 MiB, it times pserv_worker_push_pull + wait: the gradient goes
 * to the shard, which steps SGD, and the new values come back.
 *
 * Baseline, in the same run, on the same CPUs: pserv_raw_ucx_am_echo (bench/raw: a UCP active
 * message echo, no pserv code, two processes) sends the same bytes and gets as many back. Reference
 * columns: Debian's ucx_perftest ucp_am_lat / ucp_am_bw when installed, with UCX's default
 * transports and with UCX_TLS=tcp.
 *
 * The phases run one after the other (raw echo, ucx_perftest, pserv), each size warmed up and
 * then timed for about --target-s seconds.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "procs.h"
#include "pserv/pserv.h"
#include "ucx_ref.h"

#define PROG "pserv_bench_pushpull"
#define MAX_REPS 1000000

static const size_t all_sizes[] = {8, 64, 512, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20};
#define NSIZES (sizeof(all_sizes) / sizeof(all_sizes[0]))
#define P99_MAX_BYTES 65536 /* p99 is shown up to here; larger sizes have too few round trips */

typedef struct {
    int reps;
    double p50_s, p99_s, mean_s;
} lat_t;

typedef struct {
    const char *pserv, *raw, *perftest, *json, *table, *progress, *worker_cpus, *server_cpus;
    int reps, quick;
    size_t max_mib, rndv_min;
    double target_s, timeout_s;
} cfg_t;

/* ---- paths and options ----------------------------------------------------------------------- */

/* The path of name in PATH, or NULL. */
static const char *in_path(const char *name, char *buf, size_t cap)
{
    const char *path = getenv("PATH");
    if (path == NULL) return NULL;
    for (const char *p = path; *p;) {
        size_t len = strcspn(p, ":");
        snprintf(buf, cap, "%.*s/%s", (int)len, p, name);
        if (len && access(buf, X_OK) == 0) return buf;
        p += len + (p[len] == ':');
    }
    return NULL;
}

static int parse_progress(const char *text, void *value)
{
    if (strcmp(text, "auto") != 0 && strcmp(text, "spin") != 0 && strcmp(text, "sleep") != 0) return -1;
    *(const char **)value = text;
    return 0;
}

/* ---- the pserv job: coordinator and server as processes, this process the worker ------------ */

typedef struct {
    proc_t coord, server;
    pserv_worker_h w;
    char addr[64];
    size_t chunk_bytes;
} job_t;

static int job_start(job_t *j, const char *pserv, const cpus_split_t *k, double timeout_s)
{
    static const char *const args[] = {"--servers", "1", "--workers", "1", NULL};
    /* The coordinator only answers heartbeats in steady state: it runs anywhere. */
    if (proc_pserv_coordinator(&j->coord, pserv, args, k->pinned ? &k->all : NULL, PROC_CAPTURE_OUT, j->addr,
                               sizeof(j->addr), timeout_s) != 0 ||
        proc_pserv_server(&j->server, pserv, j->addr, k->pinned ? &k->server : NULL, timeout_s) != 0)
        return -1;

    if (k->pinned && sched_setaffinity(0, sizeof(k->worker), &k->worker) != 0) {
        fprintf(stderr, PROG ": cannot pin the worker to CPUs %s: %s\n", k->worker_s, strerror(errno));
        return -1;
    }
    if (bench_worker_join(PROG, j->addr, (int)(timeout_s * 1000), &j->w) != 0) return -1;
    pserv_job_info_t info = PSERV_JOB_INFO_INIT;
    if (pserv_worker_job(j->w, &info) == PSERV_OK) j->chunk_bytes = info.chunk_bytes;
    return 0;
}

/*
 * With a worker: it leaves, which ends the job, and both processes exit by themselves (0 if they
 * did within timeout_s). Without one (the job never formed): they are stopped at once.
 */
static int job_stop(job_t *j, double timeout_s)
{
    int rc = 0;
    if (j->w) {
        pserv_worker_destroy(j->w);
        j->w = NULL;
        if (j->server.pid > 0 && proc_wait(&j->server, timeout_s) != 0) rc = -1;
        if (j->coord.pid > 0 && proc_wait(&j->coord, timeout_s) != 0) rc = -1;
    }
    proc_stop(&j->server, 1.0);
    proc_stop(&j->coord, 1.0);
    return rc;
}

/* Seconds of one push-pull, or -1. */
static double push_pull(pserv_worker_h w, uint64_t key, const float *grad, float *out, double timeout_s)
{
    pserv_request_t req;
    double t0 = bench_now();
    if (pserv_worker_push_pull(w, key, grad, out, &req) != PSERV_OK ||
        pserv_worker_wait(w, req, (int)(timeout_s * 1000)) != PSERV_OK) {
        fprintf(stderr, PROG ": push-pull failed: %s\n", pserv_worker_last_error(w));
        return -1;
    }
    return bench_now() - t0;
}

static int pserv_size(const cfg_t *c, job_t *j, uint64_t key, size_t bytes, float *grad, float *out, double *t,
                      lat_t *res)
{
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = key;
    tp.count = bytes / sizeof(float);
    tp.optim.type = PSERV_OPTIM_SGD;
    tp.optim.lr = 1e-6f;
    if (pserv_worker_register(j->w, &tp) != PSERV_OK) {
        fprintf(stderr, PROG ": register %zu bytes: %s\n", bytes, pserv_worker_last_error(j->w));
        return -1;
    }
    /* Warm-up: at least 10 round trips and a tenth of the target; it also sizes the run. */
    double w0 = bench_now(), s;
    int warm = 0;
    while (warm < 10 || (bench_now() - w0 < c->target_s / 10 && warm < MAX_REPS)) {
        if ((s = push_pull(j->w, key, grad, out, c->timeout_s)) < 0) return -1;
        warm++;
    }
    double per = (bench_now() - w0) / warm, want = c->target_s / per;
    res->reps = c->reps ? c->reps : want < 10 ? 10 : want > MAX_REPS ? MAX_REPS : (int)want;
    double sum = 0;
    for (int i = 0; i < res->reps; i++) {
        if ((t[i] = push_pull(j->w, key, grad, out, c->timeout_s)) < 0) return -1;
        sum += t[i];
    }
    res->p50_s = bench_median(t, (size_t)res->reps);
    res->p99_s = bench_percentile(t, (size_t)res->reps, 0.99);
    res->mean_s = sum / res->reps;
    return 0;
}

/* ---- output ----------------------------------------------------------------------------------- */

typedef struct {
    size_t bytes;
    raw_row_t raw;               /* the baseline: per kind, the faster of the two below */
    raw_row_t raw_ucx, raw_rndv; /* UCX's protocol choice; rendezvous forced (when have_rndv) */
    int have_rndv, lat_rndv, stream_rndv; /* which one raw's ping-pong and stream come from */
    perftest_row_t pt, pt_tcp;
    lat_t ps;
} row_t;

static double stream_Bps(const raw_row_t *r)
{
    return r->bw_s > 0 ? (double)r->bytes * (double)r->bw_msgs / r->bw_s : 0;
}

/* The baseline of a size: the faster ping-pong (by p50) and the faster stream of the two runs. */
static void pick_baseline(row_t *r)
{
    r->raw = r->raw_ucx;
    if (!r->have_rndv) return;
    if ((r->lat_rndv = r->raw_rndv.p50_s < r->raw_ucx.p50_s)) {
        r->raw.reps = r->raw_rndv.reps;
        r->raw.p50_s = r->raw_rndv.p50_s;
        r->raw.p99_s = r->raw_rndv.p99_s;
        r->raw.mean_s = r->raw_rndv.mean_s;
    }
    if ((r->stream_rndv = stream_Bps(&r->raw_rndv) > stream_Bps(&r->raw_ucx))) {
        r->raw.bw_window = r->raw_rndv.bw_window;
        r->raw.bw_msgs = r->raw_rndv.bw_msgs;
        r->raw.bw_s = r->raw_rndv.bw_s;
    }
}

static double gbs(double bytes, double s)
{
    return s > 0 ? bytes / s / 1e9 : 0;
}

static void print_tables(const row_t *rows, size_t n, int have_pt, size_t rndv_min)
{
    if (rndv_min)
        printf("raw UCX: per size the faster of UCX's protocol choice and rendezvous forced from %zu B (marked *)\n",
               rndv_min);
    printf("\nround trip, us (p50 = median; p99 up to %d KiB)   time ratio = pserv p50 / raw UCX p50\n",
           P99_MAX_BYTES >> 10);
    printf("%10s | %9s  %9s | %9s %9s | %9s %9s | %6s\n", "bytes", "raw p50", "raw p99", "pserv p50", "pserv p99",
           have_pt ? "perftest" : "", have_pt ? "pt tcp" : "", "time");
    for (size_t i = 0; i < n; i++) {
        const row_t *r = &rows[i];
        char rp99[16] = "-", pp99[16] = "-", pt[16] = "-", ptt[16] = "-";
        if (r->bytes <= P99_MAX_BYTES) {
            snprintf(rp99, sizeof(rp99), "%.1f", r->raw.p99_s * 1e6);
            snprintf(pp99, sizeof(pp99), "%.1f", r->ps.p99_s * 1e6);
        }
        if (r->pt.lat_ok) snprintf(pt, sizeof(pt), "%.1f", 2 * r->pt.lat_s * 1e6);
        if (r->pt_tcp.lat_ok) snprintf(ptt, sizeof(ptt), "%.1f", 2 * r->pt_tcp.lat_s * 1e6);
        printf("%10zu | %9.1f%c %9s | %9.1f %9s | %9s %9s | %6.2f\n", r->bytes, r->raw.p50_s * 1e6,
               r->lat_rndv ? '*' : ' ', rp99,
               r->ps.p50_s * 1e6, pp99, have_pt ? pt : "", have_pt ? ptt : "", r->ps.p50_s / r->raw.p50_s);
    }
    printf("\ngoodput, GB/s (1 GB = 1e9 B): 2-way = 2 x bytes / p50 round trip; 1-way = bytes / p50 round trip;\n"
           "stream = raw UCX, one way, 32 in flight (at most 64 MiB); am_bw = ucx_perftest ucp_am_bw, one way\n"
           "ratio = pserv 2-way / raw 2-way;  vs stream = pserv 1-way / raw stream\n");
    printf("%10s | %9s %9s %6s | %9s %9s  %9s %9s | %9s\n", "bytes", "raw 2way", "pserv 2way", "ratio", "pserv 1way",
           "stream", have_pt ? "am_bw" : "", have_pt ? "am_bw tcp" : "", "vs stream");
    for (size_t i = 0; i < n; i++) {
        const row_t *r = &rows[i];
        double b = (double)r->bytes, raw2 = gbs(2 * b, r->raw.p50_s), ps2 = gbs(2 * b, r->ps.p50_s);
        double ps1 = gbs(b, r->ps.p50_s), stream = gbs(b * (double)r->raw.bw_msgs, r->raw.bw_s);
        char bw[16] = "-", bwt[16] = "-";
        if (r->pt.bw_ok) snprintf(bw, sizeof(bw), "%.3f", r->pt.bw_Bps / 1e9);
        if (r->pt_tcp.bw_ok) snprintf(bwt, sizeof(bwt), "%.3f", r->pt_tcp.bw_Bps / 1e9);
        printf("%10zu | %9.3f %9.3f %6.2f | %9.3f %9.3f%c %9s %9s | %9.2f\n", r->bytes, raw2, ps2, ps2 / raw2, ps1,
               stream, r->stream_rndv ? '*' : ' ', have_pt ? bw : "", have_pt ? bwt : "",
               stream > 0 ? ps1 / stream : 0);
    }
}

static void json_raw(FILE *f, const char *name, const raw_row_t *r)
{
    fprintf(f, ", \"%s\": {\"reps\": %d, \"p50_s\": %.9f, \"p99_s\": %.9f, \"mean_s\": %.9f, \"stream_window\": %d, "
               "\"stream_msgs\": %llu, \"stream_s\": %.9f, \"stream_GBps_1way\": %.6g}",
            name, r->reps, r->p50_s, r->p99_s, r->mean_s, r->bw_window, r->bw_msgs, r->bw_s, stream_Bps(r) / 1e9);
}

static void json_perftest(FILE *f, const char *name, const perftest_row_t *p)
{
    fprintf(f, ", \"%s\": {", name);
    if (p->lat_ok) fprintf(f, "\"lat_one_way_s\": %.9f, \"lat_p50_one_way_s\": %.9f, \"round_trip_s\": %.9f", p->lat_s,
                           p->lat_p50_s, 2 * p->lat_s);
    if (p->bw_ok) fprintf(f, "%s\"bw_one_way_GBps\": %.6g", p->lat_ok ? ", " : "", p->bw_Bps / 1e9);
    fprintf(f, "}");
}

static int write_json(const cfg_t *c, const cpus_split_t *k, const char *ucx_version, const job_t *j, const row_t *rows,
                      size_t n, int window, int have_pt, double idle)
{
    FILE *f = bench_json_begin(PROG, c->json, "pushpull");
    if (f == NULL) return -1;
    fprintf(f, ", \"mode\": \"processes\", \"ucx_version\": ");
    bench_json_str(f, ucx_version);
    fprintf(f, ", \"progress\": ");
    bench_json_str(f, c->progress);
    fprintf(f, ", \"idle_server_cpu_fraction\": %.4f, \"ucx_tls\": ", idle);
    bench_json_str(f, getenv("UCX_TLS"));
    fprintf(f, ", \"worker_cpus\": \"%s\", \"server_cpus\": \"%s\", \"chunk_bytes\": %zu, \"target_s\": %g, "
               "\"raw_window\": %d, \"raw_rndv_min\": %zu, \"perftest\": %s, \"rows\": [",
            k->worker_s, k->server_s, j->chunk_bytes, c->target_s, window, c->rndv_min, have_pt ? "true" : "false");
    for (size_t i = 0; i < n; i++) {
        const row_t *r = &rows[i];
        double b = (double)r->bytes;
        fprintf(f,
                "%s{\"bytes\": %zu, \"raw\": {\"reps\": %d, \"p50_s\": %.9f, \"p99_s\": %.9f, \"mean_s\": %.9f, "
                "\"GBps_2way\": %.6g, \"stream_window\": %d, \"stream_msgs\": %llu, \"stream_s\": %.9f, \"stream_GBps_1way\": %.6g}, "
                "\"pserv\": {\"reps\": %d, \"p50_s\": %.9f, \"p99_s\": %.9f, \"mean_s\": %.9f, \"GBps_2way\": %.6g, "
                "\"GBps_1way\": %.6g}, \"time_ratio\": %.4f, \"goodput_ratio\": %.4f, \"vs_stream\": %.4f",
                i ? ", " : "", r->bytes, r->raw.reps, r->raw.p50_s, r->raw.p99_s, r->raw.mean_s,
                gbs(2 * b, r->raw.p50_s), r->raw.bw_window, r->raw.bw_msgs, r->raw.bw_s, gbs(b * (double)r->raw.bw_msgs, r->raw.bw_s),
                r->ps.reps, r->ps.p50_s, r->ps.p99_s, r->ps.mean_s, gbs(2 * b, r->ps.p50_s), gbs(b, r->ps.p50_s),
                r->ps.p50_s / r->raw.p50_s, r->raw.p50_s / r->ps.p50_s,
                r->raw.bw_s > 0 ? gbs(b, r->ps.p50_s) / gbs(b * (double)r->raw.bw_msgs, r->raw.bw_s) : 0);
        fprintf(f, ", \"raw_protocol\": \"%s\", \"raw_stream_protocol\": \"%s\"", r->lat_rndv ? "rndv" : "ucx",
                r->stream_rndv ? "rndv" : "ucx");
        json_raw(f, "raw_ucx_choice", &r->raw_ucx);
        if (r->have_rndv) json_raw(f, "raw_forced_rndv", &r->raw_rndv);
        if (have_pt) {
            json_perftest(f, "perftest", &r->pt);
            json_perftest(f, "perftest_tcp", &r->pt_tcp);
        }
        fprintf(f, "}");
    }
    return bench_json_finish(PROG, &f, c->json);
}

/* Whitespace-separated columns for gnuplot; '-' where a value is missing. */
static int write_table(const char *path, const row_t *rows, size_t n)
{
    FILE *f = bench_json_open(PROG, path);
    if (f == NULL) return -1;
    fprintf(f, "# bytes raw_p50_us pserv_p50_us raw_GBps_2way pserv_GBps_2way pserv_GBps_1way raw_stream_GBps "
               "perftest_bw_GBps perftest_tcp_bw_GBps perftest_rt_us perftest_tcp_rt_us time_ratio goodput_ratio\n");
    for (size_t i = 0; i < n; i++) {
        const row_t *r = &rows[i];
        double b = (double)r->bytes;
        char v[4][32];
        snprintf(v[0], 32, r->pt.bw_ok ? "%.6f" : "-", r->pt.bw_Bps / 1e9);
        snprintf(v[1], 32, r->pt_tcp.bw_ok ? "%.6f" : "-", r->pt_tcp.bw_Bps / 1e9);
        snprintf(v[2], 32, r->pt.lat_ok ? "%.3f" : "-", 2 * r->pt.lat_s * 1e6);
        snprintf(v[3], 32, r->pt_tcp.lat_ok ? "%.3f" : "-", 2 * r->pt_tcp.lat_s * 1e6);
        fprintf(f, "%zu %.3f %.3f %.6f %.6f %.6f %.6f %s %s %s %s %.6g %.6g\n", r->bytes, r->raw.p50_s * 1e6,
                r->ps.p50_s * 1e6, gbs(2 * b, r->raw.p50_s), gbs(2 * b, r->ps.p50_s), gbs(b, r->ps.p50_s),
                gbs(b * (double)r->raw.bw_msgs, r->raw.bw_s), v[0], v[1], v[2], v[3], r->ps.p50_s / r->raw.p50_s,
                r->raw.p50_s / r->ps.p50_s);
    }
    return bench_json_close(PROG, f, path);
}

/* The raw echo, tried twice: a loaded machine can starve a busy-polling peer into a UCX timeout. */
static int raw_run(const cfg_t *c, const ucx_ref_cfg_t *cfg, const size_t *sizes, size_t n, raw_row_t *rows,
                   char *ver, size_t cap)
{
    if (ucx_raw_run(c->raw, cfg, sizes, n, rows, ver, cap) == 0) return 0;
    fprintf(stderr, PROG ": the raw UCX echo failed; once more\n");
    if (ucx_raw_run(c->raw, cfg, sizes, n, rows, ver, cap) == 0) return 0;
    fprintf(stderr, PROG ": the raw UCX echo failed twice: no baseline, no results\n");
    return -1;
}

/* The share of a core the server uses over IDLE_S once requests have stopped (its progress and
 * apply threads asleep, heartbeats only, in auto and sleep modes); -1 if /proc cannot say. */
#define IDLE_S 2.0
static double idle_cpu(const proc_t *server)
{
    struct timespec settle = {0, 200 * 1000 * 1000}, idle = {(time_t)IDLE_S, 0};
    nanosleep(&settle, NULL);
    double before = proc_cpu_s(server);
    nanosleep(&idle, NULL);
    double after = proc_cpu_s(server);
    return before < 0 || after < 0 ? -1 : (after - before) / IDLE_S;
}

/* ---- main ------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    char pserv_buf[PATH_MAX], raw_buf[PATH_MAX], pt_buf[PATH_MAX];
    cfg_t c = {.pserv = proc_next_to_me("../cli/pserv", pserv_buf, sizeof(pserv_buf)),
               .raw = proc_next_to_me("raw/pserv_raw_ucx_am_echo", raw_buf, sizeof(raw_buf)),
               .max_mib = 64,
               .rndv_min = 256 << 10, /* pserv's transport forces rendezvous from there */
               .target_s = 0.5,
               .timeout_s = 60};
    const bench_opt_t opts[] = {
        BENCH_SIZE("--max-mib", "M", "largest message in MiB (default 64)", &c.max_mib, 1, 1024),
        BENCH_INT("--reps", "R", "timed round trips per size (default: enough for --target-s)", &c.reps, 1, MAX_REPS),
        BENCH_PARSE("--target-s", "S", "seconds each size is timed for (default 0.5)", &c.target_s, bench_parse_seconds),
        BENCH_FLAG("--quick", "0.1 s per size, up to 16 MiB: a check that it runs, not numbers to keep", &c.quick),
        BENCH_PARSE("--progress", "MODE", "auto|spin|sleep: exported as PSERV_PROGRESS (default: not set)", &c.progress,
                    parse_progress),
        BENCH_STRING("--pserv", "PATH", "the pserv CLI (default: ../cli/pserv next to this program)", &c.pserv),
        BENCH_STRING("--raw", "PATH", "the raw UCX echo (default: raw/pserv_raw_ucx_am_echo next to it)", &c.raw),
        BENCH_SIZE("--raw-rndv-min", "B",
                   "raw echo also run forcing rendezvous from B bytes, the faster kept (default 262144; 0: not)",
                   &c.rndv_min, 0, 1ll << 34),
        BENCH_STRING("--perftest", "PATH", "ucx_perftest, or none (default: from PATH when installed)", &c.perftest),
        BENCH_STRING("--worker-cpus", "LIST", "CPUs of the worker (default: first half of ours)", &c.worker_cpus),
        BENCH_STRING("--server-cpus", "LIST", "CPUs of the server (default: second half)", &c.server_cpus),
        BENCH_JSON(&c.json),
        BENCH_STRING("--table", "FILE", "also write whitespace-separated columns (for gnuplot)", &c.table),
    };
    int rc = bench_parse_args(PROG, argc, argv, opts, BENCH_NOPTS(opts));
    if (rc != BENCH_CONTINUE) return rc;
    if (c.quick) {
        c.target_s = 0.1;
        c.max_mib = c.max_mib < 16 ? c.max_mib : 16;
    }
    procs_install_cleanup();
    /* Before any thread exists, so the worker's and the children's progress threads see it. */
    if (c.progress && setenv("PSERV_PROGRESS", c.progress, 1) != 0) return 1;
    if (access(c.pserv, X_OK) != 0 || access(c.raw, X_OK) != 0) {
        fprintf(stderr, PROG ": cannot run %s (--pserv or --raw names the program)\n",
                access(c.pserv, X_OK) != 0 ? c.pserv : c.raw);
        return 2;
    }
    int pt_off = c.perftest && strcmp(c.perftest, "none") == 0;
    if (c.perftest == NULL) c.perftest = in_path("ucx_perftest", pt_buf, sizeof(pt_buf));
    if (pt_off) c.perftest = NULL;
    cpus_split_t k;
    if (cpus_split(PROG, c.worker_cpus, c.server_cpus, &k) != 0) return 2;

    size_t sizes[NSIZES], n = 0, max_bytes = c.max_mib << 20;
    for (size_t i = 0; i < NSIZES; i++)
        if (all_sizes[i] <= max_bytes) sizes[n++] = all_sizes[i];
    row_t rows[NSIZES];
    raw_row_t raw[NSIZES], rndv[NSIZES];
    perftest_row_t pt[NSIZES], pt_tcp[NSIZES];
    char ucx_version[64] = "unknown";
    memset(rows, 0, sizeof(rows));
    memset(pt, 0, sizeof(pt));
    memset(pt_tcp, 0, sizeof(pt_tcp));

    char cpu[256];
    bench_cpu_model(cpu, sizeof(cpu));
    printf(PROG ": pserv %s, %s, %ld cores; worker CPUs %s, server CPUs %s; PSERV_PROGRESS=%s; ~%.2f s per size\n",
           pserv_version(), cpu, sysconf(_SC_NPROCESSORS_ONLN), k.worker_s, k.server_s,
           c.progress ? c.progress : "(unset)", c.target_s);
    fflush(stdout);

    ucx_ref_cfg_t rc_cfg = {.client_cpu = k.pinned ? cpus_first(&k.worker) : -1,
                            .server_cpu = k.pinned ? cpus_first(&k.server) : -1,
                            .target_s = c.target_s,
                            .reps = c.reps,
                            .window = 32,
                            .timeout_s = c.timeout_s};
    fprintf(stderr, PROG ": raw UCX echo (%s)...\n", c.raw);
    if (raw_run(&c, &rc_cfg, sizes, n, raw, ucx_version, sizeof(ucx_version)) != 0) return 1;
    size_t first_rndv = n; /* sizes from here on also run with rendezvous forced */
    for (size_t i = n; c.rndv_min && i-- > 0;)
        if (sizes[i] >= c.rndv_min) first_rndv = i;
    for (size_t i = 0; i < n; i++) {
        rows[i].bytes = sizes[i];
        rows[i].raw_ucx = raw[i];
        rows[i].have_rndv = i >= first_rndv;
    }
    if (first_rndv < n) {
        char ver[64];
        fprintf(stderr, PROG ": raw UCX echo, rendezvous forced from %zu B...\n", c.rndv_min);
        rc_cfg.rndv_min = c.rndv_min;
        if (raw_run(&c, &rc_cfg, sizes + first_rndv, n - first_rndv, rndv + first_rndv, ver, sizeof(ver)) != 0)
            return 1;
        rc_cfg.rndv_min = 0;
        for (size_t i = first_rndv; i < n; i++) rows[i].raw_rndv = rndv[i];
    }
    for (size_t i = 0; i < n; i++) {
        pick_baseline(&rows[i]);
        raw[i] = rows[i].raw; /* ucx_perftest's runs are sized from the baseline */
    }
    int have_pt = 0;
    if (c.perftest) {
        fprintf(stderr, PROG ": %s ucp_am_lat, ucp_am_bw (UCX defaults, then UCX_TLS=tcp)...\n", c.perftest);
        have_pt = ucx_perftest_run(c.perftest, &rc_cfg, NULL, sizes, n, raw, pt) > 0;
        have_pt |= ucx_perftest_run(c.perftest, &rc_cfg, "tcp", sizes, n, raw, pt_tcp) > 0;
    } else {
        fprintf(stderr, PROG ": %s: its columns are left out\n",
                pt_off ? "--perftest none" : "ucx_perftest is not installed (package ucx-utils)");
    }

    fprintf(stderr, PROG ": pserv push-pull (%s coordinator, server; this process the worker)...\n", c.pserv);
    static job_t job;
    double *t = malloc(MAX_REPS * sizeof(double));
    float *grad = calloc(max_bytes / sizeof(float), sizeof(float)), *out = malloc(max_bytes);
    rc = 1;
    if (t == NULL || grad == NULL || out == NULL) goto out;
    if (job_start(&job, c.pserv, &k, c.timeout_s) != 0) goto out;
    for (size_t i = 0; i < n; i++) {
        rows[i].pt = pt[i];
        rows[i].pt_tcp = pt_tcp[i];
        if (pserv_size(&c, &job, (uint64_t)i + 1, sizes[i], grad, out, t, &rows[i].ps) != 0) goto out;
    }
    double idle = idle_cpu(&job.server);
    if (job_stop(&job, c.timeout_s) != 0) fprintf(stderr, PROG ": the job did not end cleanly\n");
    printf("UCX %s; raw UCX = pserv_raw_ucx_am_echo (bench/raw); perftest = ucx_perftest, round trip = 2 x its "
           "one-way latency; \"tcp\": with UCX_TLS=tcp\n",
           ucx_version);
    print_tables(rows, n, have_pt, first_rndv < n ? c.rndv_min : 0);
    printf("\nidle server: %.1f%% of a core over %.0f s after the last request (PSERV_PROGRESS=%s)\n", idle * 100,
           IDLE_S, c.progress ? c.progress : "(unset)");
    rc = 0;
    if (c.json && write_json(&c, &k, ucx_version, &job, rows, n, rc_cfg.window, have_pt, idle) != 0) rc = 1;
    if (c.table && write_table(c.table, rows, n) != 0) rc = 1;
out:
    job_stop(&job, 5.0);
    free(t);
    free(grad);
    free(out);
    return rc;
}
