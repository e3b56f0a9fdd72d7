/* Rank and size from the launchers clusters already have: Open MPI's mpirun and Slurm's srun. */
#ifndef PSERV_CLI_LAUNCHER_ENV_H
#define PSERV_CLI_LAUNCHER_ENV_H

typedef struct launcher_env {
    int rank, size;
    const char *name; /* "Open MPI", "Slurm" */
} launcher_env_t;

/* Returns 1 and fills env when running under mpirun or srun with more than one task. */
int launcher_env_detect(launcher_env_t *env);

#endif
