/*
 * A coordinator restarted at the same address takes the job back from its members.
 *
 * The coordinator holds no data, so training goes on while it is down; what stops is what needs
 * it: barriers, placing new tensors, views after a failure. Every member keeps trying to reach it
 * (every heartbeat) and, once it answers, joins again with JOIN flagged RETRY, carrying its rank,
 * the job description and the newest view it holds. The first such JOIN tells a fresh coordinator
 * that it is taking over a running job: it adopts that job and view, makes a place for every
 * member the view has in the job, and marks them heard from now. Each member that rejoins takes
 * its place (a newer view than the one adopted replaces it); a member that does not rejoin within
 * the failure timeout is declared dead as any silent member is (a server's chunks fail over). When
 * every member is back, the coordinator publishes the view once more (a new version) and the job
 * goes on as before. Workers report where their barriers are: the next barrier is the highest any
 * reports, and a worker whose answer to an earlier one was lost with the old coordinator is told
 * it passed, also when it came back first and already waits there. Node broadcasts go on the same
 * way within each node group, except that a member whose answer was lost is told the bytes are
 * lost (PEER_FAILED): they went with the old coordinator.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator_internal.h"
#include "deadline.h"

/* Slots of a recovered job: server rank r at r, worker rank w at num_servers + w. */
static ps_coord_member_t *ps_coord_slot(pserv_coordinator_h c, ps_role_t role, uint32_t rank)
{
    uint32_t i = role == PS_ROLE_SERVER ? rank : c->job.num_servers + rank;
    return rank < (role == PS_ROLE_SERVER ? c->job.num_servers : c->job.num_workers) ? &c->members[i] : NULL;
}

/* The first rejoin: the job and the view become ours, with a place for every member. */
static void ps_coord_adopt(pserv_coordinator_h c, ps_job_t *job, ps_view_t *view)
{
    ps_job_free(&c->job);
    c->job = *job;
    memset(job, 0, sizeof(*job));
    ps_view_free(&c->view);
    c->view = *view;
    memset(view, 0, sizeof(*view));
    int64_t now = ps_now_ms();
    memset(c->members, 0, c->capacity * sizeof(*c->members));
    ps_coord_nodes_reset(c); /* their sequences come with the workers' reports */
    for (uint32_t i = 0; i < c->job.num_servers + c->job.num_workers; i++) {
        ps_coord_member_t *m = &c->members[i];
        int server = i < c->job.num_servers;
        m->used = 1;
        m->role = server ? PS_ROLE_SERVER : PS_ROLE_WORKER;
        m->rank = server ? i : i - c->job.num_servers;
        m->last_heard_ms = now; /* silence counts from here: who does not come back is dead */
        if (server) snprintf(m->addr, sizeof(m->addr), "%s", c->job.servers[m->rank]);
        uint8_t state = *ps_coord_member_state(c, m);
        if (state == PS_MEMBER_DEAD) m->failed = 1;
        if (server && state == PS_MEMBER_LEFT) m->left = 1; /* drained before the restart */
        if (!server && (state == PS_MEMBER_DEAD || state == PS_MEMBER_LEFT)) {
            m->left = 1;
            c->workers_done++;
        }
    }
    c->formed = 1;
    c->recovering = 1;
    /* A worker that passed barrier k reports k + 1; one whose answer was lost with the old
     * coordinator still reports k: barriers between the lowest and the highest are done. */
    c->barrier_seq = 0;
    c->barrier_floor = UINT64_MAX;
    ps_warn("taking over a running job: %u servers, %u workers, view %u", c->job.num_servers, c->job.num_workers,
            c->view.version);
}

/* Every member the job still has is back: one more view, and the job goes on. */
static void ps_coord_recovered(pserv_coordinator_h c)
{
    for (uint32_t i = 0; i < c->capacity; i++) {
        const ps_coord_member_t *m = &c->members[i];
        if (m->used && m->peer == NULL && !m->failed && !m->left) return;
    }
    c->recovering = 0;
    if (c->barrier_floor > c->barrier_seq) c->barrier_floor = c->barrier_seq;
    ps_warn("every member is back: the job goes on (view %u)", c->view.version + 1);
    ps_coord_publish(c);
}

void ps_coord_on_rejoin(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const ps_join_t *j,
                        ps_reader_t *rest)
{
    ps_job_t job = {0};
    ps_view_t view = {0};
    uint32_t rank = UINT32_MAX;
    const char *why = NULL;
    if (ps_job_decode(rest, &job, &rank) < 0 || ps_view_decode(rest, &view) < 0) why = "a malformed job or view";
    /* Servers may have joined the job since it began (a fresh coordinator knows the first count). */
    else if ((c->formed ? job.num_servers != c->job.num_servers : job.num_servers < c->job.num_servers) ||
             job.num_workers != c->job.num_workers || job.mode != c->job.mode)
        why = "a job of other sizes or mode than this coordinator's";
    else if (rank != h->sender || view.num_servers != job.num_servers || view.num_workers != job.num_workers)
        why = "a rank or view that does not fit its job";
    else if (c->formed && !c->recovering)
        why = "a job this coordinator already runs";
    if (why == NULL && !c->formed) ps_coord_adopt(c, &job, &view);
    else if (why == NULL && view.version > c->view.version) {
        ps_view_free(&c->view); /* a member holds a newer view than the one adopted */
        c->view = view;
        memset(&view, 0, sizeof(view));
    }
    ps_coord_member_t *m = why ? NULL : ps_coord_slot(c, j->role, rank);
    if (why == NULL && (m == NULL || m->peer != NULL || m->failed)) why = "a rank that is taken, dead or out of range";
    ps_job_free(&job);   /* what was not adopted (adopted ones are zeroed) */
    ps_view_free(&view);
    if (why != NULL) {
        c->rejected++;
        ps_warn("rejoin from %s refused: it reports %s", ps_tp_peer_name(peer), why);
        ps_reply_status(peer, h, PS_MSG_JOIN_REPLY, 0, PSERV_ERR_MISMATCH);
        return;
    }
    m->peer = peer;
    m->join_req = h->req_id;
    m->last_heard_ms = ps_now_ms();
    if (j->role == PS_ROLE_WORKER) {
        snprintf(m->node, sizeof(m->node), "%s", j->node);
        ps_coord_barrier_reported(c, h->round);
        ps_coord_bcast_reported(c, c->job.worker_node[rank], h->offset); /* its group's next broadcast */
        if (!c->have_settings) {
            snprintf(c->settings, sizeof(c->settings), "%s", j->settings);
            c->have_settings = 1;
        }
    }
    ps_tp_peer_set_ctx(peer, m);
    ps_info("%s %u rejoined from %s", j->role == PS_ROLE_SERVER ? "server" : "worker", rank, ps_tp_peer_name(peer));
    ps_coord_send_job(c, m, PS_WIRE_FLAG_RETRY);
    ps_coord_recovered(c);
}

void ps_coord_on_worker_rejoin(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const ps_join_t *j)
{
    char why[PS_WIRE_REASON_MAX] = "";
    ps_coord_member_t *m = NULL;
    if (!c->formed || c->recovering || c->done || j->role != PS_ROLE_WORKER ||
        c->job.on_worker_failure != PSERV_ON_FAILURE_CONTINUE)
        snprintf(why, sizeof(why), "a worker rejoins a running job whose policy is on_worker_failure continue");
    else if (c->have_settings)
        ps_coord_settings_differ(c->settings, j->settings, why, sizeof(why)); /* why names the setting */
    for (uint32_t i = 0; !why[0] && i < c->capacity && m == NULL; i++) {
        ps_coord_member_t *x = &c->members[i];
        if (x->used && x->role == PS_ROLE_WORKER && x->failed && (j->wanted_rank < 0 || (uint32_t)j->wanted_rank == x->rank))
            m = x;
    }
    if (!why[0] && m == NULL) snprintf(why, sizeof(why), "no dead worker's place to take");
    if (why[0]) {
        ps_warn("worker at %s cannot rejoin: %s", ps_tp_peer_name(peer), why);
        ps_coord_refuse(peer, h, PS_MSG_JOIN_REPLY, PSERV_ERR_NO_RESOURCE, why);
        return;
    }
    m->failed = 0;
    if (m->left) c->workers_done--;
    m->left = 0;
    m->at_barrier = m->at_bcast = 0;
    m->join_req = h->req_id;
    m->last_heard_ms = ps_now_ms();
    snprintf(m->node, sizeof(m->node), "%s", j->node);
    c->view.worker_state[m->rank] = PS_MEMBER_JOINING; /* in the job from the next barrier on */
    ps_warn("worker %u rejoins from %s: in the job from barrier %llu on", m->rank, ps_tp_peer_name(peer),
            (unsigned long long)c->barrier_seq);
    ps_coord_publish(c); /* to the others; the new one gets this view with the job */
    m->peer = peer;
    ps_tp_peer_set_ctx(peer, m);
    ps_coord_send_job(c, m, 0);
}
