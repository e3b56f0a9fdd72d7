/*
 * A map from 64-bit keys to pointers (open addressing, linear probing). Used for tensor
 * lookup on every push and pull: no allocation on lookup, growth only on insert.
 */
#ifndef PS_KEYMAP_H
#define PS_KEYMAP_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_status.h"

typedef struct {
    uint64_t *keys;
    void **values; /* NULL marks an empty slot */
    size_t cap, count;
} ps_keymap_t;

void ps_keymap_init(ps_keymap_t *map);
/* Frees the table (not the values). */
void ps_keymap_fini(ps_keymap_t *map);
void *ps_keymap_get(const ps_keymap_t *map, uint64_t key);
/* Inserts a new key (value not NULL). PSERV_ERR_EXISTS if present. */
pserv_status_t ps_keymap_put(ps_keymap_t *map, uint64_t key, void *value);
/* Calls fn on every value. */
void ps_keymap_each(const ps_keymap_t *map, void (*fn)(void *arg, void *value), void *arg);

#endif
