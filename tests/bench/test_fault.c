/*
 * The fault-tolerance benchmarks run and report what they measured: pserv_bench_replication
 * (replicated shards against none, a failover) and pserv_bench_membership (a server joining and
 * one drained while training runs, against a chunk's transfer over raw UCX). Short runs: these
 * check that the results are there and hang together, not how fast anything is; each benchmark
 * also checks its job's parameters exactly and fails otherwise.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if !defined(PSERV_BENCH_REPLICATION) || !defined(PSERV_BENCH_MEMBERSHIP)
#error "the benchmarks' paths are set by tests/CMakeLists.txt"
#endif

/* Runs `prog args` with its output and JSON in temporary files; returns its exit code, the JSON in json. */
static int run_bench(const char *prog, const char *args, char *json, size_t cap, char *out, size_t out_cap)
{
    char jpath[64], opath[64], cmd[1024];
    snprintf(jpath, sizeof(jpath), "/tmp/pserv_bench_fault_%d.json", (int)getpid());
    snprintf(opath, sizeof(opath), "/tmp/pserv_bench_fault_%d.out", (int)getpid());
    snprintf(cmd, sizeof(cmd), "%s %s --json %s > %s 2>&1", prog, args, jpath, opath);
    int status = system(cmd);
    json[0] = out[0] = '\0';
    FILE *f = fopen(jpath, "r");
    if (f) {
        json[fread(json, 1, cap - 1, f)] = '\0';
        fclose(f);
    }
    if ((f = fopen(opath, "r")) != NULL) {
        out[fread(out, 1, out_cap - 1, f)] = '\0';
        fclose(f);
    }
    unlink(jpath);
    unlink(opath);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The number after `"key": {"median": ` in the JSON, or -2 when it is not there. */
static double median_of(const char *json, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\"%s\": {\"median\": ", key);
    const char *p = strstr(json, pat);
    return p ? atof(p + strlen(pat)) : -2;
}

static char json[1 << 16], out[1 << 16];

Test(fault_bench, membership_measures_the_pause_of_a_join_and_a_drain, .timeout = 300)
{
    int rc = run_bench(PSERV_BENCH_MEMBERSHIP, "--quick --reps 1 --settle-s 0.3", json, sizeof(json), out, sizeof(out));
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "pause of the drain"), "%s", out);
    double before = median_of(json, "round_before_s"), join = median_of(json, "join_longest_round_s");
    double drain = median_of(json, "drain_longest_round_s"), took = median_of(json, "drain_s");
    cr_assert_gt(before, 0, "%s", json);
    cr_assert_geq(join, before, "the longest round is shorter than the median: %s", json);
    cr_assert_geq(drain, before, "%s", json);
    cr_assert_gt(took, 0, "%s", json);
    cr_assert(strstr(json, "\"raw_chunk_transfer_tcp_s\": "), "%s", json);
}

Test(fault_bench, replication_measures_its_cost_and_a_failover, .timeout = 300)
{
    int rc = run_bench(PSERV_BENCH_REPLICATION, "--quick --reps 1 --failover-reps 1", json, sizeof(json), out,
                       sizeof(out));
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "kill -> first round completed"), "%s", out);
    cr_assert_gt(median_of(json, "kill_to_first_round_s"), 0, "%s", json);
    cr_assert_gt(median_of(json, "round_before_s"), 0, "%s", json);
    cr_assert(strstr(json, "\"ratio\": "), "%s", json);
}

Test(fault_bench, bad_options_exit_2, .timeout = 30)
{
    cr_assert_eq(run_bench(PSERV_BENCH_MEMBERSHIP, "--reps 0", json, sizeof(json), out, sizeof(out)), 2, "%s", out);
    cr_assert_eq(run_bench(PSERV_BENCH_REPLICATION, "--servers 1", json, sizeof(json), out, sizeof(out)), 2, "%s", out);
}
