/*
 * Failures over real UCX: nothing listening, a peer SIGKILLed mid-transfer (in a forked
 * child), and shutting down or closing with messages in flight. Each must end in errors
 * and callbacks, within seconds, never in a hang.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "../tsan/fork.h"

/* A port nobody listens on: bound once by the kernel, then released. */
static uint16_t free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Reads exactly len bytes within timeout_ms; 0 on success. */
static int read_within(int fd, void *buf, size_t len, int timeout_ms)
{
    size_t got = 0;
    double end = h_now() + timeout_ms / 1000.0;
    while (got < len) {
        int left = (int)((end - h_now()) * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0) return -1;
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

static void kill_child(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

Test(failure, connect_to_nothing, .timeout = 30)
{
    h_sink_t k;
    h_sends_t s;
    h_send_ctx_t ctx[4];
    static uint8_t big[1u << 20];
    ps_tp_peer_t *peer;

    h_sink_init(&k, H_RXBUF_NONE);
    h_sends_init(&s);
    k.tracker = &s;
    ps_tp_t *tp = h_client(h_sink_handler(&k));
    cr_assert_not_null(tp);

    double t0 = h_now();
    cr_assert_eq(ps_tp_connect(tp, "127.0.0.1", free_port(), &peer), PSERV_OK, "connect starts at once");
    h_fill(big, sizeof(big), 3);
    /* The refusal may already be known for the second one (then it fails in the call). */
    h_send(peer, &s, &ctx[0], 0, big, 64, 3, NULL, 0);
    h_send(peer, &s, &ctx[1], 1, big, sizeof(big), 3, NULL, 0);
    cr_assert_eq(h_wait_sends(&s, 2, 10000), 0, "sends to nowhere complete");
    cr_assert_eq(s.errors, 2, "and fail (%u ok)", s.ok);
    cr_assert_eq(h_wait_sink(&k, &k.failed, 1, 10000), 0, "peer_failed fires");
    double dt = h_now() - t0;
    cr_log_info("refused connection reported in %.3f s: %s", dt, pserv_strerror(k.fail_why));
    cr_assert(k.fail_why == PSERV_ERR_UNREACHABLE || k.fail_why == PSERV_ERR_PEER_FAILED, "why: %s",
              pserv_strerror(k.fail_why));
    cr_assert_eq(k.failed_after_sends, 1, "sends failed before peer_failed");
    cr_assert(ps_tp_peer_is_failed(peer));

    /* Later sends fail at once, in the caller, with cb run exactly once. */
    cr_assert_eq(h_send(peer, &s, &ctx[2], 2, big, 64, 3, NULL, 0), k.fail_why);
    cr_assert_eq(s.done, 3);
    usleep(200 * 1000);
    cr_assert_eq(k.failed, 1, "peer_failed once per peer");
    cr_assert_eq(s.twice, 0);

    ps_tp_peer_close(peer);
    ps_tp_destroy(tp);
    h_sink_fini(&k);
    h_sends_fini(&s);
}

/* ---- a child transport that takes the rendezvous and then never moves again ---- */

static int g_sig_fd;

static pserv_status_t stuck_rx_buffer(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, size_t len,
                                      void **buf)
{
    char c = 'R';
    if (write(g_sig_fd, &c, 1) != 1) _exit(3);
    for (;;) pause(); /* hold the progress thread: every transfer to us stays in flight */
    return PSERV_OK;
}

static void noop_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
}

static void child_stuck_receiver(int port_fd, int sig_fd)
{
    g_sig_fd = sig_fd;
    ps_tp_handler_t h = {.rx_buffer = stuck_rx_buffer, .rx = noop_rx};
    uint16_t port;
    ps_tp_t *tp = h_listen(h, &port);
    if (tp == NULL) _exit(2);
    if (write(port_fd, &port, sizeof(port)) != sizeof(port)) _exit(2);
    for (;;) pause();
}

/* Forks a child transport running child(port_fd, aux_fd); returns its pid, port, and the read
 * end of its aux pipe. Fails the test if the child does not report its port in time. */
static pid_t start_child(void (*child)(int, int), uint16_t *port, int *aux_rd)
{
    int port_pipe[2], aux_pipe[2];
    TSAN_SKIP_FORKED_THREADS();
    cr_assert_eq(pipe(port_pipe), 0);
    cr_assert_eq(pipe(aux_pipe), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) child(port_pipe[1], aux_pipe[1]);
    if (read_within(port_pipe[0], port, sizeof(*port), 10000) != 0) {
        kill_child(pid);
        cr_assert_fail("child transport did not start");
    }
    *aux_rd = aux_pipe[0];
    return pid;
}

Test(failure, receiver_killed_with_sends_in_flight, .timeout = 40)
{
    enum { N = 8 };
    const size_t len = 8u << 20;
    uint16_t port;
    int sig_rd;
    pid_t pid = start_child(child_stuck_receiver, &port, &sig_rd);
    h_sink_t k;
    h_sends_t s;
    h_send_ctx_t ctx[N];
    ps_tp_peer_t *peer;
    uint8_t *buf = malloc(len);
    h_fill(buf, len, 11);
    h_sink_init(&k, H_RXBUF_NONE);
    h_sends_init(&s);
    k.tracker = &s;
    ps_tp_t *tp = h_client(h_sink_handler(&k));
    cr_assert_not_null(tp);
    cr_assert_eq(ps_tp_connect(tp, "127.0.0.1", port, &peer), PSERV_OK);
    for (unsigned i = 0; i < N; i++) cr_assert_eq(h_send(peer, &s, &ctx[i], i, buf, len, 11, NULL, 0), PSERV_OK);

    char c;
    int got = read_within(sig_rd, &c, 1, 10000);
    usleep(100 * 1000);
    pthread_mutex_lock(&s.lock);
    unsigned done_before = s.done;
    pthread_mutex_unlock(&s.lock);
    double t0 = h_now();
    kill_child(pid);
    cr_assert_eq(got, 0, "the child saw the first rendezvous");
    cr_assert_eq(done_before, 0, "every send was still in flight at the kill");

    cr_assert_eq(h_wait_sends(&s, N, 10000), 0, "in-flight sends complete after the kill (%u of %d)", s.done, N);
    cr_assert_eq(h_wait_sink(&k, &k.failed, 1, 10000), 0, "peer_failed fires");
    double dt = h_now() - t0;
    cr_log_info("killed receiver detected in %.3f s (%s)", dt, pserv_strerror(k.fail_why));
    cr_assert_lt(dt, 5.0);
    cr_assert_eq(s.errors, N, "every in-flight send fails (%u ok)", s.ok);
    cr_assert_eq(s.last_error, PSERV_ERR_PEER_FAILED);
    cr_assert_eq(k.fail_why, PSERV_ERR_PEER_FAILED);
    cr_assert_eq(k.failed_after_sends, 1, "sends completed before peer_failed");
    cr_assert_eq(s.twice, 0);

    double t1 = h_now();
    ps_tp_destroy(tp);
    cr_assert_lt(h_now() - t1, 3.0, "destroy after a failure is prompt");
    h_sink_fini(&k);
    h_sends_fini(&s);
    free(buf);
}

Test(failure, destroy_while_receiver_is_stuck, .timeout = 40)
{
    enum { N = 4 };
    const size_t len = 8u << 20;
    uint16_t port;
    int sig_rd;
    pid_t pid = start_child(child_stuck_receiver, &port, &sig_rd);
    h_sink_t k;
    h_sends_t s;
    h_send_ctx_t ctx[N];
    ps_tp_peer_t *peer;
    uint8_t *buf = malloc(len);
    h_fill(buf, len, 14);
    h_sink_init(&k, H_RXBUF_NONE);
    h_sends_init(&s);
    ps_tp_t *tp = h_client(h_sink_handler(&k));
    cr_assert_not_null(tp);
    cr_assert_eq(ps_tp_connect(tp, "127.0.0.1", port, &peer), PSERV_OK);
    for (unsigned i = 0; i < N; i++) h_send(peer, &s, &ctx[i], i, buf, len, 14, NULL, 0);
    char c;
    int got = read_within(sig_rd, &c, 1, 10000);

    /* The peer is alive but will never answer: destroy must still end, within its bounds. */
    double t0 = h_now();
    ps_tp_destroy(tp);
    double dt = h_now() - t0;
    kill_child(pid);
    cr_assert_eq(got, 0, "the child took the first rendezvous");
    cr_log_info("destroy with a stuck peer: %.3f s, %u ok, %u failed", dt, s.ok, s.errors);
    cr_assert_lt(dt, 5.0);
    cr_assert_eq(s.done, N, "every send callback ran (%u)", s.done);
    cr_assert_eq(s.errors, N);
    cr_assert_eq(s.last_error, PSERV_ERR_SHUTDOWN);
    cr_assert_eq(s.twice, 0);
    h_sink_fini(&k);
    h_sends_fini(&s);
    free(buf);
}

/* ---- a child that receives a stream for real and is killed in the middle ---- */

static int g_count_fd;
static unsigned g_count;

static void counting_rx(void *arg, ps_tp_peer_t *peer, const void *hdr, size_t hdr_len, void *data, size_t len)
{
    if (++g_count == 8) {
        char c = 'C';
        if (write(g_count_fd, &c, 1) != 1) _exit(3);
    }
}

static void child_receiver(int port_fd, int count_fd)
{
    g_count_fd = count_fd;
    ps_tp_handler_t h = {.rx = counting_rx};
    uint16_t port;
    ps_tp_t *tp = h_listen(h, &port);
    if (tp == NULL) _exit(2);
    if (write(port_fd, &port, sizeof(port)) != sizeof(port)) _exit(2);
    for (;;) pause();
}

Test(failure, receiver_killed_mid_stream, .timeout = 40)
{
    const size_t len = 4u << 20;
    const unsigned window = 8;
    uint16_t port;
    int count_rd;
    pid_t pid = start_child(child_receiver, &port, &count_rd);
    h_sink_t k;
    h_sends_t s;
    static h_send_ctx_t ctx[H_MAX_SEQ];
    ps_tp_peer_t *peer;
    uint8_t *buf = malloc(len);
    h_fill(buf, len, 12);
    h_sink_init(&k, H_RXBUF_NONE);
    h_sends_init(&s);
    ps_tp_t *tp = h_client(h_sink_handler(&k));
    cr_assert_not_null(tp);
    cr_assert_eq(ps_tp_connect(tp, "127.0.0.1", port, &peer), PSERV_OK);

    /* Keep `window` sends in flight until the peer is gone. */
    unsigned seq = 0;
    int killed = 0;
    double t_kill = 0, end = h_now() + 15;
    while (h_now() < end && seq < H_MAX_SEQ) {
        pthread_mutex_lock(&k.lock);
        int failed = k.failed > 0;
        pthread_mutex_unlock(&k.lock);
        if (failed) break;
        pthread_mutex_lock(&s.lock);
        unsigned outstanding = s.issued - s.done;
        pthread_mutex_unlock(&s.lock);
        if (outstanding < window) {
            h_send(peer, &s, &ctx[seq], seq, buf, len, 12, NULL, 0);
            seq++;
            continue;
        }
        if (!killed) {
            struct pollfd p = {.fd = count_rd, .events = POLLIN};
            if (poll(&p, 1, 0) == 1) {
                kill_child(pid);
                killed = 1;
                t_kill = h_now();
            }
        }
        usleep(200);
    }
    if (!killed) kill_child(pid);
    cr_assert(killed, "the child received its first messages");
    cr_assert_eq(h_wait_sink(&k, &k.failed, 1, 10000), 0, "peer_failed fires");
    cr_assert_eq(h_wait_sends(&s, seq, 10000), 0, "every send completes (%u of %u)", s.done, seq);
    double dt = h_now() - t_kill;
    cr_log_info("%u sends, %u ok, %u failed; failure seen %.3f s after the kill", seq, s.ok, s.errors, dt);
    cr_assert_lt(dt, 5.0);
    cr_assert_geq(s.errors, 1, "sends in flight at the kill fail");
    cr_assert_eq(s.twice, 0);
    cr_assert_eq(k.failed, 1);

    ps_tp_destroy(tp);
    h_sink_fini(&k);
    h_sends_fini(&s);
    free(buf);
}

/* ---- a child that sends a stream to us and is killed in the middle ---- */

static void child_sender(int port_fd)
{
    const size_t len = 4u << 20;
    uint16_t port;
    if (read_within(port_fd, &port, sizeof(port), 10000) != 0) _exit(2);
    h_sink_t k;
    h_sends_t s;
    static h_send_ctx_t ctx[H_MAX_SEQ];
    ps_tp_peer_t *peer;
    uint8_t *buf = malloc(len);
    h_fill(buf, len, 13);
    h_sink_init(&k, H_RXBUF_NONE);
    h_sends_init(&s);
    ps_tp_t *tp = h_client(h_sink_handler(&k));
    if (tp == NULL || ps_tp_connect(tp, "127.0.0.1", port, &peer) != PSERV_OK) _exit(2);
    for (unsigned seq = 0; seq < H_MAX_SEQ; seq++) {
        h_wait_sends(&s, seq >= 8 ? seq - 8 : 0, 10000);
        h_send(peer, &s, &ctx[seq], seq, buf, len, 13, NULL, 0);
    }
    for (;;) pause();
}

Test(failure, sender_killed_mid_stream, .timeout = 40)
{
    int port_pipe[2];
    TSAN_SKIP_FORKED_THREADS();
    cr_assert_eq(pipe(port_pipe), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) child_sender(port_pipe[0]);

    h_sink_t k;
    uint16_t port;
    h_sink_init(&k, H_RXBUF_PROVIDE);
    ps_tp_t *tp = h_listen(h_sink_handler(&k), &port);
    cr_assert_not_null(tp);
    cr_assert_eq(write(port_pipe[1], &port, sizeof(port)), (ssize_t)sizeof(port));

    int arrived = h_wait_sink(&k, &k.received, 10, 10000);
    double t0 = h_now();
    kill_child(pid);
    cr_assert_eq(arrived, 0, "messages from the child arrive (%u)", k.received);
    cr_assert_eq(h_wait_sink(&k, &k.failed, 1, 10000), 0, "peer_failed fires for the dead sender");
    double dt = h_now() - t0;
    cr_log_info("dead sender detected in %.3f s after %u messages", dt, k.received);
    cr_assert_lt(dt, 5.0);
    cr_assert_eq(k.bad, 0, "nothing partial or corrupt was delivered");
    cr_assert_eq(k.accepted, 1);

    double t1 = h_now();
    ps_tp_destroy(tp);
    cr_assert_lt(h_now() - t1, 3.0);
    h_sink_fini(&k);
}
