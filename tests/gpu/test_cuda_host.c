/* pserv_cuda on any machine: without a GPU it reports that clearly; with one it registers memory. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "pserv/pserv_cuda.h"

Test(gpu, device_count_says_why_when_absent)
{
    int n = -1;
    pserv_status_t st = pserv_cuda_device_count(&n);
    if (st == PSERV_OK) {
        cr_assert_gt(n, 0);
    } else {
        cr_assert_eq(st, PSERV_ERR_UNSUPPORTED, "unexpected status %s", pserv_strerror(st));
        cr_assert_eq(n, 0);
        cr_assert_neq(strlen(pserv_cuda_last_error()), 0, "no reason given for the missing device");
    }
    cr_assert_eq(pserv_cuda_device_count(NULL), PSERV_ERR_INVALID_ARG);
}

Test(gpu, host_register_round_trip)
{
    int n = 0;
    if (pserv_cuda_device_count(&n) != PSERV_OK) cr_skip_test("no CUDA device: %s", pserv_cuda_last_error());
    size_t len = 1 << 20;
    void *p = aligned_alloc(4096, len);
    cr_assert_not_null(p);
    cr_assert_eq(pserv_cuda_host_register(p, len), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(pserv_cuda_host_unregister(p), PSERV_OK, "%s", pserv_cuda_last_error());
    cr_assert_eq(pserv_cuda_host_register(NULL, len), PSERV_ERR_INVALID_ARG);
    free(p);
}
