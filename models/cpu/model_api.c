/* The public face of the reference workload (pserv_model.h): the dataset and the CPU MLP. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "idx_dataset.h"
#include "mlp_cpu.h"
#include "model_error.h"
#include "pserv/pserv_model.h"

struct pserv_dataset {
    ps_dataset_t set;
};

pserv_status_t pserv_dataset_load_fashion_mnist(const char *dir, int train, pserv_dataset_h *set)
{
    char err[512] = "";
    PS_MODEL_CHECK_ARG(dir && set);
    pserv_dataset_h d = calloc(1, sizeof(*d));
    if (d == NULL) return PSERV_ERR_NO_MEMORY;
    pserv_status_t st = ps_dataset_load_fashion_mnist(dir, train, &d->set, err, sizeof(err));
    if (st < 0) {
        ps_model_error(st, "%s", err);
        free(d);
        return st;
    }
    *set = d;
    return PSERV_OK;
}

size_t pserv_dataset_count(pserv_dataset_h d) { return d ? d->set.count : 0; }
size_t pserv_dataset_features(pserv_dataset_h d) { return d ? d->set.rows * d->set.cols : 0; }
const float *pserv_dataset_images(pserv_dataset_h d) { return d ? d->set.images : NULL; }
const uint8_t *pserv_dataset_labels(pserv_dataset_h d) { return d ? d->set.labels : NULL; }

pserv_status_t pserv_dataset_destroy(pserv_dataset_h d)
{
    if (d == NULL) return PSERV_OK;
    ps_dataset_free(&d->set);
    free(d);
    return PSERV_OK;
}

struct pserv_mlp {
    ps_mlp_t *m;
};

pserv_status_t pserv_mlp_create(const size_t *dims, unsigned ndims, size_t max_batch, pserv_mlp_h *mlp)
{
    PS_MODEL_CHECK_ARG(mlp);
    pserv_mlp_h h = calloc(1, sizeof(*h));
    if (h == NULL) return PSERV_ERR_NO_MEMORY;
    pserv_status_t st = ps_mlp_create(dims, ndims, max_batch, &h->m);
    if (st < 0) {
        ps_model_error(st, "cannot create an MLP of %u layers for batches of %zu: %s", ndims, max_batch,
                          pserv_strerror(st));
        free(h);
        return st;
    }
    *mlp = h;
    return PSERV_OK;
}

pserv_status_t pserv_mlp_init(pserv_mlp_h mlp, uint64_t seed)
{
    PS_MODEL_CHECK_ARG(mlp);
    ps_mlp_init_params(mlp->m, seed);
    return PSERV_OK;
}

unsigned pserv_mlp_num_tensors(pserv_mlp_h mlp) { return mlp ? ps_mlp_num_tensors(mlp->m) : 0; }
size_t pserv_mlp_tensor_size(pserv_mlp_h mlp, unsigned t) { return mlp ? ps_mlp_tensor_size(mlp->m, t) : 0; }
float *pserv_mlp_param(pserv_mlp_h mlp, unsigned t) { return mlp ? ps_mlp_param(mlp->m, t) : NULL; }
float *pserv_mlp_grad(pserv_mlp_h mlp, unsigned t) { return mlp ? ps_mlp_grad(mlp->m, t) : NULL; }

pserv_status_t pserv_mlp_train_step(pserv_mlp_h mlp, const float *x, const uint8_t *y, size_t batch, float *loss)
{
    PS_MODEL_CHECK_ARG(mlp && x && y && batch > 0 && batch <= ps_mlp_max_batch(mlp->m));
    size_t classes = ps_mlp_tensor_size(mlp->m, ps_mlp_num_tensors(mlp->m) - 1);
    for (size_t i = 0; i < batch; i++)
        if (y[i] >= classes)
            return ps_model_error(PSERV_ERR_INVALID_ARG, "label %u of sample %zu is not a class of this network (%zu)",
                                  y[i], i, classes);
    float l = ps_mlp_train_step(mlp->m, x, y, batch);
    if (!isfinite(l))
        return ps_model_error(PSERV_ERR_NOT_FINITE, "the loss is %g: the model diverged (try a lower learning rate)",
                              (double)l);
    if (loss) *loss = l;
    return PSERV_OK;
}

pserv_status_t pserv_mlp_evaluate(pserv_mlp_h mlp, const float *x, const uint8_t *y, size_t n, size_t *correct,
                                  float *loss)
{
    PS_MODEL_CHECK_ARG(mlp && x && y && correct);
    *correct = ps_mlp_evaluate(mlp->m, x, y, n, loss);
    return PSERV_OK;
}

pserv_status_t pserv_mlp_destroy(pserv_mlp_h mlp)
{
    if (mlp == NULL) return PSERV_OK;
    ps_mlp_destroy(mlp->m);
    free(mlp);
    return PSERV_OK;
}

pserv_status_t pserv_blas_set_threads(int threads)
{
    PS_MODEL_CHECK_ARG(threads >= 1);
    openblas_set_num_threads(threads);
    return PSERV_OK;
}
