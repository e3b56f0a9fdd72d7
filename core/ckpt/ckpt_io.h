/*
 * Files that appear whole or not at all: written under a temporary name in the same directory,
 * fsync'd, renamed over the final name, and the directory fsync'd so the rename survives a crash.
 */
#ifndef PS_CKPT_IO_H
#define PS_CKPT_IO_H

#include <stddef.h>

#include "pserv/pserv_status.h"

#define PS_CKPT_PATH_MAX 1024

typedef struct {
    int fd;
    char path[PS_CKPT_PATH_MAX], tmp[PS_CKPT_PATH_MAX + 32];
} ps_atomic_file_t;

/* Creates the temporary file beside path. PSERV_ERR_IO with pserv_last_error() naming it. */
pserv_status_t ps_atomic_file_open(ps_atomic_file_t *f, const char *path);
pserv_status_t ps_atomic_file_write(ps_atomic_file_t *f, const void *buf, size_t len);
/* st OK: fsync, rename into place, fsync the directory; otherwise removes the temporary file.
 * Returns the first error. */
pserv_status_t ps_atomic_file_close(ps_atomic_file_t *f, pserv_status_t st);
/* mkdir (an existing directory is fine), then fsync of its parent so the entry is durable. */
pserv_status_t ps_dir_make(const char *path);
/* fsync of a directory. */
pserv_status_t ps_dir_sync(const char *path);

#endif
