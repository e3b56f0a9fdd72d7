/*
 * A restarted coordinator takes a running job back from its members (core/cluster/coord_recover.c),
 * spoken to at the protocol level: a real coordinator in this process, and members that are raw
 * transport peers, so the test chooses the order in which they come back and what each reports.
 *
 * The case: the old coordinator released barrier 3 and died while sending the answers. Worker 0
 * got its answer and went on (it reports barrier 4 next); workers 1 and 2 did not (they report 3
 * and ask for barrier 3 again). Whichever comes back first, workers 1 and 2 must be told they
 * passed barrier 3; left waiting, they never meet worker 0 again (in a sync job it waits for
 * their pushes), and the job stalls. Then all three meet at barrier 4.
 *
 * Node broadcasts likewise, within a node group (workers 0 and 1; worker 0 is its root): the old
 * coordinator completed broadcast 1 and only worker 0 got its answer. Worker 1 is told the bytes
 * were lost (PEER_FAILED), and both are told the group's next broadcast is 2, which then carries
 * worker 0's bytes to worker 1 as it did before the restart.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "job.h"
#include "send.h"
#include "transport.h"
#include "view.h"
#include "wire.h"
#include "pserv/pserv.h"

#define WORKERS 3
#define SERVER WORKERS /* the index of the job's one server among the raw members */
#define MEMBERS (WORKERS + 1)
#define PASSED 3 /* the barrier the old coordinator released: workers 1 and 2 lost its answer */
#define BCAST_PASSED 1 /* the node broadcast it completed: worker 1 lost its answer */
#define BCAST_BYTES 4

typedef struct {
    pthread_mutex_t lock;
    ps_tp_peer_t *peer[MEMBERS];
    int joined[MEMBERS];   /* JOIN_REPLYs with PSERV_OK */
    int barriers[MEMBERS]; /* BARRIER_REPLYs */
    int32_t barrier_status[MEMBERS];
    uint64_t barrier_met[MEMBERS];
    int bcasts[MEMBERS]; /* NODE_BCAST_REPLYs */
    int32_t bcast_status[MEMBERS];
    uint64_t bcast_next[MEMBERS]; /* the group's next broadcast, as the answer says */
    char bcast_bytes[MEMBERS][BCAST_BYTES];
    uint64_t next_req;
    pserv_coordinator_h coord;
    ps_tp_t *tp;
    ps_job_t job;
    ps_view_t view;
} raw_members_t;

/* Counts what the coordinator answered member i (under the lock). */
static void raw_count(raw_members_t *r, int i, const ps_wire_hdr_t *h, const void *data, size_t len)
{
    if (h->type == PS_MSG_JOIN_REPLY && h->status == PSERV_OK) r->joined[i]++;
    if (h->type == PS_MSG_BARRIER_REPLY) {
        r->barriers[i]++;
        r->barrier_status[i] = h->status;
        r->barrier_met[i] = h->offset;
    }
    if (h->type == PS_MSG_NODE_BCAST_REPLY) {
        r->bcasts[i]++;
        r->bcast_status[i] = h->status;
        r->bcast_next[i] = h->round;
        memcpy(r->bcast_bytes[i], data, len < BCAST_BYTES ? len : BCAST_BYTES);
    }
}

static void raw_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    raw_members_t *r = arg;
    ps_wire_hdr_t h;
    if (ps_wire_decode(hdr, hdr_len, len, &h, NULL) == PSERV_OK) {
        pthread_mutex_lock(&r->lock);
        for (int i = 0; i < MEMBERS; i++)
            if (r->peer[i] == peer) raw_count(r, i, &h, data, len);
        pthread_mutex_unlock(&r->lock);
    }
}

/* Waits up to ms for member i's count (joined or barriers) to reach want; the count reached. */
static int raw_await(raw_members_t *r, const int *count, int want, int ms)
{
    int n = 0;
    for (int waited = 0; waited <= ms; waited += 5) {
        pthread_mutex_lock(&r->lock);
        n = *count;
        pthread_mutex_unlock(&r->lock);
        if (n >= want) break;
        usleep(5000);
    }
    return n;
}

/* What every member of the job holds: the job description and the view (version 2, all live). */
static void raw_job(ps_job_t *job, ps_view_t *view)
{
    static uint32_t nodes[WORKERS] = {0, 0, 1}; /* workers 0 and 1 share a node; 2 is alone */
    static char servers[1][PS_ADDR_MAX] = {"127.0.0.1:9"}; /* never dialled: no data moves */
    memset(job, 0, sizeof(*job));
    job->mode = PSERV_MODE_SYNC;
    job->num_servers = 1;
    job->num_workers = WORKERS;
    job->chunk_bytes = 1 << 20;
    job->heartbeat_ms = 100;
    job->failure_timeout_ms = 20000; /* raw members send no heartbeats */
    job->servers = servers;
    job->num_nodes = 2;
    job->worker_node = nodes;
    cr_assert_eq(ps_view_init(view, 1, WORKERS, 0), PSERV_OK);
    view->version = 2;
    view->server_state[0] = PS_MEMBER_LIVE;
    memset(view->worker_state, PS_MEMBER_LIVE, WORKERS);
    strcpy(view->addrs[0], servers[0]);
}

/* Member i comes back (JOIN flagged RETRY), reporting its next barrier and node broadcast, and is
 * taken back. */
static void raw_rejoin(raw_members_t *r, int i, uint64_t next_barrier, uint64_t next_bcast)
{
    const ps_job_t *job = &r->job;
    const ps_view_t *view = &r->view;
    int server = i == SERVER;
    uint32_t rank = server ? 0 : (uint32_t)i;
    uint8_t body[PS_ADDR_MAX + PS_NODE_MAX + PS_SETTINGS_MAX + 64];
    ps_writer_t jw;
    ps_writer_init(&jw, body, sizeof(body));
    ps_join_encode(&jw, server ? PS_ROLE_SERVER : PS_ROLE_WORKER, (int32_t)rank, server ? job->servers[0] : NULL,
                   "", "");
    size_t cap = 4 + jw.len + PS_JOB_FIXED_MAX + PS_ADDR_MAX + 4 * WORKERS + ps_view_encoded_size(view);
    uint8_t *payload = malloc(cap);
    cr_assert_not_null(payload);
    ps_writer_t w;
    ps_writer_init(&w, payload, cap);
    ps_put_u32(&w, (uint32_t)jw.len);
    memcpy(payload + w.len, body, jw.len);
    w.len += jw.len;
    ps_job_encode(job, rank, &w);
    ps_view_encode(view, &w);
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_JOIN);
    h.flags = PS_WIRE_FLAG_RETRY;
    h.sender = rank;
    h.req_id = __atomic_fetch_add(&r->next_req, 1, __ATOMIC_RELAXED);
    h.round = next_barrier;
    h.offset = next_bcast;
    h.map_version = view->version;
    cr_assert_eq(ps_send_msg(r->peer[i], &h, payload, w.len, NULL, ps_send_free_cb, payload), PSERV_OK);
    cr_assert_eq(raw_await(r, &r->joined[i], 1, 5000), 1, "member %d was not taken back", i);
}

/* A collective call of a worker: BARRIER, or NODE_BCAST with its bytes (NULL: none). */
static void raw_call(raw_members_t *r, ps_msg_type_t type, int worker, uint64_t seq, const char *bytes)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, type);
    h.sender = (uint32_t)worker;
    h.req_id = __atomic_fetch_add(&r->next_req, 1, __ATOMIC_RELAXED);
    h.round = seq;
    size_t len = bytes ? BCAST_BYTES : 0;
    cr_assert_eq(ps_send_msg(r->peer[worker], &h, bytes, len, NULL, NULL, NULL), PSERV_OK);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A fresh coordinator (the restarted one), our members connected, and the job's server back. */
static void raw_start(raw_members_t *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->next_req = 1;
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    cp.num_servers = 1;
    cp.num_workers = WORKERS;
    cp.heartbeat_ms = 100;
    cp.failure_timeout_ms = 20000;
    uint16_t port;
    cr_assert_eq(pserv_coordinator_create(&cp, &r->coord), PSERV_OK);
    cr_assert_eq(pserv_coordinator_port(r->coord, &port), PSERV_OK);
    ps_tp_params_t tpp = {.handler = {.arg = r, .rx = raw_rx}};
    cr_assert_eq(ps_tp_create(&tpp, &r->tp), PSERV_OK);
    for (int i = 0; i < MEMBERS; i++) {
        ps_tp_peer_t *peer;
        cr_assert_eq(ps_tp_connect(r->tp, "127.0.0.1", port, &peer), PSERV_OK);
        pthread_mutex_lock(&r->lock);
        r->peer[i] = peer;
        pthread_mutex_unlock(&r->lock);
    }
    raw_job(&r->job, &r->view);
    raw_rejoin(r, SERVER, 0, 0);
}

static void raw_stop(raw_members_t *r)
{
    cr_assert_eq(pserv_coordinator_destroy(r->coord), PSERV_OK);
    ps_tp_destroy(r->tp);
    ps_view_free(&r->view);
    pthread_mutex_destroy(&r->lock);
}

/* One restart: the worker that passed comes back first, or last (after the others asked again). */
static void lost_answer_once(int passed_first)
{
    raw_members_t members;
    raw_members_t *r = &members;
    raw_start(r);
    if (passed_first) raw_rejoin(r, 0, PASSED + 1, 0);
    for (int w = 1; w < WORKERS; w++) {
        raw_rejoin(r, w, PASSED, 0);
        raw_call(r, PS_MSG_BARRIER, w, PASSED, NULL); /* its call again, to the coordinator that came back */
    }
    if (!passed_first) {
        usleep(200 * 1000);
        for (int w = 1; w < WORKERS; w++)
            cr_assert_eq(raw_await(r, &r->barriers[w], 1, 0), 0, "worker %d answered before worker 0 is back", w);
        raw_rejoin(r, 0, PASSED + 1, 0);
    }
    int64_t back = now_ms();
    for (int w = 1; w < WORKERS; w++) {
        cr_assert_eq(raw_await(r, &r->barriers[w], 1, 5000), 1,
                     "worker %d, whose answer to barrier %d was lost, is still waiting there (passed first: %d)", w,
                     PASSED, passed_first);
        cr_assert_eq(r->barrier_status[w], PSERV_OK, "worker %d: %s", w, pserv_strerror(r->barrier_status[w]));
    }
    int64_t answered = now_ms() - back;
    cr_assert_lt(answered, 1000, "the lost answers took %lld ms", (long long)answered);

    /* The job goes on: all three meet at the next barrier, and each hears that three met. */
    for (int w = 0; w < WORKERS; w++) raw_call(r, PS_MSG_BARRIER, w, PASSED + 1, NULL);
    for (int w = 0; w < WORKERS; w++) {
        int want = w == 0 ? 1 : 2;
        cr_assert_eq(raw_await(r, &r->barriers[w], want, 5000), want, "worker %d never passed barrier %d", w,
                     PASSED + 1);
        cr_assert_eq(r->barrier_status[w], PSERV_OK, "worker %d: %s", w, pserv_strerror(r->barrier_status[w]));
        cr_assert_eq(r->barrier_met[w], WORKERS, "worker %d: %llu met", w, (unsigned long long)r->barrier_met[w]);
    }
    raw_stop(r);
}

Test(coord_recover, workers_whose_barrier_answer_was_lost_pass_it_whoever_comes_back_first, .timeout = 120)
{
    for (int rep = 0; rep < 6; rep++) lost_answer_once(rep % 2);
}

/* One restart around a node broadcast whose answer worker 1 lost; its root comes back first or last. */
static void lost_bcast_once(int root_first)
{
    raw_members_t members;
    raw_members_t *r = &members;
    raw_start(r);
    raw_rejoin(r, 2, 0, 0); /* alone in its node: no broadcast of its own yet */
    if (root_first) raw_rejoin(r, 0, 0, BCAST_PASSED + 1);
    raw_rejoin(r, 1, 0, BCAST_PASSED);
    raw_call(r, PS_MSG_NODE_BCAST, 1, BCAST_PASSED, "lost"); /* its call again */
    if (!root_first) {
        usleep(200 * 1000);
        cr_assert_eq(raw_await(r, &r->bcasts[1], 1, 0), 0, "worker 1 answered before its root is back");
        raw_rejoin(r, 0, 0, BCAST_PASSED + 1);
    }
    cr_assert_eq(raw_await(r, &r->bcasts[1], 1, 5000), 1,
                 "worker 1, whose answer to broadcast %d was lost, is still waiting (root first: %d)", BCAST_PASSED,
                 root_first);
    cr_assert_eq(r->bcast_status[1], PSERV_ERR_PEER_FAILED, "worker 1: %s", pserv_strerror(r->bcast_status[1]));
    cr_assert_eq(r->bcast_next[1], BCAST_PASSED + 1);

    /* The group goes on at its next broadcast: the root's bytes reach worker 1. */
    raw_call(r, PS_MSG_NODE_BCAST, 0, BCAST_PASSED + 1, "root");
    raw_call(r, PS_MSG_NODE_BCAST, 1, BCAST_PASSED + 1, "mine");
    raw_call(r, PS_MSG_NODE_BCAST, 2, 0, "solo"); /* and the other node's first, apart */
    int want[WORKERS] = {1, 2, 1};
    const char *bytes[WORKERS] = {"root", "root", "solo"};
    for (int w = 0; w < WORKERS; w++) {
        cr_assert_eq(raw_await(r, &r->bcasts[w], want[w], 5000), want[w], "worker %d: no broadcast answer", w);
        cr_assert_eq(r->bcast_status[w], PSERV_OK, "worker %d: %s", w, pserv_strerror(r->bcast_status[w]));
        cr_assert_eq(memcmp(r->bcast_bytes[w], bytes[w], BCAST_BYTES), 0, "worker %d got '%.4s'", w, r->bcast_bytes[w]);
        cr_assert_eq(r->bcast_next[w], w == 2 ? 1 : BCAST_PASSED + 2, "worker %d: next broadcast %llu", w,
                     (unsigned long long)r->bcast_next[w]);
    }
    /* A call out of sequence is refused, and the answer says where the group is. */
    raw_call(r, PS_MSG_NODE_BCAST, 2, 7, "late");
    cr_assert_eq(raw_await(r, &r->bcasts[2], 2, 5000), 2);
    cr_assert_eq(r->bcast_status[2], PSERV_ERR_INVALID_ARG);
    cr_assert_eq(r->bcast_next[2], 1);
    raw_stop(r);
}

Test(coord_recover, a_node_broadcast_answer_lost_is_an_error_and_the_group_goes_on, .timeout = 120)
{
    for (int rep = 0; rep < 6; rep++) lost_bcast_once(rep % 2);
}
