/* The public host-facing GPU model (pserv_cuda_mlp_*) against the CPU model (pserv_mlp_*). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "pserv/pserv_cuda.h"
#include "pserv/pserv_model_cuda.h"
#include "pserv/pserv_model.h"

Test(gpu_api, refuses_clearly_without_a_device)
{
    int n = 0;
    const size_t dims[] = {8, 4, 3};
    pserv_cuda_mlp_h m = NULL;
    if (pserv_cuda_device_count(&n) == PSERV_OK) cr_skip_test("a GPU is present: covered by the next test");
    cr_assert_eq(pserv_cuda_mlp_create(0, dims, 3, 16, 0, &m), PSERV_ERR_UNSUPPORTED);
    cr_assert_null(m);
}

Test(gpu_api, step_and_evaluate_equal_the_cpu_model, .timeout = 120)
{
    int n = 0;
    if (pserv_cuda_device_count(&n) != PSERV_OK) cr_skip_test("no CUDA device: %s", pserv_cuda_last_error());
    const size_t dims[] = {784, 256, 128, 10}, batch = 64;
    pserv_mlp_h cpu;
    pserv_cuda_mlp_h gpu;
    cr_assert_eq(pserv_mlp_create(dims, 4, batch, &cpu), PSERV_OK);
    cr_assert_eq(pserv_cuda_mlp_create(0, dims, 4, batch, 0, &gpu), PSERV_OK, "%s", pserv_model_last_error());
    pserv_mlp_init(cpu, 7);
    cr_assert_eq(pserv_cuda_mlp_init(gpu, 7), PSERV_OK);
    float *x = malloc(batch * 784 * sizeof(float));
    uint8_t y[64];
    unsigned seed = 3;
    for (size_t i = 0; i < batch * 784; i++) x[i] = (float)rand_r(&seed) / RAND_MAX;
    for (size_t i = 0; i < batch; i++) y[i] = (uint8_t)(i % 10);
    float lc, lg;
    cr_assert_eq(pserv_mlp_train_step(cpu, x, y, batch, &lc), PSERV_OK);
    cr_assert_eq(pserv_cuda_mlp_train_step(gpu, x, y, batch, &lg), PSERV_OK, "%s", pserv_model_last_error());
    cr_assert(fabsf(lc - lg) <= 1e-4f * fabsf(lc), "loss cpu %g gpu %g", (double)lc, (double)lg);
    unsigned nt = pserv_mlp_num_tensors(cpu);
    float *grads[8];
    for (unsigned t = 0; t < nt; t++) grads[t] = malloc(pserv_mlp_tensor_size(cpu, t) * sizeof(float));
    cr_assert_eq(pserv_cuda_mlp_get_grads(gpu, grads), PSERV_OK);
    for (unsigned t = 0; t < nt; t++) {
        const float *ref = pserv_mlp_grad(cpu, t);
        double max_ref = 0, max_err = 0;
        for (size_t i = 0; i < pserv_mlp_tensor_size(cpu, t); i++) {
            max_ref = fmax(max_ref, fabs(ref[i]));
            max_err = fmax(max_err, fabs((double)grads[t][i] - ref[i]));
        }
        cr_assert(max_err <= 1e-4 * max_ref + 1e-7, "tensor %u: max error %g of %g", t, max_err, max_ref);
        free(grads[t]);
    }
    size_t cc, cg;
    float ec, eg;
    cr_assert_eq(pserv_mlp_evaluate(cpu, x, y, batch, &cc, &ec), PSERV_OK);
    cr_assert_eq(pserv_cuda_mlp_evaluate(gpu, x, y, batch, &cg, &eg), PSERV_OK);
    cr_assert_eq(cc, cg);
    free(x);
    pserv_cuda_mlp_destroy(gpu);
    pserv_mlp_destroy(cpu);
}
