/*
 * hash.c — open-addressing hash tables for strings and 64-bit keys (see hash.h).
 */
#include "text/hash.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

uint64_t mt_hash_bytes(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ mt_hash_mix(w)) * 0x9E3779B97F4A7C15ull;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n) memcpy(&w, p, n);
    h = (h ^ mt_hash_mix(w ^ ((uint64_t)n << 59))) * 0x9E3779B97F4A7C15ull;
    return mt_hash_mix(h);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

mt_status mt_strmap_init(mt_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    size_t slots = pow2_at_least(expected * 2 + 1);
    m->slots = mt_sys_calloc(slots, sizeof *m->slots);
    m->cap = expected > 8 ? expected : 8;
    m->ents = mt_sys_malloc(m->cap * sizeof *m->ents);
    m->pool_cap = m->cap * 16;
    m->pool = mt_sys_malloc(m->pool_cap);
    m->mask = slots - 1;
    if (!m->slots || !m->ents || !m->pool) {
        mt_strmap_free(m);
        return mt_error(MT_ERR_NOMEM, "hash map: out of memory");
    }
    return MT_OK;
}

void mt_strmap_free(mt_strmap *m) {
    if (!m) return;
    mt_sys_free(m->slots);
    mt_sys_free(m->ents);
    mt_sys_free(m->pool);
    memset(m, 0, sizeof *m);
}

int64_t mt_strmap_find_h(const mt_strmap *m, const char *key, size_t len, uint64_t hash) {
    size_t i = (size_t)hash & m->mask;
    for (;;) {
        uint32_t s = m->slots[i];
        if (!s) return -1;
        const mt_strmap_entry *e = &m->ents[s - 1];
        if (e->hash == hash && e->len == len && (len == 0 || memcmp(m->pool + e->off, key, len) == 0)) return (int64_t)(s - 1);
        i = (i + 1) & m->mask;
    }
}

int64_t mt_strmap_find(const mt_strmap *m, const char *key, size_t len) {
    return mt_strmap_find_h(m, key, len, mt_hash_bytes(key, len));
}

static mt_status strmap_grow_slots(mt_strmap *m) {
    size_t ns = (m->mask + 1) * 2;
    uint32_t *slots = mt_sys_calloc(ns, sizeof *slots);
    if (!slots) return mt_error(MT_ERR_NOMEM, "hash map: out of memory (%zu slots)", ns);
    for (size_t k = 0; k < m->n; k++) {
        size_t i = (size_t)m->ents[k].hash & (ns - 1);
        while (slots[i]) i = (i + 1) & (ns - 1);
        slots[i] = (uint32_t)(k + 1);
    }
    mt_sys_free(m->slots);
    m->slots = slots;
    m->mask = ns - 1;
    return MT_OK;
}

mt_status mt_strmap_upsert_h(mt_strmap *m, const char *key, size_t len, uint64_t hash, int64_t init, size_t *index,
                             int *added) {
    size_t i = (size_t)hash & m->mask;
    for (;;) {
        uint32_t s = m->slots[i];
        if (!s) break;
        const mt_strmap_entry *e = &m->ents[s - 1];
        if (e->hash == hash && e->len == len && (len == 0 || memcmp(m->pool + e->off, key, len) == 0)) {
            if (index) *index = s - 1;
            if (added) *added = 0;
            return MT_OK;
        }
        i = (i + 1) & m->mask;
    }
    if (m->n >= UINT32_MAX - 1 || len > UINT32_MAX) return mt_error(MT_ERR_NOMEM, "hash map: too many or too long keys");
    if (m->n == m->cap) {
        size_t nc = m->cap * 2;
        mt_strmap_entry *ne = mt_sys_realloc(m->ents, nc * sizeof *ne);
        if (!ne) return mt_error(MT_ERR_NOMEM, "hash map: out of memory (%zu entries)", nc);
        m->ents = ne;
        m->cap = nc;
    }
    if (m->pool_len + len + 1 > m->pool_cap) {
        size_t nc = m->pool_cap * 2;
        while (nc < m->pool_len + len + 1) nc *= 2;
        char *np = mt_sys_realloc(m->pool, nc);
        if (!np) return mt_error(MT_ERR_NOMEM, "hash map: out of memory (%zu key bytes)", nc);
        m->pool = np;
        m->pool_cap = nc;
    }
    mt_strmap_entry *e = &m->ents[m->n];
    e->hash = hash;
    e->off = m->pool_len;
    e->len = (uint32_t)len;
    e->val = init;
    if (len) memcpy(m->pool + m->pool_len, key, len);
    m->pool[m->pool_len + len] = '\0';
    m->pool_len += len + 1;
    m->slots[i] = (uint32_t)(m->n + 1);
    if (index) *index = m->n;
    if (added) *added = 1;
    m->n++;
    if (m->n * 2 > m->mask + 1) return strmap_grow_slots(m);
    return MT_OK;
}

mt_status mt_strmap_upsert(mt_strmap *m, const char *key, size_t len, int64_t init, size_t *index, int *added) {
    return mt_strmap_upsert_h(m, key, len, mt_hash_bytes(key, len), init, index, added);
}

mt_status mt_u64map_init(mt_u64map *m, size_t expected) {
    memset(m, 0, sizeof *m);
    size_t slots = pow2_at_least(expected * 2 + 1);
    m->keys = mt_sys_malloc(slots * sizeof *m->keys);
    m->vals = mt_sys_malloc(slots * sizeof *m->vals);
    if (!m->keys || !m->vals) {
        mt_u64map_free(m);
        return mt_error(MT_ERR_NOMEM, "hash map: out of memory");
    }
    memset(m->keys, 0xFF, slots * sizeof *m->keys);
    m->mask = slots - 1;
    return MT_OK;
}

void mt_u64map_free(mt_u64map *m) {
    if (!m) return;
    mt_sys_free(m->keys);
    mt_sys_free(m->vals);
    memset(m, 0, sizeof *m);
}

static int u64map_grow(mt_u64map *m) {
    size_t ns = (m->mask + 1) * 2;
    uint64_t *keys = mt_sys_malloc(ns * sizeof *keys);
    int64_t *vals = mt_sys_malloc(ns * sizeof *vals);
    if (!keys || !vals) {
        mt_sys_free(keys);
        mt_sys_free(vals);
        return 0;
    }
    memset(keys, 0xFF, ns * sizeof *keys);
    for (size_t i = 0; i <= m->mask; i++) {
        if (m->keys[i] == MT_U64MAP_EMPTY) continue;
        size_t j = (size_t)mt_hash_mix(m->keys[i]) & (ns - 1);
        while (keys[j] != MT_U64MAP_EMPTY) j = (j + 1) & (ns - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    mt_sys_free(m->keys);
    mt_sys_free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->mask = ns - 1;
    return 1;
}

int64_t *mt_u64map_upsert(mt_u64map *m, uint64_t key, int64_t init, int *added) {
    if ((m->n + 1) * 2 > m->mask + 1 && !u64map_grow(m)) return NULL;
    size_t i = (size_t)mt_hash_mix(key) & m->mask;
    for (;;) {
        uint64_t k = m->keys[i];
        if (k == key) {
            if (added) *added = 0;
            return &m->vals[i];
        }
        if (k == MT_U64MAP_EMPTY) break;
        i = (i + 1) & m->mask;
    }
    m->keys[i] = key;
    m->vals[i] = init;
    m->n++;
    if (added) *added = 1;
    return &m->vals[i];
}
