#include "ticker.h"

#include <string.h>

#include "deadline.h"

static void *ps_ticker_main(void *arg)
{
    ps_ticker_t *t = arg;
    ps_deadline_t next;
    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        ps_deadline_set(&next, t->interval_ms);
        while (!t->stop && ps_cond_wait(&t->cond, &t->lock, &next) != PSERV_ERR_TIMED_OUT) {
        }
        if (t->stop) break;
        pthread_mutex_unlock(&t->lock);
        t->tick(t->arg, ps_now_ms());
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

pserv_status_t ps_ticker_start(ps_ticker_t *t, int interval_ms, void (*tick)(void *arg, int64_t now_ms), void *arg)
{
    memset(t, 0, sizeof(*t));
    t->interval_ms = interval_ms > 0 ? interval_ms : 1;
    t->tick = tick;
    t->arg = arg;
    if (pthread_mutex_init(&t->lock, NULL) != 0) return PSERV_ERR_NO_RESOURCE;
    if (ps_cond_init(&t->cond) < 0) goto err_lock;
    if (pthread_create(&t->thread, NULL, ps_ticker_main, t) != 0) goto err_cond;
    t->started = 1;
    return PSERV_OK;

err_cond:
    pthread_cond_destroy(&t->cond);
err_lock:
    pthread_mutex_destroy(&t->lock);
    return PSERV_ERR_NO_RESOURCE;
}

void ps_ticker_stop(ps_ticker_t *t)
{
    if (!t->started) return;
    pthread_mutex_lock(&t->lock);
    t->stop = 1;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    t->started = 0;
}
