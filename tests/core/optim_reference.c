#include "optim_reference.h"

#include <math.h>

static double optim_ref_clamp(double g, float clip_value)
{
    if (clip_value <= 0.0f) return g;
    if (g > clip_value) return clip_value;
    if (g < -clip_value) return -clip_value;
    return g;
}

double optim_ref_norm(const float *grad, size_t n, float clip_value)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double g = optim_ref_clamp(grad[i], clip_value);
        sum += g * g;
    }
    return sqrt(sum);
}

void optim_ref_step(const pserv_optim_params_t *p, uint64_t t, float *param, const float *grad,
                    float *s0, float *s1, size_t n)
{
    double scale = 1.0;
    if (p->clip_norm > 0.0f) {
        double norm = optim_ref_norm(grad, n, p->clip_value);
        if (norm > p->clip_norm) scale = p->clip_norm / norm;
    }
    const double lr = p->lr, wd = p->weight_decay, mu = p->momentum;
    const double b1 = p->beta1, b2 = p->beta2, eps = p->eps;

    for (size_t i = 0; i < n; i++) {
        double g = optim_ref_clamp(grad[i], p->clip_value) * scale;
        double w = param[i];
        switch (p->type) {
        case PSERV_OPTIM_SGD:
            g += wd * w;
            w -= lr * g;
            break;
        case PSERV_OPTIM_MOMENTUM: {
            g += wd * w;
            double v = mu * s0[i] + g;
            s0[i] = (float)v;
            w -= p->nesterov ? lr * (g + mu * v) : lr * v;
            break;
        }
        case PSERV_OPTIM_ADAM:
        case PSERV_OPTIM_ADAMW: {
            if (p->type == PSERV_OPTIM_ADAMW)
                w *= 1.0 - lr * wd;
            else
                g += wd * w;
            double m = b1 * s0[i] + (1.0 - b1) * g;
            double v = b2 * s1[i] + (1.0 - b2) * g * g;
            s0[i] = (float)m;
            s1[i] = (float)v;
            double mhat = m / (1.0 - pow(b1, (double)t));
            double vhat = v / (1.0 - pow(b2, (double)t));
            w -= lr * mhat / (sqrt(vhat) + eps);
            break;
        }
        case PSERV_OPTIM_ADAGRAD: {
            g += wd * w;
            double s = s0[i] + g * g;
            s0[i] = (float)s;
            w -= lr * g / (sqrt(s) + eps);
            break;
        }
        default:
            break;
        }
        param[i] = (float)w;
    }
}
