#include "idx_dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define PS_IDX_MAX_ITEMS 10000000u
#define PS_IDX_MAX_SIDE 4096u
#define PS_IDX_CLASSES 10

static uint32_t ps_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads exactly n bytes; returns 0, or -1 with err set. */
static int ps_idx_read(gzFile f, const char *path, void *buf, size_t n, char *err, size_t err_len)
{
    uint8_t *p = buf;
    while (n > 0) {
        unsigned want = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(f, p, want);
        if (got <= 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            snprintf(err, err_len, "%s: %s", path, got == 0 || zerr == Z_OK ? "truncated" : msg);
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

/* Opens an IDX file and reads its header: magic, then ndims big-endian dimensions. */
static pserv_status_t ps_idx_open(const char *path, uint32_t magic, unsigned ndims, uint32_t *dims, gzFile *out,
                                  char *err, size_t err_len)
{
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (f == NULL) {
        snprintf(err, err_len, "%s: %s", path, errno ? strerror(errno) : "cannot open");
        return PSERV_ERR_IO;
    }
    uint8_t hdr[4 * 4];
    if (ps_idx_read(f, path, hdr, 4 * (1 + ndims), err, err_len) != 0) goto err_close;
    if (ps_be32(hdr) != magic) {
        snprintf(err, err_len, "%s: bad magic 0x%08x (want 0x%08x)", path, ps_be32(hdr), magic);
        goto err_close;
    }
    for (unsigned i = 0; i < ndims; i++) {
        dims[i] = ps_be32(hdr + 4 * (i + 1));
        uint32_t max = i == 0 ? PS_IDX_MAX_ITEMS : PS_IDX_MAX_SIDE;
        if (dims[i] == 0 || dims[i] > max) {
            snprintf(err, err_len, "%s: dimension %u is %u (want 1..%u)", path, i, dims[i], max);
            goto err_close;
        }
    }
    *out = f;
    return PSERV_OK;

err_close:
    gzclose(f);
    return PSERV_ERR_CORRUPT;
}

pserv_status_t ps_dataset_load_idx(const char *images_path, const char *labels_path, ps_dataset_t *out, char *err,
                                   size_t err_len)
{
    uint32_t idims[3], ldims[1];
    gzFile fi = NULL, fl = NULL;
    uint8_t *pixels = NULL;
    ps_dataset_t set = {0};
    pserv_status_t st;

    if ((st = ps_idx_open(images_path, PS_IDX_IMAGES_MAGIC, 3, idims, &fi, err, err_len)) < 0) return st;
    if ((st = ps_idx_open(labels_path, PS_IDX_LABELS_MAGIC, 1, ldims, &fl, err, err_len)) < 0) goto out;
    st = PSERV_ERR_CORRUPT;
    if (idims[0] != ldims[0]) {
        snprintf(err, err_len, "%s has %u images but %s has %u labels", images_path, idims[0], labels_path, ldims[0]);
        goto out;
    }
    set.count = idims[0];
    set.rows = idims[1];
    set.cols = idims[2];
    size_t npix = set.count * set.rows * set.cols;
    st = PSERV_ERR_NO_MEMORY;
    pixels = malloc(npix);
    set.images = malloc(npix * sizeof(float));
    set.labels = malloc(set.count);
    if (pixels == NULL || set.images == NULL || set.labels == NULL) {
        snprintf(err, err_len, "no memory for %zu images", set.count);
        goto out;
    }
    st = PSERV_ERR_CORRUPT;
    if (ps_idx_read(fi, images_path, pixels, npix, err, err_len) != 0) goto out;
    if (ps_idx_read(fl, labels_path, set.labels, set.count, err, err_len) != 0) goto out;
    for (size_t i = 0; i < set.count; i++)
        if (set.labels[i] >= PS_IDX_CLASSES) {
            snprintf(err, err_len, "%s: label %u of sample %zu is not a class 0..9", labels_path, set.labels[i], i);
            goto out;
        }
    for (size_t i = 0; i < npix; i++) set.images[i] = (float)pixels[i] * (1.0f / 255.0f);
    *out = set;
    set.images = NULL;
    set.labels = NULL;
    st = PSERV_OK;
out:
    free(pixels);
    ps_dataset_free(&set);
    if (fi) gzclose(fi);
    if (fl) gzclose(fl);
    return st;
}

pserv_status_t ps_dataset_load_fashion_mnist(const char *dir, int train, ps_dataset_t *out, char *err, size_t err_len)
{
    char images[4096], labels[4096];
    const char *prefix = train ? "train" : "t10k";
    snprintf(images, sizeof(images), "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(labels, sizeof(labels), "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    return ps_dataset_load_idx(images, labels, out, err, err_len);
}

void ps_dataset_free(ps_dataset_t *set)
{
    free(set->images);
    free(set->labels);
    set->images = NULL;
    set->labels = NULL;
    set->count = 0;
}
