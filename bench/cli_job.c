#include "cli_job.h"

#include <stdio.h>
#include <stdlib.h>

#include "bench_common.h"

int cli_job_spawn(cli_job_t *j, const cli_job_env_t *env, int servers, size_t count, size_t chunk, int replicas,
                  int capture)
{
    char nserv[16], bytes[32], rep[16], move[32];
    snprintf(nserv, sizeof(nserv), "%d", servers);
    snprintf(bytes, sizeof(bytes), "%zu", chunk);
    snprintf(rep, sizeof(rep), "%d", replicas);
    snprintf(move, sizeof(move), "%zu", env->move_bytes);
    const char *args[] = {"--servers", nserv, "--workers", "1", "--chunk-bytes", bytes, "--replicas", rep,
                          env->move_bytes ? "--move-bytes" : NULL, move, NULL};
    j->env = env;
    j->nservers = 0;
    j->w = NULL;
    j->count = count;
    if ((j->out = malloc(j->count * sizeof(float))) == NULL ||
        proc_pserv_coordinator(&j->coord, env->pserv, args, env->cpus->pinned ? &env->cpus->all : NULL, capture,
                               j->addr, sizeof(j->addr), env->timeout_s) != 0)
        return -1;
    while (j->nservers < servers)
        if (cli_job_add_server(j) != 0) return -1;
    return 0;
}

int cli_job_add_server(cli_job_t *j)
{
    const cli_job_env_t *env = j->env;
    if (j->nservers >= CLI_JOB_MAX_SERVERS) {
        fprintf(stderr, "%s: at most %d servers\n", env->prog, CLI_JOB_MAX_SERVERS);
        return -1;
    }
    if (proc_pserv_server(&j->server[j->nservers], env->pserv, j->addr, env->cpus->pinned ? &env->cpus->server : NULL,
                          env->timeout_s) != 0)
        return -1;
    j->nservers++;
    return 0;
}

int cli_job_join(cli_job_t *j)
{
    if (bench_worker_join(j->env->prog, j->addr, (int)(j->env->timeout_s * 1000), &j->w) != 0) return -1;
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = CLI_JOB_KEY;
    tp.count = j->count;
    tp.optim.type = PSERV_OPTIM_SGD;
    tp.optim.lr = 1.0f;
    j->rounds = 0;
    if (pserv_worker_register(j->w, &tp) == PSERV_OK) return 0;
    fprintf(stderr, "%s: register: %s\n", j->env->prog, pserv_worker_last_error(j->w));
    return -1;
}

int cli_job_stop(cli_job_t *j, int killed)
{
    int rc = 0;
    if (j->w) {
        pserv_worker_destroy(j->w);
        j->w = NULL;
        for (int s = 0; s < j->nservers; s++)
            if (s != killed && proc_wait(&j->server[s], j->env->timeout_s) != 0) rc = -1;
        if (proc_wait(&j->coord, j->env->timeout_s) != 0) rc = -1;
    }
    for (int s = 0; s < j->nservers; s++) proc_stop(&j->server[s], 1.0);
    proc_stop(&j->coord, 1.0);
    free(j->out);
    j->out = NULL;
    if (rc) fprintf(stderr, "%s: the job did not end cleanly\n", j->env->prog);
    return rc;
}

int cli_job_round(cli_job_t *j)
{
    pserv_request_t req;
    if (pserv_worker_push_pull(j->w, CLI_JOB_KEY, j->env->grad, j->out, &req) != PSERV_OK ||
        pserv_worker_wait(j->w, req, (int)(j->env->timeout_s * 1000)) != PSERV_OK) {
        fprintf(stderr, "%s: round %llu failed: %s\n", j->env->prog, (unsigned long long)j->rounds + 1,
                pserv_worker_last_error(j->w));
        return -1;
    }
    j->rounds++;
    return 0;
}

int cli_job_rounds(cli_job_t *j, int min, double seconds, double *took)
{
    double t0 = bench_now();
    int n = 0;
    while (n < min || bench_now() - t0 < seconds) {
        if (cli_job_round(j) != 0) return -1;
        n++;
    }
    *took = bench_now() - t0;
    return n;
}

int cli_job_check(const cli_job_t *j, const char *what)
{
    const float *grad = j->env->grad;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < j->count; i++)
        if (j->out[i] != -(float)j->rounds * grad[i] && bad++ == 0) first = i;
    if (bad == 0) return 0;
    fprintf(stderr, "%s: %s: WRONG PARAMETERS after %llu rounds: %zu of %zu differ; element %zu is %g, want %g\n",
            j->env->prog, what, (unsigned long long)j->rounds, bad, j->count, first, j->out[first],
            -(double)j->rounds * grad[first]);
    return -1;
}

double cli_job_servers_cpu_s(const cli_job_t *j)
{
    double sum = 0;
    for (int s = 0; s < j->nservers; s++) sum += proc_cpu_s(&j->server[s]);
    return sum;
}

double cli_job_median_round(const double *start, const double *end, size_t from, size_t to, double t0)
{
    double *d = malloc((to > from ? to - from : 1) * sizeof(*d));
    size_t n = 0;
    for (size_t i = from; d && i < to; i++)
        if (start[i] >= t0) d[n++] = end[i] - start[i];
    double m = n ? bench_median(d, n) : -1;
    free(d);
    return m;
}
