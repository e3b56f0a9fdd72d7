/*
 * Forked processes under ThreadSanitizer. gcc 12's TSan keeps the parent's threads in its
 * registry after fork(); a child that then starts a thread which reuses one of their stacks
 * (glibc hands the child their stacks) dies with "dup thread with used id", and a child of a
 * multi-threaded process runs with its main thread ignored anyway. Criterion's test process
 * always has a thread (its nanomsg poller), so a test whose forked processes start threads,
 * as every pserv role does, cannot run there: it skips, saying why. Tests that keep a whole job
 * inside one process (threads) run in full.
 */
#ifndef PS_TEST_TSAN_FORK_H
#define PS_TEST_TSAN_FORK_H

#include <criterion/criterion.h>

#if defined(__SANITIZE_THREAD__)
#define TSAN_SKIP_FORKED_THREADS()                                                                 \
    cr_skip_test("under TSan: forks processes that start threads (see tests/tsan/fork.h)")
#else
#define TSAN_SKIP_FORKED_THREADS() ((void)0)
#endif

#endif
