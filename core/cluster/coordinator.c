/*
 * The coordinator: rendezvous of a job's servers and workers, rank assignment, the job
 * description and the first cluster view, the workers' settings, and dispatch of what members
 * send. Collectives, failures and tensor placement are in the coord_*.c files beside it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "coordinator_internal.h"
#include "progress.h"
#include "deadline.h"
#include "hostport.h"

static uint32_t ps_coord_role_size(const pserv_coordinator_h c, ps_role_t role)
{
    return role == PS_ROLE_SERVER ? c->job.num_servers : c->job.num_workers;
}

/* Ranks: wanted ranks first (when valid and unclaimed), then the rest in join order. */
static void ps_coord_assign_ranks(pserv_coordinator_h c, ps_role_t role)
{
    uint32_t n = ps_coord_role_size(c, role);
    char *taken = calloc(n, 1);
    if (taken == NULL) return; /* cannot happen for sane sizes; ranks then stay join order below */
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->role != role) continue;
        m->rank = UINT32_MAX;
        if (m->wanted_rank >= 0 && (uint32_t)m->wanted_rank < n && !taken[m->wanted_rank]) {
            m->rank = (uint32_t)m->wanted_rank;
            taken[m->rank] = 1;
        }
    }
    uint32_t next = 0;
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->role != role || m->rank != UINT32_MAX) continue;
        while (taken[next]) next++;
        m->rank = next;
        taken[next] = 1;
    }
    free(taken);
}

void ps_coord_member_name(const ps_coord_member_t *m, char *out, size_t cap)
{
    /* A server by the address workers know it by; a worker by where it connected from. */
    snprintf(out, cap, "%s %u at %s", m->role == PS_ROLE_SERVER ? "server" : "worker", m->rank,
             m->role == PS_ROLE_SERVER ? m->addr : m->peer ? ps_tp_peer_name(m->peer) : "?");
}

uint8_t *ps_coord_member_state(pserv_coordinator_h c, const ps_coord_member_t *m)
{
    return m->role == PS_ROLE_SERVER ? &c->view.server_state[m->rank] : &c->view.worker_state[m->rank];
}

void ps_coord_send_job(pserv_coordinator_h c, ps_coord_member_t *m, uint32_t flags)
{
    size_t cap = PS_JOB_FIXED_MAX + (size_t)c->job.num_servers * (PS_ADDR_MAX + 4) + (size_t)c->job.num_workers * 4 +
                 ps_view_encoded_size(&c->view);
    uint8_t *payload = malloc(cap);
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_JOIN_REPLY);
    h.flags = flags;
    h.req_id = m->join_req;
    h.round = c->barrier_seq; /* the job's next barrier (a worker joining a running job meets it there) */
    h.map_version = c->view.version;
    if (payload == NULL) {
        ps_reply_status(m->peer, &h, PS_MSG_JOIN_REPLY, 0, PSERV_ERR_NO_MEMORY);
        return;
    }
    ps_writer_t w;
    ps_writer_init(&w, payload, cap);
    ps_job_encode(&c->job, m->rank, &w);
    ps_view_encode(&c->view, &w);
    h.length = w.len;
    ps_send_msg(m->peer, &h, payload, w.len, NULL, ps_send_free_cb, payload);
}

/* Orders workers by node name, then rank: a run of one name is a group, its first the root. */
static int ps_coord_by_node(const void *a, const void *b)
{
    const ps_coord_member_t *x = *(ps_coord_member_t *const *)a, *y = *(ps_coord_member_t *const *)b;
    int c = strcmp(x->node, y->node);
    return c != 0 ? c : (x->rank > y->rank) - (x->rank < y->rank);
}

/*
 * Node groups numbered by their lowest worker rank; a worker without a node name is alone.
 * Sorting keeps this O(W log W) at start-up however many workers and groups there are.
 */
static void ps_coord_group_nodes(pserv_coordinator_h c)
{
    uint32_t W = c->job.num_workers;
    ps_coord_member_t **by_name = malloc(W * sizeof(*by_name));
    uint32_t *root = malloc(W * sizeof(*root)); /* by rank: the lowest rank of its group */
    if (by_name == NULL || root == NULL) {
        /* cannot happen for sane sizes: every worker alone is still a valid job */
        for (uint32_t r = 0; r < W; r++) c->job.worker_node[r] = r;
        c->job.num_nodes = W;
        goto out;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->capacity; i++)
        if (c->members[i].used && c->members[i].role == PS_ROLE_WORKER) by_name[n++] = &c->members[i];
    qsort(by_name, n, sizeof(*by_name), ps_coord_by_node);
    for (uint32_t i = 0; i < n; i++) {
        int same = i > 0 && by_name[i]->node[0] != '\0' && strcmp(by_name[i]->node, by_name[i - 1]->node) == 0;
        root[by_name[i]->rank] = same ? root[by_name[i - 1]->rank] : by_name[i]->rank;
    }
    /* Ranks in order: a group's number is given when its root (lowest rank) comes up. */
    c->job.num_nodes = 0;
    for (uint32_t r = 0; r < W; r++)
        c->job.worker_node[r] = root[r] == r ? c->job.num_nodes++ : c->job.worker_node[root[r]];
out:
    ps_coord_nodes_reset(c);
    free(by_name);
    free(root);
}

static void ps_coord_form(pserv_coordinator_h c)
{
    ps_coord_assign_ranks(c, PS_ROLE_SERVER);
    ps_coord_assign_ranks(c, PS_ROLE_WORKER);
    ps_coord_group_nodes(c);
    int64_t now = ps_now_ms();
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used) continue;
        if (m->role == PS_ROLE_SERVER) {
            snprintf(c->job.servers[m->rank], PS_ADDR_MAX, "%s", m->addr);
            snprintf(c->view.addrs[m->rank], PS_ADDR_MAX, "%s", m->addr);
        }
        *ps_coord_member_state(c, m) = PS_MEMBER_LIVE;
        m->last_heard_ms = now; /* silence counts from here */
    }
    c->formed = 1;
    ps_info("job formed: %u servers, %u workers in %u node groups, %s mode, %llu-byte chunks", c->job.num_servers,
            c->job.num_workers, c->job.num_nodes, c->job.mode == PSERV_MODE_SYNC ? "sync" : "async",
            (unsigned long long)c->job.chunk_bytes);
    for (uint32_t i = 0; i < c->capacity; i++)
        if (c->members[i].used) ps_coord_send_job(c, &c->members[i], 0);
}

/* The value of key in "key=value key=value ..." (length in *len), or NULL when it is not set. */
static const char *ps_coord_setting(const char *set, const char *key, size_t klen, size_t *len)
{
    for (const char *p = set; *p;) {
        p += strspn(p, " ");
        size_t n = strcspn(p, " ");
        if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            *len = n - klen - 1;
            return p + klen + 1;
        }
        p += n;
    }
    return NULL;
}

/* Checks every key of `a` against `b`; writes the first difference into why. */
static int ps_coord_settings_cover(const char *a, const char *b, int a_is_mine, char *why, size_t cap)
{
    for (const char *p = a; *p;) {
        p += strspn(p, " ");
        size_t n = strcspn(p, " "), klen = strcspn(p, "="), alen, blen = 0;
        if (n == 0) break;
        if (klen > n) klen = n;
        const char *av = klen < n ? p + klen + 1 : "", *bv = ps_coord_setting(b, p, klen, &blen);
        alen = klen < n ? n - klen - 1 : 0;
        if (bv == NULL || alen != blen || strncmp(av, bv, alen) != 0) {
            const char *mine = a_is_mine ? av : bv, *job = a_is_mine ? bv : av;
            size_t ml = a_is_mine ? alen : blen, jl = a_is_mine ? blen : alen;
            snprintf(why, cap, "setting '%.*s' differs from the job's: this worker has %.*s, the first worker %.*s",
                     (int)klen, p, (int)(mine ? ml : 5), mine ? mine : "unset", (int)(job ? jl : 5),
                     job ? job : "unset");
            return 0;
        }
        p += n;
    }
    return 1;
}

/* Workers' settings must equal the first worker's: NULL when they do, else the reason. */
const char *ps_coord_settings_differ(const char *job, const char *mine, char *why, size_t cap)
{
    if (ps_coord_settings_cover(mine, job, 1, why, cap) && ps_coord_settings_cover(job, mine, 0, why, cap))
        return NULL;
    return why;
}

void ps_coord_refuse(ps_tp_peer_t *peer, const ps_wire_hdr_t *h, ps_msg_type_t type, pserv_status_t st,
                     const char *why)
{
    size_t len = strlen(why) < PS_WIRE_REASON_MAX ? strlen(why) : PS_WIRE_REASON_MAX;
    char *copy = malloc(len + 1);
    ps_wire_hdr_t r;
    ps_wire_hdr_init(&r, type);
    r.req_id = h->req_id;
    r.key = h->key;
    r.status = st;
    if (copy == NULL) {
        ps_send_msg(peer, &r, NULL, 0, NULL, NULL, NULL);
        return;
    }
    memcpy(copy, why, len);
    ps_send_msg(peer, &r, copy, len, NULL, ps_send_free_cb, copy);
}

static void ps_coord_on_join(pserv_coordinator_h c, ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data,
                             size_t len)
{
    ps_reader_t r;
    ps_join_t *j = malloc(sizeof(*j));
    char host[PS_HOST_MAX], why[PS_WIRE_REASON_MAX];
    uint16_t port;

    if (j == NULL) {
        ps_reply_status(peer, h, PS_MSG_JOIN_REPLY, 0, PSERV_ERR_NO_MEMORY);
        return;
    }
    /* A rejoin (flagged RETRY): the JOIN body's length and the body, then the job and the view. */
    ps_reader_t rest;
    size_t body = len;
    if (h->flags & PS_WIRE_FLAG_RETRY) {
        ps_reader_init(&rest, data, len);
        body = ps_get_u32(&rest);
        if (rest.bad || body > len - 4) data = NULL;
        else data = (const uint8_t *)data + 4;
        ps_reader_init(&rest, data ? (const uint8_t *)data + body : NULL, data ? len - 4 - body : 0);
    }
    ps_reader_init(&r, data, data ? body : 0);
    if (data == NULL || ps_join_decode(&r, j) < 0) {
        c->rejected++;
        ps_warn("malformed JOIN from %s rejected", ps_tp_peer_name(peer));
        ps_reply_status(peer, h, PS_MSG_JOIN_REPLY, 0, PSERV_ERR_BAD_MESSAGE);
        goto out;
    }
    ps_role_t role = j->role;
    if ((h->flags & PS_WIRE_FLAG_REJOIN) && ps_tp_peer_get_ctx(peer) == NULL) {
        ps_coord_on_worker_rejoin(c, peer, h, j);
        goto out;
    }
    if ((h->flags & PS_WIRE_FLAG_RETRY) && ps_tp_peer_get_ctx(peer) == NULL) {
        ps_coord_on_rejoin(c, peer, h, j, &rest); /* its job and view follow the JOIN body */
        goto out;
    }
    if (role == PS_ROLE_SERVER && c->formed && ps_tp_peer_get_ctx(peer) == NULL) {
        ps_coord_on_server_join(c, peer, h, j);
        goto out;
    }
    if (ps_tp_peer_get_ctx(peer) != NULL || c->formed || c->joined[role] >= ps_coord_role_size(c, role)) {
        ps_warn("JOIN from %s refused: the job is full or already formed", ps_tp_peer_name(peer));
        ps_coord_refuse(peer, h, PS_MSG_JOIN_REPLY, PSERV_ERR_NO_RESOURCE, "the job is full or already formed");
        goto out;
    }
    if (role == PS_ROLE_SERVER && (ps_hostport_parse(j->addr, 0, host, &port) < 0 || port == 0)) {
        ps_warn("JOIN from %s refused: bad server address '%s'", ps_tp_peer_name(peer), j->addr);
        ps_coord_refuse(peer, h, PS_MSG_JOIN_REPLY, PSERV_ERR_INVALID_ARG, "bad server address");
        goto out;
    }
    if (role == PS_ROLE_WORKER && c->have_settings && ps_coord_settings_differ(c->settings, j->settings, why, sizeof(why))) {
        ps_warn("worker at %s refused: %s", ps_tp_peer_name(peer), why);
        ps_coord_refuse(peer, h, PS_MSG_JOIN_REPLY, PSERV_ERR_MISMATCH, why);
        goto out;
    }
    ps_coord_member_t *m = NULL;
    for (uint32_t i = 0; i < c->capacity && m == NULL; i++)
        if (!c->members[i].used) m = &c->members[i];
    memset(m, 0, sizeof(*m));
    m->used = 1;
    m->peer = peer;
    m->role = role;
    m->wanted_rank = j->wanted_rank;
    m->join_req = h->req_id;
    snprintf(m->addr, sizeof(m->addr), "%s", j->addr);
    snprintf(m->node, sizeof(m->node), "%s", role == PS_ROLE_WORKER ? j->node : "");
    if (role == PS_ROLE_WORKER && !c->have_settings) {
        snprintf(c->settings, sizeof(c->settings), "%s", j->settings);
        c->settings_from = (uint32_t)(m - c->members);
        c->have_settings = 1;
    }
    ps_tp_peer_set_ctx(peer, m);
    c->joined[role]++;
    ps_info("%s joined from %s (%u/%u servers, %u/%u workers)", role == PS_ROLE_SERVER ? "server" : "worker",
            ps_tp_peer_name(peer), c->joined[PS_ROLE_SERVER], c->job.num_servers, c->joined[PS_ROLE_WORKER],
            c->job.num_workers);
    if (c->joined[PS_ROLE_SERVER] == c->job.num_servers && c->joined[PS_ROLE_WORKER] == c->job.num_workers)
        ps_coord_form(c);
out:
    free(j);
}

/* A member told the job ended has acknowledged or closed (lock held): destroy need not wait for it. */
static void ps_coord_end_heard(pserv_coordinator_h c, ps_coord_member_t *m)
{
    m->told_end = 0;
    c->members_told--;
    pthread_cond_broadcast(&c->cond);
}

static void ps_coord_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    pserv_coordinator_h c = arg;
    ps_wire_hdr_t h;
    const char *why = NULL;

    pthread_mutex_lock(&c->lock);
    if (ps_wire_decode(hdr, hdr_len, len, &h, &why) < 0) {
        c->rejected++;
        ps_warn("message from %s rejected: %s", ps_tp_peer_name(peer), why);
        goto out;
    }
    ps_coord_member_t *m = ps_tp_peer_get_ctx(peer);
    if (m && m->failed) goto out; /* declared dead: whatever it still says is ignored */
    if (m) m->last_heard_ms = ps_now_ms();
    int worker = m && c->formed && m->role == PS_ROLE_WORKER;
    if (h.type == PS_MSG_JOIN) {
        ps_coord_on_join(c, peer, &h, data, len);
    } else if (h.type == PS_MSG_HEARTBEAT && m) {
        /* last_heard, and a server's progress (for checkpoints by time) */
        if (m->role == PS_ROLE_SERVER && h.round > m->progress) m->progress = h.round;
    } else if (h.type == PS_MSG_ABORT_ACK && m) {
        if (m->told_end) ps_coord_end_heard(c, m);
    } else if (h.type == PS_MSG_LEAVE && worker) {
        ps_coord_on_leave(c, m, &h, data, len);
    } else if (h.type == PS_MSG_BARRIER && worker) {
        ps_coord_on_barrier(c, m, &h);
    } else if (h.type == PS_MSG_NODE_BCAST && worker) {
        ps_coord_on_bcast(c, m, &h, data, len);
    } else if (h.type == PS_MSG_TENSOR && worker) {
        ps_coord_on_tensor(c, m, &h, data, len);
    } else if (h.type == PS_MSG_CHECKPOINT && m && c->formed && m->role == PS_ROLE_SERVER) {
        ps_coord_on_checkpoint(c, m, &h, data, len);
    } else if (h.type == PS_MSG_READY && m && c->formed && m->role == PS_ROLE_SERVER) {
        ps_coord_on_ready(c, m);
    } else if (h.type == PS_MSG_SYNCED && m && c->formed && m->role == PS_ROLE_SERVER) {
        ps_coord_on_synced(c, m, &h);
    } else if (h.type == PS_MSG_DRAIN && m == NULL) {
        ps_coord_on_drain(c, peer, &h);
    } else {
        c->rejected++;
        ps_warn("unexpected %s from %s rejected", ps_wire_type_name(h.type), ps_tp_peer_name(peer));
        if (h.type == PS_MSG_BARRIER || h.type == PS_MSG_LEAVE || h.type == PS_MSG_NODE_BCAST || h.type == PS_MSG_TENSOR ||
            h.type == PS_MSG_DRAIN)
            ps_reply_status(peer, &h, (ps_msg_type_t)(h.type + 1), 0, PSERV_ERR_INVALID_ARG);
    }
out:
    pthread_mutex_unlock(&c->lock);
}

/* A rendezvous payload is allocated only after its header says a size its type may carry. */
static pserv_status_t ps_coord_rx_buffer(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, size_t len,
                                         void **buf)
{
    pserv_coordinator_h c = arg;
    ps_wire_hdr_t h;
    const char *why;
    if (ps_wire_decode(hdr, hdr_len, len, &h, &why) == PSERV_OK) return PSERV_OK;
    pthread_mutex_lock(&c->lock);
    c->rejected++;
    pthread_mutex_unlock(&c->lock);
    ps_warn("%zu-byte message from %s refused before it moved: %s", len, ps_tp_peer_name(peer), why);
    return PSERV_ERR_BAD_MESSAGE;
}

static void ps_coord_peer_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why)
{
    pserv_coordinator_h c = arg;
    char text[128];
    pthread_mutex_lock(&c->lock);
    ps_coord_member_t *m = ps_tp_peer_get_ctx(peer);
    if (m != NULL && m->told_end) {
        /* The job is over and this member ended as told: what destroy waits for. */
        ps_coord_end_heard(c, m);
        goto out;
    }
    if (m == NULL) ps_coord_drain_requester_gone(c, peer);
    if (m == NULL || m->failed) goto out;
    if (!c->formed) {
        /* Before the job forms a member may simply come back: free its place. */
        ps_warn("%s at %s gone before the job formed: %s", m->role == PS_ROLE_SERVER ? "server" : "worker",
                ps_tp_peer_name(peer), pserv_strerror(why));
        c->joined[m->role]--;
        ps_tp_peer_set_ctx(peer, NULL);
        m->used = 0;
        goto out;
    }
    snprintf(text, sizeof(text), "its connection failed (%s)", pserv_strerror(why));
    ps_coord_member_dead(c, m, text);
out:
    pthread_mutex_unlock(&c->lock);
}

pserv_status_t pserv_coordinator_create(const pserv_coordinator_params_t *params, pserv_coordinator_h *coord)
{
    char host[PS_HOST_MAX];
    uint16_t port = 0;
    pserv_status_t st;

    PS_CHECK_ARG(params && coord && params->size >= sizeof(pserv_coordinator_params_t));
    PS_CHECK_ARG(params->num_servers >= 1 && params->num_workers >= 1);
    PS_CHECK_ARG(params->num_servers <= 4096 && params->num_workers <= 65536);
    PS_CHECK_ARG(params->mode == PSERV_MODE_SYNC || params->mode == PSERV_MODE_ASYNC);
    PS_CHECK_ARG(params->on_worker_failure == PSERV_ON_FAILURE_FAIL ||
                 params->on_worker_failure == PSERV_ON_FAILURE_CONTINUE);
    if (params->chunk_bytes != 0 && (params->chunk_bytes < PS_MIN_CHUNK_BYTES || params->chunk_bytes > PS_MAX_CHUNK_BYTES)) {
        ps_set_last_error("chunk size of %zu bytes is outside %u bytes .. 1 GiB", params->chunk_bytes,
                          PS_MIN_CHUNK_BYTES);
        return PSERV_ERR_INVALID_ARG;
    }
    if (params->heartbeat_ms < 0 || params->failure_timeout_ms < 0 ||
        (params->heartbeat_ms > 0 && params->failure_timeout_ms > 0 &&
         params->failure_timeout_ms <= params->heartbeat_ms)) {
        ps_set_last_error("failure timeout %d ms must exceed the heartbeat interval %d ms", params->failure_timeout_ms,
                          params->heartbeat_ms);
        return PSERV_ERR_INVALID_ARG;
    }
    uint32_t replicas = params->replicas == PSERV_REPLICAS_NONE ? 0
                        : params->replicas > 0                ? (uint32_t)params->replicas
                        : params->num_servers >= 2            ? 1
                                                              : 0;
    if (params->replicas < PSERV_REPLICAS_NONE || replicas > PS_VIEW_MAX_REPLICAS || replicas >= params->num_servers) {
        ps_set_last_error("%d replicas need %d servers (the job has %u) and at most %u may be asked for",
                          params->replicas, params->replicas + 1, params->num_servers, PS_VIEW_MAX_REPLICAS);
        return PSERV_ERR_INVALID_ARG;
    }
    if (ps_hostport_parse(params->listen ? params->listen : "127.0.0.1:0", 0, host, &port) < 0) {
        ps_set_last_error("bad coordinator listen address '%s' (want host:port)", params->listen);
        return PSERV_ERR_INVALID_ARG;
    }

    pserv_coordinator_h c = calloc(1, sizeof(*c));
    if (c == NULL) return PSERV_ERR_NO_MEMORY;
    c->job.mode = params->mode;
    c->job.num_servers = params->num_servers;
    c->job.num_workers = params->num_workers;
    c->job.chunk_bytes = params->chunk_bytes ? params->chunk_bytes : PS_DEFAULT_CHUNK_BYTES;
    c->move_bytes = params->move_bytes ? params->move_bytes : c->job.chunk_bytes;
    c->job.heartbeat_ms = params->heartbeat_ms > 0 ? (uint32_t)params->heartbeat_ms : PS_DEFAULT_HEARTBEAT_MS;
    c->job.failure_timeout_ms =
        params->failure_timeout_ms > 0 ? (uint32_t)params->failure_timeout_ms : PS_DEFAULT_FAILURE_TIMEOUT_MS;
    c->job.on_worker_failure = params->on_worker_failure;
    c->barrier_floor = UINT64_MAX; /* no barrier done before this coordinator (coord_recover.c) */
    if ((st = ps_coord_ckpt_setup(c, params)) < 0) {
        free(c);
        return st;
    }
    /* Room for every server the job may ever have: servers join a running job, and a member's
     * place is the transport peer's context (it never moves). */
    c->capacity = PS_VIEW_MAX_SERVERS + params->num_workers;
    c->members = calloc(c->capacity, sizeof(*c->members));
    c->job.servers = calloc(params->num_servers, sizeof(*c->job.servers));
    c->job.worker_node = calloc(params->num_workers, sizeof(*c->job.worker_node));
    c->nodes = calloc(params->num_workers, sizeof(*c->nodes)); /* at most one group per worker */
    if (c->job.failure_timeout_ms <= c->job.heartbeat_ms) c->job.failure_timeout_ms = 6 * c->job.heartbeat_ms;
    st = PSERV_ERR_NO_MEMORY;
    if (c->members == NULL || c->job.servers == NULL || c->job.worker_node == NULL || c->nodes == NULL)
        goto err_free;
    if ((st = ps_view_init(&c->view, params->num_servers, params->num_workers, replicas)) < 0) goto err_free;
    st = PSERV_ERR_NO_RESOURCE;
    if (pthread_mutex_init(&c->lock, NULL) != 0) goto err_free_view;
    PS_CHECK_GOTO(ps_cond_init(&c->cond), st, err_destroy_lock);

    ps_tp_params_t tp_params = {
        .listen_host = host,
        .listen_port = port,
        .handler = {.arg = c, .rx_buffer = ps_coord_rx_buffer, .rx = ps_coord_rx, .peer_failed = ps_coord_peer_failed},
    };
    ps_progress_t progress;
    char why[160];
    if ((st = ps_progress_get(&progress, why, sizeof(why))) < 0) {
        ps_set_last_error("%s", why);
        goto err_destroy_cond;
    }
    st = ps_tp_create(&tp_params, &c->tp);
    if (st < 0) {
        ps_set_last_error("the coordinator cannot listen on %s:%u: %s", host, port,
                          st == PSERV_ERR_ADDR_IN_USE ? "the port is in use" : pserv_strerror(st));
        goto err_destroy_cond;
    }
    if ((st = ps_ticker_start(&c->ticker, (int)c->job.heartbeat_ms, ps_coord_tick, c)) < 0) goto err_destroy_tp;
    *coord = c;
    return PSERV_OK;

err_destroy_tp:
    ps_tp_destroy(c->tp);
err_destroy_cond:
    pthread_cond_destroy(&c->cond);
err_destroy_lock:
    pthread_mutex_destroy(&c->lock);
err_free_view:
    ps_view_free(&c->view);
err_free:
    ps_job_free(&c->job);
    free(c->nodes);
    free(c->members);
    free(c);
    return st;
}

pserv_status_t pserv_coordinator_port(pserv_coordinator_h coord, uint16_t *port)
{
    PS_CHECK_ARG(coord && port);
    *port = ps_tp_listen_port(coord->tp);
    return PSERV_OK;
}

pserv_status_t pserv_coordinator_wait(pserv_coordinator_h coord, int timeout_ms)
{
    ps_deadline_t deadline;
    PS_CHECK_ARG(coord);
    ps_deadline_set(&deadline, timeout_ms);
    pthread_mutex_lock(&coord->lock);
    while (!coord->done)
        if (ps_cond_wait(&coord->cond, &coord->lock, &deadline) == PSERV_ERR_TIMED_OUT) break;
    pserv_status_t st = coord->done ? coord->result : PSERV_ERR_TIMED_OUT;
    pthread_mutex_unlock(&coord->lock);
    return st;
}

const char *pserv_coordinator_last_error(pserv_coordinator_h coord)
{
    /* Written once, under the lock, before `done` is set; never changed after. */
    return coord ? coord->why : "";
}

pserv_status_t pserv_coordinator_destroy(pserv_coordinator_h coord)
{
    if (coord == NULL) return PSERV_OK;
    /* Members told the job ended close (SHUTDOWN) or acknowledge (ABORT) first: with shared memory
     * the message goes there and our close over TCP, and UCX drops what a failed endpoint still
     * had queued, so closing at once could lose the message: a server would take the job's end
     * for the coordinator's death, a member would not learn why the job failed. Bounded: a member
     * that is gone or hung costs at most PS_COORD_END_GRACE_MS. */
    ps_deadline_t grace;
    ps_deadline_set(&grace, PS_COORD_END_GRACE_MS);
    pthread_mutex_lock(&coord->lock);
    while (coord->members_told > 0 && ps_cond_wait(&coord->cond, &coord->lock, &grace) == PSERV_OK) {
    }
    pthread_mutex_unlock(&coord->lock);
    ps_ticker_stop(&coord->ticker); /* before the transport: a tick sends */
    ps_tp_destroy(coord->tp);
    ps_view_free(&coord->view);
    pthread_cond_destroy(&coord->cond);
    pthread_mutex_destroy(&coord->lock);
    ps_job_free(&coord->job);
    free(coord->nodes);
    free(coord->members);
    free(coord);
    return PSERV_OK;
}
