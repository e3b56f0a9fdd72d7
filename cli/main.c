/* pserv: one program for every role of a job, and `train` to run a whole job. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "pserv/pserv.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: pserv <command> [flags]\n\n"
            "commands:\n"
            "  train        train an MLP on Fashion-MNIST: a whole job on this machine, or one member\n"
            "               per rank under mpirun/srun\n"
            "  coordinator  run a job's coordinator\n"
            "  server       run one server shard (it may join a running job)\n"
            "  drain        move every chunk off a server of a running job; then it leaves\n"
            "  worker       run one training worker\n"
            "  checkpoint   show a checkpoint (every section checked) and export its parameters\n"
            "  version      print the version\n\n"
            "`pserv <command> --help` describes a command's flags.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("pserv %s\n", pserv_version());
        return 0;
    }
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 2, argv + 2);
    if (strcmp(cmd, "coordinator") == 0) return cmd_coordinator(argc - 2, argv + 2);
    if (strcmp(cmd, "server") == 0) return cmd_server(argc - 2, argv + 2);
    if (strcmp(cmd, "worker") == 0) return cmd_worker(argc - 2, argv + 2);
    if (strcmp(cmd, "checkpoint") == 0) return cmd_checkpoint(argc - 2, argv + 2);
    if (strcmp(cmd, "drain") == 0) return cmd_drain(argc - 2, argv + 2);
    fprintf(stderr, "pserv: unknown command '%s' (see pserv --help)\n", cmd);
    return 2;
}
