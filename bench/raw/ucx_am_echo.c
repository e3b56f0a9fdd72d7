/*
 * pserv_raw_ucx_am_echo: the raw UCX baseline of pserv's benchmarks. UCP active messages only,
 * no pserv code: what UCX itself does on this machine, to measure pserv's data path against.
 *
 *   pserv_raw_ucx_am_echo server [--listen HOST:PORT] [--cpu N] [--max-bytes B] [--timeout-s S]
 *   pserv_raw_ucx_am_echo client --connect HOST:PORT [--cpu N] [--sizes LIST] [--max-bytes B]
 *                         [--reps N] [--target-s S] [--window W] [--no-bw] [--rndv-min B]
 *                         [--timeout-s S] [--json FILE] [--tsv FILE]
 *   pserv_raw_ucx_am_echo version
 *
 * The server answers each message with one of the same length (latency) or an 8-byte
 * acknowledgement (bandwidth); it serves one client and ends when the client says so, when the client vanishes
 * or after --timeout-s without a message. It prints "listening on port N" once it listens.
 * The client, for each size: a ping-pong (one message in flight, busy polling) timed per round
 * trip, then a stream with --window messages in flight, each acknowledged.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_ucx.h"

#define PROG "pserv_raw_ucx_am_echo"
#define MAX_SIZES 64
#define MAX_REPS 1000000
#define MAX_MSGS 10000000ull
#define RAW_ACK_BYTES 8 /* a stream message's acknowledgement */

static const size_t default_sizes[] = {8, 64, 512, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20};

typedef struct {
    int server;
    const char *listen, *connect, *json, *tsv;
    int cpu, reps, window, bw;
    double target_s, timeout_s;
    size_t max_bytes, rndv_min;
    size_t sizes[MAX_SIZES];
    int nsizes;
} opts_t;

typedef struct {
    size_t bytes;
    int reps, window;
    double p50_s, p99_s, mean_s;
    unsigned long long bw_msgs;
    double bw_s;
} row_t;

/* ---- options --------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " server [--listen HOST:PORT] [--cpu N] [--max-bytes B] [--timeout-s S]\n"
               "       " PROG " client --connect HOST:PORT [--cpu N] [--sizes LIST] [--max-bytes B] [--reps N]\n"
               "                             [--target-s S] [--window W] [--no-bw] [--rndv-min B] [--timeout-s S]\n"
               "                             [--json FILE] [--tsv FILE]\n"
               "       " PROG " version\n"
               "  --listen     server address (default 127.0.0.1:0, any free port; the port is printed)\n"
               "  --connect    the server's address\n"
               "  --cpu        pin this process to CPU N (default: not pinned)\n"
               "  --sizes      message sizes in bytes, comma-separated (default 8,64,512,...,64M: powers of 8, then 4)\n"
               "  --max-bytes  largest message; the buffers' size (default 64 MiB; server and client alike)\n"
               "  --reps       timed round trips per size (default: enough for --target-s)\n"
               "  --target-s   seconds each measurement aims at (default 0.5)\n"
               "  --window     bandwidth mode: messages in flight (default 32; at most 64 MiB of them)\n"
               "  --no-bw      ping-pong only\n"
               "  --rndv-min   force rendezvous from this size (default 0: UCX chooses)\n"
               "  --timeout-s  longest wait for anything (default 60)\n"
               "  --json       write the results as JSON\n"
               "  --tsv        write the results as lines: 'lat BYTES REPS P50_S P99_S MEAN_S', 'bw BYTES WINDOW MSGS SECONDS'\n");
}

static int parse_ull(const char *text, unsigned long long max, unsigned long long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (*text < '0' || *text > '9' || errno != 0 || v > max) return -1;
    if (*end == 'K' || *end == 'k') v <<= 10, end++;
    else if (*end == 'M' || *end == 'm') v <<= 20, end++;
    if (*end != '\0' || v > max) return -1;
    *out = v;
    return 0;
}

static int parse_sizes(const char *text, opts_t *o)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", text);
    o->nsizes = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned long long v;
        if (o->nsizes == MAX_SIZES || parse_ull(tok, 1ull << 40, &v) != 0) return -1;
        o->sizes[o->nsizes++] = (size_t)v;
    }
    return o->nsizes > 0 ? 0 : -1;
}

static int split_addr(const char *text, char *host, size_t cap, unsigned *port)
{
    const char *colon = strrchr(text, ':');
    unsigned long long p;
    if (colon == NULL || (size_t)(colon - text) >= cap || parse_ull(colon + 1, 65535, &p) != 0) return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    *port = (unsigned)p;
    return 0;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    *o = (opts_t){.listen = "127.0.0.1:0", .cpu = -1, .window = 32, .bw = 1, .target_s = 0.5, .timeout_s = 60,
                  .max_bytes = 64u << 20};
    if (argc < 2 || (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "client") != 0)) {
        fprintf(stderr, PROG ": the first argument is 'server', 'client' or 'version'\n");
        return -1;
    }
    o->server = strcmp(argv[1], "server") == 0;
    int explicit_sizes = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long n;
        double d;
        char *end;
        if (strcmp(a, "--no-bw") == 0) {
            o->bw = 0;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, PROG ": %s needs a value\n", a);
            return -1;
        }
        i++;
        int bad = 0;
        if (strcmp(a, "--listen") == 0) o->listen = v;
        else if (strcmp(a, "--connect") == 0) o->connect = v;
        else if (strcmp(a, "--json") == 0) o->json = v;
        else if (strcmp(a, "--tsv") == 0) o->tsv = v;
        else if (strcmp(a, "--cpu") == 0) bad = parse_ull(v, CPU_SETSIZE - 1, &n) || ((o->cpu = (int)n), 0);
        else if (strcmp(a, "--reps") == 0) bad = parse_ull(v, MAX_REPS, &n) || n == 0 || ((o->reps = (int)n), 0);
        else if (strcmp(a, "--window") == 0) bad = parse_ull(v, RAW_RING / 4, &n) || n == 0 || ((o->window = (int)n), 0);
        else if (strcmp(a, "--max-bytes") == 0) bad = parse_ull(v, 1ull << 34, &n) || n < 8 || ((o->max_bytes = n), 0);
        else if (strcmp(a, "--rndv-min") == 0) bad = parse_ull(v, 1ull << 34, &n) || ((o->rndv_min = n), 0);
        else if (strcmp(a, "--sizes") == 0) bad = parse_sizes(v, o) || ((explicit_sizes = 1), 0);
        else if (strcmp(a, "--target-s") == 0 || strcmp(a, "--timeout-s") == 0) {
            d = strtod(v, &end);
            bad = *end != '\0' || !(d > 0 && d < 1e6);
            if (!bad) *(strcmp(a, "--target-s") == 0 ? &o->target_s : &o->timeout_s) = d;
        } else {
            fprintf(stderr, PROG ": unknown option '%s'\n", a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, PROG ": bad value '%s' for %s\n", v, a);
            return -1;
        }
    }
    if (!o->server && o->connect == NULL) {
        fprintf(stderr, PROG ": client needs --connect HOST:PORT\n");
        return -1;
    }
    if (!explicit_sizes)
        for (size_t i = 0; i < sizeof(default_sizes) / sizeof(default_sizes[0]); i++)
            if (default_sizes[i] <= o->max_bytes) o->sizes[o->nsizes++] = default_sizes[i];
    for (int i = 0; i < o->nsizes; i++)
        if (o->sizes[i] > o->max_bytes) {
            fprintf(stderr, PROG ": size %zu is over --max-bytes %zu\n", o->sizes[i], o->max_bytes);
            return -1;
        }
    return 0;
}

static int pin(int cpu)
{
    if (cpu < 0) return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        fprintf(stderr, PROG ": cannot pin to CPU %d: %s\n", cpu, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- server ---------------------------------------------------------------------------------- */

static int serve(raw_t *r, const opts_t *o)
{
    char host[256];
    unsigned port;
    uint16_t bound;
    if (split_addr(o->listen, host, sizeof(host), &port) != 0) {
        fprintf(stderr, PROG ": --listen needs HOST:PORT, not '%s'\n", o->listen);
        return -1;
    }
    if (raw_listen(r, host, (uint16_t)port, &bound) != 0) return -1;
    printf("listening on port %u\n", bound);
    fflush(stdout);
    if (raw_accept(r, o->timeout_s) != 0) return -1;
    double last = raw_now();
    int fin = 0;
    for (unsigned spin = 0;; spin++) {
        if (raw_progress(r) != 0) return -1;
        raw_msg_t m;
        while (raw_take(r, &m)) {
            /* A stream's acknowledgement carries 8 bytes: with UCX 1.13 over TCP a header-only
             * answer to a stream of messages came back ~1 ms late, 15x slower (development VM). */
            size_t len = m.flags & RAW_ECHO ? m.len : m.flags & RAW_ACK ? RAW_ACK_BYTES : 0;
            fin |= (m.flags & RAW_FIN) != 0;
            if (raw_send(r, RAW_REPLY, len) != 0) return -1;
            spin = 0;
        }
        if (fin && r->sends_inflight == 0) return 0;
        if (r->ep_status != UCS_OK) {
            fprintf(stderr, PROG ": the client vanished: %s\n", ucs_status_string(r->ep_status));
            return -1;
        }
        if ((spin & 1023) == 0) {
            double t = raw_now();
            if (spin == 0) last = t;
            else if (t - last > o->timeout_s) {
                fprintf(stderr, PROG ": no message for %.0f s, ending\n", o->timeout_s);
                return -1;
            }
        }
    }
}

/* ---- client ---------------------------------------------------------------------------------- */

static int take_reply(raw_t *r, size_t want_len)
{
    raw_msg_t m = {0, 0, NULL};
    if (!raw_take(r, &m) || !(m.flags & RAW_REPLY) || m.len != want_len) {
        fprintf(stderr, PROG ": a wrong reply (%zu bytes, flags %u; expected %zu bytes)\n", m.len, m.flags, want_len);
        return -1;
    }
    return 0;
}

/* One ping-pong of len bytes each way; its seconds in *secs. */
static int round_trip(raw_t *r, size_t len, double timeout_s, double *secs)
{
    uint64_t want = r->n_arrived + 1;
    double t0 = raw_now();
    if (raw_send(r, RAW_ECHO, len) != 0 || raw_wait(r, want, 0, timeout_s) != 0) return -1;
    *secs = raw_now() - t0;
    return take_reply(r, len);
}

/* n messages of len bytes with up to window in flight, each acknowledged; seconds in *secs. */
static int stream(raw_t *r, size_t len, unsigned long long n, int window, double timeout_s, double *secs)
{
    uint64_t base = r->n_arrived;
    unsigned long long sent = 0, acked = 0;
    double t0 = raw_now(), last = t0;
    for (unsigned spin = 1; acked < n; spin++) {
        while (sent < n && sent - acked < (unsigned long long)window) {
            if (raw_send(r, RAW_ACK, len) != 0) return -1;
            sent++;
        }
        if (raw_progress(r) != 0) return -1;
        while (acked < r->n_arrived - base) {
            if (take_reply(r, RAW_ACK_BYTES) != 0) return -1;
            acked++;
            spin = 0;
        }
        if (r->ep_status != UCS_OK) {
            fprintf(stderr, PROG ": the server vanished: %s\n", ucs_status_string(r->ep_status));
            return -1;
        }
        if ((spin & 1023) == 0) {
            double t = raw_now();
            if (spin == 0) last = t;
            else if (t - last > timeout_s) {
                fprintf(stderr, PROG ": stream of %zu-byte messages stalled for %.0f s\n", len, timeout_s);
                return -1;
            }
        }
    }
    *secs = raw_now() - t0;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static unsigned long long clamp_ull(double v, unsigned long long lo, unsigned long long hi)
{
    return v < (double)lo ? lo : v > (double)hi ? hi : (unsigned long long)v;
}

/* Messages in flight for a stream of len-byte messages: --window, but at most 64 MiB in flight
 * (and at least 2): enough to keep the link busy without queueing hundreds of MiB of rendezvous. */
static int stream_window(const opts_t *o, size_t len)
{
    size_t cap = ((size_t)64 << 20) / (len ? len : 1);
    return cap < 2 ? 2 : cap < (size_t)o->window ? (int)cap : o->window;
}

static int measure(raw_t *r, const opts_t *o, size_t len, double *t, row_t *row)
{
    /* Warm-up: at least 10 round trips and a tenth of the target; it also sizes the run. */
    double w0 = raw_now(), s;
    int warm = 0;
    while (warm < 10 || (raw_now() - w0 < o->target_s / 10 && warm < MAX_REPS)) {
        if (round_trip(r, len, o->timeout_s, &s) != 0) return -1;
        warm++;
    }
    double per = (raw_now() - w0) / warm;
    row->bytes = len;
    row->reps = o->reps ? o->reps : (int)clamp_ull(o->target_s / per, 10, MAX_REPS);
    double sum = 0;
    for (int i = 0; i < row->reps; i++) {
        if (round_trip(r, len, o->timeout_s, &t[i]) != 0) return -1;
        sum += t[i];
    }
    qsort(t, (size_t)row->reps, sizeof(double), cmp_double);
    size_t n = (size_t)row->reps, k99 = (size_t)(0.99 * (double)n + 0.999999); /* nearest rank */
    row->p50_s = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    row->p99_s = t[(k99 ? k99 : 1) - 1];
    row->mean_s = sum / (double)n;
    if (!o->bw) return 0;
    row->window = stream_window(o, len);
    unsigned long long wn = (unsigned long long)(2 * row->window);
    if (stream(r, len, wn, row->window, o->timeout_s, &s) != 0) return -1;
    row->bw_msgs = clamp_ull(o->target_s / (s / (double)wn), wn, MAX_MSGS);
    return stream(r, len, row->bw_msgs, row->window, o->timeout_s, &row->bw_s);
}

static void print_row(const row_t *w, int bw)
{
    printf("%10zu %8d %9.2f %9.2f %9.2f %9.3f", w->bytes, w->reps, w->p50_s * 1e6, w->p99_s * 1e6, w->mean_s * 1e6,
           2.0 * (double)w->bytes / w->p50_s / 1e9);
    if (bw) printf(" %6d %9llu %9.3f", w->window, w->bw_msgs, (double)w->bytes * (double)w->bw_msgs / w->bw_s / 1e9);
    printf("\n");
    fflush(stdout);
}

static int write_results(const opts_t *o, const row_t *rows, int n)
{
    if (o->json) {
        FILE *f = fopen(o->json, "w");
        if (f == NULL) {
            fprintf(stderr, PROG ": cannot write %s: %s\n", o->json, strerror(errno));
            return -1;
        }
        fprintf(f, "{\"benchmark\": \"raw_ucx_am_echo\", \"ucx_version\": \"%s\", \"cpu\": %d, \"window\": %d, "
                   "\"target_s\": %g, \"rndv_min\": %zu, \"rows\": [",
                ucp_get_version_string(), o->cpu, o->window, o->target_s, o->rndv_min);
        for (int i = 0; i < n; i++) {
            const row_t *w = &rows[i];
            fprintf(f, "%s{\"bytes\": %zu, \"reps\": %d, \"p50_s\": %.9f, \"p99_s\": %.9f, \"mean_s\": %.9f", i ? ", " : "",
                    w->bytes, w->reps, w->p50_s, w->p99_s, w->mean_s);
            if (o->bw) fprintf(f, ", \"bw_window\": %d, \"bw_msgs\": %llu, \"bw_s\": %.9f", w->window, w->bw_msgs, w->bw_s);
            fprintf(f, "}");
        }
        fprintf(f, "]}\n");
        if (ferror(f) | fclose(f)) {
            fprintf(stderr, PROG ": cannot write %s\n", o->json);
            return -1;
        }
    }
    if (o->tsv) {
        FILE *f = fopen(o->tsv, "w");
        if (f == NULL) {
            fprintf(stderr, PROG ": cannot write %s: %s\n", o->tsv, strerror(errno));
            return -1;
        }
        fprintf(f, "# ucx %s\n", ucp_get_version_string());
        for (int i = 0; i < n; i++) {
            fprintf(f, "lat %zu %d %.9f %.9f %.9f\n", rows[i].bytes, rows[i].reps, rows[i].p50_s, rows[i].p99_s,
                    rows[i].mean_s);
            if (o->bw) fprintf(f, "bw %zu %d %llu %.9f\n", rows[i].bytes, rows[i].window, rows[i].bw_msgs, rows[i].bw_s);
        }
        if (ferror(f) | fclose(f)) {
            fprintf(stderr, PROG ": cannot write %s\n", o->tsv);
            return -1;
        }
    }
    return 0;
}

static int run_client(raw_t *r, const opts_t *o)
{
    char host[256];
    unsigned port;
    if (split_addr(o->connect, host, sizeof(host), &port) != 0) {
        fprintf(stderr, PROG ": --connect needs HOST:PORT, not '%s'\n", o->connect);
        return -1;
    }
    if (raw_connect(r, host, (uint16_t)port) != 0) return -1;
    row_t rows[MAX_SIZES];
    double *t = malloc(MAX_REPS * sizeof(double));
    if (t == NULL) return -1;
    printf(PROG ": UCX %s, CPU %d, ping-pong then a stream of %d in flight (at most 64 MiB), ~%.2f s each\n"
           "round trip: p50, p99, mean in us; GB/s = 2 x bytes / p50 round trip (both ways); "
           "bw_GB/s = bytes x msgs / time (one way)\n",
           ucp_get_version_string(), o->cpu, o->window, o->target_s);
    printf("%10s %8s %9s %9s %9s %9s", "bytes", "reps", "p50_us", "p99_us", "mean_us", "GB/s");
    if (o->bw) printf(" %6s %9s %9s", "window", "bw_msgs", "bw_GB/s");
    printf("\n");
    int rc = 0;
    for (int i = 0; i < o->nsizes && rc == 0; i++) {
        rc = measure(r, o, o->sizes[i], t, &rows[i]);
        if (rc == 0) print_row(&rows[i], o->bw);
    }
    free(t);
    /* Tell the server to end; it answers once everything before has gone out. */
    if (rc == 0) rc = raw_send(r, RAW_FIN, 0) || raw_wait(r, r->n_arrived + 1, 1, o->timeout_s) || take_reply(r, 0);
    if (rc == 0) rc = write_results(o, rows, o->nsizes);
    return rc ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "version") == 0) {
        printf("%s\n", ucp_get_version_string());
        return 0;
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    static raw_t r; /* the rings make it large */
    opts_t o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    if (pin(o.cpu) != 0) return 1;
    if (raw_init(&r, PROG, o.max_bytes, o.rndv_min) != 0) return 1;
    int rc = o.server ? serve(&r, &o) : run_client(&r, &o);
    raw_fini(&r, 5.0);
    return rc ? 1 : 0;
}
