#include "view.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

pserv_status_t ps_view_init(ps_view_t *v, uint32_t num_servers, uint32_t num_workers, uint32_t replicas)
{
    memset(v, 0, sizeof(*v));
    if (num_servers == 0 || num_servers > PS_VIEW_MAX_SERVERS || num_workers > PS_VIEW_MAX_WORKERS ||
        replicas > PS_VIEW_MAX_REPLICAS)
        return PSERV_ERR_INVALID_ARG;
    v->version = 1;
    v->num_servers = num_servers;
    v->num_workers = num_workers;
    v->replicas = replicas;
    ps_keymap_init(&v->index);
    v->server_state = calloc(num_servers, 1);
    v->worker_state = calloc(num_workers ? num_workers : 1, 1);
    v->load_bytes = calloc(num_servers, sizeof(*v->load_bytes));
    v->load_chunks = calloc(num_servers, sizeof(*v->load_chunks));
    v->addrs = calloc(num_servers, sizeof(*v->addrs));
    if (v->server_state == NULL || v->worker_state == NULL || v->load_bytes == NULL || v->load_chunks == NULL ||
        v->addrs == NULL) {
        ps_view_free(v);
        return PSERV_ERR_NO_MEMORY;
    }
    return PSERV_OK;
}

void ps_view_free(ps_view_t *v)
{
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        free(v->tensors[i].owners);
        free(v->tensors[i].moves);
    }
    free(v->tensors);
    free(v->addrs);
    ps_keymap_fini(&v->index);
    free(v->server_state);
    free(v->worker_state);
    free(v->load_bytes);
    free(v->load_chunks);
    memset(v, 0, sizeof(*v));
}

const ps_view_tensor_t *ps_view_tensor(const ps_view_t *v, uint64_t key)
{
    uintptr_t i = (uintptr_t)ps_keymap_get(&v->index, key);
    return i ? &v->tensors[i - 1] : NULL;
}

uint32_t ps_view_owner(const ps_view_t *v, uint64_t key, uint32_t c)
{
    const ps_view_tensor_t *t = ps_view_tensor(v, key);
    return t && c < t->num_chunks ? t->owners[(size_t)c * (v->replicas + 1)] : UINT32_MAX;
}

int ps_view_holds(const ps_view_t *v, uint64_t key, uint32_t c, uint32_t server)
{
    const ps_view_tensor_t *t = ps_view_tensor(v, key);
    if (t == NULL || c >= t->num_chunks) return 0;
    for (uint32_t r = 0; r <= v->replicas; r++)
        if (t->owners[(size_t)c * (v->replicas + 1) + r] == server) return 1;
    return 0;
}

int ps_view_member_alive(uint8_t state)
{
    return state == PS_MEMBER_LIVE || state == PS_MEMBER_SUSPECT || state == PS_MEMBER_LEAVING;
}

/* A server that new chunks and moved copies may go to: alive and not being drained. */
static int ps_view_takes_chunks(uint8_t state)
{
    return state == PS_MEMBER_LIVE || state == PS_MEMBER_SUSPECT;
}

uint32_t ps_view_live_servers(const ps_view_t *v)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < v->num_servers; s++) n += ps_view_takes_chunks(v->server_state[s]);
    return n;
}

uint32_t ps_view_move_to(const ps_view_t *v, uint64_t key, uint32_t c)
{
    const ps_view_tensor_t *t = ps_view_tensor(v, key);
    return t && c < t->num_chunks ? t->moves[(size_t)c * 2 + 1] : UINT32_MAX;
}

/* Room for one more tensor. */
static pserv_status_t ps_view_reserve(ps_view_t *v)
{
    if (v->num_tensors < v->cap_tensors) return PSERV_OK;
    uint32_t cap = v->cap_tensors ? 2 * v->cap_tensors : 16;
    ps_view_tensor_t *grown = realloc(v->tensors, cap * sizeof(*grown));
    if (grown == NULL) return PSERV_ERR_NO_MEMORY;
    v->tensors = grown;
    v->cap_tensors = cap;
    return PSERV_OK;
}

uint64_t ps_view_chunk_bytes(const ps_view_tensor_t *t, uint32_t c)
{
    uint64_t first = (uint64_t)c * t->chunk_elems;
    uint64_t n = t->desc.count - first < t->chunk_elems ? t->desc.count - first : t->chunk_elems;
    return n * ps_dtype_size(t->desc.dtype);
}

static uint64_t ps_view_load(const ps_view_t *v, uint32_t s)
{
    return v->load_bytes[s] + v->load_chunks[s] * PS_VIEW_CHUNK_COST_BYTES;
}

/* The server taking chunks with the least load that is not excluded (lowest rank on ties), or UINT32_MAX. */
static uint32_t ps_view_least_loaded(const ps_view_t *v, const uint32_t *exclude, uint32_t nexclude)
{
    uint32_t best = UINT32_MAX;
    for (uint32_t s = 0; s < v->num_servers; s++) {
        if (!ps_view_takes_chunks(v->server_state[s])) continue;
        int skip = 0;
        for (uint32_t i = 0; i < nexclude && !skip; i++) skip = exclude[i] == s;
        if (!skip && (best == UINT32_MAX || ps_view_load(v, s) < ps_view_load(v, best))) best = s;
    }
    return best;
}

static void ps_view_account(ps_view_t *v, uint32_t s, uint64_t bytes, int sign)
{
    v->load_bytes[s] += sign > 0 ? bytes : -bytes;
    v->load_chunks[s] += sign > 0 ? 1 : (uint64_t)-1;
}

/* Picks the owners of chunk c: primary and backups on distinct live servers. */
static void ps_view_assign(ps_view_t *v, ps_view_tensor_t *t, uint32_t c)
{
    uint32_t *o = &t->owners[(size_t)c * (v->replicas + 1)];
    for (uint32_t r = 0; r <= v->replicas; r++) {
        o[r] = ps_view_least_loaded(v, o, r);
        if (o[r] == UINT32_MAX) o[r] = o[0]; /* fewer live servers than copies: the copies coincide */
        if (r == 0) ps_view_account(v, o[0], ps_view_chunk_bytes(t, c), +1);
    }
}

/* Chunk geometry: capped by the job's chunk size, and a multiple of the live servers when large. */
static uint64_t ps_view_chunk_elems(const ps_tensor_desc_t *d, uint64_t job_chunk_bytes, uint32_t live)
{
    uint64_t esize = ps_dtype_size(d->dtype), bytes = d->count * esize;
    uint64_t cap = ps_tensor_chunk_bytes(d, job_chunk_bytes) / esize;
    if (cap == 0) cap = 1;
    uint64_t n = (d->count + cap - 1) / cap;
    if (d->optim.clip_norm > 0 || live <= 1 || bytes < (uint64_t)live * PS_VIEW_MIN_SPLIT_BYTES) return cap;
    /* A multiple of the live servers, of equal size: the tensor spreads evenly. */
    n = (n + live - 1) / live * live;
    return (d->count + n - 1) / n;
}

pserv_status_t ps_view_place(ps_view_t *v, uint64_t key, const ps_tensor_desc_t *desc, uint64_t job_chunk_bytes,
                             const char **why)
{
    if (ps_view_tensor(v, key) != NULL) return PSERV_ERR_EXISTS;
    uint32_t live = ps_view_live_servers(v);
    if (live == 0 || desc->count == 0 || ps_dtype_size(desc->dtype) == 0) {
        *why = live == 0 ? "no live server" : "empty tensor or unknown dtype";
        return PSERV_ERR_INVALID_ARG;
    }
    uint64_t elems = ps_view_chunk_elems(desc, job_chunk_bytes, live);
    uint64_t n = (desc->count + elems - 1) / elems;
    if (n > PS_VIEW_MAX_CHUNKS) {
        *why = "the chunk size makes more than 65536 chunks of this tensor";
        return PSERV_ERR_INVALID_ARG;
    }
    if (ps_view_encoded_size(v) + 8 + PS_TENSOR_DESC_LEN + 12 + n * (v->replicas + 1) * 4 > PS_WIRE_VIEW_MAX) {
        *why = "the cluster view would outgrow what a message carries: use a larger chunk size";
        return PSERV_ERR_INVALID_ARG;
    }
    if (ps_view_reserve(v) < 0) return PSERV_ERR_NO_MEMORY;
    ps_view_tensor_t *t = &v->tensors[v->num_tensors];
    t->key = key;
    t->desc = *desc;
    t->chunk_elems = elems;
    t->num_chunks = (uint32_t)n;
    t->owners = malloc(n * (v->replicas + 1) * sizeof(*t->owners));
    t->moves = malloc(n * 2 * sizeof(*t->moves));
    pserv_status_t st = t->owners && t->moves ? ps_keymap_put(&v->index, key, (void *)(uintptr_t)(v->num_tensors + 1))
                                              : PSERV_ERR_NO_MEMORY;
    if (st < 0) {
        free(t->owners);
        free(t->moves);
        return st;
    }
    memset(t->moves, 0xff, n * 2 * sizeof(*t->moves));
    v->num_tensors++;
    for (uint32_t c = 0; c < t->num_chunks; c++) ps_view_assign(v, t, c);
    return PSERV_OK;
}

/*
 * Server s is dead: fn(v, t, c, o, s, arg) for every chunk c of every tensor t it holds (o: its R
 * owners); returns the sum of what fn returns.
 */
static uint32_t ps_view_each_held(ps_view_t *v, uint32_t s,
                                  uint32_t (*fn)(ps_view_t *v, const ps_view_tensor_t *t, uint32_t c, uint32_t *o,
                                                 uint32_t s))
{
    uint32_t sum = 0, R = v->replicas + 1;
    if (s >= v->num_servers) return 0;
    v->server_state[s] = PS_MEMBER_DEAD;
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        ps_view_tensor_t *t = &v->tensors[i];
        for (uint32_t c = 0; c < t->num_chunks; c++)
            if (ps_view_holds(v, t->key, c, s)) sum += fn(v, t, c, &t->owners[(size_t)c * R], s);
    }
    return sum;
}

/* Without copies: the chunk moves to the least-loaded live server (its state is lost). */
static uint32_t ps_view_move_away(ps_view_t *v, const ps_view_tensor_t *t, uint32_t c, uint32_t *o, uint32_t s)
{
    uint32_t moved = 0, R = v->replicas + 1;
    for (uint32_t r = 0; r < R; r++) {
        if (o[r] != s) continue;
        uint32_t to = ps_view_least_loaded(v, o, R);
        if (to == UINT32_MAX) continue; /* nowhere to go: stays on the dead server */
        if (r == 0) {
            ps_view_account(v, s, ps_view_chunk_bytes(t, c), -1);
            ps_view_account(v, to, ps_view_chunk_bytes(t, c), +1);
            moved++;
        }
        o[r] = to;
    }
    return moved;
}

uint32_t ps_view_remove_server(ps_view_t *v, uint32_t s)
{
    return ps_view_each_held(v, s, ps_view_move_away);
}

/* Owners o (R of them) without s: survivors first, in order; then a new backup (not `moving_to`,
 * the server a move brings the chunk to) or a repeat. */
static int ps_view_drop_owner(ps_view_t *v, uint32_t *o, uint32_t R, uint32_t s, uint32_t moving_to)
{
    uint32_t keep[PS_VIEW_MAX_REPLICAS + 1], n = 0;
    for (uint32_t r = 0; r < R; r++) {
        int dup = 0;
        for (uint32_t k = 0; k < n && !dup; k++) dup = keep[k] == o[r];
        if (o[r] != s && !dup && ps_view_member_alive(v->server_state[o[r]])) keep[n++] = o[r];
    }
    if (n == 0) return 0;
    for (uint32_t r = 0; r < R; r++) {
        if (r < n) {
            o[r] = keep[r];
            continue;
        }
        uint32_t exclude[PS_VIEW_MAX_REPLICAS + 2];
        memcpy(exclude, o, r * sizeof(*o));
        exclude[r] = moving_to;
        uint32_t to = ps_view_least_loaded(v, exclude, r + 1);
        o[r] = to == UINT32_MAX ? o[0] : to;
    }
    return 1;
}

uint32_t ps_view_sole_copies(const ps_view_t *v, uint32_t s)
{
    uint32_t n = 0, R = v->replicas + 1;
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        const ps_view_tensor_t *t = &v->tensors[i];
        for (uint32_t c = 0; c < t->num_chunks; c++) {
            const uint32_t *o = &t->owners[(size_t)c * R];
            int held = 0, other = 0;
            for (uint32_t r = 0; r < R; r++) {
                if (o[r] == s) held = 1;
                else if (ps_view_member_alive(v->server_state[o[r]])) other = 1;
            }
            n += held && !other;
        }
    }
    return n;
}

/* With copies: a live one takes the dead server's place; 1 when none is left (the chunk is lost). */
static uint32_t ps_view_fail_over(ps_view_t *v, const ps_view_tensor_t *t, uint32_t c, uint32_t *o, uint32_t s)
{
    uint32_t primary = o[0];
    if (!ps_view_drop_owner(v, o, v->replicas + 1, s, t->moves[(size_t)c * 2 + 1])) return 1;
    if (o[0] != primary) {
        ps_view_account(v, primary, ps_view_chunk_bytes(t, c), -1);
        ps_view_account(v, o[0], ps_view_chunk_bytes(t, c), +1);
    }
    return 0;
}

uint32_t ps_view_fail_server(ps_view_t *v, uint32_t s)
{
    return ps_view_each_held(v, s, ps_view_fail_over);
}

/* The primary chunk of server s, not moving and with no copy on `to`, whose move there lowers
 * max(load(s), load(to)) the most. */
static int ps_view_best_move(const ps_view_t *v, uint32_t s, uint32_t to, uint32_t *ti, uint32_t *tc)
{
    uint64_t ls = ps_view_load(v, s), lt = ps_view_load(v, to), best_max = ls;
    int found = 0;
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        const ps_view_tensor_t *t = &v->tensors[i];
        for (uint32_t c = 0; c < t->num_chunks; c++) {
            if (t->owners[(size_t)c * (v->replicas + 1)] != s || t->moves[(size_t)c * 2] != UINT32_MAX ||
                ps_view_holds(v, t->key, c, to))
                continue;
            uint64_t w = ps_view_chunk_bytes(t, c) + PS_VIEW_CHUNK_COST_BYTES;
            uint64_t after = ls - w > lt + w ? ls - w : lt + w;
            if (after < best_max) {
                best_max = after;
                *ti = i;
                *tc = c;
                found = 1;
            }
        }
    }
    return found;
}

uint32_t ps_view_add_server(ps_view_t *v, const char *addr)
{
    uint32_t S = v->num_servers + 1;
    if (S > PS_VIEW_MAX_SERVERS) return UINT32_MAX;
    uint8_t *state = realloc(v->server_state, S);
    if (state == NULL) return UINT32_MAX;
    v->server_state = state;
    uint64_t *lb = realloc(v->load_bytes, S * sizeof(*lb));
    if (lb == NULL) return UINT32_MAX;
    v->load_bytes = lb;
    uint64_t *lc = realloc(v->load_chunks, S * sizeof(*lc));
    if (lc == NULL) return UINT32_MAX;
    v->load_chunks = lc;
    char(*addrs)[PS_ADDR_MAX] = realloc(v->addrs, S * sizeof(*addrs));
    if (addrs == NULL) return UINT32_MAX;
    v->addrs = addrs;
    uint32_t to = v->num_servers;
    v->server_state[to] = PS_MEMBER_JOINING;
    v->load_bytes[to] = v->load_chunks[to] = 0;
    snprintf(v->addrs[to], PS_ADDR_MAX, "%s", addr);
    v->num_servers = S;
    return to;
}

/* Records the move of chunk c from `from` to `to`; the load counts a primary's move as done. */
static void ps_view_start_move(ps_view_t *v, ps_view_tensor_t *t, uint32_t c, uint32_t from, uint32_t to)
{
    t->moves[(size_t)c * 2] = from;
    t->moves[(size_t)c * 2 + 1] = to;
    v->num_moves++;
    if (t->owners[(size_t)c * (v->replicas + 1)] == from) {
        ps_view_account(v, from, ps_view_chunk_bytes(t, c), -1);
        ps_view_account(v, to, ps_view_chunk_bytes(t, c), +1);
    }
}

/* The next move that balances load onto `to`: its source and chunk; 0 when none lowers the maximum. */
static int ps_view_next_balance(const ps_view_t *v, uint32_t to, uint32_t *src, uint32_t *ti, uint32_t *tc)
{
    if (to >= v->num_servers || !ps_view_takes_chunks(v->server_state[to])) return 0;
    *src = UINT32_MAX;
    for (uint32_t s = 0; s < v->num_servers; s++)
        if (s != to && ps_view_member_alive(v->server_state[s]) &&
            (*src == UINT32_MAX || ps_view_load(v, s) > ps_view_load(v, *src)))
            *src = s;
    return *src != UINT32_MAX && ps_view_best_move(v, *src, to, ti, tc);
}

int ps_view_unbalanced(const ps_view_t *v, uint32_t to)
{
    uint32_t src, ti, tc;
    return ps_view_next_balance(v, to, &src, &ti, &tc);
}

uint64_t ps_view_moving_bytes(const ps_view_t *v)
{
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < v->num_tensors; i++)
        for (uint32_t c = 0; c < v->tensors[i].num_chunks; c++)
            if (v->tensors[i].moves[(size_t)c * 2] != UINT32_MAX) bytes += ps_view_chunk_bytes(&v->tensors[i], c);
    return bytes;
}

/* Another move of `bytes` fits the budget: the first always does. */
static int ps_view_move_fits(const ps_view_t *v, uint64_t moving, uint64_t bytes, uint64_t budget)
{
    return v->num_moves == 0 || (moving <= budget && bytes <= budget - moving);
}

uint32_t ps_view_plan_balance(ps_view_t *v, uint32_t to, uint64_t budget)
{
    uint32_t planned = 0, src, ti, tc;
    uint64_t moving = ps_view_moving_bytes(v);
    while (ps_view_next_balance(v, to, &src, &ti, &tc)) {
        uint64_t bytes = ps_view_chunk_bytes(&v->tensors[ti], tc);
        if (!ps_view_move_fits(v, moving, bytes, budget)) break;
        ps_view_start_move(v, &v->tensors[ti], tc, src, to);
        moving += bytes;
        planned++;
    }
    return planned;
}

uint32_t ps_view_plan_drain(ps_view_t *v, uint32_t s, uint64_t budget, uint32_t *stuck)
{
    uint32_t held = 0, R = v->replicas + 1;
    uint64_t moving = ps_view_moving_bytes(v);
    *stuck = 0;
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        ps_view_tensor_t *t = &v->tensors[i];
        for (uint32_t c = 0; c < t->num_chunks; c++) {
            if (!ps_view_holds(v, t->key, c, s)) continue;
            held++;
            /* One move per chunk, and what the budget allows: the rest are planned as they finish. */
            uint64_t bytes = ps_view_chunk_bytes(t, c);
            if (t->moves[(size_t)c * 2] != UINT32_MAX || !ps_view_move_fits(v, moving, bytes, budget)) continue;
            uint32_t to = ps_view_least_loaded(v, &t->owners[(size_t)c * R], R);
            if (to == UINT32_MAX) {
                (*stuck)++;
                continue;
            }
            ps_view_start_move(v, t, c, s, to);
            moving += bytes;
        }
    }
    return held;
}

/* Ends the move of chunk c (the load's part of it stays). */
static void ps_view_end_move(ps_view_t *v, ps_view_tensor_t *t, uint32_t c)
{
    t->moves[(size_t)c * 2] = t->moves[(size_t)c * 2 + 1] = UINT32_MAX;
    v->num_moves--;
}

int ps_view_finish_move(ps_view_t *v, uint64_t key, uint32_t c, uint32_t to)
{
    ps_view_tensor_t *t = (ps_view_tensor_t *)ps_view_tensor(v, key);
    if (t == NULL || c >= t->num_chunks || t->moves[(size_t)c * 2 + 1] != to || ps_view_holds(v, key, c, to)) return 0;
    uint32_t from = t->moves[(size_t)c * 2], *o = &t->owners[(size_t)c * (v->replicas + 1)];
    ps_view_end_move(v, t, c);
    int done = 0;
    for (uint32_t r = 0; r <= v->replicas; r++)
        if (o[r] == from) {
            o[r] = to;
            done = 1;
        }
    return done;
}

uint32_t ps_view_cancel_moves(ps_view_t *v, uint32_t s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        ps_view_tensor_t *t = &v->tensors[i];
        for (uint32_t c = 0; c < t->num_chunks; c++) {
            uint32_t from = t->moves[(size_t)c * 2], to = t->moves[(size_t)c * 2 + 1];
            if (from == UINT32_MAX || (from != s && to != s)) continue;
            if (t->owners[(size_t)c * (v->replicas + 1)] == from) { /* the primary stays where it was */
                ps_view_account(v, to, ps_view_chunk_bytes(t, c), -1);
                ps_view_account(v, from, ps_view_chunk_bytes(t, c), +1);
            }
            ps_view_end_move(v, t, c);
            n++;
        }
    }
    return n;
}

uint32_t ps_view_copies(const ps_view_t *v, uint32_t s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < v->num_tensors; i++)
        for (uint32_t c = 0; c < v->tensors[i].num_chunks; c++) n += ps_view_holds(v, v->tensors[i].key, c, s);
    return n;
}

/* Chunks of a tensor with a move in progress. */
static uint32_t ps_view_tensor_moves(const ps_view_tensor_t *t)
{
    uint32_t n = 0;
    for (uint32_t c = 0; c < t->num_chunks; c++) n += t->moves[(size_t)c * 2] != UINT32_MAX;
    return n;
}

size_t ps_view_encoded_size(const ps_view_t *v)
{
    size_t n = 5 * 4 + (size_t)v->num_servers * 4 + (size_t)v->num_workers * 4;
    for (uint32_t s = 0; s < v->num_servers; s++) n += 4 + strlen(v->addrs[s]);
    for (uint32_t i = 0; i < v->num_tensors; i++)
        n += 8 + PS_TENSOR_DESC_LEN + 8 + 4 + (size_t)v->tensors[i].num_chunks * (v->replicas + 1) * 4 + 4 +
             (size_t)ps_view_tensor_moves(&v->tensors[i]) * 12;
    return n;
}

/*
 * Layout: version, servers, workers, replicas; every server's state, every worker's; every
 * server's address (a string); tensors: key, descriptor, chunk size, chunks, owners,
 * then the moves in progress (count, then chunk, from, to each).
 */
void ps_view_encode(const ps_view_t *v, ps_writer_t *w)
{
    ps_put_u32(w, v->version);
    ps_put_u32(w, v->num_servers);
    ps_put_u32(w, v->num_workers);
    ps_put_u32(w, v->replicas);
    for (uint32_t s = 0; s < v->num_servers; s++) ps_put_u32(w, v->server_state[s]);
    for (uint32_t r = 0; r < v->num_workers; r++) ps_put_u32(w, v->worker_state[r]);
    for (uint32_t s = 0; s < v->num_servers; s++) ps_put_str(w, v->addrs[s]);
    ps_put_u32(w, v->num_tensors);
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        const ps_view_tensor_t *t = &v->tensors[i];
        ps_put_u64(w, t->key);
        ps_tensor_desc_encode(&t->desc, w);
        ps_put_u64(w, t->chunk_elems);
        ps_put_u32(w, t->num_chunks);
        for (size_t k = 0; k < (size_t)t->num_chunks * (v->replicas + 1); k++) ps_put_u32(w, t->owners[k]);
        ps_put_u32(w, ps_view_tensor_moves(t));
        for (uint32_t c = 0; c < t->num_chunks; c++) {
            if (t->moves[(size_t)c * 2] == UINT32_MAX) continue;
            ps_put_u32(w, c);
            ps_put_u32(w, t->moves[(size_t)c * 2]);
            ps_put_u32(w, t->moves[(size_t)c * 2 + 1]);
        }
    }
}

/* A tensor's moves: each of a chunk in range not moving yet, from one of its owners to a server that holds none. */
static pserv_status_t ps_view_decode_moves(ps_reader_t *r, ps_view_t *v, ps_view_tensor_t *t)
{
    uint32_t n = ps_get_u32(r);
    if (r->bad || n > t->num_chunks || (uint64_t)n * 12 > r->len - r->pos) return PSERV_ERR_BAD_MESSAGE;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t c = ps_get_u32(r), from = ps_get_u32(r), to = ps_get_u32(r);
        if (r->bad || c >= t->num_chunks || from >= v->num_servers || to >= v->num_servers ||
            t->moves[(size_t)c * 2] != UINT32_MAX || !ps_view_holds(v, t->key, c, from) || ps_view_holds(v, t->key, c, to))
            return PSERV_ERR_BAD_MESSAGE;
        t->moves[(size_t)c * 2] = from;
        t->moves[(size_t)c * 2 + 1] = to;
        v->num_moves++;
    }
    return PSERV_OK;
}

static pserv_status_t ps_view_decode_tensor(ps_reader_t *r, ps_view_t *v)
{
    ps_tensor_desc_t desc;
    uint64_t key = ps_get_u64(r);
    if (ps_tensor_desc_decode(r, &desc) < 0) return PSERV_ERR_BAD_MESSAGE;
    uint64_t elems = ps_get_u64(r);
    uint32_t n = ps_get_u32(r);
    uint32_t R = v->replicas + 1;
    /* The geometry must be what it claims, and the owners must fit in what is left. */
    if (r->bad || elems == 0 || n == 0 || n > PS_VIEW_MAX_CHUNKS || (desc.count + elems - 1) / elems != n ||
        (uint64_t)n * R * 4 > r->len - r->pos || ps_view_tensor(v, key) != NULL)
        return PSERV_ERR_BAD_MESSAGE;
    if (ps_view_reserve(v) < 0) return PSERV_ERR_NO_MEMORY;
    ps_view_tensor_t *t = &v->tensors[v->num_tensors];
    *t = (ps_view_tensor_t){.key = key, .desc = desc, .chunk_elems = elems, .num_chunks = n};
    t->owners = malloc((size_t)n * R * sizeof(*t->owners));
    t->moves = malloc((size_t)n * 2 * sizeof(*t->moves));
    if (t->owners == NULL || t->moves == NULL) goto err_free;
    memset(t->moves, 0xff, (size_t)n * 2 * sizeof(*t->moves));
    for (size_t k = 0; k < (size_t)n * R; k++) {
        t->owners[k] = ps_get_u32(r);
        if (t->owners[k] >= v->num_servers) {
            free(t->owners);
            free(t->moves);
            return PSERV_ERR_BAD_MESSAGE;
        }
    }
    if (ps_keymap_put(&v->index, key, (void *)(uintptr_t)(v->num_tensors + 1)) < 0) goto err_free;
    v->num_tensors++; /* ps_view_free frees it from here on */
    pserv_status_t st = ps_view_decode_moves(r, v, t);
    if (st < 0) return st;
    for (uint32_t c = 0; c < n; c++) ps_view_account(v, t->owners[(size_t)c * R], ps_view_chunk_bytes(t, c), +1);
    return PSERV_OK;

err_free:
    free(t->owners);
    free(t->moves);
    return PSERV_ERR_NO_MEMORY;
}

pserv_status_t ps_view_decode(ps_reader_t *r, ps_view_t *v)
{
    uint32_t version = ps_get_u32(r), S = ps_get_u32(r), W = ps_get_u32(r), R = ps_get_u32(r);
    if (r->bad || version == 0 || (uint64_t)S * 4 + (uint64_t)W * 4 > r->len - r->pos) return PSERV_ERR_BAD_MESSAGE;
    pserv_status_t st = ps_view_init(v, S, W, R);
    if (st < 0) return st == PSERV_ERR_INVALID_ARG ? PSERV_ERR_BAD_MESSAGE : st;
    v->version = version;
    st = PSERV_ERR_BAD_MESSAGE;
    for (uint32_t k = 0; k < S + W; k++) {
        uint32_t state = ps_get_u32(r);
        if (state >= PS_MEMBER_STATE_MAX) goto err_free;
        if (k < S) v->server_state[k] = (uint8_t)state;
        else v->worker_state[k - S] = (uint8_t)state;
    }
    for (uint32_t s = 0; s < S; s++) ps_get_str(r, v->addrs[s], PS_ADDR_MAX);
    uint32_t nt = ps_get_u32(r);
    if (r->bad) goto err_free;
    for (uint32_t i = 0; i < nt; i++)
        if ((st = ps_view_decode_tensor(r, v)) < 0) goto err_free;
    if (r->bad || r->pos != r->len) {
        st = PSERV_ERR_BAD_MESSAGE;
        goto err_free;
    }
    return PSERV_OK;

err_free:
    ps_view_free(v);
    return st;
}
