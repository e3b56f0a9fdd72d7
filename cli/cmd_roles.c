/* `pserv coordinator` and `pserv server`: one role of a job each, for multi-node use. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "options.h"
#include "pserv/pserv.h"


int cmd_coordinator(int argc, char **argv)
{
    const char *listen = "0.0.0.0:7777", *mode = "sync";
    unsigned servers = 2, workers = 2, wait_s = 0;
    size_t chunk = 4u << 20, move = 0;
    const char *policy = "fail";
    unsigned heartbeat_ms = 0, timeout_ms = 0, replicas = 0xffffffffu;
    cli_every_t ckpt_every = {100, 0};
    const char *progress = NULL, *ckpt_dir = NULL, *resume = NULL;
    const cli_opt_t opts[] = {
        {"listen", CLI_STRING, &listen, "HOST:PORT", "address to listen on (default 0.0.0.0:7777)", NULL, 0},
        {"servers", CLI_UINT, &servers, "N", "server shards in the job (default 2)", NULL, 1},
        {"workers", CLI_UINT, &workers, "N", "workers in the job (default 2)", NULL, 1},
        {"mode", CLI_CHOICE, &mode, "sync|async", "consistency model (default sync)", "sync|async", 0},
        {"chunk-bytes", CLI_SIZE, &chunk, "BYTES", "tensor chunk size, e.g. 4M (default 4M)", NULL, 0},
        {"timeout", CLI_UINT, &wait_s, "SECONDS", "give up if the job is not over by then (default: never)", NULL, 0},
        {"on-worker-failure", CLI_CHOICE, &policy, "fail|continue",
         "when a worker dies: end the job, naming it, or go on with the others (default fail)", "fail|continue", 0},
        {"heartbeat-ms", CLI_UINT, &heartbeat_ms, "MS", "heartbeat interval to every member (default 500)", NULL, 0},
        {"failure-timeout-ms", CLI_UINT, &timeout_ms, "MS", "a member silent this long is dead (default 3000)", NULL,
         0},
        {"checkpoint-dir", CLI_STRING, &ckpt_dir, "DIR", "servers write checkpoints here (all must reach it)", NULL, 0},
        {"checkpoint-every", CLI_EVERY, &ckpt_every, "N|Ns",
         "checkpoint every N rounds, or every N seconds (30s, 0.5s, 500ms) (default 100 rounds with a directory)", NULL,
         0},
        {"resume", CLI_STRING, &resume, "DIR", "continue from the newest checkpoint complete in DIR", NULL, 0},
        {"replicas", CLI_UINT, &replicas, "K", "backups of every chunk (default 1 with 2 or more servers; 0: none)", NULL,
         0},
        {"move-bytes", CLI_SIZE, &move, "BYTES",
         "chunks moving to a server that joins or away from one drained, at once (default: the chunk size)", NULL, 0},
        CLI_PROGRESS_OPT(&progress),
    };
    cli_result_t r = cli_parse("coordinator", "Runs the coordinator of a job: ranks, shard map, barriers.", opts,
                               ARRAY_LEN(opts), argc, argv);
    if (r != CLI_OK) return r == CLI_HELP ? 0 : 2;
    cli_progress_apply(progress);

    pserv_coordinator_params_t p = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_coordinator_h c;
    p.listen = listen;
    p.num_servers = servers;
    p.num_workers = workers;
    p.mode = strcmp(mode, "async") == 0 ? PSERV_MODE_ASYNC : PSERV_MODE_SYNC;
    p.chunk_bytes = chunk;
    p.move_bytes = move;
    p.heartbeat_ms = (int)heartbeat_ms;
    p.failure_timeout_ms = (int)timeout_ms;
    p.on_worker_failure = strcmp(policy, "continue") == 0 ? PSERV_ON_FAILURE_CONTINUE : PSERV_ON_FAILURE_FAIL;
    p.checkpoint_dir = ckpt_dir;
    p.checkpoint_every = ckpt_dir ? ckpt_every.rounds : 0;
    p.checkpoint_every_ms = ckpt_dir ? ckpt_every.ms : 0;
    p.resume_dir = resume;
    p.replicas = replicas == 0xffffffffu ? 0 : replicas == 0 ? PSERV_REPLICAS_NONE : (int)replicas;
    pserv_status_t st = pserv_coordinator_create(&p, &c);
    if (st < 0) {
        fprintf(stderr, "pserv coordinator: cannot start on %s: %s (%s)\n", listen, pserv_strerror(st),
                pserv_last_error());
        return 1;
    }
    uint16_t port = 0;
    pserv_coordinator_port(c, &port);
    printf("coordinator listening on %s (port %u): %u servers, %u workers, %s mode\n", listen, port, servers,
           workers, mode);
    fflush(stdout);
    st = pserv_coordinator_wait(c, wait_s ? (int)(wait_s * 1000) : -1);
    if (st < 0)
        fprintf(stderr, "pserv coordinator: job ended: %s%s%s\n", pserv_strerror(st),
                pserv_coordinator_last_error(c)[0] ? ": " : "", pserv_coordinator_last_error(c));
    pserv_coordinator_destroy(c);
    return st < 0 ? 1 : 0;
}

int cmd_server(int argc, char **argv)
{
    const char *coordinator = NULL, *listen = NULL, *progress = NULL;
    unsigned threads = 1, timeout_s = 60;
    const cli_opt_t opts[] = {
        {"coordinator", CLI_STRING, &coordinator, "HOST:PORT", "the coordinator's address (required)", NULL, 0},
        {"listen", CLI_STRING, &listen, "HOST:PORT",
         "address for workers (default 127.0.0.1:0 for a local coordinator, else 0.0.0.0:0)", NULL, 0},
        {"threads", CLI_UINT, &threads, "N", "optimizer threads (default 1)", NULL, 1},
        {"timeout", CLI_UINT, &timeout_s, "SECONDS", "how long to wait for the job to form (default 60)", NULL, 1},
        CLI_PROGRESS_OPT(&progress),
    };
    cli_result_t r = cli_parse("server",
                               "Runs one server shard of a job until the coordinator ends it. Started while the job "
                               "runs, it joins it: chunks move to it.",
                               opts,
                               ARRAY_LEN(opts), argc, argv);
    if (r != CLI_OK) return r == CLI_HELP ? 0 : 2;
    if (coordinator == NULL) {
        fprintf(stderr, "pserv server: --coordinator HOST:PORT is required\n");
        return 2;
    }
    cli_progress_apply(progress);
    pserv_server_params_t p = PSERV_SERVER_PARAMS_INIT;
    pserv_server_h s;
    int local = strncmp(coordinator, "127.", 4) == 0 || strncmp(coordinator, "localhost", 9) == 0;
    p.coordinator = coordinator;
    p.listen = listen ? listen : local ? "127.0.0.1:0" : "0.0.0.0:0";
    p.threads = threads;
    p.timeout_ms = (int)(timeout_s * 1000);
    pserv_status_t st = pserv_server_create(&p, &s);
    if (st < 0) {
        fprintf(stderr, "pserv server: %s: %s\n", pserv_strerror(st), pserv_last_error());
        return 1;
    }
    st = pserv_server_wait(s, -1);
    if (st < 0) fprintf(stderr, "pserv server: %s: %s\n", pserv_strerror(st), pserv_server_last_error(s));
    pserv_server_stats_t stats = PSERV_SERVER_STATS_INIT;
    pserv_server_stats(s, &stats);
    unsigned rank = 0;
    pserv_server_rank(s, &rank);
    fprintf(stderr,
            "server %u: %llu pushes, %llu pulls, %llu optimizer steps, %llu rejected, %llu bytes replicated, "
            "%llu chunk states sent, %llu chunks moved away and freed\n",
            rank, (unsigned long long)stats.pushes, (unsigned long long)stats.pulls, (unsigned long long)stats.steps,
            (unsigned long long)stats.rejected, (unsigned long long)stats.replicated_bytes,
            (unsigned long long)stats.state_transfers, (unsigned long long)stats.chunks_freed);
    pserv_server_destroy(s);
    return st < 0 ? 1 : 0;
}
