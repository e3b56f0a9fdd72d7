/*
 * Scalar reference of the server-side optimizers, for tests: one element at a time, in
 * double, written from the formulas (core/optim.c) and not from the vector kernels.
 */
#ifndef PS_TEST_OPTIM_REFERENCE_H
#define PS_TEST_OPTIM_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv.h"

/* L2 norm of the gradient after clamping to [-clip_value, clip_value] (clip_value <= 0: no
 * clamp), summed in double in index order. */
double optim_ref_norm(const float *grad, size_t n, float clip_value);
/*
 * One step t (>= 1) of rule p->type on n elements, clipping included. s0/s1 are the state
 * arrays in the order of ps_optim_state_t (MOMENTUM: v; ADAM/ADAMW: m, v; ADAGRAD: sum of
 * squares). grad is not modified.
 */
void optim_ref_step(const pserv_optim_params_t *p, uint64_t t, float *param, const float *grad,
                    float *s0, float *s1, size_t n);

#endif
