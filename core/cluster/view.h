/*
 * The cluster view: one versioned description of who is in the job and who owns what.
 *
 * - Members: every server and worker rank with its state (joining, live, suspect, dead, leaving,
 *   left). Node groups of workers come from the job description and do not change.
 * - Placement: for every registered tensor, its chunk geometry and, for every chunk, its owners
 *   (a primary and `replicas` backups, all distinct servers).
 *
 * The coordinator owns the view and is the only one that changes it; each change bumps the
 * version and the whole view is sent to every member, which decodes it into a fresh ps_view_t
 * and swaps it in (installs it atomically). Every data message carries the version it was
 * routed by; see docs/design.md for the rules a shard applies.
 *
 * Placement is a table the coordinator computes, not a formula: a tensor is cut into chunks of
 * at most the job's chunk size, and a tensor large enough to matter into a multiple of the live
 * server count, so it spreads evenly; each chunk goes to the server with the least load, where
 * load counts bytes and a fixed cost per chunk (every chunk is a message per worker and round).
 * Adding or removing a server moves only the chunks needed to rebalance.
 *
 * Moving a chunk is never a switch of owners alone: a move (from, to) is first recorded in the
 * view, and the primary treats `to` as one more backup (it gets the chunk's whole state, then
 * every update); once `to` reports its copy in sync, the coordinator replaces `from` by `to` among
 * the owners in a new view. So the new owner holds every update acknowledged before the switch.
 * A server joining gets the chunks that balance the load; a server drained (state LEAVING) keeps
 * serving what it holds until every copy it held has moved, then leaves.
 */
#ifndef PS_VIEW_H
#define PS_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "job.h"
#include "keymap.h"
#include "tensor_desc.h"

typedef enum {
    PS_MEMBER_JOINING = 0,
    PS_MEMBER_LIVE,
    PS_MEMBER_SUSPECT, /* missed heartbeats, not yet declared dead */
    PS_MEMBER_DEAD,
    PS_MEMBER_LEAVING, /* a server being drained: it serves what it holds and takes nothing new */
    PS_MEMBER_LEFT,
    PS_MEMBER_STATE_MAX
} ps_member_state_t;

/* What one chunk costs in load beside its bytes: a message per worker and round. */
#define PS_VIEW_CHUNK_COST_BYTES ((uint64_t)16 << 10)
/* Tensors below (live servers x this) stay whole: splitting them only adds messages. */
#define PS_VIEW_MIN_SPLIT_BYTES 1024u
/* Chunks one tensor may have: beyond this the chunk size is absurd for the tensor. */
#define PS_VIEW_MAX_CHUNKS 65536u
/* Servers and workers a view may describe (bounds what a VIEW message can make us allocate). */
#define PS_VIEW_MAX_SERVERS 4096u
#define PS_VIEW_MAX_WORKERS 65536u
#define PS_VIEW_MAX_REPLICAS 7u

typedef struct {
    uint64_t key;
    ps_tensor_desc_t desc;
    uint64_t chunk_elems;
    uint32_t num_chunks;
    uint32_t *owners; /* num_chunks x (replicas + 1): owners[c * (replicas + 1)] is the primary */
    uint32_t *moves;  /* num_chunks x 2: a move in progress (from, to), or UINT32_MAX twice */
} ps_view_tensor_t;

typedef struct {
    uint32_t version;
    uint32_t num_servers, num_workers, replicas;
    uint8_t *server_state; /* ps_member_state_t by server rank */
    uint8_t *worker_state; /* by worker rank */
    char (*addrs)[PS_ADDR_MAX]; /* by server rank: where workers and servers reach it ("" unknown) */
    uint32_t num_moves;    /* chunk moves in progress */
    ps_view_tensor_t *tensors;
    uint32_t num_tensors, cap_tensors;
    ps_keymap_t index;     /* key -> its index in tensors, plus one, as a pointer (never NULL) */
    uint64_t *load_bytes;  /* per server: bytes of the chunks it is primary of */
    uint64_t *load_chunks; /* per server: chunks it is primary of */
} ps_view_t;

/* A view of version 1 with every member joining and no tensors. */
pserv_status_t ps_view_init(ps_view_t *v, uint32_t num_servers, uint32_t num_workers, uint32_t replicas);
void ps_view_free(ps_view_t *v);

/* The tensor of a key, or NULL. */
const ps_view_tensor_t *ps_view_tensor(const ps_view_t *v, uint64_t key);
/* Bytes of chunk c (< num_chunks) of a tensor: chunk_elems elements, the last one shorter. */
uint64_t ps_view_chunk_bytes(const ps_view_tensor_t *t, uint32_t c);
/* The primary of chunk c of key, or UINT32_MAX when the key or chunk is not in the view. */
uint32_t ps_view_owner(const ps_view_t *v, uint64_t key, uint32_t c);
/* 1 when server is the primary or a backup of chunk c of key. */
int ps_view_holds(const ps_view_t *v, uint64_t key, uint32_t c, uint32_t server);
/* Servers that take new chunks (LIVE or SUSPECT; not dead, not being drained). */
uint32_t ps_view_live_servers(const ps_view_t *v);
/* A member still in the job: LIVE or SUSPECT (not yet declared dead), or a server being drained. */
int ps_view_member_alive(uint8_t state);
/* The server a move brings chunk c of key to, or UINT32_MAX when the chunk is not moving. */
uint32_t ps_view_move_to(const ps_view_t *v, uint64_t key, uint32_t c);

/*
 * Places a new tensor (the version is not changed; the caller bumps it once per change).
 * job_chunk_bytes caps a chunk; a tensor clipped by norm stays one chunk. PSERV_ERR_EXISTS if
 * the key is placed already, PSERV_ERR_INVALID_ARG (and *why) if its chunks would exceed
 * PS_VIEW_MAX_CHUNKS or no server is live.
 */
pserv_status_t ps_view_place(ps_view_t *v, uint64_t key, const ps_tensor_desc_t *desc, uint64_t job_chunk_bytes,
                             const char **why);
/*
 * Server s is gone: its chunks go to the least-loaded live servers (their state is lost until
 * replication exists). Returns the number of chunks moved.
 */
uint32_t ps_view_remove_server(ps_view_t *v, uint32_t s);
/*
 * Server s died in a job with backups: for every chunk it held, a live backup takes its place
 * (the first, when s was the primary) and a live server that holds no copy becomes a new backup
 * (its state is rebuilt by the primary); with none left, the copies coincide. Returns the chunks
 * left with no live copy at all (their state is lost: the job cannot go on).
 */
uint32_t ps_view_fail_server(ps_view_t *v, uint32_t s);
/* The chunks of which server s holds the only live copy. */
uint32_t ps_view_sole_copies(const ps_view_t *v, uint32_t s);
/* A new server at address addr joins as rank num_servers, JOINING (holding nothing, taking no
 * chunk until it is LIVE); the rank, or UINT32_MAX when the view is full or out of memory. */
uint32_t ps_view_add_server(ps_view_t *v, const char *addr);
/* Bytes of the chunks moving now (the moves in the view). */
uint64_t ps_view_moving_bytes(const ps_view_t *v);
/*
 * Plans moves of primaries to server `to` (a server that just joined) from the most loaded
 * servers, while each lowers the maximum load and the chunks moving stay within `budget` bytes
 * (one move at least: a chunk larger than the budget moves alone); chunks already moving stay
 * put. Returns the number planned (the load counts them as done).
 */
uint32_t ps_view_plan_balance(ps_view_t *v, uint32_t to, uint64_t budget);
/* 1 if a move to `to` would still lower the maximum load (what plan_balance would start next). */
int ps_view_unbalanced(const ps_view_t *v, uint32_t to);
/*
 * Plans a move for copies server s (LEAVING) holds that are not moving yet, while the chunks
 * moving stay within `budget` bytes (one move at least), each to the least-loaded server that
 * takes chunks and holds no copy of it. Returns the copies s still holds (moving or not);
 * *stuck counts those with nowhere to go.
 */
uint32_t ps_view_plan_drain(ps_view_t *v, uint32_t s, uint64_t budget, uint32_t *stuck);
/*
 * Server `to` holds chunk c of key in sync: it replaces the move's `from` among the owners, and
 * the move ends. 0 (nothing changed) when no such move is in progress.
 */
int ps_view_finish_move(ps_view_t *v, uint64_t key, uint32_t c, uint32_t to);
/* Server s failed: the moves from or to it end (to it: its planned load returns). Returns how many. */
uint32_t ps_view_cancel_moves(ps_view_t *v, uint32_t s);
/* Copies (primary or backup) server s holds. */
uint32_t ps_view_copies(const ps_view_t *v, uint32_t s);

/* The whole view as bytes (the VIEW message's payload). */
void ps_view_encode(const ps_view_t *v, ps_writer_t *w);
/* Exact size of ps_view_encode's output. */
size_t ps_view_encoded_size(const ps_view_t *v);
/*
 * Reads a view into a fresh *v (freed with ps_view_free). Validates every count against the
 * payload, every state and owner, and every tensor's geometry; PSERV_ERR_BAD_MESSAGE otherwise.
 */
pserv_status_t ps_view_decode(ps_reader_t *r, ps_view_t *v);

#endif
