/*
 * The coordinator's part in checkpoints: it checks the parameters, picks the checkpoint a job
 * resumes from (the newest complete one), and keeps the directory tidy: once every live server
 * has written round R, the rounds before R are removed. The shards write on their own schedule
 * (every checkpoint_every rounds of their chunks); the coordinator is never in their way.
 */
#include <stdio.h>
#include <string.h>

#include "ckpt_set.h"
#include "coordinator_internal.h"

pserv_status_t ps_coord_ckpt_setup(pserv_coordinator_h c, const pserv_coordinator_params_t *p)
{
    const char *dir = p->checkpoint_dir && p->checkpoint_dir[0] ? p->checkpoint_dir : NULL;
    const char *resume = p->resume_dir && p->resume_dir[0] ? p->resume_dir : NULL;
    if ((dir != NULL) != (p->checkpoint_every > 0)) {
        ps_set_last_error("checkpoints need both a directory and an interval (got %s and every %u rounds)",
                          dir ? dir : "no directory", p->checkpoint_every);
        return PSERV_ERR_INVALID_ARG;
    }
    if ((dir && strlen(dir) >= PS_PATH_MAX - 64) || (resume && strlen(resume) >= PS_PATH_MAX - 64)) {
        ps_set_last_error("checkpoint directory path longer than %d bytes", PS_PATH_MAX - 64);
        return PSERV_ERR_INVALID_ARG;
    }
    if (dir) {
        snprintf(c->job.ckpt_dir, sizeof(c->job.ckpt_dir), "%s", dir);
        c->job.ckpt_every = p->checkpoint_every;
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
    return PSERV_OK;
}

void ps_coord_on_checkpoint(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                            size_t len)
{
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
