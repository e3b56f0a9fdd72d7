#include "progress.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_once_t ps_progress_once = PTHREAD_ONCE_INIT;
static ps_progress_t ps_progress_value;
static pserv_status_t ps_progress_status;
static char ps_progress_why[160];

static pserv_status_t ps_progress_parse(ps_progress_t *p, char *why, size_t cap)
{
    const char *mode = getenv("PSERV_PROGRESS");
    const char *us = getenv("PSERV_SPIN_US");
    unsigned long spin_us = PS_PROGRESS_AUTO_SPIN_US;

    if (us != NULL && us[0] != '\0') {
        char *end;
        errno = 0;
        spin_us = strtoul(us, &end, 10);
        if (errno != 0 || *end != '\0' || us[0] == '-' || spin_us > PS_PROGRESS_SPIN_US_MAX) {
            snprintf(why, cap, "PSERV_SPIN_US='%s' is not a number of microseconds from 0 to %d", us,
                     PS_PROGRESS_SPIN_US_MAX);
            return PSERV_ERR_INVALID_ARG;
        }
    }
    if (mode == NULL || mode[0] == '\0' || strcmp(mode, "auto") == 0) {
        p->mode = PS_PROGRESS_AUTO;
        p->spin_ns = (uint64_t)spin_us * 1000;
    } else if (strcmp(mode, "spin") == 0) {
        p->mode = PS_PROGRESS_SPIN;
        p->spin_ns = UINT64_MAX;
    } else if (strcmp(mode, "sleep") == 0) {
        p->mode = PS_PROGRESS_SLEEP;
        p->spin_ns = 0;
    } else {
        snprintf(why, cap, "PSERV_PROGRESS='%s' is not one of auto, spin, sleep", mode);
        return PSERV_ERR_INVALID_ARG;
    }
    return PSERV_OK;
}

static void ps_progress_init(void)
{
    ps_progress_status = ps_progress_parse(&ps_progress_value, ps_progress_why, sizeof(ps_progress_why));
}

pserv_status_t ps_progress_get(ps_progress_t *out, char *why, size_t cap)
{
    pthread_once(&ps_progress_once, ps_progress_init);
    if (ps_progress_status < 0) {
        if (why != NULL && cap > 0) snprintf(why, cap, "%s", ps_progress_why);
        return ps_progress_status;
    }
    *out = ps_progress_value;
    return PSERV_OK;
}

const char *ps_progress_name(ps_progress_mode_t mode)
{
    switch (mode) {
    case PS_PROGRESS_SPIN:
        return "spin";
    case PS_PROGRESS_SLEEP:
        return "sleep";
    case PS_PROGRESS_AUTO:
        break;
    }
    return "auto";
}

uint64_t ps_spin_end(uint64_t spin_ns, int timeout_ms)
{
    if (spin_ns == 0 || timeout_ms == 0) return 0;
    uint64_t limit = timeout_ms < 0 ? UINT64_MAX : (uint64_t)timeout_ms * 1000000u;
    uint64_t span = spin_ns < limit ? spin_ns : limit;
    if (span == UINT64_MAX) return UINT64_MAX;
    return ps_now_ns() + span;
}

uint64_t ps_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void ps_spin_pause(void)
{
    /* With nothing else runnable on this CPU it returns at once, about as cheap as a pause. */
    sched_yield();
}
