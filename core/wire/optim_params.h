/* Optimizer hyper-parameters as they travel in a tensor descriptor: their validation. */
#ifndef PS_OPTIM_PARAMS_H
#define PS_OPTIM_PARAMS_H

#include "pserv/pserv.h"

/* Checks hyper-parameters (lr > 0, betas in [0,1), ...): PSERV_ERR_INVALID_ARG with a log line. */
pserv_status_t ps_optim_validate(const pserv_optim_params_t *p);

#endif
