/*
 * The cluster view: placement balance (bytes and chunks) for the pserv train model, chunks moved
 * when servers come and go, lookups, and the encoding a VIEW message carries (round trip and
 * rejection of every damaged field). Balance and movement are measured here from the owners
 * table itself, not from the view's own load counters.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "view.h"
#include "wire.h"

static ps_tensor_desc_t desc_of(uint64_t count)
{
    ps_tensor_desc_t d;
    pserv_optim_params_t o = PSERV_OPTIM_PARAMS_INIT;
    memset(&d, 0, sizeof(d));
    d.count = count;
    d.dtype = PSERV_DTYPE_FLOAT32;
    d.optim = o;
    return d;
}

/* pserv train's default model: 784-256-128-10, weights and biases, registered in this order. */
static const uint64_t mlp_tensors[] = {784 * 256, 256, 256 * 128, 128, 128 * 10, 10};
#define MLP_CHUNK_BYTES (256u << 10) /* pserv train's default --chunk-bytes */

static void place_mlp(ps_view_t *v)
{
    for (unsigned i = 0; i < sizeof(mlp_tensors) / sizeof(mlp_tensors[0]); i++) {
        ps_tensor_desc_t d = desc_of(mlp_tensors[i]);
        const char *why = NULL;
        cr_assert_eq(ps_view_place(v, i + 1, &d, MLP_CHUNK_BYTES, &why), PSERV_OK, "%s", why ? why : "");
    }
}

/* Bytes and chunks each live server is primary of, counted from the owners table. */
static void measure(const ps_view_t *v, uint64_t *bytes, uint64_t *chunks)
{
    memset(bytes, 0, v->num_servers * sizeof(*bytes));
    memset(chunks, 0, v->num_servers * sizeof(*chunks));
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        const ps_view_tensor_t *t = &v->tensors[i];
        for (uint32_t c = 0; c < t->num_chunks; c++) {
            uint64_t first = (uint64_t)c * t->chunk_elems;
            uint64_t n = t->desc.count - first < t->chunk_elems ? t->desc.count - first : t->chunk_elems;
            uint32_t s = ps_view_owner(v, t->key, c);
            cr_assert_lt(s, v->num_servers);
            bytes[s] += n * 4;
            chunks[s]++;
        }
    }
}

/* max / mean - 1 over the live servers */
static double imbalance(const ps_view_t *v, const uint64_t *x)
{
    double sum = 0, max = 0;
    uint32_t live = 0;
    for (uint32_t s = 0; s < v->num_servers; s++) {
        if (!ps_view_member_alive(v->server_state[s])) continue;
        sum += (double)x[s];
        max = (double)x[s] > max ? (double)x[s] : max;
        live++;
    }
    return max / (sum / live) - 1.0;
}

static void set_live(ps_view_t *v)
{
    for (uint32_t s = 0; s < v->num_servers; s++) v->server_state[s] = PS_MEMBER_LIVE;
}

ParameterizedTestParameters(view, mlp_balanced)
{
    static unsigned servers[] = {2, 3, 4};
    return cr_make_param_array(unsigned, servers, 3);
}

ParameterizedTest(unsigned *servers, view, mlp_balanced, .timeout = 10)
{
    ps_view_t v;
    uint64_t bytes[8], chunks[8];
    cr_assert_eq(ps_view_init(&v, *servers, 2, 0), PSERV_OK);
    set_live(&v);
    place_mlp(&v);
    measure(&v, bytes, chunks);
    double b = imbalance(&v, bytes), c = imbalance(&v, chunks);
    cr_log_info("%u servers: bytes %.3f, chunks %.3f over the mean", *servers, b, c);
    cr_expect_leq(b, 0.10, "%u servers: bytes %.1f%% over the mean", *servers, 100 * b);
    cr_expect_leq(c, 0.10, "%u servers: chunks %.1f%% over the mean", *servers, 100 * c);
    ps_view_free(&v);
}

/* Many tensors of many sizes: adding a server moves about 1/(S+1) of the load, no more. */
Test(view, add_and_remove_server_move_few_chunks, .timeout = 10)
{
    ps_view_t v;
    uint64_t bytes[8], chunks[8];
    cr_assert_eq(ps_view_init(&v, 3, 4, 0), PSERV_OK);
    set_live(&v);
    uint64_t total_chunks = 0;
    for (uint64_t k = 1; k <= 200; k++) {
        ps_tensor_desc_t d = desc_of(1000 + (k * 7919) % 60000);
        const char *why;
        cr_assert_eq(ps_view_place(&v, k, &d, 16384, &why), PSERV_OK);
        total_chunks += ps_view_tensor(&v, k)->num_chunks;
    }
    /* remember every chunk's owner */
    uint32_t *before = malloc(total_chunks * sizeof(*before));
    size_t n = 0;
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++) before[n++] = ps_view_owner(&v, v.tensors[i].key, c);

    cr_assert_eq(ps_view_add_server(&v, "127.0.0.1:4004"), 3);
    cr_assert_eq(v.num_servers, 4);
    cr_assert_eq(ps_view_plan_balance(&v, 3, UINT32_MAX), 0, "a server still joining takes no chunk");
    v.server_state[3] = PS_MEMBER_LIVE; /* it said it is ready */
    /* Moves are planned first; owners change only as each one finishes. With a limit of one move
     * at a time, one is planned and no second one while it runs. */
    cr_assert_eq(ps_view_plan_balance(&v, 3, 1), 1);
    cr_assert_eq(v.num_moves, 1);
    cr_assert_eq(ps_view_plan_balance(&v, 3, 1), 0, "a second move beyond the limit");
    long moved = 1 + ps_view_plan_balance(&v, 3, UINT32_MAX);
    cr_assert_eq(v.num_moves, (uint32_t)moved);
    n = 0;
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++) {
            cr_assert_eq(ps_view_owner(&v, v.tensors[i].key, c), before[n++], "an owner changed before its move finished");
            if (ps_view_move_to(&v, v.tensors[i].key, c) == UINT32_MAX) continue;
            cr_assert_eq(ps_view_move_to(&v, v.tensors[i].key, c), 3);
            cr_assert_eq(ps_view_finish_move(&v, v.tensors[i].key, c, 2), 0, "a move finished by the wrong server");
            cr_assert_eq(ps_view_finish_move(&v, v.tensors[i].key, c, 3), 1);
        }
    cr_assert_eq(v.num_moves, 0);
    cr_assert(!ps_view_unbalanced(&v, 3), "balanced, yet another move would lower the maximum");
    size_t changed = 0;
    n = 0;
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++) {
            uint32_t now = ps_view_owner(&v, v.tensors[i].key, c);
            if (now != before[n]) {
                cr_assert_eq(now, 3, "a chunk moved between old servers");
                changed++;
            }
            n++;
        }
    cr_assert_eq((size_t)moved, changed);
    /* the ideal is total/4; allow a tenth of the total beyond it */
    cr_expect_leq(changed, total_chunks / 4 + total_chunks / 10, "moved %zu of %llu chunks", changed,
                  (unsigned long long)total_chunks);
    measure(&v, bytes, chunks);
    cr_expect_leq(imbalance(&v, bytes), 0.10);

    /* removing server 1: exactly its chunks move, all to live servers */
    uint64_t had = chunks[1];
    cr_assert_eq(ps_view_remove_server(&v, 1), had);
    measure(&v, bytes, chunks);
    cr_assert_eq(chunks[1], 0);
    cr_expect_leq(imbalance(&v, bytes), 0.15);
    free(before);
    ps_view_free(&v);
}

Test(view, lookup_and_refusals, .timeout = 10)
{
    ps_view_t v;
    const char *why = NULL;
    cr_assert_eq(ps_view_init(&v, 2, 1, 0), PSERV_OK);
    ps_tensor_desc_t d = desc_of(100);
    cr_assert_eq(ps_view_place(&v, 7, &d, 4096, &why), PSERV_ERR_INVALID_ARG, "no live server yet");
    set_live(&v);
    cr_assert_eq(ps_view_place(&v, 7, &d, 4096, &why), PSERV_OK);
    cr_assert_eq(ps_view_place(&v, 7, &d, 4096, &why), PSERV_ERR_EXISTS);
    cr_assert_lt(ps_view_owner(&v, 7, 0), 2);
    cr_assert_eq(ps_view_owner(&v, 7, 1), UINT32_MAX, "100 floats are one chunk");
    cr_assert_eq(ps_view_owner(&v, 8, 0), UINT32_MAX);
    /* 235,000 chunks of 4 bytes: absurd, refused with a reason */
    ps_tensor_desc_t big = desc_of(235000);
    cr_assert_eq(ps_view_place(&v, 9, &big, 4, &why), PSERV_ERR_INVALID_ARG);
    cr_assert(strstr(why, "65536") != NULL, "%s", why);
    /* a tensor clipped by norm stays whole */
    ps_tensor_desc_t clip = desc_of(100000);
    clip.optim.clip_norm = 1.0f;
    cr_assert_eq(ps_view_place(&v, 10, &clip, 4096, &why), PSERV_OK);
    cr_assert_eq(ps_view_tensor(&v, 10)->num_chunks, 1);
    ps_view_free(&v);
}

static size_t encode(const ps_view_t *v, uint8_t **out)
{
    size_t n = ps_view_encoded_size(v);
    *out = malloc(n);
    ps_writer_t w;
    ps_writer_init(&w, *out, n);
    ps_view_encode(v, &w);
    cr_assert_eq(w.len, n);
    cr_assert(!w.overflow);
    return n;
}

Test(view, encode_decode_round_trip, .timeout = 10)
{
    ps_view_t v, back;
    uint8_t *buf;
    cr_assert_eq(ps_view_init(&v, 3, 2, 1), PSERV_OK);
    set_live(&v);
    v.worker_state[1] = PS_MEMBER_DEAD;
    for (uint32_t s = 0; s < 3; s++) snprintf(v.addrs[s], PS_ADDR_MAX, "10.0.0.%u:%u", s + 1, 4000 + s);
    place_mlp(&v);
    v.version = 42;
    size_t n = encode(&v, &buf);
    ps_reader_t r;
    ps_reader_init(&r, buf, n);
    cr_assert_eq(ps_view_decode(&r, &back), PSERV_OK);
    cr_assert_eq(back.version, 42);
    for (uint32_t s = 0; s < 3; s++) cr_assert_str_eq(back.addrs[s], v.addrs[s]);
    cr_assert_eq(back.num_moves, 0);
    cr_assert_eq(back.num_tensors, v.num_tensors);
    cr_assert_eq(back.worker_state[1], PS_MEMBER_DEAD);
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++)
            for (uint32_t s = 0; s < 3; s++)
                cr_assert_eq(ps_view_holds(&back, v.tensors[i].key, c, s), ps_view_holds(&v, v.tensors[i].key, c, s));
    /* primary and backup of every chunk differ when there are servers enough */
    for (uint32_t c = 0; c < v.tensors[0].num_chunks; c++)
        cr_assert_neq(v.tensors[0].owners[2 * c], v.tensors[0].owners[2 * c + 1]);
    ps_view_free(&back);

    /* every truncation is refused */
    for (size_t len = 0; len < n; len++) {
        ps_reader_init(&r, buf, len);
        cr_assert_eq(ps_view_decode(&r, &back), PSERV_ERR_BAD_MESSAGE, "truncated to %zu of %zu bytes", len, n);
    }
    /* a bad state, a server count that does not fit, an owner out of range (the last tensor's
     * last owner, before its count of moves) */
    uint8_t *bad = malloc(n);
    size_t fields[] = {4, 16, n - 8};
    uint32_t values[] = {100000, 99, 3};
    for (unsigned i = 0; i < 3; i++) {
        memcpy(bad, buf, n);
        memcpy(bad + fields[i], &values[i], 4);
        ps_reader_init(&r, bad, n);
        cr_assert_eq(ps_view_decode(&r, &back), PSERV_ERR_BAD_MESSAGE, "field at %zu", fields[i]);
    }
    free(bad);
    free(buf);
    ps_view_free(&v);
}

/* Every chunk's owners: not the dead server, and distinct while `distinct` (2+ live servers). */
static void check_owners(const ps_view_t *v, uint32_t dead, int distinct)
{
    uint32_t R = v->replicas + 1;
    for (uint32_t i = 0; i < v->num_tensors; i++)
        for (uint32_t c = 0; c < v->tensors[i].num_chunks; c++) {
            const uint32_t *o = &v->tensors[i].owners[(size_t)c * R];
            for (uint32_t r = 0; r < R; r++) {
                cr_assert_neq(o[r], dead, "tensor %u chunk %u still names the dead server", i, c);
                for (uint32_t q = 0; q < r && distinct; q++) cr_assert_neq(o[q], o[r], "two copies on one server");
            }
        }
}

Test(view, a_dead_server_fails_over_to_its_backups, .timeout = 10)
{
    ps_view_t v;
    cr_assert_eq(ps_view_init(&v, 3, 2, 1), PSERV_OK);
    for (uint32_t s = 0; s < 3; s++) v.server_state[s] = PS_MEMBER_LIVE;
    place_mlp(&v);
    uint32_t n = 0;
    for (uint32_t i = 0; i < v.num_tensors; i++) n += v.tensors[i].num_chunks;
    uint32_t *before = malloc(2 * n * sizeof(*before)); /* each chunk's primary and backup */
    n = 0;
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++, n++) memcpy(&before[2 * n], &v.tensors[i].owners[2 * c], 8);
    cr_assert_eq(ps_view_sole_copies(&v, 1), 0, "every chunk has a second copy");
    cr_assert_eq(ps_view_fail_server(&v, 1), 0);
    check_owners(&v, 1, 1);
    n = 0;
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++, n++) {
            uint32_t want = before[2 * n] == 1 ? before[2 * n + 1] : before[2 * n];
            cr_assert_eq(ps_view_owner(&v, v.tensors[i].key, c), want, "tensor %u chunk %u", i, c);
        }
    /* 2 servers left: the next death leaves every chunk on the last one; then a third loses them. */
    cr_assert_eq(ps_view_sole_copies(&v, 0), 0);
    cr_assert_eq(ps_view_fail_server(&v, 0), 0);
    check_owners(&v, 0, 0);
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++) cr_assert_eq(ps_view_owner(&v, v.tensors[i].key, c), 2);
    cr_assert_eq(ps_view_sole_copies(&v, 2), n);
    free(before);
    ps_view_free(&v);
}

/* A move travels in the view: decoded as it was; one to a server that holds the chunk already, or
 * from one that does not, is refused. */
Test(view, moves_round_trip_and_bad_moves_are_refused, .timeout = 10)
{
    ps_view_t v, back;
    uint8_t *buf;
    cr_assert_eq(ps_view_init(&v, 3, 2, 0), PSERV_OK);
    set_live(&v);
    place_mlp(&v);
    cr_assert_eq(ps_view_add_server(&v, "10.0.0.9:4009"), 3);
    v.server_state[3] = PS_MEMBER_LIVE;
    uint32_t planned = ps_view_plan_balance(&v, 3, UINT32_MAX);
    cr_assert_gt(planned, 0);
    size_t n = encode(&v, &buf);
    ps_reader_t r;
    ps_reader_init(&r, buf, n);
    cr_assert_eq(ps_view_decode(&r, &back), PSERV_OK);
    cr_assert_eq(back.num_moves, planned);
    cr_assert_str_eq(back.addrs[3], "10.0.0.9:4009");
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++)
            cr_assert_eq(ps_view_move_to(&back, v.tensors[i].key, c), ps_view_move_to(&v, v.tensors[i].key, c));
    ps_view_free(&back);
    free(buf);

    /* The first moving chunk: its move names another target that already holds it, or a source
     * that does not. Found in the bytes by its (chunk, from, to) triple after the count. */
    const ps_view_tensor_t *t = NULL;
    uint32_t c = 0;
    for (uint32_t i = 0; i < v.num_tensors && t == NULL; i++)
        for (c = 0; c < v.tensors[i].num_chunks; c++)
            if (ps_view_move_to(&v, v.tensors[i].key, c) != UINT32_MAX) {
                t = &v.tensors[i];
                break;
            }
    cr_assert_not_null(t);
    uint32_t from = t->moves[2 * c], to = t->moves[2 * c + 1], other = (from + 1) % 3;
    n = encode(&v, &buf);
    uint32_t triple[3] = {c, from, to};
    uint8_t *at = memmem(buf, n, triple, sizeof(triple));
    cr_assert_not_null(at);
    uint32_t bad[][3] = {{c, from, from}, {c, other, to}, {t->num_chunks, from, to}, {c, from, 99}};
    for (unsigned k = 0; k < 4; k++) {
        memcpy(at, bad[k], sizeof(bad[k]));
        ps_reader_init(&r, buf, n);
        cr_assert_eq(ps_view_decode(&r, &back), PSERV_ERR_BAD_MESSAGE, "bad move %u", k);
    }
    free(buf);
    ps_view_free(&v);
}

/* Moves within a budget of bytes: many small chunks move together, a chunk larger than the
 * budget alone; what is moving never exceeds the budget otherwise. */
Test(view, moves_stay_within_a_budget_of_bytes, .timeout = 10)
{
    enum { SMALL = 40, SMALL_FLOATS = 100, BUDGET = 4096 };
    ps_view_t v;
    cr_assert_eq(ps_view_init(&v, 2, 2, 0), PSERV_OK);
    set_live(&v);
    const char *why;
    for (uint64_t k = 1; k <= SMALL; k++) {
        ps_tensor_desc_t d = desc_of(SMALL_FLOATS);
        cr_assert_eq(ps_view_place(&v, k, &d, BUDGET, &why), PSERV_OK);
    }
    cr_assert_eq(ps_view_add_server(&v, "127.0.0.1:4004"), 2);
    v.server_state[2] = PS_MEMBER_LIVE;
    /* 400-byte chunks: as many as fit in 4096 bytes, i.e. 10, move at once. */
    uint32_t planned = ps_view_plan_balance(&v, 2, BUDGET);
    cr_assert_eq(planned, BUDGET / (SMALL_FLOATS * 4), "planned %u small moves", planned);
    cr_assert_eq(ps_view_moving_bytes(&v), (uint64_t)planned * SMALL_FLOATS * 4);
    cr_assert_eq(ps_view_plan_balance(&v, 2, BUDGET), 0, "beyond the budget");
    /* one finishes: one more fits */
    for (uint32_t i = 0; i < v.num_tensors && planned == 10; i++)
        if (ps_view_move_to(&v, v.tensors[i].key, 0) == 2) {
            cr_assert_eq(ps_view_finish_move(&v, v.tensors[i].key, 0, 2), 1);
            break;
        }
    cr_assert_eq(ps_view_plan_balance(&v, 2, BUDGET), 1);
    /* finish them all, then drain server 0: small copies move together, within the budget */
    for (uint32_t i = 0; i < v.num_tensors; i++) {
        uint32_t to = ps_view_move_to(&v, v.tensors[i].key, 0);
        if (to != UINT32_MAX) cr_assert_eq(ps_view_finish_move(&v, v.tensors[i].key, 0, to), 1);
    }
    cr_assert_eq(v.num_moves, 0);
    uint32_t stuck;
    v.server_state[0] = PS_MEMBER_LEAVING;
    ps_view_plan_drain(&v, 0, BUDGET, &stuck);
    cr_assert_eq(v.num_moves, BUDGET / (SMALL_FLOATS * 4));
    cr_assert_leq(ps_view_moving_bytes(&v), BUDGET);
    ps_view_free(&v);
    /* chunks larger than the budget: each moves alone */
    cr_assert_eq(ps_view_init(&v, 2, 2, 0), PSERV_OK);
    set_live(&v);
    ps_tensor_desc_t big = desc_of(6 * BUDGET / 4);
    cr_assert_eq(ps_view_place(&v, 1, &big, 2 * BUDGET, &why), PSERV_OK);
    cr_assert_gt(ps_view_chunk_bytes(ps_view_tensor(&v, 1), 0), BUDGET);
    v.server_state[0] = PS_MEMBER_LEAVING;
    cr_assert_gt(ps_view_plan_drain(&v, 0, BUDGET, &stuck), 0);
    cr_assert_eq(v.num_moves, 1, "a chunk larger than the budget moves alone");
    ps_view_free(&v);
}

/* Draining a server: every copy it holds moves to a server without one, one move per chunk; the
 * server takes no new tensor meanwhile; a dead target ends its moves, which are planned again. */
Test(view, a_drained_server_gives_every_copy_away, .timeout = 10)
{
    ps_view_t v;
    cr_assert_eq(ps_view_init(&v, 4, 2, 1), PSERV_OK);
    set_live(&v);
    place_mlp(&v);
    uint32_t had = ps_view_copies(&v, 1), stuck;
    cr_assert_gt(had, 0);
    v.server_state[1] = PS_MEMBER_LEAVING;
    cr_assert(ps_view_member_alive(v.server_state[1]), "a server being drained still serves");
    cr_assert_eq(ps_view_plan_drain(&v, 1, 1, &stuck), had);
    cr_assert_eq(v.num_moves, 1, "a second move beyond a budget the first fills");
    cr_assert_eq(ps_view_plan_drain(&v, 1, UINT32_MAX, &stuck), had);
    cr_assert_eq(stuck, 0);
    cr_assert_eq(v.num_moves, had);
    /* a new tensor goes to the other servers only */
    ps_tensor_desc_t d = desc_of(100000);
    const char *why;
    cr_assert_eq(ps_view_place(&v, 99, &d, 4096, &why), PSERV_OK);
    for (uint32_t c = 0; c < ps_view_tensor(&v, 99)->num_chunks; c++) cr_assert(!ps_view_holds(&v, 99, c, 1));
    /* server 3 dies: the moves to it end, and planning again sends those copies elsewhere */
    uint32_t to3 = 0;
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++) to3 += ps_view_move_to(&v, v.tensors[i].key, c) == 3;
    cr_assert_gt(to3, 0);
    cr_assert_eq(ps_view_cancel_moves(&v, 3), to3);
    ps_view_fail_server(&v, 3);
    cr_assert_eq(ps_view_plan_drain(&v, 1, UINT32_MAX, &stuck), ps_view_copies(&v, 1));
    /* finish every move: server 1 holds nothing, and no chunk has two copies on one server */
    for (uint32_t i = 0; i < v.num_tensors; i++)
        for (uint32_t c = 0; c < v.tensors[i].num_chunks; c++) {
            uint32_t to = ps_view_move_to(&v, v.tensors[i].key, c);
            if (to == UINT32_MAX) continue;
            cr_assert(to != 1 && to != 3, "a copy moves to a server that cannot take it");
            cr_assert_eq(ps_view_finish_move(&v, v.tensors[i].key, c, to), 1);
        }
    cr_assert_eq(v.num_moves, 0);
    cr_assert_eq(ps_view_copies(&v, 1), 0);
    check_owners(&v, 1, 1);
    ps_view_free(&v);
}
