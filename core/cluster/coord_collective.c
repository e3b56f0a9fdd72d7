/* Coordinator collectives: the job-wide barrier and node-group broadcasts (NODE_BCAST). */
#include <stdlib.h>
#include <string.h>

#include "coordinator_internal.h"

/* Answers a worker waiting at the barrier: how many met there and its place among them. */
static void ps_coord_barrier_answer(pserv_coordinator_h c, ps_coord_member_t *m, pserv_status_t st, uint32_t met,
                                    uint32_t place)
{
    ps_wire_hdr_t req;
    ps_wire_hdr_init(&req, PS_MSG_BARRIER);
    req.req_id = m->barrier_req;
    req.round = c->barrier_seq;
    req.offset = met;
    req.chunk = place;
    ps_reply_status(m->peer, &req, PS_MSG_BARRIER_REPLY, 0, st);
    m->at_barrier = 0;
}

/*
 * Releases the barrier when every worker still in the job has arrived (or fails it). A worker that
 * rejoined (JOINING) is in the job from here: the view says so before the answers go. Each answer
 * says how many workers met there and this one's place among them (offset, chunk), so a training
 * loop can share the data among the workers that are there.
 */
void ps_coord_barrier_check(pserv_coordinator_h c, pserv_status_t fail)
{
    uint32_t alive = c->job.num_workers - c->workers_done;
    if (fail == PSERV_OK && (c->barrier_arrived < alive || c->barrier_arrived == 0)) return;
    int joined = 0;
    for (uint32_t i = 0; fail == PSERV_OK && i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (m->used && m->at_barrier && m->role == PS_ROLE_WORKER && c->view.worker_state[m->rank] == PS_MEMBER_JOINING) {
            c->view.worker_state[m->rank] = PS_MEMBER_LIVE;
            joined = 1;
        }
    }
    if (joined) ps_coord_publish(c);
    /* A worker's place: how many of those that met have a lower rank. */
    uint32_t W = c->job.num_workers, *place = calloc(W + 1, sizeof(*place)), next = 0;
    for (uint32_t i = 0; place && i < c->capacity; i++)
        if (c->members[i].used && c->members[i].at_barrier && c->members[i].role == PS_ROLE_WORKER)
            place[c->members[i].rank + 1] = 1;
    for (uint32_t r = 0; place && r < W; r++) place[r + 1] += place[r];
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (m->used && m->at_barrier)
            ps_coord_barrier_answer(c, m, fail, c->barrier_arrived, place ? place[m->rank] : next++);
    }
    free(place);
    c->barrier_arrived = 0;
    c->barrier_seq++;
}

/*
 * A worker back at a restarted coordinator reports that it passed every barrier below `next`: the
 * previous coordinator released them. Workers waiting here at one of them (they came back first,
 * their answer lost with it) passed it too: they are answered, and the job's next barrier is
 * `next`. Left waiting, they would never meet the one that passed: it waits for their pushes.
 * The lowest report is the floor: barriers from there on were done before (ps_coord_on_barrier).
 */
void ps_coord_barrier_reported(pserv_coordinator_h c, uint64_t next)
{
    if (next < c->barrier_floor) c->barrier_floor = next;
    if (next <= c->barrier_seq) return;
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (m->used && m->at_barrier) ps_coord_barrier_answer(c, m, PSERV_OK, 0, 0); /* no count: not met here */
    }
    c->barrier_arrived = 0;
    c->barrier_seq = next;
}

void ps_coord_nodes_reset(pserv_coordinator_h c)
{
    memset(c->nodes, 0, c->job.num_workers * sizeof(*c->nodes));
    for (uint32_t g = 0; g < c->job.num_workers; g++) c->nodes[g].floor = UINT64_MAX; /* none done before */
    for (uint32_t w = 0; w < c->job.num_workers; w++) c->nodes[c->job.worker_node[w]].size++;
}

/*
 * Answers every member of a node group waiting in its broadcast: with the root's bytes, or fail.
 * Every answer to a broadcast, refusals too, carries the group's next broadcast as its round, so
 * a member's sequence follows the group's whatever happened to the round it asked for.
 */
static void ps_coord_bcast_release(pserv_coordinator_h c, uint32_t node, pserv_status_t fail)
{
    ps_coord_node_t *n = &c->nodes[node];
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || !m->at_bcast || c->job.worker_node[m->rank] != node) continue;
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_NODE_BCAST_REPLY);
        h.req_id = m->bcast_req;
        h.round = n->seq + 1;
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

/* A broadcast not taken: the answer names the group's next one (n->seq). */
static void ps_coord_bcast_refuse(ps_coord_member_t *m, const ps_wire_hdr_t *h, const ps_coord_node_t *n,
                                  pserv_status_t why)
{
    ps_wire_hdr_t req = *h;
    req.round = n->seq;
    ps_reply_status(m->peer, &req, PS_MSG_NODE_BCAST_REPLY, 0, why);
}

void ps_coord_on_bcast(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                              size_t len)
{
    uint32_t node = c->job.worker_node[m->rank], local_rank, local_size;
    ps_coord_node_t *n = &c->nodes[node];
    ps_job_node_of(&c->job, m->rank, &local_rank, &local_size);
    if (h->round < n->seq && h->round >= n->floor && !m->left && !m->at_bcast) {
        /* The job's previous coordinator completed it; its answer, and the bytes, died with it. */
        ps_warn("node broadcast %llu of worker %u: its bytes were lost with the previous coordinator",
                (unsigned long long)h->round, m->rank);
        ps_coord_bcast_refuse(m, h, n, PSERV_ERR_PEER_FAILED);
        return;
    }
    if (h->round != n->seq || m->at_bcast || m->left || len > PSERV_NODE_BROADCAST_MAX) {
        c->rejected++;
        ps_warn("node broadcast %llu from worker %u rejected: %s", (unsigned long long)h->round, m->rank,
                len > PSERV_NODE_BROADCAST_MAX ? "too long" : "out of sequence");
        ps_coord_bcast_refuse(m, h, n, PSERV_ERR_INVALID_ARG);
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

/* A member of the group came back to a restarted coordinator past broadcast next - 1 (see
 * ps_coord_barrier_reported): those waiting at an earlier one lost its bytes with the old one. */
void ps_coord_bcast_reported(pserv_coordinator_h c, uint32_t node, uint64_t next)
{
    ps_coord_node_t *n = &c->nodes[node];
    if (next < n->floor) n->floor = next;
    if (next <= n->seq) return;
    if (n->arrived > 0) ps_coord_bcast_release(c, node, PSERV_ERR_PEER_FAILED);
    n->seq = next;
}

void ps_coord_on_barrier(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h)
{
    /* A barrier the job's previous coordinator completed (its answer was lost with it): done. */
    if (h->round < c->barrier_seq && h->round >= c->barrier_floor && !m->left) {
        ps_reply_status(m->peer, h, PS_MSG_BARRIER_REPLY, 0, PSERV_OK);
        return;
    }
    if (h->round != c->barrier_seq || m->at_barrier || m->left) {
        ps_reply_status(m->peer, h, PS_MSG_BARRIER_REPLY, 0, PSERV_ERR_STALE);
        return;
    }
    m->at_barrier = 1;
    m->barrier_req = h->req_id;
    c->barrier_arrived++;
    ps_coord_barrier_check(c, PSERV_OK);
}

void ps_coord_collectives_drop(pserv_coordinator_h c, ps_coord_member_t *m)
{
    if (m->at_barrier) c->barrier_arrived--;
    m->at_barrier = 0;
    ps_coord_node_t *n = &c->nodes[c->job.worker_node[m->rank]];
    if (m->at_bcast) n->arrived--;
    m->at_bcast = 0;
    /* Its node group's broadcast can no longer complete; the others at the barrier may now. */
    if (n->arrived > 0) ps_coord_bcast_release(c, c->job.worker_node[m->rank], PSERV_ERR_PEER_FAILED);
    ps_coord_barrier_check(c, PSERV_OK);
}
