/*
 * A worker: joins the job, says hello to every server shard, registers tensors (placed by the
 * coordinator in the cluster view, then defined on their owners), and takes part in barriers.
 * The data path (push, pull) is in worker_request.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "check.h"
#include "hostport.h"
#include "optim_params.h"
#include "worker_internal.h"

#define PS_WORKER_MAX_REQUESTS 65536
#define PS_LEAVE_TIMEOUT_MS 5000

/* Waits for a request issued by the worker itself (hello, register). */
static pserv_status_t ps_worker_await(pserv_worker_h w, uint64_t id, int timeout_ms, const char *what)
{
    pserv_status_t st = pserv_worker_wait(w, id, timeout_ms);
    if (st < 0) ps_member_error(&w->m, st, "%s failed: %s", what, pserv_strerror(st));
    return st;
}

/* Opens the connection to server s (lock held); fails on a bad address or a transport error. */
static pserv_status_t ps_worker_connect_one(pserv_worker_h w, uint32_t s)
{
    char host[PS_HOST_MAX];
    uint16_t port;
    ps_tp_peer_t *peer;
    if (ps_hostport_parse(w->m.job.servers[s], 0, host, &port) < 0)
        return ps_member_error(&w->m, PSERV_ERR_BAD_MESSAGE, "server %u has a bad address '%s'", s, w->m.job.servers[s]);
    if (ps_tp_connect(w->m.tp, host, port, &peer) < 0)
        return ps_member_error(&w->m, PSERV_ERR_UNREACHABLE, "cannot reach server %u at %s", s, w->m.job.servers[s]);
    w->servers[s] = peer;
    return PSERV_OK;
}

static void ps_worker_hello(pserv_worker_h w, uint64_t id, uint32_t s)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_HELLO);
    h.sender = w->m.rank;
    h.req_id = id;
    h.map_version = w->m.view->version;
    if (id != 0) ps_worker_req_send(w, id, s, &h, NULL, 0, NULL, NULL);
    else ps_send_msg(w->servers[s], &h, NULL, 0, NULL, NULL, NULL); /* its reply (id 0): ps_worker_greeted */
}

void ps_worker_connect_new(pserv_worker_h w)
{
    if (w->servers == NULL || w->num_connected == 0) return; /* the first connections are being made */
    for (uint32_t s = w->num_connected; s < w->m.job.num_servers; s++) {
        if (ps_worker_connect_one(w, s) < 0) {
            ps_warn("server %u joined the job, but: %s", s, w->m.last_error);
            w->server_failed[s] = 1;
            continue;
        }
        ps_worker_hello(w, 0, s);
        ps_info("connected to server %u at %s, which joined the job", s, w->m.job.servers[s]);
    }
    w->num_connected = w->m.job.num_servers;
}

static pserv_status_t ps_worker_connect_servers(pserv_worker_h w, int timeout_ms)
{
    uint64_t id;
    pserv_status_t st = PSERV_OK;

    /* Sized and published under the lock: the progress thread's hooks look at them (and grow
     * them when servers join meanwhile). */
    pthread_mutex_lock(&w->m.lock);
    uint32_t n = w->m.job.num_servers;
    w->servers = calloc(n, sizeof(*w->servers));
    w->server_failed = calloc(n, sizeof(*w->server_failed));
    w->server_greeted = calloc(n, sizeof(*w->server_greeted));
    if (w->servers == NULL || w->server_failed == NULL || w->server_greeted == NULL) st = PSERV_ERR_NO_MEMORY;
    for (uint32_t s = 0; st == PSERV_OK && s < n; s++) st = ps_worker_connect_one(w, s);
    if (st == PSERV_OK) st = ps_worker_req_alloc(w, PS_MSG_HELLO, NULL, NULL, &id);
    for (uint32_t s = 0; st == PSERV_OK && s < n; s++) ps_worker_hello(w, id, s);
    pthread_mutex_unlock(&w->m.lock);
    if (st < 0) return st;
    if ((st = ps_worker_await(w, id, timeout_ms, "saying hello to the servers")) < 0) return st;
    pthread_mutex_lock(&w->m.lock);
    for (uint32_t s = 0; s < n; s++) w->server_greeted[s] = 1; /* every one answered */
    w->num_connected = n;
    ps_worker_connect_new(w); /* servers that joined while we said hello */
    pthread_mutex_unlock(&w->m.lock);
    return PSERV_OK;
}

pserv_status_t pserv_worker_create(const pserv_worker_params_t *params, pserv_worker_h *worker)
{
    pserv_status_t st;
    PS_CHECK_ARG(params && worker && params->size >= sizeof(pserv_worker_params_t) && params->coordinator);
    PS_CHECK_ARG(params->max_requests <= PS_WORKER_MAX_REQUESTS);
    int timeout = params->timeout_ms ? params->timeout_ms : PS_DEFAULT_TIMEOUT_MS;

    pserv_worker_h w = calloc(1, sizeof(*w));
    if (w == NULL) return PSERV_ERR_NO_MEMORY;
    w->stats.size = sizeof(w->stats);
    ps_keymap_init(&w->tensors);
    ps_tp_handler_t handler = {.arg = w, .rx_buffer = ps_worker_rx_buffer, .rx = ps_worker_rx,
                               .rx_abort = ps_worker_rx_abort, .peer_failed = ps_worker_peer_failed};
    ps_member_hooks_t hooks = {.arg = w, .aborted = ps_worker_aborted, .view_changed = ps_worker_view_changed,
                               .servers_added = ps_worker_servers_added};
    if ((st = ps_member_init(&w->m, PS_ROLE_WORKER, params->coordinator, NULL, &handler, &hooks)) < 0) goto err_free;
    w->spin_ns = w->m.progress.spin_ns;
    if (params->node && strlen(params->node) >= PS_NODE_MAX) {
        st = ps_member_error(&w->m, PSERV_ERR_INVALID_ARG, "node group name longer than %d bytes", PS_NODE_MAX - 1);
        goto err_member;
    }
    if (params->settings && strlen(params->settings) >= PS_SETTINGS_MAX) {
        st = ps_member_error(&w->m, PSERV_ERR_INVALID_ARG, "job settings longer than %d bytes", PS_SETTINGS_MAX - 1);
        goto err_member;
    }
    if (params->rejoin) w->m.join_flags = PS_WIRE_FLAG_REJOIN; /* a dead worker's place in a running job */
    if ((st = ps_member_join(&w->m, NULL, params->node, params->settings, -1, timeout)) < 0) goto err_member;
    w->barrier_seq = w->m.rejoin_round = w->m.join_round; /* a rejoining worker meets the job there */
    w->share_index = w->m.rank;
    w->share_count = w->m.job.num_workers;
    pthread_mutex_lock(&w->m.lock);
    st = ps_worker_reqs_init(w, params->max_requests ? params->max_requests : 1024);
    pthread_mutex_unlock(&w->m.lock);
    if (st < 0) goto err_member;
    if ((st = ps_worker_connect_servers(w, timeout)) < 0) goto err_member;
    ps_info("worker %u joined: %u servers, %u workers", w->m.rank, w->m.job.num_servers, w->m.job.num_workers);
    *worker = w;
    return PSERV_OK;

err_member:
    ps_member_fini(&w->m);
    ps_worker_reqs_fini(w);
    free(w->servers);
    free(w->server_failed);
    free(w->server_greeted);
err_free:
    free(w);
    return st;
}

pserv_status_t pserv_worker_job(pserv_worker_h worker, pserv_job_info_t *info)
{
    PS_CHECK_ARG(worker && info && info->size >= sizeof(*info));
    info->rank = worker->m.rank;
    info->num_workers = worker->m.job.num_workers;
    info->mode = worker->m.job.mode;
    info->chunk_bytes = worker->m.job.chunk_bytes;
    pthread_mutex_lock(&worker->m.lock);
    info->num_servers = worker->m.job.num_servers; /* servers may join */
    info->map_version = worker->m.view->version;
    pthread_mutex_unlock(&worker->m.lock);
    info->node = worker->m.job.worker_node[worker->m.rank];
    info->num_nodes = worker->m.job.num_nodes;
    ps_job_node_of(&worker->m.job, worker->m.rank, &info->local_rank, &info->local_size);
    info->resume_round = worker->m.job.resume_round;
    info->next_barrier = worker->m.join_round;
    return PSERV_OK;
}

pserv_status_t pserv_worker_node_broadcast(pserv_worker_h worker, void *buf, size_t len, int timeout_ms)
{
    PS_CHECK_ARG(worker && (buf || len == 0));
    if (len > PSERV_NODE_BROADCAST_MAX)
        return ps_member_error(&worker->m, PSERV_ERR_INVALID_ARG, "node broadcast of %zu bytes (at most %d)", len,
                               PSERV_NODE_BROADCAST_MAX);
    ps_ctl_reply_t reply = {.buf = buf, .cap = len};
    pserv_status_t st = ps_member_call_data(&worker->m, PS_MSG_NODE_BCAST, 0, worker->bcast_seq, buf, len, &reply,
                                            timeout_ms);
    if (st == PSERV_OK && reply.len != len) st = PSERV_ERR_BAD_MESSAGE;
    if (st < 0) ps_member_error(&worker->m, st, "node broadcast %llu failed", (unsigned long long)worker->bcast_seq);
    if (reply.answered) { /* every answer, a refusal too, names the group's next broadcast */
        worker->bcast_seq = reply.round;
        pthread_mutex_lock(&worker->m.lock);
        worker->m.rejoin_bcast = worker->bcast_seq; /* reported to a restarted coordinator */
        pthread_mutex_unlock(&worker->m.lock);
    }
    return st;
}

/* One REGISTER message: the descriptor, then the chunk's initial values. Freed when sent. */
static void *ps_worker_register_payload(const pserv_tensor_params_t *p, const ps_tensor_desc_t *desc,
                                        const ps_layout_t *l, uint32_t c, size_t *len)
{
    size_t n = ps_layout_chunk_len(l, c), off = ps_layout_chunk_offset(l, c);
    uint8_t *buf = malloc(PS_TENSOR_DESC_LEN + n * l->elem_size);
    if (buf == NULL) return NULL;
    ps_writer_t wr;
    ps_writer_init(&wr, buf, PS_TENSOR_DESC_LEN);
    ps_tensor_desc_encode(desc, &wr);
    float *values = (float *)(void *)(buf + PS_TENSOR_DESC_LEN);
    if (p->init)
        memcpy(values, (const uint8_t *)p->init + off * l->elem_size, n * l->elem_size);
    else
        for (size_t i = 0; i < n; i++) values[i] = p->init_value;
    *len = PS_TENSOR_DESC_LEN + n * l->elem_size;
    return buf;
}

/* Asks the coordinator to place the tensor (or check it against the first registration) and
 * waits until the view that has it is installed. */
static pserv_status_t ps_worker_place(pserv_worker_h w, uint64_t key, const ps_tensor_desc_t *desc,
                                      const ps_deadline_t *deadline)
{
    uint8_t payload[8 + PS_TENSOR_DESC_LEN];
    char why[PS_WIRE_REASON_MAX + 1] = "";
    ps_writer_t wr;
    ps_writer_init(&wr, payload, sizeof(payload));
    ps_put_u64(&wr, key);
    ps_tensor_desc_encode(desc, &wr);
    ps_ctl_reply_t reply = {.buf = why, .cap = sizeof(why) - 1};
    pserv_status_t st =
        ps_member_call_data(&w->m, PS_MSG_TENSOR, 0, 0, payload, wr.len, &reply, ps_deadline_left_ms(deadline));
    if (st < 0) {
        why[reply.len < sizeof(why) - 1 ? reply.len : sizeof(why) - 1] = '\0';
        return ps_member_error(&w->m, st, "tensor %llu: %s", (unsigned long long)key,
                               why[0] ? why : pserv_strerror(st));
    }
    pthread_mutex_lock(&w->m.lock);
    st = ps_member_wait_view(&w->m, (uint32_t)reply.round, deadline);
    pthread_mutex_unlock(&w->m.lock);
    if (st < 0) return ps_member_error(&w->m, st, "tensor %llu: view %llu never arrived", (unsigned long long)key,
                                       (unsigned long long)reply.round);
    return PSERV_OK;
}

/* A chunk's REGISTER goes to each of its owners (primary and backups: every copy starts from the
 * same values); payload is freed once every send is done. */
typedef struct {
    void *payload;
    uint32_t refs;
} ps_shared_payload_t;

static void ps_shared_payload_done(void *arg, pserv_status_t status)
{
    ps_shared_payload_t *sp = arg;
    (void)status;
    if (__atomic_sub_fetch(&sp->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    free(sp->payload);
    free(sp);
}

static void ps_worker_define_chunk(pserv_worker_h w, uint64_t id, const ps_wire_hdr_t *h, void *payload, size_t len)
{
    uint32_t owners[PS_VIEW_MAX_REPLICAS + 1], n = 0;
    const ps_view_tensor_t *vt = ps_view_tensor(w->m.view, h->key);
    for (uint32_t r = 0; vt && r <= w->m.view->replicas; r++) {
        uint32_t o = vt->owners[(size_t)h->chunk * (w->m.view->replicas + 1) + r];
        int dup = 0;
        for (uint32_t k = 0; k < n && !dup; k++) dup = owners[k] == o;
        if (!dup && o < w->m.view->num_servers && ps_view_member_alive(w->m.view->server_state[o])) owners[n++] = o;
    }
    ps_shared_payload_t *sp = malloc(sizeof(*sp));
    if (sp == NULL || n == 0) {
        free(sp);
        free(payload);
        w->reqs[(uint32_t)id].status = n == 0 ? PSERV_ERR_VIEW_CHANGED : PSERV_ERR_NO_MEMORY;
        return;
    }
    *sp = (ps_shared_payload_t){payload, n};
    for (uint32_t k = 0; k < n; k++) ps_worker_req_send(w, id, owners[k], h, payload, len, ps_shared_payload_done, sp);
}

/* Sends every chunk's initial values to its owners in the installed view; lock held. */
static pserv_status_t ps_worker_define(pserv_worker_h w, const pserv_tensor_params_t *p, ps_wtensor_t *t, uint64_t *id)
{
    pserv_status_t st = ps_worker_req_alloc(w, PS_MSG_REGISTER, t, NULL, id);
    if (st < 0) return st;
    for (uint32_t c = 0; c < t->layout.num_chunks; c++) {
        size_t len = 0;
        void *payload = ps_worker_register_payload(p, &t->desc, &t->layout, c, &len);
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_REGISTER);
        h.sender = w->m.rank;
        h.req_id = *id;
        h.key = p->key;
        h.chunk = c;
        h.dtype = t->desc.dtype;
        h.offset = ps_layout_chunk_offset(&t->layout, c);
        h.length = len;
        h.map_version = w->m.view->version;
        if (payload == NULL) {
            w->reqs[(uint32_t)*id].status = PSERV_ERR_NO_MEMORY;
            break;
        }
        ps_worker_define_chunk(w, *id, &h, payload, len);
    }
    return PSERV_OK;
}

pserv_status_t pserv_worker_register(pserv_worker_h worker, const pserv_tensor_params_t *p)
{
    ps_tensor_desc_t desc;
    ps_layout_t layout;
    ps_deadline_t deadline;
    uint64_t id;
    pserv_status_t st;

    PS_CHECK_ARG(worker && p && p->size >= sizeof(pserv_tensor_params_t));
    pserv_worker_h w = worker;
    desc.count = p->count;
    desc.dtype = p->dtype ? (uint32_t)p->dtype : PSERV_DTYPE_FLOAT32;
    desc.optim = p->optim;
    if (p->count == 0 || desc.dtype != PSERV_DTYPE_FLOAT32)
        return ps_member_error(&w->m, PSERV_ERR_INVALID_ARG, "tensor %llu: count must be > 0 and dtype float32",
                               (unsigned long long)p->key);
    if (ps_optim_validate(&p->optim) < 0)
        return ps_member_error(&w->m, PSERV_ERR_INVALID_ARG, "tensor %llu: invalid optimizer parameters",
                               (unsigned long long)p->key);
    ps_deadline_set(&deadline, PS_DEFAULT_TIMEOUT_MS);
    if ((st = ps_worker_place(w, p->key, &desc, &deadline)) < 0) return st;

    pthread_mutex_lock(&w->m.lock);
    const ps_view_tensor_t *vt = ps_view_tensor(w->m.view, p->key);
    ps_wtensor_t *t = ps_keymap_get(&w->tensors, p->key);
    st = ps_layout_init(&layout, p->count, ps_dtype_size(desc.dtype), vt->chunk_elems * ps_dtype_size(desc.dtype));
    if (st < 0) goto err_unlock;
    st = PSERV_ERR_NO_MEMORY;
    if (t == NULL) {
        if ((t = calloc(1, sizeof(*t) + layout.num_chunks * sizeof(t->rounds[0]))) == NULL) goto err_unlock;
        t->key = p->key;
        t->desc = desc;
        t->layout = layout;
        if ((st = ps_keymap_put(&w->tensors, p->key, t)) < 0) {
            free(t);
            goto err_unlock;
        }
    }
    /* An owner that has not installed the view yet refuses with VIEW_CHANGED: define again. */
    for (unsigned delay_us = 200;; delay_us = delay_us < 50000 ? 2 * delay_us : delay_us) {
        if ((st = ps_worker_define(w, p, t, &id)) < 0) goto err_unlock;
        pthread_mutex_unlock(&w->m.lock);
        st = pserv_worker_wait(w, id, ps_deadline_left_ms(&deadline));
        if (st != PSERV_ERR_VIEW_CHANGED || ps_deadline_left_ms(&deadline) == 0) break;
        usleep(delay_us);
        pthread_mutex_lock(&w->m.lock);
    }
    if (st < 0) return ps_member_error(&w->m, st, "registering tensor %llu failed: %s", (unsigned long long)p->key,
                                       pserv_strerror(st));
    return PSERV_OK;

err_unlock:
    pthread_mutex_unlock(&w->m.lock);
    return ps_member_error(&w->m, st, "tensor %llu: %s", (unsigned long long)p->key, pserv_strerror(st));
}

pserv_status_t pserv_worker_barrier(pserv_worker_h worker, int timeout_ms)
{
    PS_CHECK_ARG(worker);
    ps_ctl_reply_t reply = {0};
    pserv_status_t st = ps_member_call_data(&worker->m, PS_MSG_BARRIER, 0, worker->barrier_seq, NULL, 0, &reply,
                                            timeout_ms);
    if (st == PSERV_OK) {
        worker->barrier_seq++;
        if (reply.offset > 0 && reply.chunk < reply.offset) {
            worker->share_index = reply.chunk;
            worker->share_count = (uint32_t)reply.offset;
        }
        pthread_mutex_lock(&worker->m.lock);
        worker->m.rejoin_round = worker->barrier_seq; /* a restarted coordinator's next barrier */
        pthread_mutex_unlock(&worker->m.lock);
    }
    else ps_member_error(&worker->m, st, "barrier %llu failed", (unsigned long long)worker->barrier_seq);
    return st;
}

pserv_status_t pserv_worker_share(pserv_worker_h worker, unsigned *index, unsigned *count)
{
    PS_CHECK_ARG(worker && index && count);
    *index = worker->share_index;
    *count = worker->share_count;
    return PSERV_OK;
}

pserv_status_t pserv_worker_stats(pserv_worker_h worker, pserv_worker_stats_t *stats)
{
    PS_CHECK_ARG(worker && stats && stats->size >= sizeof(*stats));
    stats->bytes_pushed = __atomic_load_n(&worker->stats.bytes_pushed, __ATOMIC_RELAXED);
    stats->bytes_pulled = __atomic_load_n(&worker->stats.bytes_pulled, __ATOMIC_RELAXED);
    stats->requests = __atomic_load_n(&worker->stats.requests, __ATOMIC_RELAXED);
    stats->errors = __atomic_load_n(&worker->stats.errors, __ATOMIC_RELAXED);
    stats->batches_sent = __atomic_load_n(&worker->stats.batches_sent, __ATOMIC_RELAXED);
    stats->batched_messages = __atomic_load_n(&worker->stats.batched_messages, __ATOMIC_RELAXED);
    stats->batches_received = __atomic_load_n(&worker->stats.batches_received, __ATOMIC_RELAXED);
    return PSERV_OK;
}

const char *pserv_worker_last_error(pserv_worker_h worker)
{
    return worker ? worker->m.last_error : "";
}

static void ps_worker_free_tensor(void *arg, void *value)
{
    (void)arg;
    free(value);
}

/* LEAVE to every server (so they take the disconnect for the normal end) and the coordinator. */
static void ps_worker_leave(pserv_worker_h worker, const char *failed)
{
    pthread_mutex_lock(&worker->m.lock);
    worker->leaving = 1;
    for (uint32_t s = 0; worker->servers && s < worker->m.job.num_servers; s++) {
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_LEAVE);
        h.sender = worker->m.rank;
        if (worker->servers[s] && !worker->server_failed[s]) ps_send_msg(worker->servers[s], &h, NULL, 0, NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&worker->m.lock);
    size_t len = failed ? strlen(failed) : 0;
    if (len > PS_WIRE_REASON_MAX) len = PS_WIRE_REASON_MAX;
    pthread_mutex_lock(&worker->m.lock);
    uint32_t flags = !failed ? 0 : worker->saw_failure ? PS_WIRE_FLAG_FAILED | PS_WIRE_FLAG_CAUSED : PS_WIRE_FLAG_FAILED;
    pthread_mutex_unlock(&worker->m.lock);
    pserv_status_t st = ps_member_call_data(&worker->m, PS_MSG_LEAVE, flags, 0, failed, len, NULL, PS_LEAVE_TIMEOUT_MS);
    if (st < 0 && st != PSERV_ERR_JOB_FAILED)
        ps_info("leaving the job: %s (the coordinator sees the disconnect)", pserv_strerror(st));
}

static void ps_worker_free(pserv_worker_h worker)
{
    ps_member_fini(&worker->m); /* no handler runs after this */
    ps_worker_reqs_fini(worker);
    ps_keymap_each(&worker->tensors, ps_worker_free_tensor, NULL);
    ps_keymap_fini(&worker->tensors);
    free(worker->servers);
    free(worker->server_failed);
    free(worker->server_greeted);
    free(worker);
}

pserv_status_t pserv_worker_destroy(pserv_worker_h worker)
{
    if (worker == NULL) return PSERV_OK;
    /* A worker that saw a member die leaves as a failure: its LEAVE must not let the coordinator
     * end the job as a success before it has heard of the death itself. */
    char why[sizeof(worker->m.last_error)];
    pthread_mutex_lock(&worker->m.lock);
    int failed = worker->saw_failure;
    snprintf(why, sizeof(why), "%s", worker->m.last_error[0] ? worker->m.last_error : "a member of the job died");
    pthread_mutex_unlock(&worker->m.lock);
    ps_worker_leave(worker, failed ? why : NULL);
    ps_worker_free(worker);
    return PSERV_OK;
}

pserv_status_t pserv_worker_abort(pserv_worker_h worker, const char *reason)
{
    if (worker == NULL) return PSERV_OK;
    ps_worker_leave(worker, reason && *reason ? reason : "aborted");
    ps_worker_free(worker);
    return PSERV_OK;
}
