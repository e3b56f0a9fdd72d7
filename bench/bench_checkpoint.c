/*
 * pserv_bench_checkpoint: what checkpoints cost a job, against a careful plain write of the same bytes to the same
 * folder in the same run, and what resuming costs against a fresh start (bench/README.md has the details).
 *
 *   pserv_bench_checkpoint [--mib M] [--tensors T] [--servers S] [--chunk-bytes B] [--reps R] [--dir DIR] [--json FILE]
 *
 * Two jobs in this process (S shards, one worker, sync, Adam, M MiB of float32 in T tensors), one writing a checkpoint
 * every round into a fresh folder under DIR, run rounds side by side. Per round: the step time of each, then, once
 * every shard has written its file, its bytes, write time and apply-thread pause (the shards' counters); then the
 * baselines: the same bytes written to one file (temporary, write(), fsync, rename, fsync of the folder) and copied
 * with memcpy. Then starts are timed until the worker holds the values: resuming (files evicted from the page cache,
 * and cached) against a fresh job registering the same values; each must hold the last round's values bit for bit.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "pserv/pserv.h"

#define PROG "pserv_bench_checkpoint"
#define MAX_TENSORS 64
#define MAX_SERVERS 8
#define WRITE_PIECE ((size_t)64 << 20)
#define WAIT_S 600.0         /* the longest a round's checkpoint (or its clean-up) may take */
#define SENTINEL (-12345.0f) /* what a resuming worker registers: the checkpoint must replace it */
#define PATH_CAP 4096

enum { M_CKPT, M_PLAIN, M_PAUSE, M_COPY, M_STEP_ON, M_STEP_OFF, M_COLD, M_CACHED, M_FRESH, NMETRIC };
static const struct {
    const char *name, *unit;
} metric[NMETRIC] = {{"checkpoint_write", "GB/s"}, {"plain_write", "GB/s"},         {"pause_per_checkpoint", "ms"},
                     {"memcpy_same_bytes", "ms"},  {"step_with_checkpoints", "ms"}, {"step_without", "ms"},
                     {"resume_cold", "s"},         {"resume_cached", "s"},          {"fresh_start", "s"}};
static const struct {
    const char *name;
    int num, den; /* a ratio of medians */
} ratio[] = {{"write", M_CKPT, M_PLAIN},          {"pause_vs_step", M_PAUSE, M_STEP_OFF},
             {"pause_vs_memcpy", M_PAUSE, M_COPY}, {"step_with_vs_without", M_STEP_ON, M_STEP_OFF},
             {"resume_cold_vs_fresh", M_COLD, M_FRESH}, {"resume_cached_vs_fresh", M_CACHED, M_FRESH}};
#define NRATIO (sizeof(ratio) / sizeof(ratio[0]))

typedef struct {
    unsigned ntensors, nservers;
    size_t chunk_bytes, total; /* total: floats of all tensors */
    size_t count[MAX_TENSORS], off[MAX_TENSORS];
    float *grad, *last, *scratch; /* one gradient for all tensors; the last round's pull (checkpoints); others */
    int reps;
    double *t;                  /* NMETRIC x reps samples */
    uint64_t bytes, last_round; /* of one checkpoint; the round of the last */
    char base[PATH_CAP], ckpt[PATH_CAP + 8];
} run_t;

typedef struct {
    pserv_local_h local;
    pserv_worker_h w;
    pserv_server_h srv[MAX_SERVERS];
} job_t;

/* What the shards did between two readings of their counters; write_ns: the slowest shard's. */
typedef struct {
    uint64_t files, skipped, bytes, pause_ns, write_ns;
} ckpt_delta_t;

static int fail(const char *what, pserv_status_t st, const char *detail)
{
    fprintf(stderr, PROG ": %s: %s (%s)\n", what, pserv_strerror(st), detail);
    return -1;
}

/* Values in [-0.5, 0.5) that differ from their neighbours, so a chunk in the wrong place shows. */
static void fill(float *v, size_t n, uint32_t mul)
{
    for (size_t i = 0; i < n; i++) v[i] = (float)((uint32_t)(i * mul) >> 16) / 65536.0f - 0.5f;
}

/* ---- the jobs --------------------------------------------------------------------------------- */

/* Starts a job and its worker: checkpoints every round into ckpt_dir, or resuming from
 * resume_dir (either NULL). 0, or -1 with the reason on stderr and nothing left running. */
static int job_start(const run_t *m, const char *ckpt_dir, const char *resume_dir, job_t *j)
{
    pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    lp.num_servers = m->nservers, lp.num_workers = 1, lp.chunk_bytes = m->chunk_bytes;
    lp.checkpoint_dir = ckpt_dir, lp.checkpoint_every = ckpt_dir ? 1 : 0, lp.resume_dir = resume_dir;
    memset(j, 0, sizeof(*j));
    pserv_status_t st = pserv_local_create(&lp, &j->local);
    if (st != PSERV_OK) return fail("cannot start the job", st, pserv_last_error());
    wp.coordinator = pserv_local_coordinator(j->local);
    if ((st = pserv_worker_create(&wp, &j->w)) != PSERV_OK) fail("cannot join the job", st, pserv_last_error());
    for (unsigned i = 0; i < m->nservers && st == PSERV_OK; i++)
        if ((st = pserv_local_server(j->local, i, 30000, &j->srv[i])) != PSERV_OK)
            fail("no server handle", st, pserv_last_error());
    if (st == PSERV_OK) return 0;
    bench_job_stop(PROG, j->local, j->w);
    memset(j, 0, sizeof(*j));
    return -1;
}

/* Registers every tensor (Adam) with init + its offset as initial values, or SENTINEL everywhere
 * when init is NULL. */
static int job_register(const run_t *m, const job_t *j, const float *init)
{
    for (unsigned t = 0; t < m->ntensors; t++) {
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = t + 1, tp.count = m->count[t], tp.init = init ? init + m->off[t] : NULL, tp.init_value = SENTINEL;
        tp.optim.type = PSERV_OPTIM_ADAM, tp.optim.lr = 1e-3f;
        pserv_status_t st = pserv_worker_register(j->w, &tp);
        if (st != PSERV_OK) return fail("register", st, pserv_worker_last_error(j->w));
    }
    return 0;
}

/* A step: push_pull of every tensor (a pull when grad is NULL) into out, all in flight at once;
 * its seconds, or -1. */
static double job_round(const run_t *m, const job_t *j, const float *grad, float *out)
{
    pserv_request_t req[MAX_TENSORS];
    pserv_status_t st = PSERV_OK;
    unsigned n = 0;
    double t0 = bench_now();
    while (n < m->ntensors && st == PSERV_OK) {
        float *dst = out + m->off[n];
        st = grad ? pserv_worker_push_pull(j->w, n + 1, grad, dst, &req[n]) : pserv_worker_pull(j->w, n + 1, dst, &req[n]);
        n += st == PSERV_OK;
    }
    for (unsigned i = 0; i < n; i++) {
        pserv_status_t ws = pserv_worker_wait(j->w, req[i], 600000);
        st = st == PSERV_OK ? ws : st;
    }
    if (st != PSERV_OK) return fail(grad ? "push_pull" : "pull", st, pserv_worker_last_error(j->w));
    return bench_now() - t0;
}

/* The shards' counters into now; with before, what they did since into *d. */
static void shard_stats(const run_t *m, const job_t *j, pserv_server_stats_t *now, const pserv_server_stats_t *before,
                        ckpt_delta_t *d)
{
    *d = (ckpt_delta_t){0, 0, 0, 0, 0};
    for (unsigned i = 0; i < m->nservers; i++) {
        now[i] = (pserv_server_stats_t)PSERV_SERVER_STATS_INIT;
        pserv_server_stats(j->srv[i], &now[i]);
        if (before == NULL) continue;
        const pserv_server_stats_t *a = &before[i], *b = &now[i];
        d->files += b->checkpoints - a->checkpoints;
        d->skipped += b->checkpoints_skipped - a->checkpoints_skipped;
        d->bytes += b->checkpoint_bytes - a->checkpoint_bytes;
        d->pause_ns += b->checkpoint_pause_ns - a->checkpoint_pause_ns;
        uint64_t w = b->checkpoint_write_ns - a->checkpoint_write_ns;
        d->write_ns = w > d->write_ns ? w : d->write_ns;
    }
}

static void sleep_ms(void) { nanosleep(&(struct timespec){0, 1000000}, NULL); }

/* A round of the job with checkpoints, then the wait until every shard has written (or skipped)
 * its file, the counters' deltas in *d. Seconds of the round, or -1. */
static double ckpt_round(const run_t *m, const job_t *j, float *out, ckpt_delta_t *d)
{
    pserv_server_stats_t a[MAX_SERVERS], b[MAX_SERVERS];
    shard_stats(m, j, a, NULL, d);
    double s = job_round(m, j, m->grad, out), deadline = bench_now() + WAIT_S;
    for (; s >= 0; sleep_ms()) {
        shard_stats(m, j, b, a, d);
        if (d->files + d->skipped >= m->nservers) return s;
        if (bench_now() > deadline) break;
    }
    if (s >= 0) fprintf(stderr, PROG ": %llu of %u checkpoint files written in %.0f s\n", (unsigned long long)d->files,
                        m->nservers, WAIT_S);
    return -1;
}

/* ---- the files and the baselines --------------------------------------------------------------- */

/* fsync of a folder, or (whole) syncfs of its file system. */
static int dir_sync(const char *dir, int whole)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 && (whole ? syncfs(fd) : fsync(fd)) == 0 ? 0 : -1;
    if (fd >= 0) close(fd);
    return rc;
}

/* Waits until the coordinator has removed the rounds before the newest (one round folder left),
 * then for the file system to finish what deletes leave it (syncfs; ext4 mounted with discard
 * trims at the next commit), so that no timed write pays for the other's deletes. */
static int settle(const char *ckpt)
{
    for (double deadline = bench_now() + WAIT_S; bench_now() < deadline; sleep_ms()) {
        DIR *d = opendir(ckpt);
        int rounds = 0;
        for (struct dirent *e; d && (e = readdir(d)) != NULL;) rounds += strncmp(e->d_name, "round-", 6) == 0;
        if (d) closedir(d);
        if (rounds <= 1) return dir_sync(ckpt, 1);
    }
    fprintf(stderr, PROG ": old checkpoints in %s not removed in %.0f s\n", ckpt, WAIT_S);
    return -1;
}

/* len bytes of buf into dir/plain.bin as a careful program writes a file; its seconds, or -1.
 * Then the file is removed and the file system synced, untimed. */
static double plain_write(const char *dir, const char *buf, size_t len)
{
    char path[PATH_CAP + 16], tmp[PATH_CAP + 32];
    snprintf(path, sizeof(path), "%s/plain.bin", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    double t0 = bench_now();
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0;
    for (size_t done = 0; ok && done < len;) {
        ssize_t n = write(fd, buf + done, len - done < WRITE_PIECE ? len - done : WRITE_PIECE);
        if (n < 0 && errno == EINTR) continue;
        ok = n > 0;
        done += ok ? (size_t)n : 0;
    }
    ok = ok && fsync(fd) == 0;
    if (fd >= 0 && close(fd) != 0) ok = 0;
    ok = ok && rename(tmp, path) == 0 && dir_sync(dir, 0) == 0;
    double s = bench_now() - t0;
    if (!ok) fprintf(stderr, PROG ": plain write of %s: %s\n", tmp, strerror(errno));
    unlink(tmp);
    unlink(path);
    return ok && dir_sync(dir, 1) == 0 ? s : -1;
}

/* nftw callbacks: drop a file from the page cache (it is clean: written and fsync'd); remove. */
static int evict_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)ftw;
    if (type != FTW_F) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (fd >= 0) close(fd);
    if (rc != 0) fprintf(stderr, PROG ": cannot drop %s from the page cache\n", path);
    return rc != 0;
}

static int remove_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)type, (void)ftw;
    if (remove(path) != 0) fprintf(stderr, PROG ": cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

/* ---- the measurements ------------------------------------------------------------------------- */

/* got must hold the last round's values bit for bit, and the job be at want_round (0: fresh). */
static int check_values(const run_t *m, const char *what, const float *got, uint64_t round, uint64_t want_round)
{
    if (round != want_round) {
        fprintf(stderr, PROG ": %s: round %llu, expected %llu\n", what, (unsigned long long)round,
                (unsigned long long)want_round);
        return -1;
    }
    size_t i = 0;
    while (i < m->total && memcmp(&got[i], &m->last[i], sizeof(float)) == 0) i++;
    if (i == m->total) return 0;
    fprintf(stderr, PROG ": %s: element %zu of the model (tensors in key order) is %g, the last round pulled %g\n",
            what, i, (double)got[i], (double)m->last[i]);
    return -1;
}

/* The newest checkpoint read back outside a job: its round and every tensor's values. */
static int check_read(const run_t *m)
{
    pserv_checkpoint_h ck;
    pserv_checkpoint_info_t info = PSERV_CHECKPOINT_INFO_INIT;
    pserv_status_t st = pserv_checkpoint_open(m->ckpt, 0, &ck);
    if (st != PSERV_OK) return fail("pserv_checkpoint_open", st, pserv_last_error());
    pserv_checkpoint_info(ck, &info);
    for (unsigned t = 0; t < m->ntensors && st == PSERV_OK; t++) st = pserv_checkpoint_read(ck, t + 1, m->scratch + m->off[t]);
    pserv_checkpoint_close(ck);
    if (st != PSERV_OK) return fail("pserv_checkpoint_read", st, pserv_last_error());
    return check_values(m, "pserv_checkpoint_read", m->scratch, info.round, m->last_round);
}

/* The two jobs side by side, reps rounds after a warm-up, the baselines after each. */
static int measure_checkpoints(run_t *m)
{
    job_t ck = {0}, plain = {0};
    char *buf = NULL, *copy = NULL;
    int rc = -1;
    if (job_start(m, m->ckpt, NULL, &ck) != 0 || job_start(m, NULL, NULL, &plain) != 0 ||
        job_register(m, &ck, m->last) != 0 || job_register(m, &plain, m->last) != 0)
        goto out;
    for (int r = -1; r < m->reps; r++) { /* r = -1 warms up and sizes the baselines' buffers */
        ckpt_delta_t d;
        double off = job_round(m, &plain, m->grad, m->scratch), on = ckpt_round(m, &ck, m->last, &d);
        if (off < 0 || on < 0) goto out;
        if (d.skipped > 0 || (r >= 0 && d.bytes != m->bytes)) {
            fprintf(stderr, PROG ": round %d: %llu checkpoint files skipped, %llu bytes (round 1: %llu)\n", r + 2,
                    (unsigned long long)d.skipped, (unsigned long long)d.bytes, (unsigned long long)m->bytes);
            goto out;
        }
        if (r < 0) {
            m->bytes = d.bytes;
            if ((buf = malloc(m->bytes)) == NULL || (copy = malloc(m->bytes)) == NULL) goto out;
            fill((float *)(void *)buf, m->bytes / sizeof(float), 2246822519u);
            memset(copy, 0, m->bytes); /* touched: the memcpy baseline pays no page faults */
        }
        double w = settle(m->ckpt) == 0 ? plain_write(m->base, buf, m->bytes) : -1, c0 = bench_now();
        memcpy(copy, buf, m->bytes);
        double c = bench_now() - c0;
        if (w < 0) goto out;
        if (r < 0) continue;
        double *row = m->t + r;
        row[M_CKPT * m->reps] = (double)m->bytes / (double)d.write_ns;
        row[M_PLAIN * m->reps] = (double)m->bytes / w / 1e9;
        row[M_PAUSE * m->reps] = (double)d.pause_ns / (double)d.files / 1e6;
        row[M_COPY * m->reps] = c * 1e3;
        row[M_STEP_ON * m->reps] = on * 1e3;
        row[M_STEP_OFF * m->reps] = off * 1e3;
    }
    m->last_round = (uint64_t)m->reps + 1;
    rc = 0;
out:
    if ((bench_job_stop(PROG, ck.local, ck.w) | bench_job_stop(PROG, plain.local, plain.w)) != 0) rc = -1;
    free(buf);
    free(copy);
    return rc == 0 ? check_read(m) : -1;
}

/* One start until the worker holds the values: resuming from resume_dir (the worker registers
 * SENTINEL) or fresh from the last round's values; checked. Its seconds, or -1. */
static double timed_start(const run_t *m, const char *what, const char *resume_dir)
{
    job_t j;
    pserv_job_info_t info = PSERV_JOB_INFO_INIT;
    memset(m->scratch, 0xff, m->total * sizeof(float)); /* NaN: nothing from before passes the check */
    double t0 = bench_now(), s = -1;
    if (job_start(m, NULL, resume_dir, &j) != 0) return -1;
    if (job_register(m, &j, resume_dir ? NULL : m->last) == 0 && job_round(m, &j, NULL, m->scratch) >= 0)
        s = bench_now() - t0;
    pserv_worker_job(j.w, &info);
    if (bench_job_stop(PROG, j.local, j.w) != 0 || s < 0) return -1;
    return check_values(m, what, m->scratch, info.resume_round, resume_dir ? m->last_round : 0) == 0 ? s : -1;
}

static int measure_starts(run_t *m)
{
    static const char *what[3] = {"resume (files evicted)", "resume (files cached)", "fresh start"};
    for (int r = 0; r < m->reps; r++)
        for (int v = 0; v < 3; v++) { /* M_COLD, M_CACHED, M_FRESH */
            if (v == 0 && nftw(m->ckpt, evict_one, 16, FTW_PHYS) != 0) return -1;
            double s = timed_start(m, what[v], v < 2 ? m->ckpt : NULL);
            if (s < 0) return -1;
            m->t[(size_t)(M_COLD + v) * (size_t)m->reps + (size_t)r] = s;
        }
    return 0;
}

/* The table on stdout, and the same as JSON if asked for. */
static int report(const run_t *m, size_t mib, const char *json)
{
    double med[NMETRIC], lo[NMETRIC], hi[NMETRIC];
    struct statfs sf;
    int tmpfs = statfs(m->base, &sf) == 0 && sf.f_type == 0x01021994; /* TMPFS_MAGIC: fsync reaches no disk */
    FILE *jf = json ? bench_json_open(PROG, json) : NULL;
    if (json && jf == NULL) return -1;
    printf(PROG ": %u server(s), 1 worker, sync, Adam; %zu MiB of float32 in %u tensors, %zu-byte chunks\n"
                "checkpoint every round: %llu bytes in %u file(s) (parameters + Adam's 2 arrays + headers), none "
                "skipped\nfolder %s%s; both writes go through the page cache and end with fsync, rename, fsync of the "
                "folder\n%d reps after 1 warm-up, rounds interleaved; median [min, max]; ratios of medians\n",
           m->nservers, mib, m->ntensors, m->chunk_bytes, (unsigned long long)m->bytes, m->nservers, m->base,
           tmpfs ? " (tmpfs: no disk at all)" : "", m->reps);
    printf("%-24s %6s %10s %10s %10s\n", "metric", "unit", "median", "min", "max");
    if (jf) {
        char cpu[256], date[64];
        bench_cpu_model(cpu, sizeof(cpu));
        bench_utc_date(date, sizeof(date));
        fprintf(jf, "{\"benchmark\": \"checkpoint\", \"baseline\": \"write + fsync + rename + fsync of the folder\", "
                    "\"servers\": %u, \"tensors\": %u, \"mib\": %zu, \"chunk_bytes\": %zu, \"reps\": %d, "
                    "\"checkpoint_bytes\": %llu, \"checkpoints_skipped\": 0, \"resume_round\": %llu, \"tmpfs\": %s, "
                    "\"date\": \"%s\", \"cpu\": ",
                m->nservers, m->ntensors, mib, m->chunk_bytes, m->reps, (unsigned long long)m->bytes,
                (unsigned long long)m->last_round, tmpfs ? "true" : "false", date);
        bench_json_str(jf, cpu);
        fprintf(jf, ", \"dir\": ");
        bench_json_str(jf, m->base);
        fprintf(jf, ", \"ratios\": {");
    }
    for (int k = 0; k < NMETRIC; k++) {
        double *x = m->t + (size_t)k * (size_t)m->reps;
        med[k] = bench_median(x, (size_t)m->reps), lo[k] = x[0], hi[k] = x[m->reps - 1];
        printf("%-24s %6s %10.3f %10.3f %10.3f\n", metric[k].name, metric[k].unit, med[k], lo[k], hi[k]);
    }
    for (size_t k = 0; k < NRATIO; k++) {
        double r = med[ratio[k].num] / med[ratio[k].den];
        printf("%-24s %6s %10.3f   (%s / %s)\n", ratio[k].name, "ratio", r, metric[ratio[k].num].name,
               metric[ratio[k].den].name);
        if (jf) fprintf(jf, "%s\"%s\": %.4f", k ? ", " : "", ratio[k].name, r);
    }
    printf("resumed values equal the last round's (round %llu), bit for bit\n", (unsigned long long)m->last_round);
    if (jf == NULL) return 0;
    fprintf(jf, "}, \"rows\": [");
    for (int k = 0; k < NMETRIC; k++)
        fprintf(jf, "%s{\"metric\": \"%s\", \"unit\": \"%s\", \"median\": %.6f, \"min\": %.6f, \"max\": %.6f}",
                k ? ", " : "", metric[k].name, metric[k].unit, med[k], lo[k], hi[k]);
    return bench_json_finish(PROG, &jf, json);
}

int main(int argc, char **argv)
{
    int reps = 5, servers = 1, tensors = 4;
    size_t mib = 256, chunk_bytes = (size_t)4 << 20;
    const char *dir = getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp", *json = NULL;
    const bench_opt_t opts[] = {
        BENCH_SIZE("--mib", "M", "MiB of float32 parameters (default 256)", &mib, 1, 1 << 16),
        BENCH_INT("--tensors", "T", "tensors they are split into (default 4)", &tensors, 1, MAX_TENSORS),
        BENCH_INT("--servers", "S", "server shards (default 1)", &servers, 1, MAX_SERVERS),
        BENCH_SIZE("--chunk-bytes", "B", "the job's chunk size (default 4 MiB)", &chunk_bytes, 4096, (size_t)1 << 30),
        BENCH_INT("--reps", "R", "checkpoints and starts timed, median reported (default 5)", &reps, 1, 1000),
        BENCH_STRING("--dir", "DIR", "where the work folder goes (default $TMPDIR or /tmp)", &dir),
        BENCH_JSON(&json),
    };
    int rc = bench_parse_args(PROG, argc, argv, opts, BENCH_NOPTS(opts));
    if (rc != BENCH_CONTINUE) return rc;

    static run_t m; /* large: its paths */
    m.ntensors = (unsigned)tensors, m.nservers = (unsigned)servers, m.chunk_bytes = chunk_bytes;
    m.total = mib << 18, m.reps = reps;
    for (unsigned t = 0; t < m.ntensors; t++) {
        m.count[t] = m.total / m.ntensors + (t + 1 == m.ntensors ? m.total % m.ntensors : 0);
        m.off[t] = t * (m.total / m.ntensors);
    }
    snprintf(m.base, sizeof(m.base), "%s/pserv-bench-ckpt-XXXXXX", dir);
    if (mkdtemp(m.base) == NULL) {
        fprintf(stderr, PROG ": cannot create a folder in %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(m.ckpt, sizeof(m.ckpt), "%s/ckpt", m.base);
    m.t = calloc((size_t)NMETRIC * (size_t)reps, sizeof(double));
    m.last = malloc(m.total * sizeof(float)), m.scratch = malloc(m.total * sizeof(float));
    m.grad = malloc(m.count[m.ntensors - 1] * sizeof(float));
    rc = 1;
    if (m.t && m.last && m.scratch && m.grad) {
        fill(m.last, m.total, 2654435761u);
        fill(m.grad, m.count[m.ntensors - 1], 40503u);
        if (measure_checkpoints(&m) == 0 && measure_starts(&m) == 0 && report(&m, mib, json) == 0) rc = 0;
    }
    nftw(m.base, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(m.t);
    free(m.last);
    free(m.scratch);
    free(m.grad);
    return rc;
}
