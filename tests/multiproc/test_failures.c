/*
 * Failures: an unreachable coordinator, a server killed mid-job, and hostile messages sent
 * to a live server. Each ends in a clear error within a bound, never a hang, and the
 * server keeps serving.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hostport.h"
#include "server_internal.h"
#include "wire.h"
#include "harness.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

Test(failures, unreachable_coordinator_names_the_address, .timeout = 30)
{
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w = NULL;
    wp.coordinator = "127.0.0.1:1"; /* nothing listens on port 1 */
    wp.timeout_ms = 5000;
    double t0 = now_s();
    pserv_status_t st = pserv_worker_create(&wp, &w);
    cr_assert(st == PSERV_ERR_UNREACHABLE || st == PSERV_ERR_TIMED_OUT, "got %s", pserv_strerror(st));
    cr_assert_null(w);
    cr_assert_lt(now_s() - t0, 8.0, "took %.1f s", now_s() - t0);

    pserv_server_params_t sp = PSERV_SERVER_PARAMS_INIT;
    pserv_server_h s = NULL;
    sp.coordinator = "127.0.0.1:1";
    sp.timeout_ms = 3000;
    cr_assert_lt(pserv_server_create(&sp, &s), 0);
    cr_assert_null(s);
}

Test(failures, bad_addresses_are_invalid_arguments, .timeout = 10)
{
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w = NULL;
    wp.coordinator = "no-port-here";
    wp.timeout_ms = 2000;
    cr_assert_eq(pserv_worker_create(&wp, &w), PSERV_ERR_INVALID_ARG);
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_coordinator_h c = NULL;
    cp.num_servers = 0;
    cp.num_workers = 1;
    cr_assert_eq(pserv_coordinator_create(&cp, &c), PSERV_ERR_INVALID_ARG);
}

/* Registers a tensor, tells the parent, waits for the server to be killed, then pushes. */
static int doomed_worker(void *arg, const char *coord, int fd)
{
    (void)arg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = coord;
    wp.timeout_ms = 20000;
    if (pserv_worker_create(&wp, &w) != PSERV_OK) return 50;
    static float values[1 << 16], out[1 << 16];
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 5;
    tp.count = 1 << 16;
    tp.init = values;
    if (pserv_worker_register(w, &tp) != PSERV_OK) return 51;
    char ready = 1;
    harness_write(fd, &ready, 1);
    /* The parent kills the server now: requests in flight or sent after must fail, not hang. */
    pserv_request_t req;
    pserv_status_t st = PSERV_OK;
    double t0 = now_s();
    for (int i = 0; i < 1000; i++) {
        st = pserv_worker_push_pull(w, 5, values, out, &req);
        if (st == PSERV_OK) st = pserv_worker_wait(w, req, 10000);
        if (st < 0) break;
        usleep(20000);
    }
    int32_t result = st;
    double elapsed = now_s() - t0;
    harness_write(fd, &result, sizeof(result));
    harness_write(fd, &elapsed, sizeof(elapsed));
    pserv_worker_destroy(w);
    return 0;
}

Test(failures, killed_server_fails_requests_not_hangs, .timeout = 60)
{
    harness_t h = {0};
    int fd;
    pid_t server = harness_start_ready_pair(&h, doomed_worker, &fd);
    cr_assert_gt(server, 0, "worker never got ready");
    kill(server, SIGKILL);
    int32_t result = 0;
    double elapsed = 0;
    int ok = harness_read(fd, &result, sizeof(result), 40000) == 0 && harness_read(fd, &elapsed, sizeof(elapsed), 1000) == 0;
    harness_kill_all(&h);
    cr_assert(ok, "worker hung after its server died");
    /* Its own connection's failure or the coordinator's ABORT naming the server, whichever is first. */
    cr_assert(result == PSERV_ERR_PEER_FAILED || result == PSERV_ERR_JOB_FAILED, "got %s", pserv_strerror(result));
    cr_assert_lt(elapsed, 15.0, "took %.1f s to notice", elapsed);
}

/* --- hostile messages to a live, in-process server ----------------------------------- */

typedef struct {
    pthread_mutex_t lock;
    int replies;
    int32_t last_status;
} raw_rx_t;

static void raw_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    raw_rx_t *r = arg;
    ps_wire_hdr_t h;
    (void)peer;
    (void)data;
    if (ps_wire_decode(hdr, hdr_len, len, &h, NULL) < 0) return;
    pthread_mutex_lock(&r->lock);
    r->replies++;
    r->last_status = h.status;
    pthread_mutex_unlock(&r->lock);
}

static int raw_replies(raw_rx_t *r, int want, int32_t *status)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&r->lock);
        int n = r->replies;
        *status = r->last_status;
        pthread_mutex_unlock(&r->lock);
        if (n >= want) return n;
        usleep(10000);
    }
    return -1;
}

Test(failures, hostile_messages_are_rejected_and_server_keeps_serving, .timeout = 60)
{
    inproc_job_t job;
    cr_assert_eq(inproc_job_start(&job, PSERV_MODE_SYNC, 1024, 0), 0);
    pserv_worker_h w = job.worker;
    float values[1000], out[1000], grad[1000];
    for (int i = 0; i < 1000; i++) values[i] = (float)i, grad[i] = 1.0f;
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 9;
    tp.count = 1000;
    tp.init = values;
    tp.optim.lr = 0.5f;
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_OK);

    /* A raw transport speaks to the server directly, as a broken or hostile peer would. */
    raw_rx_t rx = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
    ps_tp_params_t tpp = {.handler = {.arg = &rx, .rx = raw_rx}};
    ps_tp_t *tp_raw;
    ps_tp_peer_t *peer;
    char host[PS_HOST_MAX];
    uint16_t sport;
    cr_assert_eq(ps_tp_create(&tpp, &tp_raw), PSERV_OK);
    cr_assert_eq(ps_hostport_parse(job.server->m.job.servers[0], 0, host, &sport), PSERV_OK);
    cr_assert_eq(ps_tp_connect(tp_raw, host, sport, &peer), PSERV_OK);

    uint8_t buf[PS_WIRE_HDR_LEN];
    ps_wire_hdr_t h;
    /* 1: garbage bytes (dropped: no reply is possible) */
    memset(buf, 0xab, sizeof(buf));
    cr_assert_eq(ps_tp_send(peer, buf, sizeof(buf), NULL, 0, NULL, NULL, NULL), PSERV_OK);
    /* 2: truncated header */
    cr_assert_eq(ps_tp_send(peer, buf, 10, NULL, 0, NULL, NULL, NULL), PSERV_OK);
    /* 3: a push before saying hello: answered with an error */
    ps_wire_hdr_init(&h, PS_MSG_PUSH);
    h.key = 9;
    h.sender = 0;
    h.dtype = PSERV_DTYPE_FLOAT32;
    h.length = 1024;
    ps_wire_encode(&h, buf);
    cr_assert_eq(ps_tp_send(peer, buf, sizeof(buf), grad, 1024, NULL, NULL, NULL), PSERV_OK);
    int32_t status;
    cr_assert_eq(raw_replies(&rx, 1, &status), 1);
    cr_assert_eq(status, PSERV_ERR_INVALID_ARG);
    /* after hello as worker 0: unknown key, chunk out of range, wrong dtype, bad length */
    ps_wire_hdr_init(&h, PS_MSG_HELLO);
    h.sender = 0;
    ps_wire_encode(&h, buf);
    ps_tp_send(peer, buf, sizeof(buf), NULL, 0, NULL, NULL, NULL);
    cr_assert_eq(raw_replies(&rx, 2, &status), 2);
    cr_assert_eq(status, PSERV_OK);
    struct {
        uint64_t key;
        uint32_t chunk, dtype;
        uint64_t offset, length, round;
        int32_t want;
    } cases[] = {
        {12345, 0, PSERV_DTYPE_FLOAT32, 0, 1024, 0, PSERV_ERR_UNKNOWN_KEY},
        {9, 999, PSERV_DTYPE_FLOAT32, 0, 1024, 0, PSERV_ERR_BAD_MESSAGE},
        {9, 0, PSERV_DTYPE_FLOAT32, 0, 512, 0, PSERV_ERR_BAD_MESSAGE},
        {9, 0, PSERV_DTYPE_FLOAT32, 8, 1024, 0, PSERV_ERR_BAD_MESSAGE},
        {9, 0, PSERV_DTYPE_FLOAT32, 0, 1024, 5, PSERV_ERR_STALE}, /* a round ahead of the chunk */
    };
    int want = 2;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pserv_server_stats_t before = PSERV_SERVER_STATS_INIT, after = PSERV_SERVER_STATS_INIT;
        pserv_server_stats(job.server, &before);
        ps_wire_hdr_init(&h, PS_MSG_PUSH);
        h.sender = 0;
        h.key = cases[i].key;
        h.chunk = cases[i].chunk;
        h.dtype = cases[i].dtype;
        h.offset = cases[i].offset;
        h.length = cases[i].length;
        h.round = cases[i].round;
        ps_wire_encode(&h, buf);
        ps_tp_send(peer, buf, sizeof(buf), grad, (size_t)cases[i].length, NULL, NULL, NULL);
        want++;
        cr_assert_eq(raw_replies(&rx, want, &status), want, "case %zu: no reply", i);
        cr_assert_eq(status, cases[i].want, "case %zu: got %s", i, pserv_strerror(status));
        pserv_server_stats(job.server, &after);
        cr_assert_eq(after.rejected, before.rejected + 1, "case %zu not counted", i);
    }
    pserv_server_stats_t stats = PSERV_SERVER_STATS_INIT;
    pserv_server_stats(job.server, &stats);
    cr_assert_geq(stats.rejected, 8, "rejections counted: %llu", (unsigned long long)stats.rejected);

    /* The real worker still trains: one push-pull of ones with lr 0.5 moves every value by -0.5. */
    pserv_request_t req;
    cr_assert_eq(pserv_worker_push_pull(w, 9, grad, out, &req), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(w, req, 10000), PSERV_OK);
    for (int i = 0; i < 1000; i++) cr_assert_float_eq(out[i], (float)i - 0.5f, 1e-6);

    ps_tp_destroy(tp_raw);
    cr_assert_eq(inproc_job_stop(&job), 0);
}
