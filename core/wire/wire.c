#include "wire.h"

#include <string.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

void ps_wire_hdr_init(ps_wire_hdr_t *hdr, ps_msg_type_t type)
{
    memset(hdr, 0, sizeof(*hdr));
    hdr->version = PS_WIRE_VERSION;
    hdr->type = (uint16_t)type;
    hdr->sender = UINT32_MAX;
}

void ps_wire_encode(const ps_wire_hdr_t *h, uint8_t out[PS_WIRE_HDR_LEN])
{
    put32(out + 0, PS_WIRE_MAGIC);
    put16(out + 4, h->version);
    put16(out + 6, h->type);
    put32(out + 8, h->flags);
    put32(out + 12, h->sender);
    put64(out + 16, h->req_id);
    put64(out + 24, h->key);
    put32(out + 32, h->chunk);
    put32(out + 36, h->dtype);
    put64(out + 40, h->offset);
    put64(out + 48, h->length);
    put64(out + 56, h->round);
    put32(out + 64, (uint32_t)h->status);
    put32(out + 68, h->map_version);
}

size_t ps_dtype_size(uint32_t dtype)
{
    return dtype == PSERV_DTYPE_FLOAT32 ? 4 : 0;
}

/* Messages whose payload is tensor elements, and so needs a dtype and whole elements. */
static int ps_wire_carries_elements(const ps_wire_hdr_t *h)
{
    if (h->type == PS_MSG_PUSH || h->type == PS_MSG_PUSH_PULL) return 1;
    return h->type == PS_MSG_PULL_REPLY && h->status >= 0;
}

uint64_t ps_wire_max_payload(uint32_t type)
{
    switch (type) {
    case PS_MSG_JOIN: /* a rejoin carries the job and the view too */
    case PS_MSG_JOIN_REPLY:
    case PS_MSG_VIEW:
        return PS_WIRE_VIEW_MAX;
    case PS_MSG_LEAVE:
    case PS_MSG_ABORT:
    case PS_MSG_TENSOR_REPLY:
    case PS_MSG_REGISTER_REPLY: /* refused: why, in words */
    case PS_MSG_CHECKPOINT:
    case PS_MSG_DRAIN_REPLY:
        return PS_WIRE_REASON_MAX;
    case PS_MSG_NODE_BCAST:
    case PS_MSG_NODE_BCAST_REPLY:
        return PSERV_NODE_BROADCAST_MAX;
    case PS_MSG_TENSOR:
        return 8 + PS_WIRE_TENSOR_DESC_MAX;
    case PS_MSG_BATCH:
        return PS_WIRE_BATCH_MAX;
    case PS_MSG_REPLICATE:
    case PS_MSG_STATE:
    case PS_MSG_REGISTER:
    case PS_MSG_PUSH:
    case PS_MSG_PUSH_PULL:
    case PS_MSG_PULL_REPLY:
        return PS_WIRE_MAX_PAYLOAD; /* a chunk: the receiver checks the exact size against its view */
    default:
        return 0; /* requests and replies that are all header */
    }
}

pserv_status_t ps_wire_decode(const void *buf, size_t hdr_len, size_t payload_len, ps_wire_hdr_t *hdr,
                              const char **reason)
{
    const uint8_t *p = buf;
    ps_wire_hdr_t h;
    const char *why = NULL;

    if (buf == NULL || hdr_len < PS_WIRE_HDR_LEN) {
        why = "truncated header";
        goto err;
    }
    if (get32(p) != PS_WIRE_MAGIC) {
        why = "bad magic";
        goto err;
    }
    h.version = get16(p + 4);
    h.type = get16(p + 6);
    h.flags = get32(p + 8);
    h.sender = get32(p + 12);
    h.req_id = get64(p + 16);
    h.key = get64(p + 24);
    h.chunk = get32(p + 32);
    h.dtype = get32(p + 36);
    h.offset = get64(p + 40);
    h.length = get64(p + 48);
    h.round = get64(p + 56);
    h.status = (int32_t)get32(p + 64);
    h.map_version = get32(p + 68);

    if (h.version != PS_WIRE_VERSION) {
        why = "unsupported version";
    } else if (h.type == 0 || h.type >= PS_MSG_TYPE_MAX) {
        why = "unknown message type";
    } else if (h.length != payload_len) {
        why = h.length > payload_len ? "length beyond buffer" : "length shorter than payload";
    } else if (h.length > ps_wire_max_payload(h.type)) {
        why = "payload too large for its type";
    } else if (ps_wire_carries_elements(&h) && ps_dtype_size(h.dtype) == 0) {
        why = "unknown dtype";
    } else if (ps_wire_carries_elements(&h) && h.length % ps_dtype_size(h.dtype) != 0) {
        why = "length not a whole number of elements";
    }
    if (why) goto err;
    *hdr = h;
    return PSERV_OK;

err:
    if (reason) *reason = why;
    return PSERV_ERR_BAD_MESSAGE;
}

const char *ps_wire_type_name(uint32_t type)
{
    static const char *names[PS_MSG_TYPE_MAX] = {
        [PS_MSG_JOIN] = "JOIN",         [PS_MSG_JOIN_REPLY] = "JOIN_REPLY",
        [PS_MSG_BARRIER] = "BARRIER",   [PS_MSG_BARRIER_REPLY] = "BARRIER_REPLY",
        [PS_MSG_LEAVE] = "LEAVE",       [PS_MSG_LEAVE_REPLY] = "LEAVE_REPLY",
        [PS_MSG_SHUTDOWN] = "SHUTDOWN", [PS_MSG_HELLO] = "HELLO",
        [PS_MSG_HELLO_REPLY] = "HELLO_REPLY", [PS_MSG_REGISTER] = "REGISTER",
        [PS_MSG_REGISTER_REPLY] = "REGISTER_REPLY", [PS_MSG_PUSH] = "PUSH",
        [PS_MSG_PUSH_REPLY] = "PUSH_REPLY", [PS_MSG_PULL] = "PULL",
        [PS_MSG_PULL_REPLY] = "PULL_REPLY", [PS_MSG_PUSH_PULL] = "PUSH_PULL",
        [PS_MSG_NODE_BCAST] = "NODE_BCAST", [PS_MSG_NODE_BCAST_REPLY] = "NODE_BCAST_REPLY",
        [PS_MSG_HEARTBEAT] = "HEARTBEAT", [PS_MSG_VIEW] = "VIEW", [PS_MSG_ABORT] = "ABORT",
        [PS_MSG_TENSOR] = "TENSOR", [PS_MSG_TENSOR_REPLY] = "TENSOR_REPLY", [PS_MSG_BATCH] = "BATCH",
        [PS_MSG_ABORT_ACK] = "ABORT_ACK", [PS_MSG_CHECKPOINT] = "CHECKPOINT",
        [PS_MSG_REPLICATE] = "REPLICATE", [PS_MSG_REPLICATE_ACK] = "REPLICATE_ACK", [PS_MSG_STATE] = "STATE",
        [PS_MSG_SYNCED] = "SYNCED", [PS_MSG_DRAIN] = "DRAIN", [PS_MSG_DRAIN_REPLY] = "DRAIN_REPLY",
        [PS_MSG_CHECKPOINT_AT] = "CHECKPOINT_AT", [PS_MSG_READY] = "READY",
    };
    return type < PS_MSG_TYPE_MAX && names[type] ? names[type] : "UNKNOWN";
}
