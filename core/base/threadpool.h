/*
 * A fixed pool of threads for data-parallel loops (optimizer steps over a chunk). The caller
 * takes part in the work, so a pool of n threads starts n-1 helpers. No allocation per call.
 */
#ifndef PS_THREADPOOL_H
#define PS_THREADPOOL_H

#include <stddef.h>

#include "pserv/pserv_status.h"

typedef struct ps_pool ps_pool_t;

/* fn processes elements [begin, end) of the range; arg is passed through. */
typedef void (*ps_pool_fn_t)(void *arg, size_t begin, size_t end);

/* nthreads >= 1 (1: everything runs in the caller). */
pserv_status_t ps_pool_create(unsigned nthreads, ps_pool_t **pool);
void ps_pool_destroy(ps_pool_t *pool);
unsigned ps_pool_size(const ps_pool_t *pool);
/*
 * Runs fn over [0, n) split into one contiguous block per thread, block edges aligned to
 * `align` elements (use 16 for float loops so each block starts on a 64-byte line), and
 * returns when all blocks are done. Ranges smaller than min_per_thread per thread use fewer
 * threads. Calls from several threads at once are serialized. pool may be NULL (caller only).
 */
void ps_pool_run(ps_pool_t *pool, size_t n, size_t align, size_t min_per_thread, ps_pool_fn_t fn,
                 void *arg);

#endif
