/*
 * The coordinator: rendezvous of a job's servers and workers, rank assignment, the job
 * description and shard map, barriers, and the end of the job. All of its state is changed on
 * the transport's progress thread under one lock (control traffic only, never the data path).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "deadline.h"
#include "hostport.h"
#include "job.h"
#include "member.h"
#include "transport.h"
#include "wire.h"

typedef struct {
    ps_tp_peer_t *peer;
    ps_role_t role;
    int32_t wanted_rank;
    uint32_t rank;
    uint64_t join_req;
    char addr[PS_ADDR_MAX];
    char node[PS_NODE_MAX]; /* a worker's node group name, "" for a group of its own */
    int used, left, failed;
    uint64_t barrier_req; /* req id of its barrier call, while it waits at the barrier */
    int at_barrier;
    uint64_t bcast_req;   /* req id of its node broadcast call, while it waits in one */
    int at_bcast;
} ps_coord_member_t;

/* A node group's broadcast in progress (NODE_BCAST): local rank 0's bytes go to every member. */
typedef struct {
    uint64_t seq;
    uint32_t arrived, size;
    uint32_t len;
    pserv_status_t fail; /* the round's outcome so far: members disagreed on the length */
    uint8_t data[PSERV_NODE_BROADCAST_MAX];
} ps_coord_node_t;

struct pserv_coordinator {
    ps_tp_t *tp;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ps_job_t job;
    ps_coord_member_t *members; /* num_servers + num_workers slots */
    uint32_t capacity;
    uint32_t joined[3];         /* by role */
    int formed;
    uint64_t barrier_seq;
    uint32_t barrier_arrived;
    ps_coord_node_t *nodes; /* job.num_nodes, once formed */
    uint32_t workers_done; /* left or failed */
    int done;
    pserv_status_t result;
    char why[512]; /* why the job failed, for pserv_coordinator_last_error */
    uint64_t rejected;
};

static uint32_t ps_coord_role_size(const pserv_coordinator_h c, ps_role_t role)
{
    return role == PS_ROLE_SERVER ? c->job.num_servers : c->job.num_workers;
}

/* Ranks: wanted ranks first (when valid and unclaimed), then the rest in join order. */
static void ps_coord_assign_ranks(pserv_coordinator_h c, ps_role_t role)
{
    uint32_t n = ps_coord_role_size(c, role);
    char *taken = calloc(n, 1);
    if (taken == NULL) return; /* cannot happen for sane sizes; ranks then stay join order below */
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->role != role) continue;
        m->rank = UINT32_MAX;
        if (m->wanted_rank >= 0 && (uint32_t)m->wanted_rank < n && !taken[m->wanted_rank]) {
            m->rank = (uint32_t)m->wanted_rank;
            taken[m->rank] = 1;
        }
    }
    uint32_t next = 0;
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->role != role || m->rank != UINT32_MAX) continue;
        while (taken[next]) next++;
        m->rank = next;
        taken[next] = 1;
    }
    free(taken);
}

static void ps_coord_send_job(pserv_coordinator_h c, ps_coord_member_t *m)
{
    size_t cap = 64 + (size_t)c->job.num_servers * (PS_ADDR_MAX + 4) + (size_t)c->job.num_workers * 4;
    uint8_t *payload = malloc(cap);
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_JOIN_REPLY);
    h.req_id = m->join_req;
    h.map_version = c->job.map.version;
    if (payload == NULL) {
        ps_reply_status(m->peer, &h, PS_MSG_JOIN_REPLY, 0, PSERV_ERR_NO_MEMORY);
        return;
    }
    ps_writer_t w;
    ps_writer_init(&w, payload, cap);
    ps_job_encode(&c->job, m->rank, &w);
    h.length = w.len;
    ps_send_msg(m->peer, &h, payload, w.len, NULL, ps_send_free_cb, payload);
}

/* Orders workers by node name, then rank: a run of one name is a group, its first the root. */
static int ps_coord_by_node(const void *a, const void *b)
{
    const ps_coord_member_t *x = *(ps_coord_member_t *const *)a, *y = *(ps_coord_member_t *const *)b;
    int c = strcmp(x->node, y->node);
    return c != 0 ? c : (x->rank > y->rank) - (x->rank < y->rank);
}

/*
 * Node groups numbered by their lowest worker rank; a worker without a node name is alone.
 * Sorting keeps this O(W log W) at start-up however many workers and groups there are.
 */
static void ps_coord_group_nodes(pserv_coordinator_h c)
{
    uint32_t W = c->job.num_workers;
    ps_coord_member_t **by_name = malloc(W * sizeof(*by_name));
    uint32_t *root = malloc(W * sizeof(*root)); /* by rank: the lowest rank of its group */
    if (by_name == NULL || root == NULL) {
        /* cannot happen for sane sizes: every worker alone is still a valid job */
        for (uint32_t r = 0; r < W; r++) c->job.worker_node[r] = r;
        c->job.num_nodes = W;
        goto out;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->capacity; i++)
        if (c->members[i].used && c->members[i].role == PS_ROLE_WORKER) by_name[n++] = &c->members[i];
    qsort(by_name, n, sizeof(*by_name), ps_coord_by_node);
    for (uint32_t i = 0; i < n; i++) {
        int same = i > 0 && by_name[i]->node[0] != '\0' && strcmp(by_name[i]->node, by_name[i - 1]->node) == 0;
        root[by_name[i]->rank] = same ? root[by_name[i - 1]->rank] : by_name[i]->rank;
    }
    /* Ranks in order: a group's number is given when its root (lowest rank) comes up. */
    c->job.num_nodes = 0;
    for (uint32_t r = 0; r < W; r++)
        c->job.worker_node[r] = root[r] == r ? c->job.num_nodes++ : c->job.worker_node[root[r]];
out:
    for (uint32_t r = 0; r < W; r++) c->nodes[c->job.worker_node[r]].size++;
    free(by_name);
    free(root);
}

static void ps_coord_form(pserv_coordinator_h c)
{
    ps_coord_assign_ranks(c, PS_ROLE_SERVER);
    ps_coord_assign_ranks(c, PS_ROLE_WORKER);
    ps_coord_group_nodes(c);
    for (uint32_t i = 0; i < c->capacity; i++)
        if (c->members[i].used && c->members[i].role == PS_ROLE_SERVER)
            snprintf(c->job.servers[c->members[i].rank], PS_ADDR_MAX, "%s", c->members[i].addr);
    c->formed = 1;
    ps_info("job formed: %u servers, %u workers in %u node groups, %s mode, %llu-byte chunks", c->job.num_servers,
            c->job.num_workers, c->job.num_nodes, c->job.mode == PSERV_MODE_SYNC ? "sync" : "async",
            (unsigned long long)c->job.chunk_bytes);
    for (uint32_t i = 0; i < c->capacity; i++)
        if (c->members[i].used) ps_coord_send_job(c, &c->members[i]);
}

static void ps_coord_on_join(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data,
                             size_t len)
{
    ps_reader_t r;
    ps_role_t role;
    int32_t wanted;
    char addr[PS_ADDR_MAX], node[PS_NODE_MAX];

    ps_reader_init(&r, data, len);
    if (ps_join_decode(&r, &role, &wanted, addr, node) < 0) {
        c->rejected++;
        ps_warn("malformed JOIN from %s rejected", ps_tp_peer_name(peer));
        ps_reply_status(peer, h, PS_MSG_JOIN_REPLY, 0, PSERV_ERR_BAD_MESSAGE);
        return;
    }
    char host[PS_HOST_MAX];
    uint16_t port;
    if (ps_tp_peer_get_ctx(peer) != NULL || c->formed ||
        c->joined[role] >= ps_coord_role_size(c, role) ||
        (role == PS_ROLE_SERVER && (ps_hostport_parse(addr, 0, host, &port) < 0 || port == 0))) {
        ps_warn("JOIN from %s refused: %s", ps_tp_peer_name(peer),
                role == PS_ROLE_SERVER && c->joined[role] < ps_coord_role_size(c, role) && !c->formed
                    ? "bad server address" : "the job is full or already formed");
        ps_reply_status(peer, h, PS_MSG_JOIN_REPLY, 0, PSERV_ERR_NO_RESOURCE);
        return;
    }
    ps_coord_member_t *m = NULL;
    for (uint32_t i = 0; i < c->capacity && m == NULL; i++)
        if (!c->members[i].used) m = &c->members[i];
    memset(m, 0, sizeof(*m));
    m->used = 1;
    m->peer = peer;
    m->role = role;
    m->wanted_rank = wanted;
    m->join_req = h->req_id;
    snprintf(m->addr, sizeof(m->addr), "%s", addr);
    snprintf(m->node, sizeof(m->node), "%s", role == PS_ROLE_WORKER ? node : "");
    ps_tp_peer_set_ctx(peer, m);
    c->joined[role]++;
    ps_info("%s joined from %s (%u/%u servers, %u/%u workers)", role == PS_ROLE_SERVER ? "server" : "worker",
            ps_tp_peer_name(peer), c->joined[PS_ROLE_SERVER], c->job.num_servers, c->joined[PS_ROLE_WORKER],
            c->job.num_workers);
    if (c->joined[PS_ROLE_SERVER] == c->job.num_servers && c->joined[PS_ROLE_WORKER] == c->job.num_workers)
        ps_coord_form(c);
}

/* Releases the barrier when every worker still in the job has arrived (or fails it). */
static void ps_coord_barrier_check(pserv_coordinator_h c, pserv_status_t fail)
{
    uint32_t alive = c->job.num_workers - c->workers_done;
    if (fail == PSERV_OK && (c->barrier_arrived < alive || c->barrier_arrived == 0)) return;
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || !m->at_barrier) continue;
        ps_wire_hdr_t req;
        ps_wire_hdr_init(&req, PS_MSG_BARRIER);
        req.req_id = m->barrier_req;
        req.round = c->barrier_seq;
        ps_reply_status(m->peer, &req, PS_MSG_BARRIER_REPLY, 0, fail);
        m->at_barrier = 0;
    }
    c->barrier_arrived = 0;
    c->barrier_seq++;
}

/* Answers every member of a node group waiting in its broadcast: with the root's bytes, or fail. */
static void ps_coord_bcast_release(pserv_coordinator_h c, uint32_t node, pserv_status_t fail)
{
    ps_coord_node_t *n = &c->nodes[node];
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || !m->at_bcast || c->job.worker_node[m->rank] != node) continue;
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_NODE_BCAST_REPLY);
        h.req_id = m->bcast_req;
        h.round = n->seq;
        m->at_bcast = 0;
        if (fail < 0) {
            ps_reply_status(m->peer, &h, PS_MSG_NODE_BCAST_REPLY, 0, fail);
            continue;
        }
        uint8_t *copy = malloc(n->len ? n->len : 1);
        if (copy == NULL) {
            ps_reply_status(m->peer, &h, PS_MSG_NODE_BCAST_REPLY, 0, PSERV_ERR_NO_MEMORY);
            continue;
        }
        memcpy(copy, n->data, n->len);
        h.length = n->len;
        ps_send_msg(m->peer, &h, copy, n->len, NULL, ps_send_free_cb, copy);
    }
    n->arrived = 0;
    n->fail = PSERV_OK;
    n->seq++;
}

static void ps_coord_on_bcast(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                              size_t len)
{
    uint32_t node = c->job.worker_node[m->rank], local_rank, local_size;
    ps_coord_node_t *n = &c->nodes[node];
    ps_job_node_of(&c->job, m->rank, &local_rank, &local_size);
    if (h->round != n->seq || m->at_bcast || m->left || len > PSERV_NODE_BROADCAST_MAX) {
        c->rejected++;
        ps_warn("node broadcast %llu from worker %u rejected: %s", (unsigned long long)h->round, m->rank,
                len > PSERV_NODE_BROADCAST_MAX ? "too long" : "out of sequence");
        ps_reply_status(m->peer, h, PS_MSG_NODE_BCAST_REPLY, 0, PSERV_ERR_INVALID_ARG);
        return;
    }
    /* Members that disagree on the length fail the round together, so their sequences stay in step. */
    if (n->arrived > 0 && len != n->len && n->fail == PSERV_OK) {
        ps_warn("node broadcast %llu of node group %u failed: worker %u sent %zu bytes, others %u",
                (unsigned long long)h->round, node, m->rank, len, n->len);
        n->fail = PSERV_ERR_INVALID_ARG;
    }
    if (n->arrived == 0) n->len = (uint32_t)len;
    if (local_rank == 0 && len == n->len) memcpy(n->data, data, len);
    m->at_bcast = 1;
    m->bcast_req = h->req_id;
    if (++n->arrived == n->size) ps_coord_bcast_release(c, node, n->fail);
}

static void ps_coord_end_if_done(pserv_coordinator_h c)
{
    if (c->done || c->workers_done < c->job.num_workers) return;
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->role != PS_ROLE_SERVER || m->failed) continue;
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_SHUTDOWN);
        ps_send_msg(m->peer, &h, NULL, 0, NULL, NULL, NULL);
    }
    c->done = 1;
    ps_info("job over: %s", pserv_strerror(c->result));
    pthread_cond_broadcast(&c->cond);
}

static void ps_coord_on_worker_msg(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h)
{
    if (h->type == PS_MSG_LEAVE) {
        if (!m->left) {
            m->left = 1;
            c->workers_done++;
        }
        ps_reply_status(m->peer, h, PS_MSG_LEAVE_REPLY, 0, PSERV_OK);
        if (m->at_barrier) {
            m->at_barrier = 0;
            c->barrier_arrived--;
        }
        /* Its node group's broadcast can no longer complete. */
        if (c->nodes[c->job.worker_node[m->rank]].arrived > 0)
            ps_coord_bcast_release(c, c->job.worker_node[m->rank], PSERV_ERR_PEER_FAILED);
        ps_coord_barrier_check(c, PSERV_OK);
        ps_coord_end_if_done(c);
        return;
    }
    /* BARRIER */
    if (h->round != c->barrier_seq || m->at_barrier || m->left) {
        ps_reply_status(m->peer, h, PS_MSG_BARRIER_REPLY, 0, PSERV_ERR_STALE);
        return;
    }
    m->at_barrier = 1;
    m->barrier_req = h->req_id;
    c->barrier_arrived++;
    ps_coord_barrier_check(c, PSERV_OK);
}

static void ps_coord_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    pserv_coordinator_h c = arg;
    ps_wire_hdr_t h;
    const char *why = NULL;

    pthread_mutex_lock(&c->lock);
    if (ps_wire_decode(hdr, hdr_len, len, &h, &why) < 0) {
        c->rejected++;
        ps_warn("message from %s rejected: %s", ps_tp_peer_name(peer), why);
        goto out;
    }
    ps_coord_member_t *m = ps_tp_peer_get_ctx(peer);
    if (h.type == PS_MSG_JOIN) {
        ps_coord_on_join(c, peer, &h, data, len);
    } else if ((h.type == PS_MSG_BARRIER || h.type == PS_MSG_LEAVE) && m && c->formed &&
               m->role == PS_ROLE_WORKER) {
        ps_coord_on_worker_msg(c, m, &h);
    } else if (h.type == PS_MSG_NODE_BCAST && m && c->formed && m->role == PS_ROLE_WORKER) {
        ps_coord_on_bcast(c, m, &h, data, len);
    } else {
        c->rejected++;
        ps_warn("unexpected %s from %s rejected", ps_wire_type_name(h.type), ps_tp_peer_name(peer));
        if (h.type == PS_MSG_BARRIER || h.type == PS_MSG_LEAVE || h.type == PS_MSG_NODE_BCAST)
            ps_reply_status(peer, &h, (ps_msg_type_t)(h.type + 1), 0, PSERV_ERR_INVALID_ARG);
    }
out:
    pthread_mutex_unlock(&c->lock);
}

static void ps_coord_peer_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why)
{
    pserv_coordinator_h c = arg;
    pthread_mutex_lock(&c->lock);
    ps_coord_member_t *m = ps_tp_peer_get_ctx(peer);
    if (m == NULL || m->failed) goto out;
    if (c->done || m->left) {
        /* The job is over (or this worker left it): a disconnect now is the normal end. */
        m->failed = 1;
        goto out;
    }
    ps_warn("%s at %s failed: %s", m->role == PS_ROLE_SERVER ? "server" : "worker", ps_tp_peer_name(peer),
            pserv_strerror(why));
    if (!c->formed) {
        /* Before the job forms a member may simply come back: free its place. */
        c->joined[m->role]--;
        ps_tp_peer_set_ctx(peer, NULL);
        m->used = 0;
        goto out;
    }
    m->failed = 1;
    if (c->why[0] == '\0')
        snprintf(c->why, sizeof(c->why), "%s %u at %s failed: %s", m->role == PS_ROLE_SERVER ? "server" : "worker",
                 m->rank, ps_tp_peer_name(peer), pserv_strerror(why));
    if (m->role == PS_ROLE_WORKER && !m->left) {
        m->left = 1;
        c->workers_done++;
        c->result = PSERV_ERR_PEER_FAILED;
        if (m->at_barrier) c->barrier_arrived--;
        m->at_barrier = 0;
        /* Workers still at the barrier (or in their node's broadcast) would wait for one that never comes. */
        ps_coord_barrier_check(c, PSERV_ERR_PEER_FAILED);
        ps_coord_node_t *n = &c->nodes[c->job.worker_node[m->rank]];
        if (m->at_bcast) n->arrived--;
        m->at_bcast = 0;
        if (n->arrived > 0) ps_coord_bcast_release(c, c->job.worker_node[m->rank], PSERV_ERR_PEER_FAILED);
        ps_coord_end_if_done(c);
    } else if (m->role == PS_ROLE_SERVER) {
        c->result = PSERV_ERR_PEER_FAILED;
    }
out:
    pthread_mutex_unlock(&c->lock);
}

pserv_status_t pserv_coordinator_create(const pserv_coordinator_params_t *params, pserv_coordinator_h *coord)
{
    char host[PS_HOST_MAX];
    uint16_t port = 0;
    pserv_status_t st;

    PS_CHECK_ARG(params && coord && params->size >= sizeof(pserv_coordinator_params_t));
    PS_CHECK_ARG(params->num_servers >= 1 && params->num_workers >= 1);
    PS_CHECK_ARG(params->num_servers <= 4096 && params->num_workers <= 65536);
    PS_CHECK_ARG(params->mode == PSERV_MODE_SYNC || params->mode == PSERV_MODE_ASYNC);
    if (ps_hostport_parse(params->listen ? params->listen : "127.0.0.1:0", 0, host, &port) < 0) {
        ps_set_last_error("bad coordinator listen address '%s' (want host:port)", params->listen);
        return PSERV_ERR_INVALID_ARG;
    }

    pserv_coordinator_h c = calloc(1, sizeof(*c));
    if (c == NULL) return PSERV_ERR_NO_MEMORY;
    c->job.mode = params->mode;
    c->job.num_servers = params->num_servers;
    c->job.num_workers = params->num_workers;
    c->job.chunk_bytes = params->chunk_bytes ? params->chunk_bytes : PS_DEFAULT_CHUNK_BYTES;
    c->job.map.version = 1;
    c->job.map.num_servers = params->num_servers;
    c->capacity = params->num_servers + params->num_workers;
    c->members = calloc(c->capacity, sizeof(*c->members));
    c->job.servers = calloc(params->num_servers, sizeof(*c->job.servers));
    c->job.worker_node = calloc(params->num_workers, sizeof(*c->job.worker_node));
    c->nodes = calloc(params->num_workers, sizeof(*c->nodes)); /* at most one group per worker */
    st = PSERV_ERR_NO_MEMORY;
    if (c->members == NULL || c->job.servers == NULL || c->job.worker_node == NULL || c->nodes == NULL)
        goto err_free;
    st = PSERV_ERR_NO_RESOURCE;
    if (pthread_mutex_init(&c->lock, NULL) != 0) goto err_free;
    PS_CHECK_GOTO(ps_cond_init(&c->cond), st, err_destroy_lock);

    ps_tp_params_t tp_params = {
        .listen_host = host,
        .listen_port = port,
        .handler = {.arg = c, .rx = ps_coord_rx, .peer_failed = ps_coord_peer_failed},
    };
    st = ps_tp_create(&tp_params, &c->tp);
    if (st < 0) {
        ps_set_last_error("the coordinator cannot listen on %s:%u: %s", host, port, pserv_strerror(st));
        goto err_destroy_cond;
    }
    *coord = c;
    return PSERV_OK;

err_destroy_cond:
    pthread_cond_destroy(&c->cond);
err_destroy_lock:
    pthread_mutex_destroy(&c->lock);
err_free:
    ps_job_free(&c->job);
    free(c->nodes);
    free(c->members);
    free(c);
    return st;
}

pserv_status_t pserv_coordinator_port(pserv_coordinator_h coord, uint16_t *port)
{
    PS_CHECK_ARG(coord && port);
    *port = ps_tp_listen_port(coord->tp);
    return PSERV_OK;
}

pserv_status_t pserv_coordinator_wait(pserv_coordinator_h coord, int timeout_ms)
{
    ps_deadline_t deadline;
    PS_CHECK_ARG(coord);
    ps_deadline_set(&deadline, timeout_ms);
    pthread_mutex_lock(&coord->lock);
    while (!coord->done)
        if (ps_cond_wait(&coord->cond, &coord->lock, &deadline) == PSERV_ERR_TIMED_OUT) break;
    pserv_status_t st = coord->done ? coord->result : PSERV_ERR_TIMED_OUT;
    pthread_mutex_unlock(&coord->lock);
    return st;
}

const char *pserv_coordinator_last_error(pserv_coordinator_h coord)
{
    return coord ? coord->why : "";
}

pserv_status_t pserv_coordinator_destroy(pserv_coordinator_h coord)
{
    if (coord == NULL) return PSERV_OK;
    ps_tp_destroy(coord->tp);
    pthread_cond_destroy(&coord->cond);
    pthread_mutex_destroy(&coord->lock);
    ps_job_free(&coord->job);
    free(coord->nodes);
    free(coord->members);
    free(coord);
    return PSERV_OK;
}
