#include "worker_gpu.h"

#ifdef PSERV_HAVE_CUDA
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pserv/pserv_cuda.h"
#include "pserv/pserv_model_cuda.h"

#define WORKER_GPU_TIMEOUT_MS 120000

struct worker_gpu {
    pserv_cuda_mlp_h mlp;
    pserv_cuda_mlp_bucket_t bucket;
    pserv_cuda_worker_h cw;
};

static pserv_status_t gpu_fail(const char *what, pserv_status_t st)
{
    /* The device API records its detail in libpserv, the GPU model in pserv_models. */
    const char *model = pserv_model_last_error();
    fprintf(stderr, "pserv worker: %s: %s: %s\n", what, pserv_strerror(st), *model ? model : pserv_cuda_last_error());
    return st;
}

/* The CPU model's tensors laid out as the device bucket (zero padding), for registration. */
static float *host_bucket(pserv_mlp_h cpu, const pserv_cuda_mlp_bucket_t *b)
{
    float *h = calloc(b->count, sizeof(float));
    for (unsigned i = 0; h && i < pserv_mlp_num_tensors(cpu); i++)
        memcpy(h + b->offset[i], pserv_mlp_param(cpu, i), pserv_mlp_tensor_size(cpu, i) * sizeof(float));
    return h;
}

pserv_status_t worker_gpu_open(pserv_worker_h worker, const pserv_job_info_t *job, pserv_mlp_h cpu,
                               const size_t *dims, unsigned ndims, size_t batch, float grad_scale,
                               const pserv_tensor_params_t *proto, worker_gpu_t **out)
{
    int n = 0;
    pserv_status_t st = pserv_cuda_device_count(&n);
    if (st < 0) return gpu_fail("no usable GPU", st);
    if (job->local_size > (unsigned)n) {
        fprintf(stderr,
                "pserv worker: %u workers of this node group share %d GPUs: start one worker per GPU (--workers %d) "
                "or give workers distinct --node names\n",
                job->local_size, n, n);
        return PSERV_ERR_INVALID_ARG;
    }
    worker_gpu_t *g = calloc(1, sizeof(*g));
    if (g == NULL) return PSERV_ERR_NO_MEMORY;
    g->bucket = (pserv_cuda_mlp_bucket_t)PSERV_CUDA_MLP_BUCKET_INIT;
    int device = (int)(job->local_rank % (unsigned)n);
    if ((st = pserv_cuda_mlp_create(device, dims, ndims, batch, 0, &g->mlp)) < 0 ||
        (st = pserv_cuda_mlp_set_grad_scale(g->mlp, grad_scale)) < 0 ||
        (st = pserv_cuda_mlp_bucket(g->mlp, &g->bucket)) < 0) {
        gpu_fail("cannot put the model on the GPU", st);
        goto err_close;
    }
    pserv_cuda_worker_params_t cp = PSERV_CUDA_WORKER_PARAMS_INIT;
    cp.device = device;
    if ((st = pserv_cuda_worker_create(worker, &cp, &g->cw)) < 0) {
        gpu_fail("cannot start the device push/pull", st);
        goto err_close;
    }
    pserv_tensor_params_t tp = *proto;
    tp.key = WORKER_GPU_BUCKET_KEY;
    tp.count = g->bucket.count;
    float *init = host_bucket(cpu, &g->bucket);
    if (init == NULL) {
        st = PSERV_ERR_NO_MEMORY;
        goto err_close;
    }
    tp.init = init;
    st = pserv_worker_register(worker, &tp);
    free(init);
    if (st < 0) {
        fprintf(stderr, "pserv worker: cannot register the model: %s: %s\n", pserv_strerror(st),
                pserv_worker_last_error(worker));
        goto err_close;
    }
    /* Every worker starts from the servers' copy (the first registration's). */
    if ((st = worker_gpu_pull(g)) < 0) goto err_close;
    *out = g;
    return PSERV_OK;

err_close:
    worker_gpu_close(g);
    return st;
}

pserv_status_t worker_gpu_step(worker_gpu_t *g, const float *x, const uint8_t *y, size_t batch, float *loss)
{
    /* The step waits for its own compute (to read the loss); the exchange is then enqueued on
     * the same stream, and the next step's compute waits for it there, not on the host. */
    pserv_status_t st = pserv_cuda_mlp_train_step(g->mlp, x, y, batch, loss);
    if (st < 0) return gpu_fail("GPU train step", st);
    st = pserv_cuda_node_push_pull(g->cw, WORKER_GPU_BUCKET_KEY, g->bucket.grads, g->bucket.params, g->bucket.stream);
    return st < 0 ? gpu_fail("device push-pull", st) : PSERV_OK;
}

pserv_status_t worker_gpu_pull(worker_gpu_t *g)
{
    pserv_status_t st = pserv_cuda_pull(g->cw, WORKER_GPU_BUCKET_KEY, g->bucket.params, g->bucket.stream);
    if (st == PSERV_OK) st = pserv_cuda_worker_synchronize(g->cw, WORKER_GPU_TIMEOUT_MS);
    return st < 0 ? gpu_fail("device pull", st) : PSERV_OK;
}

pserv_status_t worker_gpu_evaluate(worker_gpu_t *g, const float *x, const uint8_t *y, size_t n, size_t *correct,
                                   float *loss)
{
    /* Errors of the exchanges in flight surface here rather than as a wrong accuracy. */
    pserv_status_t st = pserv_cuda_worker_synchronize(g->cw, WORKER_GPU_TIMEOUT_MS);
    if (st < 0) return gpu_fail("device push-pull", st);
    st = pserv_cuda_mlp_evaluate(g->mlp, x, y, n, correct, loss);
    return st < 0 ? gpu_fail("GPU evaluation", st) : PSERV_OK;
}

void worker_gpu_close(worker_gpu_t *g)
{
    if (g == NULL) return;
    if (g->cw) pserv_cuda_worker_destroy(g->cw); /* releases the model's stream before the model goes */
    if (g->mlp) pserv_cuda_mlp_destroy(g->mlp);
    free(g);
}
#else
/* Built without CUDA: train_config_use_gpu never says "GPU", so only open can be reached. */
#include <stdio.h>

pserv_status_t worker_gpu_open(pserv_worker_h worker, const pserv_job_info_t *job, pserv_mlp_h cpu,
                               const size_t *dims, unsigned ndims, size_t batch, float grad_scale,
                               const pserv_tensor_params_t *proto, worker_gpu_t **out)
{
    (void)worker, (void)job, (void)cpu, (void)dims, (void)ndims, (void)batch, (void)grad_scale, (void)proto, (void)out;
    fprintf(stderr, "pserv worker: this pserv was built without CUDA\n");
    return PSERV_ERR_UNSUPPORTED;
}

pserv_status_t worker_gpu_step(worker_gpu_t *g, const float *x, const uint8_t *y, size_t batch, float *loss)
{
    (void)g, (void)x, (void)y, (void)batch, (void)loss;
    return PSERV_ERR_UNSUPPORTED;
}

pserv_status_t worker_gpu_pull(worker_gpu_t *g)
{
    (void)g;
    return PSERV_ERR_UNSUPPORTED;
}

pserv_status_t worker_gpu_evaluate(worker_gpu_t *g, const float *x, const uint8_t *y, size_t n, size_t *correct,
                                   float *loss)
{
    (void)g, (void)x, (void)y, (void)n, (void)correct, (void)loss;
    return PSERV_ERR_UNSUPPORTED;
}

void worker_gpu_close(worker_gpu_t *g)
{
    (void)g;
}
#endif
