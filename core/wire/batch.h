/*
 * BATCH: several chunk messages of one sender to one peer in one transport message.
 *
 * The BATCH header's round is the entry count and its payload the entries back to back, each a
 * PS_WIRE_HDR_LEN-byte encoded header followed by that header's `length` payload bytes. Only
 * data messages travel in a batch (requests PUSH, PULL, PUSH_PULL; replies PUSH_REPLY,
 * PULL_REPLY): never a control message, never a batch. A payload is a multiple of its element
 * size and headers are 72 bytes, so an entry's elements stay 4-byte aligned in an aligned buffer.
 *
 * ps_batch_decode decodes every entry once, up front, into the caller's array: a batch that is
 * damaged anywhere (truncated, an entry past the end, a nested batch, a control entry, a count
 * that does not match) is refused whole with a named reason, before any entry is used.
 */
#ifndef PS_BATCH_H
#define PS_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* The largest payload a sender puts in a batch: a bigger chunk goes alone (its copy into a batch
 * would cost more than the message it saves, and rendezvous moves it without a copy). */
#define PS_BATCH_ENTRY_MAX ((size_t)64 << 10)

/* One decoded entry: its header and where its payload starts in the batch's payload. */
typedef struct {
    ps_wire_hdr_t h;
    uint32_t off;
} ps_batch_entry_t;

/* Bit of a message type in an `allowed` mask. */
#define PS_BATCH_TYPE_BIT(t) (1u << (t))
#define PS_BATCH_REQUESTS                                                                                    \
    (PS_BATCH_TYPE_BIT(PS_MSG_PUSH) | PS_BATCH_TYPE_BIT(PS_MSG_PULL) | PS_BATCH_TYPE_BIT(PS_MSG_PUSH_PULL))
#define PS_BATCH_REPLIES (PS_BATCH_TYPE_BIT(PS_MSG_PUSH_REPLY) | PS_BATCH_TYPE_BIT(PS_MSG_PULL_REPLY))
/* Between servers: a primary's updates to a backup, a backup's acknowledgements. */
#define PS_BATCH_REPLICAS (PS_BATCH_TYPE_BIT(PS_MSG_REPLICATE) | PS_BATCH_TYPE_BIT(PS_MSG_REPLICATE_ACK))
_Static_assert(PS_MSG_REPLICATE_ACK < 32, "batchable types fit the mask");

/*
 * Decodes the entries of a batch whose (already decoded) header is outer and payload data/len.
 * Entry types must be in allowed; every entry's sender must be the batch's. Fills out[0..*n)
 * (out holds PS_WIRE_BATCH_MAX_ENTRIES). PSERV_ERR_BAD_MESSAGE with *why on any damage.
 */
pserv_status_t ps_batch_decode(const ps_wire_hdr_t *outer, const uint8_t *data, size_t len, uint32_t allowed,
                               ps_batch_entry_t *out, uint32_t *n, const char **why);

/* Calls fn for every entry's header of a batch this process built (its own bytes: trusted). */
void ps_batch_each(const uint8_t *data, size_t len, void (*fn)(void *arg, const ps_wire_hdr_t *h), void *arg);

/* A batch being filled in a caller's buffer. */
typedef struct {
    uint8_t *buf;
    size_t cap, len;
    uint32_t n;
} ps_batch_t;

void ps_batch_init(ps_batch_t *b, uint8_t *buf, size_t cap);
/* 1 if an entry with payload_len payload bytes still fits (bytes and entry count). */
int ps_batch_fits(const ps_batch_t *b, size_t payload_len);
/* Appends an entry (its length set to len); the caller checked ps_batch_fits. */
void ps_batch_add(ps_batch_t *b, const ps_wire_hdr_t *h, const void *payload, size_t len);
/* The BATCH header for what b holds. */
void ps_batch_hdr(const ps_batch_t *b, uint32_t sender, uint32_t map_version, ps_wire_hdr_t *h);

#endif
