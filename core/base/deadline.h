/* Timed waits on condition variables, on the monotonic clock (wall-clock jumps do not matter). */
#ifndef PS_DEADLINE_H
#define PS_DEADLINE_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "pserv/pserv_status.h"

typedef struct {
    struct timespec at;
    int forever;
} ps_deadline_t;

/* A deadline timeout_ms from now; negative means never. */
void ps_deadline_set(ps_deadline_t *d, int timeout_ms);
/* Milliseconds left before the deadline (0 once passed; -1 for never). */
int ps_deadline_left_ms(const ps_deadline_t *d);
/* Milliseconds on the monotonic clock (for last-heard times and intervals). */
int64_t ps_now_ms(void);
/* A condition variable that waits on CLOCK_MONOTONIC. */
pserv_status_t ps_cond_init(pthread_cond_t *cond);
/* One wait (the caller loops on its predicate): PSERV_ERR_TIMED_OUT once the deadline passed. */
pserv_status_t ps_cond_wait(pthread_cond_t *cond, pthread_mutex_t *lock, const ps_deadline_t *d);

#endif
