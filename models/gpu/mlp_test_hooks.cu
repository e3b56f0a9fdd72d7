/*
 * Test hooks (declared in cuda/mlp_gpu.h): each kernel alone on host data, and a few device
 * memory helpers, so C tests can check kernels against a CPU computation without CUDA headers.
 * Synchronous, on the legacy default stream; not for the data path.
 */
#include "cuda_check.h"
#include "mlp_gpu.h"
#include "mlp_kernels.cuh"
#include "pserv/pserv_cuda.h"

pserv_status_t ps_cuda_test_alloc(size_t bytes, void **dev)
{
    int n;
    void *p = NULL;
    if (dev == NULL) return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_cuda_test_alloc", __FILE__, __LINE__);
    pserv_status_t st = pserv_cuda_device_count(&n);
    if (st < 0) return st;
    st = PS_CUDA_CALL(cudaMalloc(&p, bytes ? bytes : 1));
    if (st < 0) return st;
    *dev = p;
    return PSERV_OK;
}

void ps_cuda_test_free(void *dev)
{
    if (dev) (void)PS_CUDA_CALL(cudaFree(dev));
}

/* A pageable host-to-device cudaMemcpy may return before the data has landed; the model runs on
 * non-blocking streams, which do not wait for the legacy stream, so wait for the whole device. */
pserv_status_t ps_cuda_test_upload(void *dev, const void *host, size_t bytes)
{
    pserv_status_t st = PS_CUDA_CALL(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    return st < 0 ? st : PS_CUDA_CALL(cudaDeviceSynchronize());
}

pserv_status_t ps_cuda_test_download(void *host, const void *dev, size_t bytes)
{
    return PS_CUDA_CALL(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

pserv_status_t ps_cuda_test_fill_nan(float *dev, size_t n)
{
    pserv_status_t st = ps_k_fill_nan(dev, n, 0);
    return st < 0 ? st : PS_CUDA_CALL(cudaDeviceSynchronize());
}

/* Device copy of a host array (or NaN-filled, for outputs, when host is NULL). */
static pserv_status_t ps_hook_in(float **dev, const float *host, size_t n)
{
    pserv_status_t st = ps_cuda_test_alloc(n * sizeof(float), (void **)dev);
    if (st < 0) return st;
    st = host ? ps_cuda_test_upload(*dev, host, n * sizeof(float)) : ps_cuda_test_fill_nan(*dev, n);
    if (st < 0) {
        ps_cuda_test_free(*dev);
        *dev = NULL;
    }
    return st;
}

static pserv_status_t ps_hook_finish(void)
{
    return PS_CUDA_CALL(cudaStreamSynchronize(0));
}

pserv_status_t ps_cuda_test_bias_relu(float *z, const float *b, size_t rows, size_t cols, int relu)
{
    float *dz = NULL, *db = NULL;
    pserv_status_t st = ps_hook_in(&dz, z, rows * cols);
    if (st < 0) return st;
    if ((st = ps_hook_in(&db, b, cols)) < 0) goto err_free_z;
    if ((st = ps_k_bias_act(dz, db, rows, cols, relu, 0)) < 0) goto err_free_b;
    if ((st = ps_hook_finish()) < 0) goto err_free_b;
    st = ps_cuda_test_download(z, dz, rows * cols * sizeof(float));
err_free_b:
    ps_cuda_test_free(db);
err_free_z:
    ps_cuda_test_free(dz);
    return st;
}

pserv_status_t ps_cuda_test_relu_backward(float *da, const float *act, size_t n)
{
    float *dda = NULL, *dact = NULL;
    pserv_status_t st = ps_hook_in(&dda, da, n);
    if (st < 0) return st;
    if ((st = ps_hook_in(&dact, act, n)) < 0) goto err_free_da;
    if ((st = ps_k_relu_backward(dda, dact, n, 0)) < 0) goto err_free_act;
    if ((st = ps_hook_finish()) < 0) goto err_free_act;
    st = ps_cuda_test_download(da, dda, n * sizeof(float));
err_free_act:
    ps_cuda_test_free(dact);
err_free_da:
    ps_cuda_test_free(dda);
    return st;
}

pserv_status_t ps_cuda_test_softmax_xent(const float *logits, const uint8_t *y, size_t rows, size_t classes,
                                         float scale, float *dz, float *loss_rows, uint8_t *correct)
{
    float *dlog = NULL, *ddz = NULL, *dloss = NULL;
    uint8_t *dy = NULL, *dcorrect = NULL;
    if (logits == NULL || y == NULL || loss_rows == NULL)
        return ps_cuda_fail(PSERV_ERR_INVALID_ARG, "ps_cuda_test_softmax_xent", __FILE__, __LINE__);
    pserv_status_t st = ps_hook_in(&dlog, logits, rows * classes);
    if (st < 0) return st;
    if ((st = ps_hook_in(&dloss, NULL, rows)) < 0) goto err_free_logits;
    if (dz && (st = ps_hook_in(&ddz, NULL, rows * classes)) < 0) goto err_free_loss;
    if ((st = ps_cuda_test_alloc(rows, (void **)&dy)) < 0) goto err_free_dz;
    if ((st = ps_cuda_test_upload(dy, y, rows)) < 0) goto err_free_y;
    if (correct) {
        if ((st = ps_cuda_test_alloc(rows, (void **)&dcorrect)) < 0) goto err_free_y;
        if ((st = PS_CUDA_CALL(cudaMemset(dcorrect, 0xee, rows))) < 0) goto err_free_correct; /* poison */
    }
    if ((st = ps_k_softmax_xent(dlog, dy, rows, classes, scale, ddz, dloss, dcorrect, 0)) < 0) goto err_free_correct;
    if ((st = ps_hook_finish()) < 0) goto err_free_correct;
    if ((st = ps_cuda_test_download(loss_rows, dloss, rows * sizeof(float))) < 0) goto err_free_correct;
    if (dz && (st = ps_cuda_test_download(dz, ddz, rows * classes * sizeof(float))) < 0) goto err_free_correct;
    if (correct) st = ps_cuda_test_download(correct, dcorrect, rows);
err_free_correct:
    ps_cuda_test_free(dcorrect);
err_free_y:
    ps_cuda_test_free(dy);
err_free_dz:
    ps_cuda_test_free(ddz);
err_free_loss:
    ps_cuda_test_free(dloss);
err_free_logits:
    ps_cuda_test_free(dlog);
    return st;
}

pserv_status_t ps_cuda_test_bias_grad(const float *dz, size_t rows, size_t cols, float *db)
{
    float *ddz = NULL, *ddb = NULL;
    pserv_status_t st = ps_hook_in(&ddz, dz, rows * cols);
    if (st < 0) return st;
    if ((st = ps_hook_in(&ddb, NULL, cols)) < 0) goto err_free_dz;
    if ((st = ps_k_bias_grad(ddz, rows, cols, ddb, 0)) < 0) goto err_free_db;
    if ((st = ps_hook_finish()) < 0) goto err_free_db;
    st = ps_cuda_test_download(db, ddb, cols * sizeof(float));
err_free_db:
    ps_cuda_test_free(ddb);
err_free_dz:
    ps_cuda_test_free(ddz);
    return st;
}
