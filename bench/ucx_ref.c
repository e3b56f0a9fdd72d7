#include "ucx_ref.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "procs.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- pserv_raw_ucx_am_echo -------------------------------------------------------------------- */

static int read_tsv(const char *path, const size_t *sizes, size_t n, raw_row_t *rows, char *ver, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "cannot read the raw echo's results %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[512], kind[8];
    size_t got_lat = 0, bytes;
    memset(rows, 0, n * sizeof(*rows));
    while (fgets(line, sizeof(line), f)) {
        char v[64];
        if (sscanf(line, "# ucx %63s", v) == 1) snprintf(ver, cap, "%s", v);
        if (sscanf(line, "%7s %zu", kind, &bytes) != 2) continue;
        raw_row_t *r = NULL;
        for (size_t i = 0; i < n && r == NULL; i++)
            if (sizes[i] == bytes) r = &rows[i];
        if (r == NULL) continue;
        r->bytes = bytes;
        if (strcmp(kind, "lat") == 0 &&
            sscanf(line, "lat %*u %d %lf %lf %lf", &r->reps, &r->p50_s, &r->p99_s, &r->mean_s) == 4)
            got_lat++;
        else if (strcmp(kind, "bw") == 0)
            sscanf(line, "bw %*u %d %llu %lf", &r->bw_window, &r->bw_msgs, &r->bw_s);
    }
    fclose(f);
    if (got_lat != n) {
        fprintf(stderr, "the raw echo's results %s hold %zu of %zu sizes\n", path, got_lat, n);
        return -1;
    }
    return 0;
}

int ucx_raw_run(const char *exe, const ucx_ref_cfg_t *cfg, const size_t *sizes, size_t n, raw_row_t *rows,
                char *ucx_version, size_t cap)
{
    char max_bytes[32], rndv[32], timeout[32], cpu_s[16], cpu_c[16], target[32], window[16], reps[16], line[256];
    char list[1024] = "", addr[64], tsv[] = "/tmp/pserv_bench_raw_XXXXXX";
    size_t max = 0, len = 0;
    for (size_t i = 0; i < n; i++) {
        max = sizes[i] > max ? sizes[i] : max;
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%zu", i ? "," : "", sizes[i]);
    }
    snprintf(max_bytes, sizeof(max_bytes), "%zu", max);
    snprintf(rndv, sizeof(rndv), "%zu", cfg->rndv_min);
    snprintf(timeout, sizeof(timeout), "%g", cfg->timeout_s);
    snprintf(cpu_s, sizeof(cpu_s), "%d", cfg->server_cpu);
    snprintf(cpu_c, sizeof(cpu_c), "%d", cfg->client_cpu);
    snprintf(target, sizeof(target), "%g", cfg->target_s);
    snprintf(window, sizeof(window), "%d", cfg->window);
    snprintf(reps, sizeof(reps), "%d", cfg->reps);

    int fd = mkstemp(tsv);
    if (fd < 0) {
        fprintf(stderr, "cannot make a temporary file: %s\n", strerror(errno));
        return -1;
    }
    close(fd);
    static proc_t server, client;
    int rc = -1;
    char *sargv[12] = {(char *)exe, "server", "--max-bytes", max_bytes, "--timeout-s", timeout, "--rndv-min", rndv};
    int k = 8;
    if (cfg->server_cpu >= 0) sargv[k++] = "--cpu", sargv[k++] = cpu_s;
    if (proc_start(&server, "raw UCX echo server", sargv, NULL, 1, NULL) != 0) goto out;
    unsigned port = 0;
    if (proc_read_line(&server, line, sizeof(line), cfg->timeout_s) != 0) goto out;
    if (sscanf(line, "listening on port %u", &port) != 1) {
        fprintf(stderr, "raw UCX echo server: unexpected '%s'\n", line);
        goto out;
    }
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    char *cargv[24] = {(char *)exe, "client", "--connect", addr, "--sizes", list, "--max-bytes", max_bytes,
                       "--target-s", target, "--window", window, "--timeout-s", timeout, "--tsv", tsv,
                       "--rndv-min", rndv};
    k = 18;
    if (cfg->client_cpu >= 0) cargv[k++] = "--cpu", cargv[k++] = cpu_c;
    if (cfg->reps > 0) cargv[k++] = "--reps", cargv[k++] = reps;
    if (proc_start(&client, "raw UCX echo client", cargv, NULL, 0, NULL) != 0) goto out;
    /* Each size: a warm-up and a run of both kinds, about 2.2 x target; generous on a busy machine. */
    double budget = (double)n * (6 * cfg->target_s + 5) + 2 * cfg->timeout_s;
    if (proc_wait(&client, budget) != 0 || proc_wait(&server, cfg->timeout_s) != 0) {
        fprintf(stderr, "the raw UCX echo failed\n");
        goto out;
    }
    rc = read_tsv(tsv, sizes, n, rows, ucx_version, cap);
out:
    proc_stop(&client, 1.0);
    proc_stop(&server, 1.0);
    unlink(tsv);
    return rc;
}

/* ---- ucx_perftest ----------------------------------------------------------------------------- */

/* A TCP port nobody listens on now (the kernel's pick); 0 if none. */
static unsigned free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    unsigned port = 0;
    if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0 && getsockname(s, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(s);
    return port;
}

/* 1 if some socket listens on TCP port (from /proc/net/tcp, without connecting to it). */
static int port_listening(unsigned port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (f == NULL) return 0;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f)) {
        unsigned p, st;
        if (sscanf(line, " %*d: %*x:%x %*x:%*x %x", &p, &st) == 2) found = p == port && st == 0x0A;
    }
    fclose(f);
    return found;
}

/* One ucx_perftest run (test, size, iterations); fills the CSV's overall values. 0 or -1. */
static int perftest_once(const char *exe, const ucx_ref_cfg_t *cfg, const char *tls, const char *test, size_t size,
                         unsigned long long iters, double *p50_us, double *overall_us, double *msg_rate)
{
    static proc_t server, client;
    char port_s[16], size_s[32], iters_s[32], warm_s[32], line[512];
    const char *env[] = {NULL, NULL};
    char tls_env[128];
    if (tls) {
        snprintf(tls_env, sizeof(tls_env), "UCX_TLS=%s", tls);
        env[0] = tls_env;
    }
    unsigned port = free_port();
    if (port == 0) {
        fprintf(stderr, "ucx_perftest: no free TCP port\n");
        return -1;
    }
    snprintf(port_s, sizeof(port_s), "%u", port);
    snprintf(size_s, sizeof(size_s), "%zu", size);
    snprintf(iters_s, sizeof(iters_s), "%llu", iters);
    snprintf(warm_s, sizeof(warm_s), "%llu", iters / 10 > 2 ? iters / 10 : 2);
    char scpu[16], ccpu[16];
    snprintf(scpu, sizeof(scpu), "%d", cfg->server_cpu);
    snprintf(ccpu, sizeof(ccpu), "%d", cfg->client_cpu);
    /* Pinned by ucx_perftest itself (-c CPU), when we pin at all. */
    char *sargv[8] = {(char *)exe, "-t", (char *)test, "-p", port_s};
    char *cargv[20] = {(char *)exe, "127.0.0.1", "-t", (char *)test, "-p", port_s, "-s", size_s,
                       "-n", iters_s, "-w", warm_s, "-f", "-v"};
    if (cfg->server_cpu >= 0) sargv[5] = "-c", sargv[6] = scpu;
    if (cfg->client_cpu >= 0) cargv[14] = "-c", cargv[15] = ccpu;
    int rc = -1;
    if (proc_start(&server, "ucx_perftest server", sargv, NULL, 1, env) != 0) return -1;
    double end = now_s() + cfg->timeout_s;
    while (!port_listening(port)) {
        struct timespec tick = {0, 10 * 1000000L};
        nanosleep(&tick, NULL);
        if (now_s() > end || !proc_running(&server)) {
            fprintf(stderr, "ucx_perftest server did not listen on port %u\n", port);
            goto out;
        }
    }
    if (proc_start(&client, "ucx_perftest client", cargv, NULL, 1, env) != 0) goto out;
    double budget = 10 * cfg->target_s + cfg->timeout_s;
    for (int header = 0;;) {
        if (proc_read_line(&client, line, sizeof(line), budget) != 0) goto out;
        if (strncmp(line, "iterations,", 11) == 0) {
            header = 1;
        } else if (header) {
            unsigned long long it;
            double avg, avg_bw, bw, avg_mr;
            if (sscanf(line, "%llu,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &it, p50_us, &avg, overall_us, &avg_bw, &bw, &avg_mr,
                       msg_rate) != 8) {
                fprintf(stderr, "ucx_perftest: cannot read '%s'\n", line);
                goto out;
            }
            break;
        }
    }
    if (proc_wait(&client, cfg->timeout_s) == 0 && proc_wait(&server, cfg->timeout_s) == 0) rc = 0;
out:
    if (rc != 0) fprintf(stderr, "ucx_perftest %s of %zu bytes failed\n", test, size);
    proc_stop(&client, 1.0);
    proc_stop(&server, 1.0);
    return rc;
}

static unsigned long long clamp_iters(double v, unsigned long long lo, unsigned long long hi)
{
    return v < (double)lo ? lo : v > (double)hi ? hi : (unsigned long long)v;
}

int ucx_perftest_run(const char *exe, const ucx_ref_cfg_t *cfg, const char *tls, const size_t *sizes, size_t n,
                     const raw_row_t *est, perftest_row_t *rows)
{
    int ok = 0;
    for (size_t i = 0; i < n; i++) {
        perftest_row_t *r = &rows[i];
        double p50_us, overall_us, rate;
        memset(r, 0, sizeof(*r));
        /* ucp_am_lat: an iteration is one round trip; ucp_am_bw: one message. */
        unsigned long long lat_n = clamp_iters(cfg->target_s / est[i].p50_s, 10, 1000000);
        double est_rate = est[i].bw_s > 0 ? (double)est[i].bw_msgs / est[i].bw_s : 1 / est[i].p50_s;
        unsigned long long bw_n = clamp_iters(cfg->target_s * est_rate, 20, 10000000);
        if (perftest_once(exe, cfg, tls, "ucp_am_lat", sizes[i], lat_n, &p50_us, &overall_us, &rate) == 0) {
            r->lat_ok = 1, ok++;
            r->lat_s = overall_us * 1e-6;
            r->lat_p50_s = p50_us * 1e-6;
        }
        if (perftest_once(exe, cfg, tls, "ucp_am_bw", sizes[i], bw_n, &p50_us, &overall_us, &rate) == 0) {
            r->bw_ok = 1, ok++;
            r->bw_Bps = rate * (double)sizes[i];
        }
    }
    return ok;
}
