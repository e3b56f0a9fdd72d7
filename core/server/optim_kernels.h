/*
 * Internal: the element loops of the update rules (core/optim_rules.c) and the scalars they
 * take. optim.c turns hyper-parameters into a ps_optim_coef_t once per step and runs a kernel
 * over pool blocks; benchmarks and tests may call the kernels directly.
 *
 * Every kernel is one fused pass: it reads the gradient once, never writes it, and reads and
 * writes the parameters and the state once. Clipping and weight decay are folded in with
 * select arithmetic (a clamp to +inf, a scale of 1 and a decay of 0 are exact no-ops for
 * finite values), so the loop bodies have no branches. The kernels are built for AVX2 and for
 * the baseline ISA (GCC/clang target_clones, chosen once at load time through an ifunc).
 */
#ifndef PS_OPTIM_KERNELS_H
#define PS_OPTIM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "threadpool.h"
#include "pserv/pserv.h"

/* Clang before 16 exports the resolvers from a shared library (and names global clone sets
 * "f.ifunc", which other files cannot call): no clones there. */
#if defined(__has_attribute) && (!defined(__clang__) || __clang_major__ >= 16)
#if __has_attribute(target_clones) && defined(__x86_64__) && defined(__ELF__) &&           \
    !defined(PSERV_NO_TARGET_CLONES)
#define PS_OPTIM_CLONES __attribute__((target_clones("avx2", "default")))
#define PS_OPTIM_HAVE_CLONES 1
#endif
#endif
#ifndef PS_OPTIM_CLONES
#define PS_OPTIM_CLONES
#endif

/* Elements per thread below which a pass does not wake another thread (256 KiB per array). */
#define PS_OPTIM_MIN_PER_THREAD ((size_t)65536)
/* Block edges in elements: 16 floats = one 64-byte line. */
#define PS_OPTIM_ALIGN ((size_t)16)

/* Scalars of one step, computed once per step (bias corrections hoisted out of the loop). */
typedef struct {
    float lr;
    float clip;      /* clamp each gradient element to [-clip, clip]; +INFINITY: off */
    float gscale;    /* then scale it (clip_norm); 1: off */
    float wd;        /* then add wd * param to it (L2 weight decay); 0 for ADAMW */
    float decay;     /* ADAMW: param *= decay = 1 - lr * weight_decay first; 1 otherwise */
    float mu;        /* MOMENTUM */
    float b1, b2;    /* ADAM, ADAMW */
    float eps;       /* ADAM, ADAMW, ADAGRAD */
    float step_size; /* ADAM, ADAMW: lr / (1 - b1^t) */
    float rs_bc2;    /* ADAM, ADAMW: 1 / sqrt(1 - b2^t) */
} ps_optim_coef_t;

/*
 * A kernel applies one step to n elements. s0 and s1 are the state arrays the rule uses
 * (NULL when it uses fewer). No pointer may alias another.
 */
typedef void (*ps_optim_kernel_t)(const ps_optim_coef_t *c, float *restrict p,
                                  const float *restrict g, float *restrict s0,
                                  float *restrict s1, size_t n);

/* g' = clip(g); p -= lr * (g' + wd * p). 12 bytes per element (read p, g; write p). */
void ps_optim_kernel_sgd(const ps_optim_coef_t *c, float *restrict p, const float *restrict g,
                         float *restrict s0, float *restrict s1, size_t n);
/* v = mu * v + g'; p -= lr * v. 20 bytes per element (read p, g, v; write p, v). */
void ps_optim_kernel_momentum(const ps_optim_coef_t *c, float *restrict p,
                              const float *restrict g, float *restrict v, float *restrict s1,
                              size_t n);
/* v = mu * v + g'; p -= lr * (g' + mu * v). 20 bytes per element. */
void ps_optim_kernel_nesterov(const ps_optim_coef_t *c, float *restrict p,
                              const float *restrict g, float *restrict v, float *restrict s1,
                              size_t n);
/* ADAM and ADAMW (wd and decay set accordingly). 28 bytes per element (read p, g, m, v;
 * write p, m, v). */
void ps_optim_kernel_adam(const ps_optim_coef_t *c, float *restrict p, const float *restrict g,
                          float *restrict m, float *restrict v, size_t n);
/* s += g'^2; p -= lr * g' / (sqrt(s) + eps). 20 bytes per element. */
void ps_optim_kernel_adagrad(const ps_optim_coef_t *c, float *restrict p,
                             const float *restrict g, float *restrict s, float *restrict s1,
                             size_t n);

/* Sum of squares of clamp(g[i], -clip, clip), accumulated in double. 4 bytes per element. */
double ps_optim_kernel_sumsq(float clip, const float *restrict g, size_t n);
/* dst[i] += src[i]. 12 bytes per element. */
void ps_optim_kernel_add(float *restrict dst, const float *restrict src, size_t n);

/* Coefficients of step number t (>= 1) with clipping off. */
void ps_optim_coef_init(const pserv_optim_params_t *p, uint64_t t, ps_optim_coef_t *c);
/* The kernel of a rule (MOMENTUM: heavy ball or Nesterov by p->nesterov); NULL if unknown. */
ps_optim_kernel_t ps_optim_kernel(const pserv_optim_params_t *p);
/*
 * L2 norm of clamp(g, -clip, clip) over n elements, reduced on the pool. The partial sums are
 * taken over fixed tiles that do not depend on the number of threads, so the result is the
 * same bit for bit with any pool.
 */
double ps_optim_grad_norm(ps_pool_t *pool, const float *g, size_t n, float clip);

#endif
