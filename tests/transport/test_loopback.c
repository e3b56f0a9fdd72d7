/* The UCX transport over real UCX on 127.0.0.1: two transports in one process. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct {
    h_sink_t srv, cli;
    ps_tp_t *server, *client;
    ps_tp_peer_t *peer; /* client -> server */
    uint16_t port;
} pair_t;

static void pair_open(pair_t *p, h_rxbuf_mode_t mode)
{
    h_sink_init(&p->srv, mode);
    h_sink_init(&p->cli, H_RXBUF_NONE);
    p->server = h_listen(h_sink_handler(&p->srv), &p->port);
    cr_assert_not_null(p->server, "listening transport");
    cr_assert_neq(p->port, 0, "ephemeral port reported");
    p->client = h_client(h_sink_handler(&p->cli));
    cr_assert_not_null(p->client, "client transport");
    cr_assert_eq(ps_tp_connect(p->client, "127.0.0.1", p->port, &p->peer), PSERV_OK);
}

static void pair_close(pair_t *p)
{
    double t0 = h_now();
    ps_tp_destroy(p->client);
    double t1 = h_now();
    ps_tp_destroy(p->server);
    double t2 = h_now();
    cr_log_info("destroy: client %.3f s, server %.3f s", t1 - t0, t2 - t1);
    /* Destroy waits at most a bounded flush and close time. */
    cr_assert_lt(t2 - t0, 6.0);
    h_sink_fini(&p->cli);
    h_sink_fini(&p->srv);
}

static const size_t sizes[] = {0, 8, 64, 4096, 65536, 1u << 20, 8u << 20, 64u << 20};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static void run_sizes(h_rxbuf_mode_t mode)
{
    pair_t p;
    h_sends_t s;
    h_send_ctx_t ctx[NSIZES];
    void *buf[NSIZES];

    pair_open(&p, mode);
    h_sends_init(&s);
    for (unsigned i = 0; i < NSIZES; i++) {
        buf[i] = malloc(sizes[i] ? sizes[i] : 1);
        cr_assert_not_null(buf[i]);
        h_fill(buf[i], sizes[i], 7919u * i + 1);
    }
    for (unsigned i = 0; i < NSIZES; i++)
        cr_assert_eq(h_send(p.peer, &s, &ctx[i], i, buf[i], sizes[i], 7919u * i + 1, NULL, 0), PSERV_OK);

    cr_assert_eq(h_wait_sends(&s, NSIZES, 30000), 0, "all sends complete (%u of %zu)", s.done, NSIZES);
    cr_assert_eq(s.ok, NSIZES, "all sends succeed (last error %s)", pserv_strerror(s.last_error));
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.received, NSIZES, 30000), 0, "all messages arrive (%u)",
                 p.srv.received);
    cr_assert_eq(p.srv.bad, 0, "every payload and checksum intact");
    cr_assert_eq(p.srv.accepted, 1);
    cr_assert_eq(s.twice, 0);
    if (mode != H_RXBUF_NONE) {
        /* 1 MiB and up must take the rendezvous path, which asks rx_buffer. */
        cr_assert_geq(p.srv.rx_buffer_calls, 3, "rendezvous used (%u rx_buffer calls)", p.srv.rx_buffer_calls);
        cr_assert_lt(p.srv.rx_buffer_calls, NSIZES, "small messages went eager");
    }
    if (mode == H_RXBUF_PROVIDE)
        cr_assert_eq(p.srv.in_core_buffer, p.srv.rx_buffer_calls, "payload delivered in the buffer core chose");

    pair_close(&p);
    h_sends_fini(&s);
    for (unsigned i = 0; i < NSIZES; i++) free(buf[i]);
}

Test(loopback, sizes_into_core_buffer, .timeout = 60)
{
    run_sizes(H_RXBUF_PROVIDE);
}

Test(loopback, sizes_into_transport_buffer, .timeout = 60)
{
    run_sizes(H_RXBUF_NONE);
}

Test(loopback, sizes_core_leaves_buffer_null, .timeout = 60)
{
    run_sizes(H_RXBUF_NULL);
}

/* ---- many in flight, from several threads at once ---- */

#define MANY 256
#define SENDERS 4

typedef struct {
    pair_t *p;
    h_sends_t *s;
    h_send_ctx_t *ctx;
    void **buf;
    size_t *len;
    unsigned first, count;
    int failures;
} sender_arg_t;

static void *sender_main(void *arg)
{
    sender_arg_t *a = arg;
    for (unsigned i = a->first; i < a->first + a->count; i++)
        if (h_send(a->p->peer, a->s, &a->ctx[i], i, a->buf[i], a->len[i], 31u * i + 5, NULL, 0) != PSERV_OK)
            a->failures++;
    return NULL;
}

Test(loopback, many_in_flight_concurrent_senders, .timeout = 60)
{
    static const size_t mix[] = {8, 100, 4096, 20000, 65536, 300000, 1u << 20, 0};
    pair_t p;
    h_sends_t s;
    static h_send_ctx_t ctx[MANY];
    static void *buf[MANY];
    static size_t len[MANY];
    pthread_t th[SENDERS];
    sender_arg_t args[SENDERS];

    pair_open(&p, H_RXBUF_PROVIDE);
    h_sends_init(&s);
    for (unsigned i = 0; i < MANY; i++) {
        len[i] = mix[(i * 5 + i / 8) % (sizeof(mix) / sizeof(mix[0]))];
        buf[i] = malloc(len[i] ? len[i] : 1);
        h_fill(buf[i], len[i], 31u * i + 5);
    }
    double t0 = h_now();
    for (unsigned t = 0; t < SENDERS; t++) {
        args[t] = (sender_arg_t){.p = &p, .s = &s, .ctx = ctx, .buf = buf, .len = len,
                                 .first = t * (MANY / SENDERS), .count = MANY / SENDERS};
        cr_assert_eq(pthread_create(&th[t], NULL, sender_main, &args[t]), 0);
    }
    for (unsigned t = 0; t < SENDERS; t++) {
        pthread_join(th[t], NULL);
        cr_assert_eq(args[t].failures, 0);
    }
    cr_assert_eq(h_wait_sends(&s, MANY, 30000), 0, "completions: %u of %d", s.done, MANY);
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.received, MANY, 30000), 0, "received %u of %d", p.srv.received, MANY);
    double dt = h_now() - t0;
    cr_assert_eq(s.ok, MANY);
    cr_assert_eq(s.twice, 0, "a completion ran twice");
    cr_assert_eq(p.srv.bad, 0);
    for (unsigned i = 0; i < MANY; i++) {
        cr_assert(s.state[i], "send %u completed", i);
        cr_assert(p.srv.seen[i], "message %u received", i);
    }
    cr_log_info("%d messages from %d threads in %.3f s", MANY, SENDERS, dt);

    pair_close(&p);
    h_sends_fini(&s);
    for (unsigned i = 0; i < MANY; i++) free(buf[i]);
}

/* ---- replies sent from inside a handler, mapped back through reply_ep ---- */

Test(loopback, reply_from_handler, .timeout = 30)
{
    pair_t p;
    h_sends_t s;
    h_send_ctx_t ctx[32];
    static uint8_t payload[32][70000];

    pair_open(&p, H_RXBUF_NONE);
    h_sends_init(&s);
    for (unsigned i = 0; i < 32; i++) {
        size_t n = (i & 1) ? sizeof(payload[i]) : 16;
        h_fill(payload[i], n, i + 100);
        cr_assert_eq(h_send(p.peer, &s, &ctx[i], i, payload[i], n, i + 100, NULL, 1), PSERV_OK);
    }
    cr_assert_eq(h_wait_sink(&p.cli, &p.cli.replies, 32, 10000), 0, "replies: %u", p.cli.replies);
    cr_assert_eq(h_wait_sends(&s, 32, 10000), 0);
    cr_assert_eq(p.srv.received, 32);
    cr_assert_eq(p.cli.bad, 0);
    cr_assert_eq(p.srv.accepted, 1);

    char want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%u", (unsigned)p.port);
    cr_assert_str_eq(ps_tp_peer_name(p.peer), want);
    cr_assert(strncmp(ps_tp_peer_name(p.srv.last_accepted), "127.0.0.1:", 10) == 0, "accepted peer named %s",
              ps_tp_peer_name(p.srv.last_accepted));
    int tag;
    cr_assert_null(ps_tp_peer_get_ctx(p.peer));
    ps_tp_peer_set_ctx(p.peer, &tag);
    cr_assert_eq(ps_tp_peer_get_ctx(p.peer), &tag);
    cr_assert_eq(ps_tp_peer_is_failed(p.peer), 0);

    pair_close(&p);
    h_sends_fini(&s);
}

/* ---- registered memory ---- */

Test(loopback, registered_memory_send, .timeout = 30)
{
    static const size_t lens[] = {4096, 1u << 20, 8u << 20};
    const size_t region = 16u << 20;
    pair_t p;
    h_sends_t s;
    h_send_ctx_t ctx[4];
    ps_tp_mem_t *mem = NULL;
    uint8_t *base;

    pair_open(&p, H_RXBUF_PROVIDE);
    h_sends_init(&s);
    cr_assert_eq(posix_memalign((void **)&base, 4096, region), 0);
    cr_assert_eq(ps_tp_mem_register(p.client, base, region, &mem), PSERV_OK);
    size_t off = 0;
    for (unsigned i = 0; i < 3; i++) {
        h_fill(base + off, lens[i], 500 + i);
        cr_assert_eq(h_send(p.peer, &s, &ctx[i], i, base + off, lens[i], 500 + i, mem, 0), PSERV_OK);
        off += lens[i] + 4096;
    }
    cr_assert_eq(h_wait_sends(&s, 3, 10000), 0);
    cr_assert_eq(s.ok, 3, "registered sends succeed: %s", pserv_strerror(s.last_error));
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.received, 3, 10000), 0);
    cr_assert_eq(p.srv.bad, 0);

    /* A registration that does not cover the payload is refused, and cb still runs once. */
    uint8_t outside[64];
    h_fill(outside, sizeof(outside), 1);
    cr_assert_eq(h_send(p.peer, &s, &ctx[3], 3, outside, sizeof(outside), 1, mem, 0), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(s.done, 4);
    cr_assert_eq(s.last_error, PSERV_ERR_INVALID_ARG);

    ps_tp_mem_deregister(mem);
    pair_close(&p);
    free(base);
    h_sends_fini(&s);
}

/* ---- core refusing rendezvous messages ---- */

Test(loopback, refused_rendezvous_is_drained, .timeout = 30)
{
    enum { N = 16 };
    const size_t len = 1u << 20;
    pair_t p;
    h_sends_t s;
    h_send_ctx_t ctx[2 * N];
    uint8_t *buf = malloc(len);

    pair_open(&p, H_RXBUF_REFUSE);
    h_sends_init(&s);
    h_fill(buf, len, 77);
    for (unsigned i = 0; i < N; i++) cr_assert_eq(h_send(p.peer, &s, &ctx[i], i, buf, len, 77, NULL, 0), PSERV_OK);
    cr_assert_eq(h_wait_sends(&s, N, 10000), 0, "refused sends still complete");
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.received, N / 2, 10000), 0);
    unsigned mask = 0;
    for (unsigned i = 0; i < N; i++) mask |= p.srv.seen[i] ? 1u << i : 0;
    /* Every 1 MiB message went by rendezvous (odd ones refused there), even the first ones. */
    cr_assert_eq(p.srv.refused, N / 2, "refused %u, received mask %x", p.srv.refused, mask);

    /* The connection keeps working after refusals (even seqs only: odd ones are refused). */
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(h_send(p.peer, &s, &ctx[N + i], 2 * (N + i), buf, len, 77, NULL, 0), PSERV_OK);
    cr_assert_eq(h_wait_sends(&s, 2 * N, 10000), 0);
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.received, N / 2 + N, 10000), 0);
    cr_assert_eq(p.srv.bad, 0);
    cr_assert_eq(s.errors, 0);

    pair_close(&p);
    h_sends_fini(&s);
    free(buf);
}

/* ---- argument checks: errors come back and cb still runs once ---- */

Test(loopback, bad_arguments, .timeout = 20)
{
    pair_t p;
    uint8_t big[PS_TP_MAX_HDR + 1] = {0};

    pair_open(&p, H_RXBUF_NONE);
    cr_assert_eq(ps_tp_send(p.peer, big, sizeof(big), NULL, 0, NULL, NULL, NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_tp_send(NULL, big, 8, NULL, 0, NULL, NULL, NULL), PSERV_ERR_INVALID_ARG);
    ps_tp_peer_t *peer;
    cr_assert_eq(ps_tp_connect(p.client, "no-such-host.invalid", 1, &peer), PSERV_ERR_UNREACHABLE);
    cr_assert_eq(ps_tp_connect(p.client, "127.0.0.1", 0, &peer), PSERV_ERR_INVALID_ARG);
    ps_tp_params_t bad = {.listen_host = NULL};
    ps_tp_t *tp;
    cr_assert_eq(ps_tp_create(&bad, &tp), PSERV_ERR_INVALID_ARG, "rx handler is required");
    pair_close(&p);
}
