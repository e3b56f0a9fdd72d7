/*
 * The coordinator's part in checkpoints: it checks the parameters, picks the checkpoint a job
 * resumes from (the newest complete one), and keeps the directory tidy: once every live server
 * has written round R, the rounds before R are removed. With checkpoint_every rounds the shards
 * write on their own schedule; the coordinator is never in their way.
 *
 * Checkpoints by time (checkpoint_every_ms) need every shard to copy its chunks at one round, and
 * only the coordinator has a clock they share. Servers' heartbeats carry the newest round their
 * chunks reached; every interval the coordinator names a round R ahead of the newest by what the
 * rounds' pace covers in two heartbeats (CHECKPOINT_AT), and each shard copies its chunks as they
 * reach R. A shard whose chunks had passed R already says so (CHECKPOINT, STALE): the coordinator
 * names a later round, with twice the lead. Training never waits for any of it.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_set.h"
#include "coordinator_internal.h"
#include "deadline.h"

pserv_status_t ps_coord_ckpt_setup(pserv_coordinator_h c, const pserv_coordinator_params_t *p)
{
    const char *dir = p->checkpoint_dir && p->checkpoint_dir[0] ? p->checkpoint_dir : NULL;
    const char *resume = p->resume_dir && p->resume_dir[0] ? p->resume_dir : NULL;
    int every = (p->checkpoint_every > 0) + (p->checkpoint_every_ms > 0);
    if (dir != NULL ? every != 1 : every != 0) {
        ps_set_last_error("checkpoints need a directory and one interval, rounds or time (got %s, every %u rounds "
                          "and every %u ms)",
                          dir ? dir : "no directory", p->checkpoint_every, p->checkpoint_every_ms);
        return PSERV_ERR_INVALID_ARG;
    }
    if ((dir && strlen(dir) >= PS_PATH_MAX - 64) || (resume && strlen(resume) >= PS_PATH_MAX - 64)) {
        ps_set_last_error("checkpoint directory path longer than %d bytes", PS_PATH_MAX - 64);
        return PSERV_ERR_INVALID_ARG;
    }
    if (dir) {
        snprintf(c->job.ckpt_dir, sizeof(c->job.ckpt_dir), "%s", dir);
        c->job.ckpt_every = p->checkpoint_every;
        c->job.ckpt_every_ms = p->checkpoint_every_ms;
        c->ckpt_lead = 1;
    }
    if (resume == NULL) return PSERV_OK;
    ps_ckpt_set_t set;
    pserv_status_t st = ps_ckpt_set_open(&set, resume, 0);
    if (st < 0) return st; /* last error names the directory or the damaged file */
    if (set.mode != (uint32_t)p->mode) {
        ps_set_last_error("checkpoint %s was taken in %s mode, this job runs in %s mode", set.dir,
                          set.mode == PSERV_MODE_SYNC ? "sync" : "async", p->mode == PSERV_MODE_SYNC ? "sync" : "async");
        ps_ckpt_set_close(&set);
        return PSERV_ERR_MISMATCH;
    }
    snprintf(c->job.resume_dir, sizeof(c->job.resume_dir), "%s", resume);
    c->job.resume_round = set.round;
    ps_info("resuming from %s: round %llu, written by %u servers", set.dir, (unsigned long long)set.round,
            set.num_servers);
    ps_ckpt_set_close(&set);
    /* Checkpoints go where the job resumes from: the rounds after the one resumed were never
     * completed (else it would be one of them), and this job writes those rounds again, maybe with
     * other servers; files of the killed job beside them would make them inconsistent. */
    struct stat a, b;
    if (dir && stat(dir, &a) == 0 && stat(resume, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        ps_ckpt_drop_after(dir, c->job.resume_round);
    return PSERV_OK;
}

void ps_coord_on_checkpoint(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                            size_t len)
{
    if (h->status == PSERV_ERR_STALE) {
        /* The round named was passed before that shard heard of it: a later one, further ahead
         * (once: the other shards that had passed it say so too). */
        if (h->round != c->ckpt_at) return;
        ps_info("server %u had passed checkpoint round %llu already: a later round, with a longer lead", m->rank,
                (unsigned long long)h->round);
        c->ckpt_at = 0;
        c->ckpt_next_ms = ps_now_ms(); /* at the next tick */
        if (c->ckpt_lead < 64) c->ckpt_lead *= 2;
        return;
    }
    if (h->status < 0) {
        ps_warn("server %u could not write checkpoint round %llu: %.*s", m->rank, (unsigned long long)h->round,
                (int)len, (const char *)data);
        return;
    }
    if (h->round > m->ckpt_round) m->ckpt_round = h->round;
    uint64_t complete = UINT64_MAX;
    for (uint32_t i = 0; i < c->capacity; i++) {
        const ps_coord_member_t *s = &c->members[i];
        if (s->used && s->role == PS_ROLE_SERVER && ps_view_member_alive(c->view.server_state[s->rank]) &&
            s->ckpt_round < complete)
            complete = s->ckpt_round;
    }
    if (complete == UINT64_MAX || complete <= c->ckpt_complete) return;
    c->ckpt_complete = complete;
    if (c->ckpt_at != 0 && complete >= c->ckpt_at) {
        c->ckpt_at = 0; /* the round named is written: the next one's lead may be shorter again */
        if (c->ckpt_lead > 1) c->ckpt_lead /= 2;
    }
    /* The files are looked at and old rounds removed on the ticker thread, without the lock:
     * deleting gigabytes takes long, and heartbeats must not wait for it. */
    __atomic_store_n(&c->ckpt_prune, 1, __ATOMIC_RELEASE);
}

void ps_coord_ckpt_prune(pserv_coordinator_h c)
{
    if (!__atomic_exchange_n(&c->ckpt_prune, 0, __ATOMIC_ACQ_REL)) return;
    /* What the files say is what counts (a server may have skipped a round): the newest round
     * whose files hold every chunk is kept, with everything after it. */
    uint64_t newest;
    if (ps_ckpt_find_newest(c->job.ckpt_dir, &newest) < 0) {
        ps_warn("a checkpoint round is written by every server, yet: %s", pserv_last_error());
        return;
    }
    ps_info("checkpoint round %llu is complete", (unsigned long long)newest);
    ps_ckpt_prune(c->job.ckpt_dir, newest);
}

/* The newest round any live server's chunks reached, by their heartbeats. */
static uint64_t ps_coord_progress(pserv_coordinator_h c)
{
    uint64_t top = 0;
    for (uint32_t i = 0; i < c->capacity; i++) {
        const ps_coord_member_t *m = &c->members[i];
        if (m->used && m->role == PS_ROLE_SERVER && !m->failed && !m->left && m->progress > top) top = m->progress;
    }
    return top;
}

void ps_coord_ckpt_tick(pserv_coordinator_h c, int64_t now)
{
    if (c->job.ckpt_every_ms == 0 || !c->formed || c->done || c->recovering) return;
    uint64_t top = ps_coord_progress(c);
    if (c->ckpt_next_ms == 0) c->ckpt_next_ms = now + c->job.ckpt_every_ms; /* the first: an interval on */
    /* The rounds' pace (rounds per ms), over a window of two heartbeats or more that ends with new
     * progress: ticks and heartbeats share a period, so one tick to the next sees none or two
     * heartbeats' worth of rounds, and a lead from that is 1 (passed before it is heard of) or twice
     * what it should be (past a short job's end). A window starts at the first progress heard (a
     * resumed job starts at its round, not 0) and again after a stall of more than three
     * heartbeats (a failover, a drain, an evaluation), which would make the pace look slow. */
    int64_t hb = (int64_t)c->job.heartbeat_ms;
    int stalled = top != c->ckpt_top && now - c->ckpt_top_ms > 3 * hb;
    if (top != c->ckpt_top) {
        c->ckpt_top = top;
        c->ckpt_top_ms = now;
    }
    if (top == 0) {
        c->ckpt_pace_ms = 0;
    } else if (c->ckpt_pace_ms == 0 || stalled || top < c->ckpt_pace_round) {
        c->ckpt_pace_ms = now;
        c->ckpt_pace_round = top;
    } else if (top > c->ckpt_pace_round && now - c->ckpt_pace_ms >= 2 * hb) {
        c->ckpt_pace = (double)(top - c->ckpt_pace_round) / (double)(now - c->ckpt_pace_ms);
        c->ckpt_pace_ms = now;
        c->ckpt_pace_round = top;
    }
    /* One round named at a time; one never written (a shard gone, training stopped) is given up after a while. */
    if (c->ckpt_at != 0 && now < c->ckpt_at_deadline_ms) return;
    if (now < c->ckpt_next_ms || top == 0 || c->ckpt_pace <= 0) return; /* no pace yet: no lead to name */
    uint64_t lead = 1 + (uint64_t)(c->ckpt_pace * 2.0 * c->job.heartbeat_ms * c->ckpt_lead);
    uint64_t at = top + lead;
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_CHECKPOINT_AT);
    h.round = at;
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (m->used && m->role == PS_ROLE_SERVER && !m->failed && !m->left)
            ps_send_msg(m->peer, &h, NULL, 0, NULL, NULL, NULL);
    }
    ps_debug("checkpoint at round %llu (newest %llu, %.3f rounds/ms)", (unsigned long long)at,
             (unsigned long long)top, c->ckpt_pace);
    c->ckpt_at = at;
    c->ckpt_at_deadline_ms = now + 10 * (int64_t)c->job.ckpt_every_ms + 10 * (int64_t)c->job.heartbeat_ms;
    c->ckpt_next_ms = now + c->job.ckpt_every_ms;
}
