#include "tensor_desc.h"

#include <string.h>

#include "wire.h"

_Static_assert(PS_TENSOR_DESC_LEN <= PS_WIRE_TENSOR_DESC_MAX, "a descriptor must fit its bound");

void ps_tensor_desc_encode(const ps_tensor_desc_t *d, ps_writer_t *w)
{
    const pserv_optim_params_t *o = &d->optim;
    ps_put_u64(w, d->count);
    ps_put_u32(w, d->dtype);
    ps_put_u32(w, (uint32_t)o->type);
    ps_put_f32(w, o->lr);
    ps_put_f32(w, o->momentum);
    ps_put_u32(w, (uint32_t)o->nesterov);
    ps_put_f32(w, o->beta1);
    ps_put_f32(w, o->beta2);
    ps_put_f32(w, o->eps);
    ps_put_f32(w, o->weight_decay);
    ps_put_f32(w, o->clip_value);
    ps_put_f32(w, o->clip_norm);
}

pserv_status_t ps_tensor_desc_decode(ps_reader_t *r, ps_tensor_desc_t *d)
{
    pserv_optim_params_t o = PSERV_OPTIM_PARAMS_INIT;
    uint64_t count = ps_get_u64(r);
    uint32_t dtype = ps_get_u32(r);
    uint32_t type = ps_get_u32(r);
    o.lr = ps_get_f32(r);
    o.momentum = ps_get_f32(r);
    o.nesterov = ps_get_u32(r) != 0;
    o.beta1 = ps_get_f32(r);
    o.beta2 = ps_get_f32(r);
    o.eps = ps_get_f32(r);
    o.weight_decay = ps_get_f32(r);
    o.clip_value = ps_get_f32(r);
    o.clip_norm = ps_get_f32(r);
    if (r->bad || count == 0 || ps_dtype_size(dtype) == 0 || type >= PSERV_OPTIM_COUNT) return PSERV_ERR_BAD_MESSAGE;
    o.type = (pserv_optim_type_t)type;
    d->count = count;
    d->dtype = dtype;
    d->optim = o;
    return PSERV_OK;
}

int ps_tensor_desc_same(const ps_tensor_desc_t *a, const ps_tensor_desc_t *b)
{
    return ps_tensor_desc_diff(a, b) == NULL;
}

const char *ps_tensor_desc_diff(const ps_tensor_desc_t *a, const ps_tensor_desc_t *b)
{
    const pserv_optim_params_t *x = &a->optim, *y = &b->optim;
    /* Bitwise float comparison: the same settings must mean the same arithmetic everywhere. */
#define PS_DIFF_F32(f) if (memcmp(&x->f, &y->f, sizeof(float)) != 0) return #f
    if (a->count != b->count) return "count";
    if (a->dtype != b->dtype) return "dtype";
    if (x->type != y->type) return "optimizer";
    PS_DIFF_F32(lr);
    PS_DIFF_F32(momentum);
    if ((x->nesterov != 0) != (y->nesterov != 0)) return "nesterov";
    PS_DIFF_F32(beta1);
    PS_DIFF_F32(beta2);
    PS_DIFF_F32(eps);
    PS_DIFF_F32(weight_decay);
    PS_DIFF_F32(clip_value);
    PS_DIFF_F32(clip_norm);
#undef PS_DIFF_F32
    return NULL;
}

size_t ps_tensor_chunk_bytes(const ps_tensor_desc_t *d, size_t job_chunk_bytes)
{
    size_t whole = (size_t)d->count * ps_dtype_size(d->dtype);
    return d->optim.clip_norm > 0 && whole > job_chunk_bytes ? whole : job_chunk_bytes;
}
