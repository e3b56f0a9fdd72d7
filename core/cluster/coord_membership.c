/*
 * Servers that join a running job, and servers drained out of one.
 *
 * A server that sends JOIN once the job has formed takes the next rank. The coordinator adds it
 * to the view, JOINING, with its address (so workers and servers connect to it meanwhile); once
 * it is set up it says READY, and the coordinator marks it LIVE and plans moves of the chunks
 * that balance the load onto it (ps_view_plan_balance). A move never switches owners at
 * once: while it is in the view, the chunk's primary treats the new server as one more backup, so
 * it sends the chunk's whole state (STATE) and then every update. Once the new server holds the
 * state it says SYNCED; the coordinator then replaces the old owner by the new one in a new view.
 * Every update acknowledged before the switch is on the new owner (acknowledgements wait for
 * every backup, the new one included), and what was in flight is refused by the old owner and
 * re-sent by the workers, with its round, to the new one: nothing is lost or applied twice, and
 * nothing pauses for longer than a chunk's state takes to travel.
 *
 * DRAIN (from `pserv drain`, any peer) marks a server LEAVING: it serves what it holds and takes
 * nothing new, and every copy it holds gets a move to the least-loaded server without one. Once
 * it holds nothing, it is LEFT in a new view, told SHUTDOWN, and the DRAIN is answered.
 *
 * Moves run move_bytes at a time (by default the job's chunk size; the next planned as one
 * finishes): while a chunk moves, the rounds of that chunk wait for its new copy, so the chunks
 * moving at once, a full-size one alone or many small ones (a model's biases and norms)
 * together, keep every pause to one chunk's transfer, whatever the number of chunks that move.
 *
 * A server that dies takes its moves with it (ps_view_cancel_moves) before it fails over; the
 * drains still going re-plan theirs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator_internal.h"
#include "deadline.h"
#include "hostport.h"

/* Answers a DRAIN (its requester may be gone: then nobody hears). */
static void ps_coord_drain_reply(ps_coord_member_t *s, pserv_status_t st, const char *why)
{
    if (s->drain_peer == NULL) return;
    ps_wire_hdr_t h = {.req_id = s->drain_req, .chunk = s->rank};
    ps_coord_refuse(s->drain_peer, &h, PS_MSG_DRAIN_REPLY, st, why ? why : "");
    s->drain_peer = NULL;
}

/* The member of server rank r, or NULL. */
static ps_coord_member_t *ps_coord_server(pserv_coordinator_h c, uint32_t r)
{
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (m->used && m->role == PS_ROLE_SERVER && m->rank == r) return m;
    }
    return NULL;
}

/*
 * The next moves, within the budget: first for every server being drained
 * (LEAVING: what it still holds; one that holds nothing leaves), then onto the servers that
 * joined, while that lowers the maximum load. Returns 1 if the view changed (the caller publishes).
 */
static int ps_coord_plan_moves(pserv_coordinator_h c)
{
    int changed = 0;
    for (uint32_t r = 0; r < c->view.num_servers; r++) {
        if (c->view.server_state[r] != PS_MEMBER_LEAVING) continue;
        uint32_t before = c->view.num_moves, stuck;
        uint32_t held = ps_view_plan_drain(&c->view, r, c->move_bytes, &stuck);
        changed |= c->view.num_moves != before;
        ps_coord_member_t *m = ps_coord_server(c, r);
        if (held > 0) {
            if (stuck > 0) ps_warn("server %u: %u of its copies have nowhere to go yet", r, stuck);
            continue;
        }
        c->view.server_state[r] = PS_MEMBER_LEFT;
        changed = 1;
        if (m != NULL) m->drained = 1; /* told to end once this view is out */
    }
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || !m->filling) continue;
        if (ps_view_plan_balance(&c->view, m->rank, c->move_bytes) > 0) changed = 1;
        else if (!ps_view_unbalanced(&c->view, m->rank)) m->filling = 0; /* balanced (or it is gone) */
    }
    return changed;
}

/* Publishes the view, then ends the servers it drained: the view reaches them before SHUTDOWN
 * (one ordered connection), so they give up their last chunk's waiting answers first. */
static void ps_coord_publish_drained(pserv_coordinator_h c)
{
    ps_coord_publish(c);
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || !m->drained || m->left) continue;
        m->left = 1; /* its disconnect is the end it was asked for */
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_SHUTDOWN);
        ps_send_msg(m->peer, &h, NULL, 0, NULL, NULL, NULL);
        ps_info("server %u at %s drained: it holds nothing and leaves", m->rank, m->addr);
        ps_coord_drain_reply(m, PSERV_OK, NULL);
    }
}

void ps_coord_on_server_join(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const ps_join_t *j)
{
    char host[PS_HOST_MAX], why[PS_WIRE_REASON_MAX] = "";
    uint16_t port;
    ps_coord_member_t *m = NULL;
    for (uint32_t i = 0; i < c->capacity && m == NULL; i++)
        if (!c->members[i].used) m = &c->members[i];
    if (c->recovering || c->done) snprintf(why, sizeof(why), "the job is %s", c->done ? "over" : "being recovered");
    else if (ps_hostport_parse(j->addr, 0, host, &port) < 0 || port == 0)
        snprintf(why, sizeof(why), "bad server address '%s'", j->addr);
    else if (m == NULL || c->job.num_servers >= PS_VIEW_MAX_SERVERS)
        snprintf(why, sizeof(why), "the job has %u servers, the most it may have", c->job.num_servers);
    char(*servers)[PS_ADDR_MAX] = why[0] ? NULL : realloc(c->job.servers, (c->job.num_servers + 1) * sizeof(*servers));
    if (!why[0] && servers == NULL) snprintf(why, sizeof(why), "out of memory");
    if (servers) c->job.servers = servers;
    uint32_t rank = why[0] ? UINT32_MAX : ps_view_add_server(&c->view, j->addr);
    if (!why[0] && rank == UINT32_MAX) snprintf(why, sizeof(why), "out of memory");
    if (why[0]) {
        ps_warn("server at %s cannot join the running job: %s", ps_tp_peer_name(peer), why);
        ps_coord_refuse(peer, h, PS_MSG_JOIN_REPLY, PSERV_ERR_NO_RESOURCE, why);
        return;
    }
    snprintf(c->job.servers[rank], PS_ADDR_MAX, "%s", j->addr);
    c->job.num_servers = rank + 1;
    ps_warn("server %u joins the running job from %s", rank, j->addr);
    ps_coord_publish(c); /* to the others (they connect to it); the new one gets this view with the job */
    memset(m, 0, sizeof(*m));
    m->used = 1;
    m->peer = peer;
    m->role = PS_ROLE_SERVER;
    m->rank = rank;
    m->wanted_rank = -1;
    m->join_req = h->req_id;
    m->last_heard_ms = ps_now_ms();
    snprintf(m->addr, sizeof(m->addr), "%s", j->addr);
    c->joined[PS_ROLE_SERVER]++;
    ps_tp_peer_set_ctx(peer, m);
    ps_coord_send_job(c, m, 0);
}

void ps_coord_on_ready(pserv_coordinator_h c, ps_coord_member_t *m)
{
    if (c->done || c->view.server_state[m->rank] != PS_MEMBER_JOINING) return; /* one of the job's first servers */
    c->view.server_state[m->rank] = PS_MEMBER_LIVE;
    m->filling = 1;
    ps_warn("server %u is ready: chunks move to it, up to %llu bytes at a time", m->rank,
            (unsigned long long)c->move_bytes);
    ps_coord_plan_moves(c); /* a drain waiting for room has some now */
    ps_coord_publish_drained(c);
}

void ps_coord_on_drain(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    char why[PS_WIRE_REASON_MAX] = "";
    uint32_t r = h->chunk;
    ps_coord_member_t *m = c->formed ? ps_coord_server(c, r) : NULL;
    uint8_t state = m ? c->view.server_state[r] : PS_MEMBER_DEAD;
    if (!c->formed || c->recovering || c->done)
        snprintf(why, sizeof(why), "the job is %s", c->done ? "over" : c->formed ? "being recovered" : "not formed yet");
    else if (m == NULL) snprintf(why, sizeof(why), "the job has no server %u (it has %u)", r, c->job.num_servers);
    else if (state == PS_MEMBER_LEAVING) snprintf(why, sizeof(why), "server %u is being drained already", r);
    else if (!ps_view_member_alive(state)) snprintf(why, sizeof(why), "server %u is not in the job any more", r);
    else if (ps_view_live_servers(&c->view) < c->view.replicas + 2)
        snprintf(why, sizeof(why), "the %u other servers cannot hold %u copies of every chunk",
                 ps_view_live_servers(&c->view) - 1, c->view.replicas + 1);
    if (why[0]) {
        ps_warn("DRAIN from %s refused: %s", ps_tp_peer_name(peer), why);
        ps_coord_refuse(peer, h, PS_MSG_DRAIN_REPLY, state == PS_MEMBER_LEAVING ? PSERV_ERR_EXISTS : PSERV_ERR_INVALID_ARG,
                        why);
        return;
    }
    m->drain_peer = peer;
    m->drain_req = h->req_id;
    c->view.server_state[r] = PS_MEMBER_LEAVING;
    ps_warn("draining server %u at %s: it holds %u copies", r, m->addr, ps_view_copies(&c->view, r));
    ps_coord_plan_moves(c);
    ps_coord_publish_drained(c);
}

void ps_coord_on_synced(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h)
{
    if (!ps_view_finish_move(&c->view, h->key, h->chunk, m->rank)) return; /* not moving to it (a rebuilt backup) */
    ps_debug("tensor %llu chunk %u moved to server %u", (unsigned long long)h->key, h->chunk, m->rank);
    ps_coord_plan_moves(c);
    ps_coord_publish_drained(c);
}

void ps_coord_moves_server_gone(pserv_coordinator_h c, ps_coord_member_t *m, const char *why)
{
    uint32_t n = ps_view_cancel_moves(&c->view, m->rank);
    if (n > 0) ps_warn("%u chunk moves from or to server %u end with it", n, m->rank);
    if (m->drain_peer) {
        char text[PS_WIRE_REASON_MAX];
        snprintf(text, sizeof(text), "server %u died while it was drained (%.200s): its chunks fail over", m->rank, why);
        ps_coord_drain_reply(m, PSERV_ERR_PEER_FAILED, text);
    }
}

void ps_coord_membership_changed(pserv_coordinator_h c)
{
    if (ps_coord_plan_moves(c)) ps_coord_publish_drained(c);
}

void ps_coord_drain_requester_gone(pserv_coordinator_h c, ps_tp_peer_t *peer)
{
    for (uint32_t i = 0; i < c->capacity; i++)
        if (c->members[i].used && c->members[i].drain_peer == peer) c->members[i].drain_peer = NULL;
}
