/*
 * The GPU side of a training worker (pserv worker --device cuda): the reference model on one GPU
 * with its parameters and gradients in one device bucket, registered on the servers as one
 * tensor and exchanged each step with pserv_cuda_node_push_pull on the model's stream (NCCL
 * reduce over the worker's node group, push-pull of this GPU's slice, all-gather). worker_loop.c
 * calls it when the worker computes on a GPU; without CUDA, open says so and fails.
 */
#ifndef PSERV_CLI_WORKER_GPU_H
#define PSERV_CLI_WORKER_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv.h"
#include "pserv/pserv_model.h"

typedef struct worker_gpu worker_gpu_t;

/* The key of the bucket tensor on the servers. */
#define WORKER_GPU_BUCKET_KEY 1

/*
 * Puts the model on GPU local_rank mod devices with the CPU model's initial values, registers the
 * bucket (optimizer from proto) and pulls it back; grad_scale multiplies the gradients. The
 * worker's node group must not have more members than this machine has GPUs. One line on stderr
 * names what failed.
 */
pserv_status_t worker_gpu_open(pserv_worker_h worker, const pserv_job_info_t *job, pserv_mlp_h cpu,
                               const size_t *dims, unsigned ndims, size_t batch, float grad_scale,
                               const pserv_tensor_params_t *proto, worker_gpu_t **out);
/* One step: forward and backward of host rows, then the exchange, enqueued; *loss is the step's. */
pserv_status_t worker_gpu_step(worker_gpu_t *g, const float *x, const uint8_t *y, size_t batch, float *loss);
/* Pulls the latest parameters (async mode, before evaluating). */
pserv_status_t worker_gpu_pull(worker_gpu_t *g);
/* Waits for the exchanges in flight and evaluates n host samples. */
pserv_status_t worker_gpu_evaluate(worker_gpu_t *g, const float *x, const uint8_t *y, size_t n, size_t *correct,
                                   float *loss);
void worker_gpu_close(worker_gpu_t *g);

#endif
