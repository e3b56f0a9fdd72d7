#include "hostport.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

pserv_status_t ps_hostport_parse(const char *text, uint16_t default_port, char host[PS_HOST_MAX],
                                 uint16_t *port)
{
    if (text == NULL || *text == '\0') return PSERV_ERR_INVALID_ARG;
    const char *host_begin = text, *host_end, *port_text = NULL;
    if (*text == '[') {
        host_begin = text + 1;
        host_end = strchr(host_begin, ']');
        if (host_end == NULL) return PSERV_ERR_INVALID_ARG;
        if (host_end[1] == ':') port_text = host_end + 2;
        else if (host_end[1] != '\0') return PSERV_ERR_INVALID_ARG;
    } else {
        host_end = strrchr(text, ':');
        if (host_end) port_text = host_end + 1;
        else host_end = text + strlen(text);
    }
    size_t n = (size_t)(host_end - host_begin);
    if (n == 0 || n >= PS_HOST_MAX) return PSERV_ERR_INVALID_ARG;

    unsigned long value = default_port;
    if (port_text) {
        char *end;
        errno = 0;
        value = strtoul(port_text, &end, 10);
        if (*port_text == '\0' || *end != '\0' || errno || value > 65535 || *port_text == '-')
            return PSERV_ERR_INVALID_ARG;
    }
    memcpy(host, host_begin, n);
    host[n] = '\0';
    *port = (uint16_t)value;
    return PSERV_OK;
}
