/*
 * alloc.h — counted system allocation and the bump arena.
 *
 * All engine allocations of host memory go through mt_sys_*, which count them, so a test can show that
 * a training step after warm-up makes no system allocation. An arena hands out memory from large
 * blocks and is reset (not freed) after each step; on reset it merges its blocks into one block of the
 * high-water size, so the next step of the same shape fits without asking the system again.
 */
#ifndef MT_CORE_ALLOC_H
#define MT_CORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *mt_sys_malloc(size_t bytes);
void *mt_sys_calloc(size_t n, size_t size);
void *mt_sys_realloc(void *ptr, size_t bytes);
void mt_sys_free(void *ptr);
char *mt_sys_strdup(const char *s);
/* Number of successful system allocations (malloc, calloc, growing realloc, block allocs) so far. */
uint64_t mt_sys_alloc_count(void);
/* Backends that allocate device memory count through this too. */
void mt_sys_alloc_count_add(uint64_t n);

/* Where an arena gets its blocks: host memory by default, device memory for a GPU context. */
typedef struct mt_block_allocator {
    void *(*alloc)(void *user, size_t bytes); /* NULL on failure */
    void (*free)(void *user, void *ptr);
    void *user;
} mt_block_allocator;

typedef struct mt_arena_block {
    struct mt_arena_block *next;
    void *mem;   /* block memory (from the block allocator) */
    size_t size; /* bytes */
    size_t used; /* bytes handed out since the last reset */
} mt_arena_block;

typedef struct mt_arena {
    mt_arena_block *head; /* blocks in allocation order */
    mt_arena_block *cur;  /* the block being filled */
    size_t min_block;     /* smallest block asked of the allocator */
    size_t used;          /* bytes handed out since the last reset (padding included) */
    size_t high_water;    /* largest `used` ever seen */
    mt_block_allocator ba;
} mt_arena;

/* ba may be NULL for host memory. */
void mt_arena_init(mt_arena *a, size_t min_block, const mt_block_allocator *ba);
/* align must be a power of two. NULL when the block allocator fails. */
void *mt_arena_alloc(mt_arena *a, size_t bytes, size_t align);
void mt_arena_reset(mt_arena *a);
void mt_arena_free(mt_arena *a);

#endif
