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

typedef struct {
    pthread_mutex_t lock;
    ps_tp_peer_t *peer[MEMBERS];
    int joined[MEMBERS];   /* JOIN_REPLYs with PSERV_OK */
    int barriers[MEMBERS]; /* BARRIER_REPLYs */
    int32_t barrier_status[MEMBERS];
    uint64_t barrier_met[MEMBERS];
    uint64_t next_req;
} raw_members_t;

/* Counts what the coordinator answered member i (under the lock). */
static void raw_count(raw_members_t *r, int i, const ps_wire_hdr_t *h)
{
    if (h->type == PS_MSG_JOIN_REPLY && h->status == PSERV_OK) r->joined[i]++;
    if (h->type != PS_MSG_BARRIER_REPLY) return; /* views and heartbeats: not counted */
    r->barriers[i]++;
    r->barrier_status[i] = h->status;
    r->barrier_met[i] = h->offset;
}

static void raw_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    raw_members_t *r = arg;
    ps_wire_hdr_t h;
    (void)data;
    if (ps_wire_decode(hdr, hdr_len, len, &h, NULL) == PSERV_OK) {
        pthread_mutex_lock(&r->lock);
        for (int i = 0; i < MEMBERS; i++)
            if (r->peer[i] == peer) raw_count(r, i, &h);
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
    static uint32_t nodes[WORKERS] = {0, 1, 2};
    static char servers[1][PS_ADDR_MAX] = {"127.0.0.1:9"}; /* never dialled: no data moves */
    memset(job, 0, sizeof(*job));
    job->mode = PSERV_MODE_SYNC;
    job->num_servers = 1;
    job->num_workers = WORKERS;
    job->chunk_bytes = 1 << 20;
    job->heartbeat_ms = 100;
    job->failure_timeout_ms = 20000; /* raw members send no heartbeats */
    job->servers = servers;
    job->num_nodes = WORKERS;
    job->worker_node = nodes;
    cr_assert_eq(ps_view_init(view, 1, WORKERS, 0), PSERV_OK);
    view->version = 2;
    view->server_state[0] = PS_MEMBER_LIVE;
    memset(view->worker_state, PS_MEMBER_LIVE, WORKERS);
    strcpy(view->addrs[0], servers[0]);
}

/* Member i comes back (JOIN flagged RETRY), reporting next_barrier, and is taken back. */
static void raw_rejoin(raw_members_t *r, int i, const ps_job_t *job, const ps_view_t *view, uint64_t next_barrier)
{
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
    h.map_version = view->version;
    cr_assert_eq(ps_send_msg(r->peer[i], &h, payload, w.len, NULL, ps_send_free_cb, payload), PSERV_OK);
    cr_assert_eq(raw_await(r, &r->joined[i], 1, 5000), 1, "member %d was not taken back", i);
}

static void raw_barrier(raw_members_t *r, int worker, uint64_t barrier)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_BARRIER);
    h.sender = (uint32_t)worker;
    h.req_id = __atomic_fetch_add(&r->next_req, 1, __ATOMIC_RELAXED);
    h.round = barrier;
    cr_assert_eq(ps_send_msg(r->peer[worker], &h, NULL, 0, NULL, NULL, NULL), PSERV_OK);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One restart: the worker that passed comes back first, or last (after the others asked again). */
static void lost_answer_once(int passed_first)
{
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    cp.num_servers = 1;
    cp.num_workers = WORKERS;
    cp.heartbeat_ms = 100;
    cp.failure_timeout_ms = 20000;
    pserv_coordinator_h coord;
    uint16_t port;
    cr_assert_eq(pserv_coordinator_create(&cp, &coord), PSERV_OK);
    cr_assert_eq(pserv_coordinator_port(coord, &port), PSERV_OK);

    raw_members_t r = {.lock = PTHREAD_MUTEX_INITIALIZER, .next_req = 1};
    ps_tp_params_t tpp = {.handler = {.arg = &r, .rx = raw_rx}};
    ps_tp_t *tp;
    cr_assert_eq(ps_tp_create(&tpp, &tp), PSERV_OK);
    for (int i = 0; i < MEMBERS; i++) {
        ps_tp_peer_t *peer;
        cr_assert_eq(ps_tp_connect(tp, "127.0.0.1", port, &peer), PSERV_OK);
        pthread_mutex_lock(&r.lock);
        r.peer[i] = peer;
        pthread_mutex_unlock(&r.lock);
    }
    ps_job_t job;
    ps_view_t view;
    raw_job(&job, &view);

    raw_rejoin(&r, SERVER, &job, &view, 0);
    if (passed_first) raw_rejoin(&r, 0, &job, &view, PASSED + 1);
    for (int w = 1; w < WORKERS; w++) {
        raw_rejoin(&r, w, &job, &view, PASSED);
        raw_barrier(&r, w, PASSED); /* its call again, to the coordinator that came back */
    }
    if (!passed_first) {
        usleep(200 * 1000);
        for (int w = 1; w < WORKERS; w++)
            cr_assert_eq(raw_await(&r, &r.barriers[w], 1, 0), 0, "worker %d answered before worker 0 is back", w);
        raw_rejoin(&r, 0, &job, &view, PASSED + 1);
    }
    int64_t back = now_ms();
    for (int w = 1; w < WORKERS; w++) {
        cr_assert_eq(raw_await(&r, &r.barriers[w], 1, 5000), 1,
                     "worker %d, whose answer to barrier %d was lost, is still waiting there (passed first: %d)", w,
                     PASSED, passed_first);
        cr_assert_eq(r.barrier_status[w], PSERV_OK, "worker %d: %s", w, pserv_strerror(r.barrier_status[w]));
    }
    int64_t answered = now_ms() - back;
    cr_assert_lt(answered, 1000, "the lost answers took %lld ms", (long long)answered);

    /* The job goes on: all three meet at the next barrier, and each hears that three met. */
    for (int w = 0; w < WORKERS; w++) raw_barrier(&r, w, PASSED + 1);
    for (int w = 0; w < WORKERS; w++) {
        int want = w == 0 ? 1 : 2;
        cr_assert_eq(raw_await(&r, &r.barriers[w], want, 5000), want, "worker %d never passed barrier %d", w,
                     PASSED + 1);
        cr_assert_eq(r.barrier_status[w], PSERV_OK, "worker %d: %s", w, pserv_strerror(r.barrier_status[w]));
        cr_assert_eq(r.barrier_met[w], WORKERS, "worker %d: %llu met", w, (unsigned long long)r.barrier_met[w]);
    }
    cr_assert_eq(pserv_coordinator_destroy(coord), PSERV_OK);
    ps_tp_destroy(tp);
    ps_view_free(&view);
}

Test(coord_recover, workers_whose_barrier_answer_was_lost_pass_it_whoever_comes_back_first, .timeout = 120)
{
    for (int rep = 0; rep < 6; rep++) lost_answer_once(rep % 2);
}
