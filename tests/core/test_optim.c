/* Tests of core/optim.c: every update rule against the scalar reference, clipping, the rule
 * table, validation, names, state arrays and accumulation. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "optim_kernels.h"
#include "optim_reference.h"

/* Relative tolerance against the double reference, plus an absolute floor relative to the
 * largest magnitude in the array (values that cancel to near zero, like Adam's m). */
#define OPTIM_RTOL 1e-5
#define OPTIM_ATOL_REL 1e-6

static const size_t optim_sizes[] = {37, 1000003};

static uint64_t optim_rng = 0x9e3779b97f4a7c15ull;

static float optim_uniform(void)
{
    /* xorshift64*: deterministic, uniform in [-1, 1) */
    optim_rng ^= optim_rng >> 12;
    optim_rng ^= optim_rng << 25;
    optim_rng ^= optim_rng >> 27;
    uint64_t x = optim_rng * 2685821657736338717ull;
    return (float)((double)(x >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static void optim_fill(float *a, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) a[i] = scale * optim_uniform();
}

static float *optim_alloc(size_t n)
{
    float *a = NULL;
    cr_assert_eq(posix_memalign((void **)&a, 64, (n ? n : 1) * sizeof(float)), 0);
    return a;
}

static void optim_expect_close(const float *got, const float *want, size_t n, const char *what,
                               const char *name)
{
    double maxabs = 0.0;
    for (size_t i = 0; i < n; i++) maxabs = fmax(maxabs, fabs(want[i]));
    double atol = OPTIM_ATOL_REL * maxabs;
    size_t bad = 0, first = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        double tol = atol + OPTIM_RTOL * fabs(want[i]);
        if (!(err <= tol)) {
            if (bad++ == 0) first = i;
            worst = fmax(worst, err / (tol > 0 ? tol : 1e-30));
        }
    }
    cr_assert_eq(bad, 0,
                 "%s: %s differs from the reference at %zu of %zu elements (first [%zu]: %.9g vs "
                 "%.9g; worst %.3g x tolerance)",
                 name, what, bad, n, first, bad ? got[first] : 0.0, bad ? want[first] : 0.0,
                 worst);
}

/* ---------------------------------------------------------------------------------------- */
/* Every rule against the reference                                                          */

typedef struct {
    char name[32];
    pserv_optim_type_t type;
    int nesterov;
    float lr, weight_decay, clip_value, clip_norm;
} optim_case_t;

ParameterizedTestParameters(optim, matches_reference)
{
    static optim_case_t cases[] = {
        {"sgd", PSERV_OPTIM_SGD, 0, 0.1f, 0.0f, 0.0f, 0.0f},
        {"sgd+wd", PSERV_OPTIM_SGD, 0, 0.1f, 0.01f, 0.0f, 0.0f},
        {"sgd+clip_value", PSERV_OPTIM_SGD, 0, 0.1f, 0.0f, 0.5f, 0.0f},
        {"sgd+clip_norm", PSERV_OPTIM_SGD, 0, 0.1f, 0.01f, 0.0f, 1.0f},
        {"momentum", PSERV_OPTIM_MOMENTUM, 0, 0.05f, 0.0f, 0.0f, 0.0f},
        {"momentum+wd", PSERV_OPTIM_MOMENTUM, 0, 0.05f, 0.001f, 0.0f, 0.0f},
        {"momentum+clip_norm", PSERV_OPTIM_MOMENTUM, 0, 0.05f, 0.0f, 0.0f, 1.0f},
        {"nesterov", PSERV_OPTIM_MOMENTUM, 1, 0.05f, 0.0f, 0.0f, 0.0f},
        {"nesterov+wd", PSERV_OPTIM_MOMENTUM, 1, 0.05f, 0.001f, 0.0f, 0.0f},
        {"nesterov+clip_value", PSERV_OPTIM_MOMENTUM, 1, 0.05f, 0.0f, 0.25f, 0.0f},
        {"adam", PSERV_OPTIM_ADAM, 0, 0.001f, 0.0f, 0.0f, 0.0f},
        {"adam+wd", PSERV_OPTIM_ADAM, 0, 0.001f, 0.01f, 0.0f, 0.0f},
        {"adam+clip_value", PSERV_OPTIM_ADAM, 0, 0.001f, 0.0f, 0.5f, 0.0f},
        {"adam+clip_both", PSERV_OPTIM_ADAM, 0, 0.001f, 0.01f, 0.5f, 2.0f},
        {"adamw", PSERV_OPTIM_ADAMW, 0, 0.001f, 0.0f, 0.0f, 0.0f},
        {"adamw+wd", PSERV_OPTIM_ADAMW, 0, 0.001f, 0.1f, 0.0f, 0.0f},
        {"adamw+clip_norm", PSERV_OPTIM_ADAMW, 0, 0.001f, 0.1f, 0.0f, 1.0f},
        {"adagrad", PSERV_OPTIM_ADAGRAD, 0, 0.01f, 0.0f, 0.0f, 0.0f},
        {"adagrad+wd", PSERV_OPTIM_ADAGRAD, 0, 0.01f, 0.01f, 0.0f, 0.0f},
        {"adagrad+clip_norm", PSERV_OPTIM_ADAGRAD, 0, 0.01f, 0.0f, 0.3f, 1.0f},
    };
    return cr_make_param_array(optim_case_t, cases, sizeof(cases) / sizeof(cases[0]));
}

/*
 * Runs `steps` steps of a case with a NULL pool and with a pool of 2 threads, and in the
 * reference; both must match the reference, and each other bit for bit (the partition and the
 * norm's tiles do not change the arithmetic).
 */
ParameterizedTest(optim_case_t *c, optim, matches_reference, .timeout = 30)
{
    const int steps = 4;
    ps_pool_t *pool = NULL;
    cr_assert_eq(ps_pool_create(2, &pool), PSERV_OK);

    pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT;
    p.type = c->type;
    p.nesterov = c->nesterov;
    p.lr = c->lr;
    p.weight_decay = c->weight_decay;
    p.clip_value = c->clip_value;
    p.clip_norm = c->clip_norm;
    cr_assert_eq(ps_optim_validate(&p), PSERV_OK);

    for (size_t k = 0; k < sizeof(optim_sizes) / sizeof(optim_sizes[0]); k++) {
        size_t n = optim_sizes[k];
        float *p_ref = optim_alloc(n), *p_one = optim_alloc(n), *p_two = optim_alloc(n);
        float *g = optim_alloc(n), *g_copy = optim_alloc(n);
        float *r0 = optim_alloc(n), *r1 = optim_alloc(n);
        ps_optim_state_t s_one, s_two;
        cr_assert_eq(ps_optim_state_init(p.type, n, &s_one), PSERV_OK);
        cr_assert_eq(ps_optim_state_init(p.type, n, &s_two), PSERV_OK);
        memset(r0, 0, n * sizeof(float));
        memset(r1, 0, n * sizeof(float));

        optim_fill(p_ref, n, 1.0f);
        memcpy(p_one, p_ref, n * sizeof(float));
        memcpy(p_two, p_ref, n * sizeof(float));

        for (int t = 1; t <= steps; t++) {
            optim_fill(g, n, 1.0f);
            optim_ref_step(&p, (uint64_t)t, p_ref, g, r0, r1, n);
            memcpy(g_copy, g, n * sizeof(float));
            ps_optim_step(NULL, &p, p_one, g_copy, &s_one, n);
            memcpy(g_copy, g, n * sizeof(float));
            ps_optim_step(pool, &p, p_two, g_copy, &s_two, n);
            cr_assert_eq(s_one.step, (uint64_t)t);
            cr_assert_eq(s_two.step, (uint64_t)t);
        }

        char name[64];
        snprintf(name, sizeof(name), "%s n=%zu", c->name, n);
        optim_expect_close(p_one, p_ref, n, "param", name);
        if (s_one.s0) optim_expect_close(s_one.s0, r0, n, "state 0", name);
        if (s_one.s1) optim_expect_close(s_one.s1, r1, n, "state 1", name);
        cr_assert(memcmp(p_one, p_two, n * sizeof(float)) == 0,
                  "%s: 2-thread pool and no pool give different params", name);
        if (s_one.s0) cr_assert(memcmp(s_one.s0, s_two.s0, n * sizeof(float)) == 0, "%s", name);
        if (s_one.s1) cr_assert(memcmp(s_one.s1, s_two.s1, n * sizeof(float)) == 0, "%s", name);

        ps_optim_state_free(&s_one);
        ps_optim_state_free(&s_two);
        free(p_ref), free(p_one), free(p_two), free(g), free(g_copy), free(r0), free(r1);
    }
    ps_pool_destroy(pool);
}

/* ---------------------------------------------------------------------------------------- */
/* Rule table                                                                                */

Test(optim, rule_table)
{
    static const unsigned arrays[PSERV_OPTIM_COUNT] = {0, 1, 2, 2, 1};
    for (int t = 0; t < PSERV_OPTIM_COUNT; t++) {
        const ps_update_rule_t *rule = ps_optim_rule((pserv_optim_type_t)t);
        cr_assert_not_null(rule);
        cr_assert_not_null(rule->step);
        cr_assert_str_eq(rule->name, pserv_optim_name((pserv_optim_type_t)t));
        cr_assert_eq(rule->state_arrays, arrays[t], "%s", rule->name);
    }
    cr_assert_null(ps_optim_rule(PSERV_OPTIM_COUNT));
    cr_assert_null(ps_optim_rule((pserv_optim_type_t)-1));
}

/* The table's step on sub-ranges gives the same result as ps_optim_step (no clipping). */
Test(optim, rule_step_on_ranges_matches_step, .timeout = 30)
{
    const size_t n = 100003, cut = 40000;
    for (int t = 0; t < PSERV_OPTIM_COUNT; t++) {
        for (int nesterov = 0; nesterov <= (t == PSERV_OPTIM_MOMENTUM); nesterov++) {
            pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT;
            p.type = (pserv_optim_type_t)t;
            p.nesterov = nesterov;
            p.weight_decay = 0.01f;
            const ps_update_rule_t *rule = ps_optim_rule(p.type);
            float *pa = optim_alloc(n), *pb = optim_alloc(n), *g = optim_alloc(n),
                  *gb = optim_alloc(n);
            ps_optim_state_t sa, sb;
            cr_assert_eq(ps_optim_state_init(p.type, n, &sa), PSERV_OK);
            cr_assert_eq(ps_optim_state_init(p.type, n, &sb), PSERV_OK);
            optim_fill(pa, n, 1.0f);
            memcpy(pb, pa, n * sizeof(float));
            for (int step = 0; step < 3; step++) {
                optim_fill(g, n, 1.0f);
                memcpy(gb, g, n * sizeof(float));
                ps_optim_step(NULL, &p, pa, g, &sa, n);
                rule->step(&p, pb, gb, &sb, 0, cut);
                rule->step(&p, pb, gb, &sb, cut, n);
                sb.step++;
            }
            cr_assert(memcmp(pa, pb, n * sizeof(float)) == 0, "%s nesterov=%d", rule->name,
                      nesterov);
            for (unsigned a = 0; a < rule->state_arrays; a++) {
                const float *x = a ? sa.s1 : sa.s0, *y = a ? sb.s1 : sb.s0;
                cr_assert(memcmp(x, y, n * sizeof(float)) == 0, "%s state %u", rule->name, a);
            }
            ps_optim_state_free(&sa);
            ps_optim_state_free(&sb);
            free(pa), free(pb), free(g), free(gb);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Clipping                                                                                  */

Test(optim, grad_norm_matches_reference_with_any_pool, .timeout = 30)
{
    static const size_t sizes[] = {0, 1, 15, 37, 65536, 65537, 1000003, 20000017};
    ps_pool_t *pool2 = NULL, *pool3 = NULL;
    cr_assert_eq(ps_pool_create(2, &pool2), PSERV_OK);
    cr_assert_eq(ps_pool_create(3, &pool3), PSERV_OK);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k];
        float *g = optim_alloc(n);
        optim_fill(g, n, 2.0f);
        for (int clip = 0; clip < 2; clip++) {
            float cv = clip ? 0.5f : 0.0f;
            double want = optim_ref_norm(g, n, cv);
            double a = ps_optim_grad_norm(NULL, g, n, cv ? cv : INFINITY);
            double b = ps_optim_grad_norm(pool2, g, n, cv ? cv : INFINITY);
            double c = ps_optim_grad_norm(pool3, g, n, cv ? cv : INFINITY);
            cr_assert(fabs(a - want) <= 1e-10 * want, "n=%zu clip=%g: %.17g vs %.17g", n, cv, a,
                      want);
            cr_assert(a == b && a == c, "n=%zu: norm depends on the pool (%.17g %.17g %.17g)", n,
                      a, b, c);
        }
        free(g);
    }
    ps_pool_destroy(pool2);
    ps_pool_destroy(pool3);
}

/* A norm under clip_norm leaves the gradient alone: same bits as without clipping. */
Test(optim, clip_norm_inactive_below_threshold)
{
    const size_t n = 1000;
    pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT, q;
    p.type = PSERV_OPTIM_ADAM;
    q = p;
    q.clip_norm = 1e6f;
    float *pa = optim_alloc(n), *pb = optim_alloc(n), *g = optim_alloc(n);
    ps_optim_state_t sa, sb;
    cr_assert_eq(ps_optim_state_init(p.type, n, &sa), PSERV_OK);
    cr_assert_eq(ps_optim_state_init(p.type, n, &sb), PSERV_OK);
    optim_fill(pa, n, 1.0f);
    memcpy(pb, pa, n * sizeof(float));
    optim_fill(g, n, 1.0f);
    ps_optim_step(NULL, &p, pa, g, &sa, n);
    ps_optim_step(NULL, &q, pb, g, &sb, n);
    cr_assert(memcmp(pa, pb, n * sizeof(float)) == 0);
    ps_optim_state_free(&sa);
    ps_optim_state_free(&sb);
    free(pa), free(pb), free(g);
}

/* clip_value alone: SGD moves each parameter by at most lr * clip_value. */
Test(optim, clip_value_bounds_the_update)
{
    const size_t n = 4099;
    pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT;
    p.lr = 1.0f;
    p.clip_value = 0.125f;
    float *w = optim_alloc(n), *g = optim_alloc(n);
    ps_optim_state_t s;
    cr_assert_eq(ps_optim_state_init(p.type, n, &s), PSERV_OK);
    memset(w, 0, n * sizeof(float));
    optim_fill(g, n, 10.0f);
    ps_optim_step(NULL, &p, w, g, &s, n);
    for (size_t i = 0; i < n; i++) {
        float want = g[i] > 0.125f ? -0.125f : g[i] < -0.125f ? 0.125f : -g[i];
        cr_assert_eq(w[i], want, "[%zu] g=%g: %g vs %g", i, g[i], w[i], want);
    }
    free(w), free(g);
}

/* A NaN gradient element poisons its own parameter only, and is not clamped away. */
Test(optim, nan_gradient_propagates)
{
    const size_t n = 64;
    pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT;
    p.clip_value = 1.0f;
    float w[64], g[64];
    ps_optim_state_t s = {0};
    for (size_t i = 0; i < n; i++) w[i] = 1.0f, g[i] = 0.5f;
    g[17] = NAN;
    ps_optim_step(NULL, &p, w, g, &s, n);
    for (size_t i = 0; i < n; i++) {
        if (i == 17)
            cr_assert(isnan(w[i]));
        else
            cr_assert_float_eq(w[i], 1.0f - 0.01f * 0.5f, 1e-7);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Validation and names                                                                      */

typedef struct {
    char field[24];
    float value;
} optim_bad_t;

ParameterizedTestParameters(optim, validate_rejects)
{
    static optim_bad_t bad[] = {
        {"lr", 0.0f},          {"lr", -0.1f},           {"lr", NAN},
        {"lr", INFINITY},      {"momentum", -0.1f},     {"momentum", 1.0f},
        {"momentum", NAN},     {"beta1", -0.1f},        {"beta1", 1.0f},
        {"beta1", NAN},        {"beta2", -0.5f},        {"beta2", 1.0f},
        {"beta2", 2.0f},       {"eps", 0.0f},           {"eps", -1e-8f},
        {"eps", NAN},          {"weight_decay", -0.01f}, {"weight_decay", NAN},
        {"clip_value", -1.0f}, {"clip_value", NAN},     {"clip_norm", -1.0f},
        {"clip_norm", NAN},    {"type", 0.0f},
    };
    return cr_make_param_array(optim_bad_t, bad, sizeof(bad) / sizeof(bad[0]));
}

/* Rejected, with a log line on stderr that names the field. */
ParameterizedTest(optim_bad_t *bad, optim, validate_rejects, .timeout = 10,
                  .init = cr_redirect_stderr)
{
    for (int t = 0; t < PSERV_OPTIM_COUNT; t++) {
        pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT;
        p.type = (pserv_optim_type_t)t;
        cr_assert_eq(ps_optim_validate(&p), PSERV_OK);
        if (strcmp(bad->field, "lr") == 0) p.lr = bad->value;
        else if (strcmp(bad->field, "momentum") == 0) p.momentum = bad->value;
        else if (strcmp(bad->field, "beta1") == 0) p.beta1 = bad->value;
        else if (strcmp(bad->field, "beta2") == 0) p.beta2 = bad->value;
        else if (strcmp(bad->field, "eps") == 0) p.eps = bad->value;
        else if (strcmp(bad->field, "weight_decay") == 0) p.weight_decay = bad->value;
        else if (strcmp(bad->field, "clip_value") == 0) p.clip_value = bad->value;
        else if (strcmp(bad->field, "clip_norm") == 0) p.clip_norm = bad->value;
        else p.type = t ? (pserv_optim_type_t)-1 : PSERV_OPTIM_COUNT;
        cr_assert_eq(ps_optim_validate(&p), PSERV_ERR_INVALID_ARG, "%s = %g accepted for %d",
                     bad->field, bad->value, t);
    }
    fflush(stderr);
    char log[4096] = {0}, want[64];
    size_t len = fread(log, 1, sizeof(log) - 1, cr_get_redirected_stderr());
    log[len] = '\0';
    snprintf(want, sizeof(want), "invalid %s =", bad->field);
    cr_assert(strstr(log, want) != NULL, "no log line naming %s in: %s", bad->field, log);
}

Test(optim, validate_accepts_edges)
{
    pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT;
    p.momentum = 0.0f;
    p.beta1 = 0.0f;
    p.beta2 = 0.0f;
    p.weight_decay = 0.0f;
    p.clip_value = 0.0f;
    p.clip_norm = 0.0f;
    p.lr = 1e-30f;
    cr_assert_eq(ps_optim_validate(&p), PSERV_OK);
    p.momentum = 0.999f;
    p.beta2 = 0.9999f;
    p.clip_value = 5.0f;
    p.clip_norm = 1.0f;
    p.weight_decay = 0.5f;
    cr_assert_eq(ps_optim_validate(&p), PSERV_OK);
    cr_assert_eq(ps_optim_validate(NULL), PSERV_ERR_INVALID_ARG);
}

Test(optim, names_round_trip)
{
    static const char *names[PSERV_OPTIM_COUNT] = {"sgd", "momentum", "adam", "adamw",
                                                   "adagrad"};
    for (int t = 0; t < PSERV_OPTIM_COUNT; t++) {
        pserv_optim_type_t back = PSERV_OPTIM_COUNT;
        const char *name = pserv_optim_name((pserv_optim_type_t)t);
        cr_assert_str_eq(name, names[t]);
        cr_assert_eq(pserv_optim_parse(name, &back), PSERV_OK);
        cr_assert_eq(back, (pserv_optim_type_t)t);
    }
    pserv_optim_type_t type = PSERV_OPTIM_ADAM;
    cr_assert_eq(pserv_optim_parse("ADAMW", &type), PSERV_OK);
    cr_assert_eq(type, PSERV_OPTIM_ADAMW);
    static const char *unknown[] = {"", "adamax", "sgd ", "adam\n", "nesterov", "rmsprop", "ad"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        type = PSERV_OPTIM_ADAGRAD;
        cr_assert_eq(pserv_optim_parse(unknown[i], &type), PSERV_ERR_INVALID_ARG, "'%s'",
                     unknown[i]);
        cr_assert_eq(type, PSERV_OPTIM_ADAGRAD, "output set on failure");
    }
    cr_assert_eq(pserv_optim_parse(NULL, &type), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(pserv_optim_parse("sgd", NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_null(pserv_optim_name(PSERV_OPTIM_COUNT));
    cr_assert_null(pserv_optim_name((pserv_optim_type_t)-3));
}

/* ---------------------------------------------------------------------------------------- */
/* State and accumulation                                                                    */

Test(optim, state_arrays_are_zeroed_aligned_and_freed)
{
    static const size_t sizes[] = {0, 1, 37, 1 << 20};
    for (int t = 0; t < PSERV_OPTIM_COUNT; t++) {
        unsigned want = ps_optim_rule((pserv_optim_type_t)t)->state_arrays;
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            size_t n = sizes[k];
            ps_optim_state_t s;
            memset(&s, 0xa5, sizeof(s));
            cr_assert_eq(ps_optim_state_init((pserv_optim_type_t)t, n, &s), PSERV_OK);
            cr_assert_eq(s.step, 0);
            float *arr[2] = {s.s0, s.s1};
            for (unsigned a = 0; a < 2; a++) {
                if (a >= want || n == 0) {
                    cr_assert_null(arr[a], "type %d n=%zu array %u", t, n, a);
                    continue;
                }
                cr_assert_not_null(arr[a]);
                cr_assert_eq((uintptr_t)arr[a] % 64, 0, "array %u not 64-byte aligned", a);
                for (size_t i = 0; i < n; i++) cr_assert_eq(arr[a][i], 0.0f);
            }
            ps_optim_state_free(&s);
            cr_assert_null(s.s0);
            cr_assert_null(s.s1);
            ps_optim_state_free(&s); /* twice is harmless */
        }
    }
    ps_optim_state_t s = {0};
    cr_assert_eq(ps_optim_state_init(PSERV_OPTIM_COUNT, 10, &s), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_optim_state_init(PSERV_OPTIM_ADAM, 10, NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_optim_state_init(PSERV_OPTIM_ADAM, SIZE_MAX / 2, &s), PSERV_ERR_NO_MEMORY);
    cr_assert_null(s.s0);
    ps_optim_state_free(NULL);
}

Test(optim, accumulate, .timeout = 30)
{
    static const size_t sizes[] = {0, 1, 37, 65536 * 2 + 3, 1000003};
    ps_pool_t *pool = NULL;
    cr_assert_eq(ps_pool_create(2, &pool), PSERV_OK);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k];
        float *a = optim_alloc(n + 1), *b = optim_alloc(n + 1), *src = optim_alloc(n);
        optim_fill(a, n, 1.0f);
        optim_fill(src, n, 1.0f);
        a[n] = 42.0f;
        memcpy(b, a, (n + 1) * sizeof(float));
        for (int r = 0; r < 3; r++) {
            ps_optim_accumulate(r == 1 ? pool : NULL, a, src, n);
            ps_optim_accumulate(r == 1 ? NULL : pool, b, src, n);
        }
        for (size_t i = 0; i < n; i++) {
            float want = a[i];
            cr_assert_eq(b[i], want, "n=%zu [%zu]", n, i);
        }
        /* same order of additions as a plain loop */
        memcpy(b, a, n * sizeof(float));
        ps_optim_accumulate(pool, a, src, n);
        for (size_t i = 0; i < n; i++) cr_assert_eq(a[i], b[i] + src[i], "n=%zu [%zu]", n, i);
        cr_assert_eq(a[n], 42.0f, "wrote past the end");
        free(a), free(b), free(src);
    }
    ps_pool_destroy(pool);
}

/* The gradient is only read: clipping and decay happen in registers. */
Test(optim, step_does_not_write_the_gradient)
{
    const size_t n = 1001;
    pserv_optim_params_t p = PSERV_OPTIM_PARAMS_INIT;
    p.type = PSERV_OPTIM_ADAM;
    p.weight_decay = 0.1f;
    p.clip_value = 0.3f;
    p.clip_norm = 0.5f;
    float *w = optim_alloc(n), *g = optim_alloc(n), *g0 = optim_alloc(n);
    ps_optim_state_t s;
    cr_assert_eq(ps_optim_state_init(p.type, n, &s), PSERV_OK);
    optim_fill(w, n, 1.0f);
    optim_fill(g, n, 1.0f);
    memcpy(g0, g, n * sizeof(float));
    ps_optim_step(NULL, &p, w, g, &s, n);
    cr_assert(memcmp(g, g0, n * sizeof(float)) == 0);
    ps_optim_state_free(&s);
    free(w), free(g), free(g0);
}
