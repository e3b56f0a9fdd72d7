#include "raw_ucx.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define RAW_AM_ID 7

typedef struct {
    uint32_t magic, flags;
    uint64_t len;
} raw_hdr_t;

#define RAW_MAGIC 0x52415745u /* "RAWE" */

/* UCX 1.13 may read an AM header until the send completes: every header lives here. */
static const raw_hdr_t raw_hdrs[] = {
    {RAW_MAGIC, RAW_ECHO, 0},
    {RAW_MAGIC, RAW_ACK, 0},
    {RAW_MAGIC, RAW_FIN, 0},
    {RAW_MAGIC, RAW_REPLY, 0},
};

double raw_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int ring_put(raw_ring_t *q, raw_msg_t m)
{
    if (q->tail - q->head == RAW_RING) return -1;
    q->m[q->tail++ % RAW_RING] = m;
    return 0;
}

static int ring_get(raw_ring_t *q, raw_msg_t *m)
{
    if (q->tail == q->head) return 0;
    *m = q->m[q->head++ % RAW_RING];
    return 1;
}

static void raw_fail(raw_t *r, ucs_status_t st, const char *what)
{
    if (r->failed == UCS_OK) {
        fprintf(stderr, "%s: %s: %s\n", r->prog, what, ucs_status_string(st));
        r->failed = st;
    }
}

static void raw_arrived(raw_t *r, size_t len, uint32_t flags)
{
    if (ring_put(&r->arrived, (raw_msg_t){len, flags, NULL}) != 0)
        raw_fail(r, UCS_ERR_EXCEEDS_LIMIT, "more messages arrived than were taken");
    r->n_arrived++;
}

static ucs_status_t am_cb(void *arg, const void *header, size_t header_length, void *data, size_t length,
                          const ucp_am_recv_param_t *param)
{
    raw_t *r = arg;
    const raw_hdr_t *h = header;
    if (header_length != sizeof(raw_hdr_t) || h->magic != RAW_MAGIC) {
        raw_fail(r, UCS_ERR_INVALID_PARAM, "a message with a foreign header");
        return UCS_OK;
    }
    if (length > r->max_bytes) {
        raw_fail(r, UCS_ERR_EXCEEDS_LIMIT, "a message larger than --max-bytes");
        return UCS_OK;
    }
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
        if (ring_put(&r->pending, (raw_msg_t){length, h->flags, data}) != 0) {
            raw_fail(r, UCS_ERR_EXCEEDS_LIMIT, "too many rendezvous messages pending");
            return UCS_OK;
        }
        return UCS_INPROGRESS;
    }
    if (length) memcpy(r->recv_buf, data, length);
    raw_arrived(r, length, h->flags);
    return UCS_OK;
}

static void ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t st)
{
    raw_t *r = arg;
    (void)ep;
    if (r->ep_status == UCS_OK) r->ep_status = st;
}

static void conn_cb(ucp_conn_request_h req, void *arg)
{
    raw_t *r = arg;
    if (r->conn_req == NULL)
        r->conn_req = req;
    else
        ucp_listener_reject(r->listener, req); /* one client per server */
}

/* ---- setup and teardown ----------------------------------------------------------------------- */

static int map_buffer(raw_t *r, void **buf, ucp_mem_h *memh)
{
    size_t page = 4096, len = (r->max_bytes + page - 1) / page * page;
    *buf = aligned_alloc(page, len ? len : page);
    if (*buf == NULL) {
        fprintf(stderr, "%s: cannot allocate %zu bytes\n", r->prog, len);
        return -1;
    }
    memset(*buf, 0x5a, len ? len : page); /* first touch before registering */
    ucp_mem_map_params_t mp = {.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
                               .address = *buf,
                               .length = len ? len : page};
    ucs_status_t st = ucp_mem_map(r->ctx, &mp, memh);
    if (st != UCS_OK) {
        fprintf(stderr, "%s: ucp_mem_map of %zu bytes: %s\n", r->prog, len, ucs_status_string(st));
        free(*buf);
        *buf = NULL;
        return -1;
    }
    return 0;
}

int raw_init(raw_t *r, const char *prog, size_t max_bytes, size_t rndv_min)
{
    memset(r, 0, sizeof(*r));
    r->prog = prog;
    r->max_bytes = max_bytes;
    r->rndv_min = rndv_min;
    for (unsigned i = 0; i < RAW_RING; i++) r->rx_free[i] = i;
    r->rx_nfree = RAW_RING;
    ucp_config_t *config;
    ucs_status_t st = ucp_config_read(NULL, NULL, &config);
    if (st != UCS_OK) {
        fprintf(stderr, "%s: ucp_config_read: %s\n", prog, ucs_status_string(st));
        return -1;
    }
    /* The fastest path UCX 1.13 offers here for endpoints with peer-failure handling, as pserv's
     * transport sets it up (unless the user set these): shared memory exposes error handling, so
     * it is used at all, and TCP is not made the rendezvous lane between processes of one host. */
    if (!getenv("UCX_MM_ERROR_HANDLING") && !getenv("UCX_POSIX_ERROR_HANDLING") && !getenv("UCX_SYSV_ERROR_HANDLING") &&
        (st = ucp_config_modify(config, "MM_ERROR_HANDLING", "y")) != UCS_OK)
        fprintf(stderr, "%s: shared memory with error handling unavailable (%s): TCP loopback\n", prog,
                ucs_status_string(st));
    if (!getenv("UCX_TCP_PUT_ENABLE") && (st = ucp_config_modify(config, "PUT_ENABLE", "n")) != UCS_OK) /* tcp's, by its name within the table */
        fprintf(stderr, "%s: cannot keep rendezvous off TCP (%s)\n", prog, ucs_status_string(st));
    ucp_params_t cp = {.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME,
                       .features = UCP_FEATURE_AM,
                       .name = "raw_ucx_am_echo"};
    st = ucp_init(&cp, config, &r->ctx);
    ucp_config_release(config);
    if (st != UCS_OK) {
        fprintf(stderr, "%s: ucp_init: %s\n", prog, ucs_status_string(st));
        return -1;
    }
    ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE, .thread_mode = UCS_THREAD_MODE_SINGLE};
    if ((st = ucp_worker_create(r->ctx, &wp, &r->worker)) != UCS_OK) {
        fprintf(stderr, "%s: ucp_worker_create: %s\n", prog, ucs_status_string(st));
        goto err_cleanup;
    }
    ucp_am_handler_param_t hp = {.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                                               UCP_AM_HANDLER_PARAM_FIELD_ARG,
                                 .id = RAW_AM_ID,
                                 .cb = am_cb,
                                 .arg = r};
    if ((st = ucp_worker_set_am_recv_handler(r->worker, &hp)) != UCS_OK) {
        fprintf(stderr, "%s: ucp_worker_set_am_recv_handler: %s\n", prog, ucs_status_string(st));
        goto err_worker;
    }
    if (map_buffer(r, &r->recv_buf, &r->recv_memh) != 0) goto err_worker;
    if (map_buffer(r, &r->send_buf, &r->send_memh) != 0) goto err_unmap_recv;
    return 0;

err_unmap_recv:
    ucp_mem_unmap(r->ctx, r->recv_memh);
    free(r->recv_buf);
err_worker:
    ucp_worker_destroy(r->worker);
err_cleanup:
    ucp_cleanup(r->ctx);
    memset(r, 0, sizeof(*r));
    return -1;
}

static void close_ep(raw_t *r, double timeout_s)
{
    ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS, .flags = 0};
    if (r->ep_status != UCS_OK) p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void *req = ucp_ep_close_nbx(r->ep, &p);
    double end = raw_now() + timeout_s;
    while (UCS_PTR_IS_PTR(req) && ucp_request_check_status(req) == UCS_INPROGRESS && raw_now() < end)
        ucp_worker_progress(r->worker);
    if (UCS_PTR_IS_PTR(req)) {
        if (ucp_request_check_status(req) == UCS_INPROGRESS) {
            fprintf(stderr, "%s: the endpoint did not close within %.0f s\n", r->prog, timeout_s);
            ucp_request_cancel(r->worker, req);
        }
        ucp_request_free(req);
    }
    r->ep = NULL;
}

void raw_fini(raw_t *r, double timeout_s)
{
    if (r->ctx == NULL) return;
    raw_msg_t m;
    while (ring_get(&r->pending, &m)) ucp_am_data_release(r->worker, m.desc); /* declined */
    if (r->ep) close_ep(r, timeout_s);
    if (r->conn_req) ucp_listener_reject(r->listener, r->conn_req);
    if (r->listener) ucp_listener_destroy(r->listener);
    ucp_mem_unmap(r->ctx, r->send_memh);
    ucp_mem_unmap(r->ctx, r->recv_memh);
    ucp_worker_destroy(r->worker);
    ucp_cleanup(r->ctx);
    free(r->send_buf);
    free(r->recv_buf);
    memset(r, 0, sizeof(*r));
}

/* ---- connections ----------------------------------------------------------------------------- */

static int make_addr(const raw_t *r, const char *host, uint16_t port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "%s: '%s' is not an IPv4 address\n", r->prog, host);
        return -1;
    }
    return 0;
}

int raw_listen(raw_t *r, const char *host, uint16_t port, uint16_t *bound)
{
    struct sockaddr_in sa;
    if (make_addr(r, host, port, &sa) != 0) return -1;
    ucp_listener_params_t lp = {
        .field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
        .sockaddr = {.addr = (const struct sockaddr *)&sa, .addrlen = sizeof(sa)},
        .conn_handler = {.cb = conn_cb, .arg = r},
    };
    ucs_status_t st = ucp_listener_create(r->worker, &lp, &r->listener);
    if (st != UCS_OK) {
        fprintf(stderr, "%s: cannot listen on %s:%u: %s\n", r->prog, host, port, ucs_status_string(st));
        return -1;
    }
    ucp_listener_attr_t attr = {.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR};
    if ((st = ucp_listener_query(r->listener, &attr)) != UCS_OK) {
        fprintf(stderr, "%s: ucp_listener_query: %s\n", r->prog, ucs_status_string(st));
        return -1;
    }
    *bound = ntohs(((const struct sockaddr_in *)&attr.sockaddr)->sin_port);
    return 0;
}

static int create_ep(raw_t *r, ucp_ep_params_t *ep)
{
    ep->field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep->err_mode = UCP_ERR_HANDLING_MODE_PEER; /* a vanished peer ends the program, not a hang */
    ep->err_handler.cb = ep_err_cb;
    ep->err_handler.arg = r;
    ucs_status_t st = ucp_ep_create(r->worker, ep, &r->ep);
    if (st != UCS_OK) {
        fprintf(stderr, "%s: ucp_ep_create: %s\n", r->prog, ucs_status_string(st));
        r->ep = NULL;
        return -1;
    }
    return 0;
}

int raw_accept(raw_t *r, double timeout_s)
{
    double end = raw_now() + timeout_s;
    while (r->conn_req == NULL) {
        ucp_worker_progress(r->worker);
        if (raw_now() > end) {
            fprintf(stderr, "%s: no client connected within %.0f s\n", r->prog, timeout_s);
            return -1;
        }
    }
    ucp_ep_params_t ep = {.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST, .conn_request = r->conn_req};
    r->conn_req = NULL;
    return create_ep(r, &ep);
}

int raw_connect(raw_t *r, const char *host, uint16_t port)
{
    struct sockaddr_in sa;
    if (make_addr(r, host, port, &sa) != 0) return -1;
    ucp_ep_params_t ep = {
        .field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR,
        .flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
        .sockaddr = {.addr = (const struct sockaddr *)&sa, .addrlen = sizeof(sa)},
    };
    return create_ep(r, &ep);
}

/* ---- messages -------------------------------------------------------------------------------- */

static void send_done(void *request, ucs_status_t st, void *user_data)
{
    raw_t *r = user_data;
    r->sends_inflight--;
    if (st != UCS_OK) raw_fail(r, st, "send");
    ucp_request_free(request);
}

int raw_send(raw_t *r, uint32_t flags, size_t len)
{
    const raw_hdr_t *h = NULL;
    for (size_t i = 0; i < sizeof(raw_hdrs) / sizeof(raw_hdrs[0]); i++)
        if (raw_hdrs[i].flags == flags) h = &raw_hdrs[i];
    if (h == NULL || len > r->max_bytes || r->ep == NULL) return -1;
    if (r->ep_status != UCS_OK) {
        fprintf(stderr, "%s: the peer is gone: %s\n", r->prog, ucs_status_string(r->ep_status));
        return -1;
    }
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS,
        .cb.send = send_done,
        .user_data = r,
        .flags = r->rndv_min && len >= r->rndv_min ? UCP_AM_SEND_FLAG_RNDV : 0,
    };
    if (len) {
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        p.memh = r->send_memh;
    }
    void *req = ucp_am_send_nbx(r->ep, RAW_AM_ID, h, sizeof(*h), len ? r->send_buf : NULL, len, &p);
    if (UCS_PTR_IS_ERR(req)) {
        fprintf(stderr, "%s: ucp_am_send_nbx of %zu bytes: %s\n", r->prog, len, ucs_status_string(UCS_PTR_STATUS(req)));
        return -1;
    }
    if (req != NULL) r->sends_inflight++;
    return 0;
}

static void recv_done(void *request, ucs_status_t st, size_t length, void *user_data)
{
    raw_rx_t *rx = user_data;
    raw_t *r = rx->r;
    (void)length;
    r->rx_free[r->rx_nfree++] = (unsigned)(rx - r->rx);
    if (st != UCS_OK)
        raw_fail(r, st, "rendezvous receive");
    else
        raw_arrived(r, rx->len, rx->flags);
    ucp_request_free(request);
}

int raw_progress(raw_t *r)
{
    ucp_worker_progress(r->worker);
    raw_msg_t m;
    while (r->rx_nfree > 0 && ring_get(&r->pending, &m)) {
        raw_rx_t *rx = &r->rx[r->rx_free[--r->rx_nfree]];
        *rx = (raw_rx_t){r, m.len, m.flags};
        ucp_request_param_t p = {
            .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_MEMH,
            .cb.recv_am = recv_done,
            .user_data = rx,
            .memh = r->recv_memh,
        };
        void *req = ucp_am_recv_data_nbx(r->worker, m.desc, r->recv_buf, m.len, &p);
        if (UCS_PTR_IS_ERR(req)) raw_fail(r, UCS_PTR_STATUS(req), "ucp_am_recv_data_nbx");
        if (req == NULL || UCS_PTR_IS_ERR(req)) r->rx_free[r->rx_nfree++] = (unsigned)(rx - r->rx);
        if (req == NULL) raw_arrived(r, m.len, m.flags);
    }
    return r->failed == UCS_OK ? 0 : -1;
}

int raw_take(raw_t *r, raw_msg_t *m)
{
    return ring_get(&r->arrived, m);
}

int raw_wait(raw_t *r, uint64_t want, int sends_idle, double timeout_s)
{
    double end = 0;
    for (unsigned spin = 0;; spin++) {
        if (raw_progress(r) != 0) return -1;
        if (r->n_arrived >= want && (!sends_idle || r->sends_inflight == 0)) return 0;
        if (r->ep_status != UCS_OK) {
            fprintf(stderr, "%s: the peer is gone: %s\n", r->prog, ucs_status_string(r->ep_status));
            return -1;
        }
        if ((spin & 1023) == 0) { /* the clock costs more than a turn: look now and then */
            double t = raw_now();
            if (end == 0) end = t + timeout_s;
            if (t > end) {
                fprintf(stderr, "%s: nothing came back within %.0f s (%llu of %llu messages)\n", r->prog, timeout_s,
                        (unsigned long long)r->n_arrived, (unsigned long long)want);
                return -1;
            }
        }
    }
}
