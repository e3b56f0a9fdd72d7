/* The subcommands of the pserv program. Each returns the process exit code (2 for usage errors). */
#ifndef PSERV_CLI_COMMANDS_H
#define PSERV_CLI_COMMANDS_H

int cmd_coordinator(int argc, char **argv);
int cmd_server(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_checkpoint(int argc, char **argv);
int cmd_drain(int argc, char **argv);

struct train_config;
struct launcher_env;
/* `pserv train` under mpirun/srun: this process is one member of the job, chosen by rank. */
int train_by_rank(const struct train_config *cfg, const struct launcher_env *env);
/* The training loop of one worker (worker_loop.c). */
int train_worker_run(const struct train_config *cfg, const char *coordinator);

#endif
