/*
 * What the benchmark programs share (bench_common.c, linked into every pserv_bench_*): the
 * monotonic clock and the median of a sample, command-line options, the JSON results file, a
 * one-server one-worker job in this process, and for the GPU benchmarks the device check.
 * Messages go to stderr prefixed with the program's name; nothing here exits.
 */
#ifndef PS_BENCH_COMMON_H
#define PS_BENCH_COMMON_H

#include <stddef.h>
#include <stdio.h>

#include "pserv/pserv.h"

/* Returned by the functions that may end the program, when it should go on instead. */
#define BENCH_CONTINUE (-1)

/* Seconds on the monotonic clock. */
double bench_now(void);

/* Median of t[0..n), n >= 1. Sorts t in place: t[0] is the minimum afterwards. */
double bench_median(double *t, size_t n);

/* The q-th quantile (0 < q <= 1) of t[0..n) sorted ascending (bench_median sorts), by nearest
 * rank: the smallest value with at least q x n values at or below it. p99 = bench_percentile(t, n, 0.99). */
double bench_percentile(const double *sorted, size_t n, double q);

/* Median, min and max (st[0..2]) of the values >= 0 of v[0..n) (-1 stands for unknown); -1s if none. */
void bench_summarize(const double *v, int n, double st[3]);

/* ---- the machine, for the results' header --------------------------------------------------- */

/* The CPU's model name from /proc/cpuinfo ("unknown" if none). */
void bench_cpu_model(char *buf, size_t cap);
/* Now, in UTC, as "2026-12-02T02:30:00Z". */
void bench_utc_date(char *buf, size_t cap);
/* Writes s as a JSON string, quotes and escapes included; NULL as null. */
void bench_json_str(FILE *f, const char *s);
/* Writes `, "name": {"median": .., "min": .., "max": .., "values": [v...]}` (st from bench_summarize). */
void bench_json_series(FILE *f, const char *name, const double st[3], const double *v, int n);

/* ---- command-line options: "--name VALUE" pairs, plus --help ---------------------------------- */

typedef enum {
    BENCH_OPT_INT,    /* int *, within [min, max] */
    BENCH_OPT_SIZE,   /* size_t *, within [min, max] */
    BENCH_OPT_STRING, /* const char ** (points into argv) */
    BENCH_OPT_PARSE,  /* parse(text, value) fills value; 0 if the text is valid */
    BENCH_OPT_FLAG,   /* int *, set to 1; takes no value */
} bench_opt_kind_t;

typedef struct {
    const char *name;    /* "--reps" */
    const char *metavar; /* "R", shown in the usage line; "" for a flag */
    const char *help;    /* one line for --help, or NULL */
    bench_opt_kind_t kind;
    void *value;
    long long min, max;
    int (*parse)(const char *text, void *value);
} bench_opt_t;

#define BENCH_INT(name, metavar, help, ptr, min, max) {name, metavar, help, BENCH_OPT_INT, ptr, min, max, NULL}
#define BENCH_SIZE(name, metavar, help, ptr, min, max) {name, metavar, help, BENCH_OPT_SIZE, ptr, min, max, NULL}
#define BENCH_STRING(name, metavar, help, ptr) {name, metavar, help, BENCH_OPT_STRING, ptr, 0, 0, NULL}
#define BENCH_PARSE(name, metavar, help, ptr, fn) {name, metavar, help, BENCH_OPT_PARSE, ptr, 0, 0, fn}
#define BENCH_FLAG(name, help, ptr) {name, "", help, BENCH_OPT_FLAG, ptr, 0, 0, NULL}
#define BENCH_JSON(ptr) BENCH_STRING("--json", "FILE", "also write the results as JSON", ptr)
#define BENCH_DEVICE(ptr) BENCH_INT("--device", "D", "CUDA device (default 0)", ptr, 0, 1024)
#define BENCH_NOPTS(opts) (sizeof(opts) / sizeof((opts)[0]))

/*
 * Parses argv[1..argc) against opts ("--name VALUE", or "--name" alone for a flag). Returns BENCH_CONTINUE, or the code the program exits
 * with: 0 after --help (usage on stdout), 2 for a bad or unknown option (reason and usage on
 * stderr).
 */
int bench_parse_args(const char *prog, int argc, char **argv, const bench_opt_t *opts, size_t nopts);

/* A BENCH_OPT_PARSE parser of seconds into a double: a number > 0 and <= 3600. */
int bench_parse_seconds(const char *text, void *value);

/* ---- JSON results --------------------------------------------------------------------------- */

/* Opens path for writing; NULL with the reason on stderr if it cannot. */
FILE *bench_json_open(const char *prog, const char *path);
/* bench_json_open, then the header every result file starts with: {"benchmark": NAME, "date",
 * "cpu_model", "cores", "pserv_version"; the caller goes on with ", \"key\": value". */
FILE *bench_json_begin(const char *prog, const char *path, const char *name);
/* Closes it; 0, or -1 with a message if a write failed. */
int bench_json_close(const char *prog, FILE *f, const char *path);
/* Ends the "rows" array and the object the program opened ("]}"), closes *f and sets it to NULL;
 * 0, or -1 with a message if a write failed. */
int bench_json_finish(const char *prog, FILE **f, const char *path);

/* ---- a job of one server shard and one worker in this process --------------------------------- */

/* Joins the job at coordinator (HOST:PORT) as a worker, waiting up to timeout_ms (0: the default)
 * for it to form; 0, or -1 with the reason on stderr (and *worker NULL). */
int bench_worker_join(const char *prog, const char *coordinator, int timeout_ms, pserv_worker_h *worker);
/* Starts it (pserv_local_*, default chunks, sync mode); 0, or -1 with the reason on stderr. */
int bench_job_start(const char *prog, pserv_local_h *local, pserv_worker_h *worker);
/* The worker leaves and the job ends (either may be NULL); 0 if it ended cleanly. */
int bench_job_stop(const char *prog, pserv_local_h local, pserv_worker_h worker);

/* ---- GPU benchmarks (built with PSERV_BENCH_CUDA) ----------------------------------------------- */

/*
 * Makes CUDA device `device` current and copies its name. Returns BENCH_CONTINUE, or the exit
 * code: 0 when there is no CUDA device ("<prog>: skipped: no CUDA device (<reason>)" on stdout),
 * 2 when `device` does not exist, 1 on a CUDA error.
 */
int bench_cuda_select(const char *prog, int device, char *name, size_t name_len);
/* bench_parse_args, then bench_cuda_select of the device the options chose. */
int bench_cuda_args(const char *prog, int argc, char **argv, const bench_opt_t *opts, size_t nopts, const int *device,
                    char *name, size_t name_len);
/* 1 if err (a cudaError_t) is cudaSuccess; otherwise prints "<prog>: <what>: <reason>" and returns 0. */
int bench_cuda_ok(const char *prog, int err, const char *what);

#endif
