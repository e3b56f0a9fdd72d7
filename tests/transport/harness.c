#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t h_next(uint64_t *x)
{
    /* xorshift64*: cheap enough for 64 MiB payloads, and any corruption changes it. */
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 0x2545F4914F6CDD1DULL;
}

void h_fill(void *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed | 1, v;
    uint8_t *p = buf;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        v = h_next(&x);
        memcpy(p + i, &v, 8);
    }
    if (i < len) {
        v = h_next(&x);
        memcpy(p + i, &v, len - i);
    }
}

int h_check(const void *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed | 1, v;
    const uint8_t *p = buf;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        v = h_next(&x);
        if (memcmp(p + i, &v, 8) != 0) return 0;
    }
    if (i < len) {
        v = h_next(&x);
        if (memcmp(p + i, &v, len - i) != 0) return 0;
    }
    return 1;
}

uint64_t h_csum(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint64_t h = 0xcbf29ce484222325ULL ^ len, w;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

double h_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void h_deadline(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* ---- sink ---- */

static void h_sink_reply_done(void *arg, pserv_status_t st)
{
    (void)arg;
    (void)st;
}

static pserv_status_t h_sink_rx_buffer(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, size_t len,
                                       void **buf)
{
    h_sink_t *k = arg;
    h_msg_hdr_t h;
    pserv_status_t st = PSERV_OK;

    pthread_mutex_lock(&k->lock);
    k->rx_buffer_calls++;
    if (hdr_len != sizeof(h)) goto out;
    memcpy(&h, hdr, sizeof(h));
    if (h.seq >= H_MAX_SEQ || h.len != len) goto out;
    switch (k->mode) {
    case H_RXBUF_PROVIDE:
        free(k->bufs[h.seq]);
        k->bufs[h.seq] = malloc(len);
        *buf = k->bufs[h.seq];
        break;
    case H_RXBUF_REFUSE:
        if (h.seq & 1) {
            k->refused++;
            st = PSERV_ERR_NO_RESOURCE;
        }
        break;
    default:
        break;
    }
out:
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    return st;
}

static void h_sink_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    h_sink_t *k = arg;
    h_msg_hdr_t h;
    int ok = hdr_len == sizeof(h);

    if (ok) memcpy(&h, hdr, sizeof(h));
    ok = ok && h.magic == H_MAGIC && h.seq < H_MAX_SEQ && h.len == len;
    ok = ok && (len == 0 || data != NULL) && h_csum(data, len) == h.csum && h_check(data, len, h.seed);

    pthread_mutex_lock(&k->lock);
    if (ok && h.magic == H_MAGIC && h.reply == 2) {
        k->replies++; /* an echo coming back */
    } else if (!ok || k->seen[h.seq]) {
        k->bad++;
    } else {
        k->seen[h.seq] = 1;
        k->received++;
        if (k->mode == H_RXBUF_PROVIDE && k->bufs[h.seq] != NULL && data == k->bufs[h.seq]) k->in_core_buffer++;
    }
    if (ok && h.seq < H_MAX_SEQ && k->bufs[h.seq] != NULL && data == k->bufs[h.seq]) {
        free(k->bufs[h.seq]);
        k->bufs[h.seq] = NULL;
    }
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);

    if (ok && h.reply == 1) {
        /* Answer from inside the handler (progress thread) to the message's own peer; the
         * reply is header only, which also covers zero-length payloads. */
        h_msg_hdr_t r = {.magic = H_MAGIC, .seq = h.seq, .len = 0, .seed = 0, .csum = h_csum(NULL, 0), .reply = 2};
        ps_tp_send(peer, &r, sizeof(r), NULL, 0, NULL, h_sink_reply_done, NULL);
    }
}

static void h_sink_accepted(void *arg, ps_tp_peer_t *peer)
{
    h_sink_t *k = arg;
    pthread_mutex_lock(&k->lock);
    k->accepted++;
    k->last_accepted = peer;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
}

static void h_sink_failed(void *arg, ps_tp_peer_t *peer, pserv_status_t why)
{
    h_sink_t *k = arg;
    int all_done = 1;
    if (k->tracker != NULL) {
        pthread_mutex_lock(&k->tracker->lock);
        all_done = k->tracker->done == k->tracker->issued;
        pthread_mutex_unlock(&k->tracker->lock);
    }
    pthread_mutex_lock(&k->lock);
    k->failed++;
    k->fail_why = why;
    if (all_done) k->failed_after_sends++;
    int close = k->close_on_fail;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    if (close) ps_tp_peer_close(peer);
}

void h_sink_init(h_sink_t *k, h_rxbuf_mode_t mode)
{
    memset(k, 0, sizeof(*k));
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    k->mode = mode;
}

void h_sink_fini(h_sink_t *k)
{
    for (unsigned i = 0; i < H_MAX_SEQ; i++) free(k->bufs[i]);
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->lock);
}

ps_tp_handler_t h_sink_handler(h_sink_t *k)
{
    ps_tp_handler_t h = {.arg = k,
                         .rx_buffer = k->mode == H_RXBUF_NONE ? NULL : h_sink_rx_buffer,
                         .rx = h_sink_rx,
                         .peer_accepted = h_sink_accepted,
                         .peer_failed = h_sink_failed};
    return h;
}

int h_wait_sink(h_sink_t *k, const unsigned *counter, unsigned target, int timeout_ms)
{
    struct timespec ts;
    int rc = 0;
    h_deadline(&ts, timeout_ms);
    pthread_mutex_lock(&k->lock);
    while (*counter < target && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&k->cond, &k->lock, &ts);
    int ok = *counter >= target;
    pthread_mutex_unlock(&k->lock);
    return ok ? 0 : -1;
}

/* ---- sends ---- */

static void h_send_done(void *arg, pserv_status_t st)
{
    h_send_ctx_t *c = arg;
    h_sends_t *s = c->s;
    pthread_mutex_lock(&s->lock);
    if (s->state[c->seq]) s->twice++;
    s->state[c->seq] = 1;
    s->done++;
    if (st == PSERV_OK) {
        s->ok++;
    } else {
        s->errors++;
        s->last_error = st;
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void h_sends_init(h_sends_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
}

void h_sends_fini(h_sends_t *s)
{
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
}

pserv_status_t h_send(ps_tp_peer_t *peer, h_sends_t *s, h_send_ctx_t *ctx, unsigned seq, const void *payload,
                      size_t len, uint64_t seed, ps_tp_mem_t *mem, int want_reply)
{
    h_msg_hdr_t h = {.magic = H_MAGIC, .seq = seq, .len = len, .seed = seed, .csum = h_csum(payload, len),
                     .reply = (uint32_t)want_reply};
    ctx->s = s;
    ctx->seq = seq;
    pthread_mutex_lock(&s->lock);
    s->issued++;
    pthread_mutex_unlock(&s->lock);
    /* h lives on this stack frame only: the transport must copy it. */
    return ps_tp_send(peer, &h, sizeof(h), payload, len, mem, h_send_done, ctx);
}

int h_wait_sends(h_sends_t *s, unsigned target, int timeout_ms)
{
    struct timespec ts;
    int rc = 0;
    h_deadline(&ts, timeout_ms);
    pthread_mutex_lock(&s->lock);
    while (s->done < target && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    int ok = s->done >= target;
    pthread_mutex_unlock(&s->lock);
    return ok ? 0 : -1;
}

/* ---- transports ---- */

ps_tp_t *h_listen(ps_tp_handler_t handler, uint16_t *port)
{
    ps_tp_params_t p = {.listen_host = "127.0.0.1", .listen_port = 0, .handler = handler};
    ps_tp_t *tp = NULL;
    if (ps_tp_create(&p, &tp) < 0) return NULL;
    *port = ps_tp_listen_port(tp);
    return tp;
}

ps_tp_t *h_client(ps_tp_handler_t handler)
{
    ps_tp_params_t p = {.handler = handler};
    ps_tp_t *tp = NULL;
    if (ps_tp_create(&p, &tp) < 0) return NULL;
    return tp;
}
