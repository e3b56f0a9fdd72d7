/*
 * A server shard: joins the job, then serves workers. The life cycle is here: create, the
 * job's arrival (setup), hellos, wait, stats, destroy. Receiving is in server_rx.c (progress
 * thread), the store's work in server_update.c (apply thread): see server_pipe.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "hostport.h"
#include "pinned.h"
#include "server_internal.h"

ps_server_peer_t *ps_server_greet(pserv_server_h s, ps_tp_peer_t *peer, uint32_t rank, int server)
{
    ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
    if (p != NULL && p->hello && p->rank == rank && p->server == server) return p; /* known already */
    if (p == NULL) {
        if ((p = calloc(1, sizeof(*p))) == NULL) return NULL;
        p->out_buf = -1;
        ps_tp_peer_set_ctx(peer, p);
        p->next = s->peers;
        s->peers = p;
    }
    /* The apply thread reads these fields: written once, before any of its messages is queued. */
    p->rank = rank;
    p->hello = 1;
    p->server = server;
    return p;
}

void ps_server_on_hello(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    int server = (h->flags & PS_WIRE_FLAG_SERVER) != 0;
    if (server && (h->sender >= s->m.job.num_servers || h->sender == s->store.rank)) {
        PS_STAT_ADD(s, rejected, 1);
        ps_warn("server HELLO from %s dropped: rank %u", ps_tp_peer_name(peer), h->sender);
        return;
    }
    if (!server && h->sender >= s->store.num_workers) {
        ps_server_reject(s, peer, h, PSERV_ERR_INVALID_ARG, "worker rank out of range");
        return;
    }
    const ps_server_peer_t *p = ps_tp_peer_get_ctx(peer);
    if (p != NULL && p->hello && (p->rank != h->sender || p->server != server)) {
        PS_STAT_ADD(s, rejected, 1);
        ps_warn("HELLO from %s dropped: it greeted us as %s %u already", ps_tp_peer_name(peer),
                p->server ? "server" : "worker", p->rank);
        return;
    }
    p = ps_server_greet(s, peer, h->sender, server);
    if (!server) /* a primary expects no answer */
        ps_reply_status(peer, h, PS_MSG_HELLO_REPLY, s->store.rank, p ? PSERV_OK : PSERV_ERR_NO_MEMORY);
}

/* Slots: a chunk's message each (a REGISTER's is the largest): 8 per worker in flight and 16 more,
 * within 64 MiB of pinned memory (and at least 4). */
#define PS_PIPE_SLOT_BUDGET ((size_t)64 << 20)
#define PS_PIPE_MAX_SLOTS 1024

/* The shard cannot serve this job: it ends (pserv_server_wait returns), so the coordinator sees it go. */
static void ps_server_setup_failed(pserv_server_h s, const char *what)
{
    free(s->live_node);
    s->live_node = NULL;
    pthread_mutex_lock(&s->m.lock);
    snprintf(s->m.last_error, sizeof(s->m.last_error), "cannot set up the shard: %s", what);
    __atomic_store_n(&s->m.aborted, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&s->m.cond);
    pthread_mutex_unlock(&s->m.lock);
    ps_error("cannot set up the shard: %s", what);
}

void ps_server_setup(pserv_server_h s)
{
    ps_store_init(&s->store, s->m.tp, &s->m.job, s->m.rank);
    s->store.idle = ps_server_chunk_idle;
    s->store.idle_arg = s;
    s->setup_done = 1; /* once, whatever the outcome */
    if ((s->live_node = calloc(s->m.job.num_nodes, 1)) == NULL) {
        ps_server_setup_failed(s, "no memory for the node groups");
        return;
    }
    ps_server_live_nodes(s, s->m.view, s->live_node, &s->num_live_nodes);
    size_t slot_bytes = s->m.job.chunk_bytes + PS_TENSOR_DESC_LEN;
    size_t slots = PS_MIN(8 * (size_t)s->m.job.num_workers + 16, PS_MAX(PS_PIPE_SLOT_BUDGET / slot_bytes, 4));
    if (ps_pipe_start(&s->pipe, (uint32_t)PS_MIN(slots, PS_PIPE_MAX_SLOTS), slot_bytes, s->m.progress.spin_ns,
                      ps_server_run, s) < 0) {
        ps_server_setup_failed(s, "no memory or thread for the apply pipeline");
        return;
    }
    if (ps_server_batch_init(s, s->pipe.slot_bytes) < 0) {
        ps_server_setup_failed(s, "no memory for the batch buffers");
        return;
    }
    /* By server rank, for every server the job may have: servers join a running job, and a
     * connection's context is its slot here (it never moves). */
    s->replicas.peer = calloc(PS_VIEW_MAX_SERVERS, sizeof(*s->replicas.peer));
    s->replicas.ctx = calloc(PS_VIEW_MAX_SERVERS, sizeof(*s->replicas.ctx));
    if (s->replicas.peer == NULL || s->replicas.ctx == NULL) {
        ps_server_setup_failed(s, "no memory for the replicas' connections");
        return;
    }
    if (ps_server_ckpt_start(s) < 0) {
        ps_server_setup_failed(s, "no thread for the checkpoint writer");
        return;
    }
    s->ready = 1;
    for (size_t i = 0; i < s->nparked; i++) ps_server_on_hello(s, s->parked[i].peer, &s->parked[i].hdr);
    free(s->parked);
    s->parked = NULL;
    s->nparked = 0;
    ps_server_say_ready(s); /* a server that joined a running job may take chunks now */
}

void ps_server_say_ready(pserv_server_h s)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_READY);
    h.sender = s->m.rank;
    if (ps_member_notify(&s->m, &h, NULL, 0) < 0) ps_warn("set up, but the coordinator is not there to hear it");
}

void ps_server_park_hello(pserv_server_h s, ps_tp_peer_t *peer, const ps_wire_hdr_t *h)
{
    ps_parked_hello_t *p = realloc(s->parked, (s->nparked + 1) * sizeof(*p));
    if (p == NULL) {
        ps_reply_status(peer, h, PS_MSG_HELLO_REPLY, UINT32_MAX, PSERV_ERR_NO_MEMORY);
        return;
    }
    s->parked = p;
    s->parked[s->nparked++] = (ps_parked_hello_t){peer, *h};
}

/* The address workers use: the listen host, or this host's name when listening on any. */
static void ps_server_advertised(pserv_server_h s, const char *listen, char out[PS_ADDR_MAX])
{
    char host[PS_HOST_MAX] = "127.0.0.1";
    uint16_t port;
    ps_hostport_parse(listen, 0, host, &port);
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) gethostname(host, sizeof(host) - 1);
    snprintf(out, PS_ADDR_MAX, "%s:%u", host, ps_tp_listen_port(s->m.tp));
}

pserv_status_t pserv_server_create(const pserv_server_params_t *params, pserv_server_h *server)
{
    char advertised[PS_ADDR_MAX];
    pserv_status_t st;

    PS_CHECK_ARG(params && server && params->size >= sizeof(pserv_server_params_t) && params->coordinator);
    pserv_server_h s = calloc(1, sizeof(*s));
    if (s == NULL) return PSERV_ERR_NO_MEMORY;
    s->stats.size = sizeof(s->stats);
    const char *listen = params->listen ? params->listen : "127.0.0.1:0";
    if ((st = ps_pool_create(params->threads ? params->threads : 1, &s->pool)) < 0) goto err_free;
    ps_tp_handler_t handler = {.arg = s, .rx_buffer = ps_server_rx_buffer, .rx = ps_server_rx,
                               .rx_abort = ps_server_rx_abort, .peer_failed = ps_server_peer_failed};
    ps_member_hooks_t hooks = {.arg = s, .view_changed = ps_server_view_changed, .aborted = ps_server_aborted,
                               .rejoined = ps_server_rejoined, .checkpoint_at = ps_server_checkpoint_at};
    if ((st = ps_member_init(&s->m, PS_ROLE_SERVER, params->coordinator, listen, &handler, &hooks)) < 0) goto err_pool;
    ps_server_advertised(s, listen, advertised);
    st = ps_member_join(&s->m, advertised, NULL, NULL, -1,
                        params->timeout_ms ? params->timeout_ms : PS_DEFAULT_TIMEOUT_MS);
    if (st < 0) goto err_member;
    ps_info("server %u serving at %s", s->m.rank, advertised);
    *server = s;
    return PSERV_OK;

err_member:
    ps_member_fini(&s->m);
err_pool:
    ps_pool_destroy(s->pool);
err_free:
    free(s->parked);
    free(s);
    return st;
}

pserv_status_t pserv_server_rank(pserv_server_h server, unsigned *rank)
{
    PS_CHECK_ARG(server && rank);
    *rank = server->m.rank;
    return PSERV_OK;
}

pserv_status_t pserv_server_wait(pserv_server_h server, int timeout_ms)
{
    ps_deadline_t deadline;
    PS_CHECK_ARG(server);
    ps_deadline_set(&deadline, timeout_ms);
    pthread_mutex_lock(&server->m.lock);
    /* A lost coordinator is waited for (it may be restarted): the member gives up after a while. */
    while (!server->m.shutdown && !server->m.aborted)
        if (ps_cond_wait(&server->m.cond, &server->m.lock, &deadline) == PSERV_ERR_TIMED_OUT) break;
    pserv_status_t st = server->m.shutdown  ? PSERV_OK
                        : server->m.aborted ? PSERV_ERR_JOB_FAILED
                                            : PSERV_ERR_TIMED_OUT;
    pthread_mutex_unlock(&server->m.lock);
    return st;
}

pserv_status_t pserv_server_stats(pserv_server_h server, pserv_server_stats_t *stats)
{
    PS_CHECK_ARG(server && stats && stats->size >= sizeof(*stats));
    stats->pushes = __atomic_load_n(&server->stats.pushes, __ATOMIC_RELAXED);
    stats->pulls = __atomic_load_n(&server->stats.pulls, __ATOMIC_RELAXED);
    stats->steps = __atomic_load_n(&server->stats.steps, __ATOMIC_RELAXED);
    stats->bytes_in = __atomic_load_n(&server->stats.bytes_in, __ATOMIC_RELAXED);
    stats->bytes_out = __atomic_load_n(&server->stats.bytes_out, __ATOMIC_RELAXED);
    stats->rejected = __atomic_load_n(&server->stats.rejected, __ATOMIC_RELAXED);
    stats->messages_in = __atomic_load_n(&server->stats.messages_in, __ATOMIC_RELAXED);
    stats->batches_in = __atomic_load_n(&server->stats.batches_in, __ATOMIC_RELAXED);
    stats->batches_out = __atomic_load_n(&server->stats.batches_out, __ATOMIC_RELAXED);
    stats->checkpoints = __atomic_load_n(&server->stats.checkpoints, __ATOMIC_RELAXED);
    stats->checkpoint_bytes = __atomic_load_n(&server->stats.checkpoint_bytes, __ATOMIC_RELAXED);
    stats->checkpoint_pause_ns = __atomic_load_n(&server->stats.checkpoint_pause_ns, __ATOMIC_RELAXED);
    stats->checkpoint_write_ns = __atomic_load_n(&server->stats.checkpoint_write_ns, __ATOMIC_RELAXED);
    stats->checkpoints_skipped = __atomic_load_n(&server->stats.checkpoints_skipped, __ATOMIC_RELAXED);
    stats->replicated_bytes = __atomic_load_n(&server->stats.replicated_bytes, __ATOMIC_RELAXED);
    stats->replica_updates = __atomic_load_n(&server->stats.replica_updates, __ATOMIC_RELAXED);
    stats->state_transfers = __atomic_load_n(&server->stats.state_transfers, __ATOMIC_RELAXED);
    stats->chunks = __atomic_load_n(&server->store.chunks, __ATOMIC_RELAXED);
    stats->chunks_freed = __atomic_load_n(&server->store.freed, __ATOMIC_RELAXED);
    return PSERV_OK;
}

const char *pserv_server_last_error(pserv_server_h server)
{
    return server ? server->m.last_error : "";
}

pserv_status_t pserv_server_destroy(pserv_server_h server)
{
    if (server == NULL) return PSERV_OK;
    ps_server_ckpt_drain(server); /* checkpoints being written are reported while the transport is up */
    ps_member_stop(&server->m); /* no handler runs after this */
    ps_pipe_stop(&server->pipe); /* nor any work of the apply thread */
    ps_server_ckpt_stop(server);  /* writes the state a well-ended job finished with */
    ps_server_ckpt_fini(server);
    if (server->setup_done) ps_store_fini(&server->store); /* deregisters its memory: transport still up */
    ps_member_fini(&server->m);
    ps_server_batch_fini(server); /* after the transport: no send of a reply batch is in flight */
    while (server->peers) {
        ps_server_peer_t *next = server->peers->next;
        free(server->peers);
        server->peers = next;
    }
    free(server->parked);
    free(server->live_node);
    free(server->roles);
    free(server->replicas.peer); /* the peers went with the transport */
    free(server->replicas.ctx);
    ps_pool_destroy(server->pool);
    free(server);
    return PSERV_OK;
}
