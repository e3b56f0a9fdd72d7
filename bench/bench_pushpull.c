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
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/transport.h"
#include "pserv/pserv.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

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

/* Median seconds of one round trip of `len` bytes each way. */
static double raw_round_trip(echo_t *srv, echo_t *cli, ps_tp_peer_t *peer, const uint8_t *buf, size_t len, int reps)
{
    double *t = malloc((size_t)reps * sizeof(double));
    uint8_t hdr[8] = {0};
    for (int r = -1; r < reps; r++) { /* r = -1 warms up */
        double t0 = now_s();
        pthread_mutex_lock(&cli->lock);
        int want = cli->replies + 1;
        pthread_mutex_unlock(&cli->lock);
        ps_tp_send(peer, hdr, sizeof(hdr), buf, len, NULL, NULL, NULL);
        pthread_mutex_lock(&cli->lock);
        while (cli->replies < want) pthread_cond_wait(&cli->cond, &cli->lock);
        pthread_mutex_unlock(&cli->lock);
        if (r >= 0) t[r] = now_s() - t0;
    }
    (void)srv;
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    double median = t[reps / 2];
    free(t);
    return median;
}

/* --- pserv: one coordinator, one server shard, one worker, in this process --------------- */

typedef struct {
    char coord[64];
    pserv_server_h server;
    pserv_status_t st;
} server_start_t;

static void *start_server(void *arg)
{
    server_start_t *s = arg;
    pserv_server_params_t sp = PSERV_SERVER_PARAMS_INIT;
    sp.coordinator = s->coord;
    s->st = pserv_server_create(&sp, &s->server);
    return NULL;
}

static double pserv_round_trip(pserv_worker_h w, uint64_t key, const float *grad, float *out, int reps)
{
    double *t = malloc((size_t)reps * sizeof(double));
    pserv_request_t req;
    for (int r = -1; r < reps; r++) {
        double t0 = now_s();
        if (pserv_worker_push_pull(w, key, grad, out, &req) != PSERV_OK || pserv_worker_wait(w, req, 60000) != PSERV_OK) {
            fprintf(stderr, "pserv_bench_pushpull: push-pull failed: %s\n", pserv_worker_last_error(w));
            exit(1);
        }
        if (r >= 0) t[r] = now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    double median = t[reps / 2];
    free(t);
    return median;
}

int main(int argc, char **argv)
{
    int reps = 30;
    size_t max_mib = 64;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-mib") == 0 && i + 1 < argc) max_mib = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) json = argv[++i];
        else {
            fprintf(stderr, "usage: pserv_bench_pushpull [--reps R] [--max-mib M] [--json FILE]\n");
            return 2;
        }
    }
    if (reps < 1 || max_mib < 1) return 2;
    size_t max_bytes = max_mib << 20;

    /* raw transport pair */
    echo_t srv = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, malloc(max_bytes), NULL};
    echo_t cli = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, NULL};
    ps_tp_params_t sp = {.listen_host = "127.0.0.1", .listen_port = 0, .handler = {.arg = &srv, .rx = echo_server_rx}};
    ps_tp_params_t cp = {.handler = {.arg = &cli, .rx = echo_client_rx}};
    ps_tp_peer_t *peer;
    if (ps_tp_create(&sp, &srv.tp) != PSERV_OK || ps_tp_create(&cp, &cli.tp) != PSERV_OK ||
        ps_tp_connect(cli.tp, "127.0.0.1", ps_tp_listen_port(srv.tp), &peer) != PSERV_OK) {
        fprintf(stderr, "pserv_bench_pushpull: cannot start the raw transport pair\n");
        return 1;
    }

    /* pserv job */
    pserv_coordinator_params_t cop = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_coordinator_h coord;
    uint16_t port;
    cop.num_servers = 1;
    cop.num_workers = 1;
    if (pserv_coordinator_create(&cop, &coord) != PSERV_OK) return 1;
    pserv_coordinator_port(coord, &port);
    server_start_t ss = {.st = PSERV_ERR_INTERNAL};
    snprintf(ss.coord, sizeof(ss.coord), "127.0.0.1:%u", port);
    pthread_t tid;
    pthread_create(&tid, NULL, start_server, &ss);
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = ss.coord;
    pserv_status_t wst = pserv_worker_create(&wp, &w);
    pthread_join(tid, NULL);
    if (wst != PSERV_OK || ss.st != PSERV_OK) {
        fprintf(stderr, "pserv_bench_pushpull: cannot start the job: %s\n", pserv_last_error());
        return 1;
    }

    float *grad = calloc(max_bytes / 4, sizeof(float)), *out = malloc(max_bytes);
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (json && jf == NULL) {
        fprintf(stderr, "pserv_bench_pushpull: cannot write %s: %s\n", json, strerror(errno));
        return 1;
    }
    if (jf) fprintf(jf, "{\"benchmark\": \"pushpull\", \"reps\": %d, \"rows\": [", reps);
    printf("pserv_bench_pushpull: 1 server, 1 worker, loopback, %d reps (median), GB/s = 2 x bytes / round trip\n", reps);
    printf("%10s %12s %10s %12s %10s %8s\n", "bytes", "raw_us", "raw_GB/s", "pserv_us", "pserv_GB/s", "ratio");
    uint64_t key = 1;
    for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 4, key++) {
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = key;
        tp.count = bytes / 4;
        tp.optim.lr = 1e-6f;
        if (pserv_worker_register(w, &tp) != PSERV_OK) return 1;
        double raw = raw_round_trip(&srv, &cli, peer, (const uint8_t *)grad, bytes, reps);
        double ps = pserv_round_trip(w, key, grad, out, reps);
        double raw_gbs = 2.0 * (double)bytes / raw / 1e9, ps_gbs = 2.0 * (double)bytes / ps / 1e9;
        printf("%10zu %12.1f %10.3f %12.1f %10.3f %8.3f\n", bytes, raw * 1e6, raw_gbs, ps * 1e6, ps_gbs, ps_gbs / raw_gbs);
        if (jf)
            fprintf(jf, "%s{\"bytes\": %zu, \"raw_s\": %.9f, \"pserv_s\": %.9f, \"ratio\": %.4f}", key > 1 ? ", " : "",
                    bytes, raw, ps, ps_gbs / raw_gbs);
    }
    if (jf) {
        fprintf(jf, "]}\n");
        fclose(jf);
    }
    pserv_worker_destroy(w);
    pserv_server_wait(ss.server, 10000);
    pserv_server_destroy(ss.server);
    pserv_coordinator_wait(coord, 10000);
    pserv_coordinator_destroy(coord);
    ps_tp_destroy(cli.tp);
    ps_tp_destroy(srv.tp);
    free(srv.echo);
    free(grad);
    free(out);
    return 0;
}
