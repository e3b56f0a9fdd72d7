#include "batch.h"

#include <string.h>

/* The entry's length field (bytes 48-55), read before the entry is decoded so the decoder is
 * handed exactly the payload the entry claims (and one that lies past the batch is refused). */
static uint64_t ps_batch_entry_len(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[48 + i];
    return v;
}

pserv_status_t ps_batch_decode(const ps_wire_hdr_t *outer, const uint8_t *data, size_t len, uint32_t allowed,
                               ps_batch_entry_t *out, uint32_t *n, const char **why)
{
    size_t pos = 0;
    uint32_t count = 0;
    *why = NULL;
    if (outer->round == 0 || outer->round > PS_WIRE_BATCH_MAX_ENTRIES) *why = "batch entry count out of range";
    else if (len > PS_WIRE_BATCH_MAX) *why = "batch larger than its bound";
    while (*why == NULL && pos < len) {
        const char *ewhy;
        if (count == outer->round) {
            *why = "batch holds more entries than it says";
            break;
        }
        if (len - pos < PS_WIRE_HDR_LEN) {
            *why = "batch entry truncated";
            break;
        }
        uint64_t elen = ps_batch_entry_len(data + pos);
        if (elen > len - pos - PS_WIRE_HDR_LEN) {
            *why = "batch entry length beyond the batch";
            break;
        }
        ps_batch_entry_t *e = &out[count];
        if (ps_wire_decode(data + pos, PS_WIRE_HDR_LEN, (size_t)elen, &e->h, &ewhy) < 0) {
            *why = ewhy; /* the entry's own damage, named by the header decoder */
            break;
        }
        if (e->h.type == PS_MSG_BATCH) *why = "nested batch";
        else if (e->h.type >= 32 || !(allowed & PS_BATCH_TYPE_BIT(e->h.type))) *why = "control message in a batch";
        else if (e->h.sender != outer->sender) *why = "batch entry from another sender";
        if (*why) break;
        e->off = (uint32_t)(pos + PS_WIRE_HDR_LEN);
        pos += PS_WIRE_HDR_LEN + (size_t)elen;
        count++;
    }
    if (*why == NULL && count != outer->round) *why = "batch holds fewer entries than it says";
    if (*why) return PSERV_ERR_BAD_MESSAGE;
    *n = count;
    return PSERV_OK;
}

void ps_batch_init(ps_batch_t *b, uint8_t *buf, size_t cap)
{
    b->buf = buf;
    b->cap = cap < PS_WIRE_BATCH_MAX ? cap : PS_WIRE_BATCH_MAX;
    b->len = 0;
    b->n = 0;
}

int ps_batch_fits(const ps_batch_t *b, size_t payload_len)
{
    return b->n < PS_WIRE_BATCH_MAX_ENTRIES && payload_len <= b->cap && b->len + PS_WIRE_HDR_LEN <= b->cap - payload_len;
}

void ps_batch_add(ps_batch_t *b, const ps_wire_hdr_t *h, const void *payload, size_t len)
{
    ps_wire_hdr_t e = *h;
    e.length = len;
    ps_wire_encode(&e, b->buf + b->len);
    if (len > 0) memcpy(b->buf + b->len + PS_WIRE_HDR_LEN, payload, len);
    b->len += PS_WIRE_HDR_LEN + len;
    b->n++;
}

void ps_batch_hdr(const ps_batch_t *b, uint32_t sender, uint32_t map_version, ps_wire_hdr_t *h)
{
    ps_wire_hdr_init(h, PS_MSG_BATCH);
    h->sender = sender;
    h->round = b->n;
    h->length = b->len;
    h->map_version = map_version;
}

void ps_batch_each(const uint8_t *data, size_t len, void (*fn)(void *arg, const ps_wire_hdr_t *h), void *arg)
{
    size_t pos = 0;
    while (len - pos >= PS_WIRE_HDR_LEN) {
        ps_wire_hdr_t h;
        const char *why;
        uint64_t elen = ps_batch_entry_len(data + pos);
        if (elen > len - pos - PS_WIRE_HDR_LEN || ps_wire_decode(data + pos, PS_WIRE_HDR_LEN, (size_t)elen, &h, &why) < 0)
            return;
        fn(arg, &h);
        pos += PS_WIRE_HDR_LEN + (size_t)elen;
    }
}
