/*
 * How a thread that waits for the data path waits, chosen per process with PSERV_PROGRESS:
 *
 *   spin   never sleeps while it waits (latency-bound jobs, benchmarks; costs a core per waiter)
 *   sleep  sleeps at once (shared machines: an idle process uses no CPU)
 *   auto   spins for a bounded time after the last event (PSERV_SPIN_US, default
 *          PS_PROGRESS_AUTO_SPIN_US), then sleeps: back-to-back messages never pay a wake-up,
 *          an idle process goes to sleep within that time (the default)
 *
 * Used by the transport's progress thread, a shard's apply thread and a worker's wait. A spinning
 * waiter yields the CPU on every idle turn, so on a machine with fewer cores than spinning
 * threads the threads that have work still get to run.
 */
#ifndef PS_PROGRESS_H
#define PS_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

typedef enum { PS_PROGRESS_AUTO = 0, PS_PROGRESS_SPIN, PS_PROGRESS_SLEEP } ps_progress_mode_t;

#define PS_PROGRESS_AUTO_SPIN_US 50
/* Largest PSERV_SPIN_US: beyond a second, spin is the honest choice. */
#define PS_PROGRESS_SPIN_US_MAX 1000000

typedef struct {
    ps_progress_mode_t mode;
    uint64_t spin_ns; /* how long a waiter spins after its last event: 0, bounded, or UINT64_MAX */
} ps_progress_t;

/*
 * The process's setting (read from the environment once, on first use). A bad value is refused
 * with PSERV_ERR_INVALID_ARG and why (cap bytes) names the variable and the value.
 */
pserv_status_t ps_progress_get(ps_progress_t *out, char *why, size_t cap);
/* "auto", "spin" or "sleep". */
const char *ps_progress_name(ps_progress_mode_t mode);
/*
 * The end (ps_now_ns) of a wait's spin phase: spin_ns from now, but not past timeout_ms (< 0: no
 * bound); 0 when it does not spin at all.
 */
uint64_t ps_spin_end(uint64_t spin_ns, int timeout_ms);
/* Nanoseconds on the monotonic clock. */
uint64_t ps_now_ns(void);
/* 1 while a thread whose last event was at last_ns (ps_now_ns) should still spin, 0 once it
 * should sleep: always for spin (UINT64_MAX), never for sleep (0), within spin_ns for auto. */
static inline int ps_spin_on(uint64_t spin_ns, uint64_t last_ns)
{
    return spin_ns == UINT64_MAX || (spin_ns != 0 && ps_now_ns() - last_ns < spin_ns);
}
/* One idle turn of a spinning waiter: gives the CPU to any thread that is ready to run. */
void ps_spin_pause(void);

#endif
