#include "mlp_cpu.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ps_mlp {
    unsigned layers;
    size_t dims[PS_MLP_MAX_LAYERS + 1];
    size_t max_batch;
    float *param[2 * PS_MLP_MAX_LAYERS], *grad[2 * PS_MLP_MAX_LAYERS];
    size_t size[2 * PS_MLP_MAX_LAYERS];
    /* act[l]: layer l's input for l >= 1 (post-ReLU), batch x dims[l]; act[layers]: logits.
     * delta[l]: gradient of the loss with respect to act[l]'s pre-activation. */
    float *act[PS_MLP_MAX_LAYERS + 1], *delta[PS_MLP_MAX_LAYERS + 1];
};

void ps_mlp_destroy(ps_mlp_t *m)
{
    if (m == NULL) return;
    for (unsigned i = 0; i < 2 * m->layers; i++) {
        free(m->param[i]);
        free(m->grad[i]);
    }
    for (unsigned l = 1; l <= m->layers; l++) {
        free(m->act[l]);
        free(m->delta[l]);
    }
    free(m);
}

static float *ps_mlp_alloc(size_t n)
{
    void *p = NULL;
    return posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) == 0 ? memset(p, 0, n * sizeof(float)) : NULL;
}

int ps_mlp_shape_ok(const size_t *dims, unsigned ndims, size_t max_batch)
{
    if (dims == NULL || ndims < 2 || ndims > PS_MLP_MAX_LAYERS + 1 || max_batch == 0) return 0;
    /* Sizes reach BLAS as int: every product must fit. */
    for (unsigned i = 0; i < ndims; i++)
        if (dims[i] == 0 || dims[i] > (1u << 24) || max_batch > (size_t)INT_MAX / dims[i]) return 0;
    for (unsigned i = 0; i + 1 < ndims; i++)
        if (dims[i] > (size_t)INT_MAX / dims[i + 1]) return 0;
    return 1;
}

pserv_status_t ps_mlp_create(const size_t *dims, unsigned ndims, size_t max_batch, ps_mlp_t **out)
{
    if (out == NULL || !ps_mlp_shape_ok(dims, ndims, max_batch)) return PSERV_ERR_INVALID_ARG;
    ps_mlp_t *m = calloc(1, sizeof(*m));
    if (m == NULL) return PSERV_ERR_NO_MEMORY;
    m->layers = ndims - 1;
    m->max_batch = max_batch;
    memcpy(m->dims, dims, ndims * sizeof(*dims));
    int ok = 1;
    for (unsigned l = 0; l < m->layers; l++) {
        m->size[2 * l] = dims[l + 1] * dims[l];
        m->size[2 * l + 1] = dims[l + 1];
        for (unsigned k = 2 * l; k <= 2 * l + 1; k++) {
            m->param[k] = ps_mlp_alloc(m->size[k]);
            m->grad[k] = ps_mlp_alloc(m->size[k]);
            ok = ok && m->param[k] && m->grad[k];
        }
        m->act[l + 1] = ps_mlp_alloc(max_batch * dims[l + 1]);
        m->delta[l + 1] = ps_mlp_alloc(max_batch * dims[l + 1]);
        ok = ok && m->act[l + 1] && m->delta[l + 1];
    }
    if (!ok) {
        ps_mlp_destroy(m);
        return PSERV_ERR_NO_MEMORY;
    }
    *out = m;
    return PSERV_OK;
}

static uint64_t ps_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ps_mlp_init_params(ps_mlp_t *m, uint64_t seed)
{
    uint64_t s = seed;
    for (unsigned l = 0; l < m->layers; l++) {
        float bound = sqrtf(6.0f / (float)m->dims[l]);
        float *w = m->param[2 * l];
        for (size_t i = 0; i < m->size[2 * l]; i++) {
            double u = (double)(ps_splitmix64(&s) >> 11) * 0x1.0p-53; /* [0, 1) */
            w[i] = (float)((2.0 * u - 1.0) * bound);
        }
        memset(m->param[2 * l + 1], 0, m->size[2 * l + 1] * sizeof(float));
    }
}

unsigned ps_mlp_num_tensors(const ps_mlp_t *m) { return 2 * m->layers; }
size_t ps_mlp_tensor_size(const ps_mlp_t *m, unsigned i) { return i < 2 * m->layers ? m->size[i] : 0; }
float *ps_mlp_param(ps_mlp_t *m, unsigned i) { return i < 2 * m->layers ? m->param[i] : NULL; }
float *ps_mlp_grad(ps_mlp_t *m, unsigned i) { return i < 2 * m->layers ? m->grad[i] : NULL; }
size_t ps_mlp_max_batch(const ps_mlp_t *m) { return m->max_batch; }

/* Logits of a batch: act[l+1] = relu(act[l] W_l^T + b_l), the last layer without ReLU. */
static void ps_mlp_forward(ps_mlp_t *m, const float *x, size_t batch)
{
    for (unsigned l = 0; l < m->layers; l++) {
        size_t in = m->dims[l], out = m->dims[l + 1];
        const float *a = l == 0 ? x : m->act[l];
        float *z = m->act[l + 1];
        const float *b = m->param[2 * l + 1];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)batch, (int)out, (int)in, 1.0f, a, (int)in,
                    m->param[2 * l], (int)in, 0.0f, z, (int)out);
        int relu = l + 1 < m->layers;
        for (size_t r = 0; r < batch; r++) {
            float *row = z + r * out;
            if (relu)
                for (size_t j = 0; j < out; j++) row[j] = fmaxf(row[j] + b[j], 0.0f);
            else
                for (size_t j = 0; j < out; j++) row[j] += b[j];
        }
    }
}

size_t ps_mlp_argmax(const float *row, size_t classes)
{
    size_t best = 0;
    for (size_t j = 1; j < classes; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

float ps_mlp_xent_row(const float *logits, size_t classes, unsigned label, float scale, float *dz)
{
    float max = logits[0];
    for (size_t j = 1; j < classes; j++) max = fmaxf(max, logits[j]);
    double sum = 0;
    for (size_t j = 0; j < classes; j++) sum += exp((double)(logits[j] - max));
    double log_sum = log(sum);
    if (dz)
        for (size_t j = 0; j < classes; j++)
            dz[j] = scale * ((float)exp((double)(logits[j] - max) - log_sum) - (j == label ? 1.0f : 0.0f));
    return (float)(log_sum - (double)(logits[label] - max));
}

float ps_mlp_train_step(ps_mlp_t *m, const float *x, const uint8_t *y, size_t batch)
{
    size_t classes = m->dims[m->layers];
    if (batch == 0 || batch > m->max_batch) return NAN;
    for (size_t r = 0; r < batch; r++)
        if (y[r] >= classes) return NAN; /* a label the network has no class for */
    ps_mlp_forward(m, x, batch);
    double loss = 0;
    for (size_t r = 0; r < batch; r++)
        loss += ps_mlp_xent_row(m->act[m->layers] + r * classes, classes, y[r], 1.0f / (float)batch,
                                m->delta[m->layers] + r * classes);
    for (unsigned l = m->layers; l-- > 0;) {
        size_t in = m->dims[l], out = m->dims[l + 1];
        const float *a = l == 0 ? x : m->act[l];
        const float *dz = m->delta[l + 1];
        /* dW = dz^T a ; db = column sums of dz */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)batch, 1.0f, dz, (int)out, a,
                    (int)in, 0.0f, m->grad[2 * l], (int)in);
        float *db = m->grad[2 * l + 1];
        memset(db, 0, out * sizeof(float));
        for (size_t r = 0; r < batch; r++)
            for (size_t j = 0; j < out; j++) db[j] += dz[r * out + j];
        if (l == 0) break;
        /* da = dz W, then through the ReLU of layer l's output */
        float *da = m->delta[l];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)batch, (int)in, (int)out, 1.0f, dz, (int)out,
                    m->param[2 * l], (int)in, 0.0f, da, (int)in);
        for (size_t k = 0; k < batch * in; k++) da[k] = m->act[l][k] > 0.0f ? da[k] : 0.0f;
    }
    return (float)(loss / (double)batch);
}

size_t ps_mlp_evaluate(ps_mlp_t *m, const float *x, const uint8_t *y, size_t n, float *loss)
{
    size_t classes = m->dims[m->layers], correct = 0;
    double total = 0;
    for (size_t done = 0; done < n; done += m->max_batch) {
        size_t batch = n - done < m->max_batch ? n - done : m->max_batch;
        ps_mlp_forward(m, x + done * m->dims[0], batch);
        for (size_t r = 0; r < batch; r++) {
            const float *row = m->act[m->layers] + r * classes;
            size_t best = ps_mlp_argmax(row, classes);
            if (y[done + r] >= classes) { /* no such class: wrong, with infinite loss */
                total = INFINITY;
                continue;
            }
            correct += best == y[done + r];
            total += ps_mlp_xent_row(row, classes, y[done + r], 0.0f, NULL);
        }
    }
    if (loss) *loss = n ? (float)(total / (double)n) : 0.0f;
    return correct;
}
