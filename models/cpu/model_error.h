/* The models' own error detail (pserv_model_last_error) and argument check: the models are a
 * library above libpserv and do not reach its internals. */
#ifndef PS_MODEL_ERROR_H
#define PS_MODEL_ERROR_H

#include "pserv/pserv_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records the detail of a failed call for pserv_model_last_error(); returns st. */
pserv_status_t ps_model_error(pserv_status_t st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#define PS_MODEL_CHECK_ARG(cond)                                                                  \
    do {                                                                                          \
        if (!(cond)) return ps_model_error(PSERV_ERR_INVALID_ARG, "invalid argument: %s", #cond); \
    } while (0)

#endif
