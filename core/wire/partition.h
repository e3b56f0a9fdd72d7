/*
 * Key space and partitioning: a tensor of `count` elements is cut into chunks of at most
 * chunk_elems elements, and chunk c of key k lives on shard (mix(k) + c) mod num_servers.
 * Hashing the key spreads the first chunks of many small tensors over the shards; the +c
 * walk spreads the chunks of one large tensor round-robin, so its transfers use every shard.
 * The map is versioned: a later resharding changes the version and the owner function.
 */
#ifndef PS_PARTITION_H
#define PS_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

#define PS_DEFAULT_CHUNK_BYTES ((size_t)4 << 20)

typedef struct {
    uint32_t version;
    uint32_t num_servers;
} ps_shard_map_t;

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
/* The shard that owns chunk c of key. */
uint32_t ps_shard_of(const ps_shard_map_t *map, uint64_t key, uint32_t c);

#endif
