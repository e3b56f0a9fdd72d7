/*
 * Shutting down with traffic in flight: ps_tp_destroy and ps_tp_peer_close must end every
 * send with exactly one callback, promptly, and the other side must learn of it. Also: an
 * idle transport sleeps instead of spinning.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
    h_sink_t srv, cli;
    ps_tp_t *server, *client;
    ps_tp_peer_t *peer;
    uint16_t port;
} pair_t;

static void pair_open(pair_t *p)
{
    h_sink_init(&p->srv, H_RXBUF_PROVIDE);
    h_sink_init(&p->cli, H_RXBUF_NONE);
    p->srv.close_on_fail = 1; /* accepted peers are closed from inside peer_failed */
    p->server = h_listen(h_sink_handler(&p->srv), &p->port);
    cr_assert_not_null(p->server);
    p->client = h_client(h_sink_handler(&p->cli));
    cr_assert_not_null(p->client);
    cr_assert_eq(ps_tp_connect(p->client, "127.0.0.1", p->port, &p->peer), PSERV_OK);
}

/* Sends n messages of len bytes (one shared payload) without waiting. */
static void burst(pair_t *p, h_sends_t *s, h_send_ctx_t *ctx, unsigned first, unsigned n, const uint8_t *buf,
                  size_t len)
{
    for (unsigned i = first; i < first + n; i++) h_send(p->peer, s, &ctx[i], i, buf, len, 21, NULL, 0);
}

static uint8_t *payload(size_t len)
{
    uint8_t *buf = malloc(len);
    cr_assert_not_null(buf);
    h_fill(buf, len, 21);
    return buf;
}

Test(shutdown, destroy_sender_with_sends_in_flight, .timeout = 30)
{
    pair_t p;
    h_sends_t s;
    static h_send_ctx_t ctx[64];
    uint8_t *small = payload(1u << 20), *large = payload(16u << 20);

    pair_open(&p);
    h_sends_init(&s);
    burst(&p, &s, ctx, 0, 32, small, 1u << 20);
    burst(&p, &s, ctx, 32, 4, large, 16u << 20);
    double t0 = h_now();
    ps_tp_destroy(p.client);
    double dt = h_now() - t0;
    cr_log_info("destroy with 36 sends in flight: %.3f s; %u ok, %u failed", dt, s.ok, s.errors);
    cr_assert_lt(dt, 4.0 * H_SLOWDOWN);
    cr_assert_eq(s.done, 36, "every send callback ran before destroy returned (%u)", s.done);
    cr_assert_eq(s.twice, 0);
    cr_assert(s.errors == 0 || s.last_error == PSERV_ERR_SHUTDOWN, "%s", pserv_strerror(s.last_error));

    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.failed, 1, 5000), 0, "the receiver sees the sender go");
    cr_assert_eq(p.srv.bad, 0);
    cr_assert_geq(p.srv.received, s.ok > 4 ? 1 : 0);
    ps_tp_destroy(p.server);
    h_sink_fini(&p.srv);
    h_sink_fini(&p.cli);
    h_sends_fini(&s);
    free(small);
    free(large);
}

Test(shutdown, destroy_receiver_with_sends_in_flight, .timeout = 30)
{
    pair_t p;
    h_sends_t s;
    static h_send_ctx_t ctx[64];
    uint8_t *large = payload(16u << 20);

    pair_open(&p);
    h_sends_init(&s);
    s.issued = 0;
    p.cli.tracker = &s;
    burst(&p, &s, ctx, 0, 24, large, 16u << 20);
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.received, 1, 5000), 0);
    double t0 = h_now();
    ps_tp_destroy(p.server);
    double dt = h_now() - t0;
    cr_assert_lt(dt, 4.0 * H_SLOWDOWN, "destroy with sends in flight to it took %.3f s", dt);

    cr_assert_eq(h_wait_sends(&s, 24, 5000), 0, "sends to a destroyed receiver complete (%u)", s.done);
    cr_assert_eq(h_wait_sink(&p.cli, &p.cli.failed, 1, 5000), 0, "the sender sees the receiver go");
    cr_log_info("%u ok, %u failed, after %.3f s", s.ok, s.errors, h_now() - t0);
    cr_assert_eq(p.cli.failed_after_sends, 1);
    cr_assert_eq(s.twice, 0);
    ps_tp_destroy(p.client);
    h_sink_fini(&p.srv);
    h_sink_fini(&p.cli);
    h_sends_fini(&s);
    free(large);
}

Test(shutdown, peer_close_with_sends_in_flight, .timeout = 30)
{
    pair_t p;
    h_sends_t s;
    static h_send_ctx_t ctx[64];
    uint8_t *large = payload(8u << 20);

    pair_open(&p);
    h_sends_init(&s);
    burst(&p, &s, ctx, 0, 16, large, 8u << 20);
    double t0 = h_now();
    ps_tp_peer_close(p.peer); /* from another thread: returns once the close ran */
    cr_assert_lt(h_now() - t0, 2.0 * H_SLOWDOWN);
    cr_assert_eq(h_wait_sends(&s, 16, 5000), 0, "closed peer's sends complete (%u)", s.done);
    cr_assert(s.errors == 0 || s.last_error == PSERV_ERR_SHUTDOWN, "%s", pserv_strerror(s.last_error));
    cr_assert_eq(s.twice, 0);
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.failed, 1, 5000), 0, "the other side sees the close");
    cr_assert_eq(p.cli.failed, 0, "no peer_failed for a peer we closed ourselves");
    cr_log_info("peer close: %u ok, %u failed", s.ok, s.errors);

    /* The transport stays usable: a new connection works. */
    cr_assert_eq(ps_tp_connect(p.client, "127.0.0.1", p.port, &p.peer), PSERV_OK);
    burst(&p, &s, ctx, 16, 2, large, 4096);
    cr_assert_eq(h_wait_sends(&s, 18, 5000), 0);
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.accepted, 2, 5000), 0);

    ps_tp_destroy(p.client);
    ps_tp_destroy(p.server);
    h_sink_fini(&p.srv);
    h_sink_fini(&p.cli);
    h_sends_fini(&s);
    free(large);
}

Test(shutdown, create_destroy_cycles, .timeout = 30)
{
    for (int i = 0; i < 10; i++) {
        pair_t p;
        h_sends_t s;
        h_send_ctx_t ctx[2];
        uint8_t *buf = payload(1u << 20);
        pair_open(&p);
        h_sends_init(&s);
        burst(&p, &s, ctx, 0, 2, buf, 1u << 20);
        if (i & 1) cr_assert_eq(h_wait_sends(&s, 2, 5000), 0);
        ps_tp_destroy(p.client);
        ps_tp_destroy(p.server);
        cr_assert_eq(s.done, 2);
        h_sink_fini(&p.srv);
        h_sink_fini(&p.cli);
        h_sends_fini(&s);
        free(buf);
    }
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

Test(shutdown, idle_transport_sleeps, .timeout = 30)
{
    pair_t p;
    h_sends_t s;
    h_send_ctx_t ctx[1];
    uint8_t *buf = payload(4096);

    pair_open(&p);
    h_sends_init(&s);
    burst(&p, &s, ctx, 0, 1, buf, 4096);
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.received, 1, 5000), 0);
    usleep(100 * 1000);
    double c0 = cpu_seconds(), t0 = h_now();
    usleep(1000 * 1000);
    double cpu = cpu_seconds() - c0, wall = h_now() - t0;
    cr_log_info("idle: %.3f s CPU over %.3f s", cpu, wall);
    cr_assert_lt(cpu, 0.1 * wall, "two idle progress threads must not spin");

    ps_tp_destroy(p.client);
    ps_tp_destroy(p.server);
    h_sink_fini(&p.srv);
    h_sink_fini(&p.cli);
    h_sends_fini(&s);
    free(buf);
}

Test(shutdown, stop_then_destroy, .timeout = 30)
{
    pair_t p;
    h_sends_t s;
    h_send_ctx_t ctx[8];
    const size_t len = 1u << 20;
    ps_tp_mem_t *mem;
    uint8_t *buf = payload(len);

    pair_open(&p);
    h_sends_init(&s);
    cr_assert_eq(ps_tp_mem_register(p.client, buf, len, &mem), PSERV_OK);
    for (unsigned i = 0; i < 4; i++) h_send(p.peer, &s, &ctx[i], i, buf, len, 21, mem, 0);
    cr_assert_eq(h_wait_sink(&p.srv, &p.srv.received, 4, 5000), 0);

    ps_tp_stop(p.client);
    ps_tp_stop(p.client); /* twice is harmless */
    cr_assert_eq(s.done, 4, "send callbacks ran before stop returned");
    /* Stopped: peers and registrations stay valid, sends fail at once with cb run once. */
    cr_assert_str_neq(ps_tp_peer_name(p.peer), "");
    cr_assert_eq(h_send(p.peer, &s, &ctx[4], 4, buf, len, 21, mem, 0), PSERV_ERR_SHUTDOWN);
    cr_assert_eq(s.done, 5);
    ps_tp_peer_close(p.peer); /* does not wait for a thread that is gone */
    ps_tp_mem_deregister(mem);

    ps_tp_stop(p.server);
    pthread_mutex_lock(&p.srv.lock);
    unsigned handled = p.srv.received + p.srv.failed + p.srv.accepted;
    pthread_mutex_unlock(&p.srv.lock);
    usleep(100 * 1000);
    pthread_mutex_lock(&p.srv.lock);
    cr_assert_eq(p.srv.received + p.srv.failed + p.srv.accepted, handled, "no handler after ps_tp_stop");
    pthread_mutex_unlock(&p.srv.lock);

    ps_tp_destroy(p.client);
    ps_tp_destroy(p.server);
    h_sink_fini(&p.srv);
    h_sink_fini(&p.cli);
    h_sends_fini(&s);
    free(buf);
}
