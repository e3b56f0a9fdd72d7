/* Test hooks declared in cuda/cuda_worker_test.h. */
#include "cuda_check.h"
#include "cuda_worker_test.h"

extern "C" pserv_status_t ps_cw_test_set_device(int device)
{
    return PS_CUDA_CALL(cudaSetDevice(device));
}

extern "C" pserv_status_t ps_cw_test_stream_create(pserv_cuda_stream_t *stream)
{
    cudaStream_t s;
    int n;
    pserv_status_t st = pserv_cuda_device_count(&n);
    if (st < 0) return st;
    if ((st = PS_CUDA_CALL(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking))) < 0) return st;
    *stream = s;
    return PSERV_OK;
}

extern "C" void ps_cw_test_stream_destroy(pserv_cuda_stream_t stream)
{
    (void)PS_CUDA_CALL(cudaStreamSynchronize(stream));
    (void)PS_CUDA_CALL(cudaStreamDestroy(stream));
}

extern "C" pserv_status_t ps_cw_test_stream_sync(pserv_cuda_stream_t stream)
{
    return PS_CUDA_CALL(cudaStreamSynchronize(stream));
}

__global__ static void ps_cw_test_sleep_kernel(unsigned long long ns)
{
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
#if __CUDA_ARCH__ >= 700
        __nanosleep(1000);
#endif
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}

__global__ static void ps_cw_test_fill_kernel(float *dst, size_t n, float base, float step)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = base + (float)(i % 97) * step;
}

__global__ static void ps_cw_test_copy_kernel(float *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

static pserv_status_t ps_cw_test_sleep(unsigned delay_us, cudaStream_t s)
{
    pserv_status_t st = PSERV_OK;
    if (delay_us == 0) return st;
    ps_cw_test_sleep_kernel<<<1, 1, 0, s>>>(delay_us * 1000ull);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_cw_test_sleep_kernel", st, out);
out:
    return st;
}

extern "C" pserv_status_t ps_cw_test_fill(float *dst, size_t n, float base, float step, unsigned delay_us,
                                          pserv_cuda_stream_t stream)
{
    pserv_status_t st = ps_cw_test_sleep(delay_us, stream);
    if (st < 0) return st;
    ps_cw_test_fill_kernel<<<64, 256, 0, stream>>>(dst, n, base, step);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_cw_test_fill_kernel", st, out);
out:
    return st;
}

extern "C" pserv_status_t ps_cw_test_copy(float *dst, const float *src, size_t n, unsigned delay_us,
                                          pserv_cuda_stream_t stream)
{
    pserv_status_t st = ps_cw_test_sleep(delay_us, stream);
    if (st < 0) return st;
    ps_cw_test_copy_kernel<<<64, 256, 0, stream>>>(dst, src, n);
    PS_CUDA_LAUNCH_CHECK_GOTO("ps_cw_test_copy_kernel", st, out);
out:
    return st;
}
