/* Uses the installed headers and library: a coordinator starts and reports its port. */
#include <pserv/pserv.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    pserv_coordinator_params_t p = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_coordinator_h c;
    uint16_t port = 0;
    p.num_servers = 1;
    p.num_workers = 1;
    if (strcmp(pserv_strerror(PSERV_ERR_TIMED_OUT), "timed out") != 0) return 1;
    if (pserv_coordinator_create(&p, &c) != PSERV_OK) return 2;
    if (pserv_coordinator_port(c, &port) != PSERV_OK || port == 0) return 3;
    pserv_coordinator_destroy(c);
    printf("pserv %s: coordinator listened on port %u\n", pserv_version(), port);
    return 0;
}
