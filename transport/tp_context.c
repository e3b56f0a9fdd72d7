/*
 * ps_tp_t: UCX context and worker, the command queue other threads post to, and the progress
 * thread that owns the worker.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "tp_internal.h"

/* The ps_tp_t whose progress role this thread holds (NULL when none). */
static _Thread_local const ps_tp_t *tp_self;

int tp_on_progress_thread(const ps_tp_t *tp)
{
    return tp_self == tp;
}

static void tp_role_take(ps_tp_t *tp)
{
    pthread_mutex_lock(&tp->role);
    tp_self = tp;
}

static void tp_role_drop(ps_tp_t *tp)
{
    tp_self = NULL;
    pthread_mutex_unlock(&tp->role);
}

int tp_role_try(ps_tp_t *tp, const ps_tp_t **prev)
{
    if (pthread_mutex_trylock(&tp->role) != 0) return 0;
    *prev = tp_self;
    tp_self = tp;
    return 1;
}

static void tp_wake(ps_tp_t *tp)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the thread wakes anyway. */
    if (write(tp->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        ps_error("transport wakeup failed: %s", strerror(errno));
}

/* Wakes the progress thread if it sleeps (once per sleep). */
static void tp_wake_sleeper(ps_tp_t *tp)
{
    pthread_mutex_lock(&tp->lock);
    int wake = tp->sleeping && !tp->wake_pending;
    if (wake) tp->wake_pending = 1;
    pthread_mutex_unlock(&tp->lock);
    if (wake) tp_wake(tp);
}

/* Things only a holder of the role delivers, left queued. */
static int tp_has_queued(const ps_tp_t *tp)
{
    return tp->done_head != NULL || tp->rxq_head != NULL || tp->acc_head != NULL || tp->fail_head != NULL;
}

void tp_role_leave(ps_tp_t *tp, const ps_tp_t *prev)
{
    /* What this thread left behind (a send UCX still works on, completions, receives) is the
     * progress thread's to finish: a sleeping one must wake for it. */
    int wake = tp_has_queued(tp) || !tp_list_empty(&tp->tx_active) || !tp_list_empty(&tp->rx_active);
    tp_self = prev;
    pthread_mutex_unlock(&tp->role);
    if (wake) tp_wake_sleeper(tp);
}

pserv_status_t tp_cmd_post(ps_tp_t *tp, tp_cmd_t *cmd)
{
    int wake = 0;

    pthread_mutex_lock(&tp->lock);
    if (tp->cmds_closed) {
        pthread_mutex_unlock(&tp->lock);
        return PSERV_ERR_SHUTDOWN;
    }
    cmd->next = NULL;
    *tp->cmd_tail = cmd;
    tp->cmd_tail = &cmd->next;
    atomic_store_explicit(&tp->cmd_ready, 1, memory_order_release);
    /* A thread that spins sees cmd_ready on its next turn; one that sleeps needs the eventfd,
     * written once per sleep (it set sleeping under this lock after finding no commands). */
    if (tp->sleeping && !tp->wake_pending) {
        tp->wake_pending = 1;
        wake = 1;
    }
    pthread_mutex_unlock(&tp->lock);
    if (wake) tp_wake(tp);
    return PSERV_OK;
}

static void tp_cmds_exec(ps_tp_t *tp, tp_cmd_t *cmd)
{
    while (cmd != NULL) {
        tp_cmd_t *next = cmd->next;
        ps_tp_peer_t *peer;

        switch (cmd->type) {
        case TP_CMD_SEND:
            tp_send_run(tp, tp_container_of(cmd, tp_send_t, cmd), 0);
            break;
        case TP_CMD_CONNECT:
            peer = tp_container_of(cmd, ps_tp_peer_t, connect_cmd);
            tp_peer_connect_run(peer);
            tp_peer_unref(peer);
            break;
        case TP_CMD_CLOSE:
            peer = tp_container_of(cmd, ps_tp_peer_t, close_cmd);
            tp_peer_close_run(peer);
            /* The waiter in ps_tp_peer_close() holds a reference until it sees this. */
            pthread_mutex_lock(&tp->lock);
            peer->close_done = 1;
            pthread_cond_broadcast(&tp->cond);
            pthread_mutex_unlock(&tp->lock);
            break;
        }
        cmd = next;
    }
}

/* Runs the queued commands; returns 1 once ps_tp_stop() asked the thread to stop. */
static int tp_cmds_run(ps_tp_t *tp)
{
    if (!atomic_load_explicit(&tp->cmd_ready, memory_order_acquire)) return 0;
    pthread_mutex_lock(&tp->lock);
    tp_cmd_t *head = tp->cmd_head;
    int stop = tp->stop;
    tp->cmd_head = NULL;
    tp->cmd_tail = &tp->cmd_head;
    tp->wake_pending = 0;
    atomic_store_explicit(&tp->cmd_ready, 0, memory_order_relaxed);
    pthread_mutex_unlock(&tp->lock);
    tp_cmds_exec(tp, head);
    return stop;
}

static int tp_cmds_pending(ps_tp_t *tp)
{
    return atomic_load_explicit(&tp->cmd_ready, memory_order_acquire);
}

static unsigned tp_progress(ps_tp_t *tp);

/* Handlers run here, after ucp_worker_progress() returned: never inside a UCX callback. */
static void tp_dispatch(ps_tp_t *tp)
{
    tp_accept_dispatch(tp);
    /* Completions before failure reports: sends in flight to a failed peer fail first. */
    tp_send_dispatch(tp);
    tp_rx_dispatch(tp);
    if (tp->fail_head != NULL) {
        /* What a failed peer sent before it failed may still wait to be read (UCX reports a
         * failure on one lane, shared memory's data sits on another): read it and deliver it
         * first, so a peer's last words (a SHUTDOWN, an ABORT) come before its failure. */
        tp_progress(tp);
        tp_send_dispatch(tp);
        tp_rx_dispatch(tp);
    }
    tp_fail_dispatch(tp);
}

/* Failures count: an endpoint error queued during progress is reported now, not at the next
 * unrelated event (a silent partition produces nothing else to wake us). */
static int tp_has_work(ps_tp_t *tp)
{
    return tp_has_queued(tp) || tp_cmds_pending(tp);
}

/* Progresses UCX until it has nothing more, at most TP_PROGRESS_BATCH times: the calls that did something. */
static unsigned tp_progress(ps_tp_t *tp)
{
    unsigned events = 0;
    while (events < TP_PROGRESS_BATCH && ucp_worker_progress(tp->worker) != 0) events++;
    return events;
}

/*
 * Sleeps until UCX or another thread has something for us, or timeout_ms (-1: forever). Posters
 * write the eventfd only while `sleeping` is set, which is set under the lock after finding no
 * command queued: a command posted after that wakes the poll, one posted before is run first.
 */
static void tp_wait(ps_tp_t *tp, int timeout_ms)
{
    pthread_mutex_lock(&tp->lock);
    int ready = tp->cmd_head != NULL; /* ps_tp_stop() writes the eventfd whatever sleeping says */
    tp->sleeping = !ready;
    pthread_mutex_unlock(&tp->lock);
    if (ready) return;

    ucs_status_t st = ucp_worker_arm(tp->worker);
    if (st != UCS_OK && st != UCS_ERR_BUSY) {
        /* Cannot arm: fall back to a short poll rather than sleeping through events. */
        ps_error("ucp_worker_arm failed: %s", ucs_status_string(st));
        timeout_ms = (timeout_ms < 0 || timeout_ms > 10) ? 10 : timeout_ms;
    }
    if (st != UCS_ERR_BUSY) {
        struct pollfd fds[2] = {{.fd = tp->worker_fd, .events = POLLIN}, {.fd = tp->wake_fd, .events = POLLIN}};
        /* Asleep, the role is free: a caller may send (or progress) directly meanwhile, and wakes
         * us if it leaves work behind. */
        tp_role_drop(tp);
        int n = poll(fds, 2, timeout_ms);
        tp_role_take(tp);
        if (n < 0 && errno != EINTR) ps_error("transport poll failed: %s", strerror(errno));
        if (n > 0 && (fds[1].revents & POLLIN)) {
            uint64_t v;
            if (read(tp->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                ps_error("transport wakeup read failed: %s", strerror(errno));
        }
    }
    pthread_mutex_lock(&tp->lock);
    tp->sleeping = 0;
    tp->wake_pending = 0; /* awake now: the next sleep needs a write of its own */
    pthread_mutex_unlock(&tp->lock);
}

/* Delivers what is queued and progresses UCX once; returns 1 if anything happened. */
static int tp_poll_once(ps_tp_t *tp)
{
    tp_dispatch(tp);
    return tp_progress(tp) > 0 || tp_has_work(tp);
}

/*
 * One turn of the loop; sleeps at most timeout_ms when there is nothing to do. done, if not
 * NULL, is what the caller waits for: completions that queue nothing still end the wait.
 */
static void tp_turn(ps_tp_t *tp, int timeout_ms, int (*done)(ps_tp_t *tp))
{
    if (tp_poll_once(tp)) return;
    if (done != NULL && done(tp)) return;
    tp_wait(tp, timeout_ms);
}

static int64_t tp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int tp_left_ms(int64_t deadline)
{
    int64_t left = deadline - tp_now_ms();
    return left > 0 ? (int)left : 0;
}

/* Rendezvous sends wait for the receiver, which a flush alone does not cover. */
static int tp_flushed(ps_tp_t *tp)
{
    return tp->flushing == 0 && tp_list_empty(&tp->tx_active);
}

static void tp_flush_cb(void *req, ucs_status_t st, void *user)
{
    ps_tp_peer_t *peer = user;
    peer->flush_req = NULL;
    peer->tp->flushing--;
    ucp_request_free(req);
    tp_peer_unref(peer);
}

/* Shutdown step 1: lets sends already handed to UCX finish, within TP_FLUSH_TIMEOUT_MS. */
static int tp_flush_all(ps_tp_t *tp)
{
    ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
                               .cb.send = tp_flush_cb};
    ps_tp_peer_t **peers;
    size_t n = tp_peer_snapshot(tp, &peers);
    for (size_t i = 0; i < n; i++) {
        ps_tp_peer_t *peer = peers[i];
        if (peer->state == TP_PEER_ACTIVE && peer->ep != NULL) {
            /* Counted and referenced before the call: the callback may run before it returns. */
            tp->flushing++;
            tp_peer_ref(peer);
            peer->flush_req = TP_REQ_STARTING;
            prm.user_data = peer;
            ucs_status_ptr_t sp = ucp_ep_flush_nbx(peer->ep, &prm);
            if (UCS_PTR_IS_PTR(sp)) {
                if (peer->flush_req != NULL) peer->flush_req = sp; /* NULL: its callback ran */
            } else {
                peer->flush_req = NULL;
                tp->flushing--;
                tp_peer_unref(peer);
            }
        }
        tp_peer_unref(peer);
    }
    free(peers);
    int64_t deadline = tp_now_ms() + TP_FLUSH_TIMEOUT_MS;
    while (!tp_flushed(tp) && tp_left_ms(deadline) > 0) {
        tp_cmds_run(tp);
        tp_turn(tp, tp_left_ms(deadline), tp_flushed);
    }
    if (tp_flushed(tp)) return 1;
    ps_warn("transport shutdown: sends still in flight after %d ms: cancelled", TP_FLUSH_TIMEOUT_MS);
    return 0;
}

static int tp_busy(ps_tp_t *tp)
{
    return tp->closing_eps > 0 || !tp_list_empty(&tp->tx_active) || !tp_list_empty(&tp->rx_active) ||
           tp->flushing > 0 || tp_has_work(tp);
}

static int tp_idle(ps_tp_t *tp)
{
    return !tp_busy(tp);
}

static void tp_shutdown(ps_tp_t *tp)
{
    tp->closing = 1;
    tp_accept_dispatch(tp); /* rejects what waits, while the listener still exists */
    if (tp->listener != NULL) {
        ucp_listener_destroy(tp->listener);
        tp->listener = NULL;
    }
    /* Drop queued receives while their endpoints are open (a rendezvous needs one to decline). */
    tp_rx_dispatch(tp);
    int drained = tp_flush_all(tp);
    tp_dispatch(tp);
    tp_peer_close_all(tp, !drained);

    int64_t deadline = tp_now_ms() + TP_CLOSE_TIMEOUT_MS;
    while (tp_busy(tp) && tp_left_ms(deadline) > 0) {
        tp_cmds_run(tp);
        tp_turn(tp, tp_left_ms(deadline), tp_idle);
    }
    if (tp_busy(tp))
        ps_warn("transport shutdown: UCX did not finish in time (%u closes, sends %s, receives %s)",
                tp->closing_eps, tp_list_empty(&tp->tx_active) ? "done" : "pending",
                tp_list_empty(&tp->rx_active) ? "done" : "pending");

    pthread_mutex_lock(&tp->lock);
    tp->cmds_closed = 1;
    pthread_mutex_unlock(&tp->lock);
    tp_cmds_run(tp); /* the last ones: sends fail, closes release their waiters */
    tp_dispatch(tp);

    tp_peer_release_requests(tp);
    ucp_worker_destroy(tp->worker);
    tp->worker = NULL;
    tp_am_abandon(tp);
}

/*
 * The loop: commands, handlers, UCX. With nothing to do it spins (yielding the CPU) until
 * progress.spin_ns have passed since the last event, then sleeps (PSERV_PROGRESS).
 */
static void *tp_main(void *arg)
{
    ps_tp_t *tp = arg;
    const uint64_t spin_ns = tp->progress.spin_ns;
    uint64_t last_event = ps_now_ns();
    tp_role_take(tp);
    while (!tp_cmds_run(tp)) {
        if (tp_poll_once(tp)) {
            if (spin_ns != 0 && spin_ns != UINT64_MAX) last_event = ps_now_ns();
            continue;
        }
        if (ps_spin_on(spin_ns, last_event)) {
            /* The role is free while we yield: a sender or a waiter may take it. */
            tp_role_drop(tp);
            ps_spin_pause();
            tp_role_take(tp);
            continue;
        }
        int inflight = !tp_list_empty(&tp->tx_active) || !tp_list_empty(&tp->rx_active);
        tp_wait(tp, inflight ? TP_INFLIGHT_POLL_MS : -1);
        last_event = ps_now_ns();
    }
    tp_shutdown(tp); /* tp->closing from here on: a thread that takes the role does nothing */
    tp_role_drop(tp);
    return NULL;
}

/*
 * UCX settings pserv changes from UCX 1.13's defaults, each unless the user set it (or a variable
 * it names) in the environment:
 * - RNDV_THRESH=256k: below TP_RNDV_MIN (where we force rendezvous) payloads go eager. UCX would
 *   switch to rendezvous at a few KiB, over its TCP lanes (a 16 KiB push-pull took 200 us
 *   instead of 40). Not when the user asks for shared memory (UCX_MM_ERROR_HANDLING and
 *   friends): UCX 1.13 then aborts (proto_am.inl, an alloca of 2^64 bytes) replaying a send queued
 *   during wireup that the TCP lane would have sent zero-copy.
 *
 * Not changed: processes of one host talk over TCP loopback. UCX leaves its shared-memory
 * transports out of endpoints with peer-failure handling unless they expose error handling
 * (UCX_MM_ERROR_HANDLING=y, about 2.8x faster for a small push-pull); with it, in UCX 1.13, the
 * failure tests still found a member that never got the ABORT sent right after another member
 * died, and the crash above: transport/README.md ("Transports").
 */
static const struct {
    const char *name, *value, *user_vars[4];
} tp_ucx_defaults[] = {
    {"RNDV_THRESH", "256k",
     {"UCX_RNDV_THRESH", "UCX_MM_ERROR_HANDLING", "UCX_POSIX_ERROR_HANDLING", "UCX_SYSV_ERROR_HANDLING"}},
};

/*
 * Settings UCX reads only from the environment (its connection managers' ucp_config_modify does
 * not reach, in 1.13): set once per process, before the first context, unless the user set them.
 * - TCP_CM_REUSEADDR: a process restarted at its address (a coordinator taking its job back)
 *   listens on its port again at once, although its old connections' sockets still hold it.
 */
static void tp_env_defaults(void)
{
    setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
}
_Static_assert(TP_RNDV_MIN == 256u * 1024, "RNDV_THRESH above says 256k");

static void tp_config_defaults(ucp_config_t *config)
{
    for (size_t i = 0; i < sizeof(tp_ucx_defaults) / sizeof(tp_ucx_defaults[0]); i++) {
        int user = 0;
        for (size_t v = 0; v < 4 && tp_ucx_defaults[i].user_vars[v] != NULL; v++)
            user |= getenv(tp_ucx_defaults[i].user_vars[v]) != NULL;
        if (user) continue;
        ucs_status_t us = ucp_config_modify(config, tp_ucx_defaults[i].name, tp_ucx_defaults[i].value);
        if (us != UCS_OK)
            ps_warn("cannot set UCX's %s=%s (%s): the data path may be slower", tp_ucx_defaults[i].name,
                    tp_ucx_defaults[i].value, ucs_status_string(us));
    }
}

pserv_status_t ps_tp_create(const ps_tp_params_t *params, ps_tp_t **out)
{
    PS_CHECK_ARG(params != NULL && out != NULL && params->handler.rx != NULL);

    pserv_status_t st = PSERV_ERR_NO_MEMORY;
    ucs_status_t us;
    ucp_config_t *config;
    ps_tp_t *tp = calloc(1, sizeof(*tp));
    if (tp == NULL) return st;

    tp->h = params->handler;
    char why[160];
    if ((st = ps_progress_get(&tp->progress, why, sizeof(why))) < 0) {
        ps_error("%s", why);
        free(tp);
        return st;
    }
    st = PSERV_ERR_NO_MEMORY;
    tp->cmd_tail = &tp->cmd_head;
    tp->done_tail = &tp->done_head;
    tp->rxq_tail = &tp->rxq_head;
    tp->fail_tail = &tp->fail_head;
    tp->acc_tail = &tp->acc_head;
    tp_list_init(&tp->peers);
    tp_list_init(&tp->mems);
    tp_list_init(&tp->tx_active);
    tp_list_init(&tp->rx_active);
    if (pthread_mutex_init(&tp->lock, NULL) != 0) goto err_free;
    if (pthread_mutex_init(&tp->role, NULL) != 0) goto err_lock;
    if (pthread_cond_init(&tp->cond, NULL) != 0) goto err_mutex;

    static pthread_once_t env_once = PTHREAD_ONCE_INIT;
    pthread_once(&env_once, tp_env_defaults);
    if ((us = ucp_config_read(NULL, NULL, &config)) != UCS_OK) {
        ps_error("ucp_config_read failed: %s", ucs_status_string(us));
        st = tp_status(us);
        goto err_cond;
    }
    tp_config_defaults(config);
    ucp_params_t cp = {
        .field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED | UCP_PARAM_FIELD_NAME,
        .features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP,
        /* ps_tp_mem_register() maps memory from any thread while the worker runs. */
        .mt_workers_shared = 1,
        .name = "pserv",
    };
    us = ucp_init(&cp, config, &tp->context);
    ucp_config_release(config);
    if (us != UCS_OK) {
        ps_error("ucp_init failed: %s", ucs_status_string(us));
        st = tp_status(us);
        goto err_cond;
    }

    ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                              /* one thread at a time: whoever holds the progress role */
                              .thread_mode = UCS_THREAD_MODE_SERIALIZED};
    if ((us = ucp_worker_create(tp->context, &wp, &tp->worker)) != UCS_OK) {
        ps_error("ucp_worker_create failed: %s", ucs_status_string(us));
        st = tp_status(us);
        goto err_cleanup;
    }
    if ((us = ucp_worker_get_efd(tp->worker, &tp->worker_fd)) != UCS_OK) {
        ps_error("ucp_worker_get_efd failed: %s", ucs_status_string(us));
        st = tp_status(us);
        goto err_worker;
    }
    tp->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (tp->wake_fd < 0) {
        ps_error("eventfd failed: %s", strerror(errno));
        st = PSERV_ERR_NO_RESOURCE;
        goto err_worker;
    }
    PS_CHECK_GOTO(tp_am_init(tp), st, err_wake);
    if (params->listen_host != NULL)
        PS_CHECK_GOTO(tp_listener_create(tp, params->listen_host, params->listen_port), st, err_wake);

    int rc = pthread_create(&tp->thread, NULL, tp_main, tp);
    if (rc != 0) {
        ps_error("cannot start the transport thread: %s", strerror(rc));
        st = PSERV_ERR_NO_RESOURCE;
        goto err_listener;
    }
    *out = tp;
    return PSERV_OK;

err_listener:
    if (tp->listener != NULL) ucp_listener_destroy(tp->listener);
err_wake:
    close(tp->wake_fd);
err_worker:
    ucp_worker_destroy(tp->worker);
err_cleanup:
    ucp_cleanup(tp->context);
err_cond:
    pthread_cond_destroy(&tp->cond);
err_mutex:
    pthread_mutex_destroy(&tp->role);
err_lock:
    pthread_mutex_destroy(&tp->lock);
err_free:
    free(tp);
    return st;
}

void ps_tp_stop(ps_tp_t *tp)
{
    if (tp == NULL || tp->joined) return;
    if (tp_on_progress_thread(tp)) {
        /* The thread cannot join itself; refusing beats a deadlock. */
        ps_error("ps_tp_stop/destroy called from a transport handler: refused");
        return;
    }
    pthread_mutex_lock(&tp->lock);
    tp->stop = 1;
    atomic_store_explicit(&tp->cmd_ready, 1, memory_order_release);
    pthread_mutex_unlock(&tp->lock);
    tp_wake(tp);
    pthread_join(tp->thread, NULL);
    tp->joined = 1;
}

void ps_tp_destroy(ps_tp_t *tp)
{
    if (tp == NULL) return;
    ps_tp_stop(tp);
    if (!tp->joined) return;

    tp_peer_free_all(tp);
    tp_peer_table_free(tp);
    tp_am_free_all(tp);
    tp_mem_release_all(tp);
    ucp_cleanup(tp->context);
    close(tp->wake_fd);
    pthread_cond_destroy(&tp->cond);
    pthread_mutex_destroy(&tp->role);
    pthread_mutex_destroy(&tp->lock);
    free(tp);
}

int ps_tp_progress(ps_tp_t *tp)
{
    const ps_tp_t *prev;
    if (tp == NULL || tp_on_progress_thread(tp) || !tp_role_try(tp, &prev)) return 0;
    int did = !tp->closing && tp_poll_once(tp);
    tp_role_leave(tp, prev);
    return did;
}

uint16_t ps_tp_listen_port(const ps_tp_t *tp)
{
    return tp != NULL ? tp->port : 0;
}
