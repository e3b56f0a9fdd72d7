/*
 * The reference workload: Fashion-MNIST from its IDX files, and a multi-layer perceptron
 * (ReLU hidden layers, softmax cross-entropy) whose gradients are computed on the CPU with
 * OpenBLAS. `pserv train` is built on it; so can a user's own benchmark or test. Its weights
 * and biases are separate tensors, so each can live on the server shards under its own key.
 *
 * It is a library of its own (pserv_models, in models/), not part of libpserv: a program links
 * both. Errors: pserv statuses, with the detail in pserv_model_last_error().
 */
#ifndef PSERV_MODEL_H
#define PSERV_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Where Debian's dataset-fashion-mnist installs the four IDX files. */
#define PSERV_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct pserv_dataset *pserv_dataset_h;

/**
 * Loads the training (train = 1) or test set from dir's gzip'd IDX files; pixels become floats
 * in [0, 1]. PSERV_ERR_IO for a missing file, PSERV_ERR_CORRUPT for a corrupt one; the
 * detail, naming the file, is in pserv_last_error().
 */
PSERV_API pserv_status_t pserv_dataset_load_fashion_mnist(const char *dir, int train, pserv_dataset_h *set);
/** Number of samples, and features per sample (784 for 28 x 28). */
PSERV_API size_t pserv_dataset_count(pserv_dataset_h set);
PSERV_API size_t pserv_dataset_features(pserv_dataset_h set);
/** Row-major count x features pixels, and count labels in 0..9. Valid until destroy. */
PSERV_API const float *pserv_dataset_images(pserv_dataset_h set);
PSERV_API const uint8_t *pserv_dataset_labels(pserv_dataset_h set);
PSERV_API pserv_status_t pserv_dataset_destroy(pserv_dataset_h set);

typedef struct pserv_mlp *pserv_mlp_h;

/**
 * An MLP with layer sizes dims[0] (inputs) .. dims[ndims-1] (classes), for batches of up to
 * max_batch samples. Tensors are W0, b0, W1, b1, ...: W_l is out x in, row-major.
 */
PSERV_API pserv_status_t pserv_mlp_create(const size_t *dims, unsigned ndims, size_t max_batch, pserv_mlp_h *mlp);
/** Deterministic initial weights for a seed (He-style for ReLU), zero biases. */
PSERV_API pserv_status_t pserv_mlp_init(pserv_mlp_h mlp, uint64_t seed);
PSERV_API unsigned pserv_mlp_num_tensors(pserv_mlp_h mlp);
PSERV_API size_t pserv_mlp_tensor_size(pserv_mlp_h mlp, unsigned tensor);
/** The parameters and the last gradients of a tensor (tensor_size floats each). */
PSERV_API float *pserv_mlp_param(pserv_mlp_h mlp, unsigned tensor);
PSERV_API float *pserv_mlp_grad(pserv_mlp_h mlp, unsigned tensor);
/**
 * Forward and backward over a batch: gradients (mean over the batch) and the mean loss.
 * PSERV_ERR_INVALID_ARG for a label beyond the classes; PSERV_ERR_NOT_FINITE when the loss is
 * not finite (the model diverged).
 */
PSERV_API pserv_status_t pserv_mlp_train_step(pserv_mlp_h mlp, const float *x, const uint8_t *y, size_t batch,
                                              float *loss);
/** Counts correct predictions over n samples; *loss (if not NULL) gets the mean loss. */
PSERV_API pserv_status_t pserv_mlp_evaluate(pserv_mlp_h mlp, const float *x, const uint8_t *y, size_t n,
                                            size_t *correct, float *loss);
PSERV_API pserv_status_t pserv_mlp_destroy(pserv_mlp_h mlp);

/** Detail of the last model or data set call that failed in the calling thread, or "". */
PSERV_API const char *pserv_model_last_error(void);

/** Threads OpenBLAS may use in this process (1 keeps a job's processes off each other's cores). */
PSERV_API pserv_status_t pserv_blas_set_threads(int threads);

#ifdef __cplusplus
}
#endif
#endif
