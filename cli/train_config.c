#include "train_config.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "pserv/pserv_model.h"
#ifdef PSERV_HAVE_CUDA
#include "pserv/pserv_cuda.h"
#endif

void train_config_defaults(train_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->servers = 2;
    cfg->workers = 0; /* one per GPU, or 2 on the CPU: train_config_resolve_workers */
    cfg->mode = "sync";
    cfg->chunk_bytes = 256u << 10;
    cfg->on_worker_failure = "fail";
    cfg->optimizer = "adam";
    cfg->batch = 128;
    cfg->epochs = 15;
    cfg->seed = 1;
    cfg->hidden.n = 2;
    cfg->hidden.v[0] = 256;
    cfg->hidden.v[1] = 128;
    cfg->target = 0.88f;
    cfg->data = PSERV_FASHION_MNIST_DIR;
    cfg->device = "auto";
    cfg->timeout_s = 60;
    cfg->report_fd = -1;
    cfg->replicas = TRAIN_REPLICAS_DEFAULT;
}

size_t train_config_flags(train_config_t *cfg, int with_job, int with_coordinator, cli_opt_t *opts)
{
    size_t n = 0;
    if (with_job) {
        opts[n++] = (cli_opt_t){"servers", CLI_UINT, &cfg->servers, "N", "server shards (default 2)", NULL, 1};
        opts[n++] = (cli_opt_t){"workers", CLI_UINT, &cfg->workers, "N", "workers (default: one per GPU when they compute on GPUs, else 2)", NULL, 1};
        opts[n++] = (cli_opt_t){"mode", CLI_CHOICE, &cfg->mode, "sync|async", "consistency model (default sync)",
                                "sync|async", 0};
        opts[n++] = (cli_opt_t){"chunk-bytes", CLI_SIZE, &cfg->chunk_bytes, "BYTES",
                                "tensor chunk size on the servers, e.g. 1M (default 256K)", NULL, 0};
        opts[n++] = (cli_opt_t){"on-worker-failure", CLI_CHOICE, &cfg->on_worker_failure, "fail|continue",
                                "when a worker dies: end the job, naming it, or go on with the others (default fail)",
                                "fail|continue", 0};
        opts[n++] = (cli_opt_t){"heartbeat-ms", CLI_UINT, &cfg->heartbeat_ms, "MS",
                                "heartbeat interval between the coordinator and every member (default 500)", NULL, 0};
        opts[n++] = (cli_opt_t){"failure-timeout-ms", CLI_UINT, &cfg->failure_timeout_ms, "MS",
                                "a member silent this long is declared dead (default 3000)", NULL, 0};
        opts[n++] = (cli_opt_t){"checkpoint-dir", CLI_STRING, &cfg->checkpoint_dir, "DIR",
                                "every server writes checkpoints here (a directory all servers reach)", NULL, 0};
        opts[n++] = (cli_opt_t){"checkpoint-every", CLI_EVERY, &cfg->checkpoint_every, "N|Ns",
                                "checkpoint every N rounds (steps), or every N seconds (30s, 0.5s, 500ms), when "
                                "--checkpoint-dir is given (default 100 rounds)",
                                NULL, 0};
        opts[n++] = (cli_opt_t){"replicas", CLI_UINT, &cfg->replicas, "K",
                                "backups of every chunk on other servers: a dead server's chunks fail over to them "
                                "and training goes on (default 1 with 2 or more servers; 0: none)",
                                NULL, 0};
        opts[n++] = (cli_opt_t){"resume", CLI_STRING, &cfg->resume, "DIR",
                                "continue from the newest checkpoint complete in DIR (any server count)", NULL, 0};
    }
    if (with_coordinator)
        opts[n++] = (cli_opt_t){"coordinator", CLI_STRING, &cfg->coordinator, "HOST:PORT",
                                with_job ? "under mpirun/srun: where rank 0 runs the coordinator (default "
                                           "127.0.0.1:7777)"
                                         : "the coordinator's address (required)",
                                NULL, 0};
    opts[n++] = (cli_opt_t){"optimizer", CLI_CHOICE, &cfg->optimizer, "NAME",
                            "sgd, momentum, adam, adamw or adagrad (default adam)", "sgd|momentum|adam|adamw|adagrad",
                            0};
    opts[n++] = (cli_opt_t){"lr", CLI_FLOAT, &cfg->lr, "RATE",
                            "learning rate (default: adam/adamw 0.001, momentum 0.05, sgd 0.1, adagrad 0.01)", NULL, 0};
    opts[n++] = (cli_opt_t){"batch", CLI_UINT, &cfg->batch, "N", "samples per step on each worker (default 128)", NULL, 1};
    opts[n++] = (cli_opt_t){"epochs", CLI_UINT, &cfg->epochs, "N", "most epochs to train (default 15)", NULL, 1};
    opts[n++] = (cli_opt_t){"hidden", CLI_LIST, &cfg->hidden, "N,N", "hidden layer sizes (default 256,128)", NULL, 0};
    opts[n++] = (cli_opt_t){"seed", CLI_UINT, &cfg->seed, "N", "seed of the initial weights and shuffling (default 1)",
                            NULL, 0};
    opts[n++] = (cli_opt_t){"target-accuracy", CLI_FLOAT, &cfg->target, "ACC",
                            "stop once test accuracy reaches this (default 0.88)", NULL, 0};
    opts[n++] = (cli_opt_t){"data", CLI_STRING, &cfg->data, "DIR",
                            "Fashion-MNIST IDX files (default " PSERV_FASHION_MNIST_DIR ")", NULL, 0};
    opts[n++] = (cli_opt_t){"device", CLI_CHOICE, &cfg->device, "auto|cuda|cpu",
                            "where workers compute gradients: a GPU when there is one (auto), a GPU, or the CPU "
                            "(default auto)",
                            "auto|cuda|cpu", 0};
    opts[n++] = (cli_opt_t){"limit", CLI_UINT, &cfg->limit, "N", "train on the first N samples only (default all)",
                            NULL, 0};
    opts[n++] = CLI_PROGRESS_OPT(&cfg->progress);
    opts[n++] = (cli_opt_t){"timeout", CLI_UINT, &cfg->timeout_s, "SECONDS",
                            "how long to wait for the job to form (default 60)", NULL, 1};
    if (!with_job)
        opts[n++] = (cli_opt_t){"node", CLI_STRING, &cfg->node, "NAME",
                                "node group of a GPU worker: workers naming the same node reduce over NCCL and push "
                                "once (default: the host name)",
                                NULL, 0};
    if (!with_job)
        opts[n++] = (cli_opt_t){"rejoin", CLI_FLAG, &cfg->rejoin, NULL,
                                "join a running job in a dead worker's place (its coordinator runs with "
                                "--on-worker-failure continue); in from the job's next epoch",
                                NULL, 0};
    if (!with_job)
        opts[n++] = (cli_opt_t){"report-fd", CLI_UINT, &cfg->report_fd, "FD",
                                "internal: report progress to this file descriptor for pserv train", NULL, 0};
    return n;
}

float train_config_lr(const train_config_t *cfg)
{
    if (cfg->lr > 0) return cfg->lr;
    if (strcmp(cfg->optimizer, "sgd") == 0) return 0.1f;
    if (strcmp(cfg->optimizer, "momentum") == 0) return 0.05f;
    if (strcmp(cfg->optimizer, "adagrad") == 0) return 0.01f;
    return 0.001f;
}

void train_config_coordinator_params(const train_config_t *cfg, pserv_coordinator_params_t *p)
{
    p->mode = strcmp(cfg->mode, "async") == 0 ? PSERV_MODE_ASYNC : PSERV_MODE_SYNC;
    p->chunk_bytes = cfg->chunk_bytes;
    p->heartbeat_ms = (int)cfg->heartbeat_ms;
    p->failure_timeout_ms = (int)cfg->failure_timeout_ms;
    p->on_worker_failure =
        strcmp(cfg->on_worker_failure, "continue") == 0 ? PSERV_ON_FAILURE_CONTINUE : PSERV_ON_FAILURE_FAIL;
    p->checkpoint_dir = cfg->checkpoint_dir;
    cli_every_t every = cfg->checkpoint_every;
    if (every.rounds == 0 && every.ms == 0) every.rounds = 100;
    p->checkpoint_every = cfg->checkpoint_dir ? every.rounds : 0;
    p->checkpoint_every_ms = cfg->checkpoint_dir ? every.ms : 0;
    p->resume_dir = cfg->resume;
    p->replicas = cfg->replicas == TRAIN_REPLICAS_DEFAULT ? 0 : cfg->replicas == 0 ? PSERV_REPLICAS_NONE : (int)cfg->replicas;
}

void train_config_settings(const train_config_t *cfg, char *out, size_t cap)
{
    int n = snprintf(out, cap, "optimizer=%s lr=%.9g batch=%u epochs=%u seed=%u target-accuracy=%.9g limit=%u hidden=",
                     cfg->optimizer, (double)train_config_lr(cfg), cfg->batch, cfg->epochs, cfg->seed,
                     (double)cfg->target, cfg->limit);
    for (unsigned i = 0; i < cfg->hidden.n && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%s%zu", i ? "," : "", cfg->hidden.v[i]);
}

int train_config_worker_args(const train_config_t *cfg, char bufs[][TRAIN_ARG_MAX], char **argv, int max)
{
    int n = 0, b = 0;
#define ARG(s) (n < max ? (void)(argv[n++] = (char *)(s)) : (void)0)
#define ARGF(...) (snprintf(bufs[b], TRAIN_ARG_MAX, __VA_ARGS__), ARG(bufs[b]), b++)
    ARG("--optimizer");
    ARG(cfg->optimizer);
    ARGF("--lr=%.9g", (double)train_config_lr(cfg));
    ARGF("--batch=%u", cfg->batch);
    ARGF("--epochs=%u", cfg->epochs);
    ARGF("--seed=%u", cfg->seed);
    ARGF("--target-accuracy=%.9g", (double)cfg->target);
    ARGF("--limit=%u", cfg->limit);
    ARGF("--timeout=%u", cfg->timeout_s);
    char hidden[64] = "";
    for (unsigned i = 0; i < cfg->hidden.n; i++)
        snprintf(hidden + strlen(hidden), sizeof(hidden) - strlen(hidden), "%s%zu", i ? "," : "", cfg->hidden.v[i]);
    ARGF("--hidden=%s", hidden);
    ARG("--device");
    ARG(cfg->device);
    ARG("--data");
    ARG(cfg->data);
#undef ARG
#undef ARGF
    return n;
}

int train_config_use_gpu(const char *command, const train_config_t *cfg)
{
    if (strcmp(cfg->device, "cpu") == 0) return 0;
#ifdef PSERV_HAVE_CUDA
    int n = 0;
    if (pserv_cuda_device_count(&n) == PSERV_OK && n > 0) return n;
    if (strcmp(cfg->device, "auto") == 0) return 0;
    fprintf(stderr, "pserv %s: --device cuda: no usable GPU (%s)\n", command, pserv_cuda_last_error());
#else
    if (strcmp(cfg->device, "auto") == 0) return 0;
    fprintf(stderr, "pserv %s: --device cuda: this pserv was built without CUDA\n", command);
#endif
    return -1;
}

void train_config_resolve_workers(train_config_t *cfg, int gpus)
{
    if (cfg->workers == 0) cfg->workers = gpus > 0 ? (unsigned)gpus : 2;
}

int train_config_check_data(const char *command, const train_config_t *cfg)
{
    static const char *files[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
    struct stat sb;
    if (stat(cfg->data, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "pserv %s: data directory %s does not exist (install dataset-fashion-mnist or pass --data DIR)\n",
                command, cfg->data);
        return -1;
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", cfg->data, files[i]);
        if (stat(path, &sb) != 0) {
            fprintf(stderr, "pserv %s: missing data file %s\n", command, path);
            return -1;
        }
    }
    return 0;
}
