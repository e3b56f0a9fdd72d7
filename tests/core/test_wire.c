/* Wire format: round trip, and rejection of every kind of malformed header. */
#include <criterion/criterion.h>
#include <string.h>

#include "wire.h"

static ps_wire_hdr_t sample(void)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_PUSH);
    h.flags = PS_WIRE_FLAG_RETRY;
    h.sender = 7;
    h.req_id = 0x0123456789abcdefull;
    h.key = 0xfedcba9876543210ull;
    h.chunk = 3;
    h.dtype = PSERV_DTYPE_FLOAT32;
    h.offset = 1ull << 40;
    h.length = 4096;
    h.round = 99;
    h.status = -5;
    h.map_version = 2;
    return h;
}

static pserv_status_t decode(const uint8_t *buf, size_t hdr_len, size_t payload, const char **why)
{
    ps_wire_hdr_t out;
    return ps_wire_decode(buf, hdr_len, payload, &out, why);
}

Test(wire, round_trip_keeps_every_field)
{
    ps_wire_hdr_t h = sample(), out;
    uint8_t buf[PS_WIRE_HDR_LEN];
    const char *why = NULL;
    ps_wire_encode(&h, buf);
    cr_assert_eq(ps_wire_decode(buf, sizeof(buf), 4096, &out, &why), PSERV_OK);
    cr_assert_eq(out.version, h.version);
    cr_assert_eq(out.type, h.type);
    cr_assert_eq(out.flags, h.flags);
    cr_assert_eq(out.sender, h.sender);
    cr_assert_eq(out.req_id, h.req_id);
    cr_assert_eq(out.key, h.key);
    cr_assert_eq(out.chunk, h.chunk);
    cr_assert_eq(out.dtype, h.dtype);
    cr_assert_eq(out.offset, h.offset);
    cr_assert_eq(out.length, h.length);
    cr_assert_eq(out.round, h.round);
    cr_assert_eq(out.status, h.status);
    cr_assert_eq(out.map_version, h.map_version);
}

Test(wire, encoding_is_little_endian)
{
    ps_wire_hdr_t h = sample();
    uint8_t buf[PS_WIRE_HDR_LEN];
    ps_wire_encode(&h, buf);
    cr_assert_eq(memcmp(buf, "PSRV", 4), 0);
    cr_assert_eq(buf[16], 0xef); /* low byte of req_id first */
}

Test(wire, rejects_truncated_header)
{
    ps_wire_hdr_t h = sample();
    uint8_t buf[PS_WIRE_HDR_LEN];
    const char *why;
    ps_wire_encode(&h, buf);
    for (size_t n = 0; n < PS_WIRE_HDR_LEN; n += 7) {
        cr_assert_eq(decode(buf, n, 4096, &why), PSERV_ERR_BAD_MESSAGE);
        cr_assert_str_eq(why, "truncated header");
    }
    cr_assert_eq(ps_wire_decode(NULL, 0, 0, &h, &why), PSERV_ERR_BAD_MESSAGE);
}

Test(wire, rejects_bad_magic)
{
    ps_wire_hdr_t h = sample();
    uint8_t buf[PS_WIRE_HDR_LEN];
    const char *why;
    ps_wire_encode(&h, buf);
    buf[0] ^= 0xff;
    cr_assert_eq(decode(buf, sizeof(buf), 4096, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_str_eq(why, "bad magic");
}

Test(wire, rejects_bad_version)
{
    ps_wire_hdr_t h = sample();
    uint8_t buf[PS_WIRE_HDR_LEN];
    const char *why;
    h.version = PS_WIRE_VERSION + 1;
    ps_wire_encode(&h, buf);
    cr_assert_eq(decode(buf, sizeof(buf), 4096, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_str_eq(why, "unsupported version");
}

Test(wire, rejects_unknown_type)
{
    ps_wire_hdr_t h = sample();
    uint8_t buf[PS_WIRE_HDR_LEN];
    const char *why;
    uint16_t types[] = {0, PS_MSG_TYPE_MAX, 0xffff};
    for (size_t i = 0; i < 3; i++) {
        h.type = types[i];
        ps_wire_encode(&h, buf);
        cr_assert_eq(decode(buf, sizeof(buf), 4096, &why), PSERV_ERR_BAD_MESSAGE);
        cr_assert_str_eq(why, "unknown message type");
    }
}

Test(wire, rejects_length_beyond_buffer)
{
    ps_wire_hdr_t h = sample();
    uint8_t buf[PS_WIRE_HDR_LEN];
    const char *why;
    ps_wire_encode(&h, buf);
    cr_assert_eq(decode(buf, sizeof(buf), 4095, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_str_eq(why, "length beyond buffer");
    cr_assert_eq(decode(buf, sizeof(buf), 8192, &why), PSERV_ERR_BAD_MESSAGE);
    h.length = UINT64_MAX;
    ps_wire_encode(&h, buf);
    cr_assert_eq(decode(buf, sizeof(buf), 4096, &why), PSERV_ERR_BAD_MESSAGE);
}

Test(wire, rejects_oversized_payload)
{
    ps_wire_hdr_t h = sample();
    uint8_t buf[PS_WIRE_HDR_LEN];
    const char *why;
    h.length = PS_WIRE_MAX_PAYLOAD + 4;
    ps_wire_encode(&h, buf);
    cr_assert_eq(decode(buf, sizeof(buf), (size_t)h.length, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_str_eq(why, "payload too large for its type");
}

/* Every type has its bound, checked before a receiver chooses a buffer: a non-push message with a
 * 256 MiB payload is refused by its header alone. */
Test(wire, payload_bounded_by_type)
{
    static const struct {
        ps_msg_type_t type;
        uint64_t max;
    } bounds[] = {
        {PS_MSG_PULL, 0},          {PS_MSG_BARRIER, 0},     {PS_MSG_HEARTBEAT, 0},
        {PS_MSG_HELLO, 0},         {PS_MSG_PUSH_REPLY, 0},  {PS_MSG_ABORT, PS_WIRE_REASON_MAX},
        {PS_MSG_LEAVE, PS_WIRE_REASON_MAX}, {PS_MSG_NODE_BCAST, PSERV_NODE_BROADCAST_MAX},
        {PS_MSG_TENSOR, 8 + PS_WIRE_TENSOR_DESC_MAX}, {PS_MSG_VIEW, PS_WIRE_VIEW_MAX},
    };
    uint8_t buf[PS_WIRE_HDR_LEN];
    ps_wire_hdr_t h, out;
    const char *why;
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        ps_wire_hdr_init(&h, bounds[i].type);
        h.length = bounds[i].max;
        ps_wire_encode(&h, buf);
        cr_assert_eq(ps_wire_decode(buf, sizeof(buf), (size_t)h.length, &out, &why), PSERV_OK, "%s at its bound",
                     ps_wire_type_name(bounds[i].type));
        h.length = bounds[i].max + 1;
        ps_wire_encode(&h, buf);
        cr_assert_eq(ps_wire_decode(buf, sizeof(buf), (size_t)h.length, &out, &why), PSERV_ERR_BAD_MESSAGE,
                     "%s one byte over", ps_wire_type_name(bounds[i].type));
        h.length = (uint64_t)256 << 20;
        ps_wire_encode(&h, buf);
        cr_assert_eq(ps_wire_decode(buf, sizeof(buf), (size_t)h.length, &out, &why), PSERV_ERR_BAD_MESSAGE,
                     "%s of 256 MiB", ps_wire_type_name(bounds[i].type));
    }
}

Test(wire, rejects_wrong_dtype_and_partial_elements)
{
    ps_wire_hdr_t h = sample();
    uint8_t buf[PS_WIRE_HDR_LEN];
    const char *why;
    h.dtype = 77;
    ps_wire_encode(&h, buf);
    cr_assert_eq(decode(buf, sizeof(buf), 4096, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_str_eq(why, "unknown dtype");
    h = sample();
    h.length = 4098;
    ps_wire_encode(&h, buf);
    cr_assert_eq(decode(buf, sizeof(buf), 4098, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_str_eq(why, "length not a whole number of elements");
}

Test(wire, control_messages_need_no_dtype)
{
    ps_wire_hdr_t h, out;
    uint8_t buf[PS_WIRE_HDR_LEN];
    ps_wire_hdr_init(&h, PS_MSG_BARRIER);
    h.round = 4;
    ps_wire_encode(&h, buf);
    cr_assert_eq(ps_wire_decode(buf, sizeof(buf), 0, &out, NULL), PSERV_OK);
    cr_assert_eq(out.round, 4);
    ps_wire_hdr_init(&h, PS_MSG_PULL_REPLY);
    h.status = PSERV_ERR_UNKNOWN_KEY; /* an error reply carries no values */
    ps_wire_encode(&h, buf);
    cr_assert_eq(ps_wire_decode(buf, sizeof(buf), 0, &out, NULL), PSERV_OK);
}

Test(wire, names_types)
{
    cr_assert_str_eq(ps_wire_type_name(PS_MSG_PUSH_PULL), "PUSH_PULL");
    cr_assert_str_eq(ps_wire_type_name(9999), "UNKNOWN");
}
