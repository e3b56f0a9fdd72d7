/*
 * Chunk layout: a tensor of `count` elements is cut into chunks of chunk_elems elements (the
 * last one may be shorter). Which shard owns a chunk is the cluster view's business
 * (cluster/view.h), which also chooses chunk_elems.
 */
#ifndef PS_PARTITION_H
#define PS_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

#define PS_DEFAULT_CHUNK_BYTES ((size_t)4 << 20)

typedef struct {
    size_t count;       /* elements in the tensor */
    size_t elem_size;   /* bytes per element */
    size_t chunk_elems; /* elements per chunk (the last one may be shorter) */
    uint32_t num_chunks;
} ps_layout_t;

/*
 * Lays out a tensor. chunk_bytes is rounded down to whole elements, at least one.
 * PSERV_ERR_INVALID_ARG if count or elem_size is 0 or the tensor needs over 2^32 chunks.
 */
pserv_status_t ps_layout_init(ps_layout_t *layout, size_t count, size_t elem_size, size_t chunk_bytes);
/* First element and number of elements of chunk c (c < num_chunks). */
size_t ps_layout_chunk_offset(const ps_layout_t *layout, uint32_t c);
size_t ps_layout_chunk_len(const ps_layout_t *layout, uint32_t c);

#endif
