/*
 * The training job's settings, shared by `pserv train` (the launcher) and `pserv worker`
 * (one member): one flag table, and a way to hand the same settings to child processes.
 */
#ifndef PSERV_CLI_TRAIN_CONFIG_H
#define PSERV_CLI_TRAIN_CONFIG_H

#include <stddef.h>

#include "options.h"
#include "pserv/pserv.h"

typedef struct train_config {
    /* job */
    unsigned servers, workers;
    const char *mode;      /* sync | async */
    size_t chunk_bytes;
    const char *coordinator;
    const char *on_worker_failure; /* fail | continue */
    unsigned heartbeat_ms, failure_timeout_ms;
    const char *checkpoint_dir;   /* shards write checkpoints here ... */
    cli_every_t checkpoint_every; /* ... every N rounds, or every so long */
    const char *resume;           /* continue from the newest complete checkpoint in this directory */
    unsigned replicas;            /* backups per chunk (TRAIN_REPLICAS_DEFAULT: the library's default) */
    /* model and optimizer */
    const char *optimizer; /* sgd | momentum | adam | adamw | adagrad */
    float lr;              /* 0: the optimizer's default */
    unsigned batch, epochs, seed;
    cli_list_t hidden;
    float target;          /* stop once test accuracy reaches this */
    /* data */
    const char *data;
    const char *progress;  /* --progress: auto | spin | sleep, or NULL */
    const char *device;    /* auto | cuda | cpu: where workers compute gradients */
    const char *node;      /* a GPU worker's node group (NULL: the host name) */
    unsigned limit;        /* train on the first N samples only (0: all) */
    unsigned timeout_s;
    int report_fd;         /* internal: where a launched worker reports progress (-1: print) */
    int rejoin;            /* pserv worker --rejoin: take a dead worker's place in a running job */
} train_config_t;

#define TRAIN_FLAGS_MAX 32
#define TRAIN_REPLICAS_DEFAULT 0xffffffffu
#define TRAIN_ARG_MAX 96 /* one "--flag=value" argument for a worker process */

void train_config_defaults(train_config_t *cfg);
/* The flags of a role: job-wide ones (servers, workers, mode, chunk-bytes) when with_job. */
size_t train_config_flags(train_config_t *cfg, int with_job, int with_coordinator, cli_opt_t *opts);
/* The optimizer's learning rate when --lr was not given. */
float train_config_lr(const train_config_t *cfg);
/* The coordinator's parameters from the job-wide flags (listen, servers and workers are the caller's). */
void train_config_coordinator_params(const train_config_t *cfg, pserv_coordinator_params_t *p);
/* The settings every worker of a job must share, as "key=value ..." for pserv_worker_params_t. */
void train_config_settings(const train_config_t *cfg, char *out, size_t cap);
/* Writes argv entries for a worker process with the same settings; returns how many. */
int train_config_worker_args(const train_config_t *cfg, char bufs[][TRAIN_ARG_MAX], char **argv, int max);
/*
 * Resolves --device: the number of GPUs to compute on (> 0), 0 on the CPU; -1 (after one line on
 * stderr) when `cuda` was asked for and this build or machine has no usable GPU.
 */
int train_config_use_gpu(const char *command, const train_config_t *cfg);
/* --workers left at 0: one worker per GPU when they compute on gpus > 0 of them, else 2. */
void train_config_resolve_workers(train_config_t *cfg, int gpus);
/* Checks that the data directory has the four Fashion-MNIST files; prints one line if not. */
int train_config_check_data(const char *command, const train_config_t *cfg);

#endif
