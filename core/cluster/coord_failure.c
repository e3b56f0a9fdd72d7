/*
 * Failures seen by the coordinator, and the end of the job.
 *
 * A member is dead when its connection fails (a killed process: UCX reports it at once) or
 * when it has been silent for job.failure_timeout_ms (a stopped process, a silent partition:
 * only missing heartbeats show it). Then:
 * - a server: with backups (replicas > 0) a backup of each of its chunks takes over in a new view
 *   and training goes on; without (or when a chunk has no live copy left) the job fails;
 * - a worker: with PSERV_ON_FAILURE_FAIL the job fails; with CONTINUE it is marked dead in a new
 *   view, which tells the servers to complete sync rounds without it.
 * A job that fails is aborted: every member still in it gets ABORT with the reason in words,
 * fails whatever it is waiting for, and ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator_internal.h"
#include "deadline.h"

/* Every worker has left or died: tell the servers the job is over. */
static void ps_coord_end_if_done(pserv_coordinator_h c)
{
    if (c->done || c->workers_done < c->job.num_workers || c->cause_pending) return; /* the tick decides */
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->role != PS_ROLE_SERVER || m->failed || m->left) continue;
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_SHUTDOWN);
        if (ps_send_msg(m->peer, &h, NULL, 0, NULL, NULL, NULL) == PSERV_OK) {
            m->told_end = 1;
            c->members_told++;
        }
    }
    c->done = 1;
    ps_info("job over: %s", pserv_strerror(c->result));
    pthread_cond_broadcast(&c->cond);
}

/* The job failed: every member still in it is told why, and the job is over. */
static void ps_coord_abort(pserv_coordinator_h c, const char *why)
{
    if (c->done) return;
    snprintf(c->why, sizeof(c->why), "%s", why);
    c->result = PSERV_ERR_JOB_FAILED;
    ps_error("the job failed: %s", why);
    size_t len = strlen(c->why);
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->failed || m->left) continue;
        char *copy = malloc(len ? len : 1);
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_ABORT);
        if (copy == NULL) continue; /* it will end when it loses us */
        memcpy(copy, c->why, len);
        /* Members answer with ABORT_ACK from their progress thread at once (closing can take
         * them a flush timeout: sends to the dead member); destroy waits for the answers. */
        if (ps_send_msg(m->peer, &h, copy, len, NULL, ps_send_free_cb, copy) == PSERV_OK) {
            m->told_end = 1;
            c->members_told++;
        }
    }
    c->done = 1;
    pthread_cond_broadcast(&c->cond);
}

/* A worker is out of the job (left, or dead under CONTINUE): rounds and collectives go on without it. */
static void ps_coord_worker_out(pserv_coordinator_h c, ps_coord_member_t *m, uint8_t state)
{
    if (!m->left) {
        m->left = 1;
        c->workers_done++;
    }
    c->view.worker_state[m->rank] = state;
    ps_coord_collectives_drop(c, m);
    if (c->workers_done < c->job.num_workers) ps_coord_publish(c);
    ps_coord_end_if_done(c);
}

/* A server died in a job with backups: a new view puts a live copy of each of its chunks in
 * charge. 0 (and the view unchanged) when some chunk has no live copy left. */
static int ps_coord_server_failover(pserv_coordinator_h c, ps_coord_member_t *m, const char *why)
{
    uint32_t lost = ps_view_sole_copies(&c->view, m->rank);
    if (lost > 0) {
        ps_warn("%s: %u of its chunks have no live copy left", why, lost);
        return 0;
    }
    ps_view_fail_server(&c->view, m->rank);
    ps_warn("%s: its chunks fail over to their backups", why);
    ps_coord_publish(c);
    ps_coord_membership_changed(c); /* drains going on plan their moves again */
    return 1;
}

void ps_coord_member_dead(pserv_coordinator_h c, ps_coord_member_t *m, const char *why)
{
    char name[PS_ADDR_MAX + 32], text[PS_WIRE_REASON_MAX];
    if (m->failed) return;
    m->failed = 1;
    if (c->done || m->left) return; /* the job is over, or it had left: a disconnect now is the normal end */
    ps_coord_member_name(m, name, sizeof(name));
    snprintf(text, sizeof(text), "%s died: %s", name, why);
    ps_warn("%s", text);
    if (m->role == PS_ROLE_WORKER && c->job.on_worker_failure == PSERV_ON_FAILURE_CONTINUE) {
        ps_coord_worker_out(c, m, PS_MEMBER_DEAD);
        return;
    }
    if (m->role == PS_ROLE_SERVER) ps_coord_moves_server_gone(c, m, text);
    if (m->role == PS_ROLE_SERVER && c->view.replicas > 0 && ps_coord_server_failover(c, m, text)) return;
    *ps_coord_member_state(c, m) = PS_MEMBER_DEAD;
    if (m->role == PS_ROLE_WORKER) {
        m->left = 1;
        c->workers_done++;
    }
    ps_coord_abort(c, text);
}

void ps_coord_on_leave(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                       size_t len)
{
    ps_reply_status(m->peer, h, PS_MSG_LEAVE_REPLY, 0, PSERV_OK);
    if (m->left) return;
    if (h->flags & PS_WIRE_FLAG_FAILED) {
        char why[PS_WIRE_REASON_MAX + 16];
        size_t n = len < PS_WIRE_REASON_MAX ? len : PS_WIRE_REASON_MAX;
        snprintf(why, sizeof(why), "it gave up: %.*s", (int)n, (const char *)data);
        for (char *p = why; *p; p++)
            if ((unsigned char)*p < 0x20) *p = ' ';
        if ((h->flags & PS_WIRE_FLAG_CAUSED) && c->job.on_worker_failure == PSERV_ON_FAILURE_FAIL && !c->done) {
            /* Not the root cause: wait (a failure timeout at most) for the member that died. */
            char name[PS_ADDR_MAX + 32];
            ps_coord_member_name(m, name, sizeof(name));
            if (!c->cause_pending) {
                c->cause_pending = 1; /* before it is out: the job must not end as a success */
                c->cause_deadline_ms = ps_now_ms() + c->job.failure_timeout_ms;
                snprintf(c->cause_fallback, sizeof(c->cause_fallback), "%.150s %.350s", name, why);
            }
            ps_coord_worker_out(c, m, PS_MEMBER_LEFT);
            return;
        }
        ps_coord_member_dead(c, m, why);
        m->failed = 0; /* it is alive and will disconnect: that is not a second failure */
        m->left = 1;
        return;
    }
    ps_coord_worker_out(c, m, PS_MEMBER_LEFT);
}

void ps_coord_tick(void *arg, int64_t now)
{
    pserv_coordinator_h c = arg;
    ps_wire_hdr_t h;
    pthread_mutex_lock(&c->lock);
    if (c->cause_pending && !c->done && now >= c->cause_deadline_ms) ps_coord_abort(c, c->cause_fallback);
    ps_wire_hdr_init(&h, PS_MSG_HEARTBEAT);
    h.map_version = c->view.version;
    for (uint32_t i = 0; c->formed && !c->done && i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->failed || m->left) continue;
        int64_t silent = now - m->last_heard_ms;
        if (silent > (int64_t)c->job.failure_timeout_ms) {
            char why[96];
            snprintf(why, sizeof(why), "no heartbeat for %lld ms (a hung process or a partition)", (long long)silent);
            ps_coord_member_dead(c, m, why);
            continue;
        }
        uint8_t *state = ps_coord_member_state(c, m);
        /* Suspect after two missed beats: only logged, the view changes when it is declared dead. */
        if (silent > 2 * (int64_t)c->job.heartbeat_ms && *state == PS_MEMBER_LIVE) {
            *state = PS_MEMBER_SUSPECT;
            ps_info("%s %u suspect: silent for %lld ms", m->role == PS_ROLE_SERVER ? "server" : "worker", m->rank,
                    (long long)silent);
        } else if (silent <= 2 * (int64_t)c->job.heartbeat_ms && *state == PS_MEMBER_SUSPECT) {
            *state = PS_MEMBER_LIVE;
        }
        ps_send_msg(m->peer, &h, NULL, 0, NULL, NULL, NULL);
    }
    ps_coord_ckpt_tick(c, now);
    pthread_mutex_unlock(&c->lock);
    ps_coord_ckpt_prune(c);
}
