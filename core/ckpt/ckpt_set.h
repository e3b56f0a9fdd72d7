/*
 * A checkpoint: the files of every shard at one round, under DIR/round-<R>/shard-<rank>.ckpt.
 * A round is complete when its files hold every chunk of every tensor (a server that died and
 * whose chunks failed over leaves no file). Opening one reads and checks every header and indexes every chunk of every tensor, so
 * values can be read back by element range: a job resumed onto another server count cuts its
 * tensors into other chunks and fills each from whichever old chunks cover it.
 */
#ifndef PS_CKPT_SET_H
#define PS_CKPT_SET_H

#include <stdint.h>

#include "ckpt_file.h"
#include "ckpt_io.h"
#include "keymap.h"

typedef struct {
    char dir[PS_CKPT_PATH_MAX]; /* DIR/round-<R> */
    uint64_t round;
    uint32_t num_servers, mode; /* as the files say: the job's server count */
    uint32_t nfiles;            /* files found: a server that died leaves none */
    int *fds;
    char (*names)[PS_CKPT_PATH_MAX];
    ps_ckpt_header_t *hdrs;
    ps_keymap_t index; /* key -> ps_ckpt_index_t */
    uint32_t num_tensors;
    uint64_t *keys;    /* every tensor's key (shards name the tensors they hold chunks of), ascending */
    uint64_t bytes;    /* of every file together */
} ps_ckpt_set_t;

/* DIR/round-<R> (zero-padded, so names sort by round) and DIR/round-<R>/shard-<rank>.ckpt. */
void ps_ckpt_round_dir(const char *dir, uint64_t round, char *out, size_t cap);
void ps_ckpt_shard_path(const char *dir, uint64_t round, uint32_t rank, char *out, size_t cap);

/*
 * The newest round complete in dir into *round: rounds with missing shard files (a checkpoint
 * still being written, or one a crash cut short) are passed over; a file that is there but
 * damaged is an error naming it. PSERV_ERR_UNKNOWN_KEY when dir holds no complete checkpoint.
 */
pserv_status_t ps_ckpt_find_newest(const char *dir, uint64_t *round);
/* Opens round (0: the newest complete) of dir; errors name the file and the problem. */
pserv_status_t ps_ckpt_set_open(ps_ckpt_set_t *s, const char *dir, uint64_t round);
void ps_ckpt_set_close(ps_ckpt_set_t *s);
/* A tensor of the checkpoint, or NULL. */
const ps_ckpt_tensor_t *ps_ckpt_set_tensor(const ps_ckpt_set_t *s, uint64_t key);
/*
 * Reads elements [offset, offset + len) of tensor key: parameters into param, and the nstate
 * optimizer state arrays into state[] (the checkpoint must have exactly nstate of them);
 * *version and *step get those of the covering chunks (the largest). Every section read is
 * checked against its CRC. NULL param skips the values (only version and step are read); NULL
 * state reads the parameters only.
 */
pserv_status_t ps_ckpt_set_fill(ps_ckpt_set_t *s, uint64_t key, uint64_t offset, uint64_t len, float *param,
                                float *const *state, uint32_t nstate, uint64_t *version, uint64_t *step);
/* Removes the round directories of dir older than keep (only what this format names). */
void ps_ckpt_prune(const char *dir, uint64_t keep);
/* Removes the round directories of dir newer than round: what a killed job left of rounds never
 * completed, which a job resumed from round would otherwise write beside (with other servers). */
void ps_ckpt_drop_after(const char *dir, uint64_t round);

#endif
