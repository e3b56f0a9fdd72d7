/*
 * A job inside one process (pserv_local_*): a coordinator and its server shards. A shard's
 * pserv_server_create blocks until the whole job has joined, so each shard joins on a thread of
 * its own; the thread ends when that create returns (the shard then runs on its transport's
 * progress thread) and is joined at destroy.
 *
 * Bounds: a shard that is still joining when the coordinator goes away does not fail at once
 * (ps_member_join retries an unreachable coordinator until its deadline), so the shards'
 * timeout_ms, counted from pserv_local_create, is what bounds destroy when the job never formed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "deadline.h"
#include "member.h"
#include "pserv/pserv.h"

/* After a clean end the coordinator's SHUTDOWN is on its way to every shard: give it this long
 * even when the caller's deadline is spent. */
#define PS_LOCAL_SHUTDOWN_MS 1000

typedef struct {
    pserv_local_h local;
    pthread_t thread;
    int started;
    int joined;            /* its create returned: st, server and error are final */
    pserv_status_t st;
    pserv_server_h server; /* owned by the job; NULL unless st == PSERV_OK */
    char error[256];       /* the shard thread's pserv_last_error() when create failed */
} ps_local_shard_t;

struct pserv_local {
    pserv_coordinator_h coord;
    char addr[32]; /* "127.0.0.1:PORT" */
    pserv_server_params_t server_params;
    unsigned num_servers, num_workers;
    int timeout_ms; /* the shards' */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a shard's create returned */
    unsigned joined;     /* shards whose create returned */
    ps_local_shard_t shards[];
};

static void *ps_local_shard_main(void *arg)
{
    ps_local_shard_t *sh = arg;
    pserv_local_h l = sh->local;
    pserv_server_h server = NULL;
    pserv_status_t st = pserv_server_create(&l->server_params, &server);
    pthread_mutex_lock(&l->lock);
    sh->st = st;
    sh->server = st == PSERV_OK ? server : NULL;
    if (st < 0) snprintf(sh->error, sizeof(sh->error), "%s", pserv_last_error());
    sh->joined = 1;
    l->joined++;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

/* Waits for every started shard thread and destroys the shards that joined. The coordinator
 * must be gone or the job over, or a thread may wait for its full timeout. */
static void ps_local_reap(pserv_local_h l)
{
    for (unsigned i = 0; i < l->num_servers; i++) {
        ps_local_shard_t *sh = &l->shards[i];
        if (!sh->started) continue;
        pthread_join(sh->thread, NULL);
        sh->started = 0;
        pserv_server_destroy(sh->server);
        sh->server = NULL;
    }
}

static pserv_status_t ps_local_invalid(const char *why)
{
    ps_set_last_error("pserv_local_create: %s", why);
    return PSERV_ERR_INVALID_ARG;
}

pserv_status_t pserv_local_create(const pserv_local_params_t *params, pserv_local_h *local)
{
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_server_params_t sp = PSERV_SERVER_PARAMS_INIT;
    uint16_t port = 0;
    pserv_status_t st;

    if (params == NULL || local == NULL) return ps_local_invalid("params and the output handle are required");
    if (params->size < sizeof(*params))
        return ps_local_invalid("params->size is below sizeof(pserv_local_params_t) (use PSERV_LOCAL_PARAMS_INIT)");
    if (params->num_workers == 0) return ps_local_invalid("num_workers must be at least 1");
    if (params->mode != PSERV_MODE_SYNC && params->mode != PSERV_MODE_ASYNC)
        return ps_local_invalid("mode is neither PSERV_MODE_SYNC nor PSERV_MODE_ASYNC");
    /* A shard that waits forever would make destroy unbounded when the job never forms. */
    if (params->timeout_ms < 0) return ps_local_invalid("timeout_ms must be >= 0 (0: the default)");

    unsigned n = params->num_servers ? params->num_servers : 1;
    pserv_local_h l = calloc(1, sizeof(*l) + n * sizeof(l->shards[0]));
    if (l == NULL) {
        ps_set_last_error("pserv_local_create: no memory for %u shards", n);
        return PSERV_ERR_NO_MEMORY;
    }
    l->num_servers = n;
    l->num_workers = params->num_workers;
    l->timeout_ms = params->timeout_ms ? params->timeout_ms : PS_DEFAULT_TIMEOUT_MS;

    cp.num_servers = n;
    cp.num_workers = params->num_workers;
    cp.mode = params->mode;
    cp.chunk_bytes = params->chunk_bytes;
    cp.checkpoint_dir = params->checkpoint_dir;
    cp.checkpoint_every = params->checkpoint_every;
    cp.checkpoint_every_ms = params->checkpoint_every_ms;
    cp.resume_dir = params->resume_dir;
    cp.replicas = params->replicas;
    ps_set_last_error("%s", "");
    st = pserv_coordinator_create(&cp, &l->coord);
    if (st < 0) {
        if (pserv_last_error()[0] == '\0')
            ps_set_last_error("pserv_local_create: cannot start a coordinator for %u servers and %u workers: %s", n,
                              params->num_workers, pserv_strerror(st));
        goto err_free;
    }
    pserv_coordinator_port(l->coord, &port);
    snprintf(l->addr, sizeof(l->addr), "127.0.0.1:%u", (unsigned)port);

    sp.coordinator = l->addr;
    sp.threads = params->server_threads;
    sp.timeout_ms = l->timeout_ms;
    l->server_params = sp;
    st = PSERV_ERR_NO_RESOURCE;
    if (pthread_mutex_init(&l->lock, NULL) != 0) goto err_destroy_coord;
    PS_CHECK_GOTO(ps_cond_init(&l->cond), st, err_destroy_lock);

    for (unsigned i = 0; i < n; i++) {
        ps_local_shard_t *sh = &l->shards[i];
        sh->local = l;
        if (pthread_create(&sh->thread, NULL, ps_local_shard_main, sh) != 0) {
            st = PSERV_ERR_NO_RESOURCE;
            ps_set_last_error("pserv_local_create: cannot start the thread of shard %u of %u", i, n);
            goto err_reap;
        }
        sh->started = 1;
    }
    *local = l;
    return PSERV_OK;

err_reap:
    /* The job cannot form without the missing shard; the others give up at their timeout. */
    pserv_coordinator_destroy(l->coord);
    l->coord = NULL;
    ps_local_reap(l);
    pthread_cond_destroy(&l->cond);
err_destroy_lock:
    pthread_mutex_destroy(&l->lock);
err_destroy_coord:
    pserv_coordinator_destroy(l->coord);
err_free:
    free(l);
    return st;
}

const char *pserv_local_coordinator(pserv_local_h local)
{
    return local ? local->addr : "";
}

pserv_status_t pserv_local_server(pserv_local_h local, unsigned index, int timeout_ms, pserv_server_h *server)
{
    ps_deadline_t deadline;
    pserv_status_t st;

    if (local == NULL || server == NULL || index >= local->num_servers) {
        ps_set_last_error("pserv_local_server: no job, no output handle, or shard %u of %u", index,
                          local ? local->num_servers : 0);
        return PSERV_ERR_INVALID_ARG;
    }
    ps_local_shard_t *sh = &local->shards[index];
    ps_deadline_set(&deadline, timeout_ms);
    pthread_mutex_lock(&local->lock);
    while (!sh->joined && ps_cond_wait(&local->cond, &local->lock, &deadline) == PSERV_OK) {
    }
    if (!sh->joined) {
        st = PSERV_ERR_TIMED_OUT;
        ps_set_last_error("shard %u has not joined within %d ms: the job has not formed (%u workers must join %s)",
                          index, timeout_ms, local->num_workers, local->addr);
    } else if (sh->st < 0) {
        st = sh->st;
        ps_set_last_error("shard %u: %s", index, sh->error);
    } else {
        st = PSERV_OK;
        *server = sh->server;
    }
    pthread_mutex_unlock(&local->lock);
    return st;
}

pserv_status_t pserv_local_destroy(pserv_local_h local, int timeout_ms)
{
    ps_deadline_t deadline;
    pserv_status_t st = PSERV_OK;
    char why[384] = "";
    unsigned failed;

    if (local == NULL) return PSERV_OK;
    ps_deadline_set(&deadline, timeout_ms);
    /* The job formed when every shard's create returned PSERV_OK; a create returns only then or
     * at the shard's timeout, so this wait is bounded either way. */
    pthread_mutex_lock(&local->lock);
    while (local->joined < local->num_servers &&
           ps_cond_wait(&local->cond, &local->lock, &deadline) == PSERV_OK) {
    }
    for (failed = 0; failed < local->num_servers; failed++)
        if (local->shards[failed].joined && local->shards[failed].st < 0) break;
    int formed = local->joined == local->num_servers && failed == local->num_servers;
    if (!formed && failed < local->num_servers) {
        st = local->shards[failed].st;
        snprintf(why, sizeof(why), "the job never formed: shard %u: %s", failed, local->shards[failed].error);
    } else if (!formed) {
        st = PSERV_ERR_TIMED_OUT;
        snprintf(why, sizeof(why), "the job did not form within %d ms: fewer than %u workers joined %s", timeout_ms,
                 local->num_workers, local->addr);
    }
    pthread_mutex_unlock(&local->lock);

    if (formed) {
        st = pserv_coordinator_wait(local->coord, ps_deadline_left_ms(&deadline));
        if (st == PSERV_ERR_TIMED_OUT)
            snprintf(why, sizeof(why), "the job did not end within %d ms: a worker has not left", timeout_ms);
        else if (st < 0)
            snprintf(why, sizeof(why), "the job ended with an error: %s", pserv_strerror(st));
        int left = ps_deadline_left_ms(&deadline);
        int shutdown_ms = st < 0 ? 0 : left < 0 ? -1 : PS_MAX(left, PS_LOCAL_SHUTDOWN_MS);
        for (unsigned i = 0; i < local->num_servers; i++) {
            pserv_status_t sst = pserv_server_wait(local->shards[i].server, shutdown_ms);
            if (st == PSERV_OK && sst < 0) {
                st = sst;
                snprintf(why, sizeof(why), "shard %u did not see the end of the job: %s", i, pserv_strerror(sst));
            }
        }
    }
    /* A job that formed: the shards close first, as the coordinator's destroy waits for the
     * servers it told to end. One that did not: the coordinator goes first, so no late worker can
     * form it, and the shards still joining give up. */
    if (formed) ps_local_reap(local);
    pserv_coordinator_destroy(local->coord);
    if (!formed) ps_local_reap(local);
    pthread_cond_destroy(&local->cond);
    pthread_mutex_destroy(&local->lock);
    free(local);
    if (st < 0) ps_set_last_error("%s", why);
    return st;
}
