/*
 * One shard's checkpoint file: what a shard holds at one round, written once and never changed.
 *
 *   header section   magic "PSRVCKPT", format, header length, round, view version, shard rank,
 *                    server count, mode, the tensors (key, descriptor, chunk size) and the chunk
 *                    table (key, chunk, offset, length, rounds applied, optimizer steps, state
 *                    arrays, where its data section starts, the section's CRC32C); then the
 *                    header's own CRC32C
 *   data sections    per chunk: its parameters, then each optimizer state array (float32 each)
 *
 * Everything is little-endian. A file is written under a temporary name, fsync'd, renamed and
 * its directory fsync'd (ckpt_io.c), so a reader finds either the whole file or none.
 * Reading checks every field before it is used: a damaged, truncated or inconsistent file is
 * refused with PSERV_ERR_CORRUPT and a message naming the file and the field.
 */
#ifndef PS_CKPT_FILE_H
#define PS_CKPT_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "tensor_desc.h"

#define PS_CKPT_MAGIC 0x54504b4356525350ull /* "PSRVCKPT" read as little-endian bytes */
#define PS_CKPT_FORMAT 1
/* Fixed part of the header: magic, format, header length, round, view version, rank, servers,
 * mode, tensor count, chunk count. */
#define PS_CKPT_FIXED_LEN 48
#define PS_CKPT_TENSOR_LEN (8 + PS_TENSOR_DESC_LEN + 8)
#define PS_CKPT_CHUNK_LEN 64
/* A header bigger than this is not one we wrote (bounds what a damaged file makes us allocate). */
#define PS_CKPT_HEADER_MAX ((uint64_t)256 << 20)
#define PS_CKPT_MAX_STATE 2

typedef struct {
    uint64_t key;
    ps_tensor_desc_t desc;
    uint64_t chunk_elems;
} ps_ckpt_tensor_t;

typedef struct {
    uint64_t key;
    uint32_t chunk, nstate;
    uint64_t offset, len; /* elements of the tensor */
    uint64_t version;     /* rounds (sync) or updates (async) applied */
    uint64_t step;        /* optimizer steps (Adam's bias correction) */
    uint64_t data_off;    /* the data section's place in the file */
    uint32_t data_crc;
    /* Writing only: where the section's arrays are (param, then nstate state arrays). */
    const float *arrays[1 + PS_CKPT_MAX_STATE];
} ps_ckpt_chunk_t;

typedef struct {
    uint64_t round;
    uint32_t view_version, rank, num_servers, mode;
    uint32_t num_tensors, num_chunks;
    ps_ckpt_tensor_t *tensors;
    ps_ckpt_chunk_t *chunks;
    uint64_t header_len, file_len;
} ps_ckpt_header_t;

/* CRC32C (Castagnoli) of len bytes, continuing from crc (0 to start), as iSCSI and ext4 use it. */
uint32_t ps_crc32c(uint32_t crc, const void *buf, size_t len);
/* Bytes of a chunk's data section. */
uint64_t ps_ckpt_section_len(const ps_ckpt_chunk_t *c);

/*
 * Writes the file `path` atomically: h's tensors and chunks (their arrays), computing every
 * offset and CRC. *bytes gets the file's size. PSERV_ERR_IO with the detail in pserv_last_error().
 */
pserv_status_t ps_ckpt_write_file(const char *path, ps_ckpt_header_t *h, uint64_t *bytes);
/*
 * Reads and checks a file's header (fd open for reading) into *h (freed with
 * ps_ckpt_header_free). PSERV_ERR_CORRUPT, or PSERV_ERR_IO, with pserv_last_error() naming
 * `name` and the problem.
 */
pserv_status_t ps_ckpt_read_header(int fd, const char *name, ps_ckpt_header_t *h);
void ps_ckpt_header_free(ps_ckpt_header_t *h);
/* Reads chunk c's data section into buf (ps_ckpt_section_len bytes) and checks its CRC. */
pserv_status_t ps_ckpt_read_section(int fd, const char *name, const ps_ckpt_chunk_t *c, void *buf);

#endif
