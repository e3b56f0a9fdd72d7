/*
 * Logging for library code: one line per event on stderr, never stdout. The level comes
 * from PSERV_LOG_LEVEL (error, warn, info, debug; default warn) or ps_log_set_level().
 */
#ifndef PS_LOG_H
#define PS_LOG_H

typedef enum { PS_LOG_ERROR = 0, PS_LOG_WARN = 1, PS_LOG_INFO = 2, PS_LOG_DEBUG = 3 } ps_log_level_t;

void ps_log_set_level(ps_log_level_t level);
int ps_log_enabled(ps_log_level_t level);
void ps_log_write(ps_log_level_t level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sets this thread's detail of the last failed call (pserv_last_error()). */
void ps_set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define ps_log_(level, ...)                                                                  \
    do {                                                                                     \
        if (ps_log_enabled(level)) ps_log_write(level, __FILE__, __LINE__, __VA_ARGS__);     \
    } while (0)
#define ps_error(...) ps_log_(PS_LOG_ERROR, __VA_ARGS__)
#define ps_warn(...) ps_log_(PS_LOG_WARN, __VA_ARGS__)
#define ps_info(...) ps_log_(PS_LOG_INFO, __VA_ARGS__)
#define ps_debug(...) ps_log_(PS_LOG_DEBUG, __VA_ARGS__)

#endif
