/*
 * Linked into every test executable of a ThreadSanitizer build (PSERV_TSAN) only.
 *
 * Criterion's sandboxes (BoxFort) place their shared arenas at a random address
 * 0x200000000000 + (rand_r() & 0x3fffff) * 16 MiB and give up after 10 candidates that are
 * already mapped. TSan reserves nearly all of that range for its shadow and guard mappings
 * (about 2% of it stays free on x86_64), so the runner aborts with "Could not initialize
 * inheritable arena" and a per-test arena that fails later crashes it
 * (https://github.com/Snaipe/Criterion/issues/274).
 *
 * This rand_r interposes libc's for the process. For a caller inside libcriterion it draws from
 * the same seed until the candidate address BoxFort will derive is unmapped, which is what
 * BoxFort itself checks next; every other caller gets libc's rand_r unchanged. It touches no
 * pserv code and no test result: it only saves BoxFort the candidates it would reject.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* BoxFort's formula (src/arena.c, 64-bit): base + (r & mask) * step. */
#define BXF_MMAP_BASE ((uintptr_t)0x200000000000ULL)
#define BXF_OFF_MASK 0x3fffffu
#define BXF_OFF_SHIFT 24
/* Far more than the ~50 draws a free candidate takes under TSan; bounds the loop regardless. */
#define MAX_DRAWS 100000

typedef int (*rand_r_fn)(unsigned int *seed);

static int from_criterion(const void *caller)
{
    Dl_info info;
    return dladdr(caller, &info) && info.dli_fname && strstr(info.dli_fname, "libcriterion");
}

static int candidate_free(int r)
{
    unsigned char vec;
    void *base = (void *)(BXF_MMAP_BASE + ((uintptr_t)((unsigned)r & BXF_OFF_MASK) << BXF_OFF_SHIFT));
    /* mincore fails with ENOMEM exactly when the page is not mapped. */
    return mincore(base, (size_t)sysconf(_SC_PAGESIZE), &vec) == -1 && errno == ENOMEM;
}

__attribute__((visibility("default"))) int rand_r(unsigned int *seed)
{
    static rand_r_fn next;
    rand_r_fn fn = __atomic_load_n(&next, __ATOMIC_ACQUIRE);
    if (!fn) {
        fn = (rand_r_fn)dlsym(RTLD_NEXT, "rand_r");
        __atomic_store_n(&next, fn, __ATOMIC_RELEASE);
    }
    if (!from_criterion(__builtin_return_address(0))) return fn(seed);

    int saved = errno, r = fn(seed);
    for (int i = 1; i < MAX_DRAWS && !candidate_free(r); i++) r = fn(seed);
    errno = saved;
    return r;
}
