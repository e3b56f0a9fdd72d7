/* The wait kernel of stream_wait.h. */
#include "cuda_check.h"
#include "stream_wait.h"

/* A system-scope acquire load goes to the point of coherence with the host every time (no stale
 * L1/L2 copy), which is what makes a host store visible to a running kernel; volatile is the
 * pre-Volta equivalent. The work ordered after the kernel (a copy engine reading the pinned
 * buffer) starts after the kernel ends, i.e. after the host's release store was seen. */
__device__ static __forceinline__ uint32_t ps_load_flag(const uint32_t *flag)
{
#if __CUDA_ARCH__ >= 700
    uint32_t v;
    asm volatile("ld.acquire.sys.u32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
    return v;
#else
    return *(const volatile uint32_t *)flag;
#endif
}

__global__ static void ps_wait_flag_kernel(const uint32_t *flag, uint32_t seq)
{
    while ((int32_t)(ps_load_flag(flag) - seq) < 0) {
#if __CUDA_ARCH__ >= 700
        __nanosleep(1000);
#endif
    }
}

pserv_status_t ps_stream_wait_flag(const uint32_t *flag, uint32_t seq, cudaStream_t stream)
{
    pserv_status_t st;
    ps_wait_flag_kernel<<<1, 1, 0, stream>>>(flag, seq);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_wait_flag_kernel", st, out);
out:
    return st;
}
