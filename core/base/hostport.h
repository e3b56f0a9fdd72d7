/* "host:port" addresses as users write them. */
#ifndef PS_HOSTPORT_H
#define PS_HOSTPORT_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

#define PS_HOST_MAX 256

/*
 * Splits "host:port" (or "[v6addr]:port") into host and port. A missing port gives
 * default_port. PSERV_ERR_INVALID_ARG for an empty host, a host over PS_HOST_MAX-1 bytes or a
 * port that is not a number in 0..65535.
 */
pserv_status_t ps_hostport_parse(const char *text, uint16_t default_port, char host[PS_HOST_MAX],
                                 uint16_t *port);

#endif
