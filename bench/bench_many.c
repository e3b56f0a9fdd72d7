/*
 * pserv_bench_many: a step of a model of many small tensors (default 200 of 4-64 KiB), every
 * tensor pushed and pulled once per step, three ways:
 *
 *   seq    one push_pull per tensor, each waited before the next (what a naive loop does)
 *   all    every push_pull issued, then every request waited
 *   group  pserv_worker_push_pull_many: one group, small chunks coalesced into BATCH messages
 *
 * against UCX's own per-message cost measured in the same run: ucx_perftest's active-message
 * ping-pong (ucp_am_lat) over loopback at the tensors' mean size, its median one-way latency
 * x 2 = one round trip, x the number of tensors = what a step would cost as one UCX round trip
 * per tensor, back to back. The ratio is the pserv step time over that.
 *
 *   pserv_bench_many [--tensors N] [--max-kib K] [--steps S] [--perftest-iters I] [--json FILE]
 *
 * One server shard, one worker, sync mode, in this process (bench_job_start). Each step runs
 * the three variants once, in turn, so a slow moment of a shared machine hits them alike; the
 * table shows the median. "msgs/step" counts the messages the shard received per step (its
 * messages_in counter: a BATCH is one).
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "pserv/pserv.h"

#define PROG "pserv_bench_many"
#define KEY0 1000

static int max_kib = 64;

/* Tensor i's bytes: 4 KiB .. max_kib KiB, whole floats, spread by a fixed hash (the same every run). */
static size_t tensor_bytes(int i)
{
    uint32_t h = (uint32_t)i * 2654435761u;
    return (4096 + (size_t)(h % (uint32_t)(((size_t)max_kib << 10) - 4096 + 1))) / 4 * 4;
}

/* A free TCP port on 127.0.0.1 (the kernel picks; closed again before ucx_perftest binds it). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static pid_t spawn(char *const argv[], int out_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(out_fd >= 0 ? out_fd : null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/*
 * UCX's active-message round trip of `bytes` over loopback, in seconds: 2 x ucx_perftest's median
 * one-way latency ("Final:" line, the 50th percentile column). Negative with *why if it cannot run.
 */
static double ucx_round_trip(size_t bytes, int iters, const char **why)
{
    char port[16], size[32], n[32];
    int p = free_port();
    if (p < 0) {
        *why = "no free port";
        return -1;
    }
    snprintf(port, sizeof(port), "%d", p);
    snprintf(size, sizeof(size), "%zu", bytes);
    snprintf(n, sizeof(n), "%d", iters);
    char *server_argv[] = {"ucx_perftest", "-c", "0", "-p", port, NULL};
    pid_t server = spawn(server_argv, -1);
    if (server < 0) {
        *why = "fork failed";
        return -1;
    }
    double latency_us = -1;
    *why = "ucx_perftest did not report (is ucx-utils installed?)";
    for (int attempt = 0; attempt < 20 && latency_us < 0; attempt++) {
        usleep(250000); /* the server's listener comes up, or the last client gave up */
        int fds[2];
        if (pipe(fds) != 0) break;
        char *client_argv[] = {"ucx_perftest", "127.0.0.1", "-c", "1", "-p", port, "-t", "ucp_am_lat", "-s", size,
                               "-n", n, NULL};
        pid_t client = spawn(client_argv, fds[1]);
        close(fds[1]);
        FILE *f = fdopen(fds[0], "r");
        char line[512];
        while (f && fgets(line, sizeof(line), f)) {
            double p50;
            if (sscanf(line, "Final: %*s %lf", &p50) == 1) latency_us = p50;
        }
        if (f) fclose(f);
        int status;
        if (client > 0) waitpid(client, &status, 0);
        if (waitpid(server, &status, WNOHANG) == server) break; /* the server is gone: it served once or failed */
    }
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    return latency_us < 0 ? -1 : 2 * latency_us * 1e-6;
}

typedef struct {
    int n;
    uint64_t *keys;
    float **grad, **out;
    pserv_request_t *reqs;
} model_t;

enum { SEQ, ALL, GROUP, NVAR };
static const char *const names[NVAR] = {"seq", "all", "group"};

/* One step of variant v, in seconds; negative on an error (reported). */
static double step(pserv_worker_h w, const model_t *m, int v)
{
    pserv_status_t st = PSERV_OK;
    double t0 = bench_now();
    if (v == SEQ) {
        for (int i = 0; i < m->n && st == PSERV_OK; i++) {
            st = pserv_worker_push_pull(w, m->keys[i], m->grad[i], m->out[i], &m->reqs[i]);
            if (st == PSERV_OK) st = pserv_worker_wait(w, m->reqs[i], 30000);
        }
    } else {
        if (v == ALL)
            for (int i = 0; i < m->n && st == PSERV_OK; i++)
                st = pserv_worker_push_pull(w, m->keys[i], m->grad[i], m->out[i], &m->reqs[i]);
        else
            st = pserv_worker_push_pull_many(w, (size_t)m->n, m->keys, (const void *const *)m->grad,
                                             (void *const *)m->out, m->reqs);
        for (int i = 0; i < m->n && st == PSERV_OK; i++) st = pserv_worker_wait(w, m->reqs[i], 30000);
    }
    if (st != PSERV_OK) {
        fprintf(stderr, PROG ": %s step: %s (%s)\n", names[v], pserv_strerror(st), pserv_worker_last_error(w));
        return -1;
    }
    return bench_now() - t0;
}

int main(int argc, char **argv)
{
    int ntensors = 200, steps = 30, iters = 20000;
    const char *json = NULL;
    const bench_opt_t opts[] = {
        BENCH_INT("--tensors", "N", "tensors in the model (default 200)", &ntensors, 1, 4096),
        BENCH_INT("--max-kib", "K", "largest tensor in KiB, the smallest is 4 (default 64)", &max_kib, 4, 1024),
        BENCH_INT("--steps", "S", "timed steps per variant, median reported (default 30)", &steps, 1, 100000),
        BENCH_INT("--perftest-iters", "I", "ucx_perftest ping-pongs for the baseline (default 20000)", &iters, 100,
                  10000000),
        BENCH_JSON(&json),
    };
    int rc = bench_parse_args(PROG, argc, argv, opts, BENCH_NOPTS(opts));
    if (rc != BENCH_CONTINUE) return rc;

    model_t m = {ntensors, calloc((size_t)ntensors, sizeof(uint64_t)), calloc((size_t)ntensors, sizeof(float *)),
                 calloc((size_t)ntensors, sizeof(float *)), calloc((size_t)ntensors, sizeof(pserv_request_t))};
    double *t = calloc((size_t)steps * NVAR, sizeof(double));
    uint64_t msgs[NVAR] = {0};
    size_t total = 0;
    pserv_local_h job = NULL;
    pserv_worker_h w = NULL;
    pserv_server_h server = NULL;
    FILE *jf = NULL;
    rc = 1;
    if (m.keys == NULL || m.grad == NULL || m.out == NULL || m.reqs == NULL || t == NULL) goto out;
    for (int i = 0; i < ntensors; i++) {
        size_t bytes = tensor_bytes(i);
        total += bytes;
        m.keys[i] = KEY0 + (uint64_t)i;
        if ((m.grad[i] = calloc(bytes / 4, sizeof(float))) == NULL || (m.out[i] = malloc(bytes)) == NULL) goto out;
    }
    size_t mean = total / (size_t)ntensors / 4 * 4;

    /* The baseline first, while nothing else of this process runs. */
    const char *why = NULL;
    double rtt = ucx_round_trip(mean, iters, &why);
    if (rtt < 0) fprintf(stderr, PROG ": baseline unavailable: %s; ratios omitted\n", why);

    if (bench_job_start(PROG, &job, &w) != 0) goto out;
    if (pserv_local_server(job, 0, 10000, &server) != PSERV_OK) goto out;
    for (int i = 0; i < ntensors; i++) {
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = m.keys[i];
        tp.count = tensor_bytes(i) / 4;
        tp.optim.lr = 1e-6f;
        if (pserv_worker_register(w, &tp) != PSERV_OK) {
            fprintf(stderr, PROG ": register: %s\n", pserv_worker_last_error(w));
            goto out;
        }
    }
    for (int s = -2; s < steps; s++) { /* two warm-up steps */
        for (int v = 0; v < NVAR; v++) {
            pserv_server_stats_t before = PSERV_SERVER_STATS_INIT, after = PSERV_SERVER_STATS_INIT;
            pserv_server_stats(server, &before);
            double dt = step(w, &m, v);
            if (dt < 0) goto out;
            pserv_server_stats(server, &after);
            if (s >= 0) {
                t[(size_t)v * (size_t)steps + (size_t)s] = dt;
                msgs[v] += after.messages_in - before.messages_in;
            }
        }
    }
    double base = rtt * ntensors;
    printf(PROG ": %d tensors of 4-%d KiB (%zu KiB in all, mean %zu B), 1 server, 1 worker, loopback, sync, "
                "%d steps (median)\n",
           ntensors, max_kib, total >> 10, mean, steps);
    if (rtt > 0)
        printf("baseline: ucx_perftest ucp_am_lat at %zu B: round trip %.1f us; x %d messages = %.3f ms per step\n", mean,
               rtt * 1e6, ntensors, base * 1e3);
    printf("%8s %10s %12s %10s %10s\n", "variant", "step_ms", "per_tensor_us", "msgs/step", "vs_ucx");
    if (json && (jf = bench_json_open(PROG, json)) == NULL) goto out;
    if (jf)
        fprintf(jf,
                "{\"benchmark\": \"many\", \"tensors\": %d, \"max_kib\": %d, \"total_bytes\": %zu, \"mean_bytes\": %zu, \"steps\": %d, "
                "\"ucx_round_trip_s\": %.9f, \"ucx_step_s\": %.9f, \"rows\": [",
                ntensors, max_kib, total, mean, steps, rtt > 0 ? rtt : 0.0, rtt > 0 ? base : 0.0);
    for (int v = 0; v < NVAR; v++) {
        double med = bench_median(t + (size_t)v * (size_t)steps, (size_t)steps);
        double per_step = (double)msgs[v] / steps, ratio = rtt > 0 ? med / base : 0;
        printf("%8s %10.3f %12.2f %10.1f", names[v], med * 1e3, med * 1e6 / ntensors, per_step);
        if (rtt > 0) printf(" %10.3f", ratio);
        printf("\n");
        if (jf)
            fprintf(jf, "%s{\"variant\": \"%s\", \"step_s\": %.9f, \"messages_per_step\": %.1f, \"vs_ucx\": %.4f}",
                    v ? ", " : "", names[v], med, per_step, ratio);
    }
    if (jf && bench_json_finish(PROG, &jf, json) != 0) goto out;
    rc = 0;
out:
    if (jf) fclose(jf);
    if (job && bench_job_stop(PROG, job, w) != 0) rc = 1;
    for (int i = 0; m.grad && m.out && i < ntensors; i++) {
        free(m.grad[i]);
        free(m.out[i]);
    }
    free(m.keys);
    free(m.grad);
    free(m.out);
    free(m.reqs);
    free(t);
    return rc;
}
