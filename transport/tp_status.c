/* The one place where UCX status codes become pserv ones. */
#include "tp_internal.h"

pserv_status_t tp_status(ucs_status_t st)
{
    switch (st) {
    case UCS_OK:
        return PSERV_OK;
    case UCS_INPROGRESS:
        return PSERV_IN_PROGRESS;
    case UCS_ERR_NO_MEMORY:
        return PSERV_ERR_NO_MEMORY;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
        return PSERV_ERR_INVALID_ARG;
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_NO_DEVICE:
        return PSERV_ERR_UNREACHABLE;
    case UCS_ERR_CONNECTION_RESET:
        return PSERV_ERR_PEER_FAILED;
    case UCS_ERR_TIMED_OUT:
        return PSERV_ERR_TIMED_OUT;
    case UCS_ERR_CANCELED:
        /* Only we cancel: a forced close by ps_tp_peer_close() or ps_tp_destroy(). */
        return PSERV_ERR_SHUTDOWN;
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
    case UCS_ERR_BUSY:
    case UCS_ERR_ALREADY_EXISTS:
        return PSERV_ERR_NO_RESOURCE;
    case UCS_ERR_UNSUPPORTED:
        return PSERV_ERR_UNSUPPORTED;
    case UCS_ERR_MESSAGE_TRUNCATED:
        return PSERV_ERR_BAD_MESSAGE;
    default:
        if (UCS_IS_LINK_ERROR(st) || UCS_IS_ENDPOINT_ERROR(st)) return PSERV_ERR_PEER_FAILED;
        return PSERV_ERR_TRANSPORT;
    }
}
