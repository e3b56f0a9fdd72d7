/*
 * Internal check macros, all in one place. The _GOTO forms are the default wherever a
 * function holds resources: they jump to a cleanup label instead of hiding a return.
 */
#ifndef PS_CHECK_H
#define PS_CHECK_H

#include "log.h"
#include "pserv/pserv_status.h"

/* Evaluates a pserv_status_t expression; on error stores it in `st` and jumps to `label`. */
#define PS_CHECK_GOTO(expr, st, label)                                                       \
    do {                                                                                     \
        (st) = (expr);                                                                       \
        if ((st) < 0) goto label;                                                            \
    } while (0)

/* Returns the status of a pserv_status_t expression if it is an error (no resources held). */
#define PS_CHECK(expr)                                                                       \
    do {                                                                                     \
        pserv_status_t ps_check_st_ = (expr);                                                \
        if (ps_check_st_ < 0) return ps_check_st_;                                           \
    } while (0)

/* Validates an argument: logs which one and returns PSERV_ERR_INVALID_ARG. */
#define PS_CHECK_ARG(cond)                                                                   \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            ps_debug("invalid argument: %s", #cond);                                         \
            return PSERV_ERR_INVALID_ARG;                                                    \
        }                                                                                    \
    } while (0)

#define PS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PS_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
