/*
 * Shared pieces of the transport tests: seeded payloads with checksums, a receiving endpoint
 * that verifies and counts what arrives, and a send tracker that counts completions.
 */
#ifndef PS_TEST_TP_HARNESS_H
#define PS_TEST_TP_HARNESS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

#define H_MAGIC 0x50535450u /* "PSTP" */
#define H_MAX_SEQ 4096
/* Stretches wall-clock bounds of shutdown paths that move tens of MiB, which ThreadSanitizer
 * slows down several times over (a destroy bounded by 3 s of timeouts took up to 5.6 s there). */
#if defined(__SANITIZE_THREAD__)
#define H_SLOWDOWN 3.0
#else
#define H_SLOWDOWN 1.0
#endif

typedef struct {
    uint32_t magic;
    uint32_t seq;
    uint64_t len;
    uint64_t seed;
    uint64_t csum;
    uint32_t reply; /* 1: the receiver echoes a small reply */
    uint32_t pad;
} h_msg_hdr_t;

/* How the receiving side answers rx_buffer. */
typedef enum {
    H_RXBUF_NONE,    /* no rx_buffer handler: the transport allocates */
    H_RXBUF_PROVIDE, /* hand out a buffer of our own */
    H_RXBUF_NULL,    /* handler present, leaves *buf NULL */
    H_RXBUF_REFUSE   /* refuse messages whose seq is odd */
} h_rxbuf_mode_t;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    h_rxbuf_mode_t mode;
    int close_on_fail; /* peer_failed closes the peer, from inside the handler */
    /* counted under lock */
    unsigned received, bad, rx_buffer_calls, refused, in_core_buffer, accepted, failed, replies;
    unsigned failed_after_sends; /* peer_failed arrived with every tracked send already complete */
    pserv_status_t fail_why;
    ps_tp_peer_t *last_accepted;
    uint8_t seen[H_MAX_SEQ];
    void *bufs[H_MAX_SEQ]; /* H_RXBUF_PROVIDE: buffer handed out per seq */
    struct h_sends *tracker; /* optional: lets peer_failed check send ordering */
} h_sink_t;

typedef struct h_sends {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned issued, done, ok, errors, twice;
    pserv_status_t last_error;
    uint8_t state[H_MAX_SEQ]; /* 0 issued/unused, 1 done */
} h_sends_t;

typedef struct {
    h_sends_t *s;
    unsigned seq;
} h_send_ctx_t;

void h_fill(void *buf, size_t len, uint64_t seed);
uint64_t h_csum(const void *buf, size_t len);
/* 1 when buf holds the pattern of seed. */
int h_check(const void *buf, size_t len, uint64_t seed);

void h_sink_init(h_sink_t *k, h_rxbuf_mode_t mode);
void h_sink_fini(h_sink_t *k);
/* The handler table for a sink (mode decides whether rx_buffer is set). */
ps_tp_handler_t h_sink_handler(h_sink_t *k);

void h_sends_init(h_sends_t *s);
void h_sends_fini(h_sends_t *s);
/* Sends message seq of len bytes (payload already filled with seed) and tracks it. */
pserv_status_t h_send(ps_tp_peer_t *peer, h_sends_t *s, h_send_ctx_t *ctx, unsigned seq, const void *payload,
                      size_t len, uint64_t seed, ps_tp_mem_t *mem, int want_reply);

/* Wait until *counter (read under lock) reaches target; 0 on success, -1 on timeout. */
int h_wait_sink(h_sink_t *k, const unsigned *counter, unsigned target, int timeout_ms);
int h_wait_sends(h_sends_t *s, unsigned target, int timeout_ms);

/* A listening transport on 127.0.0.1 with an ephemeral port. */
ps_tp_t *h_listen(ps_tp_handler_t handler, uint16_t *port);
ps_tp_t *h_client(ps_tp_handler_t handler);

double h_now(void);

#endif
