/* The CPU MLP: exact gradients (against finite differences in double) and real learning. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "idx_dataset.h"
#include "mlp_cpu.h"
#include "data_dir.h"
#include "pserv/pserv_model.h"


/* Mean loss of the network computed in double, straight from the definition. */
static double loss_double(ps_mlp_t *m, const size_t *dims, unsigned ndims, const float *x, const uint8_t *y,
                          size_t batch)
{
    double total = 0;
    for (size_t r = 0; r < batch; r++) {
        double a[64], z[64];
        for (size_t i = 0; i < dims[0]; i++) a[i] = x[r * dims[0] + i];
        for (unsigned l = 0; l + 1 < ndims; l++) {
            const float *w = ps_mlp_param(m, 2 * l), *b = ps_mlp_param(m, 2 * l + 1);
            for (size_t o = 0; o < dims[l + 1]; o++) {
                double s = b[o];
                for (size_t i = 0; i < dims[l]; i++) s += (double)w[o * dims[l] + i] * a[i];
                z[o] = (l + 2 < ndims && s < 0) ? 0 : s;
            }
            memcpy(a, z, dims[l + 1] * sizeof(double));
        }
        size_t c = dims[ndims - 1];
        double max = a[0], sum = 0;
        for (size_t j = 1; j < c; j++) max = fmax(max, a[j]);
        for (size_t j = 0; j < c; j++) sum += exp(a[j] - max);
        total += log(sum) - (a[y[r]] - max);
    }
    return total / (double)batch;
}

Test(mlp_cpu, gradients_match_finite_differences, .timeout = 30)
{
    const size_t dims[] = {6, 5, 4, 3};
    const size_t batch = 7;
    ps_mlp_t *m;
    cr_assert_eq(ps_mlp_create(dims, 4, batch, &m), PSERV_OK);
    ps_mlp_init_params(m, 11);
    /* nonzero biases so every path is exercised */
    for (unsigned t = 1; t < ps_mlp_num_tensors(m); t += 2)
        for (size_t i = 0; i < ps_mlp_tensor_size(m, t); i++) ps_mlp_param(m, t)[i] = 0.05f * (float)(i % 3) - 0.03f;
    float x[7 * 6];
    uint8_t y[7];
    unsigned seed = 5;
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++) x[i] = (float)rand_r(&seed) / RAND_MAX * 2 - 1;
    for (size_t r = 0; r < batch; r++) y[r] = (uint8_t)(r % 3);

    float loss = ps_mlp_train_step(m, x, y, batch);
    cr_assert_float_eq(loss, loss_double(m, dims, 4, x, y, batch), 1e-5);
    for (unsigned t = 0; t < ps_mlp_num_tensors(m); t++) {
        float *p = ps_mlp_param(m, t), *g = ps_mlp_grad(m, t);
        for (size_t i = 0; i < ps_mlp_tensor_size(m, t); i++) {
            float keep = p[i];
            const float h = 1e-3f; /* small: a larger step may cross a ReLU kink */
            p[i] = keep + h;
            double up = loss_double(m, dims, 4, x, y, batch);
            p[i] = keep - h;
            double down = loss_double(m, dims, 4, x, y, batch);
            p[i] = keep;
            double numeric = (up - down) / (2.0 * (double)h);
            cr_assert(fabs(numeric - g[i]) <= 2e-3 * fmax(1.0, fabs(numeric)), "tensor %u [%zu]: analytic %g numeric %g",
                      t, i, (double)g[i], numeric);
        }
    }
    ps_mlp_destroy(m);
}

Test(mlp_cpu, fresh_net_is_near_chance_and_init_is_deterministic)
{
    const size_t dims[] = {784, 32, 10};
    ps_mlp_t *a, *b;
    cr_assert_eq(ps_mlp_create(dims, 3, 16, &a), PSERV_OK);
    cr_assert_eq(ps_mlp_create(dims, 3, 16, &b), PSERV_OK);
    ps_mlp_init_params(a, 9);
    ps_mlp_init_params(b, 9);
    for (unsigned t = 0; t < ps_mlp_num_tensors(a); t++)
        cr_assert_eq(memcmp(ps_mlp_param(a, t), ps_mlp_param(b, t), ps_mlp_tensor_size(a, t) * sizeof(float)), 0);
    ps_mlp_init_params(b, 10);
    cr_assert_neq(memcmp(ps_mlp_param(a, 0), ps_mlp_param(b, 0), ps_mlp_tensor_size(a, 0) * sizeof(float)), 0);
    float x[16 * 784];
    uint8_t y[16];
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++) x[i] = (float)(i % 17) / 17.0f * 0.1f;
    for (int i = 0; i < 16; i++) y[i] = (uint8_t)(i % 10);
    float loss = ps_mlp_train_step(a, x, y, 16);
    cr_assert(fabsf(loss - logf(10.0f)) < 0.5f, "loss of a fresh net %g, chance is %g", (double)loss, log(10.0));
    cr_assert(isnan(ps_mlp_train_step(a, x, y, 17)), "a batch over max_batch must be refused");
    y[3] = 10; /* no such class */
    cr_assert(isnan(ps_mlp_train_step(a, x, y, 16)), "a label beyond the classes must be refused");
    float eval_loss;
    size_t first3 = ps_mlp_evaluate(a, x, y, 3, NULL);
    cr_assert_eq(ps_mlp_evaluate(a, x, y, 4, &eval_loss), first3, "sample 3 has no class: it cannot be correct");
    cr_assert(isinf(eval_loss));
    ps_mlp_t *huge;
    cr_assert_eq(ps_mlp_create(dims, 3, (size_t)1 << 62, &huge), PSERV_ERR_INVALID_ARG);
    size_t bad_dims[] = {784, 0, 10};
    ps_mlp_t *c;
    cr_assert_eq(ps_mlp_create(bad_dims, 3, 16, &c), PSERV_ERR_INVALID_ARG);
    ps_mlp_destroy(a);
    ps_mlp_destroy(b);
}

Test(mlp_cpu, learns_fashion_mnist_subset, .timeout = 120)
{
    ps_dataset_t d;
    char err[512];
    cr_assert_eq(ps_dataset_load_fashion_mnist(data_dir(), 1, &d, err, sizeof(err)), PSERV_OK, "%s", err);
    const size_t dims[] = {784, 64, 10}, n = 2000, batch = 50;
    ps_mlp_t *m;
    cr_assert_eq(ps_mlp_create(dims, 3, batch, &m), PSERV_OK);
    ps_mlp_init_params(m, 1);
    size_t before = ps_mlp_evaluate(m, d.images, d.labels, n, NULL);
    for (int epoch = 0; epoch < 8; epoch++)
        for (size_t s = 0; s + batch <= n; s += batch) {
            ps_mlp_train_step(m, d.images + s * 784, d.labels + s, batch);
            for (unsigned t = 0; t < ps_mlp_num_tensors(m); t++) /* plain SGD, lr 0.1 */
                for (size_t i = 0; i < ps_mlp_tensor_size(m, t); i++) ps_mlp_param(m, t)[i] -= 0.1f * ps_mlp_grad(m, t)[i];
        }
    float loss;
    size_t after = ps_mlp_evaluate(m, d.images, d.labels, n, &loss);
    cr_assert_gt((double)after / n, 0.8, "training accuracy %.3f (was %.3f)", (double)after / n, (double)before / n);
    cr_assert_lt(loss, 0.6f);
    ps_mlp_destroy(m);
    ps_dataset_free(&d);
}
