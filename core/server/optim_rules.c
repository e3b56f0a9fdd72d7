/*
 * The element loops of the update rules. Compiled with -O3 -fno-math-errno
 * -fno-trapping-math (core/CMakeLists.txt, for every core/optim*.c): without them sqrtf stays
 * a scalar call guarded for errno and the Adam/Adagrad loops run about 4x slower.
 *
 * Rules for this file, so that every loop vectorizes (check with -fopt-info-vec-optimized):
 * restrict pointers; scalars loaded into locals before the loop; no branches in a loop body
 * (choices that differ per step, like Nesterov, are separate loops; clipping and decay are
 * select arithmetic with neutral values when off); one pass per rule.
 *
 * The loops are memory-bandwidth bound: bytes per element are given in optim_kernels.h.
 * Nothing here rounds differently from scalar code (no FMA contraction in ISO C mode, IEEE
 * sqrt and division), so a vector clone, the scalar tail and a plain loop agree bit for bit.
 */
#include <math.h>

#include "optim_kernels.h"

/* clamp(g, -clip, clip) * gscale. Written as compares so it maps to min/max instructions and
 * keeps a NaN gradient NaN (fminf/fmaxf would drop it). */
static inline float ps_optim_clip(float g, float clip, float gscale)
{
    g = g > clip ? clip : g;
    g = g < -clip ? -clip : g;
    return g * gscale;
}

PS_OPTIM_CLONES
static void ps_optim_sgd_loop(const ps_optim_coef_t *c, float *restrict p,
                              const float *restrict g, float *restrict s0, float *restrict s1,
                              size_t n)
{
    const float lr = c->lr, clip = c->clip, gs = c->gscale, wd = c->wd;
    (void)s0;
    (void)s1;
    for (size_t i = 0; i < n; i++) {
        float gi = ps_optim_clip(g[i], clip, gs) + wd * p[i];
        p[i] = p[i] - lr * gi;
    }
}

PS_OPTIM_CLONES
static void ps_optim_momentum_loop(const ps_optim_coef_t *c, float *restrict p,
                                   const float *restrict g, float *restrict v,
                                   float *restrict s1, size_t n)
{
    const float lr = c->lr, clip = c->clip, gs = c->gscale, wd = c->wd, mu = c->mu;
    (void)s1;
    for (size_t i = 0; i < n; i++) {
        float gi = ps_optim_clip(g[i], clip, gs) + wd * p[i];
        float vi = mu * v[i] + gi;
        v[i] = vi;
        p[i] = p[i] - lr * vi;
    }
}

PS_OPTIM_CLONES
static void ps_optim_nesterov_loop(const ps_optim_coef_t *c, float *restrict p,
                                   const float *restrict g, float *restrict v,
                                   float *restrict s1, size_t n)
{
    const float lr = c->lr, clip = c->clip, gs = c->gscale, wd = c->wd, mu = c->mu;
    (void)s1;
    for (size_t i = 0; i < n; i++) {
        float gi = ps_optim_clip(g[i], clip, gs) + wd * p[i];
        float vi = mu * v[i] + gi;
        v[i] = vi;
        p[i] = p[i] - lr * (gi + mu * vi);
    }
}

PS_OPTIM_CLONES
static void ps_optim_adam_loop(const ps_optim_coef_t *c, float *restrict p,
                               const float *restrict g, float *restrict m, float *restrict v,
                               size_t n)
{
    const float clip = c->clip, gs = c->gscale, wd = c->wd, decay = c->decay;
    const float b1 = c->b1, b2 = c->b2, omb1 = 1.0f - c->b1, omb2 = 1.0f - c->b2;
    const float step_size = c->step_size, rs_bc2 = c->rs_bc2, eps = c->eps;
    for (size_t i = 0; i < n; i++) {
        float pi = p[i];
        float gi = ps_optim_clip(g[i], clip, gs) + wd * pi;
        float mi = b1 * m[i] + omb1 * gi;
        float vi = b2 * v[i] + omb2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi * decay - step_size * mi / (sqrtf(vi) * rs_bc2 + eps);
    }
}

PS_OPTIM_CLONES
static void ps_optim_adagrad_loop(const ps_optim_coef_t *c, float *restrict p,
                                  const float *restrict g, float *restrict s, float *restrict s1,
                                  size_t n)
{
    const float lr = c->lr, clip = c->clip, gs = c->gscale, wd = c->wd, eps = c->eps;
    (void)s1;
    for (size_t i = 0; i < n; i++) {
        float gi = ps_optim_clip(g[i], clip, gs) + wd * p[i];
        float si = s[i] + gi * gi;
        s[i] = si;
        p[i] = p[i] - lr * gi / (sqrtf(si) + eps);
    }
}

/* Eight independent double lanes (no reassociation needed, so it vectorizes without
 * -ffast-math); squares of floats are exact in double. */
PS_OPTIM_CLONES
static double ps_optim_sumsq_loop(float clip, const float *restrict g, size_t n)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (size_t j = 0; j < 8; j++) {
            double x = ps_optim_clip(g[i + j], clip, 1.0f);
            acc[j] += x * x;
        }
    }
    for (size_t j = 0; i < n; i++, j++) {
        double x = ps_optim_clip(g[i], clip, 1.0f);
        acc[j] += x * x;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

PS_OPTIM_CLONES
static void ps_optim_add_loop(float *restrict dst, const float *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/*
 * The entry points. The clones above are static so that GCC keeps their dispatchers (ifunc
 * resolvers) local: for a global clone set it exports the resolver from libpserv.so whatever
 * the visibility. Each wrapper is a tail jump through the local ifunc.
 */
void ps_optim_kernel_sgd(const ps_optim_coef_t *c, float *restrict p, const float *restrict g,
                         float *restrict s0, float *restrict s1, size_t n)
{
    ps_optim_sgd_loop(c, p, g, s0, s1, n);
}

void ps_optim_kernel_momentum(const ps_optim_coef_t *c, float *restrict p,
                              const float *restrict g, float *restrict v, float *restrict s1,
                              size_t n)
{
    ps_optim_momentum_loop(c, p, g, v, s1, n);
}

void ps_optim_kernel_nesterov(const ps_optim_coef_t *c, float *restrict p,
                              const float *restrict g, float *restrict v, float *restrict s1,
                              size_t n)
{
    ps_optim_nesterov_loop(c, p, g, v, s1, n);
}

void ps_optim_kernel_adam(const ps_optim_coef_t *c, float *restrict p, const float *restrict g,
                          float *restrict m, float *restrict v, size_t n)
{
    ps_optim_adam_loop(c, p, g, m, v, n);
}

void ps_optim_kernel_adagrad(const ps_optim_coef_t *c, float *restrict p,
                             const float *restrict g, float *restrict s, float *restrict s1,
                             size_t n)
{
    ps_optim_adagrad_loop(c, p, g, s, s1, n);
}

double ps_optim_kernel_sumsq(float clip, const float *restrict g, size_t n)
{
    return ps_optim_sumsq_loop(clip, g, n);
}

void ps_optim_kernel_add(float *restrict dst, const float *restrict src, size_t n)
{
    ps_optim_add_loop(dst, src, n);
}
