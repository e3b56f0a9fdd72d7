#include "ckpt_file.h"

#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_io.h"
#include "codec.h"
#include "log.h"


uint32_t ps_crc32c(uint32_t crc, const void *buf, size_t len)
{
    /* ISA-L's crc32_iscsi keeps the register un-inverted and takes an int length. */
    uint32_t reg = ~crc;
    const unsigned char *p = buf;
    while (len > 0) {
        int n = len > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)len;
        reg = crc32_iscsi((unsigned char *)p, n, reg);
        p += n;
        len -= (size_t)n;
    }
    return ~reg;
}

uint64_t ps_ckpt_section_len(const ps_ckpt_chunk_t *c)
{
    return (uint64_t)(1 + c->nstate) * c->len * sizeof(float);
}

static uint64_t ps_ckpt_header_len(uint32_t num_tensors, uint32_t num_chunks)
{
    return PS_CKPT_FIXED_LEN + (uint64_t)num_tensors * PS_CKPT_TENSOR_LEN + (uint64_t)num_chunks * PS_CKPT_CHUNK_LEN + 4;
}

static void ps_ckpt_encode_header(const ps_ckpt_header_t *h, uint8_t *buf)
{
    ps_writer_t w;
    ps_writer_init(&w, buf, h->header_len);
    ps_put_u64(&w, PS_CKPT_MAGIC);
    ps_put_u32(&w, PS_CKPT_FORMAT);
    ps_put_u32(&w, (uint32_t)h->header_len);
    ps_put_u64(&w, h->round);
    ps_put_u32(&w, h->view_version);
    ps_put_u32(&w, h->rank);
    ps_put_u32(&w, h->num_servers);
    ps_put_u32(&w, h->mode);
    ps_put_u32(&w, h->num_tensors);
    ps_put_u32(&w, h->num_chunks);
    for (uint32_t i = 0; i < h->num_tensors; i++) {
        ps_put_u64(&w, h->tensors[i].key);
        ps_tensor_desc_encode(&h->tensors[i].desc, &w);
        ps_put_u64(&w, h->tensors[i].chunk_elems);
    }
    for (uint32_t i = 0; i < h->num_chunks; i++) {
        const ps_ckpt_chunk_t *c = &h->chunks[i];
        ps_put_u64(&w, c->key);
        ps_put_u32(&w, c->chunk);
        ps_put_u32(&w, c->nstate);
        ps_put_u64(&w, c->offset);
        ps_put_u64(&w, c->len);
        ps_put_u64(&w, c->version);
        ps_put_u64(&w, c->step);
        ps_put_u64(&w, c->data_off);
        ps_put_u32(&w, c->data_crc);
        ps_put_u32(&w, 0); /* reserved */
    }
    ps_put_u32(&w, ps_crc32c(0, buf, w.len));
}

pserv_status_t ps_ckpt_write_file(const char *path, ps_ckpt_header_t *h, uint64_t *bytes)
{
    h->header_len = ps_ckpt_header_len(h->num_tensors, h->num_chunks);
    uint64_t off = h->header_len;
    for (uint32_t i = 0; i < h->num_chunks; i++) {
        ps_ckpt_chunk_t *c = &h->chunks[i];
        c->data_off = off;
        c->data_crc = 0;
        for (uint32_t a = 0; a <= c->nstate; a++) c->data_crc = ps_crc32c(c->data_crc, c->arrays[a], c->len * sizeof(float));
        off += ps_ckpt_section_len(c);
    }
    h->file_len = off;
    uint8_t *hdr = malloc(h->header_len);
    if (hdr == NULL) return PSERV_ERR_NO_MEMORY;
    ps_ckpt_encode_header(h, hdr);
    ps_atomic_file_t f;
    pserv_status_t st = ps_atomic_file_open(&f, path);
    if (st == PSERV_OK) st = ps_atomic_file_write(&f, hdr, h->header_len);
    for (uint32_t i = 0; st == PSERV_OK && i < h->num_chunks; i++)
        for (uint32_t a = 0; st == PSERV_OK && a <= h->chunks[i].nstate; a++)
            st = ps_atomic_file_write(&f, h->chunks[i].arrays[a], h->chunks[i].len * sizeof(float));
    st = ps_atomic_file_close(&f, st);
    free(hdr);
    if (st == PSERV_OK && bytes) *bytes = h->file_len;
    return st;
}

static pserv_status_t ps_ckpt_bad(const char *name, const char *what)
{
    ps_set_last_error("checkpoint %s: %s", name, what);
    return PSERV_ERR_CORRUPT;
}

static pserv_status_t ps_ckpt_pread(int fd, const char *name, void *buf, uint64_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len > ((size_t)1 << 30) ? ((size_t)1 << 30) : (size_t)len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            ps_set_last_error("checkpoint %s: read failed: %s", name, strerror(errno));
            return PSERV_ERR_IO;
        }
        if (n == 0) return ps_ckpt_bad(name, "truncated (the file ends inside a section)");
        p += n, off += (uint64_t)n, len -= (uint64_t)n;
    }
    return PSERV_OK;
}

/* The tensors and chunks after the fixed part; checks each against the others. */
static pserv_status_t ps_ckpt_decode_tables(ps_reader_t *r, const char *name, ps_ckpt_header_t *h)
{
    char why[160];
    for (uint32_t i = 0; i < h->num_tensors; i++) {
        ps_ckpt_tensor_t *t = &h->tensors[i];
        t->key = ps_get_u64(r);
        if (ps_tensor_desc_decode(r, &t->desc) < 0) {
            snprintf(why, sizeof(why), "tensor %u (key %llu) has an invalid descriptor", i, (unsigned long long)t->key);
            return ps_ckpt_bad(name, why);
        }
        t->chunk_elems = ps_get_u64(r);
        for (uint32_t j = 0; j < i; j++)
            if (h->tensors[j].key == t->key) return ps_ckpt_bad(name, "a tensor key appears twice");
        if (t->chunk_elems == 0 || (t->desc.count + t->chunk_elems - 1) / t->chunk_elems > UINT32_MAX) {
            snprintf(why, sizeof(why), "tensor %llu has chunk size %llu for %llu elements", (unsigned long long)t->key,
                     (unsigned long long)t->chunk_elems, (unsigned long long)t->desc.count);
            return ps_ckpt_bad(name, why);
        }
    }
    uint64_t at = h->header_len;
    for (uint32_t i = 0; i < h->num_chunks; i++) {
        ps_ckpt_chunk_t *c = &h->chunks[i];
        c->key = ps_get_u64(r);
        c->chunk = ps_get_u32(r);
        c->nstate = ps_get_u32(r);
        c->offset = ps_get_u64(r);
        c->len = ps_get_u64(r);
        c->version = ps_get_u64(r);
        c->step = ps_get_u64(r);
        c->data_off = ps_get_u64(r);
        c->data_crc = ps_get_u32(r);
        uint32_t reserved = ps_get_u32(r);
        const ps_ckpt_tensor_t *t = NULL;
        for (uint32_t j = 0; j < h->num_tensors && t == NULL; j++)
            if (h->tensors[j].key == c->key) t = &h->tensors[j];
        const char *bad = t == NULL ? "names a tensor the header does not list"
                          : reserved != 0 ? "has a reserved field that is not zero"
                          : c->nstate > PS_CKPT_MAX_STATE ? "has more optimizer state arrays than any optimizer"
                          : c->chunk >= (t->desc.count + t->chunk_elems - 1) / t->chunk_elems ? "is beyond its tensor's chunks"
                          : c->offset != (uint64_t)c->chunk * t->chunk_elems ? "has an offset that is not its chunk's"
                          : c->len != (t->desc.count - c->offset < t->chunk_elems ? t->desc.count - c->offset : t->chunk_elems)
                              ? "has a length that is not its chunk's"
                          : c->data_off != at ? "has a data section that is not where the previous one ends"
                                              : NULL;
        if (bad != NULL) {
            snprintf(why, sizeof(why), "chunk entry %u (tensor %llu chunk %u) %s", i, (unsigned long long)c->key,
                     c->chunk, bad);
            return ps_ckpt_bad(name, why);
        }
        for (uint32_t j = 0; j < i; j++)
            if (h->chunks[j].key == c->key && h->chunks[j].chunk == c->chunk)
                return ps_ckpt_bad(name, "a chunk appears twice");
        at += ps_ckpt_section_len(c);
    }
    h->file_len = at;
    return PSERV_OK;
}

pserv_status_t ps_ckpt_read_header(int fd, const char *name, ps_ckpt_header_t *out)
{
    ps_ckpt_header_t h = {0};
    struct stat sb;
    uint8_t fixed[PS_CKPT_FIXED_LEN];
    char why[200];
    if (fstat(fd, &sb) != 0) {
        ps_set_last_error("checkpoint %s: %s", name, strerror(errno));
        return PSERV_ERR_IO;
    }
    if ((uint64_t)sb.st_size < PS_CKPT_FIXED_LEN + 4) return ps_ckpt_bad(name, "truncated (shorter than a header)");
    pserv_status_t st = ps_ckpt_pread(fd, name, fixed, sizeof(fixed), 0);
    if (st < 0) return st;
    ps_reader_t r;
    ps_reader_init(&r, fixed, sizeof(fixed));
    uint64_t magic = ps_get_u64(&r);
    uint32_t format = ps_get_u32(&r);
    h.header_len = ps_get_u32(&r);
    h.round = ps_get_u64(&r);
    h.view_version = ps_get_u32(&r);
    h.rank = ps_get_u32(&r);
    h.num_servers = ps_get_u32(&r);
    h.mode = ps_get_u32(&r);
    h.num_tensors = ps_get_u32(&r);
    h.num_chunks = ps_get_u32(&r);
    if (magic != PS_CKPT_MAGIC) return ps_ckpt_bad(name, "not a pserv checkpoint (bad magic)");
    if (format != PS_CKPT_FORMAT) {
        snprintf(why, sizeof(why), "format version %u, this pserv reads version %u", format, PS_CKPT_FORMAT);
        return ps_ckpt_bad(name, why);
    }
    if (h.header_len > PS_CKPT_HEADER_MAX || h.header_len != ps_ckpt_header_len(h.num_tensors, h.num_chunks)) {
        snprintf(why, sizeof(why), "header length %llu does not fit %u tensors and %u chunks",
                 (unsigned long long)h.header_len, h.num_tensors, h.num_chunks);
        return ps_ckpt_bad(name, why);
    }
    if (h.header_len > (uint64_t)sb.st_size) return ps_ckpt_bad(name, "truncated (the file ends inside its header)");
    uint8_t *buf = malloc(h.header_len);
    h.tensors = calloc(h.num_tensors ? h.num_tensors : 1, sizeof(*h.tensors));
    h.chunks = calloc(h.num_chunks ? h.num_chunks : 1, sizeof(*h.chunks));
    if (buf == NULL || h.tensors == NULL || h.chunks == NULL) {
        st = PSERV_ERR_NO_MEMORY;
        goto out;
    }
    if ((st = ps_ckpt_pread(fd, name, buf, h.header_len, 0)) < 0) goto out;
    ps_reader_init(&r, buf + h.header_len - 4, 4);
    if (ps_get_u32(&r) != ps_crc32c(0, buf, h.header_len - 4)) {
        st = ps_ckpt_bad(name, "header CRC32C mismatch (the header is damaged)");
        goto out;
    }
    if (h.mode > 1 || h.num_servers == 0 || h.rank >= h.num_servers) {
        snprintf(why, sizeof(why), "header says shard %u of %u servers in mode %u", h.rank, h.num_servers, h.mode);
        st = ps_ckpt_bad(name, why);
        goto out;
    }
    ps_reader_init(&r, buf + PS_CKPT_FIXED_LEN, h.header_len - PS_CKPT_FIXED_LEN - 4);
    if ((st = ps_ckpt_decode_tables(&r, name, &h)) < 0) goto out;
    if (h.file_len != (uint64_t)sb.st_size) {
        snprintf(why, sizeof(why), "%s: the file has %llu bytes, its header describes %llu",
                 h.file_len > (uint64_t)sb.st_size ? "truncated" : "trailing bytes", (unsigned long long)sb.st_size,
                 (unsigned long long)h.file_len);
        st = ps_ckpt_bad(name, why);
    }
out:
    free(buf);
    if (st < 0) ps_ckpt_header_free(&h);
    else *out = h;
    return st;
}

void ps_ckpt_header_free(ps_ckpt_header_t *h)
{
    free(h->tensors);
    free(h->chunks);
    h->tensors = NULL;
    h->chunks = NULL;
}

pserv_status_t ps_ckpt_read_section(int fd, const char *name, const ps_ckpt_chunk_t *c, void *buf)
{
    pserv_status_t st = ps_ckpt_pread(fd, name, buf, ps_ckpt_section_len(c), c->data_off);
    if (st < 0) return st;
    if (ps_crc32c(0, buf, ps_ckpt_section_len(c)) != c->data_crc) {
        char why[120];
        snprintf(why, sizeof(why), "data of tensor %llu chunk %u fails its CRC32C (the section is damaged)",
                 (unsigned long long)c->key, c->chunk);
        return ps_ckpt_bad(name, why);
    }
    return PSERV_OK;
}
