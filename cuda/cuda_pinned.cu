/*
 * Registers server shards' pinned memory with the CUDA driver too (ARCHITECTURE: "registered
 * with CUDA where a driver exists"), through core/pinned.h's hooks. The hooks are installed when
 * the library loads; they touch CUDA only when memory is allocated, and only once a device was
 * found, so machines without a GPU pay one failed device query per process.
 */
#include <pthread.h>

#include "cuda_check.h"
#include "pserv/pserv_cuda.h"

extern "C" {
#include "pinned.h"
}

static pthread_once_t ps_pinned_once = PTHREAD_ONCE_INIT;
static int ps_pinned_have_device;

static void ps_pinned_probe(void)
{
    int n = 0;
    ps_pinned_have_device = pserv_cuda_device_count(&n) == PSERV_OK && n > 0;
}

static int ps_pinned_cuda_reg(void *ptr, size_t len)
{
    pthread_once(&ps_pinned_once, ps_pinned_probe);
    if (!ps_pinned_have_device) return -1;
    return pserv_cuda_host_register(ptr, len) == PSERV_OK ? 0 : -1;
}

static void ps_pinned_cuda_unreg(void *ptr)
{
    pthread_once(&ps_pinned_once, ps_pinned_probe);
    if (ps_pinned_have_device) (void)pserv_cuda_host_unregister(ptr); /* not registered: harmless */
}

__attribute__((constructor)) static void ps_pinned_cuda_install(void)
{
    ps_pinned_hooks_t hooks = {ps_pinned_cuda_reg, ps_pinned_cuda_unreg};
    ps_pinned_set_hooks(&hooks);
}
