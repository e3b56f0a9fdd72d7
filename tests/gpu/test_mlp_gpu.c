/*
 * cuda/mlp_gpu.cu and cuda/mlp_kernels.cu against the CPU reference (core/mlp_cpu.c): each
 * kernel alone on random inputs with NaN-poisoned outputs, then whole train steps and
 * evaluations on the same parameters and batches. Skips with the reason when there is no GPU.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp_cpu.h"
#include "mlp_gpu.h"
#include "pserv/pserv_cuda.h"

static void require_gpu(void)
{
    int n = 0;
    if (pserv_cuda_device_count(&n) != PSERV_OK) cr_skip_test("no CUDA device: %s", pserv_cuda_last_error());
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_uniform(uint64_t *s, float lo, float hi) /* [lo, hi) */
{
    return lo + (hi - lo) * (float)((double)(rng_next(s) >> 40) * 0x1.0p-24);
}

static float *random_floats(uint64_t *s, size_t n, float lo, float hi)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform(s, lo, hi);
    return p;
}

/* |got - want| <= rtol * max|want| elementwise; NaN (an unwritten, poisoned element) fails. */
static void expect_close(const float *got, const float *want, size_t n, double rtol, const char *what)
{
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)want[i]));
    double tol = rtol * (scale > 0 ? scale : 1.0);
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - (double)want[i]);
        if (!(err <= tol))
            cr_assert_fail("%s[%zu]: got %.9g, want %.9g (err %.3g > tol %.3g)", what, i, got[i], want[i], err, tol);
    }
}

/* ---------------------------------------------------------------- kernels alone */

static void check_bias_relu(size_t rows, size_t cols, int relu, uint64_t seed)
{
    uint64_t s = seed;
    float *z = random_floats(&s, rows * cols, -2.0f, 2.0f), *b = random_floats(&s, cols, -1.0f, 1.0f);
    float *want = malloc(rows * cols * sizeof(float));
    cr_assert_not_null(want);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++) {
            float v = z[r * cols + j] + b[j];
            want[r * cols + j] = relu ? fmaxf(v, 0.0f) : v;
        }
    cr_assert_eq(ps_cuda_test_bias_relu(z, b, rows, cols, relu), PSERV_OK, "%s", pserv_cuda_last_error());
    expect_close(z, want, rows * cols, 1e-6, relu ? "bias+relu" : "bias");
    free(want);
    free(b);
    free(z);
}

Test(gpu_mlp, bias_relu_kernel, .timeout = 60)
{
    require_gpu();
    check_bias_relu(128, 256, 1, 1);
    check_bias_relu(37, 10, 0, 2);
    check_bias_relu(1, 1, 1, 3);
    check_bias_relu(513, 129, 1, 4);
}

Test(gpu_mlp, relu_backward_kernel, .timeout = 60)
{
    require_gpu();
    uint64_t s = 5;
    size_t n = 37 * 129;
    float *act = random_floats(&s, n, -1.0f, 1.0f), *da = random_floats(&s, n, -3.0f, 3.0f);
    for (size_t i = 0; i < n; i += 7) act[i] = 0.0f; /* exactly zero: ReLU's output there has no gradient */
    float *want = malloc(n * sizeof(float));
    cr_assert_not_null(want);
    for (size_t i = 0; i < n; i++) want[i] = act[i] > 0.0f ? da[i] : 0.0f;
    cr_assert_eq(ps_cuda_test_relu_backward(da, act, n), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(memcmp(da, want, n * sizeof(float)), 0, "ReLU backward differs from the CPU mask");
    free(want);
    free(da);
    free(act);
}

static void check_softmax_xent(size_t rows, size_t classes, uint64_t seed)
{
    uint64_t s = seed;
    float *logits = random_floats(&s, rows * classes, -8.0f, 8.0f);
    uint8_t *y = malloc(rows), *correct = malloc(rows);
    float *dz = malloc(rows * classes * sizeof(float)), *want_dz = malloc(rows * classes * sizeof(float));
    float *loss = malloc(rows * sizeof(float)), *want_loss = malloc(rows * sizeof(float));
    size_t *best = malloc(rows * sizeof(size_t));
    cr_assert(y && correct && dz && want_dz && loss && want_loss && best);
    for (size_t r = 0; r < rows; r++) y[r] = (uint8_t)(rng_next(&s) % (classes < 256 ? classes : 256));
    /* a tie for the maximum: the first one wins, as on the CPU */
    if (classes >= 3) logits[2] = logits[1] = 50.0f;
    if (rows >= 2) y[1] = (uint8_t)(classes >= 2 ? 1 : 0);
    float scale = 1.0f / (float)rows;
    for (size_t r = 0; r < rows; r++) { /* the CPU model's own row functions are the reference */
        want_loss[r] = ps_mlp_xent_row(logits + r * classes, classes, y[r], scale, want_dz + r * classes);
        best[r] = ps_mlp_argmax(logits + r * classes, classes);
    }

    cr_assert_eq(ps_cuda_test_softmax_xent(logits, y, rows, classes, scale, dz, loss, correct), PSERV_OK, "%s",
                 pserv_cuda_last_error());
    expect_close(loss, want_loss, rows, 1e-5, "loss");
    expect_close(dz, want_dz, rows * classes, 1e-5, "dz");
    for (size_t r = 0; r < rows; r++)
        cr_assert_eq(correct[r], best[r] == y[r], "row %zu: correct %u, argmax %zu label %u", r, correct[r], best[r],
                     y[r]);

    /* evaluation form: no dz */
    memset(loss, 0, rows * sizeof(float));
    cr_assert_eq(ps_cuda_test_softmax_xent(logits, y, rows, classes, 0.0f, NULL, loss, NULL), PSERV_OK, "%s",
                 pserv_cuda_last_error());
    expect_close(loss, want_loss, rows, 1e-5, "loss (no dz)");
    free(best);
    free(want_loss);
    free(loss);
    free(want_dz);
    free(dz);
    free(correct);
    free(y);
    free(logits);
}

Test(gpu_mlp, softmax_xent_kernel, .timeout = 60)
{
    require_gpu();
    check_softmax_xent(128, 10, 6);
    check_softmax_xent(37, 10, 7);
    check_softmax_xent(1, 1, 8);
    check_softmax_xent(53, 33, 9);   /* a second pass over the lanes, partly filled */
    check_softmax_xent(17, 1000, 10); /* many columns per lane; labels < 256 only */
}

Test(gpu_mlp, softmax_xent_bad_label, .timeout = 60)
{
    require_gpu();
    float logits[2 * 3] = {0.5f, 1.0f, -1.0f, 2.0f, 0.0f, 0.0f}, dz[6], loss[2];
    uint8_t y[2] = {1, 3}, correct[2];
    cr_assert_eq(ps_cuda_test_softmax_xent(logits, y, 2, 3, 0.5f, dz, loss, correct), PSERV_OK, "%s",
                 pserv_cuda_last_error());
    cr_assert(isfinite(loss[0]) && correct[0] == 1);
    cr_assert(isnan(loss[1]), "training: a label without a class gives a NaN loss, got %g", loss[1]);
    for (int j = 0; j < 3; j++) cr_assert(isnan(dz[3 + j]), "its gradient row is NaN too");
    cr_assert_eq(ps_cuda_test_softmax_xent(logits, y, 2, 3, 0.0f, NULL, loss, correct), PSERV_OK);
    cr_assert(isinf(loss[1]) && loss[1] > 0, "evaluation: +inf, as the CPU, got %g", loss[1]);
    cr_assert_eq(correct[1], 0);
}

static void check_bias_grad(size_t rows, size_t cols, uint64_t seed)
{
    uint64_t s = seed;
    float *dz = random_floats(&s, rows * cols, -1.0f, 1.0f);
    float *db = malloc(cols * sizeof(float)), *want = malloc(cols * sizeof(float));
    cr_assert(db && want);
    double abs_sum_max = 0;
    for (size_t j = 0; j < cols; j++) {
        double sum = 0, abs_sum = 0;
        for (size_t r = 0; r < rows; r++) {
            sum += dz[r * cols + j];
            abs_sum += fabs(dz[r * cols + j]);
        }
        want[j] = (float)sum;
        abs_sum_max = fmax(abs_sum_max, abs_sum);
    }
    cr_assert_eq(ps_cuda_test_bias_grad(dz, rows, cols, db), PSERV_OK, "%s", pserv_cuda_last_error());
    /* float sums in a different order than the double reference: bound by the sum of |terms| */
    for (size_t j = 0; j < cols; j++) {
        double err = fabs((double)db[j] - (double)want[j]);
        cr_assert(err <= 1e-5 * abs_sum_max, "db[%zu] = %.9g, want %.9g (rows %zu cols %zu)", j, db[j], want[j], rows,
                  cols);
    }
    free(want);
    free(db);
    free(dz);
}

Test(gpu_mlp, bias_grad_kernel, .timeout = 60)
{
    require_gpu();
    check_bias_grad(128, 10, 11);
    check_bias_grad(37, 256, 12);
    check_bias_grad(1, 1, 13);
    check_bias_grad(1000, 33, 14);
}

/* ---------------------------------------------------------------- whole model */

static const size_t dims_medium[] = {784, 256, 128, 10};

Test(gpu_mlp, create_checks_arguments_and_device, .timeout = 60)
{
    ps_mlp_gpu_t *m = NULL;
    size_t bad[] = {784, 0, 10};
    cr_assert_eq(ps_mlp_gpu_create(bad, 3, 128, 0, &m), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_mlp_gpu_create(dims_medium, 1, 128, 0, &m), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_mlp_gpu_create(dims_medium, 4, 0, 0, &m), PSERV_ERR_INVALID_ARG);
    cr_assert_null(m);
    int n = 0;
    if (pserv_cuda_device_count(&n) != PSERV_OK) {
        cr_assert_eq(ps_mlp_gpu_create(dims_medium, 4, 128, 0, &m), PSERV_ERR_UNSUPPORTED);
        cr_assert_null(m);
        cr_assert_neq(strlen(pserv_cuda_last_error()), 0);
        return;
    }
    cr_assert_eq(ps_mlp_gpu_create(dims_medium, 4, 128, 0, &m), PSERV_OK, "%s", pserv_cuda_last_error());
    /* bucket layout: W0 b0 W1 b1 W2 b2 in order, 64-float aligned, inside the bucket */
    cr_assert_eq(ps_mlp_gpu_num_tensors(m), 6);
    size_t end = 0;
    for (unsigned i = 0; i < 6; i++) {
        size_t off = ps_mlp_gpu_tensor_offset(m, i), size = ps_mlp_gpu_tensor_size(m, i);
        size_t want = i % 2 == 0 ? dims_medium[i / 2 + 1] * dims_medium[i / 2] : dims_medium[i / 2 + 1];
        cr_assert_eq(size, want);
        cr_assert_eq(off % PS_MLP_GPU_ALIGN, 0);
        cr_assert_geq(off, end);
        cr_assert_lt(off - end, PS_MLP_GPU_ALIGN);
        end = off + size;
    }
    cr_assert_geq(ps_mlp_gpu_bucket_floats(m), end);
    cr_assert_eq(ps_mlp_gpu_bucket_floats(m) % PS_MLP_GPU_ALIGN, 0);
    cr_assert_not_null(ps_mlp_gpu_params_device(m));
    cr_assert_not_null(ps_mlp_gpu_grads_device(m));
    float x = 0;
    uint8_t y = 0;
    cr_assert_eq(ps_mlp_gpu_train_step(m, &x, &y, 0, NULL), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_mlp_gpu_train_step(m, &x, &y, 129, NULL), PSERV_ERR_INVALID_ARG);
    ps_mlp_gpu_destroy(m);
}

typedef struct {
    ps_mlp_t *cpu;
    ps_mlp_gpu_t *gpu;
    float *x, *x_dev;
    uint8_t *y, *y_dev;
    size_t n;
} pair_t;

/* A CPU and a GPU model with the same init, and n random samples on both sides. */
static void pair_setup(pair_t *p, const size_t *dims, unsigned ndims, size_t max_batch, int tf32, size_t n,
                       uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    cr_assert_eq(ps_mlp_create(dims, ndims, max_batch, &p->cpu), PSERV_OK);
    cr_assert_eq(ps_mlp_gpu_create(dims, ndims, max_batch, tf32, &p->gpu), PSERV_OK, "%s", pserv_cuda_last_error());
    ps_mlp_init_params(p->cpu, seed);
    cr_assert_eq(ps_mlp_gpu_init_params(p->gpu, seed), PSERV_OK, "%s", pserv_cuda_last_error());
    /* the same init, bit for bit */
    unsigned nt = ps_mlp_num_tensors(p->cpu);
    float *all[2 * PS_MLP_MAX_LAYERS] = {0};
    for (unsigned k = 0; k < nt; k++) {
        all[k] = malloc(ps_mlp_tensor_size(p->cpu, k) * sizeof(float));
        cr_assert_not_null(all[k]);
    }
    cr_assert_eq(ps_mlp_gpu_get_params(p->gpu, all), PSERV_OK, "%s", pserv_cuda_last_error());
    for (unsigned k = 0; k < nt; k++) {
        cr_assert_eq(memcmp(all[k], ps_mlp_param(p->cpu, k), ps_mlp_tensor_size(p->cpu, k) * sizeof(float)), 0,
                     "tensor %u differs after init", k);
        free(all[k]);
    }
    uint64_t s = seed ^ 0x5555;
    p->n = n;
    p->x = random_floats(&s, n * dims[0], 0.0f, 1.0f);
    p->y = malloc(n);
    cr_assert_not_null(p->y);
    for (size_t i = 0; i < n; i++) p->y[i] = (uint8_t)(rng_next(&s) % dims[ndims - 1]);
    cr_assert_eq(ps_cuda_test_alloc(n * dims[0] * sizeof(float), (void **)&p->x_dev), PSERV_OK);
    cr_assert_eq(ps_cuda_test_alloc(n, (void **)&p->y_dev), PSERV_OK);
    cr_assert_eq(ps_cuda_test_upload(p->x_dev, p->x, n * dims[0] * sizeof(float)), PSERV_OK);
    cr_assert_eq(ps_cuda_test_upload(p->y_dev, p->y, n), PSERV_OK);
}

static void pair_teardown(pair_t *p)
{
    ps_cuda_test_free(p->y_dev);
    ps_cuda_test_free(p->x_dev);
    free(p->y);
    free(p->x);
    ps_mlp_gpu_destroy(p->gpu);
    ps_mlp_destroy(p->cpu);
}

/* One train step on both from the same parameters: gradients and loss agree. Poisoned
 * gradients first, so a tensor the step does not write fails. */
static void check_train_step(const size_t *dims, unsigned ndims, size_t max_batch, size_t batch, int tf32,
                             double rtol, uint64_t seed)
{
    pair_t p;
    pair_setup(&p, dims, ndims, max_batch, tf32, batch, seed);
    unsigned nt = ps_mlp_gpu_num_tensors(p.gpu);
    float *grads = ps_mlp_gpu_grads_device(p.gpu);
    for (unsigned i = 0; i < nt; i++)
        cr_assert_eq(ps_cuda_test_fill_nan(grads + ps_mlp_gpu_tensor_offset(p.gpu, i), ps_mlp_gpu_tensor_size(p.gpu, i)),
                     PSERV_OK);

    float want_loss = ps_mlp_train_step(p.cpu, p.x, p.y, batch), loss = NAN;
    cr_assert(isfinite(want_loss));
    cr_assert_eq(ps_mlp_gpu_train_step(p.gpu, p.x_dev, p.y_dev, batch, NULL), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(ps_mlp_gpu_loss(p.gpu, &loss), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert(fabs((double)loss - want_loss) <= rtol * fabs(want_loss), "loss %.9g, want %.9g (batch %zu tf32 %d)",
              loss, want_loss, batch, tf32);

    float *g[2 * PS_MLP_MAX_LAYERS] = {0};
    for (unsigned i = 0; i < nt; i++) {
        g[i] = malloc(ps_mlp_gpu_tensor_size(p.gpu, i) * sizeof(float));
        cr_assert_not_null(g[i]);
    }
    cr_assert_eq(ps_mlp_gpu_get_grads(p.gpu, g), PSERV_OK, "%s", pserv_cuda_last_error());
    for (unsigned i = 0; i < nt; i++) {
        char what[64];
        snprintf(what, sizeof(what), "grad %u (batch %zu tf32 %d)", i, batch, tf32);
        expect_close(g[i], ps_mlp_grad(p.cpu, i), ps_mlp_gpu_tensor_size(p.gpu, i), rtol, what);
        free(g[i]);
    }
    pair_teardown(&p);
}

Test(gpu_mlp, train_step_equals_cpu, .timeout = 120)
{
    require_gpu();
    check_train_step(dims_medium, 4, 128, 128, 0, 1e-4, 21);
    check_train_step(dims_medium, 4, 128, 37, 0, 1e-4, 22);
    check_train_step(dims_medium, 4, 128, 1, 0, 1e-4, 23);
    static const size_t small[] = {5, 3};        /* one layer: no hidden ReLU */
    static const size_t odd[] = {33, 65, 17, 7}; /* nothing a multiple of anything */
    check_train_step(small, 2, 16, 9, 0, 1e-4, 24);
    check_train_step(odd, 4, 64, 37, 0, 1e-4, 25);
}

/* TF32 keeps 10 mantissa bits in the GEMMs: a looser bound, still far below what a wrong
 * transposition or offset produces. */
Test(gpu_mlp, train_step_tf32_close_to_cpu, .timeout = 120)
{
    require_gpu();
    check_train_step(dims_medium, 4, 128, 128, 1, 5e-3, 31);
    check_train_step(dims_medium, 4, 128, 37, 1, 5e-3, 32);
}

Test(gpu_mlp, evaluate_equals_cpu, .timeout = 120)
{
    require_gpu();
    pair_t p;
    size_t n = 300; /* batches of 128, 128 and 44 */
    pair_setup(&p, dims_medium, 4, 128, 0, n, 41);
    float want_loss = 0, loss = NAN;
    size_t want = ps_mlp_evaluate(p.cpu, p.x, p.y, n, &want_loss), correct = (size_t)-1;
    cr_assert_eq(ps_mlp_gpu_evaluate(p.gpu, p.x_dev, p.y_dev, n, NULL, &correct, &loss), PSERV_OK, "%s",
                 pserv_cuda_last_error());
    cr_assert_eq(correct, want, "correct %zu, want %zu", correct, want);
    cr_assert(fabs((double)loss - want_loss) <= 1e-4 * fabs(want_loss), "loss %.9g, want %.9g", loss, want_loss);

    /* after a few SGD steps on the CPU's gradients the counts still agree (non-trivial accuracy) */
    float *params[2 * PS_MLP_MAX_LAYERS];
    for (int step = 0; step < 20; step++) {
        ps_mlp_train_step(p.cpu, p.x + (step % 2) * 128 * 784, p.y + (step % 2) * 128, 128);
        for (unsigned i = 0; i < ps_mlp_num_tensors(p.cpu); i++) {
            float *w = ps_mlp_param(p.cpu, i);
            const float *gr = ps_mlp_grad(p.cpu, i);
            for (size_t k = 0; k < ps_mlp_tensor_size(p.cpu, i); k++) w[k] -= 0.1f * gr[k];
        }
    }
    for (unsigned i = 0; i < ps_mlp_num_tensors(p.cpu); i++) params[i] = ps_mlp_param(p.cpu, i);
    cr_assert_eq(ps_mlp_gpu_set_params(p.gpu, (const float *const *)params), PSERV_OK, "%s", pserv_cuda_last_error());
    want = ps_mlp_evaluate(p.cpu, p.x, p.y, n, &want_loss);
    cr_assert_eq(ps_mlp_gpu_evaluate(p.gpu, p.x_dev, p.y_dev, n, NULL, &correct, &loss), PSERV_OK, "%s",
                 pserv_cuda_last_error());
    cr_assert_eq(correct, want, "after training: correct %zu, want %zu", correct, want);
    cr_assert(fabs((double)loss - want_loss) <= 1e-4 * fabs(want_loss), "loss %.9g, want %.9g", loss, want_loss);

    /* a label without a class: +inf loss, as the CPU */
    uint8_t bad = 10;
    cr_assert_eq(ps_cuda_test_upload(p.y_dev + 5, &bad, 1), PSERV_OK);
    cr_assert_eq(ps_mlp_gpu_evaluate(p.gpu, p.x_dev, p.y_dev, n, NULL, &correct, &loss), PSERV_OK);
    cr_assert(isinf(loss) && loss > 0, "loss %g", loss);
    pair_teardown(&p);
}
