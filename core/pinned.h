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

/* Allocates len bytes (rounded up to pages), zero-filled. */
pserv_status_t ps_pinned_alloc(size_t len, void **ptr);
void ps_pinned_free(void *ptr, size_t len);

#endif
