#include "pinned.h"

#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

static ps_pinned_hooks_t ps_pinned_hooks;

void ps_pinned_set_hooks(const ps_pinned_hooks_t *hooks)
{
    ps_pinned_hooks = *hooks;
}

static size_t ps_page_round(size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (len + page - 1) / page * page;
}

pserv_status_t ps_pinned_alloc(size_t len, void **ptr)
{
    static int warned;
    if (len == 0) return PSERV_ERR_INVALID_ARG;
    size_t n = ps_page_round(len);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        ps_error("mmap of %zu bytes failed", n);
        return PSERV_ERR_NO_MEMORY;
    }
    if (mlock(p, n) != 0 && !__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
        ps_warn("mlock failed (raise RLIMIT_MEMLOCK, ulimit -l): server memory is not locked");
    if (ps_pinned_hooks.reg && ps_pinned_hooks.reg(p, n) != 0)
        ps_debug("%zu bytes at %p not registered with the GPU driver", n, p);
    *ptr = p;
    return PSERV_OK;
}

void ps_pinned_free(void *ptr, size_t len)
{
    if (ptr == NULL) return;
    if (ps_pinned_hooks.unreg) ps_pinned_hooks.unreg(ptr);
    munmap(ptr, ps_page_round(len));
}
