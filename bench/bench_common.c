#include "bench_common.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef PSERV_BENCH_CUDA
#include <cuda_runtime_api.h>

#include "pserv/pserv_cuda.h"
#endif

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *t, size_t n)
{
    qsort(t, n, sizeof(double), bench_cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

void bench_summarize(const double *v, int n, double st[3])
{
    double *tmp = malloc((n > 0 ? (size_t)n : 1) * sizeof(*tmp));
    size_t k = 0;
    for (int i = 0; tmp && i < n; i++)
        if (v[i] >= 0) tmp[k++] = v[i];
    st[0] = k ? bench_median(tmp, k) : -1;
    st[1] = k ? tmp[0] : -1;
    st[2] = k ? tmp[k - 1] : -1;
    free(tmp);
}

double bench_percentile(const double *sorted, size_t n, double q)
{
    size_t rank = (size_t)(q * (double)n + 0.999999); /* ceil, forgiving q x n's rounding error */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

/* ---- the machine ------------------------------------------------------------------------------- */

void bench_cpu_model(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL) return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || colon == NULL) continue;
        colon += 1 + (colon[1] == ' ');
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(buf, cap, "%s", colon);
        break;
    }
    fclose(f);
}

void bench_utc_date(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void bench_json_series(FILE *f, const char *name, const double st[3], const double *v, int n)
{
    fprintf(f, ", \"%s\": {\"median\": %.6g, \"min\": %.6g, \"max\": %.6g, \"values\": [", name, st[0], st[1], st[2]);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.6g", i ? ", " : "", v[i]);
    fprintf(f, "]}");
}

void bench_json_str(FILE *f, const char *s)
{
    if (s == NULL) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", (unsigned char)*s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

/* ---- options ---------------------------------------------------------------------------------- */

static void bench_usage(FILE *f, const char *prog, const bench_opt_t *opts, size_t nopts)
{
    /* The usage line wraps before 100 columns, continuation lines under the first option. */
    int col = fprintf(f, "usage: %s", prog), indent = col, width = 0;
    for (size_t i = 0; i < nopts; i++) {
        int flag = opts[i].kind == BENCH_OPT_FLAG;
        int len = (int)(strlen(opts[i].name) + !flag + strlen(opts[i].metavar));
        if (col + len + 3 > 100) col = fprintf(f, "\n%*s", indent, "") - 1;
        col += fprintf(f, " [%s%s%s]", opts[i].name, flag ? "" : " ", opts[i].metavar);
        width = len > width ? len : width;
    }
    fprintf(f, "\n");
    for (size_t i = 0; i < nopts; i++)
        if (opts[i].help)
            fprintf(f, "  %s %-*s  %s\n", opts[i].name, width - (int)strlen(opts[i].name) - 1, opts[i].metavar,
                    opts[i].help);
}

/* Parses a whole decimal integer in [min, max]; -1 if text is anything else. */
static int bench_parse_int(const char *text, long long min, long long max, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static int bench_set_opt(const bench_opt_t *o, const char *text)
{
    long long v;
    switch (o->kind) {
    case BENCH_OPT_INT:
        if (bench_parse_int(text, o->min > INT_MIN ? o->min : INT_MIN, o->max < INT_MAX ? o->max : INT_MAX, &v) < 0)
            return -1;
        *(int *)o->value = (int)v;
        return 0;
    case BENCH_OPT_SIZE:
        if (bench_parse_int(text, o->min > 0 ? o->min : 0, o->max, &v) < 0) return -1;
        *(size_t *)o->value = (size_t)v;
        return 0;
    case BENCH_OPT_STRING:
        *(const char **)o->value = text;
        return 0;
    case BENCH_OPT_PARSE:
        return o->parse(text, o->value);
    case BENCH_OPT_FLAG:
        *(int *)o->value = 1;
        return 0;
    }
    return -1;
}

int bench_parse_args(const char *prog, int argc, char **argv, const bench_opt_t *opts, size_t nopts)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            bench_usage(stdout, prog, opts, nopts);
            return 0;
        }
        const bench_opt_t *o = NULL;
        for (size_t k = 0; k < nopts && o == NULL; k++)
            if (strcmp(a, opts[k].name) == 0) o = &opts[k];
        if (o == NULL) {
            fprintf(stderr, "%s: unknown option '%s'\n", prog, a);
        } else if (o->kind == BENCH_OPT_FLAG) {
            bench_set_opt(o, NULL);
            continue;
        } else if (i + 1 == argc) {
            fprintf(stderr, "%s: %s needs a value (%s)\n", prog, a, o->metavar);
        } else if (bench_set_opt(o, argv[++i]) < 0) {
            if (o->kind == BENCH_OPT_INT || o->kind == BENCH_OPT_SIZE)
                fprintf(stderr, "%s: %s needs an integer in [%lld, %lld], not '%s'\n", prog, a, o->min, o->max,
                        argv[i]);
            else
                fprintf(stderr, "%s: bad %s '%s'\n", prog, a, argv[i]);
        } else {
            continue;
        }
        bench_usage(stderr, prog, opts, nopts);
        return 2;
    }
    return BENCH_CONTINUE;
}

int bench_parse_seconds(const char *text, void *value)
{
    char *end;
    double d = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || !(d > 0 && d <= 3600)) return -1;
    *(double *)value = d;
    return 0;
}

/* ---- JSON ------------------------------------------------------------------------------------- */

FILE *bench_json_open(const char *prog, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) fprintf(stderr, "%s: cannot write %s: %s\n", prog, path, strerror(errno));
    return f;
}

FILE *bench_json_begin(const char *prog, const char *path, const char *name)
{
    FILE *f = bench_json_open(prog, path);
    char cpu[256], date[32];
    if (f == NULL) return NULL;
    bench_cpu_model(cpu, sizeof(cpu));
    bench_utc_date(date, sizeof(date));
    fprintf(f, "{\"benchmark\": ");
    bench_json_str(f, name);
    fprintf(f, ", \"date\": \"%s\", \"cpu_model\": ", date);
    bench_json_str(f, cpu);
    fprintf(f, ", \"cores\": %ld, \"pserv_version\": ", sysconf(_SC_NPROCESSORS_ONLN));
    bench_json_str(f, pserv_version());
    return f;
}

int bench_json_close(const char *prog, FILE *f, const char *path)
{
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "%s: cannot write %s\n", prog, path);
        return -1;
    }
    return 0;
}

int bench_json_finish(const char *prog, FILE **f, const char *path)
{
    fprintf(*f, "]}\n");
    int rc = bench_json_close(prog, *f, path);
    *f = NULL;
    return rc;
}

/* ---- a one-process job -------------------------------------------------------------------------- */

int bench_worker_join(const char *prog, const char *coordinator, int timeout_ms, pserv_worker_h *worker)
{
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    wp.coordinator = coordinator;
    wp.timeout_ms = timeout_ms;
    pserv_status_t st = pserv_worker_create(&wp, worker);
    if (st == PSERV_OK) return 0;
    *worker = NULL;
    fprintf(stderr, "%s: cannot join the job at %s: %s (%s)\n", prog, coordinator, pserv_strerror(st), pserv_last_error());
    return -1;
}

int bench_job_start(const char *prog, pserv_local_h *local, pserv_worker_h *worker)
{
    pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
    pserv_status_t st;
    lp.num_workers = 1;
    *local = NULL;
    *worker = NULL;
    if ((st = pserv_local_create(&lp, local)) != PSERV_OK) {
        *local = NULL;
        fprintf(stderr, "%s: cannot start the job: %s (%s)\n", prog, pserv_strerror(st), pserv_last_error());
        return -1;
    }
    if (bench_worker_join(prog, pserv_local_coordinator(*local), 0, worker) != 0) {
        bench_job_stop(prog, *local, NULL);
        *local = NULL;
        return -1;
    }
    return 0;
}

int bench_job_stop(const char *prog, pserv_local_h local, pserv_worker_h worker)
{
    pserv_worker_destroy(worker);
    pserv_status_t st = pserv_local_destroy(local, 10000);
    if (st == PSERV_OK) return 0;
    fprintf(stderr, "%s: the job did not end cleanly: %s (%s)\n", prog, pserv_strerror(st), pserv_last_error());
    return -1;
}

/* ---- GPU -------------------------------------------------------------------------------------- */

#ifdef PSERV_BENCH_CUDA
int bench_cuda_ok(const char *prog, int err, const char *what)
{
    if (err == cudaSuccess) return 1;
    fprintf(stderr, "%s: %s: %s\n", prog, what, cudaGetErrorString((cudaError_t)err));
    return 0;
}

int bench_cuda_select(const char *prog, int device, char *name, size_t name_len)
{
    struct cudaDeviceProp prop;
    int ndev = 0;
    if (pserv_cuda_device_count(&ndev) != PSERV_OK || ndev == 0) {
        printf("%s: skipped: no CUDA device (%s)\n", prog, pserv_cuda_last_error());
        return 0;
    }
    if (device < 0 || device >= ndev) {
        fprintf(stderr, "%s: --device %d, but only %d device(s)\n", prog, device, ndev);
        return 2;
    }
    if (!bench_cuda_ok(prog, cudaSetDevice(device), "cudaSetDevice") ||
        !bench_cuda_ok(prog, cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"))
        return 1;
    snprintf(name, name_len, "%s", prop.name);
    return BENCH_CONTINUE;
}

int bench_cuda_args(const char *prog, int argc, char **argv, const bench_opt_t *opts, size_t nopts, const int *device,
                    char *name, size_t name_len)
{
    int rc = bench_parse_args(prog, argc, argv, opts, nopts);
    return rc != BENCH_CONTINUE ? rc : bench_cuda_select(prog, *device, name, name_len);
}
#endif
