/*
 * pserv status codes: one table (X-macro) generates the enum and its strings.
 * 0 is success, every error is negative.
 */
#ifndef PSERV_STATUS_H
#define PSERV_STATUS_H

#include "pserv/pserv_export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PSERV_STATUS_MAP(X)                                                        \
    X(OK, 0, "success")                                                            \
    X(IN_PROGRESS, 1, "operation in progress")                                     \
    X(ERR_INVALID_ARG, -1, "invalid argument")                                     \
    X(ERR_NO_MEMORY, -2, "out of memory")                                          \
    X(ERR_TIMED_OUT, -3, "timed out")                                              \
    X(ERR_UNREACHABLE, -4, "peer unreachable")                                     \
    X(ERR_PEER_FAILED, -5, "peer failed or disconnected")                          \
    X(ERR_BAD_MESSAGE, -6, "malformed message")                                    \
    X(ERR_UNKNOWN_KEY, -7, "unknown key")                                          \
    X(ERR_EXISTS, -8, "already exists")                                            \
    X(ERR_NO_RESOURCE, -9, "no free resource")                                     \
    X(ERR_TRANSPORT, -10, "transport error")                                       \
    X(ERR_SHUTDOWN, -11, "shutting down")                                          \
    X(ERR_MISMATCH, -12, "does not match the registered definition")               \
    X(ERR_STALE, -13, "round out of order")                                        \
    X(ERR_UNSUPPORTED, -14, "unsupported")                                         \
    X(ERR_IO, -15, "input/output error")                                           \
    X(ERR_INTERNAL, -16, "internal error")                                         \
    X(ERR_VIEW_CHANGED, -17, "routed by an outdated cluster view")                 \
    X(ERR_ADDR_IN_USE, -18, "address already in use")                              \
    X(ERR_CORRUPT, -19, "corrupt data")                                            \
    X(ERR_NOT_FINITE, -20, "non-finite value (NaN or infinity)")                   \
    X(ERR_JOB_FAILED, -21, "the job failed (a member died or was declared dead)")

typedef enum {
#define PSERV_STATUS_ENUM_(name, value, text) PSERV_##name = (value),
    PSERV_STATUS_MAP(PSERV_STATUS_ENUM_)
#undef PSERV_STATUS_ENUM_
} pserv_status_t;

/** Name of a status code ("timed out"); never NULL, thread-safe. */
PSERV_API const char *pserv_strerror(pserv_status_t status);

#ifdef __cplusplus
}
#endif
#endif
