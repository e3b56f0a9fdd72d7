#include "codec.h"

#include <string.h>

void ps_writer_init(ps_writer_t *w, void *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->overflow = 0;
}

static void ps_put_bytes(ps_writer_t *w, const void *p, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = 1;
        return;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void ps_put_u32(ps_writer_t *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    ps_put_bytes(w, b, sizeof(b));
}

void ps_put_u64(ps_writer_t *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    ps_put_bytes(w, b, sizeof(b));
}

void ps_put_f32(ps_writer_t *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof(u));
    ps_put_u32(w, u);
}

void ps_put_str(ps_writer_t *w, const char *s)
{
    size_t n = strlen(s);
    ps_put_u32(w, (uint32_t)n);
    ps_put_bytes(w, s, n);
}

void ps_reader_init(ps_reader_t *r, const void *buf, size_t len)
{
    r->buf = buf;
    r->len = buf ? len : 0;
    r->pos = 0;
    r->bad = 0;
}

static const uint8_t *ps_get_bytes(ps_reader_t *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->buf + r->pos;
    r->pos += n;
    return p;
}

uint32_t ps_get_u32(ps_reader_t *r)
{
    const uint8_t *p = ps_get_bytes(r, 4);
    uint32_t v = 0;
    for (int i = 3; p && i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

uint64_t ps_get_u64(ps_reader_t *r)
{
    const uint8_t *p = ps_get_bytes(r, 8);
    uint64_t v = 0;
    for (int i = 7; p && i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

float ps_get_f32(ps_reader_t *r)
{
    uint32_t u = ps_get_u32(r);
    float v;
    memcpy(&v, &u, sizeof(v));
    return v;
}

void ps_get_str(ps_reader_t *r, char *out, size_t cap)
{
    uint32_t n = ps_get_u32(r);
    const uint8_t *p = (n < cap) ? ps_get_bytes(r, n) : NULL;
    if (p == NULL) {
        r->bad = 1;
        if (cap) out[0] = '\0';
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}
