/*
 * Checkpoints end to end with the pserv program: a sync job killed with SIGKILL at a random
 * moment and resumed (onto 1, 2 or 3 servers) ends with parameters bitwise equal to those of an
 * uninterrupted run with the same seed, with checkpoints every N rounds and every so long; a damaged checkpoint (a data section, a header byte), one
 * of another model and one of another mode are refused, naming the file or the difference.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_run.h"
#include "pserv/pserv.h"

/* 2 workers x 50 steps of 60 samples per epoch, 4 epochs: 200 sync rounds, a checkpoint every 7.
 * target 1.0 never stops it early. 2 workers: the sum of two pushes is the same in either order. */
#define JOB "train --workers 2 --epochs 4 --limit 6000 --batch 60 --hidden 64 --target-accuracy 1 --device cpu " \
            "--checkpoint-every 7"
#define ROUNDS 200

static char base[64];
static double train_s; /* the uninterrupted run's training time, as its summary says */

static void setup(void)
{
    snprintf(base, sizeof(base), "/tmp/pserv_ckpt_cli_XXXXXX");
    cr_assert_not_null(mkdtemp(base));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", base);
}

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", base, name);
}

static void train(run_t *r, unsigned servers, const char *dir, const char *extra)
{
    char args[1024];
    snprintf(args, sizeof(args), JOB " --servers %u --checkpoint-dir %s %s", servers, dir, extra);
    run_cmd(r, 120, NULL, PSERV_CLI, args);
}

/* `pserv checkpoint --dir DIR --export FILE`: the newest complete round's parameters. */
static void export_params(const char *dir, const char *file)
{
    char args[512];
    run_t r;
    snprintf(args, sizeof(args), "checkpoint --dir %s --export %s", dir, file);
    run_cmd(&r, 60, NULL, PSERV_CLI, args);
    cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
    char want[64];
    snprintf(want, sizeof(want), "round %d:", ROUNDS);
    cr_assert(strstr(r.out, want), "the newest checkpoint is not the last round:\n%s", r.out);
}

static int same_file(const char *a, const char *b)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cmp -s %s %s", a, b);
    return system(cmd) == 0;
}

/* The uninterrupted run's parameters, once per test. */
static void reference(char *params, size_t cap)
{
    char dir[256];
    run_t r;
    path_of(dir, sizeof(dir), "ref");
    path_of(params, cap, "ref.bin");
    train(&r, 2, dir, "");
    cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
    export_params(dir, params);
    const char *summary = strstr(r.out, " s in all, ");
    cr_assert(summary && sscanf(summary, " s in all, %lf s training", &train_s) == 1, "no training time:\n%s", r.out);
    if (train_s < 0.1) train_s = 0.1; /* printed to a tenth */
}

/* Newest complete round in dir (0: none yet), through the public API. */
static uint64_t newest_round(const char *dir)
{
    pserv_checkpoint_h ck;
    if (pserv_checkpoint_open(dir, 0, &ck) < 0) return 0;
    pserv_checkpoint_info_t info = PSERV_CHECKPOINT_INFO_INIT;
    pserv_checkpoint_info(ck, &info);
    pserv_checkpoint_close(ck);
    return info.round;
}

/* Starts the job with checkpoints every `every` (rounds, or a time like 40ms) and heartbeats every
 * `heartbeat_ms`, kills `pserv train` (its children die with it) with SIGKILL after its first
 * checkpoint is complete, at a random moment within a tenth of the training time the uninterrupted
 * run took (by time, the first checkpoint may come at half of it: the rest is short); returns the newest complete round left, or 0 when the job ended before the kill. */
static uint64_t train_and_kill(unsigned servers, const char *dir, const char *every, unsigned heartbeat_ms)
{
    char s[16], hb[16], log[256];
    snprintf(s, sizeof(s), "%u", servers);
    snprintf(hb, sizeof(hb), "%u", heartbeat_ms);
    path_of(log, sizeof(log), "killed.log");
    char *argv[] = {"pserv", "train", "--workers", "2", "--epochs", "4", "--limit", "6000", "--batch", "60",
                    "--hidden", "64", "--target-accuracy", "1", "--device", "cpu", "--checkpoint-every", (char *)every,
                    "--heartbeat-ms", hb, /* servers report their rounds to the coordinator with it */
                    "--servers", s, "--checkpoint-dir", (char *)dir, NULL};
    pid_t pid = spawn_pserv(log, argv, NULL);
    cr_assert_gt(pid, 0);
    int status, ended = 0;
    for (double until = now_s() + 60; newest_round(dir) == 0 && now_s() < until && !ended; sleep_s(0.002))
        ended = waitpid(pid, &status, WNOHANG) == pid;
    double delay = 0.1 * train_s * rand() / RAND_MAX;
    sleep_s(delay);
    if (!ended) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    uint64_t round = newest_round(dir);
    fprintf(stderr, "killed %.3f s after the first checkpoint: newest complete round %llu of %d%s\n", delay,
            (unsigned long long)round, ROUNDS, ended ? " (the job had ended)" : "");
    return ended || round >= ROUNDS ? 0 : round; /* the final state: no checkpoint taken in training */
}

/* Kills a job at a random moment after its first checkpoint (every `rounds`; by time when 0),
 * resumes it from before[rep] onto after[rep] servers, and compares the parameters with the
 * uninterrupted run's, bit for bit. */
static void kill_and_resume(unsigned rounds, const unsigned *before, const unsigned *after, int reps)
{
    char ref[256], every[16];
    reference(ref, sizeof(ref));
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    /* By time: about 8 checkpoints in the training of this machine, whatever its speed, and the
     * rounds' pace heard four times an interval (the first round is named once a pace is known). */
    unsigned every_ms = (unsigned)(train_s * 1000 / 8), heartbeat_ms = 50;
    if (rounds != 0) {
        snprintf(every, sizeof(every), "%u", rounds);
    } else {
        every_ms = every_ms < 10 ? 10 : every_ms;
        heartbeat_ms = every_ms / 4 < 5 ? 5 : every_ms / 4 < 50 ? every_ms / 4 : 50;
        snprintf(every, sizeof(every), "%ums", every_ms);
    }
    for (int rep = 0; rep < reps; rep++) {
        char dir[256], params[256], extra[512], name[48];
        snprintf(name, sizeof(name), "run%s%d", every, rep);
        path_of(dir, sizeof(dir), name);
        uint64_t round = 0;
        for (int attempt = 0; attempt < 3 && round == 0; attempt++)
            round = train_and_kill(before[rep], dir, every, heartbeat_ms);
        cr_assert_gt(round, 0, "the job never had a checkpoint before it ended or was killed");
        cr_assert_lt(round, ROUNDS);
        run_t r;
        snprintf(extra, sizeof(extra), "--resume %s", dir);
        double t0 = now_s();
        train(&r, after[rep], dir, extra);
        double took = now_s() - t0;
        cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
        char said[64];
        snprintf(said, sizeof(said), "resumed at round %llu:", (unsigned long long)round);
        cr_assert(strstr(r.out, said), "expected '%s':\n%s", said, r.out);
        cr_assert_lt(took, 60, "resuming took %.1f s", took);
        snprintf(name, sizeof(name), "run%s%d.bin", every, rep);
        path_of(params, sizeof(params), name);
        export_params(dir, params);
        cr_assert(same_file(ref, params), "%u -> %u servers from round %llu: parameters differ from the "
                  "uninterrupted run's", before[rep], after[rep], (unsigned long long)round);
        fprintf(stderr, "every %s, %u -> %u servers from round %llu: bitwise equal, resumed run %.1f s\n", every,
                before[rep], after[rep], (unsigned long long)round, took);
    }
}

Test(checkpoint_cli, killed_job_resumes_to_bitwise_equal_parameters_on_any_server_count, .init = setup,
     .fini = teardown, .timeout = 600)
{
    const unsigned before[] = {2, 2, 3}, after[] = {2, 3, 1};
    kill_and_resume(7, before, after, 3);
}

/* Checkpoints by time: the coordinator names the rounds, every shard copies at the same one. */
Test(checkpoint_cli, checkpoints_by_time_resume_to_bitwise_equal_parameters, .init = setup, .fini = teardown,
     .timeout = 600)
{
    const unsigned before[] = {2, 3}, after[] = {3, 2};
    kill_and_resume(0, before, after, 2);
}

Test(checkpoint_cli, a_bad_interval_is_refused, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *bad[] = {"5x", "0s", "-3", "1.5"};
    for (unsigned i = 0; i < 4; i++) {
        char args[256];
        run_t r;
        snprintf(args, sizeof(args), "train --checkpoint-dir %s/x --checkpoint-every %s", base, bad[i]);
        run_cmd(&r, 30, NULL, PSERV_CLI, args);
        cr_assert_eq(r.code, 2, "--checkpoint-every %s: %s", bad[i], r.err);
        cr_assert(strstr(r.err, "--checkpoint-every must be rounds (a whole number) or a time like 30s"), "%s", r.err);
    }
}

static void damage(const char *dir, unsigned shard, long at)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "f=$(ls -d %s/round-*/ | tail -1)shard-%u.ckpt; n=$(stat -c %%s $f); o=%ld; [ $o -lt 0 ] && o=$((n + o)); "
             "b=$(od -An -tu1 -j $o -N1 $f | tr -d ' '); printf \"$(printf '\\\\%%03o' $(( (b + 1) %% 256 )))\" | "
             "dd of=$f bs=1 seek=$o conv=notrunc status=none",
             dir, shard, at);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void expect_refused(const char *dir, unsigned servers, const char *extra_flags, const char *want1,
                           const char *want2)
{
    run_t r;
    char extra[512];
    snprintf(extra, sizeof(extra), "--resume %s %s", dir, extra_flags);
    double t0 = now_s();
    train(&r, servers, dir, extra);
    cr_assert_neq(r.code, 0, "a bad checkpoint was accepted:\n%s%s", r.out, r.err);
    cr_assert_lt(now_s() - t0, 60);
    char all[sizeof(r.out) + sizeof(r.err)];
    snprintf(all, sizeof(all), "%s%s", r.out, r.err);
    cr_assert(strstr(all, want1) && strstr(all, want2), "expected '%s' and '%s':\n%s", want1, want2, all);
    cr_assert_null(strstr(all, "summary:"), "%s", all);
}

Test(checkpoint_cli, damaged_or_mismatched_checkpoints_are_refused_by_name, .init = setup, .fini = teardown,
     .timeout = 600)
{
    char dir[256];
    run_t r;
    path_of(dir, sizeof(dir), "ref");
    train(&r, 2, dir, "");
    cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
    char copy[1024];
    snprintf(copy, sizeof(copy), "cp -a %s %s.good", dir, dir);
    cr_assert_eq(system(copy), 0);
    /* The last byte of shard 1's last data section: seen when the shard loads it. */
    damage(dir, 1, -1);
    expect_refused(dir, 2, "", "shard-1.ckpt", "CRC32C");
    /* A byte of shard 0's header (the round): seen when the job starts. */
    snprintf(copy, sizeof(copy), "rm -rf %s && cp -a %s.good %s", dir, dir, dir);
    cr_assert_eq(system(copy), 0);
    damage(dir, 0, 16);
    expect_refused(dir, 3, "", "shard-0.ckpt", "header CRC32C mismatch");
    /* Another model, another mode. */
    snprintf(copy, sizeof(copy), "rm -rf %s && cp -a %s.good %s", dir, dir, dir);
    cr_assert_eq(system(copy), 0);
    expect_refused(dir, 2, "--hidden 32", "this job registers", "elements");
    expect_refused(dir, 2, "--mode async", "sync mode", "async mode");
    /* What was refused is still there, and good. */
    cr_assert_eq(newest_round(dir), ROUNDS);
}
