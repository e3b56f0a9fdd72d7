/* Partitioning: chunk layout covers a tensor exactly, shards are balanced and deterministic. */
#include <criterion/criterion.h>

#include "partition.h"

Test(partition, chunks_cover_the_tensor_exactly)
{
    size_t counts[] = {1, 15, 16, 17, 1000, 1048576, 1048577, 5000011};
    size_t chunk_bytes[] = {4, 60, 64, 4096, 1 << 20, 4 << 20};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        for (size_t j = 0; j < sizeof(chunk_bytes) / sizeof(chunk_bytes[0]); j++) {
            ps_layout_t l;
            cr_assert_eq(ps_layout_init(&l, counts[i], 4, chunk_bytes[j]), PSERV_OK);
            size_t next = 0;
            for (uint32_t c = 0; c < l.num_chunks; c++) {
                cr_assert_eq(ps_layout_chunk_offset(&l, c), next);
                size_t len = ps_layout_chunk_len(&l, c);
                cr_assert(len >= 1 && len <= l.chunk_elems);
                next += len;
            }
            cr_assert_eq(next, counts[i], "count %zu chunk %zu", counts[i], chunk_bytes[j]);
        }
    }
}

Test(partition, rejects_empty_and_rounds_tiny_chunks_up)
{
    ps_layout_t l;
    cr_assert_eq(ps_layout_init(&l, 0, 4, 64), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_layout_init(&l, 10, 0, 64), PSERV_ERR_INVALID_ARG);
    cr_assert_eq(ps_layout_init(&l, 10, 4, 1), PSERV_OK);
    cr_assert_eq(l.chunk_elems, 1);
    cr_assert_eq(l.num_chunks, 10);
    cr_assert_eq(ps_layout_init(&l, (size_t)1 << 40, 4, 4), PSERV_ERR_INVALID_ARG);
}

Test(partition, chunks_of_one_tensor_spread_round_robin)
{
    ps_shard_map_t map = {1, 3};
    uint32_t first = ps_shard_of(&map, 42, 0);
    for (uint32_t c = 0; c < 30; c++) cr_assert_eq(ps_shard_of(&map, 42, c), (first + c) % 3);
}

Test(partition, keys_spread_evenly_over_shards)
{
    ps_shard_map_t map = {1, 4};
    unsigned hits[4] = {0};
    for (uint64_t k = 0; k < 4000; k++) hits[ps_shard_of(&map, k, 0)]++;
    for (int s = 0; s < 4; s++) cr_assert(hits[s] > 850 && hits[s] < 1150, "shard %d got %u of 4000", s, hits[s]);
}

Test(partition, single_shard_owns_everything)
{
    ps_shard_map_t map = {1, 1};
    for (uint64_t k = 0; k < 100; k++) cr_assert_eq(ps_shard_of(&map, k, (uint32_t)k), 0);
}
