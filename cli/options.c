#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

static int cli_parse_size(const char *text, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || errno || *text == '-') return -1;
    unsigned long long mult = 1;
    if (*end == 'K' || *end == 'k') mult = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm') mult = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g') mult = 1ull << 30, end++;
    if (*end == 'i' && mult > 1) end++;
    if (*end == 'B' && mult > 1) end++;
    if (*end != '\0' || v > SIZE_MAX / mult) return -1;
    *out = (size_t)(v * mult);
    return 0;
}

/* Stores one value; returns 0, or -1 after printing what is wrong. */
static int cli_set(const char *command, const cli_opt_t *o, const char *value, const char *from)
{
    char *end;
    switch (o->type) {
    case CLI_STRING:
        if (*value == '\0') break;
        *(const char **)o->target = value;
        return 0;
    case CLI_UINT: {
        errno = 0;
        unsigned long v = strtoul(value, &end, 10);
        if (*value == '\0' || *value == '-' || *end || errno || v > 1000000000UL) break;
        if (v < o->min) {
            fprintf(stderr, "pserv %s: %s%s must be at least %u, not %s\n", command, from, o->name, o->min, value);
            return -1;
        }
        *(unsigned *)o->target = (unsigned)v;
        return 0;
    }
    case CLI_FLOAT: {
        errno = 0;
        float v = strtof(value, &end);
        if (*value == '\0' || *end || errno || !isfinite(v) || v < 0 || (v == 0 && !o->min)) break;
        *(float *)o->target = v;
        return 0;
    }
    case CLI_SIZE: {
        size_t v;
        if (cli_parse_size(value, &v) != 0 || v == 0) break;
        *(size_t *)o->target = v;
        return 0;
    }
    case CLI_CHOICE: {
        size_t n = strlen(value);
        for (const char *c = o->choices; n && c && *c;) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && strncmp(c, value, n) == 0) {
                *(const char **)o->target = value;
                return 0;
            }
            c = bar ? bar + 1 : NULL;
        }
        fprintf(stderr, "pserv %s: %s%s must be one of %s, not '%s'\n", command, from, o->name, o->choices, value);
        return -1;
    }
    case CLI_LIST: {
        cli_list_t list = {0};
        const char *p = value;
        while (*p) {
            errno = 0;
            unsigned long v = strtoul(p, &end, 10);
            if (end == p || errno || v == 0 || v > 1000000UL || list.n == CLI_LIST_MAX || (*end && *end != ','))
                goto bad;
            list.v[list.n++] = v;
            p = *end ? end + 1 : end;
            if (*end == ',' && *p == '\0') goto bad;
        }
        if (list.n == 0) break;
        *(cli_list_t *)o->target = list;
        return 0;
    }
    case CLI_EVERY: {
        errno = 0;
        double v = strtod(value, &end);
        int ms = strcmp(end, "ms") == 0, s = strcmp(end, "s") == 0;
        if (*value == '\0' || *value == '-' || errno || !isfinite(v) || (!ms && !s && (*end || v != (unsigned)v)))
            break;
        double t = ms ? v : v * 1000.0;
        if (v <= 0 || ((ms || s) && (t < 1 || t > 1e9)) || (!ms && !s && v > 1e9)) break;
        *(cli_every_t *)o->target = ms || s ? (cli_every_t){0, (unsigned)(t + 0.5)} : (cli_every_t){(unsigned)v, 0};
        return 0;
    }
    case CLI_FLAG:
        if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0 || strcmp(value, "yes") == 0) {
            *(int *)o->target = 1;
            return 0;
        }
        if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0 || strcmp(value, "no") == 0) {
            *(int *)o->target = 0;
            return 0;
        }
        break;
    }
bad:;
    static const char *what[] = {"a non-empty string", "a whole number", "a positive number",
                                 "a size like 4M", "", "a comma-separated list of whole numbers", "1 or 0",
                                 "rounds (a whole number) or a time like 30s, 0.5s or 500ms"};
    fprintf(stderr, "pserv %s: %s%s must be %s, not '%s'\n", command, from, o->name, what[o->type], value);
    return -1;
}

static void cli_env_name(const char *name, char *out, size_t cap)
{
    size_t i = 0;
    int n = snprintf(out, cap, "PSERV_");
    for (i = (size_t)n; *name && i + 1 < cap; name++, i++) out[i] = *name == '-' ? '_' : (char)toupper(*name);
    out[i] = '\0';
}

void cli_usage(const char *command, const char *summary, const cli_opt_t *opts, size_t nopts)
{
    printf("usage: pserv %s [flags]\n\n%s\n\nflags (each also read from the environment, e.g. --lr from PSERV_LR):\n",
           command, summary);
    for (size_t i = 0; i < nopts; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, opts[i].meta ? " " : "",
                 opts[i].meta ? opts[i].meta : "");
        printf("  %-26s %s\n", left, opts[i].help);
    }
    printf("  %-26s %s\n", "--help", "show this help");
}

cli_result_t cli_parse(const char *command, const char *summary, const cli_opt_t *opts, size_t nopts, int argc,
                       char **argv)
{
    for (size_t i = 0; i < nopts; i++) {
        char env[96];
        cli_env_name(opts[i].name, env, sizeof(env));
        const char *value = getenv(env);
        char from[160];
        snprintf(from, sizeof(from), "%s (from the environment) for --", env);
        if (value && cli_set(command, &opts[i], value, from) != 0) return CLI_ERROR;
    }
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cli_usage(command, summary, opts, nopts);
            return CLI_HELP;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "pserv %s: unexpected argument '%s' (flags start with --; see pserv %s --help)\n",
                    command, arg, command);
            return CLI_ERROR;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt_t *o = NULL;
        for (size_t i = 0; i < nopts && o == NULL; i++)
            if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) o = &opts[i];
        if (o == NULL) {
            fprintf(stderr, "pserv %s: unknown flag --%.*s (see pserv %s --help)\n", command, (int)len, name, command);
            return CLI_ERROR;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL && o->type == CLI_FLAG) value = "1";
        if (value == NULL) {
            if (a + 1 >= argc) {
                fprintf(stderr, "pserv %s: --%s needs a value (%s)\n", command, o->name, o->meta ? o->meta : "value");
                return CLI_ERROR;
            }
            value = argv[++a];
        }
        if (cli_set(command, o, value, "--") != 0) return CLI_ERROR;
    }
    return CLI_OK;
}

void cli_progress_apply(const char *mode)
{
    if (mode != NULL) setenv("PSERV_PROGRESS", mode, 1);
}
