/*
 * One training worker: loads Fashion-MNIST, registers the MLP's tensors on the server shards,
 * and trains on its own shard of the training set with fused push-pulls, evaluating on the test
 * set after every epoch. In sync mode every worker holds identical parameters after each step;
 * in async mode the workers pull the latest ones (between two barriers) before evaluating, so
 * all of them take the same stop decision.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "options.h"
#include "progress.h"
#include "train_config.h"
#include "pserv/pserv.h"
#include "pserv/pserv_model.h"
#include "worker_gpu.h"

#define WORKER_TIMEOUT_MS 120000
#define MAX_TENSORS (2 * (CLI_LIST_MAX + 1))

typedef struct {
    const train_config_t *cfg;
    pserv_worker_h worker;
    pserv_job_info_t job;
    pserv_mlp_h mlp;   /* the model on the CPU; with a GPU, only its initial values are used */
    worker_gpu_t *gpu; /* NULL: gradients on the CPU */
    unsigned ntensors;
    float *params[MAX_TENSORS], *grads[MAX_TENSORS];
    pserv_dataset_h train, test;
    FILE *report; /* NULL: print epochs to stdout (rank 0) */
    char why[600]; /* why this worker failed, for pserv_worker_abort */
} trainer_t;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void shuffle(size_t *idx, size_t n, uint64_t seed)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(&seed) % i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

/* The seed of an epoch's shuffle: the place in the data is a function of seed, rank and epoch. */
static uint64_t epoch_seed(const train_config_t *cfg, const trainer_t *t, unsigned epoch)
{
    return cfg->seed * 1000003ull + t->job.rank * 7919ull + epoch;
}

static int fail(trainer_t *t, const char *what, pserv_status_t st)
{
    const char *model = pserv_model_last_error();
    const char *detail = t->worker ? pserv_worker_last_error(t->worker) : *model ? model : pserv_last_error();
    fprintf(stderr, "pserv worker: %s: %s%s%s\n", what, pserv_strerror(st), *detail ? ": " : "", detail);
    /* The job hears it now, with the reason, instead of waiting for this worker's pushes. */
    snprintf(t->why, sizeof(t->why), "%s: %s%s%s", what, pserv_strerror(st), *detail ? ": " : "", detail);
    return 1;
}

/* The optimizer every tensor gets. */
static pserv_status_t tensor_proto(const trainer_t *t, pserv_tensor_params_t *p)
{
    *p = (pserv_tensor_params_t)PSERV_TENSOR_PARAMS_INIT;
    p->optim.lr = train_config_lr(t->cfg);
    return pserv_optim_parse(t->cfg->optimizer, &p->optim.type);
}

static pserv_status_t register_tensors(trainer_t *t)
{
    pserv_tensor_params_t p;
    pserv_status_t st = tensor_proto(t, &p);
    for (unsigned i = 0; st == PSERV_OK && i < t->ntensors; i++) {
        p.key = i + 1;
        p.count = pserv_mlp_tensor_size(t->mlp, i);
        p.init = pserv_mlp_param(t->mlp, i);
        st = pserv_worker_register(t->worker, &p);
    }
    return st;
}

static pserv_status_t model_evaluate(trainer_t *t, size_t *correct, float *loss)
{
    const float *x = pserv_dataset_images(t->test);
    const uint8_t *y = pserv_dataset_labels(t->test);
    size_t n = pserv_dataset_count(t->test);
    if (t->gpu) return worker_gpu_evaluate(t->gpu, x, y, n, correct, loss);
    return pserv_mlp_evaluate(t->mlp, x, y, n, correct, loss);
}

/*
 * Pushes every gradient (scaled) and pulls every tensor back, all requests in flight at once, in
 * one group: the small tensors' chunks travel to each server in one message.
 */
static pserv_status_t exchange(trainer_t *t, float scale)
{
    pserv_request_t reqs[MAX_TENSORS];
    pserv_status_t st = pserv_worker_group_start(t->worker);
    unsigned issued = 0;
    for (unsigned i = 0; i < t->ntensors && st == PSERV_OK; i++, issued++) {
        float *g = t->grads[i];
        if (scale != 1.0f)
            for (size_t k = 0, n = pserv_mlp_tensor_size(t->mlp, i); k < n; k++) g[k] *= scale;
        st = pserv_worker_push_pull(t->worker, i + 1, g, t->params[i], &reqs[i]);
        if (st < 0) break;
    }
    pserv_status_t end = pserv_worker_group_end(t->worker); /* sends what the group holds */
    if (st == PSERV_OK) st = end;
    for (unsigned i = 0; i < issued; i++) {
        pserv_status_t w = pserv_worker_wait(t->worker, reqs[i], WORKER_TIMEOUT_MS);
        if (st == PSERV_OK) st = w;
    }
    return st;
}

static pserv_status_t pull_all(trainer_t *t)
{
    if (t->gpu) return worker_gpu_pull(t->gpu);
    pserv_request_t reqs[MAX_TENSORS];
    pserv_status_t st = PSERV_OK;
    for (unsigned i = 0; i < t->ntensors && st == PSERV_OK; i++)
        st = pserv_worker_pull(t->worker, i + 1, t->params[i], &reqs[i]);
    for (unsigned i = 0; i < t->ntensors && st == PSERV_OK; i++) st = pserv_worker_wait(t->worker, reqs[i], WORKER_TIMEOUT_MS);
    return st;
}

/* One step: gradients of a batch, pushed, and the new parameters pulled (GPU: enqueued). */
static pserv_status_t model_step(trainer_t *t, const float *x, const uint8_t *y, size_t batch, float scale,
                                 float *loss)
{
    if (t->gpu) return worker_gpu_step(t->gpu, x, y, batch, loss);
    pserv_status_t st = pserv_mlp_train_step(t->mlp, x, y, batch, loss);
    return st < 0 ? st : exchange(t, scale);
}

/*
 * This worker's share of the data for the next epoch: equal shards among the workers that met at
 * the last barrier (a dead one's share is taken over, a rejoined one takes one back). When the
 * share changes, the order starts again from the shard's own; returns 1 then.
 */
static int share_data(trainer_t *t, size_t count, size_t *idx, size_t *per, unsigned *index, unsigned *workers)
{
    unsigned i, n;
    if (pserv_worker_share(t->worker, &i, &n) < 0 || n == 0 || (i == *index && n == *workers)) return 0;
    *index = i, *workers = n;
    *per = count / n;
    for (size_t k = 0; k < *per; k++) idx[k] = (size_t)i * *per + k;
    return 1;
}

static int train(trainer_t *t)
{
    const train_config_t *cfg = t->cfg;
    size_t features = pserv_dataset_features(t->train), count = pserv_dataset_count(t->train);
    if (cfg->limit && cfg->limit < count) count = cfg->limit;
    size_t per = 0, steps = 0;
    unsigned share_index = UINT32_MAX, share_count = 0;
    size_t *idx = malloc(count * sizeof(*idx));
    float *xb = malloc((size_t)cfg->batch * features * sizeof(float));
    uint8_t *yb = malloc(cfg->batch);
    if (!idx || !xb || !yb) {
        free(idx), free(xb), free(yb);
        return fail(t, "out of memory", PSERV_ERR_NO_MEMORY);
    }
    /* Equal shards: in sync mode every worker must take the same number of steps. */
    share_data(t, count, idx, &per, &share_index, &share_count);
    if ((steps = per / cfg->batch) == 0) {
        fprintf(stderr, "pserv worker: %zu samples per worker is less than one batch of %u\n", per, cfg->batch);
        free(idx), free(xb), free(yb);
        return 2;
    }
    const float *images = pserv_dataset_images(t->train);
    const uint8_t *labels = pserv_dataset_labels(t->train);
    /* Sync mode sums the workers' pushes: send 1/W of each so the step uses their mean. Async
     * mode takes W steps where sync takes one: the same 1/W keeps the learning rate's meaning
     * (and the same defaults) in both modes. */
    float scale = 1.0f / (float)share_count;
    double start = progress_now();
    uint64_t samples = 0;
    double accuracy = 0;
    /* A resumed job goes on where its checkpoint was taken: after `done` steps (a sync round is a
     * step; an async chunk counts every worker's update): its place in the data is the epoch, the
     * step in it and the shuffles so far (each a function of the seed, the rank and the epoch). A
     * rejoined worker goes on with the epoch after the barrier it met the job at (one per epoch in
     * sync mode, two in async). */
    uint64_t done = t->job.mode == PSERV_MODE_SYNC ? t->job.resume_round : t->job.resume_round / t->job.num_workers;
    unsigned epoch = (unsigned)(done / steps);
    size_t first_step = (size_t)(done % steps);
    pserv_status_t st = PSERV_OK;
    if (cfg->rejoin) {
        epoch = (unsigned)(t->job.mode == PSERV_MODE_SYNC ? t->job.next_barrier : (t->job.next_barrier + 1) / 2);
        first_step = 0;
        size_t correct = 0;
        float test_loss = 0;
        if ((st = model_evaluate(t, &correct, &test_loss)) == PSERV_OK)
            accuracy = (double)correct / (double)pserv_dataset_count(t->test);
        printf("worker %u rejoined after epoch %u: test accuracy %.4f\n", t->job.rank, epoch, accuracy);
        if (accuracy >= cfg->target) epoch = cfg->epochs; /* the others stop here too */
    }
    /* Each epoch shuffles the previous epoch's order: replay the epochs already done. */
    for (unsigned e = 1; e <= epoch && e < cfg->epochs && !cfg->rejoin; e++) shuffle(idx, per, epoch_seed(cfg, t, e));
    if (done > 0 && t->report)
        fprintf(t->report, "resumed %u %llu %u %zu %zu\n", t->job.rank, (unsigned long long)t->job.resume_round,
                epoch + 1, first_step + 1, steps);
    else if (done > 0 && t->job.rank == 0)
        printf("resumed at round %llu: epoch %u, step %zu of %zu\n", (unsigned long long)t->job.resume_round,
               epoch + 1, first_step + 1, steps);

    while (epoch < cfg->epochs && st == PSERV_OK) {
        epoch++;
        if (share_data(t, count, idx, &per, &share_index, &share_count)) {
            steps = per / cfg->batch;
            scale = 1.0f / (float)share_count;
            if (!t->report) printf("worker %u: epoch %u shared among %u workers\n", t->job.rank, epoch, share_count);
        }
        shuffle(idx, per, epoch_seed(cfg, t, epoch));
        double loss_sum = 0;
        for (size_t s = first_step; s < steps && st == PSERV_OK; s++) {
            for (unsigned b = 0; b < cfg->batch; b++) {
                size_t k = idx[s * cfg->batch + b];
                memcpy(xb + (size_t)b * features, images + k * features, features * sizeof(float));
                yb[b] = labels[k];
            }
            float loss = 0;
            st = model_step(t, xb, yb, cfg->batch, scale, &loss);
            loss_sum += loss;
            samples += cfg->batch;
            if (t->report)
                fprintf(t->report, "step %u %u %zu %zu %.6f %.3f\n", t->job.rank, epoch, s + 1, steps, loss,
                        progress_now() - start);
        }
        first_step = 0;
        if (st < 0) break;
        /* Everyone stops pushing; async workers then pull the same, latest parameters. */
        st = pserv_worker_barrier(t->worker, WORKER_TIMEOUT_MS);
        if (st == PSERV_OK && t->job.mode == PSERV_MODE_ASYNC) {
            st = pull_all(t);
            if (st == PSERV_OK) st = pserv_worker_barrier(t->worker, WORKER_TIMEOUT_MS);
        }
        size_t correct = 0;
        float test_loss = 0;
        if (st == PSERV_OK) st = model_evaluate(t, &correct, &test_loss);
        if (st < 0) break;
        accuracy = (double)correct / (double)pserv_dataset_count(t->test);
        uint64_t job_samples = samples * t->job.num_workers;
        double elapsed = progress_now() - start;
        if (t->report)
            fprintf(t->report, "epoch %u %u %.6f %.6f %.6f %llu %.3f\n", t->job.rank, epoch, accuracy, test_loss,
                    loss_sum / (double)steps, (unsigned long long)job_samples, elapsed);
        else if (t->job.rank == 0)
            printf("epoch %2u/%u  train loss %.4f  test loss %.4f  test accuracy %.4f  %.0f samples/s  %.1f s\n",
                   epoch, cfg->epochs, loss_sum / (double)steps, test_loss, accuracy, (double)job_samples / elapsed,
                   elapsed);
        fflush(t->report ? t->report : stdout);
        if (accuracy >= cfg->target) break;
    }
    free(idx), free(xb), free(yb);
    /* Resumed from the checkpoint of a finished run: nothing left to train, but say how good it is. */
    if (st == PSERV_OK && done > 0 && done >= (uint64_t)cfg->epochs * steps) {
        size_t correct = 0;
        float test_loss = 0;
        if ((st = model_evaluate(t, &correct, &test_loss)) == PSERV_OK)
            accuracy = (double)correct / (double)pserv_dataset_count(t->test);
    }
    if (st < 0) return fail(t, "training failed", st);

    pserv_worker_stats_t stats = PSERV_WORKER_STATS_INIT;
    pserv_worker_stats(t->worker, &stats);
    double elapsed = progress_now() - start;
    if (t->report) {
        fprintf(t->report, "done %u %u %.6f %llu %llu %llu %.3f\n", t->job.rank, epoch, accuracy,
                (unsigned long long)(samples * t->job.num_workers), (unsigned long long)stats.bytes_pushed,
                (unsigned long long)stats.bytes_pulled, elapsed);
        fflush(t->report);
    } else {
        printf("worker %u: test accuracy %.4f after %u epochs, %.1f s, %.0f samples/s, pushed %.1f MiB, pulled %.1f MiB\n",
               t->job.rank, accuracy, epoch, elapsed, (double)samples / elapsed,
               (double)stats.bytes_pushed / (1 << 20), (double)stats.bytes_pulled / (1 << 20));
    }
    return 0;
}

/* With a GPU, the model computes there: a node group's workers use GPUs 0 .. local_size-1. */
static int open_gpu(trainer_t *t, const size_t *dims, unsigned ndims)
{
    pserv_tensor_params_t proto;
    pserv_status_t st = tensor_proto(t, &proto);
    if (st == PSERV_OK)
        st = worker_gpu_open(t->worker, &t->job, t->mlp, dims, ndims, t->cfg->batch, 1.0f / (float)t->job.num_workers,
                             &proto, &t->gpu);
    return st < 0 ? 1 : 0;
}

int train_worker_run(const train_config_t *cfg, const char *coordinator)
{
    trainer_t t = {.cfg = cfg};
    size_t dims[CLI_LIST_MAX + 2];
    unsigned ndims = 0;
    pserv_status_t st;
    int rc = 1;

    pserv_blas_set_threads(1);
    if (cfg->report_fd >= 0 && (t.report = fdopen(cfg->report_fd, "w")) == NULL) {
        fprintf(stderr, "pserv worker: --report-fd %d is not open for writing\n", cfg->report_fd);
        return 2;
    }
    if ((st = pserv_dataset_load_fashion_mnist(cfg->data, 1, &t.train)) < 0) {
        rc = fail(&t, "cannot load the training set", st);
        goto out;
    }
    if ((st = pserv_dataset_load_fashion_mnist(cfg->data, 0, &t.test)) < 0) {
        rc = fail(&t, "cannot load the test set", st);
        goto out;
    }
    dims[ndims++] = pserv_dataset_features(t.train);
    for (unsigned i = 0; i < cfg->hidden.n; i++) dims[ndims++] = cfg->hidden.v[i];
    dims[ndims++] = 10;
    if ((st = pserv_mlp_create(dims, ndims, cfg->batch, &t.mlp)) < 0 || (st = pserv_mlp_init(t.mlp, cfg->seed)) < 0) {
        rc = fail(&t, "cannot create the model", st);
        goto out;
    }
    t.ntensors = pserv_mlp_num_tensors(t.mlp);
    for (unsigned i = 0; i < t.ntensors; i++) {
        t.params[i] = pserv_mlp_param(t.mlp, i);
        t.grads[i] = pserv_mlp_grad(t.mlp, i);
    }

    int use_gpu = train_config_use_gpu("worker", cfg);
    if (use_gpu < 0) {
        rc = 2;
        goto out;
    }
    char node[256] = "", settings[512];
    pserv_worker_params_t wp = PSERV_WORKER_PARAMS_INIT;
    train_config_settings(cfg, settings, sizeof(settings));
    wp.coordinator = coordinator;
    wp.settings = settings;
    wp.timeout_ms = (int)cfg->timeout_s * 1000;
    wp.rejoin = cfg->rejoin;
    /* GPU workers of one machine reduce over NCCL first: by default a node group is a host. */
    if (use_gpu) wp.node = cfg->node ? cfg->node : gethostname(node, sizeof(node) - 1) == 0 ? node : NULL;
    if ((st = pserv_worker_create(&wp, &t.worker)) < 0) {
        rc = fail(&t, "cannot join the job", st);
        goto out;
    }
    t.job.size = sizeof(t.job);
    pserv_worker_job(t.worker, &t.job);
    if (use_gpu && (rc = open_gpu(&t, dims, ndims)) != 0) goto out;
    rc = 1;
    if ((!use_gpu && (st = register_tensors(&t)) < 0) || (st = pserv_worker_barrier(t.worker, WORKER_TIMEOUT_MS)) < 0) {
        rc = fail(&t, "cannot register the model's tensors", st);
        goto out;
    }
    /* A rejoined worker met the job at the end of an epoch; in async mode the others pull and
     * meet once more there. */
    if (cfg->rejoin && t.job.mode == PSERV_MODE_ASYNC && t.job.next_barrier % 2 == 1 &&
        ((st = pull_all(&t)) < 0 || (st = pserv_worker_barrier(t.worker, WORKER_TIMEOUT_MS)) < 0)) {
        rc = fail(&t, "cannot meet the running job", st);
        goto out;
    }
    /* Resumed or rejoined: the servers hold the job's parameters, not the initial ones. */
    if ((t.job.resume_round > 0 || cfg->rejoin) && (st = pull_all(&t)) < 0) {
        rc = fail(&t, "cannot pull the resumed parameters", st);
        goto out;
    }
    rc = train(&t);
out:
    worker_gpu_close(t.gpu);
    if (t.worker && rc != 0) pserv_worker_abort(t.worker, t.why[0] ? t.why : "the worker failed");
    else if (t.worker) pserv_worker_destroy(t.worker);
    if (t.mlp) pserv_mlp_destroy(t.mlp);
    if (t.train) pserv_dataset_destroy(t.train);
    if (t.test) pserv_dataset_destroy(t.test);
    if (t.report) fclose(t.report);
    return rc;
}

int cmd_worker(int argc, char **argv)
{
    train_config_t cfg;
    cli_opt_t opts[TRAIN_FLAGS_MAX];
    train_config_defaults(&cfg);
    size_t n = train_config_flags(&cfg, 0, 1, opts);
    cli_result_t r = cli_parse("worker", "Runs one training worker of a job (see pserv train for the whole job).", opts,
                               n, argc, argv);
    if (r != CLI_OK) return r == CLI_HELP ? 0 : 2;
    cli_progress_apply(cfg.progress);
    if (cfg.coordinator == NULL) {
        fprintf(stderr, "pserv worker: --coordinator HOST:PORT is required\n");
        return 2;
    }
    if (train_config_check_data("worker", &cfg) != 0) return 2;
    return train_worker_run(&cfg, cfg.coordinator);
}
