/*
 * alloc.c — counted system allocation and the bump arena (see alloc.h for the why).
 */
#include "core/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic uint64_t mt_alloc_count;

void mt_sys_alloc_count_add(uint64_t n) { atomic_fetch_add(&mt_alloc_count, n); }
uint64_t mt_sys_alloc_count(void) { return atomic_load(&mt_alloc_count); }

void *mt_sys_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (p) atomic_fetch_add(&mt_alloc_count, 1);
    return p;
}

void *mt_sys_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p) atomic_fetch_add(&mt_alloc_count, 1);
    return p;
}

void *mt_sys_realloc(void *ptr, size_t bytes) {
    void *p = realloc(ptr, bytes ? bytes : 1);
    if (p) atomic_fetch_add(&mt_alloc_count, 1);
    return p;
}

void mt_sys_free(void *ptr) { free(ptr); }

char *mt_sys_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = mt_sys_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void *host_block_alloc(void *user, size_t bytes) {
    (void)user;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    atomic_fetch_add(&mt_alloc_count, 1);
    return p;
}

static void host_block_free(void *user, void *ptr) {
    (void)user;
    free(ptr);
}

void mt_arena_init(mt_arena *a, size_t min_block, const mt_block_allocator *ba) {
    memset(a, 0, sizeof *a);
    a->min_block = min_block ? min_block : (1u << 20);
    if (ba) {
        a->ba = *ba;
    } else {
        a->host = 1;
        a->ba.alloc = host_block_alloc;
        a->ba.free = host_block_free;
    }
}

static mt_arena_block *arena_new_block(mt_arena *a, size_t size) {
    mt_arena_block *b = mt_sys_calloc(1, sizeof *b);
    if (!b) return NULL;
    b->mem = a->ba.alloc(a->ba.user, size);
    if (!b->mem) {
        mt_sys_free(b);
        return NULL;
    }
    b->size = size;
    return b;
}

void *mt_arena_alloc(mt_arena *a, size_t bytes, size_t align) {
    if (bytes == 0) bytes = 1;
    for (mt_arena_block *b = a->cur ? a->cur : a->head; b; b = b->next) {
        uintptr_t base = (uintptr_t)b->mem;
        size_t off = (size_t)((base + b->used + (align - 1)) & ~(uintptr_t)(align - 1)) - base;
        if (off + bytes <= b->size) {
            a->used += off + bytes - b->used;
            b->used = off + bytes;
            a->cur = b;
            if (a->used > a->high_water) a->high_water = a->used;
            return (char *)b->mem + off;
        }
        a->used += b->size - b->used; /* the tail of a block we leave behind counts as used */
        b->used = b->size;
    }
    size_t size = bytes + align > a->min_block ? bytes + align : a->min_block;
    mt_arena_block *nb = arena_new_block(a, size);
    if (!nb) return NULL;
    if (!a->head) {
        a->head = nb;
    } else {
        mt_arena_block *t = a->head;
        while (t->next) t = t->next;
        t->next = nb;
    }
    a->cur = nb;
    return mt_arena_alloc(a, bytes, align);
}

void mt_arena_reset(mt_arena *a) {
    /* More than one block: replace them by one of the high-water size so the next step of the same
     * shape is served from a single block with no new system allocation. */
    if (a->head && a->head->next) {
        size_t want = (a->host ? 2 * a->high_water : a->high_water + a->high_water / 8) + 4096;
        mt_arena_block *nb = arena_new_block(a, want > a->min_block ? want : a->min_block);
        if (nb) {
            mt_arena_block *b = a->head;
            while (b) {
                mt_arena_block *n = b->next;
                a->ba.free(a->ba.user, b->mem);
                mt_sys_free(b);
                b = n;
            }
            a->head = nb;
        }
    }
    for (mt_arena_block *b = a->head; b; b = b->next) b->used = 0;
    a->cur = a->head;
    a->used = 0;
}

mt_arena_mark mt_arena_get_mark(const mt_arena *a) {
    mt_arena_mark m = {a->cur, a->cur ? a->cur->used : 0, a->used};
    return m;
}

void mt_arena_rewind(mt_arena *a, mt_arena_mark m) {
    mt_arena_block *b = m.block ? m.block->next : a->head; /* the blocks filled after the mark */
    for (; b; b = b->next) b->used = 0;
    if (m.block) m.block->used = m.block_used;
    a->cur = m.block ? m.block : a->head;
    a->used = m.used;
}

void mt_arena_free(mt_arena *a) {
    mt_arena_block *b = a->head;
    while (b) {
        mt_arena_block *n = b->next;
        a->ba.free(a->ba.user, b->mem);
        mt_sys_free(b);
        b = n;
    }
    memset(a, 0, sizeof *a);
}

/* ---- pool ---- */

void mt_pool_init(mt_pool *p, const mt_block_allocator *ba) {
    memset(p, 0, sizeof *p);
    p->ba = *ba;
}

void *mt_pool_alloc(mt_pool *p, size_t bytes) {
    bytes = (bytes + 255) & ~(size_t)255;
    size_t slack = bytes / 4 + 65536; /* a free block up to this much larger is taken */
    int best = -1;
    for (int i = 0; i < p->n; i++) {
        mt_pool_block *b = &p->blocks[i];
        if (!b->in_use && b->size >= bytes && b->size - bytes <= slack && (best < 0 || b->size < p->blocks[best].size))
            best = i;
    }
    if (best < 0) {
        if (p->n == p->cap) {
            int cap = p->cap ? 2 * p->cap : 64;
            mt_pool_block *nb = mt_sys_realloc(p->blocks, sizeof *nb * (size_t)cap);
            if (!nb) return NULL;
            p->blocks = nb;
            p->cap = cap;
        }
        void *mem = p->ba.alloc(p->ba.user, bytes);
        if (!mem) return NULL;
        best = p->n++;
        p->blocks[best] = (mt_pool_block){mem, bytes, 0};
        p->total += bytes;
    }
    mt_pool_block *b = &p->blocks[best];
    b->in_use = 1;
    p->live += b->size;
    if (p->live > p->peak_live) p->peak_live = p->live;
    return b->mem;
}

void mt_pool_release(mt_pool *p, void *mem) {
    if (!mem) return;
    for (int i = p->n - 1; i >= 0; i--) {
        if (p->blocks[i].mem == mem && p->blocks[i].in_use) {
            p->blocks[i].in_use = 0;
            p->live -= p->blocks[i].size;
            return;
        }
    }
}

static void pool_give_back(mt_pool *p) {
    for (int i = 0; i < p->n; i++) p->ba.free(p->ba.user, p->blocks[i].mem);
    p->n = 0;
    p->total = 0;
}

void mt_pool_reset(mt_pool *p) {
    for (int i = 0; i < p->n; i++) p->blocks[i].in_use = 0;
    if (p->total > 2 * p->peak_live) pool_give_back(p);
    p->live = 0;
    p->peak_live = 0;
}

void mt_pool_free(mt_pool *p) {
    pool_give_back(p);
    mt_sys_free(p->blocks);
    memset(p, 0, sizeof *p);
}
