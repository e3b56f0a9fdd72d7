#include "partition.h"

pserv_status_t ps_layout_init(ps_layout_t *layout, size_t count, size_t elem_size, size_t chunk_bytes)
{
    if (count == 0 || elem_size == 0) return PSERV_ERR_INVALID_ARG;
    size_t chunk_elems = chunk_bytes / elem_size;
    if (chunk_elems == 0) chunk_elems = 1;
    size_t chunks = count / chunk_elems + (count % chunk_elems != 0);
    if (chunks > UINT32_MAX) return PSERV_ERR_INVALID_ARG;
    layout->count = count;
    layout->elem_size = elem_size;
    layout->chunk_elems = chunk_elems;
    layout->num_chunks = (uint32_t)chunks;
    return PSERV_OK;
}

size_t ps_layout_chunk_offset(const ps_layout_t *layout, uint32_t c)
{
    return (size_t)c * layout->chunk_elems;
}

size_t ps_layout_chunk_len(const ps_layout_t *layout, uint32_t c)
{
    size_t off = ps_layout_chunk_offset(layout, c);
    size_t rest = layout->count - off;
    return rest < layout->chunk_elems ? rest : layout->chunk_elems;
}
