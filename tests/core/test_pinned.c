/* Pinned server memory: page-aligned, zeroed, usable, and handed to the GPU-driver hooks. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <unistd.h>

#include "pinned.h"

static int regs, unregs;
static size_t reg_len;
static void *reg_ptr;

static int count_reg(void *ptr, size_t len)
{
    regs++;
    reg_ptr = ptr;
    reg_len = len;
    return -1; /* as without a GPU: the memory must still be usable */
}

static void count_unreg(void *ptr)
{
    cr_assert_eq(ptr, reg_ptr);
    unregs++;
}

Test(pinned, aligned_zeroed_and_registered_through_the_hooks)
{
    ps_pinned_hooks_t hooks = {count_reg, count_unreg};
    ps_pinned_set_hooks(&hooks);
    size_t page = (size_t)sysconf(_SC_PAGESIZE), len = 3 * page + 5;
    unsigned char *p;
    cr_assert_eq(ps_pinned_alloc(len, (void **)&p), PSERV_OK);
    cr_assert_eq((uintptr_t)p % page, 0);
    for (size_t i = 0; i < len; i++) cr_assert_eq(p[i], 0);
    p[len - 1] = 7;
    cr_assert_eq(regs, 1);
    cr_assert_eq(reg_ptr, p);
    cr_assert_eq(reg_len, 4 * page, "registered %zu bytes", reg_len);
    ps_pinned_free(p, len);
    cr_assert_eq(unregs, 1);
    ps_pinned_hooks_t none = {NULL, NULL};
    ps_pinned_set_hooks(&none);
    cr_assert_eq(ps_pinned_alloc(0, (void **)&p), PSERV_ERR_INVALID_ARG);
}
