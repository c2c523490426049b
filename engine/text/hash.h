/*
 * hash.h — the hash tables the text pipeline is built on, written by hand (open addressing, linear
 * probing, power-of-two capacity, load factor <= 1/2):
 *   mt_strmap  byte string -> int64 (vocabularies, word counts); keys are copied into the map's pool
 *   mt_u64map  uint64 -> int64 (BPE merges and pair statistics keyed by (left id << 32 | right id))
 * Entries are never removed; an entry index is stable for the life of the map, so callers can keep
 * indices instead of pointers.
 */
#ifndef MT_TEXT_HASH_H
#define MT_TEXT_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

static inline uint64_t mt_hash_mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* 64-bit hash of a byte string, eight bytes per round. */
uint64_t mt_hash_bytes(const void *data, size_t n);

typedef struct mt_strmap_entry {
    uint64_t hash;
    uint64_t off; /* key bytes at pool + off, followed by a NUL */
    uint32_t len;
    int64_t val;
} mt_strmap_entry;

typedef struct mt_strmap {
    uint32_t *slots; /* entry index + 1; 0 is empty */
    size_t mask;     /* slot count - 1 */
    mt_strmap_entry *ents;
    size_t n, cap;
    char *pool;
    size_t pool_len, pool_cap;
} mt_strmap;

mt_status mt_strmap_init(mt_strmap *m, size_t expected);
void mt_strmap_free(mt_strmap *m);
/* Index of key's entry, or -1. */
int64_t mt_strmap_find(const mt_strmap *m, const char *key, size_t len);
int64_t mt_strmap_find_h(const mt_strmap *m, const char *key, size_t len, uint64_t hash);
/* Index of key's entry, inserting it with value init when absent (*added says which). */
mt_status mt_strmap_upsert(mt_strmap *m, const char *key, size_t len, int64_t init, size_t *index, int *added);
mt_status mt_strmap_upsert_h(mt_strmap *m, const char *key, size_t len, uint64_t hash, int64_t init, size_t *index,
                             int *added);
static inline const char *mt_strmap_key(const mt_strmap *m, size_t i) { return m->pool + m->ents[i].off; }

typedef struct mt_u64map {
    uint64_t *keys; /* MT_U64MAP_EMPTY marks a free slot */
    int64_t *vals;
    size_t mask, n;
} mt_u64map;

#define MT_U64MAP_EMPTY UINT64_MAX

mt_status mt_u64map_init(mt_u64map *m, size_t expected);
void mt_u64map_free(mt_u64map *m);
/* Pointer to key's value, or NULL. */
static inline int64_t *mt_u64map_get(const mt_u64map *m, uint64_t key) {
    size_t i = (size_t)mt_hash_mix(key) & m->mask;
    for (;;) {
        uint64_t k = m->keys[i];
        if (k == key) return &m->vals[i];
        if (k == MT_U64MAP_EMPTY) return NULL;
        i = (i + 1) & m->mask;
    }
}
/* Pointer to key's value, inserting init when absent. key must not be MT_U64MAP_EMPTY. NULL on
 * allocation failure. */
int64_t *mt_u64map_upsert(mt_u64map *m, uint64_t key, int64_t init, int *added);

#endif
