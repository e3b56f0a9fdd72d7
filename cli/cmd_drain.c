/* pserv drain: moves every chunk copy off one server of a running job; then that server leaves. */
#include <limits.h>
#include <stdio.h>

#include "commands.h"
#include "options.h"
#include "pserv/pserv.h"

int cmd_drain(int argc, char **argv)
{
    const char *coordinator = NULL;
    unsigned server = UINT_MAX, timeout_s = 600;
    const cli_opt_t opts[] = {
        {"coordinator", CLI_STRING, &coordinator, "HOST:PORT", "the running job's coordinator (required)", NULL, 0},
        {"server", CLI_UINT, &server, "RANK", "the server to drain (required)", NULL, 0},
        {"timeout", CLI_UINT, &timeout_s, "SECONDS", "how long to wait for it to leave (default 600)", NULL, 1},
    };
    cli_result_t r = cli_parse("drain",
                               "Drains a server out of a running job: each chunk copy it holds moves to another "
                               "server (its state first, then the switch), then the server leaves and its process "
                               "ends. Returns once it has left.",
                               opts, ARRAY_LEN(opts), argc, argv);
    if (r != CLI_OK) return r == CLI_HELP ? 0 : 2;
    if (coordinator == NULL || server == UINT_MAX) {
        fprintf(stderr, "pserv drain: --coordinator HOST:PORT and --server RANK are required\n");
        return 2;
    }
    pserv_status_t st = pserv_drain(coordinator, server, (int)(timeout_s * 1000));
    if (st < 0) {
        fprintf(stderr, "pserv drain: %s: %s\n", pserv_strerror(st), pserv_last_error());
        return 1;
    }
    printf("server %u drained: it left the job\n", server);
    return 0;
}
