/*
 * Bounds-checked little-endian writer and reader for control payloads (join, job
 * description, tensor descriptors). A reader never reads past its buffer: a short or
 * malformed payload sets `bad`, and every later read returns zero.
 */
#ifndef PS_CODEC_H
#define PS_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *buf;
    size_t cap, len;
    int overflow; /* set when a write did not fit */
} ps_writer_t;

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    int bad; /* set when a read ran past the end or a string was malformed */
} ps_reader_t;

void ps_writer_init(ps_writer_t *w, void *buf, size_t cap);
void ps_put_u32(ps_writer_t *w, uint32_t v);
void ps_put_u64(ps_writer_t *w, uint64_t v);
void ps_put_f32(ps_writer_t *w, float v);
/* A string as u32 length + bytes (no terminator). */
void ps_put_str(ps_writer_t *w, const char *s);

void ps_reader_init(ps_reader_t *r, const void *buf, size_t len);
uint32_t ps_get_u32(ps_reader_t *r);
uint64_t ps_get_u64(ps_reader_t *r);
float ps_get_f32(ps_reader_t *r);
/* Reads a string into out (cap bytes, NUL-terminated); a longer one sets bad. */
void ps_get_str(ps_reader_t *r, char *out, size_t cap);

#endif
