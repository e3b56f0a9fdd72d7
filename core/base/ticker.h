/*
 * A thread that calls a function every interval until stopped: heartbeats and failure checks.
 * The tick runs on the ticker's own thread, never on the transport's progress thread, so a busy
 * or stopped progress thread does not stop it.
 */
#ifndef PS_TICKER_H
#define PS_TICKER_H

#include <pthread.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

typedef struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int started, stop;
    int interval_ms;
    void (*tick)(void *arg, int64_t now_ms);
    void *arg;
} ps_ticker_t;

/* Starts calling tick(arg, now) every interval_ms (the first call after one interval). */
pserv_status_t ps_ticker_start(ps_ticker_t *t, int interval_ms, void (*tick)(void *arg, int64_t now_ms), void *arg);
/* Stops and joins the thread; no tick runs after it returns. Safe on a ticker never started. Not from a tick. */
void ps_ticker_stop(ps_ticker_t *t);

#endif
