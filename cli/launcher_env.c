#include "launcher_env.h"

#include <stdlib.h>

static int env_int(const char *name, int *out)
{
    const char *v = getenv(name);
    char *end;
    if (v == NULL || *v == '\0') return 0;
    long x = strtol(v, &end, 10);
    if (*end != '\0' || x < 0 || x > 1000000) return 0;
    *out = (int)x;
    return 1;
}

int launcher_env_detect(launcher_env_t *env)
{
    static const struct {
        const char *rank, *size, *name;
    } launchers[] = {
        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"},
        {"SLURM_PROCID", "SLURM_NTASKS", "Slurm"},
    };
    for (unsigned i = 0; i < sizeof(launchers) / sizeof(launchers[0]); i++) {
        int rank, size;
        if (env_int(launchers[i].rank, &rank) && env_int(launchers[i].size, &size) && size > 1 && rank < size) {
            env->rank = rank;
            env->size = size;
            env->name = launchers[i].name;
            return 1;
        }
    }
    return 0;
}
