/* Chunk layout covers a tensor exactly (placement on shards: tests/cluster/test_view.c). */
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
