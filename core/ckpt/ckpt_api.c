/* The public API for reading a checkpoint back: a job's trained parameters, outside any job. */
#include <stdlib.h>

#include "check.h"
#include "ckpt_set.h"
#include "log.h"

struct pserv_checkpoint {
    ps_ckpt_set_t set;
};

pserv_status_t pserv_checkpoint_open(const char *dir, uint64_t round, pserv_checkpoint_h *ckpt)
{
    PS_CHECK_ARG(dir && ckpt);
    pserv_checkpoint_h c = calloc(1, sizeof(*c));
    if (c == NULL) return PSERV_ERR_NO_MEMORY;
    pserv_status_t st = ps_ckpt_set_open(&c->set, dir, round);
    if (st < 0) {
        free(c);
        return st;
    }
    *ckpt = c;
    return PSERV_OK;
}

pserv_status_t pserv_checkpoint_info(pserv_checkpoint_h ckpt, pserv_checkpoint_info_t *info)
{
    PS_CHECK_ARG(ckpt && info && info->size >= sizeof(*info));
    info->round = ckpt->set.round;
    info->num_servers = ckpt->set.num_servers;
    info->mode = (pserv_mode_t)ckpt->set.mode;
    info->num_tensors = ckpt->set.num_tensors;
    info->bytes = ckpt->set.bytes;
    return PSERV_OK;
}

pserv_status_t pserv_checkpoint_tensor(pserv_checkpoint_h ckpt, unsigned index, uint64_t *key, size_t *count)
{
    PS_CHECK_ARG(ckpt && key && count);
    if (index >= ckpt->set.num_tensors) {
        ps_set_last_error("checkpoint %s has %u tensors, not %u", ckpt->set.dir, ckpt->set.num_tensors, index + 1);
        return PSERV_ERR_INVALID_ARG;
    }
    *key = ckpt->set.keys[index];
    *count = (size_t)ps_ckpt_set_tensor(&ckpt->set, *key)->desc.count;
    return PSERV_OK;
}

pserv_status_t pserv_checkpoint_read(pserv_checkpoint_h ckpt, uint64_t key, void *values)
{
    PS_CHECK_ARG(ckpt && values);
    const ps_ckpt_tensor_t *t = ps_ckpt_set_tensor(&ckpt->set, key);
    if (t == NULL) {
        ps_set_last_error("checkpoint %s has no tensor %llu", ckpt->set.dir, (unsigned long long)key);
        return PSERV_ERR_UNKNOWN_KEY;
    }
    uint64_t version, step;
    return ps_ckpt_set_fill(&ckpt->set, key, 0, t->desc.count, values, NULL, 0, &version, &step);
}

void pserv_checkpoint_close(pserv_checkpoint_h ckpt)
{
    if (ckpt == NULL) return;
    ps_ckpt_set_close(&ckpt->set);
    free(ckpt);
}
