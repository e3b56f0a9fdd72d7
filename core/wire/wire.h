/*
 * The wire format: a fixed, versioned, little-endian message header followed by an optional
 * payload. The header travels as the transport's header bytes, the payload as its data.
 *
 * Decoding validates everything the header says about itself (size, magic, version, type,
 * dtype, length against the payload actually received); the receiver then checks key, chunk,
 * offset and length against its own state (ps_wire_check_chunk). Nothing in a header is used
 * before it is checked.
 */
#ifndef PS_WIRE_H
#define PS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv.h"

#define PS_WIRE_MAGIC 0x56525350u /* "PSRV" read as little-endian bytes */
#define PS_WIRE_VERSION 6 /* 3: the cluster view, heartbeats, ABORT, placement; 4: BATCH; 5: checkpoints;
                             6: servers join and drain (addresses and moves in the view) */
#define PS_WIRE_HDR_LEN 72
/* Largest payload any message may carry: bounds what a peer can make us allocate. */
#define PS_WIRE_MAX_PAYLOAD ((uint64_t)1 << 31)
/* Bounds of the control payloads (ps_wire_max_payload): a JOIN's strings, a view, a descriptor. */
#define PS_WIRE_JOIN_MAX 2048
#define PS_WIRE_VIEW_MAX ((uint64_t)64 << 20)
#define PS_WIRE_TENSOR_DESC_MAX 64
/* A BATCH's payload (its entries, headers included) and its entry count (batch.h). */
#define PS_WIRE_BATCH_MAX ((uint64_t)256 << 10)
#define PS_WIRE_BATCH_MAX_ENTRIES 1024u

typedef enum {
    PS_MSG_JOIN = 1,       /* server/worker -> coordinator: role, address, wanted rank */
    PS_MSG_JOIN_REPLY,     /* coordinator -> member: rank, job, server list */
    PS_MSG_BARRIER,        /* worker -> coordinator, round = barrier sequence */
    PS_MSG_BARRIER_REPLY,
    PS_MSG_LEAVE,          /* worker -> coordinator (and servers): done with the job */
    PS_MSG_LEAVE_REPLY,
    PS_MSG_SHUTDOWN,       /* coordinator -> server: the job is over */
    PS_MSG_HELLO,          /* worker -> server: here is my rank */
    PS_MSG_HELLO_REPLY,
    PS_MSG_REGISTER,       /* worker -> server: define one chunk (descriptor + initial values) */
    PS_MSG_REGISTER_REPLY,
    PS_MSG_PUSH,           /* worker -> server: gradient of one chunk for round `round` */
    PS_MSG_PUSH_REPLY,
    PS_MSG_PULL,           /* worker -> server: values of one chunk after round `round` */
    PS_MSG_PULL_REPLY,     /* server -> worker: the values (payload) or an error status */
    PS_MSG_PUSH_PULL,      /* push, then pull of the result: answered by PULL_REPLY */
    PS_MSG_NODE_BCAST,     /* worker -> coordinator: node-group broadcast `round` (local rank 0 sends the bytes) */
    PS_MSG_NODE_BCAST_REPLY, /* coordinator -> worker: local rank 0's bytes */
    PS_MSG_HEARTBEAT,      /* member <-> coordinator, both ways: alive; map_version = the sender's view */
    PS_MSG_VIEW,           /* coordinator -> member: a new cluster view (payload), map_version = its version */
    PS_MSG_ABORT,          /* coordinator -> member: the job failed; payload = why, in words */
    PS_MSG_TENSOR,         /* worker -> coordinator: place (or check) a tensor: key + descriptor */
    PS_MSG_TENSOR_REPLY,   /* coordinator -> worker: round = the view version that has it; payload = why on error */
    PS_MSG_BATCH,          /* worker <-> server: round = entry count; payload = entries, each a header + its payload (batch.h) */
    PS_MSG_ABORT_ACK,      /* member -> coordinator: the ABORT arrived (the coordinator may close now) */
    PS_MSG_CHECKPOINT,     /* server -> coordinator: round `round` is written (status: or why not, payload = why) */
    PS_MSG_REPLICATE,      /* primary -> backup: apply this update to the chunk at round `round` (payload: replica.h) */
    PS_MSG_REPLICATE_ACK,  /* backup -> primary: the chunk is at round `round` (status STALE: it is not; send STATE) */
    PS_MSG_STATE,          /* primary -> backup: the chunk's whole state at round `round` (payload: replica.h) */
    PS_MSG_SYNCED,         /* server -> coordinator: its copy of key/chunk holds the chunk's state (a move may finish) */
    PS_MSG_DRAIN,          /* operator -> coordinator: move every copy off server `chunk`, then let it leave */
    PS_MSG_DRAIN_REPLY,    /* coordinator -> operator: the server left (or status, payload = why not) */
    PS_MSG_CHECKPOINT_AT,  /* coordinator -> server: checkpoint at round `round` (time-based checkpoints) */
    PS_MSG_READY,          /* server -> coordinator: set up to serve (one that joined a running job takes chunks now) */
    PS_MSG_TYPE_MAX
} ps_msg_type_t;

/* Flags (per message): room for later features (compression, retries) without a new version. */
#define PS_WIRE_FLAG_RETRY 0x1u
#define PS_WIRE_FLAG_FAILED 0x2u /* LEAVE: the worker cannot go on (payload = why); the job's policy applies */
#define PS_WIRE_FLAG_CAUSED 0x4u
#define PS_WIRE_FLAG_REJOIN 0x10u /* JOIN: a restarted worker takes a dead worker's place in a running job */
#define PS_WIRE_FLAG_SERVER 0x8u /* HELLO: from a server (a primary to its backup), sender = its server rank */ /* LEAVE, with FAILED: because another member died (the root cause is elsewhere) */
/* Largest text an ABORT, a failed LEAVE or a refused TENSOR carries. */
#define PS_WIRE_REASON_MAX 512

typedef struct {
    uint16_t version;
    uint16_t type;         /* ps_msg_type_t */
    uint32_t flags;
    uint32_t sender;       /* rank of the sender in its role (UINT32_MAX before it has one) */
    uint64_t req_id;       /* sender's request id: replies carry it back; retries reuse it */
    uint64_t key;          /* tensor key */
    uint32_t chunk;        /* chunk index within the tensor */
    uint32_t dtype;        /* pserv_dtype_t of the payload, 0 for control messages */
    uint64_t offset;       /* element offset of the chunk within the tensor */
    uint64_t length;       /* payload bytes */
    uint64_t round;        /* sync round / clock / barrier sequence */
    int32_t status;        /* replies: pserv_status_t of the request */
    uint32_t map_version;  /* cluster view version the sender routed by (or, from the coordinator, sends) */
} ps_wire_hdr_t;

/* Initializes a header of a type with every other field zero. */
void ps_wire_hdr_init(ps_wire_hdr_t *hdr, ps_msg_type_t type);
/* Writes the header's PS_WIRE_HDR_LEN bytes. */
void ps_wire_encode(const ps_wire_hdr_t *hdr, uint8_t out[PS_WIRE_HDR_LEN]);
/*
 * Decodes and validates a header of hdr_len bytes that came with payload_len payload bytes.
 * Sets *reason to a static text naming what is wrong on error (PSERV_ERR_BAD_MESSAGE).
 */
pserv_status_t ps_wire_decode(const void *buf, size_t hdr_len, size_t payload_len, ps_wire_hdr_t *hdr,
                              const char **reason);
/*
 * The most payload a message of this type may carry. ps_wire_decode refuses more, so a receiver
 * that decodes before it chooses a buffer never allocates for a payload it does not expect.
 */
uint64_t ps_wire_max_payload(uint32_t type);
/* Name of a message type, for logs. */
const char *ps_wire_type_name(uint32_t type);
/* Bytes of one element of a dtype, 0 if unknown. */
size_t ps_dtype_size(uint32_t dtype);

#endif
