/* Validation of optimizer hyper-parameters: what a worker checks before registering and a shard
 * checks on every REGISTER it receives. */
#include "optim_params.h"

#include <math.h>

#include "log.h"

static int ps_optim_check(int ok, const char *field, double value, const char *want)
{
    if (!ok) ps_error("optimizer: invalid %s = %g (must be %s)", field, value, want);
    return ok;
}

pserv_status_t ps_optim_validate(const pserv_optim_params_t *p)
{
    if (p == NULL) {
        ps_error("optimizer: parameters are NULL");
        return PSERV_ERR_INVALID_ARG;
    }
    if ((unsigned)p->type >= PSERV_OPTIM_COUNT) {
        ps_error("optimizer: invalid type = %d (must be a pserv_optim_type_t below %d)",
                 (int)p->type, PSERV_OPTIM_COUNT);
        return PSERV_ERR_INVALID_ARG;
    }
    /* Written so that NaN fails every check. */
    int ok = ps_optim_check(p->lr > 0.0f && isfinite(p->lr), "lr", p->lr, "finite and > 0") &&
             ps_optim_check(p->momentum >= 0.0f && p->momentum < 1.0f, "momentum", p->momentum,
                            "in [0, 1)") &&
             ps_optim_check(p->beta1 >= 0.0f && p->beta1 < 1.0f, "beta1", p->beta1,
                            "in [0, 1)") &&
             ps_optim_check(p->beta2 >= 0.0f && p->beta2 < 1.0f, "beta2", p->beta2,
                            "in [0, 1)") &&
             ps_optim_check(p->eps > 0.0f && isfinite(p->eps), "eps", p->eps,
                            "finite and > 0") &&
             ps_optim_check(p->weight_decay >= 0.0f && isfinite(p->weight_decay),
                            "weight_decay", p->weight_decay, "finite and >= 0") &&
             ps_optim_check(p->clip_value >= 0.0f && isfinite(p->clip_value), "clip_value",
                            p->clip_value, "finite and >= 0 (0: off)") &&
             ps_optim_check(p->clip_norm >= 0.0f && isfinite(p->clip_norm), "clip_norm",
                            p->clip_norm, "finite and >= 0 (0: off)");
    return ok ? PSERV_OK : PSERV_ERR_INVALID_ARG;
}
