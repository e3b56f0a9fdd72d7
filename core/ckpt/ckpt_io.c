#include "ckpt_io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static pserv_status_t ps_io_error(const char *what, const char *path)
{
    ps_set_last_error("%s %s: %s", what, path, strerror(errno));
    return PSERV_ERR_IO;
}

/* The directory part of path into out. */
static void ps_dir_of(const char *path, char *out, size_t cap)
{
    char copy[PS_CKPT_PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", path);
    snprintf(out, cap, "%s", dirname(copy));
}

pserv_status_t ps_dir_sync(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ps_io_error("cannot open directory", path);
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? PSERV_OK : ps_io_error("cannot fsync directory", path);
}

pserv_status_t ps_dir_make(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return ps_io_error("cannot create directory", path);
    char parent[PS_CKPT_PATH_MAX];
    ps_dir_of(path, parent, sizeof(parent));
    return ps_dir_sync(parent);
}

pserv_status_t ps_atomic_file_open(ps_atomic_file_t *f, const char *path)
{
    if (strlen(path) >= sizeof(f->path)) {
        ps_set_last_error("path too long: %s", path);
        return PSERV_ERR_INVALID_ARG;
    }
    snprintf(f->path, sizeof(f->path), "%s", path);
    snprintf(f->tmp, sizeof(f->tmp), "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    return f->fd < 0 ? ps_io_error("cannot create", f->tmp) : PSERV_OK;
}

pserv_status_t ps_atomic_file_write(ps_atomic_file_t *f, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(f->fd, p, len > ((size_t)1 << 30) ? ((size_t)1 << 30) : len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return ps_io_error("cannot write", f->tmp);
        p += n;
        len -= (size_t)n;
    }
    return PSERV_OK;
}

pserv_status_t ps_atomic_file_close(ps_atomic_file_t *f, pserv_status_t st)
{
    if (f->fd < 0) return st;
    if (st == PSERV_OK && fsync(f->fd) != 0) st = ps_io_error("cannot fsync", f->tmp);
    if (close(f->fd) != 0 && st == PSERV_OK) st = ps_io_error("cannot close", f->tmp);
    f->fd = -1;
    if (st == PSERV_OK && rename(f->tmp, f->path) != 0) st = ps_io_error("cannot rename into place", f->path);
    if (st != PSERV_OK) {
        unlink(f->tmp);
        return st;
    }
    char dir[PS_CKPT_PATH_MAX];
    ps_dir_of(f->path, dir, sizeof(dir));
    return ps_dir_sync(dir);
}
