/*
 * `pserv train` under Open MPI or Slurm: every process runs the same command and picks its role
 * by rank. With N tasks and --servers S: ranks 0..S-1 are server shards (rank 0 also runs the
 * coordinator, listening on the --coordinator port), ranks S..N-1 are workers.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "launcher_env.h"
#include "train_config.h"
#include "pserv/pserv.h"

static int run_server(const char *coordinator, const char *listen, unsigned timeout_s)
{
    pserv_server_params_t p = PSERV_SERVER_PARAMS_INIT;
    pserv_server_h s;
    p.coordinator = coordinator;
    p.listen = listen;
    p.timeout_ms = (int)timeout_s * 1000;
    if (pserv_server_create(&p, &s) < 0) {
        fprintf(stderr, "pserv train: server: %s\n", pserv_last_error());
        return 1;
    }
    pserv_status_t st = pserv_server_wait(s, -1);
    pserv_server_destroy(s);
    return st < 0 ? 1 : 0;
}

int train_by_rank(const train_config_t *cfg, const launcher_env_t *env)
{
    const char *coordinator = cfg->coordinator ? cfg->coordinator : "127.0.0.1:7777";
    unsigned servers = cfg->servers;
    if ((unsigned)env->size <= servers) {
        fprintf(stderr, "pserv train: %s started %d tasks, but --servers %u leaves no worker (use -np > %u)\n",
                env->name, env->size, servers, servers);
        return 2;
    }
    const char *port = strrchr(coordinator, ':');
    if (port == NULL) {
        fprintf(stderr, "pserv train: --coordinator must be HOST:PORT, not '%s'\n", coordinator);
        return 2;
    }
    int local = strncmp(coordinator, "127.", 4) == 0 || strncmp(coordinator, "localhost", 9) == 0;
    const char *listen = local ? "127.0.0.1:0" : "0.0.0.0:0";
    if ((unsigned)env->rank >= servers) return train_worker_run(cfg, coordinator);
    if (env->rank != 0) return run_server(coordinator, listen, cfg->timeout_s);

    char coord_listen[64];
    snprintf(coord_listen, sizeof(coord_listen), "%s%s", local ? "127.0.0.1" : "0.0.0.0", port);
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_coordinator_h coord;
    train_config_coordinator_params(cfg, &cp);
    cp.listen = coord_listen;
    cp.num_servers = servers;
    cp.num_workers = (unsigned)env->size - servers;
    if (pserv_coordinator_create(&cp, &coord) < 0) {
        fprintf(stderr, "pserv train: coordinator: %s\n", pserv_last_error());
        return 1;
    }
    printf("pserv train under %s: %d tasks, %u servers, %u workers, coordinator %s\n", env->name, env->size,
           servers, cp.num_workers, coordinator);
    fflush(stdout);
    int rc = run_server(coordinator, listen, cfg->timeout_s);
    pserv_status_t st = pserv_coordinator_wait(coord, 30000);
    pserv_coordinator_destroy(coord);
    return rc != 0 || st < 0 ? 1 : 0;
}
