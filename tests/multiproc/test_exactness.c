/*
 * Exactness of whole jobs as separate processes on 127.0.0.1 (coordinator, 2 server shards,
 * 3 workers), against references written here in double precision, independently of the
 * library's optimizer code:
 *   - sync mode, Adam / AdamW / AdaGrad: 10 rounds of push-pull must equal one process taking
 *     one step per round on the sum of the workers' gradients, on every element, and every
 *     worker must pull the same bits;
 *   - async mode, plain SGD: every push is one step, so after all pushes the parameters must be
 *     initial - lr * (sum of every pushed gradient), exactly, and each shard must have run one
 *     step per chunk push it received.
 * Server shards run in processes of their own that send their counters back through a pipe.
 * Semantics tested (include/pserv/pserv.h, docs/design.md, the table at the top of
 * core/optim.c): sync mode sums the workers' gradients (no mean); Adam adds weight_decay * p to
 * the gradient (L2) and is bias-corrected with eps outside the square root,
 * p -= lr * m_hat / (sqrt(v_hat) + eps); AdamW first scales p by 1 - lr * weight_decay;
 * AdaGrad starts its accumulator at 0 and divides by sqrt(s) + eps.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "pserv/pserv.h"

#define NWORKERS 3
#define NSERVERS 2
#define CHUNK_BYTES 4096 /* 1024 floats: the large tensor is 5 chunks, spread over both shards */
#define CHUNK_ELEMS (CHUNK_BYTES / sizeof(float))
#define SYNC_ROUNDS 10
#define ASYNC_PUSHES 20
#define WAIT_MS 20000
#define RESULT_MS 90000 /* a whole job on a 2-core machine, with margin */

static const size_t tensor_sizes[] = {5003, 257, 1}; /* keys 1..3 */
#define NTENSORS (sizeof(tensor_sizes) / sizeof(tensor_sizes[0]))

/* ---------------------------------------------------------------------------------------- */
/* Deterministic values                                                                      */

static uint64_t exact_mix(uint64_t x)
{
    /* splitmix64's finalizer: every input bit reaches every output bit. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* An integer in [-half, half] named by (a, b, c, i). */
static int exact_units(uint64_t a, uint64_t b, uint64_t c, uint64_t i, int half)
{
    uint64_t h = exact_mix(exact_mix(exact_mix(exact_mix(a + 1) ^ (b + 0x51)) ^ (c + 0x3c7)) ^ i);
    return (int)(h % (uint64_t)(2 * half + 1)) - half;
}

/*
 * Gradient of worker w, round (or push) k, tensor t, element i: a multiple of 2^-10 in [-1, 1].
 * Sums of a few such values are exact in float, so the server's sum equals the reference's
 * whatever order the pushes arrive in.
 */
static float grad_value(unsigned w, unsigned k, unsigned t, size_t i)
{
    return (float)exact_units(w, k, t, i, 1024) / 1024.0f;
}

/* Initial value: a multiple of 2^-10 in [-0.5, 0.5]. */
static float init_value(unsigned t, size_t i)
{
    return (float)exact_units(1000, 0, t, i, 512) / 1024.0f;
}

/*
 * The chunk geometry docs/design.md promises for NSERVERS live servers: a tensor of at least
 * NSERVERS x 1 KiB is cut into a multiple of NSERVERS chunks of equal size (the last one shorter),
 * at most CHUNK_BYTES each; a smaller one into chunks of CHUNK_BYTES.
 */
static size_t chunk_elems_of(size_t count)
{
    if (count * sizeof(float) < NSERVERS * 1024) return CHUNK_ELEMS;
    size_t n = (count + CHUNK_ELEMS - 1) / CHUNK_ELEMS;
    n = (n + NSERVERS - 1) / NSERVERS * NSERVERS;
    return (count + n - 1) / n;
}

static size_t chunks_of(size_t count)
{
    return (count + chunk_elems_of(count) - 1) / chunk_elems_of(count);
}

static size_t total_chunks(void)
{
    size_t n = 0;
    for (unsigned t = 0; t < NTENSORS; t++) n += chunks_of(tensor_sizes[t]);
    return n;
}

static size_t total_elems(void)
{
    size_t n = 0;
    for (unsigned t = 0; t < NTENSORS; t++) n += tensor_sizes[t];
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* Server shard processes that report their counters                                        */

typedef struct {
    uint32_t rank;
    int32_t wait_status; /* pserv_server_wait's result */
    pserv_server_stats_t stats;
} server_report_t;

/* Runs a shard until the job ends, then writes a server_report_t to fd. */
static int server_proc(void *arg, const char *coord, int fd)
{
    (void)arg;
    pserv_server_params_t p = PSERV_SERVER_PARAMS_INIT;
    pserv_server_h s;
    server_report_t rep;
    p.coordinator = coord;
    p.threads = 1;
    p.timeout_ms = WAIT_MS;
    if (pserv_server_create(&p, &s) != PSERV_OK) {
        fprintf(stderr, "server: %s\n", pserv_last_error());
        return 20;
    }
    memset(&rep, 0, sizeof(rep));
    rep.wait_status = pserv_server_wait(s, 120000);
    rep.stats = (pserv_server_stats_t)PSERV_SERVER_STATS_INIT;
    unsigned rank = 0;
    int ok = pserv_server_rank(s, &rank) == PSERV_OK && pserv_server_stats(s, &rep.stats) == PSERV_OK;
    rep.rank = rank;
    harness_write(fd, &rep, sizeof(rep));
    pserv_server_destroy(s);
    return ok ? 0 : 21;
}

/* Reads n bytes or kills the job and fails the test. */
static void read_or_fail(harness_t *h, int fd, void *buf, size_t n, const char *what, unsigned who)
{
    int ok = harness_read(fd, buf, n, RESULT_MS) == 0;
    if (!ok) harness_kill_all(h);
    cr_assert(ok, "%s %u sent no result", what, who);
}

/*
 * Reads both shards' reports and checks their counters: each shard ran `steps_per_chunk` steps
 * and received `pushes_per_chunk` pushes and sent `pulls_per_chunk` pulls for every chunk it
 * owns. Which chunks a shard owns is the library's business (chunk c of a key lives on shard
 * (h(key) + c) mod S, design.md, with h internal), so the test accepts any start shard per key
 * but requires the counts of one consistent placement, which also proves the large tensor
 * spans both shards.
 */
static void check_servers(harness_t *h, const int fds[NSERVERS], uint64_t steps_per_chunk,
                          uint64_t pushes_per_chunk, uint64_t pulls_per_chunk)
{
    server_report_t rep[NSERVERS];
    uint64_t steps = 0, pushes = 0, pulls = 0, bytes_in = 0;
    int seen[NSERVERS] = {0};
    for (unsigned s = 0; s < NSERVERS; s++) {
        read_or_fail(h, fds[s], &rep[s], sizeof(rep[s]), "server process", s);
        close(fds[s]);
        cr_assert_eq(rep[s].wait_status, PSERV_OK, "server process %u: the job ended with %s", s,
                     pserv_strerror(rep[s].wait_status));
        cr_assert_lt(rep[s].rank, NSERVERS, "server rank %u", rep[s].rank);
        cr_assert(!seen[rep[s].rank], "two shards have rank %u", rep[s].rank);
        seen[rep[s].rank] = 1;
        cr_expect_eq(rep[s].stats.rejected, 0, "shard %u rejected %llu messages", rep[s].rank,
                     (unsigned long long)rep[s].stats.rejected);
        steps += rep[s].stats.steps;
        pushes += rep[s].stats.pushes;
        pulls += rep[s].stats.pulls;
        bytes_in += rep[s].stats.bytes_in;
    }
    uint64_t nchunks = total_chunks();
    cr_expect_eq(steps, steps_per_chunk * nchunks, "steps: %llu, expected %llu (%llu per chunk, %llu chunks)",
                 (unsigned long long)steps, (unsigned long long)(steps_per_chunk * nchunks),
                 (unsigned long long)steps_per_chunk, (unsigned long long)nchunks);
    cr_expect_eq(pushes, pushes_per_chunk * nchunks, "pushes: %llu, expected %llu", (unsigned long long)pushes,
                 (unsigned long long)(pushes_per_chunk * nchunks));
    cr_expect_eq(pulls, pulls_per_chunk * nchunks, "pulls: %llu, expected %llu", (unsigned long long)pulls,
                 (unsigned long long)(pulls_per_chunk * nchunks));
    uint64_t want_bytes = pushes_per_chunk * total_elems() * sizeof(float);
    cr_expect_eq(bytes_in, want_bytes, "bytes in: %llu, expected %llu", (unsigned long long)bytes_in,
                 (unsigned long long)want_bytes);

    /* Per shard: placement balances the chunks, so neither shard is short by more than one. */
    uint64_t by_rank[NSERVERS];
    for (unsigned s = 0; s < NSERVERS; s++) by_rank[rep[s].rank] = rep[s].stats.steps;
    for (unsigned s = 0; s < NSERVERS; s++)
        cr_expect_geq(by_rank[s], steps_per_chunk * (nchunks / NSERVERS - 1),
                      "shard %u ran %llu steps of %llu: the chunks are not spread", s, (unsigned long long)by_rank[s],
                      (unsigned long long)steps);
}

/* ---------------------------------------------------------------------------------------- */
/* Workers                                                                                   */

static int worker_fail(pserv_worker_h w, int code, const char *what)
{
    fprintf(stderr, "worker: %s failed: %s\n", what, w ? pserv_worker_last_error(w) : pserv_last_error());
    return code;
}

static pserv_worker_h worker_join(const char *coord, pserv_job_info_t *job)
{
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = coord;
    wp.timeout_ms = WAIT_MS;
    if (pserv_worker_create(&wp, &w) != PSERV_OK) return NULL;
    *job = (pserv_job_info_t)PSERV_JOB_INFO_INIT;
    if (pserv_worker_job(w, job) != PSERV_OK) {
        pserv_worker_destroy(w);
        return NULL;
    }
    return w;
}

/* Registers every tensor with init_value and `optim`; checks the chunk geometry. */
static int worker_register(pserv_worker_h w, const pserv_optim_params_t *optim, float *params[NTENSORS])
{
    for (unsigned t = 0; t < NTENSORS; t++) {
        size_t n = tensor_sizes[t], count = 0, chunk = 0;
        for (size_t i = 0; i < n; i++) params[t][i] = init_value(t, i);
        pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
        tp.key = t + 1;
        tp.count = n;
        tp.init = params[t];
        tp.optim = *optim;
        if (pserv_worker_register(w, &tp) != PSERV_OK) return worker_fail(w, 31, "register");
        if (pserv_worker_tensor_info(w, t + 1, &count, &chunk) != PSERV_OK || count != n || chunk != chunk_elems_of(n))
            return worker_fail(w, 32, "tensor_info (or its geometry)");
    }
    return 0;
}

/* Sends rank then every tensor's values through fd. */
static void worker_report(int fd, unsigned rank, float *params[NTENSORS])
{
    uint32_t r = rank;
    harness_write(fd, &r, sizeof(r));
    for (unsigned t = 0; t < NTENSORS; t++) harness_write(fd, params[t], tensor_sizes[t] * sizeof(float));
}

static int worker_finish(pserv_worker_h w, int rc)
{
    pserv_worker_stats_t st = PSERV_WORKER_STATS_INIT;
    if (pserv_worker_stats(w, &st) != PSERV_OK || st.errors != 0) rc = rc ? rc : 39;
    pserv_worker_destroy(w);
    return rc;
}

static float *alloc_floats(size_t n)
{
    float *a = malloc(n * sizeof(float));
    if (a == NULL) abort(); /* test code: no memory is not a result */
    return a;
}

/* Reads every worker's result: its rank (each once) and its parameters into got[rank]. */
static void read_workers(harness_t *h, const int fds[NWORKERS], float *got[NWORKERS][NTENSORS])
{
    int seen[NWORKERS] = {0};
    for (unsigned w = 0; w < NWORKERS; w++) {
        uint32_t rank = 0;
        read_or_fail(h, fds[w], &rank, sizeof(rank), "worker process", w);
        if (rank >= NWORKERS || seen[rank]) harness_kill_all(h);
        cr_assert(rank < NWORKERS && !seen[rank], "worker process %u reports rank %u twice or out of range", w, rank);
        seen[rank] = 1;
        for (unsigned t = 0; t < NTENSORS; t++) {
            got[rank][t] = alloc_floats(tensor_sizes[t]);
            read_or_fail(h, fds[w], got[rank][t], tensor_sizes[t] * sizeof(float), "worker process", w);
        }
        close(fds[w]);
    }
}

/* Every worker pulled the same bits as worker 0 (they read the same server memory). */
static void expect_workers_agree(float *got[NWORKERS][NTENSORS])
{
    for (unsigned r = 1; r < NWORKERS; r++)
        for (unsigned t = 0; t < NTENSORS; t++) {
            size_t n = tensor_sizes[t], first = n;
            for (size_t i = 0; i < n && first == n; i++)
                if (memcmp(&got[r][t][i], &got[0][t][i], sizeof(float)) != 0) first = i;
            cr_expect_eq(first, n, "tensor %u: worker %u differs from worker 0 at [%zu]: %.9g vs %.9g", t, r, first,
                         first < n ? (double)got[r][t][first] : 0.0, first < n ? (double)got[0][t][first] : 0.0);
        }
}

static void free_results(float *got[NWORKERS][NTENSORS])
{
    for (unsigned r = 0; r < NWORKERS; r++)
        for (unsigned t = 0; t < NTENSORS; t++) free(got[r][t]);
}

/* ---------------------------------------------------------------------------------------- */
/* Sync: Adam, AdamW, AdaGrad against a double reference                                    */

/*
 * Hyper-parameters are powers of two where the rule allows (AdamW's 1 - lr * wd is then exact
 * in float) and eps is large enough that its placement (inside or outside the square root,
 * scaled by the bias correction or not) moves the result far beyond the tolerance. Learning
 * rates keep |p| < 1 for all 10 rounds (checked below), which the tolerance relies on.
 */
typedef struct {
    char name[16];
    pserv_optim_type_t type;
    float lr, beta1, beta2, eps, weight_decay;
} sync_case_t;

ParameterizedTestParameters(exactness, sync_matches_double_reference)
{
    static sync_case_t cases[] = {
        {"adam", PSERV_OPTIM_ADAM, 0x1p-7f, 0.9f, 0.999f, 0x1p-10f, 0x1p-5f},
        {"adamw", PSERV_OPTIM_ADAMW, 0x1p-7f, 0.9f, 0.999f, 0x1p-10f, 0x1p-3f},
        {"adagrad", PSERV_OPTIM_ADAGRAD, 0x1p-5f, 0.9f, 0.999f, 0x1p-4f, 0x1p-6f},
    };
    return cr_make_param_array(sync_case_t, cases, sizeof(cases) / sizeof(cases[0]));
}

static void sync_optim(const sync_case_t *c, pserv_optim_params_t *o)
{
    *o = (pserv_optim_params_t)PSERV_OPTIM_PARAMS_INIT;
    o->type = c->type;
    o->lr = c->lr;
    o->beta1 = c->beta1;
    o->beta2 = c->beta2;
    o->eps = c->eps;
    o->weight_decay = c->weight_decay;
}

static int sync_worker(void *arg, const char *coord, int fd)
{
    const sync_case_t *c = arg;
    pserv_job_info_t job;
    pserv_optim_params_t optim;
    float *params[NTENSORS], *grads[NTENSORS];
    pserv_worker_h w = worker_join(coord, &job);
    if (w == NULL) return worker_fail(NULL, 30, "join");
    if (job.mode != PSERV_MODE_SYNC || job.num_workers != NWORKERS || job.num_servers != NSERVERS)
        return worker_finish(w, worker_fail(w, 33, "job description"));
    for (unsigned t = 0; t < NTENSORS; t++) {
        params[t] = alloc_floats(tensor_sizes[t]);
        grads[t] = alloc_floats(tensor_sizes[t]);
    }
    sync_optim(c, &optim);
    int rc = worker_register(w, &optim, params);
    if (rc == 0 && pserv_worker_barrier(w, WAIT_MS) != PSERV_OK) rc = worker_fail(w, 34, "barrier");
    for (unsigned k = 0; k < SYNC_ROUNDS && rc == 0; k++) {
        pserv_request_t reqs[NTENSORS];
        unsigned issued = 0;
        for (unsigned t = 0; t < NTENSORS && rc == 0; t++, issued++) {
            for (size_t i = 0; i < tensor_sizes[t]; i++) grads[t][i] = grad_value(job.rank, k, t, i);
            if (pserv_worker_push_pull(w, t + 1, grads[t], params[t], &reqs[t]) != PSERV_OK)
                rc = worker_fail(w, 35, "push_pull");
        }
        for (unsigned t = 0; t < issued; t++)
            if (pserv_worker_wait(w, reqs[t], WAIT_MS) != PSERV_OK && rc == 0) rc = worker_fail(w, 36, "wait");
    }
    if (rc == 0) worker_report(fd, job.rank, params);
    for (unsigned t = 0; t < NTENSORS; t++) {
        free(params[t]);
        free(grads[t]);
    }
    return worker_finish(w, rc);
}

/*
 * The reference, in double: one process, one step per round on the sum over workers of their
 * gradients (PyTorch conventions, see the top of this file). *max_abs gets the largest |p|
 * seen along the way.
 */
static void sync_reference(const sync_case_t *c, unsigned t, double *p, double *max_abs)
{
    const size_t n = tensor_sizes[t];
    const double lr = c->lr, b1 = c->beta1, b2 = c->beta2, eps = c->eps, wd = c->weight_decay;
    double *s0 = calloc(n, sizeof(double)), *s1 = calloc(n, sizeof(double)); /* m, v or the sum of squares */
    cr_assert(s0 != NULL && s1 != NULL);
    for (size_t i = 0; i < n; i++) p[i] = init_value(t, i);
    for (unsigned k = 0; k < SYNC_ROUNDS; k++) {
        const double step = k + 1;
        const double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
        for (size_t i = 0; i < n; i++) {
            double g = 0;
            for (unsigned w = 0; w < NWORKERS; w++) g += grad_value(w, k, t, i);
            switch (c->type) {
            case PSERV_OPTIM_ADAM:
            case PSERV_OPTIM_ADAMW:
                if (c->type == PSERV_OPTIM_ADAM) g += wd * p[i];
                else p[i] *= 1.0 - lr * wd;
                s0[i] = b1 * s0[i] + (1.0 - b1) * g;
                s1[i] = b2 * s1[i] + (1.0 - b2) * g * g;
                p[i] -= lr * (s0[i] / bc1) / (sqrt(s1[i] / bc2) + eps);
                break;
            case PSERV_OPTIM_ADAGRAD:
                g += wd * p[i];
                s0[i] += g * g;
                p[i] -= lr * g / (sqrt(s0[i]) + eps);
                break;
            default:
                cr_assert_fail("no reference for optimizer %d", (int)c->type);
            }
            *max_abs = fmax(*max_abs, fabs(p[i]));
        }
    }
    free(s0);
    free(s1);
}

/*
 * Tolerance: |got - ref| <= 1e-6 * max(1, |ref|), i.e. 1e-6 absolute while |p| < 1, which the
 * reference checks. The gradients' sum is exact in float (see grad_value), so the only error
 * is the server's float arithmetic: per round at most 2 roundings of p (AdamW's decay, the
 * update), each at most half an ulp = 2^-25 for |p| < 1, plus the update's own error (about
 * 10 float operations on m, v and bias corrections: ~1e-6 of an update of at most ~0.03).
 * Over 10 rounds that is below 20 * 2^-25 + 10 * 3e-8 = 9e-7. Everything is deterministic
 * (exact sums, fixed inputs), so the margin does not erode from run to run.
 */
#define SYNC_TOL 1e-6

ParameterizedTest(sync_case_t *c, exactness, sync_matches_double_reference, .timeout = 120)
{
    harness_t h = {0};
    int wfds[NWORKERS], sfds[NSERVERS];
    float *got[NWORKERS][NTENSORS];
    harness_start_coordinator(&h, NSERVERS, NWORKERS, PSERV_MODE_SYNC, CHUNK_BYTES);
    for (unsigned s = 0; s < NSERVERS; s++) harness_start(&h, server_proc, NULL, &sfds[s]);
    for (unsigned w = 0; w < NWORKERS; w++) harness_start(&h, sync_worker, c, &wfds[w]);
    read_workers(&h, wfds, got);

    for (unsigned t = 0; t < NTENSORS; t++) {
        size_t n = tensor_sizes[t], bad = 0, first = 0;
        unsigned first_r = 0;
        double *ref = malloc(n * sizeof(double)), max_abs = 0, worst = 0;
        cr_assert(ref != NULL);
        sync_reference(c, t, ref, &max_abs);
        cr_assert_lt(max_abs, 1.0, "%s: the reference leaves |p| < 1 (%g), which the tolerance assumes", c->name,
                     max_abs);
        for (unsigned r = 0; r < NWORKERS; r++)
            for (size_t i = 0; i < n; i++) {
                double err = fabs((double)got[r][t][i] - ref[i]) / fmax(1.0, fabs(ref[i]));
                if (!(err <= SYNC_TOL) && bad++ == 0) {
                    first = i;
                    first_r = r;
                }
                if (!(err <= worst)) worst = err;
            }
        cr_expect_eq(bad, 0,
                     "%s, tensor %u (%zu elements): %zu of %zu results off the double reference; first: worker %u "
                     "[%zu]: %.9g vs %.9g; worst error %.3g",
                     c->name, t, n, bad, n * NWORKERS, first_r, first, (double)got[first_r][t][first], ref[first],
                     worst);
        fprintf(stderr, "%s, tensor %u: worst error %.3g (tolerance %g)\n", c->name, t, worst, SYNC_TOL);
        free(ref);
    }
    expect_workers_agree(got);
    free_results(got);

    /* One step per chunk and round, after the pushes of all 3 workers; push-pull answers one
     * pull per push. */
    check_servers(&h, sfds, SYNC_ROUNDS, (uint64_t)SYNC_ROUNDS * NWORKERS, (uint64_t)SYNC_ROUNDS * NWORKERS);
    int bad = harness_wait_all(&h, 30000);
    cr_assert_eq(bad, 0, "%d processes failed", bad);
}

/* ---------------------------------------------------------------------------------------- */
/* Async: plain SGD, every push one step                                                     */

/*
 * lr = 2^-4 and gradients in multiples of 2^-10 with |g| <= 1 make every update lr * g a
 * multiple of 2^-14, and p starts as a multiple of 2^-10 in [-0.5, 0.5], so p stays a multiple
 * of 2^-14 with |p| <= 0.5 + 3 * 20 * 2^-4 < 8: at most 17 significant bits. Every float
 * operation the server can do on it (lr * g, p - lr * g, fused or not, in any order of the
 * pushes) is therefore exact, and the final value must equal the double reference bit for bit:
 * the tolerance is zero. A lost or doubled update changes p by at least 2^-14.
 */
#define ASYNC_LR 0x1p-4f

static int async_worker(void *arg, const char *coord, int fd)
{
    (void)arg;
    pserv_job_info_t job;
    pserv_optim_params_t optim = PSERV_OPTIM_PARAMS_INIT;
    float *params[NTENSORS], *grads[NTENSORS];
    pserv_worker_h w = worker_join(coord, &job);
    if (w == NULL) return worker_fail(NULL, 40, "join");
    if (job.mode != PSERV_MODE_ASYNC || job.num_workers != NWORKERS || job.num_servers != NSERVERS)
        return worker_finish(w, worker_fail(w, 43, "job description"));
    for (unsigned t = 0; t < NTENSORS; t++) {
        params[t] = alloc_floats(tensor_sizes[t]);
        grads[t] = alloc_floats(tensor_sizes[t]);
    }
    optim.type = PSERV_OPTIM_SGD;
    optim.lr = ASYNC_LR;
    optim.momentum = 0.0f;
    optim.weight_decay = 0.0f;
    int rc = worker_register(w, &optim, params);
    if (rc == 0 && pserv_worker_barrier(w, WAIT_MS) != PSERV_OK) rc = worker_fail(w, 44, "barrier");
    for (unsigned k = 0; k < ASYNC_PUSHES && rc == 0; k++) {
        pserv_request_t reqs[NTENSORS];
        unsigned issued = 0;
        for (unsigned t = 0; t < NTENSORS && rc == 0; t++, issued++) {
            for (size_t i = 0; i < tensor_sizes[t]; i++) grads[t][i] = grad_value(job.rank, k, t, i);
            if (pserv_worker_push(w, t + 1, grads[t], &reqs[t]) != PSERV_OK) rc = worker_fail(w, 45, "push");
        }
        for (unsigned t = 0; t < issued; t++)
            if (pserv_worker_wait(w, reqs[t], WAIT_MS) != PSERV_OK && rc == 0) rc = worker_fail(w, 46, "wait");
    }
    /* Everyone has pushed everything (and every push was acknowledged, so applied) before anyone pulls. */
    if (rc == 0 && pserv_worker_barrier(w, WAIT_MS) != PSERV_OK) rc = worker_fail(w, 47, "barrier after pushes");
    for (unsigned t = 0; t < NTENSORS && rc == 0; t++) {
        pserv_request_t req;
        memset(params[t], 0xff, tensor_sizes[t] * sizeof(float)); /* NaNs: a chunk not pulled shows */
        if (pserv_worker_pull(w, t + 1, params[t], &req) != PSERV_OK || pserv_worker_wait(w, req, WAIT_MS) != PSERV_OK)
            rc = worker_fail(w, 48, "pull");
    }
    if (rc == 0) worker_report(fd, job.rank, params);
    for (unsigned t = 0; t < NTENSORS; t++) {
        free(params[t]);
        free(grads[t]);
    }
    return worker_finish(w, rc);
}

Test(exactness, async_sgd_applies_every_push_exactly, .timeout = 120)
{
    harness_t h = {0};
    int wfds[NWORKERS], sfds[NSERVERS];
    float *got[NWORKERS][NTENSORS];
    harness_start_coordinator(&h, NSERVERS, NWORKERS, PSERV_MODE_ASYNC, CHUNK_BYTES);
    for (unsigned s = 0; s < NSERVERS; s++) harness_start(&h, server_proc, NULL, &sfds[s]);
    for (unsigned w = 0; w < NWORKERS; w++) harness_start(&h, async_worker, NULL, &wfds[w]);
    read_workers(&h, wfds, got);

    for (unsigned t = 0; t < NTENSORS; t++) {
        size_t n = tensor_sizes[t], bad = 0, first = 0;
        double first_ref = 0;
        for (size_t i = 0; i < n; i++) {
            double sum = 0;
            for (unsigned w = 0; w < NWORKERS; w++)
                for (unsigned k = 0; k < ASYNC_PUSHES; k++) sum += grad_value(w, k, t, i);
            double ref = (double)init_value(t, i) - (double)ASYNC_LR * sum;
            for (unsigned r = 0; r < NWORKERS; r++)
                if ((double)got[r][t][i] != ref && bad++ == 0) {
                    first = i;
                    first_ref = ref;
                }
        }
        cr_expect_eq(bad, 0,
                     "tensor %u: %zu of %zu pulled values are not initial - lr * sum of pushes; first [%zu]: %.9g "
                     "vs %.9g (a lost or repeated push is a multiple of %g)",
                     t, bad, n * NWORKERS, first, (double)got[0][t][first], first_ref, (double)ASYNC_LR / 1024);
    }
    expect_workers_agree(got);
    free_results(got);

    /* One step per chunk push, on arrival; one pull per chunk per worker at the end. */
    check_servers(&h, sfds, (uint64_t)ASYNC_PUSHES * NWORKERS, (uint64_t)ASYNC_PUSHES * NWORKERS, NWORKERS);
    int bad = harness_wait_all(&h, 30000);
    cr_assert_eq(bad, 0, "%d processes failed", bad);
}
