/*
 * The reference model: a multi-layer perceptron (ReLU hidden layers, softmax cross-entropy),
 * float32, forward and backward on the CPU with OpenBLAS sgemm. It is also the reference the
 * CUDA kernels are checked against, so it stays plain and exact.
 *
 * Tensors are W0, b0, W1, b1, ...: W_l is dims[l+1] x dims[l], row-major; b_l has dims[l+1].
 */
#ifndef PS_MLP_CPU_H
#define PS_MLP_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

#define PS_MLP_MAX_LAYERS 10

typedef struct ps_mlp ps_mlp_t;

/* 1 when a network of these sizes and batch fits every limit (sizes reach BLAS as int). */
int ps_mlp_shape_ok(const size_t *dims, unsigned ndims, size_t max_batch);
/* dims[0] inputs .. dims[ndims-1] classes, 2 <= ndims <= PS_MLP_MAX_LAYERS + 1. */
pserv_status_t ps_mlp_create(const size_t *dims, unsigned ndims, size_t max_batch, ps_mlp_t **out);
void ps_mlp_destroy(ps_mlp_t *mlp);
/* He-uniform weights (bound sqrt(6 / fan_in)) from a seeded splitmix64, zero biases. */
void ps_mlp_init_params(ps_mlp_t *mlp, uint64_t seed);
unsigned ps_mlp_num_tensors(const ps_mlp_t *mlp);
size_t ps_mlp_tensor_size(const ps_mlp_t *mlp, unsigned i);
float *ps_mlp_param(ps_mlp_t *mlp, unsigned i);
float *ps_mlp_grad(ps_mlp_t *mlp, unsigned i);
size_t ps_mlp_max_batch(const ps_mlp_t *mlp);
/* Forward and backward over batch <= max_batch rows of x: gradients (batch mean), mean loss.
 * NAN (and no gradients) for a bad batch size or a label >= the number of classes. */
float ps_mlp_train_step(ps_mlp_t *mlp, const float *x, const uint8_t *y, size_t batch);
/* Correct argmax predictions over n samples (in batches); *loss gets the mean loss if not NULL
 * (infinite when a label is >= the number of classes; such samples count as wrong). */
size_t ps_mlp_evaluate(ps_mlp_t *mlp, const float *x, const uint8_t *y, size_t n, float *loss);
/* The per-row pieces, shared with the GPU tests as their reference: softmax cross-entropy of
 * one row of logits (the loss; and, if dz is not NULL, its gradient times `scale`), and the
 * predicted class (the first maximum). */
float ps_mlp_xent_row(const float *logits, size_t classes, unsigned label, float scale, float *dz);
size_t ps_mlp_argmax(const float *row, size_t classes);

#endif
