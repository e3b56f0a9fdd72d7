/*
 * Server-side optimizers: the rule table, hyper-parameter checks, state arrays, and the step
 * that clips the gradient and runs a rule's kernel over a thread pool.
 *
 * Semantics (PyTorch conventions; g is the gradient after clipping, t = state->step + 1):
 *   SGD       g += wd*p; p -= lr*g
 *   MOMENTUM  g += wd*p; v = mu*v + g; p -= lr*v            (nesterov: p -= lr*(g + mu*v))
 *   ADAM      g += wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
 *             p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
 *   ADAMW     p *= 1 - lr*wd (decoupled decay, before the update); then ADAM without wd in g
 *   ADAGRAD   g += wd*p; s += g*g; p -= lr*g/(sqrt(s) + eps)
 * Clipping comes first: clip_value > 0 clamps each element to [-clip_value, clip_value];
 * clip_norm > 0 then scales the clamped gradient by clip_norm/norm when its L2 norm exceeds
 * clip_norm. A step sees one chunk; a tensor clipped by norm is laid out as a single chunk
 * (ps_tensor_chunk_bytes), so the norm is the whole tensor's. A non-finite gradient
 * stays non-finite (NaN propagates; an infinite norm scales by 0).
 *
 * The gradient buffer is read but not written: clipping and weight decay happen in registers
 * inside the fused kernel of each rule (core/optim_rules.c).
 */
#include "optim.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check.h"
#include "log.h"
#include "optim_kernels.h"

/* ---------------------------------------------------------------------------------------- */
/* Coefficients and kernels                                                                  */

void ps_optim_coef_init(const pserv_optim_params_t *p, uint64_t t, ps_optim_coef_t *c)
{
    memset(c, 0, sizeof(*c));
    c->lr = p->lr;
    c->clip = INFINITY;
    c->gscale = 1.0f;
    c->wd = p->weight_decay;
    c->decay = 1.0f;
    c->mu = p->momentum;
    c->b1 = p->beta1;
    c->b2 = p->beta2;
    c->eps = p->eps;
    if (p->type == PSERV_OPTIM_ADAMW) {
        c->wd = 0.0f;
        c->decay = (float)(1.0 - (double)p->lr * p->weight_decay);
    }
    if (p->type == PSERV_OPTIM_ADAM || p->type == PSERV_OPTIM_ADAMW) {
        /* Bias corrections of step t, hoisted out of the loop; in double since b^t for large t
         * and b close to 1 loses digits in float. */
        double bc1 = 1.0 - pow(p->beta1, (double)t);
        double bc2 = 1.0 - pow(p->beta2, (double)t);
        c->step_size = (float)(p->lr / bc1);
        c->rs_bc2 = (float)(1.0 / sqrt(bc2));
    }
}

ps_optim_kernel_t ps_optim_kernel(const pserv_optim_params_t *p)
{
    switch (p->type) {
    case PSERV_OPTIM_SGD:
        return ps_optim_kernel_sgd;
    case PSERV_OPTIM_MOMENTUM:
        return p->nesterov ? ps_optim_kernel_nesterov : ps_optim_kernel_momentum;
    case PSERV_OPTIM_ADAM:
    case PSERV_OPTIM_ADAMW:
        return ps_optim_kernel_adam;
    case PSERV_OPTIM_ADAGRAD:
        return ps_optim_kernel_adagrad;
    default:
        return NULL;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Rule table                                                                                */

/* A rule's table entry: the rule alone (no clipping) on [begin, end) of the chunk. */
static void ps_optim_rule_step(const pserv_optim_params_t *p, float *param, float *grad,
                               ps_optim_state_t *state, size_t begin, size_t end)
{
    ps_optim_coef_t c;
    ps_optim_kernel_t kernel = ps_optim_kernel(p);
    if (kernel == NULL || end <= begin) return;
    ps_optim_coef_init(p, state->step + 1, &c);
    kernel(&c, param + begin, grad + begin, state->s0 ? state->s0 + begin : NULL,
           state->s1 ? state->s1 + begin : NULL, end - begin);
}

static const ps_update_rule_t ps_optim_rules[PSERV_OPTIM_COUNT] = {
    [PSERV_OPTIM_SGD] = {"sgd", 0, ps_optim_rule_step},
    [PSERV_OPTIM_MOMENTUM] = {"momentum", 1, ps_optim_rule_step},
    [PSERV_OPTIM_ADAM] = {"adam", 2, ps_optim_rule_step},
    [PSERV_OPTIM_ADAMW] = {"adamw", 2, ps_optim_rule_step},
    [PSERV_OPTIM_ADAGRAD] = {"adagrad", 1, ps_optim_rule_step},
};

const ps_update_rule_t *ps_optim_rule(pserv_optim_type_t type)
{
    if ((unsigned)type >= PSERV_OPTIM_COUNT) return NULL;
    return &ps_optim_rules[type];
}

const char *pserv_optim_name(pserv_optim_type_t type)
{
    const ps_update_rule_t *rule = ps_optim_rule(type);
    return rule ? rule->name : NULL;
}

pserv_status_t pserv_optim_parse(const char *name, pserv_optim_type_t *type)
{
    if (name == NULL || type == NULL) return PSERV_ERR_INVALID_ARG;
    for (unsigned i = 0; i < PSERV_OPTIM_COUNT; i++) {
        if (strcasecmp(name, ps_optim_rules[i].name) == 0) {
            *type = (pserv_optim_type_t)i;
            return PSERV_OK;
        }
    }
    ps_debug("unknown optimizer '%s'", name);
    return PSERV_ERR_INVALID_ARG;
}

/* ---------------------------------------------------------------------------------------- */
/* State                                                                                      */

static pserv_status_t ps_optim_array_alloc(size_t n, float **out)
{
    void *mem = NULL;
    if (n > SIZE_MAX / sizeof(float)) return PSERV_ERR_NO_MEMORY;
    if (posix_memalign(&mem, 64, n * sizeof(float)) != 0) return PSERV_ERR_NO_MEMORY;
    memset(mem, 0, n * sizeof(float));
    *out = mem;
    return PSERV_OK;
}

pserv_status_t ps_optim_state_init(pserv_optim_type_t type, size_t n, ps_optim_state_t *state)
{
    pserv_status_t st = PSERV_OK;
    float *s0 = NULL, *s1 = NULL;
    const ps_update_rule_t *rule = ps_optim_rule(type);

    PS_CHECK_ARG(rule != NULL);
    PS_CHECK_ARG(state != NULL);
    if (n > 0 && rule->state_arrays >= 1) PS_CHECK_GOTO(ps_optim_array_alloc(n, &s0), st, err);
    if (n > 0 && rule->state_arrays >= 2)
        PS_CHECK_GOTO(ps_optim_array_alloc(n, &s1), st, err_free_s0);
    state->s0 = s0;
    state->s1 = s1;
    state->step = 0;
    return PSERV_OK;

err_free_s0:
    free(s0);
err:
    ps_error("optimizer: cannot allocate %u state arrays of %zu floats", rule->state_arrays, n);
    return st;
}

void ps_optim_state_free(ps_optim_state_t *state)
{
    if (state == NULL) return;
    free(state->s0);
    free(state->s1);
    state->s0 = NULL;
    state->s1 = NULL;
    state->step = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Step and accumulate                                                                       */

/* Tiles of the norm reduction: at most this many, each at least PS_OPTIM_MIN_PER_THREAD. */
#define PS_OPTIM_NORM_TILES 256

typedef struct {
    const float *g;
    size_t n, tile;
    float clip;
    double *partial;
} ps_optim_norm_job_t;

static void ps_optim_norm_block(void *arg, size_t begin, size_t end)
{
    ps_optim_norm_job_t *job = arg;
    for (size_t t = begin; t < end; t++) {
        size_t lo = t * job->tile, hi = PS_MIN(lo + job->tile, job->n);
        job->partial[t] = ps_optim_kernel_sumsq(job->clip, job->g + lo, hi - lo);
    }
}

double ps_optim_grad_norm(ps_pool_t *pool, const float *g, size_t n, float clip)
{
    double partial[PS_OPTIM_NORM_TILES];
    size_t tile = n / PS_OPTIM_NORM_TILES + 1;
    tile = (tile + PS_OPTIM_ALIGN - 1) / PS_OPTIM_ALIGN * PS_OPTIM_ALIGN;
    tile = PS_MAX(tile, PS_OPTIM_MIN_PER_THREAD);
    size_t ntiles = n / tile + (n % tile != 0);
    ps_optim_norm_job_t job = {g, n, tile, clip, partial};
    ps_pool_run(pool, ntiles, 1, 1, ps_optim_norm_block, &job);
    double sum = 0.0;
    for (size_t t = 0; t < ntiles; t++) sum += partial[t];
    return sqrt(sum);
}

typedef struct {
    ps_optim_kernel_t kernel;
    const ps_optim_coef_t *coef;
    float *param;
    const float *grad;
    float *s0, *s1;
} ps_optim_step_job_t;

static void ps_optim_step_block(void *arg, size_t begin, size_t end)
{
    ps_optim_step_job_t *job = arg;
    job->kernel(job->coef, job->param + begin, job->grad + begin,
                job->s0 ? job->s0 + begin : NULL, job->s1 ? job->s1 + begin : NULL,
                end - begin);
}

void ps_optim_step(ps_pool_t *pool, const pserv_optim_params_t *p, float *param, float *grad,
                   ps_optim_state_t *state, size_t n)
{
    ps_optim_kernel_t kernel = ps_optim_kernel(p);
    if (kernel == NULL) {
        ps_error("optimizer: unknown type %d, step skipped", (int)p->type);
        return;
    }
    ps_optim_coef_t coef;
    ps_optim_coef_init(p, state->step + 1, &coef);
    if (p->clip_value > 0.0f) coef.clip = p->clip_value;
    if (p->clip_norm > 0.0f && n > 0) {
        double norm = ps_optim_grad_norm(pool, grad, n, coef.clip);
        if (norm > p->clip_norm) coef.gscale = (float)(p->clip_norm / norm);
    }
    ps_optim_step_job_t job = {kernel, &coef, param, grad, state->s0, state->s1};
    ps_pool_run(pool, n, PS_OPTIM_ALIGN, PS_OPTIM_MIN_PER_THREAD, ps_optim_step_block, &job);
    state->step++;
}

typedef struct {
    float *dst;
    const float *src;
} ps_optim_add_job_t;

static void ps_optim_add_block(void *arg, size_t begin, size_t end)
{
    ps_optim_add_job_t *job = arg;
    ps_optim_kernel_add(job->dst + begin, job->src + begin, end - begin);
}

void ps_optim_accumulate(ps_pool_t *pool, float *dst, const float *src, size_t n)
{
    ps_optim_add_job_t job = {dst, src};
    ps_pool_run(pool, n, PS_OPTIM_ALIGN, PS_OPTIM_MIN_PER_THREAD, ps_optim_add_block, &job);
}

int ps_optim_all_finite(const float *x, size_t n)
{
    /* Exponent bits all set means infinity or NaN. An integer test on the bits: it vectorizes,
     * and no floating-point flag or fast-math setting can change its answer. */
    const uint32_t *bits = (const uint32_t *)(const void *)x;
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (uint32_t)((bits[i] & 0x7f800000u) == 0x7f800000u);
    return bad == 0;
}
