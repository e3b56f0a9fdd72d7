/*
 * pserv_bench_optim: bandwidth of the server-side optimizer steps against memcpy and a STREAM
 * triad, measured in the same run, on the same buffers and the same thread pool.
 *
 *   pserv_bench_optim [--elems N] [--threads T] [--reps R] [--json FILE]
 *
 * Each row runs once to warm up, then R times, rows interleaved (round r runs every row once);
 * the median time is reported. GB/s counts the bytes the loop reads plus the bytes it writes,
 * per element:
 *   memcpy     8  (read src, write dst)
 *   triad     12  (a = b + s*c: read b, c; write a)
 *   accumulate 12 (dst += src: read dst, src; write dst)
 *   sgd       12  (read p, g; write p)
 *   momentum  20  (read p, g, v; write p, v)      nesterov: the same
 *   adam      28  (read p, g, m, v; write p, m, v) adamw: the same
 *   adam+clip 32  (clip_value and clip_norm: one more read of g for the norm; g is never written)
 *   adagrad   20  (read p, g, s; write p, s)
 * Write-allocate traffic is not counted (STREAM's convention): triad and memcpy write arrays
 * they do not read, so the memory system moves more than counted (a cache line is read before it
 * is written, unless the stores are non-temporal); the optimizers write only arrays they just
 * read. A ratio to triad above 1 (up to 4/3) is therefore expected at the memory's limit.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "optim.h"
#include "optim_kernels.h"
#include "threadpool.h"
#include "pserv/pserv.h"

typedef struct {
    size_t n;
    float *p, *g;   /* parameters and gradient of the optimizer rows */
    float *s0, *s1; /* optimizer state: s0 momentum / Adam m; s1 Adam v / Adagrad sum (>= 0) */
    float *a;       /* written by the baselines only */
    ps_pool_t *pool;
} bench_bufs_t;

typedef struct bench_case bench_case_t;
struct bench_case {
    const char *name;
    unsigned bytes_per_elem;
    void (*run)(bench_bufs_t *b, bench_case_t *c);
    pserv_optim_params_t optim; /* for the optimizer rows */
    ps_optim_state_t state;
    double *times; /* one per timed repetition */
    double median_s;
};

/* ---------------------------------------------------------------------------------------- */
/* Baselines                                                                                 */

typedef struct {
    float *a;
    const float *b, *c;
    float s;
} bench_triad_t;

/* Built like the optimizer kernels (AVX2 clone where the CPU has it), for a fair baseline. */
PS_OPTIM_CLONES
static void bench_triad_loop(float *restrict a, const float *restrict b, const float *restrict c,
                             float s, size_t n)
{
    for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

static void bench_triad_block(void *arg, size_t begin, size_t end)
{
    bench_triad_t *t = arg;
    bench_triad_loop(t->a + begin, t->b + begin, t->c + begin, t->s, end - begin);
}

static void bench_memcpy_block(void *arg, size_t begin, size_t end)
{
    bench_triad_t *t = arg;
    memcpy(t->a + begin, t->b + begin, (end - begin) * sizeof(float));
}

static void bench_run_memcpy(bench_bufs_t *b, bench_case_t *c)
{
    (void)c;
    bench_triad_t t = {b->a, b->g, NULL, 0.0f};
    ps_pool_run(b->pool, b->n, PS_OPTIM_ALIGN, PS_OPTIM_MIN_PER_THREAD, bench_memcpy_block, &t);
}

static void bench_run_triad(bench_bufs_t *b, bench_case_t *c)
{
    (void)c;
    bench_triad_t t = {b->a, b->g, b->p, 0.5f};
    ps_pool_run(b->pool, b->n, PS_OPTIM_ALIGN, PS_OPTIM_MIN_PER_THREAD, bench_triad_block, &t);
}

static void bench_run_accumulate(bench_bufs_t *b, bench_case_t *c)
{
    (void)c;
    ps_optim_accumulate(b->pool, b->a, b->g, b->n);
}

static void bench_run_optim(bench_bufs_t *b, bench_case_t *c)
{
    ps_optim_step(b->pool, &c->optim, b->p, b->g, &c->state, b->n);
}

/* Fills the buffers on the pool, so that each thread first-touches the pages it will use. */
static void bench_fill_block(void *arg, size_t begin, size_t end)
{
    bench_bufs_t *b = arg;
    for (size_t i = begin; i < end; i++) {
        uint32_t h = (uint32_t)i * 2654435761u;
        b->p[i] = 1.0f + (float)(h >> 8) * 0x1p-28f;
        b->g[i] = ((float)(h >> 8) * 0x1p-23f - 1.0f) * 0.01f;
        b->s0[i] = 0.0f;
        b->s1[i] = 0.0f;
        b->a[i] = 0.0f;
    }
}

/*
 * Runs every row once (warm-up), then R rounds of every row once each, timing each run. Rows
 * are interleaved so that a slow period of a shared machine hits all rows alike instead of
 * one row's whole sample.
 */
static void bench_measure(bench_bufs_t *b, bench_case_t *cases, size_t ncases, size_t reps)
{
    for (size_t k = 0; k < ncases; k++) cases[k].run(b, &cases[k]);
    for (size_t r = 0; r < reps; r++) {
        for (size_t k = 0; k < ncases; k++) {
            double t0 = bench_now();
            cases[k].run(b, &cases[k]);
            cases[k].times[r] = bench_now() - t0;
        }
    }
    for (size_t k = 0; k < ncases; k++) cases[k].median_s = bench_median(cases[k].times, reps);
}

/* ---------------------------------------------------------------------------------------- */

static const char *bench_isa(void)
{
#if defined(PS_OPTIM_HAVE_CLONES)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) return "avx2 clone";
    return "default clone";
#else
    return "no clones (build ISA)";
#endif
}

int main(int argc, char **argv)
{
    size_t n = (size_t)1 << 24, threads = 0, reps = 20;
    const char *json = NULL;
    const bench_opt_t opts[] = {
        BENCH_SIZE("--elems", "N", "floats per array (default 16777216 = 64 MiB)", &n, 1, 1ll << 40),
        BENCH_SIZE("--threads", "T", "pool threads (default: online CPUs)", &threads, 1, 4096),
        BENCH_SIZE("--reps", "R", "timed repetitions per kernel, median reported (default 20)", &reps, 1, 100000),
        BENCH_JSON(&json),
    };
    int rc = bench_parse_args("pserv_bench_optim", argc, argv, opts, BENCH_NOPTS(opts));
    if (rc != BENCH_CONTINUE) return rc;
    if (threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (size_t)cpus : 1;
    }

    rc = 1;
    bench_bufs_t b = {n, NULL, NULL, NULL, NULL, NULL, NULL};
    bench_case_t cases[] = {
        {.name = "memcpy", .bytes_per_elem = 8, .run = bench_run_memcpy},
        {.name = "triad", .bytes_per_elem = 12, .run = bench_run_triad},
        {.name = "accumulate", .bytes_per_elem = 12, .run = bench_run_accumulate},
        {.name = "sgd", .bytes_per_elem = 12, .run = bench_run_optim},
        {.name = "momentum", .bytes_per_elem = 20, .run = bench_run_optim},
        {.name = "nesterov", .bytes_per_elem = 20, .run = bench_run_optim},
        {.name = "adam", .bytes_per_elem = 28, .run = bench_run_optim},
        {.name = "adamw", .bytes_per_elem = 28, .run = bench_run_optim},
        {.name = "adam+clip", .bytes_per_elem = 32, .run = bench_run_optim},
        {.name = "adagrad", .bytes_per_elem = 20, .run = bench_run_optim},
    };
    const size_t ncases = sizeof(cases) / sizeof(cases[0]);
    double *times = calloc(ncases * reps, sizeof(double));
    size_t bytes = (n * sizeof(float) + 4095) / 4096 * 4096;
    if (times == NULL || posix_memalign((void **)&b.p, 4096, bytes) ||
        posix_memalign((void **)&b.g, 4096, bytes) || posix_memalign((void **)&b.s0, 4096, bytes) ||
        posix_memalign((void **)&b.s1, 4096, bytes) || posix_memalign((void **)&b.a, 4096, bytes)) {
        fprintf(stderr, "pserv_bench_optim: cannot allocate 5 arrays of %zu bytes\n", bytes);
        goto out;
    }
    pserv_status_t st = ps_pool_create((unsigned)threads, &b.pool);
    if (st != PSERV_OK) {
        fprintf(stderr, "pserv_bench_optim: thread pool: %s\n", pserv_strerror(st));
        goto out;
    }
    ps_pool_run(b.pool, n, PS_OPTIM_ALIGN, PS_OPTIM_MIN_PER_THREAD, bench_fill_block, &b);

    for (size_t k = 0; k < ncases; k++) {
        bench_case_t *c = &cases[k];
        pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT;
        c->times = times + k * reps;
        if (strcmp(c->name, "nesterov") == 0) {
            p.type = PSERV_OPTIM_MOMENTUM;
            p.nesterov = 1;
        } else if (strcmp(c->name, "adam+clip") == 0) {
            p.type = PSERV_OPTIM_ADAM;
            p.clip_value = 1.0f;
            p.clip_norm = 1.0f;
        } else if (pserv_optim_parse(c->name, &p.type) != PSERV_OK) {
            continue; /* a baseline */
        }
        p.lr = p.type == PSERV_OPTIM_ADAM || p.type == PSERV_OPTIM_ADAMW ? 1e-3f : 1e-2f;
        p.weight_decay = 1e-4f;
        if (ps_optim_validate(&p) != PSERV_OK) goto out;
        c->optim = p;
        /* The rows share the state buffers (what matters is the traffic), in a way that keeps
         * every value finite: anything works as a momentum or Adam m, and Adam's v and
         * Adagrad's sum only ever grow from 0, so they share s1. */
        if (p.type == PSERV_OPTIM_ADAGRAD) {
            c->state.s0 = b.s1;
        } else {
            c->state.s0 = b.s0;
            c->state.s1 = b.s1;
        }
    }

    double t_start = bench_now();
    bench_measure(&b, cases, ncases, reps);
    double t_total = bench_now() - t_start;

    double triad_gbps = (double)n * cases[1].bytes_per_elem / cases[1].median_s * 1e-9;
    printf("pserv_bench_optim: %zu elements (%.1f MiB per array), %zu threads, %zu reps "
           "(median, rows interleaved), kernels: %s\n",
           n, (double)n * sizeof(float) / (1 << 20), threads, reps, bench_isa());
    printf("%-11s %7s %10s %9s %10s %9s\n", "kernel", "B/elem", "time_ms", "GB/s", "Gparam/s",
           "vs_triad");
    for (size_t k = 0; k < ncases; k++) {
        const bench_case_t *c = &cases[k];
        double gbps = (double)n * c->bytes_per_elem / c->median_s * 1e-9;
        printf("%-11s %7u %10.3f %9.2f %10.3f %9.3f\n", c->name, c->bytes_per_elem,
               c->median_s * 1e3, gbps, (double)n / c->median_s * 1e-9, gbps / triad_gbps);
    }
    printf("(GB/s = bytes read + written / median time, 1 GB = 1e9 B; measured in %.1f s)\n",
           t_total);

    if (json) {
        FILE *f = bench_json_open("pserv_bench_optim", json);
        if (f == NULL) goto out;
        fprintf(f,
                "{\n  \"benchmark\": \"optim\",\n  \"elems\": %zu,\n  \"threads\": %zu,\n"
                "  \"reps\": %zu,\n  \"statistic\": \"median\",\n  \"kernels\": \"%s\",\n"
                "  \"results\": [\n",
                n, threads, reps, bench_isa());
        for (size_t k = 0; k < ncases; k++) {
            const bench_case_t *c = &cases[k];
            double gbps = (double)n * c->bytes_per_elem / c->median_s * 1e-9;
            fprintf(f,
                    "    {\"name\": \"%s\", \"bytes_per_elem\": %u, \"median_s\": %.9f, "
                    "\"gbps\": %.4f, \"gparams_per_s\": %.5f, \"ratio_to_triad\": %.4f}%s\n",
                    c->name, c->bytes_per_elem, c->median_s, gbps,
                    (double)n / c->median_s * 1e-9, gbps / triad_gbps, k + 1 < ncases ? "," : "");
        }
        fprintf(f, "  ]\n}\n");
        if (bench_json_close("pserv_bench_optim", f, json) != 0) goto out;
    }
    rc = 0;
out:
    ps_pool_destroy(b.pool);
    free(b.p);
    free(b.g);
    free(b.s0);
    free(b.s1);
    free(b.a);
    free(times);
    return rc;
}
