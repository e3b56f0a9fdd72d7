#include "keymap.h"

#include <stdlib.h>

void ps_keymap_init(ps_keymap_t *map)
{
    map->keys = NULL;
    map->values = NULL;
    map->cap = map->count = 0;
}

void ps_keymap_fini(ps_keymap_t *map)
{
    free(map->keys);
    free(map->values);
    ps_keymap_init(map);
}

static size_t ps_keymap_slot(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

void *ps_keymap_get(const ps_keymap_t *map, uint64_t key)
{
    if (map->cap == 0) return NULL;
    for (size_t i = ps_keymap_slot(key, map->cap);; i = (i + 1) & (map->cap - 1)) {
        if (map->values[i] == NULL) return NULL;
        if (map->keys[i] == key) return map->values[i];
    }
}

static void ps_keymap_insert(uint64_t *keys, void **values, size_t cap, uint64_t key, void *value)
{
    size_t i = ps_keymap_slot(key, cap);
    while (values[i] != NULL) i = (i + 1) & (cap - 1);
    keys[i] = key;
    values[i] = value;
}

pserv_status_t ps_keymap_put(ps_keymap_t *map, uint64_t key, void *value)
{
    if (value == NULL) return PSERV_ERR_INVALID_ARG;
    if (ps_keymap_get(map, key) != NULL) return PSERV_ERR_EXISTS;
    if ((map->count + 1) * 10 > map->cap * 7) { /* keep the load under 0.7 */
        size_t cap = map->cap ? map->cap * 2 : 16;
        uint64_t *keys = calloc(cap, sizeof(*keys));
        void **values = calloc(cap, sizeof(*values));
        if (keys == NULL || values == NULL) {
            free(keys);
            free(values);
            return PSERV_ERR_NO_MEMORY;
        }
        for (size_t i = 0; i < map->cap; i++)
            if (map->values[i]) ps_keymap_insert(keys, values, cap, map->keys[i], map->values[i]);
        free(map->keys);
        free(map->values);
        map->keys = keys;
        map->values = values;
        map->cap = cap;
    }
    ps_keymap_insert(map->keys, map->values, map->cap, key, value);
    map->count++;
    return PSERV_OK;
}

void ps_keymap_each(const ps_keymap_t *map, void (*fn)(void *arg, void *value), void *arg)
{
    for (size_t i = 0; i < map->cap; i++)
        if (map->values[i]) fn(arg, map->values[i]);
}
