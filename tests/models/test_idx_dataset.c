/* IDX loading: the real Fashion-MNIST files, and files that lie about themselves. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "idx_dataset.h"
#include "data_dir.h"
#include "pserv/pserv_model.h"


static void check_set(const ps_dataset_t *d, size_t count)
{
    cr_assert_eq(d->count, count);
    cr_assert_eq(d->rows, 28);
    cr_assert_eq(d->cols, 28);
    size_t hist[10] = {0};
    for (size_t i = 0; i < d->count; i++) hist[d->labels[i]]++;
    for (int c = 0; c < 10; c++) cr_assert_eq(hist[c], count / 10, "class %d has %zu samples", c, hist[c]);
    float lo = 1, hi = 0;
    for (size_t i = 0; i < d->count * 784; i++) {
        lo = d->images[i] < lo ? d->images[i] : lo;
        hi = d->images[i] > hi ? d->images[i] : hi;
    }
    cr_assert_float_eq(lo, 0.0f, 1e-7);
    cr_assert_float_eq(hi, 1.0f, 1e-7);
}

Test(idx_dataset, loads_fashion_mnist, .timeout = 60)
{
    ps_dataset_t train, test;
    char err[512] = "";
    cr_assert_eq(ps_dataset_load_fashion_mnist(data_dir(), 1, &train, err, sizeof(err)), PSERV_OK, "%s", err);
    cr_assert_eq(ps_dataset_load_fashion_mnist(data_dir(), 0, &test, err, sizeof(err)), PSERV_OK, "%s", err);
    check_set(&train, 60000);
    check_set(&test, 10000);
    ps_dataset_free(&train);
    ps_dataset_free(&test);
}

Test(idx_dataset, missing_directory_names_the_file)
{
    ps_dataset_t d;
    char err[512] = "";
    cr_assert_eq(ps_dataset_load_fashion_mnist("/nonexistent/dir", 1, &d, err, sizeof(err)), PSERV_ERR_IO);
    cr_assert(strstr(err, "/nonexistent/dir/train-images-idx3-ubyte.gz") != NULL, "%s", err);
}

/* Writes a gzip'd IDX file: magic, dims, then `payload` bytes of data. */
static void write_idx(const char *path, uint32_t magic, const uint32_t *dims, int ndims, size_t payload)
{
    gzFile f = gzopen(path, "wb");
    cr_assert_not_null(f);
    uint8_t be[4];
    for (int i = -1; i < ndims; i++) {
        uint32_t v = i < 0 ? magic : dims[i];
        be[0] = (uint8_t)(v >> 24), be[1] = (uint8_t)(v >> 16), be[2] = (uint8_t)(v >> 8), be[3] = (uint8_t)v;
        gzwrite(f, be, 4);
    }
    for (size_t i = 0; i < payload; i++) {
        uint8_t b = (uint8_t)(i % 10);
        gzwrite(f, &b, 1);
    }
    gzclose(f);
}

static pserv_status_t load(const char *dir, char *err)
{
    char images[512], labels[512];
    ps_dataset_t d;
    snprintf(images, sizeof(images), "%s/img.gz", dir);
    snprintf(labels, sizeof(labels), "%s/lbl.gz", dir);
    pserv_status_t st = ps_dataset_load_idx(images, labels, &d, err, 512);
    if (st == PSERV_OK) ps_dataset_free(&d);
    return st;
}

Test(idx_dataset, rejects_corrupt_files)
{
    char dir[] = "/tmp/pserv_idx_XXXXXX", path[512], err[512];
    cr_assert_not_null(mkdtemp(dir));
    uint32_t idims[3] = {5, 2, 2}, ldims[1] = {5};
    snprintf(path, sizeof(path), "%s/lbl.gz", dir);
    write_idx(path, PS_IDX_LABELS_MAGIC, ldims, 1, 5);
    snprintf(path, sizeof(path), "%s/img.gz", dir);

    write_idx(path, PS_IDX_IMAGES_MAGIC, idims, 3, 20);
    cr_assert_eq(load(dir, err), PSERV_OK, "%s", err);

    write_idx(path, 0x12345678, idims, 3, 20);
    cr_assert_eq(load(dir, err), PSERV_ERR_CORRUPT);
    cr_assert(strstr(err, "bad magic 0x12345678"), "%s", err);

    write_idx(path, PS_IDX_IMAGES_MAGIC, idims, 3, 19);
    cr_assert_eq(load(dir, err), PSERV_ERR_CORRUPT);
    cr_assert(strstr(err, "truncated"), "%s", err);

    uint32_t six[3] = {6, 2, 2};
    write_idx(path, PS_IDX_IMAGES_MAGIC, six, 3, 24);
    cr_assert_eq(load(dir, err), PSERV_ERR_CORRUPT);
    cr_assert(strstr(err, "6 images") && strstr(err, "5 labels"), "%s", err);

    uint32_t huge[3] = {5, 100000, 2};
    write_idx(path, PS_IDX_IMAGES_MAGIC, huge, 3, 0);
    cr_assert_eq(load(dir, err), PSERV_ERR_CORRUPT);

    /* a label outside 0..9 */
    write_idx(path, PS_IDX_IMAGES_MAGIC, idims, 3, 20);
    snprintf(path, sizeof(path), "%s/lbl.gz", dir);
    gzFile f = gzopen(path, "wb");
    uint8_t bad[] = {0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3, 4, 42};
    gzwrite(f, bad, sizeof(bad));
    gzclose(f);
    cr_assert_eq(load(dir, err), PSERV_ERR_CORRUPT);
    cr_assert(strstr(err, "label 42"), "%s", err);

    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
