/*
 * Checkpoint files (core/ckpt): CRC32C against the standard's test vectors, values read back by
 * element range whatever the chunks were, and every damage refused by name: each byte of a
 * header, each data section, truncation, trailing bytes, a missing shard (passed over for an
 * older complete round) and pruning that keeps what it must.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_set.h"

#define KEY_A 7u   /* Adam-like: two state arrays, split into chunks over the shards */
#define KEY_B 3u   /* SGD: no state, one chunk, on shard 0 only */
#define COUNT_A 10u
#define COUNT_B 5u

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/pserv_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Element i of array a (0 parameters, 1 and 2 the state) of tensor key: independent of the code. */
static float value(uint64_t key, uint32_t a, uint64_t i)
{
    return (float)key * 1000.0f + (float)a * 100.0f + (float)i * 0.5f;
}

static ps_tensor_desc_t desc_of(uint64_t count, pserv_optim_type_t type)
{
    pserv_optim_params_t o = PSERV_OPTIM_PARAMS_INIT;
    o.type = type;
    return (ps_tensor_desc_t){.count = count, .dtype = PSERV_DTYPE_FLOAT32, .optim = o};
}

/* Writes round `round` of a job of `servers` shards: tensor A in chunks of chunk_elems dealt
 * round-robin, tensor B whole on shard 0 (so shard 1 never names it). */
static void write_round(uint64_t round, uint32_t servers, uint64_t chunk_elems)
{
    static float arrays[2][3][64];
    for (uint32_t a = 0; a < 3; a++)
        for (uint32_t i = 0; i < 64; i++) {
            arrays[0][a][i] = value(KEY_A, a, i);
            arrays[1][a][i] = value(KEY_B, a, i);
        }
    char path[PS_CKPT_PATH_MAX];
    ps_ckpt_round_dir(dir, round, path, sizeof(path));
    cr_assert_eq(ps_dir_make(path), PSERV_OK);
    uint32_t nchunks = (uint32_t)((COUNT_A + chunk_elems - 1) / chunk_elems);
    for (uint32_t s = 0; s < servers; s++) {
        ps_ckpt_tensor_t tensors[2] = {{KEY_A, desc_of(COUNT_A, PSERV_OPTIM_ADAM), chunk_elems},
                                       {KEY_B, desc_of(COUNT_B, PSERV_OPTIM_SGD), COUNT_B}};
        ps_ckpt_chunk_t chunks[16];
        uint32_t n = 0;
        for (uint32_t c = s; c < nchunks; c += servers) {
            uint64_t off = c * chunk_elems, len = COUNT_A - off < chunk_elems ? COUNT_A - off : chunk_elems;
            chunks[n++] = (ps_ckpt_chunk_t){.key = KEY_A, .chunk = c, .nstate = 2, .offset = off, .len = len,
                                            .version = round, .step = round + 1,
                                            .arrays = {arrays[0][0] + off, arrays[0][1] + off, arrays[0][2] + off}};
        }
        if (s == 0)
            chunks[n++] = (ps_ckpt_chunk_t){.key = KEY_B, .chunk = 0, .nstate = 0, .offset = 0, .len = COUNT_B,
                                            .version = round, .step = round, .arrays = {arrays[1][0]}};
        ps_ckpt_header_t h = {.round = round, .rank = s, .num_servers = servers, .mode = PSERV_MODE_SYNC,
                              .num_tensors = s == 0 ? 2 : 1, .num_chunks = n, .tensors = tensors, .chunks = chunks};
        ps_ckpt_shard_path(dir, round, s, path, sizeof(path));
        uint64_t bytes = 0;
        cr_assert_eq(ps_ckpt_write_file(path, &h, &bytes), PSERV_OK, "%s", pserv_last_error());
        struct stat sb;
        cr_assert_eq(stat(path, &sb), 0);
        cr_assert_eq((uint64_t)sb.st_size, bytes);
    }
}

/* Reads [off, off + len) of tensor A and checks parameters, state, rounds and steps. */
static void check_range(ps_ckpt_set_t *set, uint64_t off, uint64_t len, uint64_t round)
{
    float p[COUNT_A], s0[COUNT_A], s1[COUNT_A];
    float *state[2] = {s0, s1};
    uint64_t version = 0, step = 0;
    cr_assert_eq(ps_ckpt_set_fill(set, KEY_A, off, len, p, state, 2, &version, &step), PSERV_OK, "%s",
                 pserv_last_error());
    for (uint64_t i = 0; i < len; i++) {
        cr_assert_eq(p[i], value(KEY_A, 0, off + i), "element %llu", (unsigned long long)(off + i));
        cr_assert_eq(s0[i], value(KEY_A, 1, off + i));
        cr_assert_eq(s1[i], value(KEY_A, 2, off + i));
    }
    cr_assert_eq(version, round);
    cr_assert_eq(step, round + 1);
}

Test(checkpoint, crc32c_matches_the_standard_test_vectors)
{
    uint8_t zeros[32] = {0}, ones[32];
    memset(ones, 0xff, sizeof(ones));
    cr_assert_eq(ps_crc32c(0, "123456789", 9), 0xe3069283u);
    cr_assert_eq(ps_crc32c(0, zeros, 32), 0x8a9136aau); /* RFC 3720, B.4 */
    cr_assert_eq(ps_crc32c(0, ones, 32), 0x62a8ab43u);
    cr_assert_eq(ps_crc32c(ps_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
}

Test(checkpoint, values_come_back_by_any_element_range)
{
    make_dir();
    write_round(12, 2, 4); /* A: chunks [0,4) [4,8) [8,10) on shards 0, 1, 0 */
    ps_ckpt_set_t set;
    cr_assert_eq(ps_ckpt_set_open(&set, dir, 0), PSERV_OK, "%s", pserv_last_error());
    cr_assert_eq(set.round, 12);
    cr_assert_eq(set.num_servers, 2);
    cr_assert_eq(set.num_tensors, 2, "shard 1 does not name B, shard 0 does");
    cr_assert_eq(set.keys[0], KEY_B);
    cr_assert_eq(set.keys[1], KEY_A);
    check_range(&set, 0, COUNT_A, 12);
    check_range(&set, 3, 6, 12); /* across three old chunks */
    check_range(&set, 9, 1, 12);
    float p[COUNT_A], s0[COUNT_A];
    float *state[1] = {s0};
    uint64_t version, step;
    cr_assert_eq(ps_ckpt_set_fill(&set, KEY_A, 0, 4, p, state, 1, &version, &step), PSERV_ERR_MISMATCH);
    cr_assert(strstr(pserv_last_error(), "optimizer state arrays"), "%s", pserv_last_error());
    cr_assert_eq(ps_ckpt_set_fill(&set, 99, 0, 1, p, NULL, 0, &version, &step), PSERV_ERR_MISMATCH);
    cr_assert_eq(ps_ckpt_set_fill(&set, KEY_A, 8, 3, p, NULL, 0, &version, &step), PSERV_ERR_MISMATCH);
    cr_assert_eq(ps_ckpt_set_fill(&set, KEY_B, 0, COUNT_B, p, NULL, 0, &version, &step), PSERV_OK);
    for (uint32_t i = 0; i < COUNT_B; i++) cr_assert_eq(p[i], value(KEY_B, 0, i));
    ps_ckpt_set_close(&set);
    remove_dir();
}

/* Flips one byte of a file, returns what it was. */
static uint8_t flip(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t b = 0, x;
    cr_assert_eq(pread(fd, &b, 1, at), 1);
    x = b ^ 0x5a;
    cr_assert_eq(pwrite(fd, &x, 1, at), 1);
    close(fd);
    return b;
}

static void put_back(const char *path, off_t at, uint8_t b)
{
    int fd = open(path, O_RDWR);
    cr_assert_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

Test(checkpoint, every_damaged_header_byte_is_refused_naming_the_file)
{
    make_dir();
    write_round(4, 2, 4);
    char path[PS_CKPT_PATH_MAX];
    ps_ckpt_shard_path(dir, 4, 1, path, sizeof(path));
    ps_ckpt_set_t set;
    cr_assert_eq(ps_ckpt_set_open(&set, dir, 4), PSERV_OK);
    uint64_t header_len = set.hdrs[1].header_len;
    ps_ckpt_set_close(&set);
    for (off_t at = 0; at < (off_t)header_len; at++) {
        uint8_t b = flip(path, at);
        pserv_status_t st = ps_ckpt_set_open(&set, dir, 4);
        put_back(path, at, b);
        cr_assert_eq(st, PSERV_ERR_CORRUPT, "byte %ld of the header changed, yet: %s", (long)at, pserv_strerror(st));
        cr_assert(strstr(pserv_last_error(), "shard-1.ckpt"), "byte %ld: %s", (long)at, pserv_last_error());
    }
    /* The damaged round is refused, not passed over for an older one. */
    write_round(2, 2, 4);
    uint8_t b = flip(path, 0);
    uint64_t round = 0;
    cr_assert_eq(ps_ckpt_find_newest(dir, &round), PSERV_ERR_CORRUPT);
    cr_assert(strstr(pserv_last_error(), "bad magic"), "%s", pserv_last_error());
    put_back(path, 0, b);
    cr_assert_eq(ps_ckpt_find_newest(dir, &round), PSERV_OK);
    cr_assert_eq(round, 4);
    remove_dir();
}

Test(checkpoint, every_damaged_data_section_is_refused_naming_the_file)
{
    make_dir();
    write_round(8, 2, 4);
    ps_ckpt_set_t set;
    cr_assert_eq(ps_ckpt_set_open(&set, dir, 8), PSERV_OK);
    for (uint32_t f = 0; f < 2; f++) {
        const ps_ckpt_header_t *h = &set.hdrs[f];
        for (uint32_t i = 0; i < h->num_chunks; i++) {
            const ps_ckpt_chunk_t *c = &h->chunks[i];
            /* The last byte of the section: its last state array (or its parameters). */
            off_t at = (off_t)(c->data_off + ps_ckpt_section_len(c) - 1);
            uint8_t b = flip(set.names[f], at);
            float p[COUNT_A], s0[COUNT_A], s1[COUNT_A];
            float *state[2] = {s0, s1};
            uint64_t version, step;
            pserv_status_t st = ps_ckpt_set_fill(&set, c->key, c->offset, c->len, p, c->nstate ? state : NULL,
                                                 c->nstate, &version, &step);
            put_back(set.names[f], at, b);
            cr_assert_eq(st, PSERV_ERR_CORRUPT, "shard %u section %u", f, i);
            char want[64];
            snprintf(want, sizeof(want), "shard-%u.ckpt: data of tensor %llu chunk %u", f, (unsigned long long)c->key,
                     c->chunk);
            cr_assert(strstr(pserv_last_error(), want), "%s", pserv_last_error());
        }
    }
    ps_ckpt_set_close(&set);
    remove_dir();
}

Test(checkpoint, truncated_or_padded_files_are_refused)
{
    make_dir();
    write_round(3, 1, 4);
    char path[PS_CKPT_PATH_MAX];
    ps_ckpt_shard_path(dir, 3, 0, path, sizeof(path));
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    off_t sizes[] = {0, 10, 60, sb.st_size / 2, sb.st_size - 1, sb.st_size + 1};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        write_round(3, 1, 4);
        cr_assert_eq(truncate(path, sizes[i]), 0);
        ps_ckpt_set_t set;
        pserv_status_t st = ps_ckpt_set_open(&set, dir, 3);
        cr_assert_eq(st, PSERV_ERR_CORRUPT, "%ld bytes of %ld: %s", (long)sizes[i], (long)sb.st_size,
                     pserv_strerror(st));
        const char *e = pserv_last_error();
        cr_assert(strstr(e, "shard-0.ckpt") && (strstr(e, "truncated") || strstr(e, "trailing") || strstr(e, "CRC")),
                  "%ld bytes: %s", (long)sizes[i], e);
    }
    remove_dir();
}

Test(checkpoint, an_incomplete_round_is_passed_over_pruning_keeps_the_newest_and_a_resume_drops_what_is_after)
{
    make_dir();
    write_round(5, 2, 4);
    write_round(9, 2, 4);
    write_round(14, 2, 4);
    char path[PS_CKPT_PATH_MAX], other[PS_CKPT_PATH_MAX + 16];
    ps_ckpt_shard_path(dir, 14, 1, path, sizeof(path));
    cr_assert_eq(unlink(path), 0); /* a crash while round 14 was being written */
    snprintf(other, sizeof(other), "%s/notes.txt", dir);
    FILE *f = fopen(other, "w");
    fclose(f);
    uint64_t round = 0;
    cr_assert_eq(ps_ckpt_find_newest(dir, &round), PSERV_OK, "%s", pserv_last_error());
    cr_assert_eq(round, 9);
    ps_ckpt_prune(dir, round);
    char r5[PS_CKPT_PATH_MAX], r14[PS_CKPT_PATH_MAX];
    ps_ckpt_round_dir(dir, 5, r5, sizeof(r5));
    ps_ckpt_round_dir(dir, 14, r14, sizeof(r14));
    struct stat sb;
    cr_assert_neq(stat(r5, &sb), 0, "round 5 is older than the newest complete one: removed");
    cr_assert_eq(stat(r14, &sb), 0, "round 14 is newer: kept");
    cr_assert_eq(stat(other, &sb), 0, "not ours: kept");
    cr_assert_eq(ps_ckpt_find_newest(dir, &round), PSERV_OK);
    cr_assert_eq(round, 9);
    /* A job resumed from 9 drops what the killed one left of round 14: it writes that round anew. */
    ps_ckpt_drop_after(dir, round);
    cr_assert_neq(stat(r14, &sb), 0, "round 14, never completed, is dropped");
    cr_assert_eq(stat(other, &sb), 0, "not ours: kept");
    cr_assert_eq(ps_ckpt_find_newest(dir, &round), PSERV_OK);
    cr_assert_eq(round, 9, "the round resumed from stays");
    remove_dir();
}

Test(checkpoint, an_empty_directory_has_no_checkpoint)
{
    make_dir();
    uint64_t round = 0;
    cr_assert_eq(ps_ckpt_find_newest(dir, &round), PSERV_ERR_UNKNOWN_KEY);
    cr_assert(strstr(pserv_last_error(), "no complete checkpoint in"), "%s", pserv_last_error());
    pserv_checkpoint_h ck;
    cr_assert_eq(pserv_checkpoint_open("/nonexistent/pserv", 0, &ck), PSERV_ERR_UNKNOWN_KEY);
    remove_dir();
}
