/*
 * Consistent configuration and bounded input: workers that disagree on a tensor's optimizer or
 * on the job's settings are refused with the field named; an absurd chunk count is refused at
 * registration; a push of NaN is refused naming the worker and tensor, and leaves the parameters
 * alone; a message whose payload its type cannot carry is refused before a byte is allocated
 * (the shard's memory does not grow).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "hostport.h"
#include "server_internal.h"
#include "worker_internal.h"
#include "wire.h"

#define N 3000

static void register_adam(pserv_worker_h w, uint64_t key, float lr, pserv_status_t want)
{
    static float init[N];
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = key;
    tp.count = N;
    tp.init = init;
    tp.optim.type = PSERV_OPTIM_ADAM;
    tp.optim.lr = lr;
    cr_assert_eq(pserv_worker_register(w, &tp), want, "key %llu lr %g: %s", (unsigned long long)key, (double)lr,
                 pserv_worker_last_error(w));
}

Test(consistency, a_tensor_with_other_settings_is_refused_naming_the_field, .timeout = 60)
{
    inproc_job_t job;
    cr_assert_eq(inproc_group_start(&job, PSERV_MODE_SYNC, 4096, 64, 2, 2, NULL), 0);
    register_adam(job.workers[0], 5, 0.001f, PSERV_OK);
    register_adam(job.workers[1], 5, 0.5f, PSERV_ERR_MISMATCH);
    const char *why = pserv_worker_last_error(job.workers[1]);
    cr_assert(strstr(why, "tensor 5") && strstr(why, "lr"), "%s", why);
    register_adam(job.workers[1], 5, 0.001f, PSERV_OK); /* the same settings are fine */
    /* Nothing of the refused registration reached the shards: one step of lr 0.001 per chunk. */
    static float grad[N], out[N];
    for (size_t i = 0; i < N; i++) grad[i] = 1.0f;
    pserv_request_t r0, r1;
    cr_assert_eq(pserv_worker_push_pull(job.workers[0], 5, grad, out, &r0), PSERV_OK);
    static float out1[N];
    cr_assert_eq(pserv_worker_push_pull(job.workers[1], 5, grad, out1, &r1), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(job.workers[0], r0, 10000), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(job.workers[1], r1, 10000), PSERV_OK);
    /* Adam's first step moves every element by lr (bias-corrected m/sqrt(v) = 1) */
    for (size_t i = 0; i < N; i++) cr_assert_float_eq(out[i], -0.001f, 1e-6f, "element %zu: %g", i, (double)out[i]);
    cr_assert_eq(inproc_job_stop(&job), 0);
}

Test(consistency, an_absurd_chunk_count_is_refused_at_registration, .timeout = 60)
{
    inproc_job_t job;
    cr_assert_eq(inproc_job_start(&job, PSERV_MODE_SYNC, 64, 0), 0); /* 16 floats a chunk */
    static float init[300000];
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 1;
    tp.count = 300000; /* 18,750 chunks: still fine */
    tp.init = init;
    cr_assert_eq(pserv_worker_register(job.worker, &tp), PSERV_OK, "%s", pserv_worker_last_error(job.worker));
    tp.key = 2;
    tp.count = 16 * 70000; /* 70,000 chunks */
    float *big = calloc(tp.count, sizeof(float));
    tp.init = big;
    cr_assert_eq(pserv_worker_register(job.worker, &tp), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_worker_last_error(job.worker), "65536 chunks"), "%s", pserv_worker_last_error(job.worker));
    free(big);
    cr_assert_eq(inproc_job_stop(&job), 0);
}

Test(consistency, a_non_finite_push_is_refused_and_changes_nothing, .timeout = 60)
{
    inproc_job_t job;
    static float init[N], grad[N], out[N];
    cr_assert_eq(inproc_group_start(&job, PSERV_MODE_ASYNC, 4096, 64, 2, 1, NULL), 0);
    for (size_t i = 0; i < N; i++) init[i] = (float)i;
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 3;
    tp.count = N;
    tp.init = init;
    tp.optim.lr = 1.0f;
    cr_assert_eq(pserv_worker_register(job.worker, &tp), PSERV_OK);
    float poison[] = {NAN, INFINITY, -INFINITY};
    for (unsigned k = 0; k < 3; k++) {
        for (size_t i = 0; i < N; i++) grad[i] = 0.5f;
        grad[N / 2 + k] = poison[k];
        pserv_request_t r;
        cr_assert_eq(pserv_worker_push(job.worker, 3, grad, &r), PSERV_OK);
        cr_assert_eq(pserv_worker_wait(job.worker, r, 10000), PSERV_ERR_NOT_FINITE);
        const char *why = pserv_worker_last_error(job.worker);
        cr_assert(strstr(why, "worker 0") && strstr(why, "tensor 3"), "%s", why);
    }
    pserv_request_t r;
    cr_assert_eq(pserv_worker_pull(job.worker, 3, out, &r), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(job.worker, r, 10000), PSERV_OK);
    /* The chunk with the bad value is untouched; the others took their steps of 0.5 each. */
    size_t chunk, count;
    cr_assert_eq(pserv_worker_tensor_info(job.worker, 3, &count, &chunk), PSERV_OK);
    for (size_t i = 0; i < N; i++) {
        size_t c = i / chunk;
        int poisoned = c == (N / 2) / chunk || c == (N / 2 + 1) / chunk || c == (N / 2 + 2) / chunk;
        float steps = 0;
        for (unsigned k = 0; k < 3; k++) steps += c != (N / 2 + k) / chunk;
        cr_assert_float_eq(out[i], (float)i - 0.5f * steps, 1e-4f, "element %zu (chunk %zu%s): %g", i, c,
                           poisoned ? ", poisoned once" : "", (double)out[i]);
    }
    pserv_server_stats_t st = PSERV_SERVER_STATS_INIT;
    uint64_t rejected = 0;
    for (unsigned s = 0; s < 2; s++) {
        cr_assert_eq(pserv_server_stats(job.servers[s], &st), PSERV_OK);
        rejected += st.rejected;
    }
    cr_assert_geq(rejected, 3, "each poisoned chunk counted");
    cr_assert_eq(inproc_job_stop(&job), 0);
}

/* A worker process joining with settings of its own; reports pserv_worker_create's status and text. */
typedef struct {
    const char *settings;
} settings_arg_t;

static int settings_worker(void *varg, const char *coord, int fd)
{
    settings_arg_t *a = varg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w = NULL;
    char text[600] = "";
    wp.coordinator = coord;
    wp.timeout_ms = 20000;
    wp.settings = a->settings;
    int32_t st = pserv_worker_create(&wp, &w);
    if (st < 0) snprintf(text, sizeof(text), "%s", pserv_last_error());
    harness_write(fd, &st, sizeof(st));
    harness_write(fd, text, sizeof(text));
    if (w) pserv_worker_destroy(w);
    return 0;
}

Test(consistency, workers_with_other_job_settings_are_refused_naming_the_setting, .timeout = 60)
{
    harness_t h = {0};
    harness_start_coordinator(&h, 1, 2, PSERV_MODE_SYNC, 0);
    harness_start_server(&h, 1);
    settings_arg_t first = {"epochs=3 lr=0.001 batch=64"}, other = {"epochs=3 lr=0.5 batch=64"};
    int fd0, fd1;
    harness_start(&h, settings_worker, &first, &fd0);
    usleep(300000); /* the first to join sets the job's settings */
    harness_start(&h, settings_worker, &other, &fd1);
    int32_t st1 = 0;
    char text[600] = "";
    int got = harness_read(fd1, &st1, sizeof(st1), 20000) == 0 && harness_read(fd1, text, sizeof(text), 1000) == 0;
    harness_kill_all(&h);
    cr_assert(got, "the second worker never answered");
    cr_assert_eq(st1, PSERV_ERR_MISMATCH, "%s: %s", pserv_strerror(st1), text);
    cr_assert(strstr(text, "lr") && strstr(text, "0.5") && strstr(text, "0.001"), "%s", text);
}

/* --- payloads a type cannot carry ------------------------------------------------------- */

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

static void sent_cb(void *arg, pserv_status_t st)
{
    (void)st;
    __atomic_fetch_add((int *)arg, 1, __ATOMIC_RELAXED);
}

static void ignore_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    (void)arg, (void)peer, (void)hdr, (void)hdr_len, (void)data, (void)len;
}

Test(consistency, oversized_payloads_are_refused_before_they_are_allocated, .timeout = 90)
{
    harness_t h = {0};
    harness_start_coordinator(&h, 1, 1, PSERV_MODE_SYNC, 0);
    pid_t server = harness_start_server(&h, 1);
    /* The server's address: ask the job through a worker of this process. */
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = h.coord;
    wp.timeout_ms = 20000;
    cr_assert_eq(pserv_worker_create(&wp, &w), PSERV_OK, "%s", pserv_last_error());
    char addr[PS_ADDR_MAX], host[PS_HOST_MAX];
    uint16_t port;
    snprintf(addr, sizeof(addr), "%s", w->m.job.servers[0]);
    cr_assert_eq(ps_hostport_parse(addr, 0, host, &port), PSERV_OK);

    ps_tp_params_t tpp = {.handler = {.rx = ignore_rx}};
    ps_tp_t *raw;
    ps_tp_peer_t *peer;
    cr_assert_eq(ps_tp_create(&tpp, &raw), PSERV_OK);
    cr_assert_eq(ps_tp_connect(raw, host, port, &peer), PSERV_OK);
    size_t big = (size_t)256 << 20;
    uint8_t *payload = malloc(big); /* never touched: the receiver must not read it */
    cr_assert_not_null(payload);
    usleep(200000);
    long before = rss_kib(server);
    int done = 0;
    ps_msg_type_t types[] = {PS_MSG_HELLO, PS_MSG_PULL, PS_MSG_LEAVE, PS_MSG_HEARTBEAT};
    for (unsigned i = 0; i < 4; i++) {
        uint8_t hdr[PS_WIRE_HDR_LEN];
        ps_wire_hdr_t m;
        ps_wire_hdr_init(&m, types[i]);
        m.sender = 0;
        m.length = big;
        ps_wire_encode(&m, hdr);
        ps_tp_send(peer, hdr, sizeof(hdr), payload, big, NULL, sent_cb, &done);
    }
    for (int i = 0; i < 200 && __atomic_load_n(&done, __ATOMIC_RELAXED) < 4; i++) usleep(50000);
    long after = rss_kib(server);
    cr_assert_eq(__atomic_load_n(&done, __ATOMIC_RELAXED), 4, "the refused sends did not complete");
    cr_log_info("shard RSS %ld KiB before, %ld KiB after four 256 MiB messages", before, after);
    cr_assert_gt(before, 0);
    cr_assert_lt(after - before, 32 * 1024, "the shard grew by %ld KiB", after - before);
    /* and it still serves */
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 1;
    tp.count = 10;
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_OK, "%s", pserv_worker_last_error(w));
    ps_tp_peer_close(peer);
    ps_tp_destroy(raw);
    free(payload);
    pserv_worker_destroy(w);
    cr_assert_eq(harness_wait_all(&h, 20000), 0);
}
