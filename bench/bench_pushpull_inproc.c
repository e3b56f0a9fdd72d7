/*
 * pserv_bench_pushpull_inproc: a worker's fused push-pull through a server shard, coordinator,
 * shard and worker all in this one process, over UCX on loopback, against pserv's OWN transport
 * (core/transport.h, the "pserv transport" columns) moving the same bytes in the same run: a
 * message of S bytes to a peer that sends S bytes back. This measures pserv's protocol against
 * pserv's transport layer, not against UCX: pserv_bench_pushpull (separate processes, against
 * UCX alone) is the main push-pull benchmark.
 *
 *   pserv_bench_pushpull_inproc [--reps R] [--max-mib M] [--json FILE]
 *
 * GB/s counts the bytes sent plus the bytes received per round trip (2 S). The pserv row pays
 * for its protocol (headers, per-chunk messages, the server's SGD step over S/4 floats); the
 * ratio says how much of pserv's transport's speed survives that. Chunks are 4 MiB.
 *
 * The same push-pull also goes through the staging pipeline's host side (core/stager.h, with
 * nothing to stage: the CPU path), in pieces of one chunk and of four, against the direct
 * pserv_worker_push_pull: what the GPU pipeline's issuer and completer threads cost on the host.
 * Each round times every variant once (transport, direct, staged x1, staged x4), so a slow moment of
 * a shared machine hits them alike.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "stager.h"
#include "transport.h"
#include "pserv/pserv.h"

#define PROG "pserv_bench_pushpull_inproc"

/* --- the baseline: pserv's own transport (core/transport.h), echoing ------------------------------------------------- */

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

/* Seconds of one round trip of `len` bytes each way. */
static double raw_round_trip(ps_tp_peer_t *peer, echo_t *cli, const uint8_t *buf, size_t len)
{
    uint8_t hdr[8] = {0};
    double t0 = bench_now();
    pthread_mutex_lock(&cli->lock);
    int want = cli->replies + 1;
    pthread_mutex_unlock(&cli->lock);
    ps_tp_send(peer, hdr, sizeof(hdr), buf, len, NULL, NULL, NULL);
    pthread_mutex_lock(&cli->lock);
    while (cli->replies < want) pthread_cond_wait(&cli->cond, &cli->lock);
    pthread_mutex_unlock(&cli->lock);
    return bench_now() - t0;
}

/* --- pserv: one coordinator, one server shard, one worker, in this process --------------- */

/* Seconds of one fused push-pull; -1 if it failed. */
static double pserv_round_trip(pserv_worker_h w, uint64_t key, const float *grad, float *out)
{
    pserv_request_t req;
    double t0 = bench_now();
    if (pserv_worker_push_pull(w, key, grad, out, &req) != PSERV_OK || pserv_worker_wait(w, req, 60000) != PSERV_OK) {
        fprintf(stderr, PROG ": push-pull failed: %s\n", pserv_worker_last_error(w));
        return -1;
    }
    return bench_now() - t0;
}

/*
 * Seconds of the same push-pull through the stager: one operation over the whole tensor in
 * pieces of piece_elems (whole chunks), already staged (staged = NULL), in place in buf, waited
 * for with a drain; -1 if it failed.
 */
static double staged_round_trip(ps_stager_t *s, pserv_worker_h w, uint64_t key, size_t count, size_t piece_elems,
                                 float *buf)
{
    ps_stage_op_t op = {.kind = PS_STAGE_PUSH_PULL, .key = key, .count = count, .piece_elems = piece_elems, .host = buf};
    double t0 = bench_now();
    pserv_status_t st = ps_stager_submit(s, &op);
    if (st != PSERV_OK) {
        fprintf(stderr, PROG ": staged push-pull: %s (%s)\n", pserv_strerror(st), pserv_last_error());
        return -1;
    }
    if ((st = ps_stager_drain(s, 60000)) != PSERV_OK) {
        fprintf(stderr, PROG ": staged push-pull: %s (%s)\n", pserv_strerror(st), pserv_worker_last_error(w));
        return -1;
    }
    return bench_now() - t0;
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

    /* pserv transport pair */
    echo_t srv = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, malloc(max_bytes), NULL};
    echo_t cli = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, NULL};
    ps_tp_params_t sp = {.listen_host = "127.0.0.1", .listen_port = 0, .handler = {.arg = &srv, .rx = echo_server_rx}};
    ps_tp_params_t cp = {.handler = {.arg = &cli, .rx = echo_client_rx}};
    ps_tp_peer_t *peer;
    if (ps_tp_create(&sp, &srv.tp) != PSERV_OK || ps_tp_create(&cp, &cli.tp) != PSERV_OK ||
        ps_tp_connect(cli.tp, "127.0.0.1", ps_tp_listen_port(srv.tp), &peer) != PSERV_OK) {
        fprintf(stderr, PROG ": cannot start the pserv transport pair\n");
        return 1;
    }

    pserv_local_h job;
    pserv_worker_h w;
    if (bench_job_start(PROG, &job, &w) != 0) return 1;

    /* four samples per round: pserv transport, pserv direct, staged in pieces of one chunk, of four */
    enum { RAW, DIRECT, STAGED1, STAGED4, NVAR };
    rc = 1;
    ps_stager_t *stager = NULL;
    float *grad = calloc(max_bytes / 4, sizeof(float)), *out = malloc(max_bytes);
    float *sbuf = calloc(max_bytes / 4, sizeof(float)); /* the staged push-pull works in place */
    double *t = calloc((size_t)reps * NVAR, sizeof(double));
    FILE *jf = NULL;
    if (grad == NULL || out == NULL || sbuf == NULL || t == NULL || srv.echo == NULL) goto out;
    pserv_status_t st = ps_stager_create(w, &stager);
    if (st != PSERV_OK) {
        stager = NULL;
        fprintf(stderr, PROG ": cannot start the stager: %s (%s)\n", pserv_strerror(st), pserv_last_error());
        goto out;
    }
    if (json && (jf = bench_json_open(PROG, json)) == NULL) goto out;
    size_t chunk_bytes = 0;
    uint64_t key = 1;
    for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 4, key++) {
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = key;
        tp.count = bytes / 4;
        tp.optim.lr = 1e-6f;
        size_t count, chunk_elems;
        if (pserv_worker_register(w, &tp) != PSERV_OK ||
            pserv_worker_tensor_info(w, key, &count, &chunk_elems) != PSERV_OK) {
            fprintf(stderr, PROG ": register: %s\n", pserv_worker_last_error(w));
            goto out;
        }
        if (key == 1) { /* every tensor of the job has the job's chunk; small ones are one short chunk */
            chunk_bytes = chunk_elems * sizeof(float);
            if (jf)
                fprintf(jf, "{\"benchmark\": \"pushpull_inproc\", \"baseline\": \"pserv transport\", \"reps\": %d, \"chunk_bytes\": %zu, \"rows\": [", reps,
                        chunk_bytes);
            printf(PROG ": 1 server, 1 worker, one process, loopback, %zu-byte chunks, %d reps (median), rounds "
                        "interleaved\nbaseline ptp = pserv's own transport (core/transport.h) echoing, not raw UCX\n"
                        "GB/s = 2 x bytes / round trip; ratio = pserv GB/s / ptp GB/s; stg1, stg4 = staged in pieces of 1, 4 "
                        "chunks, GB/s / direct GB/s (= direct time / staged time)\n",
                   chunk_bytes, reps);
            printf("%10s %10s %9s %10s %9s %7s %10s %6s %10s %6s\n", "bytes", "ptp_us", "ptp_GB/s", "pserv_us", "ps_GB/s",
                   "ratio", "stg1_us", "stg1", "stg4_us", "stg4");
        }
        for (int r = -1; r < reps; r++) { /* r = -1 warms up */
            double s[NVAR];
            s[RAW] = raw_round_trip(peer, &cli, (const uint8_t *)grad, bytes);
            s[DIRECT] = pserv_round_trip(w, key, grad, out);
            s[STAGED1] = staged_round_trip(stager, w, key, count, 0, sbuf);
            s[STAGED4] = staged_round_trip(stager, w, key, count, 4 * chunk_elems, sbuf);
            for (int v = 0; v < NVAR; v++) {
                if (s[v] < 0) goto out;
                if (r >= 0) t[(size_t)v * (size_t)reps + (size_t)r] = s[v];
            }
        }
        double m[NVAR];
        for (int v = 0; v < NVAR; v++) m[v] = bench_median(t + (size_t)v * (size_t)reps, (size_t)reps);
        double raw_gbs = 2.0 * (double)bytes / m[RAW] / 1e9, ps_gbs = 2.0 * (double)bytes / m[DIRECT] / 1e9;
        double ratio = ps_gbs / raw_gbs, stg1 = m[DIRECT] / m[STAGED1], stg4 = m[DIRECT] / m[STAGED4];
        printf("%10zu %10.1f %9.3f %10.1f %9.3f %7.3f %10.1f %6.3f %10.1f %6.3f\n", bytes, m[RAW] * 1e6, raw_gbs,
               m[DIRECT] * 1e6, ps_gbs, ratio, m[STAGED1] * 1e6, stg1, m[STAGED4] * 1e6, stg4);
        if (jf)
            fprintf(jf,
                    "%s{\"bytes\": %zu, \"pserv_transport_s\": %.9f, \"pserv_s\": %.9f, \"ratio\": %.4f, \"staged1_s\": %.9f, "
                    "\"staged1_ratio\": %.4f, \"staged4_s\": %.9f, \"staged4_ratio\": %.4f}",
                    key > 1 ? ", " : "", bytes, m[RAW], m[DIRECT], ratio, m[STAGED1], stg1, m[STAGED4], stg4);
    }
    if (jf && bench_json_finish(PROG, &jf, json) != 0) goto out;
    rc = 0;
out:
    if (jf) fclose(jf);
    if (stager) ps_stager_destroy(stager);
    if (bench_job_stop(PROG, job, w) != 0) rc = 1;
    ps_tp_destroy(cli.tp);
    ps_tp_destroy(srv.tp);
    free(srv.echo);
    free(t);
    free(grad);
    free(out);
    free(sbuf);
    return rc;
}
