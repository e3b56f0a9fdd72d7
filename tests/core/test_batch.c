/* BATCH payloads: entries decoded once and in order; every kind of damage refused whole, named. */
#include <criterion/criterion.h>
#include <string.h>

#include "batch.h"

static ps_batch_entry_t ents[PS_WIRE_BATCH_MAX_ENTRIES];
static uint8_t buf[8192] __attribute__((aligned(64)));

static ps_wire_hdr_t entry(ps_msg_type_t type, uint32_t chunk, uint64_t len)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, type);
    h.sender = 3;
    h.req_id = 100 + chunk;
    h.key = 9;
    h.chunk = chunk;
    h.dtype = type == PS_MSG_PULL ? 0 : PSERV_DTYPE_FLOAT32;
    h.length = len;
    return h;
}

/* Writes header + len payload bytes (value fill) at buf + pos by hand; returns the new end. */
static size_t put(size_t pos, const ps_wire_hdr_t *h, size_t len, uint8_t fill)
{
    ps_wire_encode(h, buf + pos);
    memset(buf + pos + PS_WIRE_HDR_LEN, fill, len);
    return pos + PS_WIRE_HDR_LEN + len;
}

static ps_wire_hdr_t outer(uint64_t count, size_t len)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_BATCH);
    h.sender = 3;
    h.round = count;
    h.length = len;
    return h;
}

static const char *refused(uint64_t count, size_t len)
{
    ps_wire_hdr_t o = outer(count, len);
    const char *why = NULL;
    uint32_t n = 77;
    cr_assert_eq(ps_batch_decode(&o, buf, len, PS_BATCH_REQUESTS, ents, &n, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_eq(n, 77, "nothing is handed out of a refused batch");
    cr_assert_not_null(why);
    return why;
}

Test(batch, entries_come_back_in_order_with_their_payloads)
{
    ps_wire_hdr_t a = entry(PS_MSG_PUSH, 0, 16), b = entry(PS_MSG_PULL, 1, 0), c = entry(PS_MSG_PUSH_PULL, 2, 8);
    size_t end = put(0, &a, 16, 0xaa);
    end = put(end, &b, 0, 0);
    end = put(end, &c, 8, 0xcc);
    ps_wire_hdr_t o = outer(3, end);
    const char *why = NULL;
    uint32_t n = 0;
    cr_assert_eq(ps_batch_decode(&o, buf, end, PS_BATCH_REQUESTS, ents, &n, &why), PSERV_OK, "%s", why);
    cr_assert_eq(n, 3);
    cr_assert_eq(ents[0].h.type, PS_MSG_PUSH);
    cr_assert_eq(ents[0].off, PS_WIRE_HDR_LEN);
    cr_assert_eq(buf[ents[0].off], 0xaa);
    cr_assert_eq(ents[1].h.type, PS_MSG_PULL);
    cr_assert_eq(ents[1].h.req_id, 101);
    cr_assert_eq(ents[2].h.length, 8);
    cr_assert_eq(ents[2].off, 3 * PS_WIRE_HDR_LEN + 16);
    cr_assert_eq(buf[ents[2].off + 7], 0xcc);
    cr_assert_eq(ents[2].off % 4, 0, "elements stay aligned");
}

Test(batch, builder_writes_what_the_decoder_reads)
{
    ps_batch_t b;
    float vals[5] = {1, 2, 3, 4, 5};
    ps_batch_init(&b, buf, 2 * PS_WIRE_HDR_LEN + sizeof(vals) + 4);
    ps_wire_hdr_t a = entry(PS_MSG_PUSH_REPLY, 0, 0), v = entry(PS_MSG_PULL_REPLY, 1, 0);
    cr_assert(ps_batch_fits(&b, 0));
    ps_batch_add(&b, &a, NULL, 0);
    cr_assert(ps_batch_fits(&b, sizeof(vals)));
    ps_batch_add(&b, &v, vals, sizeof(vals));
    cr_assert_not(ps_batch_fits(&b, 0), "4 bytes left: no room for another header");
    ps_wire_hdr_t o;
    ps_batch_hdr(&b, 3, 5, &o);
    cr_assert_eq(o.round, 2);
    cr_assert_eq(o.length, 2 * PS_WIRE_HDR_LEN + sizeof(vals));
    const char *why = NULL;
    uint32_t n = 0;
    cr_assert_eq(ps_batch_decode(&o, buf, b.len, PS_BATCH_REPLIES, ents, &n, &why), PSERV_OK, "%s", why);
    cr_assert_eq(n, 2);
    cr_assert_eq(ents[1].h.length, sizeof(vals));
    cr_assert_eq(memcmp(buf + ents[1].off, vals, sizeof(vals)), 0);
    /* Replies are not requests: the server's mask refuses them. */
    cr_assert_eq(ps_batch_decode(&o, buf, b.len, PS_BATCH_REQUESTS, ents, &n, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_str_eq(why, "control message in a batch");
}

Test(batch, refuses_a_truncated_entry)
{
    ps_wire_hdr_t a = entry(PS_MSG_PUSH, 0, 16);
    size_t end = put(0, &a, 16, 1);
    cr_assert_str_eq(refused(2, end + 40), "batch entry truncated"); /* 40 bytes of a second header */
}

Test(batch, refuses_an_entry_longer_than_the_batch)
{
    ps_wire_hdr_t a = entry(PS_MSG_PUSH, 0, 16), b = entry(PS_MSG_PUSH, 1, 1024);
    size_t end = put(0, &a, 16, 1);
    end = put(end, &b, 16, 2); /* says 1024, carries 16 */
    cr_assert_str_eq(refused(2, end), "batch entry length beyond the batch");
    b.length = UINT64_MAX - 10; /* and one whose length would wrap a sum */
    put(PS_WIRE_HDR_LEN + 16, &b, 16, 2);
    cr_assert_str_eq(refused(2, end), "batch entry length beyond the batch");
}

Test(batch, refuses_a_nested_batch)
{
    ps_wire_hdr_t a = entry(PS_MSG_PUSH, 0, 16), inner = outer(1, PS_WIRE_HDR_LEN + 16);
    size_t end = put(0, &a, 16, 1);
    end = put(end, &inner, 0, 0);
    end = put(end, &a, 16, 3); /* the inner batch's entry: the inner batch is well formed */
    cr_assert_str_eq(refused(2, end), "nested batch");
}

Test(batch, refuses_control_messages)
{
    ps_msg_type_t types[] = {PS_MSG_JOIN, PS_MSG_HELLO, PS_MSG_REGISTER, PS_MSG_HEARTBEAT, PS_MSG_ABORT,
                             PS_MSG_PUSH_REPLY};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        ps_wire_hdr_t a = entry(PS_MSG_PUSH, 0, 16), c = entry(types[i], 1, 0);
        c.dtype = 0;
        size_t end = put(0, &a, 16, 1);
        end = put(end, &c, 0, 0);
        cr_assert_str_eq(refused(2, end), "control message in a batch", "type %d", types[i]);
    }
}

Test(batch, refuses_wrong_counts_senders_and_damaged_entries)
{
    ps_wire_hdr_t a = entry(PS_MSG_PUSH, 0, 16), b = entry(PS_MSG_PUSH, 1, 16);
    size_t end = put(0, &a, 16, 1);
    end = put(end, &b, 16, 1);
    cr_assert_str_eq(refused(3, end), "batch holds fewer entries than it says");
    cr_assert_str_eq(refused(1, end), "batch holds more entries than it says");
    cr_assert_str_eq(refused(0, end), "batch entry count out of range");
    cr_assert_str_eq(refused(PS_WIRE_BATCH_MAX_ENTRIES + 1, end), "batch entry count out of range");
    b.sender = 4;
    put(PS_WIRE_HDR_LEN + 16, &b, 16, 1);
    cr_assert_str_eq(refused(2, end), "batch entry from another sender");
    b.sender = 3;
    b.length = 14; /* not whole floats */
    put(PS_WIRE_HDR_LEN + 16, &b, 14, 1);
    cr_assert_str_eq(refused(2, end - 2), "length not a whole number of elements");
    put(PS_WIRE_HDR_LEN + 16, &b, 14, 1);
    memcpy(buf + PS_WIRE_HDR_LEN + 16, "XXXX", 4);
    cr_assert_str_eq(refused(2, end - 2), "bad magic");
}

Test(batch, bound_is_part_of_the_header_check)
{
    cr_assert_eq(ps_wire_max_payload(PS_MSG_BATCH), PS_WIRE_BATCH_MAX);
    ps_wire_hdr_t o = outer(1, PS_WIRE_BATCH_MAX + 4);
    uint8_t hdr[PS_WIRE_HDR_LEN];
    ps_wire_hdr_t out;
    const char *why = NULL;
    ps_wire_encode(&o, hdr);
    cr_assert_eq(ps_wire_decode(hdr, sizeof(hdr), PS_WIRE_BATCH_MAX + 4, &out, &why), PSERV_ERR_BAD_MESSAGE);
    cr_assert_str_eq(why, "payload too large for its type");
}
