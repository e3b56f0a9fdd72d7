#include "log.h"

#include "pserv/pserv.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int ps_log_level = -1;
static pthread_once_t ps_log_once = PTHREAD_ONCE_INIT;

static void ps_log_init(void)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    const char *env = getenv("PSERV_LOG_LEVEL");
    int level = PS_LOG_WARN;
    for (int i = 0; env && i < 4; i++)
        if (strcasecmp(env, names[i]) == 0) level = i;
    if (ps_log_level < 0) ps_log_level = level;
}

void ps_log_set_level(ps_log_level_t level)
{
    pthread_once(&ps_log_once, ps_log_init);
    __atomic_store_n(&ps_log_level, (int)level, __ATOMIC_RELAXED);
}

int ps_log_enabled(ps_log_level_t level)
{
    pthread_once(&ps_log_once, ps_log_init);
    return (int)level <= __atomic_load_n(&ps_log_level, __ATOMIC_RELAXED);
}

void ps_log_write(ps_log_level_t level, const char *file, int line, const char *fmt, ...)
{
    static const char tags[] = "EWID";
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* One fprintf per line so lines of concurrent threads do not interleave. */
    fprintf(stderr, "[%ld.%06ld] pserv %c %d %s:%d %s\n", (long)ts.tv_sec, ts.tv_nsec / 1000,
            tags[level], (int)getpid(), base ? base + 1 : file, line, msg);
}

static __thread char ps_last_error[512];

void ps_set_last_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps_last_error, sizeof(ps_last_error), fmt, ap);
    va_end(ap);
}

const char *pserv_last_error(void)
{
    return ps_last_error;
}
