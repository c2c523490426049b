/*
 * alloc.h — counted system allocation and the bump arena.
 *
 * All engine allocations of host memory go through mt_sys_*, which count them, so a test can show that
 * a training step after warm-up makes no system allocation. An arena hands out memory from large
 * blocks and is reset (not freed) after each step; on reset it merges its blocks into one block of the
 * high-water size, so the next step of the same shape fits without asking the system again. A host
 * arena's merged block is twice the high water: the system commits host pages only when first
 * written, so the slack costs address space, not memory, while a block replaced every time a step
 * grows a little (decoding chunks of rising lengths) is written into fresh pages each time, a page
 * fault per 4 KB (a tenth of an int8 decoding run's time was the kernel zeroing them). A device
 * arena's memory is committed when allocated: its merged block keeps 1/8 slack.
 *
 * A pool holds blocks that are handed out and given back one by one within a step: the gradients of
 * intermediate tensors, each needed only until the backward of the op that made the tensor has run.
 * A request takes the smallest free block that fits with little waste, else a new block; a reset
 * makes every block free again (and gives them all back to the system when the pool grew to more
 * than twice the step's peak, as when batch shapes change), so steps of one shape allocate nothing.
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
    int host;             /* the default host block allocator: merged blocks of 2 x high water */
    mt_block_allocator ba;
} mt_arena;

/* ba may be NULL for host memory. */
void mt_arena_init(mt_arena *a, size_t min_block, const mt_block_allocator *ba);
/* align must be a power of two. NULL when the block allocator fails. */
void *mt_arena_alloc(mt_arena *a, size_t bytes, size_t align);
void mt_arena_reset(mt_arena *a);
/* Where the arena stands; rewinding to it gives back everything allocated since (blocks are kept). */
typedef struct mt_arena_mark {
    mt_arena_block *block; /* the block being filled then (NULL: nothing was allocated) */
    size_t block_used, used;
} mt_arena_mark;
mt_arena_mark mt_arena_get_mark(const mt_arena *a);
void mt_arena_rewind(mt_arena *a, mt_arena_mark m);
void mt_arena_free(mt_arena *a);

typedef struct mt_pool_block {
    void *mem;
    size_t size;
    int in_use;
} mt_pool_block;

typedef struct mt_pool {
    mt_pool_block *blocks;
    int n, cap;
    size_t total;      /* bytes of all blocks */
    size_t live;       /* bytes of blocks in use */
    size_t peak_live;  /* largest `live` since the last reset */
    mt_block_allocator ba;
} mt_pool;

/* ba is copied (the allocator of the memory the pool hands out). */
void mt_pool_init(mt_pool *p, const mt_block_allocator *ba);
/* A block of at least bytes; NULL when the allocator fails. */
void *mt_pool_alloc(mt_pool *p, size_t bytes);
/* Gives back a block from mt_pool_alloc (NULL: nothing). */
void mt_pool_release(mt_pool *p, void *mem);
/* Every block free; all given back to the allocator when the pool outgrew twice its peak. */
void mt_pool_reset(mt_pool *p);
void mt_pool_free(mt_pool *p);

#endif
