/*
 * pserv_bench_pushpull: throughput of a worker's fused push-pull through a server shard over
 * UCX on loopback, against the raw transport moving the same bytes in the same run: a message
 * of S bytes to a peer that sends S bytes back (the transport's own echo, no pserv logic).
 *
 *   pserv_bench_pushpull [--reps R] [--max-mib M] [--json FILE]
 *
 * GB/s counts the bytes sent plus the bytes received per round trip (2 S). The pserv row pays
 * for its protocol (headers, per-chunk messages, the server's SGD step over S/4 floats); the
 * ratio says how much of the raw transport's speed survives that. Chunks are 4 MiB.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "core/transport.h"
#include "pserv/pserv.h"

#define PROG "pserv_bench_pushpull"

/* --- the baseline: raw transport echo ------------------------------------------------- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int replies;
    uint8_t *echo; /* the server's send buffer: the payload must outlive the send */
    ps_tp_t *tp;
} echo_t;

static void echo_server_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    echo_t *e = arg;
    memcpy(e->echo, data, len);
    ps_tp_send(peer, hdr, hdr_len, e->echo, len, NULL, NULL, NULL);
}

static void echo_client_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    echo_t *e = arg;
    (void)peer, (void)hdr, (void)hdr_len, (void)data, (void)len;
    pthread_mutex_lock(&e->lock);
    e->replies++;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* Median seconds of one round trip of `len` bytes each way; t holds reps samples. */
static double raw_round_trip(ps_tp_peer_t *peer, echo_t *cli, const uint8_t *buf, size_t len, double *t, int reps)
{
    uint8_t hdr[8] = {0};
    for (int r = -1; r < reps; r++) { /* r = -1 warms up */
        double t0 = bench_now();
        pthread_mutex_lock(&cli->lock);
        int want = cli->replies + 1;
        pthread_mutex_unlock(&cli->lock);
        ps_tp_send(peer, hdr, sizeof(hdr), buf, len, NULL, NULL, NULL);
        pthread_mutex_lock(&cli->lock);
        while (cli->replies < want) pthread_cond_wait(&cli->cond, &cli->lock);
        pthread_mutex_unlock(&cli->lock);
        if (r >= 0) t[r] = bench_now() - t0;
    }
    return bench_median(t, (size_t)reps);
}

/* --- pserv: one coordinator, one server shard, one worker, in this process --------------- */

/* Median seconds of one fused push-pull; -1 if one failed. */
static double pserv_round_trip(pserv_worker_h w, uint64_t key, const float *grad, float *out, double *t, int reps)
{
    pserv_request_t req;
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        if (pserv_worker_push_pull(w, key, grad, out, &req) != PSERV_OK || pserv_worker_wait(w, req, 60000) != PSERV_OK) {
            fprintf(stderr, PROG ": push-pull failed: %s\n", pserv_worker_last_error(w));
            return -1;
        }
        if (r >= 0) t[r] = bench_now() - t0;
    }
    return bench_median(t, (size_t)reps);
}

int main(int argc, char **argv)
{
    int reps = 30;
    size_t max_mib = 64;
    const char *json = NULL;
    const bench_opt_t opts[] = {
        BENCH_INT("--reps", "R", "timed round trips per size, median reported (default 30)", &reps, 1, 1000000),
        BENCH_SIZE("--max-mib", "M", "largest tensor in MiB (default 64)", &max_mib, 1, 4096),
        BENCH_JSON(&json),
    };
    int rc = bench_parse_args(PROG, argc, argv, opts, BENCH_NOPTS(opts));
    if (rc != BENCH_CONTINUE) return rc;
    size_t max_bytes = max_mib << 20;

    /* raw transport pair */
    echo_t srv = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, malloc(max_bytes), NULL};
    echo_t cli = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, NULL};
    ps_tp_params_t sp = {.listen_host = "127.0.0.1", .listen_port = 0, .handler = {.arg = &srv, .rx = echo_server_rx}};
    ps_tp_params_t cp = {.handler = {.arg = &cli, .rx = echo_client_rx}};
    ps_tp_peer_t *peer;
    if (ps_tp_create(&sp, &srv.tp) != PSERV_OK || ps_tp_create(&cp, &cli.tp) != PSERV_OK ||
        ps_tp_connect(cli.tp, "127.0.0.1", ps_tp_listen_port(srv.tp), &peer) != PSERV_OK) {
        fprintf(stderr, PROG ": cannot start the raw transport pair\n");
        return 1;
    }

    pserv_local_h job;
    pserv_worker_h w;
    if (bench_job_start(PROG, &job, &w) != 0) return 1;

    rc = 1;
    float *grad = calloc(max_bytes / 4, sizeof(float)), *out = malloc(max_bytes);
    double *t = calloc((size_t)reps, sizeof(double));
    FILE *jf = NULL;
    if (grad == NULL || out == NULL || t == NULL || srv.echo == NULL) goto out;
    if (json && (jf = bench_json_open(PROG, json)) == NULL) goto out;
    if (jf) fprintf(jf, "{\"benchmark\": \"pushpull\", \"reps\": %d, \"rows\": [", reps);
    printf(PROG ": 1 server, 1 worker, loopback, %d reps (median), GB/s = 2 x bytes / round trip\n", reps);
    printf("%10s %12s %10s %12s %10s %8s\n", "bytes", "raw_us", "raw_GB/s", "pserv_us", "pserv_GB/s", "ratio");
    uint64_t key = 1;
    for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 4, key++) {
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = key;
        tp.count = bytes / 4;
        tp.optim.lr = 1e-6f;
        if (pserv_worker_register(w, &tp) != PSERV_OK) {
            fprintf(stderr, PROG ": register: %s\n", pserv_worker_last_error(w));
            goto out;
        }
        double raw = raw_round_trip(peer, &cli, (const uint8_t *)grad, bytes, t, reps);
        double ps = pserv_round_trip(w, key, grad, out, t, reps);
        if (ps < 0) goto out;
        double raw_gbs = 2.0 * (double)bytes / raw / 1e9, ps_gbs = 2.0 * (double)bytes / ps / 1e9;
        printf("%10zu %12.1f %10.3f %12.1f %10.3f %8.3f\n", bytes, raw * 1e6, raw_gbs, ps * 1e6, ps_gbs, ps_gbs / raw_gbs);
        if (jf)
            fprintf(jf, "%s{\"bytes\": %zu, \"raw_s\": %.9f, \"pserv_s\": %.9f, \"ratio\": %.4f}", key > 1 ? ", " : "",
                    bytes, raw, ps, ps_gbs / raw_gbs);
    }
    if (jf && bench_json_finish(PROG, &jf, json) != 0) goto out;
    rc = 0;
out:
    if (jf) fclose(jf);
    if (bench_job_stop(PROG, job, w) != 0) rc = 1;
    ps_tp_destroy(cli.tp);
    ps_tp_destroy(srv.tp);
    free(srv.echo);
    free(t);
    free(grad);
    free(out);
    return rc;
}
