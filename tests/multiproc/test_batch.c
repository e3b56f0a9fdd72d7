/*
 * Groups and BATCH messages on real jobs: a model of 200 small tensors pushed and pulled through
 * the group API reaches the test's own SGD reference, in far fewer messages than chunks; a bad
 * request inside a group fails alone; a server killed mid-group fails the requests, no hang.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "harness.h"
#include "hostport.h"
#include "server_internal.h"
#include "transport.h"

#define NT 200
#define ROUNDS 3
#define LR 0.01f

/* Tensor i's size: 1K .. 16K floats, spread deterministically. */
static size_t tensor_count(int i) { return 1024 + (size_t)((i * 7919) % 15361); }
static float init_value(int i, size_t j) { return (float)((i * 31 + (int)j) % 97) / 97.0f; }
static float grad_value(int w, int r, int i, size_t j) { return (float)(((w + 1) * 13 + r * 7 + i * 3 + (int)j) % 11) - 5.0f; }

typedef struct {
    pserv_worker_h w;
    int rank;
    int use_many; /* push_pull_many instead of group_start / push_pull... / group_end */
    int push_only; /* group_start / push... / group_end (async: the values are pulled at the end) */
    float *grad[NT], *out[NT];
    int failures;
    char why[256];
} model_worker_t;

static void *model_worker_main(void *arg)
{
    model_worker_t *mw = arg;
    uint64_t keys[NT];
    pserv_request_t reqs[NT];
    for (int i = 0; i < NT; i++) keys[i] = 100 + (uint64_t)i;
    for (int r = 0; r < ROUNDS && mw->failures == 0; r++) {
        for (int i = 0; i < NT; i++)
            for (size_t j = 0; j < tensor_count(i); j++) mw->grad[i][j] = grad_value(mw->rank, r, i, j);
        pserv_status_t st;
        if (mw->push_only) {
            st = pserv_worker_group_start(mw->w);
            for (int i = 0; i < NT && st == PSERV_OK; i++) st = pserv_worker_push(mw->w, keys[i], mw->grad[i], &reqs[i]);
            if (st == PSERV_OK) st = pserv_worker_group_end(mw->w);
        } else if (mw->use_many) {
            st = pserv_worker_push_pull_many(mw->w, NT, keys, (const void *const *)mw->grad, (void *const *)mw->out, reqs);
        } else {
            st = pserv_worker_group_start(mw->w);
            for (int i = 0; i < NT && st == PSERV_OK; i++)
                st = pserv_worker_push_pull(mw->w, keys[i], mw->grad[i], mw->out[i], &reqs[i]);
            if (st == PSERV_OK) st = pserv_worker_group_end(mw->w);
        }
        for (int i = 0; i < NT && st == PSERV_OK; i++) st = pserv_worker_wait(mw->w, reqs[i], 30000);
        if (st != PSERV_OK) {
            snprintf(mw->why, sizeof(mw->why), "round %d: %s: %s", r, pserv_strerror(st), pserv_worker_last_error(mw->w));
            mw->failures++;
        }
    }
    return NULL;
}

static void run_model(pserv_mode_t mode, unsigned servers, unsigned workers)
{
    inproc_job_t job;
    static model_worker_t mws[2];
    cr_assert_eq(inproc_group_start(&job, mode, 0, 1024, servers, workers, NULL), 0);
    for (int i = 0; i < NT; i++) {
        size_t n = tensor_count(i);
        float *init = malloc(n * sizeof(float));
        for (size_t j = 0; j < n; j++) init[j] = init_value(i, j);
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = 100 + (uint64_t)i;
        tp.count = n;
        tp.init = init;
        tp.optim.lr = LR;
        for (unsigned w = 0; w < workers; w++)
            cr_assert_eq(pserv_worker_register(job.workers[w], &tp), PSERV_OK, "%s", pserv_worker_last_error(job.workers[w]));
        free(init);
    }
    pthread_t th[2];
    for (unsigned w = 0; w < workers; w++) {
        memset(&mws[w], 0, sizeof(mws[w]));
        mws[w].w = job.workers[w];
        mws[w].rank = (int)w;
        mws[w].use_many = w == 1;
        /* Async pull replies are sent from the live parameters (docs/design.md, Consistency): a pull
         * overlapping another worker's push may read a torn update, which ThreadSanitizer rightly
         * reports. So async workers push concurrently and the values are pulled once all are in. */
        mws[w].push_only = mode == PSERV_MODE_ASYNC;
        for (int i = 0; i < NT; i++) {
            mws[w].grad[i] = malloc(tensor_count(i) * sizeof(float));
            mws[w].out[i] = malloc(tensor_count(i) * sizeof(float));
        }
        pthread_create(&th[w], NULL, model_worker_main, &mws[w]);
    }
    for (unsigned w = 0; w < workers; w++) pthread_join(th[w], NULL);
    for (unsigned w = 0; w < workers; w++) cr_assert_eq(mws[w].failures, 0, "worker %u: %s", w, mws[w].why);

    /* The final parameters, pulled after every worker is done, against init - lr * sum of every gradient. */
    uint64_t keys[NT];
    pserv_request_t reqs[NT];
    cr_assert_eq(pserv_worker_group_start(job.workers[0]), PSERV_OK);
    for (int i = 0; i < NT; i++) {
        keys[i] = 100 + (uint64_t)i;
        cr_assert_eq(pserv_worker_pull(job.workers[0], keys[i], mws[0].out[i], &reqs[i]), PSERV_OK);
    }
    cr_assert_eq(pserv_worker_group_end(job.workers[0]), PSERV_OK);
    for (int i = 0; i < NT; i++) cr_assert_eq(pserv_worker_wait(job.workers[0], reqs[i], 30000), PSERV_OK);
    size_t chunks = 0;
    for (int i = 0; i < NT; i++) {
        size_t n = tensor_count(i), count, chunk;
        cr_assert_eq(pserv_worker_tensor_info(job.workers[0], keys[i], &count, &chunk), PSERV_OK);
        chunks += (count + chunk - 1) / chunk;
        for (size_t j = 0; j < n; j++) {
            double ref = init_value(i, j);
            for (int r = 0; r < ROUNDS; r++)
                for (unsigned w = 0; w < workers; w++) ref -= LR * grad_value((int)w, r, i, j);
            cr_assert(fabs(mws[0].out[i][j] - ref) < 1e-4 + 1e-5 * fabs(ref), "tensor %d element %zu: %g, expected %g", i, j,
                      (double)mws[0].out[i][j], ref);
        }
    }
    /* Coalescing happened: the shards received far fewer messages than the chunk messages sent. */
    uint64_t messages = 0, batches_in = 0, batches_out = 0, pushes = 0;
    for (unsigned s = 0; s < servers; s++) {
        pserv_server_stats_t ss = PSERV_SERVER_STATS_INIT;
        cr_assert_eq(pserv_server_stats(job.servers[s], &ss), PSERV_OK);
        messages += ss.messages_in;
        batches_in += ss.batches_in;
        batches_out += ss.batches_out;
        pushes += ss.pushes;
    }
    uint64_t chunk_messages = (uint64_t)chunks * (ROUNDS * workers + 1); /* every push (or push-pull) and the final pulls */
    cr_assert_eq(pushes, (uint64_t)chunks * ROUNDS * workers, "every push applied once");
    cr_assert(messages * 5 < chunk_messages, "%llu messages for %llu chunk messages", (unsigned long long)messages,
              (unsigned long long)chunk_messages);
    cr_assert(batches_in > 0 && batches_out > 0, "batches in %llu, out %llu", (unsigned long long)batches_in,
              (unsigned long long)batches_out);
    for (unsigned w = 0; w < workers; w++) {
        pserv_worker_stats_t ws = PSERV_WORKER_STATS_INIT;
        pserv_worker_stats(job.workers[w], &ws);
        cr_assert(ws.batches_sent > 0 && ws.batched_messages >= (uint64_t)chunks * ROUNDS, "worker %u", w);
        cr_assert(ws.batches_received > 0, "worker %u got no coalesced replies", w);
        cr_assert_eq(ws.errors, 0);
        for (int i = 0; i < NT; i++) {
            free(mws[w].grad[i]);
            free(mws[w].out[i]);
        }
    }
    cr_assert_eq(inproc_job_stop(&job), 0);
}

Test(batch, model_of_200_tensors_sync_two_servers, .timeout = 120) { run_model(PSERV_MODE_SYNC, 2, 2); }
Test(batch, model_of_200_tensors_async_one_server, .timeout = 120) { run_model(PSERV_MODE_ASYNC, 1, 2); }

Test(batch, a_bad_request_fails_alone, .timeout = 60)
{
    inproc_job_t job;
    enum { K = 8, N = 2048 };
    static float init[N], grads[K][N], outs[K][N];
    cr_assert_eq(inproc_group_start(&job, PSERV_MODE_ASYNC, 0, 64, 2, 1, NULL), 0);
    for (size_t j = 0; j < N; j++) init[j] = 1.0f;
    for (int k = 0; k < K; k++) {
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = 10 + (uint64_t)k;
        tp.count = N;
        tp.init = init;
        tp.optim.lr = 0.5f;
        cr_assert_eq(pserv_worker_register(job.worker, &tp), PSERV_OK);
        for (size_t j = 0; j < N; j++) grads[k][j] = (float)k;
    }
    /* An unknown key among good ones: its request fails with UNKNOWN_KEY, the rest complete. */
    uint64_t keys[K];
    const void *g[K];
    void *d[K];
    pserv_request_t reqs[K];
    for (int k = 0; k < K; k++) {
        keys[k] = k == 3 ? 999 : 10 + (uint64_t)k;
        g[k] = grads[k];
        d[k] = outs[k];
    }
    cr_assert_eq(pserv_worker_push_pull_many(job.worker, K, keys, g, d, reqs), PSERV_ERR_UNKNOWN_KEY);
    cr_assert(strstr(pserv_worker_last_error(job.worker), "999") != NULL, "%s", pserv_worker_last_error(job.worker));
    for (int k = 0; k < K; k++) {
        pserv_status_t st = pserv_worker_wait(job.worker, reqs[k], 20000);
        cr_assert_eq(st, k == 3 ? PSERV_ERR_UNKNOWN_KEY : PSERV_OK, "request %d: %s", k, pserv_strerror(st));
        if (k != 3) cr_assert_float_eq(outs[k][7], 1.0f - 0.5f * (float)k, 1e-6);
    }
    /* A bad range is refused at the call; a NaN gradient is refused by the shard, inside the batch:
     * each fails its own request only. */
    grads[5][100] = NAN;
    cr_assert_eq(pserv_worker_group_start(job.worker), PSERV_OK);
    pserv_request_t bad;
    cr_assert_eq(pserv_worker_push_pull_range(job.worker, 10, 3, 100, grads[0], outs[0], &bad), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_worker_last_error(job.worker), "whole chunks") != NULL);
    for (int k = 0; k < K; k++)
        if (k != 3) cr_assert_eq(pserv_worker_push_pull(job.worker, 10 + (uint64_t)k, grads[k], outs[k], &reqs[k]), PSERV_OK);
    cr_assert_eq(pserv_worker_group_end(job.worker), PSERV_OK);
    cr_assert_eq(pserv_worker_group_end(job.worker), PSERV_ERR_INVALID_ARG, "no group open any more");
    for (int k = 0; k < K; k++) {
        if (k == 3) continue;
        pserv_status_t st = pserv_worker_wait(job.worker, reqs[k], 20000);
        cr_assert_eq(st, k == 5 ? PSERV_ERR_NOT_FINITE : PSERV_OK, "request %d: %s", k, pserv_strerror(st));
        if (k != 5) cr_assert_float_eq(outs[k][7], 1.0f - 2 * 0.5f * (float)k, 1e-6);
    }
    pserv_worker_stats_t ws = PSERV_WORKER_STATS_INIT;
    pserv_worker_stats(job.worker, &ws);
    cr_assert(ws.batches_sent >= 2 && ws.batches_received >= 2);
    cr_assert_eq(inproc_job_stop(&job), 0);
}

typedef struct {
    pserv_worker_h w;
    pserv_status_t st;
} try_start_t;

static void *try_start(void *arg)
{
    try_start_t *a = arg;
    a->st = pserv_worker_group_start(a->w);
    return NULL;
}

Test(batch, a_group_belongs_to_its_thread, .timeout = 30)
{
    inproc_job_t job;
    cr_assert_eq(inproc_job_start(&job, PSERV_MODE_ASYNC, 0, 16), 0);
    cr_assert_eq(pserv_worker_group_start(job.worker), PSERV_OK);
    cr_assert_eq(pserv_worker_group_start(job.worker), PSERV_OK, "groups nest");
    try_start_t a = {job.worker, PSERV_OK};
    pthread_t t;
    pthread_create(&t, NULL, try_start, &a);
    pthread_join(t, NULL);
    cr_assert_eq(a.st, PSERV_ERR_NO_RESOURCE);
    cr_assert(strstr(pserv_worker_last_error(job.worker), "another thread") != NULL);
    cr_assert_eq(pserv_worker_group_end(job.worker), PSERV_OK);
    cr_assert_eq(pserv_worker_group_end(job.worker), PSERV_OK);
    cr_assert_eq(pserv_worker_group_end(job.worker), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(inproc_job_stop(&job), 0);
}

/* Registers 100 small tensors, tells the parent, then pushes them in groups until a request fails. */
static int group_worker(void *arg, const char *coord, int fd)
{
    (void)arg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = coord;
    wp.timeout_ms = 20000;
    if (pserv_worker_create(&wp, &w) != PSERV_OK) return 50;
    enum { K = 100, N = 4096 };
    static float values[N], outs[K][N];
    uint64_t keys[K];
    const void *g[K];
    void *d[K];
    pserv_request_t reqs[K];
    for (int k = 0; k < K; k++) {
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = keys[k] = 1 + (uint64_t)k;
        tp.count = N;
        tp.init = values;
        if (pserv_worker_register(w, &tp) != PSERV_OK) return 51;
        g[k] = values;
        d[k] = outs[k];
    }
    char ready = 1;
    harness_write(fd, &ready, 1);
    pserv_status_t st = PSERV_OK;
    for (int i = 0; i < 2000 && st == PSERV_OK; i++) {
        pserv_status_t issued = pserv_worker_push_pull_many(w, K, keys, g, d, reqs);
        for (int k = 0; k < K; k++) {
            pserv_status_t one = pserv_worker_wait(w, reqs[k], 10000);
            if (st == PSERV_OK) st = one;
        }
        if (st == PSERV_OK) st = issued;
    }
    int32_t result = st;
    harness_write(fd, &result, sizeof(result));
    pserv_worker_destroy(w);
    return 0;
}

Test(batch, killed_server_fails_group_requests, .timeout = 90)
{
    harness_t h = {0};
    int fd;
    pid_t server = harness_start_ready_pair(&h, group_worker, &fd);
    cr_assert_gt(server, 0, "worker never got ready");
    usleep(200000); /* groups in flight */
    kill(server, SIGKILL);
    int32_t result = 0;
    int ok = harness_read(fd, &result, sizeof(result), 40000) == 0;
    harness_kill_all(&h);
    cr_assert(ok, "worker hung after its server died");
    cr_assert(result == PSERV_ERR_PEER_FAILED || result == PSERV_ERR_JOB_FAILED, "got %s", pserv_strerror(result));
}

/* --- hostile batches to a live, in-process server ------------------------------------- */

typedef struct {
    pthread_mutex_t lock;
    int replies, ok, errors, batches;
    int32_t last_error;
} raw_rx_t;

static void raw_count(raw_rx_t *r, const ps_wire_hdr_t *h)
{
    r->replies++;
    if (h->status >= 0) r->ok++;
    else r->errors++, r->last_error = h->status;
}

/* Counts the replies, each entry of a BATCH reply as one. */
static void raw_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    static ps_batch_entry_t ents[PS_WIRE_BATCH_MAX_ENTRIES];
    raw_rx_t *r = arg;
    ps_wire_hdr_t h;
    const char *why;
    uint32_t n;
    (void)peer;
    if (ps_wire_decode(hdr, hdr_len, len, &h, &why) < 0) return;
    pthread_mutex_lock(&r->lock);
    if (h.type != PS_MSG_BATCH) {
        raw_count(r, &h);
    } else if (ps_batch_decode(&h, data, len, PS_BATCH_REPLIES, ents, &n, &why) == PSERV_OK) {
        r->batches++;
        for (uint32_t i = 0; i < n; i++) raw_count(r, &ents[i].h);
    }
    pthread_mutex_unlock(&r->lock);
}

static raw_rx_t raw_wait(raw_rx_t *r, int want)
{
    raw_rx_t now = {0};
    for (int i = 0; i < 300; i++) {
        pthread_mutex_lock(&r->lock);
        now = *r;
        pthread_mutex_unlock(&r->lock);
        if (now.replies >= want) break;
        usleep(10000);
    }
    return now;
}

static ps_wire_hdr_t raw_push(uint64_t key, size_t bytes)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_PUSH);
    h.sender = 0;
    h.req_id = 77;
    h.key = key;
    h.dtype = PSERV_DTYPE_FLOAT32;
    h.length = bytes;
    return h;
}

static void send_batch(ps_tp_peer_t *peer, const ps_batch_t *b, size_t len)
{
    uint8_t hdr[PS_WIRE_HDR_LEN];
    ps_wire_hdr_t h;
    ps_batch_hdr(b, 0, 0, &h);
    h.length = len;
    ps_wire_encode(&h, hdr);
    cr_assert_eq(ps_tp_send(peer, hdr, sizeof(hdr), b->buf, len, NULL, NULL, NULL), PSERV_OK);
}

static float pull_first(pserv_worker_h w)
{
    static float out[256];
    pserv_request_t req;
    cr_assert_eq(pserv_worker_pull(w, 9, out, &req), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(w, req, 10000), PSERV_OK);
    for (int i = 1; i < 256; i++) cr_assert_eq(out[i], out[0]);
    return out[0];
}

Test(batch, damaged_batches_are_refused_whole_and_entries_alone, .timeout = 60)
{
    inproc_job_t job;
    cr_assert_eq(inproc_job_start(&job, PSERV_MODE_ASYNC, 0, 0), 0);
    static float zeros[256], ones[256];
    for (int i = 0; i < 256; i++) ones[i] = 1.0f;
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 9;
    tp.count = 256;
    tp.init = zeros;
    tp.optim.lr = 1.0f;
    cr_assert_eq(pserv_worker_register(job.worker, &tp), PSERV_OK);

    raw_rx_t rx = {.lock = PTHREAD_MUTEX_INITIALIZER};
    ps_tp_params_t tpp = {.handler = {.arg = &rx, .rx = raw_rx}};
    ps_tp_t *tp_raw;
    ps_tp_peer_t *peer;
    char host[PS_HOST_MAX];
    uint16_t sport;
    cr_assert_eq(ps_tp_create(&tpp, &tp_raw), PSERV_OK);
    cr_assert_eq(ps_hostport_parse(job.server->m.job.servers[0], 0, host, &sport), PSERV_OK);
    cr_assert_eq(ps_tp_connect(tp_raw, host, sport, &peer), PSERV_OK);
    uint8_t hb[PS_WIRE_HDR_LEN];
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_HELLO);
    h.sender = 0;
    ps_wire_encode(&h, hb);
    ps_tp_send(peer, hb, sizeof(hb), NULL, 0, NULL, NULL, NULL);
    cr_assert_eq(raw_wait(&rx, 1).ok, 1, "hello answered");

    /* One buffer per batch: a send's payload must outlive it (these sends have no completion). */
    static uint8_t sent[4][8192] __attribute__((aligned(64)));
    uint8_t *bytes;
    ps_batch_t b;
    ps_wire_hdr_t good = raw_push(9, sizeof(ones)), inner, hello;
    ps_wire_hdr_init(&hello, PS_MSG_HELLO);
    hello.sender = 0;
    for (int damage = 0; damage < 3; damage++) {
        pserv_server_stats_t before = PSERV_SERVER_STATS_INIT, after = PSERV_SERVER_STATS_INIT;
        pserv_server_stats(job.server, &before);
        bytes = sent[damage];
        ps_batch_init(&b, bytes, sizeof(sent[0]));
        ps_batch_add(&b, &good, ones, sizeof(ones));
        size_t len;
        if (damage == 0) { /* a good push, then a second one cut short */
            ps_batch_add(&b, &good, ones, sizeof(ones));
            len = b.len - 100;
        } else if (damage == 1) { /* a good push, then a batch inside */
            ps_batch_t in;
            ps_batch_init(&in, bytes + b.len + PS_WIRE_HDR_LEN, sizeof(sent[0]) - b.len - PS_WIRE_HDR_LEN);
            ps_batch_add(&in, &good, ones, sizeof(ones));
            ps_batch_hdr(&in, 0, 0, &inner);
            ps_wire_encode(&inner, bytes + b.len);
            b.len += PS_WIRE_HDR_LEN + in.len;
            b.n++;
            len = b.len;
        } else { /* a good push, then a HELLO */
            ps_batch_add(&b, &hello, NULL, 0);
            len = b.len;
        }
        send_batch(peer, &b, len);
        for (int i = 0; i < 200; i++) {
            pserv_server_stats(job.server, &after);
            if (after.rejected > before.rejected) break;
            usleep(10000);
        }
        cr_assert_eq(after.rejected, before.rejected + 1, "damage %d not counted", damage);
        cr_assert_eq(after.pushes, before.pushes, "damage %d: an entry was applied", damage);
        cr_assert_eq(pull_first(job.worker), 0.0f, "damage %d: the parameters moved", damage);
    }
    cr_assert_eq(raw_wait(&rx, 1).replies, 1, "a damaged batch has nobody to answer");

    /* A well-formed batch with one bad entry: that entry is answered with its error, the good one applied. */
    ps_batch_init(&b, sent[3], sizeof(sent[3]));
    ps_batch_add(&b, &good, ones, sizeof(ones));
    ps_wire_hdr_t unknown = raw_push(12345, sizeof(ones));
    ps_batch_add(&b, &unknown, ones, sizeof(ones));
    send_batch(peer, &b, b.len);
    raw_rx_t got = raw_wait(&rx, 3);
    cr_assert_eq(got.replies, 3);
    cr_assert_eq(got.ok, 2);
    cr_assert_eq(got.errors, 1);
    cr_assert_eq(got.last_error, PSERV_ERR_UNKNOWN_KEY);
    cr_assert_eq(pull_first(job.worker), -1.0f, "the good entry's SGD step (lr 1, gradient 1)");
    ps_tp_destroy(tp_raw);
    cr_assert_eq(inproc_job_stop(&job), 0);
}
