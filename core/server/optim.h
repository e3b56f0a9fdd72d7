/*
 * Server-side update rules. An update rule is a small table of functions (see ps_update_rule_t)
 * so that later rules (sparse rows, compression-aware) plug in without touching the server.
 *
 * All loops are written to vectorize (no aliasing, no branches in the body, sqrtf compiled
 * without errno) and are memory-bandwidth bound; ps_optim_step runs them on a thread pool.
 */
#ifndef PS_OPTIM_H
#define PS_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "optim_params.h"
#include "threadpool.h"
#include "pserv/pserv.h"

/* Optimizer state of one chunk: up to two arrays of n floats (momentum, Adam m and v, ...). */
typedef struct {
    float *s0, *s1;
    uint64_t step; /* optimizer steps applied so far (Adam bias correction) */
} ps_optim_state_t;

typedef struct {
    const char *name;
    unsigned state_arrays; /* how many arrays of n floats the state needs (0..2) */
    /*
     * One step over n elements: param -= update(grad). grad may be modified (clipping,
     * weight decay). state->step is incremented by the caller after the step.
     */
    void (*step)(const pserv_optim_params_t *p, float *param, float *grad, ps_optim_state_t *state,
                 size_t begin, size_t end);
} ps_update_rule_t;

/* The rule for a type, or NULL. */
const ps_update_rule_t *ps_optim_rule(pserv_optim_type_t type);
/* Allocates (zeroed, 64-byte aligned) and frees the state arrays of a chunk of n elements. */
pserv_status_t ps_optim_state_init(pserv_optim_type_t type, size_t n, ps_optim_state_t *state);
void ps_optim_state_free(ps_optim_state_t *state);
/*
 * Applies one optimizer step to n elements: gradient clipping (clip_value, then clip_norm on
 * the norm of these n elements: the whole tensor, since a tensor clipped by norm is one chunk),
 * then the rule, split over the pool. grad is used as scratch.
 * Increments state->step.
 */
void ps_optim_step(ps_pool_t *pool, const pserv_optim_params_t *p, float *param, float *grad,
                   ps_optim_state_t *state, size_t n);
/* dst[i] += src[i] over n elements, on the pool (sync-mode accumulation). */
void ps_optim_accumulate(ps_pool_t *pool, float *dst, const float *src, size_t n);
/* 1 when no element is a NaN or an infinity. */
int ps_optim_all_finite(const float *x, size_t n);

#endif
