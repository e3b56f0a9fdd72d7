/*
 * Range requests, node groups and the node broadcast on real one-process jobs: the host logic
 * under the CUDA worker's node reduce (each GPU of a node pushes its slice of the node's sum).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "harness.h"

#define CHUNK_FLOATS 1024
#define CHUNK_BYTES (CHUNK_FLOATS * sizeof(float))

static void register_sgd(pserv_worker_h w, uint64_t key, size_t n, float init_value)
{
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = key;
    tp.count = n;
    tp.init_value = init_value;
    tp.optim.lr = 1.0f;
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_OK, "%s", pserv_worker_last_error(w));
}

static pserv_status_t wait_ok(pserv_worker_h w, pserv_request_t req)
{
    return pserv_worker_wait(w, req, 20000);
}

static void pull_all(pserv_worker_h w, uint64_t key, float *out)
{
    pserv_request_t req;
    cr_assert_eq(pserv_worker_pull(w, key, out, &req), PSERV_OK);
    cr_assert_eq(wait_ok(w, req), PSERV_OK, "%s", pserv_worker_last_error(w));
}

Test(ranges, push_pull_of_a_range_changes_only_the_range, .timeout = 60)
{
    /* 12 chunks (a multiple of the 2 shards, so placement keeps the chunk size), the last one short */
    enum { N = 12 * CHUNK_FLOATS - 10 };
    static float grad[N], out[N], all[N];
    inproc_job_t job;
    cr_assert_eq(inproc_group_start(&job, PSERV_MODE_SYNC, CHUNK_BYTES, 64, 2, 1, NULL), 0);
    register_sgd(job.worker, 7, N, 1.0f);
    size_t count, chunk;
    cr_assert_eq(pserv_worker_tensor_info(job.worker, 7, &count, &chunk), PSERV_OK);
    cr_assert_eq(count, N);
    cr_assert_eq(chunk, CHUNK_FLOATS);

    /* chunks 2 .. the end (the short last chunk included), twice: per-chunk rounds 0 and 1 */
    size_t off = 2 * CHUNK_FLOATS, n = N - off;
    for (size_t i = 0; i < n; i++) grad[i] = (float)(i % 5);
    for (int round = 0; round < 2; round++) {
        pserv_request_t req;
        cr_assert_eq(pserv_worker_push_pull_range(job.worker, 7, off, n, grad, out, &req), PSERV_OK);
        cr_assert_eq(wait_ok(job.worker, req), PSERV_OK, "%s", pserv_worker_last_error(job.worker));
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(out[i], 1.0f - (float)(round + 1) * (float)(i % 5), "round %d element %zu", round, off + i);
    }
    /* a whole-tensor push now: chunks 0-1 are at round 0, the rest at round 2 */
    pserv_request_t req;
    for (size_t i = 0; i < N; i++) grad[i] = 1.0f;
    cr_assert_eq(pserv_worker_push_pull(job.worker, 7, grad, all, &req), PSERV_OK);
    cr_assert_eq(wait_ok(job.worker, req), PSERV_OK, "%s", pserv_worker_last_error(job.worker));
    for (size_t i = 0; i < N; i++) {
        float want = i < off ? 0.0f : 1.0f - 2.0f * (float)((i - off) % 5) - 1.0f;
        cr_assert_eq(all[i], want, "element %zu: %g, want %g", i, (double)all[i], (double)want);
    }
    /* a pull of one middle chunk lands at the start of its buffer */
    cr_assert_eq(pserv_worker_pull_range(job.worker, 7, 3 * CHUNK_FLOATS, CHUNK_FLOATS, out, &req), PSERV_OK);
    cr_assert_eq(wait_ok(job.worker, req), PSERV_OK);
    cr_assert_eq(memcmp(out, all + 3 * CHUNK_FLOATS, CHUNK_BYTES), 0);
    cr_assert_eq(inproc_job_stop(&job), 0);
}

Test(ranges, ranges_that_are_not_whole_chunks_are_refused, .timeout = 60)
{
    static float buf[4 * CHUNK_FLOATS];
    inproc_job_t job;
    pserv_request_t req;
    cr_assert_eq(inproc_job_start(&job, PSERV_MODE_SYNC, CHUNK_BYTES, 64), 0);
    register_sgd(job.worker, 1, 4 * CHUNK_FLOATS - 2, 0.0f); /* 4 chunks, the last one 2 short */
    struct {
        size_t off, n;
    } bad[] = {{1, CHUNK_FLOATS},
               {0, CHUNK_FLOATS + 1},
               {0, 0},
               {CHUNK_FLOATS, 3 * CHUNK_FLOATS},
               {4 * CHUNK_FLOATS, 1},
               {SIZE_MAX - 3, 8}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(pserv_worker_push_range(job.worker, 1, bad[i].off, bad[i].n, buf, &req), PSERV_ERR_INVALID_ARG,
                     "case %zu", i);
        cr_assert(strstr(pserv_worker_last_error(job.worker), "whole chunks") != NULL, "case %zu: %s", i,
                  pserv_worker_last_error(job.worker));
    }
    size_t count, chunk;
    cr_assert_eq(pserv_worker_pull_range(job.worker, 2, 0, 1, buf, &req), PSERV_ERR_UNKNOWN_KEY);
    cr_assert_eq(pserv_worker_tensor_info(job.worker, 2, &count, &chunk), PSERV_ERR_UNKNOWN_KEY);
    /* nothing was sent: the tensor is untouched and round 0 still open */
    cr_assert_eq(pserv_worker_push_pull_range(job.worker, 1, 3 * CHUNK_FLOATS, CHUNK_FLOATS - 2, buf, buf, &req),
                 PSERV_OK);
    cr_assert_eq(wait_ok(job.worker, req), PSERV_OK, "%s", pserv_worker_last_error(job.worker));
    cr_assert_eq(inproc_job_stop(&job), 0);
}

/* Two groups of two and a worker alone (ranks follow join order, so expectations use job->nodes). */
static const char *const five_nodes[] = {"a", "a", "b", "b", NULL};

static int same_node(const char *x, const char *y)
{
    return x != NULL && y != NULL && strcmp(x, y) == 0;
}

/* What the coordinator should say: groups numbered by lowest rank, local ranks by rank. */
static void expected_group(const inproc_job_t *job, unsigned rank, unsigned *node, unsigned *root, unsigned *local,
                           unsigned *size)
{
    unsigned groups = 0;
    *node = *root = UINT32_MAX;
    *local = *size = 0;
    for (unsigned q = 0; q < job->num_workers; q++) {
        unsigned first = q;
        for (unsigned p = 0; p < q; p++)
            if (same_node(job->nodes[p], job->nodes[q])) {
                first = p;
                break;
            }
        if (first == q) groups++;
        if (q != rank && !same_node(job->nodes[q], job->nodes[rank])) continue;
        if (*root == UINT32_MAX) {
            *root = first;
            *node = groups - 1;
        }
        if (q < rank) (*local)++;
        (*size)++;
    }
}

Test(node_groups, job_info_names_groups_and_local_ranks, .timeout = 60)
{
    inproc_job_t job;
    cr_assert_eq(inproc_group_start(&job, PSERV_MODE_SYNC, CHUNK_BYTES, 64, 1, 5, five_nodes), 0);
    for (unsigned r = 0; r < 5; r++) {
        pserv_job_info_t info = PSERV_JOB_INFO_INIT;
        unsigned node, root, local, size;
        expected_group(&job, r, &node, &root, &local, &size);
        cr_assert_eq(pserv_worker_job(job.workers[r], &info), PSERV_OK);
        cr_assert_eq(info.num_nodes, 3);
        cr_assert_eq(info.node, node, "worker %u node %u, want %u", r, info.node, node);
        cr_assert_eq(info.local_rank, local, "worker %u", r);
        cr_assert_eq(info.local_size, size, "worker %u", r);
    }
    cr_assert_eq(inproc_job_stop(&job), 0);
}

typedef struct {
    pserv_worker_h w;
    uint8_t buf[PSERV_NODE_BROADCAST_MAX + 1]; /* one past the largest, to see it untouched */
    size_t len;
    pserv_status_t st;
} bcast_arg_t;

static void *bcast_thread(void *p)
{
    bcast_arg_t *a = p;
    a->st = pserv_worker_node_broadcast(a->w, a->buf, a->len, 20000);
    return NULL;
}

/* Every worker broadcasts at once (rank + 1 in every byte); lens by node name: "a", "b", none.
 * With `split`, the second member of "a" sends a different length. */
static void broadcast_all(inproc_job_t *job, bcast_arg_t *args, const size_t lens[3], int split)
{
    pthread_t tid[INPROC_MAX_WORKERS];
    int seen_a = 0;
    for (unsigned r = 0; r < job->num_workers; r++) {
        const char *n = job->nodes[r];
        args[r].w = job->workers[r];
        args[r].len = n == NULL ? lens[2] : n[0] == 'a' ? lens[0] : lens[1];
        if (same_node(n, "a") && seen_a++ && split) args[r].len /= 2;
        memset(args[r].buf, (int)(r + 1), sizeof(args[r].buf));
        pthread_create(&tid[r], NULL, bcast_thread, &args[r]);
    }
    for (unsigned r = 0; r < job->num_workers; r++) pthread_join(tid[r], NULL);
}

Test(node_groups, broadcast_gives_every_member_local_rank_zeros_bytes, .timeout = 60)
{
    inproc_job_t job;
    bcast_arg_t args[5];
    cr_assert_eq(inproc_group_start(&job, PSERV_MODE_SYNC, CHUNK_BYTES, 64, 1, 5, five_nodes), 0);
    const size_t lens[3] = {128, 1024, 7};
    for (int round = 0; round < 4; round++) {
        int split = round == 2; /* lengths that differ within "a": the group's round fails as a whole */
        broadcast_all(&job, args, lens, split);
        for (unsigned r = 0; r < 5; r++) {
            unsigned node, root, local, size;
            expected_group(&job, r, &node, &root, &local, &size);
            if (split && same_node(job.nodes[r], "a")) {
                cr_assert_eq(args[r].st, PSERV_ERR_INVALID_ARG, "worker %u", r);
                continue;
            }
            cr_assert_eq(args[r].st, PSERV_OK, "round %d worker %u: %s", round, r, pserv_worker_last_error(job.workers[r]));
            for (size_t i = 0; i < args[r].len; i++)
                cr_assert_eq(args[r].buf[i], root + 1, "worker %u byte %zu: %u, want %u", r, i, args[r].buf[i], root + 1);
            cr_assert_eq(args[r].buf[args[r].len], r + 1, "worker %u: bytes past len were written", r);
        }
    }
    cr_assert_eq(pserv_worker_node_broadcast(job.workers[4], args[4].buf, PSERV_NODE_BROADCAST_MAX + 1, 1000),
                 PSERV_ERR_INVALID_ARG);
    cr_assert_eq(inproc_job_stop(&job), 0);
}

/*
 * Sync rounds with node groups: of each group, the member whose slice holds a chunk pushes it
 * (the group's sum); a round completes with one push per group. Two servers, so slices span shards.
 */
Test(node_groups, sync_round_completes_with_one_push_per_group, .timeout = 60)
{
    enum { CHUNKS = 10, N = CHUNKS * CHUNK_FLOATS, ROUNDS = 3 }; /* a multiple of the 2 shards: chunks stay whole */
    static float grad[5][N], out[5][N]; /* per worker: buffers stay untouched until the wait */
    inproc_job_t job;
    cr_assert_eq(inproc_group_start(&job, PSERV_MODE_SYNC, CHUNK_BYTES, 64, 2, 5, five_nodes), 0);
    for (unsigned r = 0; r < 5; r++) register_sgd(job.workers[r], 11, N, 0.0f);
    for (int round = 0; round < ROUNDS; round++) {
        pserv_request_t reqs[5];
        /* every member issues its slice first; nothing completes until all groups pushed */
        for (unsigned r = 0; r < 5; r++) {
            pserv_job_info_t info = PSERV_JOB_INFO_INIT;
            pserv_worker_job(job.workers[r], &info);
            unsigned c0 = info.local_rank * CHUNKS / info.local_size, c1 = (info.local_rank + 1) * CHUNKS / info.local_size;
            for (size_t i = 0; i < N; i++) grad[r][i] = (float)(info.node + 1); /* the group's sum */
            cr_assert_eq(pserv_worker_push_pull_range(job.workers[r], 11, (size_t)c0 * CHUNK_FLOATS,
                                                      (size_t)(c1 - c0) * CHUNK_FLOATS, grad[r], out[r], &reqs[r]),
                         PSERV_OK);
        }
        for (unsigned r = 0; r < 5; r++)
            cr_assert_eq(wait_ok(job.workers[r], reqs[r]), PSERV_OK, "round %d worker %u: %s", round, r,
                         pserv_worker_last_error(job.workers[r]));
    }
    /* every chunk took ROUNDS steps of -(1 + 2 + 3) */
    for (unsigned r = 0; r < 5; r++) {
        pull_all(job.workers[r], 11, out[r]);
        for (size_t i = 0; i < N; i++)
            cr_assert_eq(out[r][i], -6.0f * ROUNDS, "worker %u element %zu: %g", r, i, (double)out[r][i]);
    }
    pserv_server_stats_t ss = PSERV_SERVER_STATS_INIT, ss1 = PSERV_SERVER_STATS_INIT;
    pserv_server_stats(job.servers[0], &ss);
    pserv_server_stats(job.servers[1], &ss1);
    cr_assert_eq(ss.steps + ss1.steps, (uint64_t)CHUNKS * ROUNDS);
    cr_assert_eq(ss.pushes + ss1.pushes, (uint64_t)CHUNKS * ROUNDS * 3, "one push per group, chunk and round");
    cr_assert_eq(inproc_job_stop(&job), 0);
}

Test(node_groups, a_second_push_from_the_same_group_is_refused, .timeout = 60)
{
    static float grad[CHUNK_FLOATS], out[CHUNK_FLOATS];
    inproc_job_t job;
    pserv_request_t req;
    cr_assert_eq(inproc_group_start(&job, PSERV_MODE_SYNC, CHUNK_BYTES, 64, 1, 5, five_nodes), 0);
    for (unsigned r = 0; r < 5; r++) register_sgd(job.workers[r], 3, CHUNK_FLOATS, 0.0f);
    for (size_t i = 0; i < CHUNK_FLOATS; i++) grad[i] = 1.0f;
    unsigned a[2], others[3], na = 0, no = 0;
    for (unsigned r = 0; r < 5; r++) {
        if (same_node(job.nodes[r], "a")) a[na++] = r;
        else others[no++] = r;
    }
    cr_assert_eq(pserv_worker_push(job.workers[a[0]], 3, grad, &req), PSERV_OK);
    cr_assert_eq(wait_ok(job.workers[a[0]], req), PSERV_OK);
    /* the other member of node "a": its push of the same round would count the group twice */
    cr_assert_eq(pserv_worker_push(job.workers[a[1]], 3, grad, &req), PSERV_OK);
    cr_assert_eq(wait_ok(job.workers[a[1]], req), PSERV_ERR_INVALID_ARG);
    pserv_server_stats_t ss = PSERV_SERVER_STATS_INIT;
    pserv_server_stats(job.server, &ss);
    cr_assert_eq(ss.rejected, 1);
    /* one member of each other group completes the round: the value counts node "a" once */
    unsigned b = same_node(job.nodes[others[0]], "b") ? others[0] : others[1];
    unsigned alone = job.nodes[others[0]] == NULL ? others[0] : job.nodes[others[1]] == NULL ? others[1] : others[2];
    cr_assert_eq(pserv_worker_push(job.workers[b], 3, grad, &req), PSERV_OK);
    cr_assert_eq(wait_ok(job.workers[b], req), PSERV_OK);
    cr_assert_eq(pserv_worker_push(job.workers[alone], 3, grad, &req), PSERV_OK);
    cr_assert_eq(wait_ok(job.workers[alone], req), PSERV_OK);
    pull_all(job.workers[alone], 3, out);
    for (size_t i = 0; i < CHUNK_FLOATS; i++) cr_assert_eq(out[i], -3.0f, "element %zu: %g", i, (double)out[i]);
    cr_assert_eq(inproc_job_stop(&job), 0);
}
