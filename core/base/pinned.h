/*
 * Pinned host memory for server shards: page-aligned, locked (mlock) so it never pages out
 * under an RDMA transfer, and registered with the transport by the caller. When the process
 * may not lock more memory (RLIMIT_MEMLOCK), the memory is still used, unlocked, and one
 * warning says so.
 */
#ifndef PS_PINNED_H
#define PS_PINNED_H

#include <stddef.h>

#include "pserv/pserv_status.h"

/*
 * Also registering the memory with a GPU driver: core cannot include CUDA, so cuda/ installs
 * these hooks when it is part of the library. reg returns 0 when the memory was registered;
 * a failure (no GPU, no driver) leaves the memory pinned for the transport only.
 */
typedef struct {
    int (*reg)(void *ptr, size_t len);
    void (*unreg)(void *ptr);
} ps_pinned_hooks_t;

void ps_pinned_set_hooks(const ps_pinned_hooks_t *hooks);

/* Allocates len bytes (rounded up to pages), zero-filled, and registers them with the hooks. */
pserv_status_t ps_pinned_alloc(size_t len, void **ptr);
void ps_pinned_free(void *ptr, size_t len);

#endif
