/*
 * The UCX baselines of pserv_bench_pushpull, each run as two processes of its own pinned to the
 * worker's and the server's CPU: pserv_raw_ucx_am_echo (bench/raw, UCX alone: a ping-pong per
 * size and a windowed stream) and, when installed, Debian's ucx_perftest (ucp_am_lat, ucp_am_bw).
 * Nothing here includes UCX headers: the programs are run and their output is read.
 */
#ifndef PS_BENCH_UCX_REF_H
#define PS_BENCH_UCX_REF_H

#include <sched.h>
#include <stddef.h>

typedef struct {
    int client_cpu, server_cpu; /* -1: not pinned */
    double target_s;            /* seconds per measurement */
    int reps;                   /* ping-pong round trips per size; 0: enough for target_s */
    int window;                 /* the raw stream's messages in flight */
    size_t rndv_min;            /* the raw echo forces rendezvous from this size; 0: UCX chooses */
    double timeout_s;           /* longest any wait may take */
} ucx_ref_cfg_t;

typedef struct {
    size_t bytes;
    int reps;
    double p50_s, p99_s, mean_s; /* ping-pong round trip */
    int bw_window;               /* stream: messages in flight */
    unsigned long long bw_msgs;  /* stream: messages and their seconds, one way */
    double bw_s;
} raw_row_t;

typedef struct {
    int lat_ok, bw_ok;
    double lat_s, lat_p50_s; /* one way, as ucx_perftest reports it: overall average and its p50 */
    double bw_Bps;           /* bytes per second, one way (message rate x size) */
} perftest_row_t;

/*
 * Runs pserv_raw_ucx_am_echo (path exe) over sizes[0..n): rows[i] for sizes[i]. ucx_version
 * gets what the program reports. 0, or -1 with a message (the rows are then not valid).
 */
int ucx_raw_run(const char *exe, const ucx_ref_cfg_t *cfg, const size_t *sizes, size_t n, raw_row_t *rows,
                char *ucx_version, size_t cap);

/*
 * Runs ucx_perftest (path or name exe) ucp_am_lat and ucp_am_bw for each size over 127.0.0.1,
 * server and client pinned as cfg says, each run sized from the raw echo's times in est to last
 * about cfg->target_s. tls: UCX_TLS for both sides, or NULL for ours. A run that fails leaves its
 * row's *_ok at 0 (with a message); returns how many runs succeeded.
 */
int ucx_perftest_run(const char *exe, const ucx_ref_cfg_t *cfg, const char *tls, const size_t *sizes, size_t n,
                     const raw_row_t *est, perftest_row_t *rows);

#endif
