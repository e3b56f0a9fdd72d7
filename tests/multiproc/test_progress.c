/*
 * PSERV_PROGRESS: how the data path's threads wait. A one-worker job in this process (its
 * coordinator, one shard, one worker: four threads that wait on the data path) does push-pulls
 * whose values the test checks against its own arithmetic, then sits idle for a second while the
 * test reads the process's CPU time: `sleep` and `auto` must use next to none (every thread went
 * to sleep), `spin` must burn the second on its spinning threads (the mode took effect). Bad
 * values of PSERV_PROGRESS and PSERV_SPIN_US are refused at create, naming the variable.
 * Criterion runs each test in a process of its own, so each sets the variables before the
 * library first reads them.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "pserv/pserv.h"

#define N 1024 /* one 4 KiB chunk: the latency-bound case */
#define ROUNDS 200
#define LR 0.5f

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Push-pulls ROUNDS times, checks the values, idles a second; returns the CPU seconds of the idle second. */
static double run_job_then_idle(void)
{
    pserv_local_params_t lp = PSERV_LOCAL_PARAMS_INIT;
    pserv_local_h local;
    lp.num_workers = 1;
    lp.chunk_bytes = N * sizeof(float);
    cr_assert_eq(pserv_local_create(&lp, &local), PSERV_OK, "%s", pserv_last_error());

    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = pserv_local_coordinator(local);
    cr_assert_eq(pserv_worker_create(&wp, &w), PSERV_OK, "%s", pserv_last_error());
    pserv_tensor_params_t tp = PSERV_TENSOR_PARAMS_INIT;
    tp.key = 1;
    tp.count = N;
    tp.init_value = 0.0f;
    tp.optim.lr = LR;
    cr_assert_eq(pserv_worker_register(w, &tp), PSERV_OK, "%s", pserv_worker_last_error(w));

    static float grad[N], out[N];
    for (size_t i = 0; i < N; i++) grad[i] = (float)(i % 7) * 0.125f; /* exact in float32 */
    for (int r = 0; r < ROUNDS; r++) {
        pserv_request_t req;
        cr_assert_eq(pserv_worker_push_pull(w, 1, grad, out, &req), PSERV_OK);
        cr_assert_eq(pserv_worker_wait(w, req, 10000), PSERV_OK, "round %d: %s", r, pserv_worker_last_error(w));
    }
    /* SGD from 0: after ROUNDS rounds each value is -LR * ROUNDS * grad (sums of multiples of 1/16: exact). */
    for (size_t i = 0; i < N; i++)
        cr_assert_float_eq(out[i], -LR * ROUNDS * grad[i], 1e-6f, "element %zu: %g", i, (double)out[i]);

    sleep_ms(100); /* auto's spin window is 50 us: long past */
    double before = cpu_s();
    sleep_ms(1000);
    double idle = cpu_s() - before;

    cr_assert_eq(pserv_worker_destroy(w), PSERV_OK);
    cr_assert_eq(pserv_local_destroy(local, 10000), PSERV_OK, "%s", pserv_last_error());
    return idle;
}

Test(progress, sleep_mode_idles_at_no_cpu, .timeout = 60)
{
    setenv("PSERV_PROGRESS", "sleep", 1);
    double idle = run_job_then_idle();
    /* Heartbeats (every 500 ms) and nothing else: well under 5% of a core. */
    cr_assert_lt(idle, 0.05, "an idle job in sleep mode used %.3f s of CPU in 1 s", idle);
}

Test(progress, auto_mode_sleeps_once_idle, .timeout = 60)
{
    unsetenv("PSERV_PROGRESS");
    double idle = run_job_then_idle();
    cr_assert_lt(idle, 0.05, "an idle job in auto mode used %.3f s of CPU in 1 s", idle);
}

Test(progress, spin_mode_spins, .timeout = 60)
{
    setenv("PSERV_PROGRESS", "spin", 1);
    double idle = run_job_then_idle();
    /* Three progress threads and the shard's apply thread spin, yielding on every turn: on an idle
     * machine they take both cores; on a loaded one (or under TSan, which ran them at 0.43 s here
     * with eight other busy threads) less, but still far above the idle modes' 0.05 s. */
    cr_assert_gt(idle, 0.15, "an idle job in spin mode used only %.3f s of CPU in 1 s", idle);
}

Test(progress, bad_mode_is_refused_by_name, .timeout = 30)
{
    setenv("PSERV_PROGRESS", "fast", 1);
    pserv_coordinator_params_t cp = PSERV_COORDINATOR_PARAMS_INIT;
    pserv_coordinator_h c;
    cp.num_servers = 1;
    cp.num_workers = 1;
    cr_assert_eq(pserv_coordinator_create(&cp, &c), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_last_error(), "PSERV_PROGRESS='fast'") != NULL, "%s", pserv_last_error());

    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = "127.0.0.1:1";
    wp.timeout_ms = 1000;
    cr_assert_eq(pserv_worker_create(&wp, &w), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_last_error(), "PSERV_PROGRESS='fast' is not one of auto, spin, sleep") != NULL, "%s",
              pserv_last_error());
}

Test(progress, bad_spin_time_is_refused_by_name, .timeout = 30)
{
    setenv("PSERV_SPIN_US", "50us", 1);
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    pserv_worker_h w;
    wp.coordinator = "127.0.0.1:1";
    wp.timeout_ms = 1000;
    cr_assert_eq(pserv_worker_create(&wp, &w), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(pserv_last_error(), "PSERV_SPIN_US='50us'") != NULL, "%s", pserv_last_error());
}
