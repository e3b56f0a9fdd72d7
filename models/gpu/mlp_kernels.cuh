/*
 * The MLP's element-wise kernels (cuda/mlp_kernels.cu), as stream-ordered launchers. Each one
 * only enqueues work on `s` and checks the launch; none synchronizes. Matrices are row-major,
 * rows x cols, as in core/mlp_cpu.c. Internal to cuda/ (C++ linkage, CUDA types).
 */
#ifndef PS_MLP_KERNELS_CUH
#define PS_MLP_KERNELS_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

/* z[r][j] += b[j], then max(., 0) when relu (in place, on a GEMM's output). */
pserv_status_t ps_k_bias_act(float *z, const float *b, size_t rows, size_t cols, int relu, cudaStream_t s);

/* da[k] = act[k] > 0 ? da[k] : 0 over n elements (in place): the ReLU's backward through its output. */
pserv_status_t ps_k_relu_backward(float *da, const float *act, size_t n, cudaStream_t s);

/*
 * Softmax cross-entropy, one warp per row, max-subtracted and summed in double as the CPU
 * reference does. loss_rows[r] gets the row's loss; correct_rows[r] (if not NULL) 1 when the
 * argmax (first maximum) equals the label; dz (if not NULL) gets scale * (softmax - onehot).
 * A label >= classes gives loss NaN and a NaN dz row when dz is given (training: the gradients
 * turn NaN, visibly), loss +inf and not correct otherwise (evaluation, as the CPU does).
 */
pserv_status_t ps_k_softmax_xent(const float *logits, const uint8_t *y, size_t rows, size_t classes, float scale,
                                 float *dz, float *loss_rows, uint8_t *correct_rows, cudaStream_t s);

/* db[j] = sum over rows of dz[r][j] (the bias gradient; dz already carries the 1/batch). */
pserv_status_t ps_k_bias_grad(const float *dz, size_t rows, size_t cols, float *db, cudaStream_t s);

/*
 * One block sums loss_rows (in double) and correct_rows over `rows`: mean_out (if not NULL)
 * gets (float)(sum / rows); acc_loss and acc_correct (if not NULL) are added to. Deterministic.
 */
pserv_status_t ps_k_row_reduce(const float *loss_rows, const uint8_t *correct_rows, size_t rows, float *mean_out,
                               double *acc_loss, unsigned long long *acc_correct, cudaStream_t s);

/* Fills n floats with a quiet NaN (tests poison outputs with it). */
pserv_status_t ps_k_fill_nan(float *p, size_t n, cudaStream_t s);

#endif
