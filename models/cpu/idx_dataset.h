/*
 * Labelled image data sets in the IDX format (gzip'd), as Fashion-MNIST ships them: images
 * become floats in [0, 1], labels bytes. Every field of a file is checked before it is used; an
 * error fills `err` with one line naming the file and the problem.
 */
#ifndef PS_IDX_DATASET_H
#define PS_IDX_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

typedef struct {
    size_t count, rows, cols;
    float *images;   /* count x rows x cols */
    uint8_t *labels; /* count, each < classes */
} ps_dataset_t;

#define PS_IDX_IMAGES_MAGIC 0x00000803u
#define PS_IDX_LABELS_MAGIC 0x00000801u

/*
 * Loads an images file and its labels file. PSERV_ERR_IO when a file cannot be read,
 * PSERV_ERR_CORRUPT when it is not what it claims (magic, sizes, truncation, labels >= 10,
 * counts that differ), PSERV_ERR_NO_MEMORY.
 */
pserv_status_t ps_dataset_load_idx(const char *images_path, const char *labels_path, ps_dataset_t *out, char *err,
                                   size_t err_len);
/* Fashion-MNIST's training (train = 1) or test set from dir. */
pserv_status_t ps_dataset_load_fashion_mnist(const char *dir, int train, ps_dataset_t *out, char *err, size_t err_len);
void ps_dataset_free(ps_dataset_t *set);

#endif
