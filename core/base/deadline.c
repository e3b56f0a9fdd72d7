#include "deadline.h"

#include <errno.h>

void ps_deadline_set(ps_deadline_t *d, int timeout_ms)
{
    d->forever = timeout_ms < 0;
    clock_gettime(CLOCK_MONOTONIC, &d->at);
    if (d->forever) return;
    d->at.tv_sec += timeout_ms / 1000;
    d->at.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (d->at.tv_nsec >= 1000000000L) {
        d->at.tv_sec++;
        d->at.tv_nsec -= 1000000000L;
    }
}

int ps_deadline_left_ms(const ps_deadline_t *d)
{
    if (d->forever) return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ms = (long long)(d->at.tv_sec - now.tv_sec) * 1000 + (d->at.tv_nsec - now.tv_nsec) / 1000000;
    return ms <= 0 ? 0 : ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

int64_t ps_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pserv_status_t ps_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) return PSERV_ERR_NO_RESOURCE;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc == 0 ? PSERV_OK : PSERV_ERR_NO_RESOURCE;
}

pserv_status_t ps_cond_wait(pthread_cond_t *cond, pthread_mutex_t *lock, const ps_deadline_t *d)
{
    if (d->forever) {
        pthread_cond_wait(cond, lock);
        return PSERV_OK;
    }
    return pthread_cond_timedwait(cond, lock, &d->at) == ETIMEDOUT ? PSERV_ERR_TIMED_OUT : PSERV_OK;
}
