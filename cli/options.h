/*
 * Command-line flags for the pserv program: `--flag value` and `--flag=value`, each with an
 * environment twin PSERV_<FLAG> (upper case, '-' -> '_') that the command line overrides.
 * Unknown flags and bad values give one line naming the problem; the caller exits with 2.
 */
#ifndef PSERV_CLI_OPTIONS_H
#define PSERV_CLI_OPTIONS_H

#include <stddef.h>

#define CLI_LIST_MAX 8

typedef enum {
    CLI_STRING, /* const char * */
    CLI_UINT,   /* unsigned, >= min */
    CLI_FLOAT,  /* float, finite and > 0 unless min_zero */
    CLI_SIZE,   /* size_t bytes, with an optional K, M or G suffix (powers of 1024) */
    CLI_CHOICE, /* const char *, one of `choices` ("sync|async") */
    CLI_LIST,   /* cli_list_t: comma-separated whole numbers */
    CLI_FLAG,   /* int, set to 1 by the flag alone */
    CLI_EVERY,  /* cli_every_t: N (rounds), or a time: Ns, N.Ns or Nms */
} cli_type_t;

/* An interval in rounds or in time (exactly one is set). */
typedef struct {
    unsigned rounds, ms;
} cli_every_t;

/* Elements of an array (of options). */
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef struct {
    unsigned n;
    size_t v[CLI_LIST_MAX];
} cli_list_t;

typedef struct {
    const char *name; /* without the leading -- */
    cli_type_t type;
    void *target;
    const char *meta;    /* what the value is, for --help ("N", "HOST:PORT") */
    const char *help;
    const char *choices; /* CLI_CHOICE */
    unsigned min;        /* CLI_UINT: smallest value; CLI_FLOAT: 1 allows zero */
} cli_opt_t;

typedef enum { CLI_OK = 0, CLI_HELP = 1, CLI_ERROR = 2 } cli_result_t;

/*
 * Parses argv[0..argc) (after the subcommand) into the options' targets: environment first,
 * then the command line. --help prints usage (with `summary`) to stdout and returns CLI_HELP.
 * Errors print one line to stderr and return CLI_ERROR.
 */
cli_result_t cli_parse(const char *command, const char *summary, const cli_opt_t *opts, size_t nopts, int argc,
                       char **argv);
/* --progress (PSERV_PROGRESS): how the library's data-path threads wait; see docs/design.md. */
#define CLI_PROGRESS_OPT(target)                                                                          \
    (cli_opt_t){"progress", CLI_CHOICE, (target), "auto|spin|sleep",                                    \
                "how waiting threads wait: spin briefly, then sleep (auto), always spin, always sleep "   \
                "(default auto)",                                                                        \
                "auto|spin|sleep", 0}
/* Hands a --progress value (NULL: none given) to the library and to the processes this one starts. */
void cli_progress_apply(const char *mode);
/* Prints the usage of a command. */
void cli_usage(const char *command, const char *summary, const cli_opt_t *opts, size_t nopts);

#endif
