/*
 * The tensor descriptor a REGISTER message carries before the chunk's initial values:
 * element count, dtype and the optimizer with its hyper-parameters.
 */
#ifndef PS_TENSOR_DESC_H
#define PS_TENSOR_DESC_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "pserv/pserv.h"

#define PS_TENSOR_DESC_LEN 52

typedef struct {
    uint64_t count;
    uint32_t dtype;
    pserv_optim_params_t optim;
} ps_tensor_desc_t;

void ps_tensor_desc_encode(const ps_tensor_desc_t *d, ps_writer_t *w);
/* Reads and validates (dtype known, count > 0, optimizer type known). */
pserv_status_t ps_tensor_desc_decode(ps_reader_t *r, ps_tensor_desc_t *d);
/*
 * The chunk size a tensor is cut into: the job's, except that a tensor clipped by norm stays one
 * chunk, so the shard holding it sees the whole gradient and the norm is the tensor's own.
 */
size_t ps_tensor_chunk_bytes(const ps_tensor_desc_t *d, size_t job_chunk_bytes);
/* 1 when two descriptors define the same tensor: count, dtype, optimizer and every hyper-parameter. */
int ps_tensor_desc_same(const ps_tensor_desc_t *a, const ps_tensor_desc_t *b);
/* The name of the first field in which two descriptors differ ("lr", "count", ...), or NULL. */
const char *ps_tensor_desc_diff(const ps_tensor_desc_t *a, const ps_tensor_desc_t *b);

#endif
