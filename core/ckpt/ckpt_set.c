#include "ckpt_set.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Where every chunk of one tensor is: by chunk index, its file and its entry there. */
typedef struct {
    const ps_ckpt_tensor_t *t;
    uint32_t num_chunks;
    uint32_t *file;
    const ps_ckpt_chunk_t **entry;
} ps_ckpt_index_t;

void ps_ckpt_round_dir(const char *dir, uint64_t round, char *out, size_t cap)
{
    snprintf(out, cap, "%s/round-%012llu", dir, (unsigned long long)round);
}

void ps_ckpt_shard_path(const char *dir, uint64_t round, uint32_t rank, char *out, size_t cap)
{
    snprintf(out, cap, "%s/round-%012llu/shard-%u.ckpt", dir, (unsigned long long)round, rank);
}

/* The round a directory entry names ("round-000000000010"), or 0 when it names none. */
static uint64_t ps_ckpt_round_of(const char *name)
{
    if (strncmp(name, "round-", 6) != 0 || name[6] < '0' || name[6] > '9') return 0;
    char *end;
    unsigned long long r = strtoull(name + 6, &end, 10);
    return *end == '\0' ? r : 0;
}

static int ps_ckpt_by_round_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

/* The rounds dir has directories for, newest first; *n of them (a fresh array, or NULL). */
static uint64_t *ps_ckpt_list_rounds(const char *dir, size_t *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL) return NULL;
    size_t cap = 0;
    uint64_t *rounds = NULL;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        uint64_t r = ps_ckpt_round_of(e->d_name);
        if (r == 0) continue;
        if (*n == cap) {
            uint64_t *more = realloc(rounds, (cap = cap ? 2 * cap : 16) * sizeof(*rounds));
            if (more == NULL) break;
            rounds = more;
        }
        rounds[(*n)++] = r;
    }
    closedir(d);
    if (rounds) qsort(rounds, *n, sizeof(*rounds), ps_ckpt_by_round_desc);
    return rounds;
}

static void ps_ckpt_index_free(void *arg, void *value)
{
    (void)arg;
    ps_ckpt_index_t *ix = value;
    free(ix->file);
    free(ix->entry);
    free(ix);
}

void ps_ckpt_set_close(ps_ckpt_set_t *s)
{
    ps_keymap_each(&s->index, ps_ckpt_index_free, NULL);
    ps_keymap_fini(&s->index);
    for (uint32_t i = 0; s->fds && i < s->nfiles; i++) {
        if (s->fds[i] >= 0) close(s->fds[i]);
        ps_ckpt_header_free(&s->hdrs[i]);
    }
    free(s->fds);
    free(s->hdrs);
    free(s->names);
    free(s->keys);
    memset(s, 0, sizeof(*s));
}

static pserv_status_t ps_ckpt_set_bad(const ps_ckpt_set_t *s, uint32_t file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static pserv_status_t ps_ckpt_set_bad(const ps_ckpt_set_t *s, uint32_t file, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    ps_set_last_error("checkpoint %s: %s", s->names[file], why);
    return PSERV_ERR_CORRUPT;
}

/* A tensor of file f: indexed when first seen; every other file must describe it the same way. */
static pserv_status_t ps_ckpt_set_add_tensor(ps_ckpt_set_t *s, uint32_t f, const ps_ckpt_tensor_t *t, uint32_t *cap)
{
    const ps_ckpt_index_t *seen = ps_keymap_get(&s->index, t->key);
    if (seen != NULL) {
        if (ps_tensor_desc_same(&seen->t->desc, &t->desc) && seen->t->chunk_elems == t->chunk_elems) return PSERV_OK;
        return ps_ckpt_set_bad(s, f, "describes tensor %llu unlike another shard", (unsigned long long)t->key);
    }
    if (s->num_tensors == *cap) {
        uint64_t *more = realloc(s->keys, (*cap = *cap ? 2 * *cap : 16) * sizeof(*s->keys));
        if (more == NULL) return PSERV_ERR_NO_MEMORY;
        s->keys = more;
    }
    ps_ckpt_index_t *ix = calloc(1, sizeof(*ix));
    if (ix == NULL) return PSERV_ERR_NO_MEMORY;
    ix->t = t;
    ix->num_chunks = (uint32_t)((t->desc.count + t->chunk_elems - 1) / t->chunk_elems);
    ix->file = calloc(ix->num_chunks, sizeof(*ix->file));
    ix->entry = calloc(ix->num_chunks, sizeof(*ix->entry));
    if (ix->file == NULL || ix->entry == NULL || ps_keymap_put(&s->index, t->key, ix) < 0) {
        ps_ckpt_index_free(NULL, ix);
        return PSERV_ERR_NO_MEMORY;
    }
    s->keys[s->num_tensors++] = t->key;
    return PSERV_OK;
}

static int ps_ckpt_by_key(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The tensors of every file (a shard names those it holds chunks of), then every chunk's place. */
static pserv_status_t ps_ckpt_set_index(ps_ckpt_set_t *s)
{
    uint32_t cap = 0;
    pserv_status_t st = PSERV_OK;
    for (uint32_t f = 0; f < s->nfiles && st == PSERV_OK; f++)
        for (uint32_t i = 0; i < s->hdrs[f].num_tensors && st == PSERV_OK; i++)
            st = ps_ckpt_set_add_tensor(s, f, &s->hdrs[f].tensors[i], &cap);
    if (st < 0) return st;
    if (s->keys) qsort(s->keys, s->num_tensors, sizeof(*s->keys), ps_ckpt_by_key);
    for (uint32_t f = 0; f < s->nfiles; f++) {
        const ps_ckpt_header_t *h = &s->hdrs[f];
        for (uint32_t i = 0; i < h->num_chunks; i++) {
            const ps_ckpt_chunk_t *c = &h->chunks[i];
            ps_ckpt_index_t *ix = ps_keymap_get(&s->index, c->key);
            const ps_ckpt_chunk_t *other = ix->entry[c->chunk];
            /* Two copies of one round (a backup that took over wrote it too) must agree. */
            if (other != NULL && (other->version != c->version || other->data_crc != c->data_crc))
                return ps_ckpt_set_bad(s, f, "holds tensor %llu chunk %u unlike another shard's copy",
                                       (unsigned long long)c->key, c->chunk);
            if (other != NULL) continue;
            ix->entry[c->chunk] = c;
            ix->file[c->chunk] = f;
        }
    }
    return PSERV_OK;
}

static int ps_ckpt_by_rank(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The shard ranks with a file in a round's directory, ascending (a fresh array, or NULL). */
static uint32_t *ps_ckpt_list_shards(const char *round_dir, uint32_t *n)
{
    *n = 0;
    DIR *d = opendir(round_dir);
    if (d == NULL) return NULL;
    uint32_t cap = 0, *ranks = NULL;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        unsigned rank;
        int end = 0;
        if (sscanf(e->d_name, "shard-%u.ckpt%n", &rank, &end) != 1 || e->d_name[end] != '\0') continue;
        if (*n == cap) {
            uint32_t *more = realloc(ranks, (cap = cap ? 2 * cap : 16) * sizeof(*ranks));
            if (more == NULL) break;
            ranks = more;
        }
        ranks[(*n)++] = rank;
    }
    closedir(d);
    if (ranks) qsort(ranks, *n, sizeof(*ranks), ps_ckpt_by_rank);
    return ranks;
}

/* Opens and checks one shard file as file f of the set. */
static pserv_status_t ps_ckpt_set_file(ps_ckpt_set_t *s, const char *dir, uint32_t f, uint32_t rank)
{
    ps_ckpt_shard_path(dir, s->round, rank, s->names[f], PS_CKPT_PATH_MAX);
    int fd = open(s->names[f], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ps_set_last_error("checkpoint %s: %s", s->names[f], strerror(errno));
        return PSERV_ERR_IO;
    }
    ps_ckpt_header_t h;
    pserv_status_t st = ps_ckpt_read_header(fd, s->names[f], &h);
    if (st < 0) {
        close(fd);
        return st;
    }
    s->fds[f] = fd;
    s->hdrs[f] = h;
    s->bytes += h.file_len;
    if (f == 0) {
        s->num_servers = h.num_servers;
        s->mode = h.mode;
    }
    if (h.round != s->round || h.rank != rank || h.num_servers != s->num_servers || h.mode != s->mode)
        return ps_ckpt_set_bad(s, f, "says round %llu shard %u of %u servers, unlike its name or the other files",
                               (unsigned long long)h.round, h.rank, h.num_servers);
    return PSERV_OK;
}

/*
 * Opens every shard file of the round. The round is complete when they hold every chunk of every
 * tensor: a server that died (its chunks failed over) leaves no file and is not missed. *missing
 * = 1 (an error, not a damage) when chunks are missing and so are some shards' files: a round
 * still being written, or one a crash cut short.
 */
static pserv_status_t ps_ckpt_set_try(ps_ckpt_set_t *s, const char *dir, uint64_t round, int *missing)
{
    memset(s, 0, sizeof(*s));
    ps_keymap_init(&s->index);
    *missing = 0;
    s->round = round;
    ps_ckpt_round_dir(dir, round, s->dir, sizeof(s->dir));
    uint32_t nranks;
    uint32_t *ranks = ps_ckpt_list_shards(s->dir, &nranks);
    pserv_status_t st = PSERV_OK;
    if (nranks == 0) {
        *missing = 1;
        ps_set_last_error("checkpoint %s has no shard files", s->dir);
        free(ranks);
        return PSERV_ERR_UNKNOWN_KEY;
    }
    s->fds = malloc(nranks * sizeof(*s->fds));
    s->hdrs = calloc(nranks, sizeof(*s->hdrs));
    s->names = calloc(nranks, sizeof(*s->names));
    if (s->fds == NULL || s->hdrs == NULL || s->names == NULL) st = PSERV_ERR_NO_MEMORY;
    for (uint32_t f = 0; st == PSERV_OK && f < nranks; f++) s->fds[f] = -1;
    if (st == PSERV_OK) s->nfiles = nranks;
    for (uint32_t f = 0; st == PSERV_OK && f < nranks; f++) st = ps_ckpt_set_file(s, dir, f, ranks[f]);
    free(ranks);
    if (st == PSERV_OK) st = ps_ckpt_set_index(s);
    for (uint32_t i = 0; st == PSERV_OK && i < s->num_tensors; i++) {
        const ps_ckpt_index_t *ix = ps_keymap_get(&s->index, s->keys[i]);
        for (uint32_t c = 0; c < ix->num_chunks; c++)
            if (ix->entry[c] == NULL) {
                *missing = s->nfiles < s->num_servers;
                ps_set_last_error("checkpoint %s: no shard file holds tensor %llu chunk %u", s->dir,
                                  (unsigned long long)s->keys[i], c);
                st = *missing ? PSERV_ERR_UNKNOWN_KEY : PSERV_ERR_CORRUPT;
                break;
            }
    }
    if (st < 0) ps_ckpt_set_close(s);
    return st;
}

pserv_status_t ps_ckpt_find_newest(const char *dir, uint64_t *round)
{
    size_t n;
    uint64_t *rounds = ps_ckpt_list_rounds(dir, &n);
    pserv_status_t st = PSERV_ERR_UNKNOWN_KEY;
    ps_ckpt_set_t s;
    for (size_t i = 0; i < n; i++) {
        int missing;
        st = ps_ckpt_set_try(&s, dir, rounds[i], &missing);
        if (st == PSERV_OK) {
            *round = rounds[i];
            ps_ckpt_set_close(&s);
            break;
        }
        if (!missing) break; /* there but damaged: refused, not passed over */
        ps_info("checkpoint round %llu in %s is incomplete: passed over", (unsigned long long)rounds[i], dir);
        st = PSERV_ERR_UNKNOWN_KEY;
    }
    free(rounds);
    if (st == PSERV_ERR_UNKNOWN_KEY) ps_set_last_error("no complete checkpoint in %s", dir);
    return st;
}

pserv_status_t ps_ckpt_set_open(ps_ckpt_set_t *s, const char *dir, uint64_t round)
{
    pserv_status_t st = PSERV_OK;
    if (round == 0) st = ps_ckpt_find_newest(dir, &round);
    int missing;
    return st < 0 ? st : ps_ckpt_set_try(s, dir, round, &missing);
}

const ps_ckpt_tensor_t *ps_ckpt_set_tensor(const ps_ckpt_set_t *s, uint64_t key)
{
    const ps_ckpt_index_t *ix = ps_keymap_get(&s->index, key);
    return ix ? ix->t : NULL;
}

pserv_status_t ps_ckpt_set_fill(ps_ckpt_set_t *s, uint64_t key, uint64_t offset, uint64_t len, float *param,
                                float *const *state, uint32_t nstate, uint64_t *version, uint64_t *step)
{
    const ps_ckpt_index_t *ix = ps_keymap_get(&s->index, key);
    if (ix == NULL) {
        ps_set_last_error("checkpoint %s has no tensor %llu", s->dir, (unsigned long long)key);
        return PSERV_ERR_MISMATCH;
    }
    if (len == 0 || offset + len > ix->t->desc.count) {
        ps_set_last_error("checkpoint %s: elements %llu..%llu are beyond tensor %llu's %llu", s->dir,
                          (unsigned long long)offset, (unsigned long long)(offset + len), (unsigned long long)key,
                          (unsigned long long)ix->t->desc.count);
        return PSERV_ERR_MISMATCH;
    }
    uint64_t ce = ix->t->chunk_elems;
    *version = 0, *step = 0;
    float *buf = NULL;
    pserv_status_t st = PSERV_OK;
    for (uint64_t c = offset / ce; c <= (offset + len - 1) / ce && st == PSERV_OK; c++) {
        const ps_ckpt_chunk_t *e = ix->entry[c];
        if (state != NULL && e->nstate != nstate) {
            ps_set_last_error("checkpoint %s: tensor %llu has %u optimizer state arrays, this job's optimizer needs %u",
                              s->names[ix->file[c]], (unsigned long long)key, e->nstate, nstate);
            st = PSERV_ERR_MISMATCH;
            break;
        }
        if (e->version > *version) *version = e->version;
        if (e->step > *step) *step = e->step;
        if (param == NULL) continue;
        float *more = realloc(buf, ps_ckpt_section_len(e));
        if (more == NULL) {
            st = PSERV_ERR_NO_MEMORY;
            break;
        }
        buf = more;
        if ((st = ps_ckpt_read_section(s->fds[ix->file[c]], s->names[ix->file[c]], e, buf)) < 0) break;
        uint64_t lo = e->offset > offset ? e->offset : offset;
        uint64_t hi = e->offset + e->len < offset + len ? e->offset + e->len : offset + len;
        for (uint32_t a = 0; a <= (state ? nstate : 0); a++) {
            float *dst = a == 0 ? param : state[a - 1];
            memcpy(dst + (lo - offset), buf + (size_t)a * e->len + (lo - e->offset), (hi - lo) * sizeof(float));
        }
    }
    free(buf);
    return st;
}

static void ps_ckpt_remove_round(const char *dir, uint64_t round)
{
    char path[PS_CKPT_PATH_MAX];
    ps_ckpt_round_dir(dir, round, path, sizeof(path));
    DIR *d = opendir(path);
    if (d == NULL) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, "shard-", 6) != 0) continue; /* ours only: shard files and their temporaries */
        char file[PS_CKPT_PATH_MAX + 300];
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        unlink(file);
    }
    closedir(d);
    if (rmdir(path) != 0) ps_warn("cannot remove old checkpoint %s: %s", path, strerror(errno));
}

/* Removes the round directories of dir in [from, to). */
static void ps_ckpt_remove_rounds(const char *dir, uint64_t from, uint64_t to)
{
    size_t n;
    uint64_t *rounds = ps_ckpt_list_rounds(dir, &n);
    for (size_t i = 0; i < n; i++)
        if (rounds[i] >= from && rounds[i] < to) ps_ckpt_remove_round(dir, rounds[i]);
    free(rounds);
    ps_dir_sync(dir);
}

void ps_ckpt_prune(const char *dir, uint64_t keep)
{
    ps_ckpt_remove_rounds(dir, 0, keep);
}

void ps_ckpt_drop_after(const char *dir, uint64_t round)
{
    ps_ckpt_remove_rounds(dir, round + 1, UINT64_MAX);
}
