/*
 * The staging pipeline's host side (core/stager.c) on a real job: results of whole and range
 * operations, piece order, requests held back until their piece is staged, per-piece errors,
 * the bounded queues, and a server that dies under it.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stager.h"
#include "harness.h"

#define CHUNK_BYTES 4096
#define CE (CHUNK_BYTES / sizeof(float)) /* elements per chunk */
#define MAXP 64

/* What the callbacks saw, and the gate the staged callback waits at. */
typedef struct {
    pthread_mutex_t mu;
    int gated;          /* staged(i) blocks until released > i */
    unsigned released;
    unsigned entered;   /* staged calls begun */
    unsigned fail_piece;
    pserv_status_t fail_st; /* < 0: staged(fail_piece) returns it */
    unsigned ndone;
    unsigned done_piece[MAXP];
    pserv_status_t done_st[MAXP];
    int nop_done;
    unsigned ndone_at_op_done;
    pserv_status_t op_st;
} rec_t;

#define REC_INIT {.mu = PTHREAD_MUTEX_INITIALIZER}

static uint64_t server_pushes(pserv_server_h s)
{
    pserv_server_stats_t ss = PSERV_SERVER_STATS_INIT;
    pserv_server_stats(s, &ss);
    return ss.pushes;
}

static pserv_status_t rec_staged(void *arg, unsigned piece)
{
    rec_t *r = arg;
    pthread_mutex_lock(&r->mu);
    r->entered++;
    while (r->gated && r->released <= piece) {
        pthread_mutex_unlock(&r->mu);
        usleep(500);
        pthread_mutex_lock(&r->mu);
    }
    pserv_status_t st = r->fail_st < 0 && piece == r->fail_piece ? r->fail_st : PSERV_OK;
    pthread_mutex_unlock(&r->mu);
    return st;
}

static void rec_piece_done(void *arg, unsigned piece, pserv_status_t st)
{
    rec_t *r = arg;
    pthread_mutex_lock(&r->mu);
    if (r->ndone < MAXP) {
        r->done_piece[r->ndone] = piece;
        r->done_st[r->ndone] = st;
    }
    r->ndone++;
    pthread_mutex_unlock(&r->mu);
}

static void rec_op_done(void *arg, pserv_status_t st)
{
    rec_t *r = arg;
    pthread_mutex_lock(&r->mu);
    r->nop_done++;
    r->ndone_at_op_done = r->ndone;
    r->op_st = st;
    pthread_mutex_unlock(&r->mu);
}

static unsigned rec_get(rec_t *r, const unsigned *field)
{
    pthread_mutex_lock(&r->mu);
    unsigned v = *field;
    pthread_mutex_unlock(&r->mu);
    return v;
}

/* Waits up to 10 s for *field >= want; returns its value. */
static unsigned rec_wait(rec_t *r, const unsigned *field, unsigned want)
{
    unsigned v = 0;
    for (int i = 0; i < 10000 && (v = rec_get(r, field)) < want; i++) usleep(1000);
    return v;
}

static void rec_release(rec_t *r, unsigned upto)
{
    pthread_mutex_lock(&r->mu);
    r->released = upto;
    pthread_mutex_unlock(&r->mu);
}

static ps_stage_op_t op_of(ps_stage_kind_t kind, uint64_t key, size_t offset, size_t count, size_t piece_elems,
                           float *host, rec_t *r, int with_staged)
{
    ps_stage_op_t op = {kind, key, offset, count, piece_elems, host,
                        {with_staged ? rec_staged : NULL, rec_piece_done, rec_op_done}, r};
    return op;
}

static void register_tensor(pserv_worker_h w, uint64_t key, size_t n, const float *init)
{
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = key;
    tp.count = n;
    tp.init = init;
    tp.optim.lr = 1.0f; /* param - g, exact for these values */
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_OK, "%s", pserv_worker_last_error(w));
}

static float v_of(size_t i) { return (float)(i % 101) * 0.5f; }
static float g_of(size_t i, int k) { return (float)((i + (size_t)k) % 13) * 0.25f; }

static void pull_all(pserv_worker_h w, uint64_t key, float *out)
{
    pserv_request_t req;
    cr_assert_eq(pserv_worker_pull(w, key, out, &req), PSERV_OK);
    cr_assert_eq(pserv_worker_wait(w, req, 10000), PSERV_OK);
}

/* init: the tensor's first values; grad (when not NULL): round k's gradient. */
static void fill(float *init, float *grad, size_t n, int k)
{
    for (size_t i = 0; i < n; i++) {
        if (init != NULL) init[i] = v_of(i);
        if (grad != NULL) grad[i] = g_of(i, k);
    }
}

/* buf is the tensor's first values less round k's gradient. */
static void expect_stepped(const float *buf, size_t n, int k)
{
    for (size_t i = 0; i < n; i++) {
        float want = v_of(i) - g_of(i, k);
        cr_assert_eq(buf[i], want, "element %zu: %g, want %g", i, (double)buf[i], (double)want);
    }
}

/* One server, one worker with one tensor, and a stager on the worker. */
typedef struct {
    inproc_job_t job;
    ps_stager_t *s;
} stage_job_t;

static void stage_job_start(stage_job_t *j, pserv_mode_t mode, unsigned max_requests, uint64_t key, size_t n,
                            const float *init)
{
    cr_assert_eq(inproc_job_start(&j->job, mode, CHUNK_BYTES, max_requests), 0);
    register_tensor(j->job.worker, key, n, init);
    cr_assert_eq(ps_stager_create(j->job.worker, &j->s), PSERV_OK);
}

/* Destroys the stager (unless the test did) and ends the job, which must end cleanly. */
static void stage_job_stop(stage_job_t *j)
{
    ps_stager_destroy(j->s);
    cr_assert_eq(inproc_job_stop(&j->job), 0);
}

static unsigned pieces_of(pserv_worker_h w, const ps_stage_op_t *op)
{
    unsigned pieces = 0;
    cr_assert_eq(ps_stage_pieces(w, op, &pieces), PSERV_OK);
    return pieces;
}

/* Submits op and waits for the stager to finish everything; drain must return want. */
static void run(ps_stager_t *s, const ps_stage_op_t *op, pserv_status_t want)
{
    cr_assert_eq(ps_stager_submit(s, op), PSERV_OK);
    pserv_status_t st = ps_stager_drain(s, 20000);
    cr_assert_eq(st, want, "drain: %s, want %s", pserv_strerror(st), pserv_strerror(want));
}

#define NO_PIECE UINT_MAX

/* The operation finished: pieces 0..n-1 reported once each, in order, PSERV_OK but for piece
 * failed (fail_st); then op_done once, after the last piece, with fail_st. */
static void expect_pieces(const rec_t *r, unsigned n, unsigned failed, pserv_status_t fail_st)
{
    cr_assert_eq(r->ndone, n, "%u pieces reported, want %u", r->ndone, n);
    for (unsigned i = 0; i < n; i++) {
        cr_assert_eq(r->done_piece[i], i, "report %u is of piece %u", i, r->done_piece[i]);
        cr_assert_eq(r->done_st[i], i == failed ? fail_st : PSERV_OK, "piece %u: %s", i, pserv_strerror(r->done_st[i]));
    }
    cr_assert_eq(r->nop_done, 1);
    cr_assert_eq(r->ndone_at_op_done, n, "op_done ran before its last piece_done");
    cr_assert_eq(r->op_st, fail_st, "op_done: %s", pserv_strerror(r->op_st));
}

/* 10 whole chunks and a partial one. */
#define N1 (10 * CE + 300)

Test(stager, push_pull_in_pieces_is_exact_and_in_order, .timeout = 60)
{
    static float init[N1], host[N1], out[N1];
    stage_job_t j;
    rec_t r = REC_INIT;
    fill(init, host, N1, 0);
    stage_job_start(&j, PSERV_MODE_ASYNC, 0, 1, N1, init);

    ps_stage_op_t op = op_of(PS_STAGE_PUSH_PULL, 1, 0, N1, 3 * CE, host, &r, 0);
    cr_assert_eq(pieces_of(j.job.worker, &op), 4); /* 3 + 3 + 3 + 1.3 chunks */
    op.piece_elems = 2 * CE + 1;                    /* rounded up to 3 chunks */
    cr_assert_eq(pieces_of(j.job.worker, &op), 4);
    run(j.s, &op, PSERV_OK);
    expect_pieces(&r, 4, NO_PIECE, PSERV_OK);
    expect_stepped(host, N1, 0);
    pull_all(j.job.worker, 1, out);
    cr_assert_eq(memcmp(out, host, sizeof(out)), 0);
    cr_assert_eq(server_pushes(j.job.server), 11, "one push per chunk");
    stage_job_stop(&j);
}

Test(stager, requests_wait_for_their_piece_to_be_staged, .timeout = 60)
{
    static float init[N1], host[N1];
    stage_job_t j;
    rec_t r = REC_INIT;
    r.gated = 1;
    fill(init, host, N1, 0);
    stage_job_start(&j, PSERV_MODE_ASYNC, 0, 1, N1, init);

    ps_stage_op_t op = op_of(PS_STAGE_PUSH_PULL, 1, 0, N1, 2 * CE, host, &r, 1); /* 6 pieces */
    cr_assert_eq(ps_stager_submit(j.s, &op), PSERV_OK);
    /* Release piece i only once piece i - 1 is done and the issuer sits in staged(i): then no
     * chunk of piece i may have reached the server yet, and none of piece i may be done. */
    for (unsigned i = 0; i < 6; i++) {
        cr_assert_eq(rec_wait(&r, &r.entered, i + 1), i + 1, "staged(%u) never called", i);
        cr_assert_eq(rec_wait(&r, &r.ndone, i), i, "piece %u never done", i - 1);
        usleep(20000);
        cr_assert_eq(rec_get(&r, &r.ndone), i, "piece %u done before it was staged", i);
        cr_assert_eq(rec_get(&r, &r.entered), i + 1, "staged(%u) called before piece %u was staged", i + 1, i);
        cr_assert_eq(server_pushes(j.job.server), 2 * i, "piece %u sent before it was staged", i);
        rec_release(&r, i + 1);
    }
    cr_assert_eq(ps_stager_drain(j.s, 20000), PSERV_OK);
    expect_pieces(&r, 6, NO_PIECE, PSERV_OK);
    expect_stepped(host, N1, 0);
    stage_job_stop(&j);
}

/* 7 whole chunks and a partial one. */
#define N3 (7 * CE + 300)

Test(stager, range_ops_touch_only_their_range, .timeout = 60)
{
    static float init[N3], grad[N3], got[N3], out[N3];
    stage_job_t j;
    rec_t r = REC_INIT, r2 = REC_INIT;
    fill(init, NULL, N3, 0);
    stage_job_start(&j, PSERV_MODE_ASYNC, 0, 2, N3, init);

    size_t off = 2 * CE, cnt = N3 - off; /* 5 chunks and the partial one */
    for (size_t i = 0; i < cnt; i++) grad[i] = g_of(off + i, 0); /* the range's own elements */
    ps_stage_op_t op = op_of(PS_STAGE_PUSH, 2, off, cnt, 2 * CE + 5, grad, &r, 1);
    cr_assert_eq(pieces_of(j.job.worker, &op), 2); /* 3 chunks, then 2.3 */
    run(j.s, &op, PSERV_OK);
    expect_pieces(&r, 2, NO_PIECE, PSERV_OK);
    cr_assert_eq(server_pushes(j.job.server), 6);

    pull_all(j.job.worker, 2, out);
    for (size_t i = 0; i < N3; i++) {
        float want = i < off ? v_of(i) : v_of(i) - g_of(i, 0);
        cr_assert_eq(out[i], want, "element %zu: %g, want %g", i, (double)out[i], (double)want);
    }
    /* A pull of chunks 1..3 lands at the start of its buffer; the rest of the buffer stays. */
    for (size_t i = 0; i < N3; i++) got[i] = -7.0f;
    ps_stage_op_t pull = op_of(PS_STAGE_PULL, 2, CE, 3 * CE, 0, got, &r2, 0);
    run(j.s, &pull, PSERV_OK);
    expect_pieces(&r2, 3, NO_PIECE, PSERV_OK);
    for (size_t i = 0; i < 3 * CE; i++) cr_assert_eq(got[i], out[CE + i], "element %zu", CE + i);
    for (size_t i = 3 * CE; i < N3; i++) cr_assert_eq(got[i], -7.0f, "element %zu written past the range", i);
    stage_job_stop(&j);
}

Test(stager, sync_rounds_follow_each_other, .timeout = 60)
{
    static float init[N1], host[N1], out[N1];
    stage_job_t j;
    rec_t r1 = REC_INIT, r2 = REC_INIT;
    fill(init, host, N1, 1);
    stage_job_start(&j, PSERV_MODE_SYNC, 0, 3, N1, init);

    /* Different piece sizes: the per-chunk rounds do not depend on how a range is cut. */
    ps_stage_op_t op = op_of(PS_STAGE_PUSH_PULL, 3, 0, N1, 2 * CE, host, &r1, 1);
    run(j.s, &op, PSERV_OK);
    expect_pieces(&r1, 6, NO_PIECE, PSERV_OK);
    expect_stepped(host, N1, 1);
    fill(NULL, host, N1, 2);
    op = op_of(PS_STAGE_PUSH_PULL, 3, 0, N1, 3 * CE, host, &r2, 0);
    run(j.s, &op, PSERV_OK);
    expect_pieces(&r2, 4, NO_PIECE, PSERV_OK);
    for (size_t i = 0; i < N1; i++) {
        float want = v_of(i) - g_of(i, 1) - g_of(i, 2);
        cr_assert_eq(host[i], want, "round 2, element %zu: %g, want %g", i, (double)host[i], (double)want);
    }
    pull_all(j.job.worker, 3, out);
    cr_assert_eq(memcmp(out, host, sizeof(out)), 0);
    stage_job_stop(&j);
}

Test(stager, errors_are_reported_per_piece, .timeout = 60)
{
    static float init[N1], host[N1], out[N1];
    stage_job_t j;
    rec_t r = REC_INIT;
    fill(init, host, N1, 0);
    stage_job_start(&j, PSERV_MODE_ASYNC, 0, 4, N1, init);
    ps_stager_t *s = j.s;
    unsigned pieces = 99;

    /* Bad operations are refused at submit, and nothing of them runs. */
    ps_stage_op_t bad = op_of(PS_STAGE_PUSH_PULL, 404, 0, N1, 0, host, &r, 1);
    cr_assert_eq(ps_stager_submit(s, &bad), PSERV_ERR_UNKNOWN_KEY);
    cr_assert_eq(ps_stage_pieces(j.job.worker, &bad, &pieces), PSERV_ERR_UNKNOWN_KEY);
    cr_assert(strstr(pserv_last_error(), "404") != NULL, "%s", pserv_last_error());
    bad = op_of(PS_STAGE_PUSH_PULL, 4, 100, CE, 0, host, &r, 1);
    cr_assert_eq(ps_stager_submit(s, &bad), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_last_error(), "whole chunks") != NULL, "%s", pserv_last_error());
    bad.offset = CE;
    bad.count = CE + 1; /* ends inside a chunk that is not the last */
    cr_assert_eq(ps_stager_submit(s, &bad), PSERV_ERR_INVALID_ARG);
    bad.count = 0;
    cr_assert_eq(ps_stager_submit(s, &bad), PSERV_ERR_INVALID_ARG);
    bad.count = N1;
    cr_assert_eq(ps_stager_submit(s, &bad), PSERV_ERR_INVALID_ARG);
    bad = op_of(PS_STAGE_PUSH_PULL, 4, 0, N1, 0, NULL, &r, 1);
    cr_assert_eq(ps_stager_submit(s, &bad), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pieces, 99);
    cr_assert_eq(ps_stager_drain(s, 1000), PSERV_OK);
    cr_assert_eq(r.entered + r.ndone + (unsigned)r.nop_done, 0);
    cr_assert_eq(server_pushes(j.job.server), 0);

    /* Piece 1 fails to stage: it is not sent, the others are, and every piece is reported. */
    r.fail_piece = 1;
    r.fail_st = PSERV_ERR_IO;
    ps_stage_op_t op = op_of(PS_STAGE_PUSH_PULL, 4, 0, N1, 3 * CE, host, &r, 1);
    run(s, &op, PSERV_ERR_IO);
    cr_assert_eq(ps_stager_drain(s, 1000), PSERV_OK, "the error is reported once");
    expect_pieces(&r, 4, 1, PSERV_ERR_IO);
    cr_assert_eq(server_pushes(j.job.server), 8, "piece 1's 3 chunks were not sent");
    pull_all(j.job.worker, 4, out);
    for (size_t i = 0; i < N1; i++) {
        int in1 = i >= 3 * CE && i < 6 * CE;
        cr_assert_eq(out[i], in1 ? v_of(i) : v_of(i) - g_of(i, 0), "element %zu", i);
        cr_assert_eq(host[i], in1 ? g_of(i, 0) : out[i], "host element %zu", i);
    }
    stage_job_stop(&j);
}

/* One operation of many, counting into a shared record. */
typedef struct {
    pthread_mutex_t *mu;
    int *order;
    int *nops;
    int index;
    unsigned pieces_done;
    pserv_status_t st;
} many_t;

static void many_piece_done(void *arg, unsigned piece, pserv_status_t st)
{
    many_t *m = arg;
    if (piece == m->pieces_done && st == PSERV_OK) m->pieces_done++;
}

static void many_op_done(void *arg, pserv_status_t st)
{
    many_t *m = arg;
    pthread_mutex_lock(m->mu);
    m->order[(*m->nops)++] = m->index;
    m->st = st;
    pthread_mutex_unlock(m->mu);
}

Test(stager, destroy_finishes_everything_queued, .timeout = 60)
{
    enum { OPS = 64, NS = 2 * CE + 10 };
    static float init[NS], grad[OPS][NS], out[NS];
    static many_t m[OPS];
    static int order[OPS];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int nops = 0;
    stage_job_t j;
    for (size_t i = 0; i < NS; i++) init[i] = 100.0f;
    stage_job_start(&j, PSERV_MODE_ASYNC, 0, 5, NS, init);
    for (int k = 0; k < OPS; k++) {
        for (size_t i = 0; i < NS; i++) grad[k][i] = 0.5f;
        m[k] = (many_t){&mu, order, &nops, k, 0, PSERV_ERR_INTERNAL};
        ps_stage_op_t op = {PS_STAGE_PUSH, 5, 0, NS, 0, grad[k], {NULL, many_piece_done, many_op_done}, &m[k]};
        cr_assert_eq(ps_stager_submit(j.s, &op), PSERV_OK);
    }
    ps_stager_destroy(j.s);
    j.s = NULL;
    cr_assert_eq(nops, OPS);
    for (int k = 0; k < OPS; k++) {
        cr_assert_eq(order[k], k, "operations finish in submission order");
        cr_assert_eq(m[k].pieces_done, 3, "op %d: pieces done %u", k, m[k].pieces_done);
        cr_assert_eq(m[k].st, PSERV_OK);
    }
    cr_assert_eq(server_pushes(j.job.server), OPS * 3);
    pull_all(j.job.worker, 5, out);
    for (size_t i = 0; i < NS; i++) cr_assert_eq(out[i], 100.0f - 0.5f * OPS, "element %zu", i);
    stage_job_stop(&j);
}

Test(stager, waits_out_a_full_request_table, .timeout = 60)
{
    static float init[N1], host[N1];
    stage_job_t j;
    rec_t r = REC_INIT;
    fill(init, host, N1, 0);
    /* Two request slots for eleven one-chunk pieces: the issuer must wait for the completer. */
    stage_job_start(&j, PSERV_MODE_ASYNC, 2, 6, N1, init);
    ps_stage_op_t op = op_of(PS_STAGE_PUSH_PULL, 6, 0, N1, 0, host, &r, 0);
    run(j.s, &op, PSERV_OK);
    expect_pieces(&r, 11, NO_PIECE, PSERV_OK);
    expect_stepped(host, N1, 0);
    stage_job_stop(&j);
}

Test(stager, queue_is_bounded, .timeout = 60)
{
    enum { NQ = 64 };
    static float init[NQ], host[NQ];
    stage_job_t j;
    rec_t r = REC_INIT;
    stage_job_start(&j, PSERV_MODE_ASYNC, 0, 7, NQ, init);
    r.gated = 1; /* the first op's only piece holds everything up */
    ps_stage_op_t op = op_of(PS_STAGE_PULL, 7, 0, NQ, 0, host, &r, 1);
    int queued = 0;
    pserv_status_t st;
    while ((st = ps_stager_submit(j.s, &op)) == PSERV_OK && queued < 1000) queued++;
    cr_assert_eq(st, PSERV_ERR_NO_RESOURCE);
    cr_assert_eq(queued, 256);
    cr_assert_eq(ps_stager_drain(j.s, 50), PSERV_ERR_TIMED_OUT);
    cr_assert_eq(rec_get(&r, &r.ndone), 0);
    rec_release(&r, 1);
    cr_assert_eq(ps_stager_drain(j.s, 20000), PSERV_OK);
    cr_assert_eq(r.nop_done, 256);
    cr_assert_eq(r.ndone, 256);
    cr_assert_eq(ps_stager_submit(j.s, &op), PSERV_OK, "room again");
    ps_stager_destroy(j.s);
    j.s = NULL;
    cr_assert_eq(r.nop_done, 257);
    stage_job_stop(&j);
}

/* --- a server killed under a running stager ------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define ND (8 * CE)

/* What the doomed worker sends back once its stager is done. */
typedef struct {
    int32_t drained;   /* ps_stager_drain's status */
    int32_t pieces;    /* pieces reported; -i where piece i > 0 did not fail */
    int32_t op_st;     /* op_done's status */
    int32_t piece0_st; /* piece 0's, sent before the server died */
    double elapsed;    /* seconds from the server's death to the stager's end */
} doomed_result_t;

/* Piece 0 goes through; the parent kills the server; the other pieces must fail quickly. */
static int doomed_stager_worker(void *arg, const char *coord, int fd)
{
    (void)arg;
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    ps_stager_t *s;
    static float init[ND], host[ND];
    static rec_t r = REC_INIT;
    wp.coordinator = coord;
    wp.timeout_ms = 20000;
    if (pserv_worker_create(&wp, &w) != PSERV_OK) return 50;
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 9;
    tp.count = ND;
    tp.init = init;
    if (pserv_worker_register(w, &tp) != PSERV_OK) return 51;
    if (ps_stager_create(w, &s) != PSERV_OK) return 52;
    r.gated = 1;
    rec_release(&r, 1);
    ps_stage_op_t op = op_of(PS_STAGE_PUSH_PULL, 9, 0, ND, CE, host, &r, 1);
    if (ps_stager_submit(s, &op) != PSERV_OK) return 53;
    if (rec_wait(&r, &r.ndone, 1) != 1) return 54;
    char ready = 1;
    harness_write(fd, &ready, 1);
    usleep(300000); /* the parent kills the server now */
    double t0 = now_s();
    rec_release(&r, ND);
    doomed_result_t res = {ps_stager_drain(s, 30000), 0, 0, 0, 0};
    ps_stager_destroy(s);
    res.elapsed = now_s() - t0;
    res.pieces = (int32_t)r.ndone;
    res.op_st = r.op_st;
    res.piece0_st = r.done_st[0];
    for (unsigned i = 1; i < r.ndone && i < MAXP; i++)
        if (r.done_st[i] != PSERV_ERR_PEER_FAILED && r.done_st[i] != PSERV_ERR_JOB_FAILED) res.pieces = -(int32_t)i;
    harness_write(fd, &res, sizeof(res));
    pserv_worker_destroy(w);
    return 0;
}

Test(stager, killed_server_fails_pieces_not_hangs, .timeout = 60)
{
    harness_t h = {0};
    doomed_result_t res = {0};
    char ready = 0;
    int fd;
    harness_start_coordinator(&h, 1, 1, PSERV_MODE_SYNC, CHUNK_BYTES);
    pid_t server = harness_start_server(&h, 1);
    harness_start(&h, doomed_stager_worker, NULL, &fd);
    int got_ready = harness_read(fd, &ready, 1, 30000) == 0;
    if (got_ready) kill(server, SIGKILL);
    int ok = got_ready && harness_read(fd, &res, sizeof(res), 40000) == 0;
    harness_kill_all(&h);
    cr_assert(got_ready, "the worker never got its first piece through");
    cr_assert(ok, "the stager hung after its server died");
    /* Which report reaches the worker first decides the code: its own connection's failure, or
     * the coordinator's ABORT naming the dead server. Either way the pieces fail, never hang. */
    cr_assert(res.drained == PSERV_ERR_PEER_FAILED || res.drained == PSERV_ERR_JOB_FAILED, "drain: %s",
              pserv_strerror(res.drained));
    cr_assert_eq(res.pieces, 8, "pieces reported %d (negative: that piece did not fail)", res.pieces);
    cr_assert(res.op_st == PSERV_ERR_PEER_FAILED || res.op_st == PSERV_ERR_JOB_FAILED, "op_done: %s",
              pserv_strerror(res.op_st));
    cr_assert_eq(res.piece0_st, PSERV_OK, "piece 0: %s", pserv_strerror(res.piece0_st));
    cr_assert_lt(res.elapsed, 15.0, "took %.1f s", res.elapsed);
}
