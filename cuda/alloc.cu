/*
 * alloc.cu — the caching device allocator (one pool per device) and pinned host memory.
 *
 * Why: cudaMalloc/cudaFree are slow and synchronise the device, and the engine promises that a
 * training step after warm-up asks nothing of the system. So freed device blocks are kept and handed
 * out again; cudaFree is only called when cudaMalloc runs out of memory (the cache is released and the
 * allocation retried) or when mt_cuda_release_cache is asked for. Every real cudaMalloc and
 * cudaHostAlloc is counted through mt_sys_alloc_count_add, so the "no allocation after warm-up" test
 * covers device memory too.
 *
 * Size classes: requests below 64 MiB are rounded up to one of 8 steps per power of two (at most
 * 12.5% waste) and served from an exact free list of that size; larger ones are rounded to 2 MiB and
 * served best-fit from one list of large blocks (within 12.5% of the request).
 *
 * Streams: a freed block may still be read by kernels queued on any live context's stream (a weight
 * is read by every context that uses the model), and another context may ask for memory next. So a
 * freed block goes to a pending list with an event recorded on the stream of every live context of
 * the device; it becomes reusable once all its events have fired (cudaEventQuery: the host never
 * waits for that). An allocation that finds nothing reusable takes new memory; only when the device
 * is out of memory does the allocator synchronise the device (counted in n_sync_reuse), settle every
 * pending block and retry. In steady state (the step arenas keep their blocks) nothing is freed.
 *
 * One mutex guards all pools: allocations are rare after warm-up.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define MT_MAX_DEVICES 64
#define LARGE_MIN ((size_t)64 << 20)
#define LARGE_ROUND ((size_t)2 << 20)
#define N_CLASSES (64 * 9)
#define MAX_FREE_EVENTS 32 /* live streams a pending block tracks; beyond, it waits for a device sync */

enum { BLK_FREE = 0, BLK_USED = 1, BLK_PENDING = 2 };

typedef struct blk {
    void *ptr;
    size_t size;         /* rounded size actually allocated */
    int state;
    struct blk *next;    /* free list / pending list link */
    struct blk *all;     /* every block of the pool */
    int n_ev;            /* pending: events to wait for (-1: wait for a device synchronisation) */
    cudaEvent_t ev[MAX_FREE_EVENTS];
} blk;

typedef struct pool {
    int init;
    blk *free_small[N_CLASSES];
    blk *free_large;
    blk *pending;
    blk *all;
    blk **table; /* open addressing, ptr -> blk */
    size_t table_cap, table_n;
    cudaEvent_t *ev_free; /* spare events for pending blocks */
    int ev_n, ev_cap;
    mt_cuda_alloc_stats st;
} pool;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pool g_pools[MT_MAX_DEVICES];

/* ---- size classes ---- */

static int floor_log2(size_t x) { return 63 - __builtin_clzll((unsigned long long)x); }

static size_t round_size(size_t b) {
    if (b <= 512) return 512;
    if (b >= LARGE_MIN) return (b + LARGE_ROUND - 1) / LARGE_ROUND * LARGE_ROUND;
    int k = floor_log2(b - 1); /* 2^k < b <= 2^(k+1) */
    size_t step = ((size_t)1 << k) >> 3;
    return (b + step - 1) / step * step;
}

/* Class index of a rounded small size: 2^k + m * 2^(k-3), m in 1..8 (512 itself: k = 8, m = 8 of k-1). */
static int class_of(size_t rs) {
    int k = floor_log2(rs - 1);
    size_t step = ((size_t)1 << k) >> 3;
    int m = (int)((rs - ((size_t)1 << k)) / step); /* 1..8 */
    return k * 9 + m;
}

/* ---- pointer table ---- */

static size_t hash_ptr(const void *p, size_t cap) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static int table_put(pool *pl, blk *b);

static int table_rebuild(pool *pl, size_t cap) {
    blk **t = (blk **)mt_sys_calloc(cap, sizeof *t);
    if (!t) return 0;
    mt_sys_free(pl->table);
    pl->table = t;
    pl->table_cap = cap;
    pl->table_n = 0;
    for (blk *b = pl->all; b; b = b->all) table_put(pl, b);
    return 1;
}

static int table_put(pool *pl, blk *b) {
    if ((pl->table_n + 1) * 2 > pl->table_cap) {
        /* The new block is already on pl->all, so the rebuild inserts it. */
        return table_rebuild(pl, pl->table_cap ? pl->table_cap * 2 : 256);
    }
    size_t i = hash_ptr(b->ptr, pl->table_cap);
    while (pl->table[i]) i = (i + 1) & (pl->table_cap - 1);
    pl->table[i] = b;
    pl->table_n++;
    return 1;
}

static blk *table_get(pool *pl, const void *p) {
    if (!pl->table_cap) return NULL;
    size_t i = hash_ptr(p, pl->table_cap);
    while (pl->table[i]) {
        if (pl->table[i]->ptr == p) return pl->table[i];
        i = (i + 1) & (pl->table_cap - 1);
    }
    return NULL;
}

/* ---- free lists ---- */

static void push_free(pool *pl, blk *b) {
    b->state = BLK_FREE;
    if (b->size >= LARGE_MIN) {
        b->next = pl->free_large;
        pl->free_large = b;
    } else {
        int c = class_of(b->size);
        b->next = pl->free_small[c];
        pl->free_small[c] = b;
    }
}

static blk *take_free(pool *pl, size_t rs) {
    if (rs < LARGE_MIN) {
        int c = class_of(rs);
        blk *b = pl->free_small[c];
        if (b) pl->free_small[c] = b->next;
        return b;
    }
    blk **best = NULL;
    for (blk **pp = &pl->free_large; *pp; pp = &(*pp)->next) {
        size_t s = (*pp)->size;
        if (s >= rs && s - rs <= rs / 8 && (!best || s < (*best)->size)) best = pp;
    }
    if (!best) return NULL;
    blk *b = *best;
    *best = b->next;
    return b;
}

static void event_put(pool *pl, cudaEvent_t e) {
    if (pl->ev_n == pl->ev_cap) {
        int cap = pl->ev_cap ? pl->ev_cap * 2 : 64;
        cudaEvent_t *n = (cudaEvent_t *)mt_sys_malloc((size_t)cap * sizeof *n);
        if (!n) {
            (void)cudaEventDestroy(e);
            return;
        }
        if (pl->ev_n) memcpy(n, pl->ev_free, (size_t)pl->ev_n * sizeof *n);
        mt_sys_free(pl->ev_free);
        pl->ev_free = n;
        pl->ev_cap = cap;
    }
    pl->ev_free[pl->ev_n++] = e;
}

/* Pending blocks whose events have all fired become free; with wait, the device is synchronised
 * first so every pending block does. */
static mt_status settle_pending(pool *pl, int wait) {
    if (!pl->pending) return MT_OK;
    if (wait) {
        MT_CK(mt_cuda_host_wait(cudaDeviceSynchronize()));
        pl->st.n_sync_reuse++;
    }
    blk **pp = &pl->pending;
    while (*pp) {
        blk *b = *pp;
        int ready = wait || b->n_ev >= 0;
        for (int i = 0; ready && !wait && i < b->n_ev; i++) {
            cudaError_t q = cudaEventQuery(b->ev[i]);
            if (q == cudaErrorNotReady) {
                (void)cudaGetLastError();
                ready = 0;
            } else {
                MT_CK(q);
            }
        }
        if (!ready) {
            pp = &b->next;
            continue;
        }
        for (int i = 0; i < b->n_ev; i++) event_put(pl, b->ev[i]);
        b->n_ev = 0;
        *pp = b->next;
        push_free(pl, b);
    }
    return MT_OK;
}

/* cudaFree of every free block (pending ones settled first). cudaFree waits for the device. */
static mt_status release_free(pool *pl) {
    MT_TRY(settle_pending(pl, 1));
    blk **pp = &pl->all;
    size_t released = 0;
    while (*pp) {
        blk *b = *pp;
        if (b->state == BLK_FREE) {
            *pp = b->all;
            cudaError_t e = cudaFree(b->ptr);
            if (e != cudaSuccess) (void)cudaGetLastError();
            pl->st.n_free++;
            pl->st.bytes_reserved -= b->size;
            mt_sys_free(b);
            released++;
        } else {
            pp = &b->all;
        }
    }
    memset(pl->free_small, 0, sizeof pl->free_small);
    pl->free_large = NULL;
    if (released && !table_rebuild(pl, pl->table_cap ? pl->table_cap : 256))
        return mt_error(MT_ERR_NOMEM, "cuda allocator: out of host memory");
    return MT_OK;
}

static mt_status pool_alloc(int device, pool *pl, void **ptr, size_t bytes) {
    size_t rs = round_size(bytes ? bytes : 1);
    blk *b = take_free(pl, rs);
    if (!b && pl->pending) {
        MT_TRY(settle_pending(pl, 0));
        b = take_free(pl, rs);
    }
    if (b) {
        pl->st.n_reuse++;
    } else {
        void *p = NULL;
        cudaError_t e = cudaMalloc(&p, rs);
        if (e == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            MT_TRY(release_free(pl));
            e = cudaMalloc(&p, rs);
        }
        if (e != cudaSuccess) {
            mt_cuda_fail(e, "cudaMalloc", __FILE__, __LINE__);
            return mt_error_prefix(e == cudaErrorMemoryAllocation ? MT_ERR_NOMEM : MT_ERR_CUDA,
                                   "cuda:%d: allocating %zu bytes (%.1f MiB reserved, %.1f MiB in use): ", device,
                                   bytes, (double)pl->st.bytes_reserved / 1048576.0,
                                   (double)pl->st.bytes_in_use / 1048576.0);
        }
        mt_sys_alloc_count_add(1);
        b = (blk *)mt_sys_calloc(1, sizeof *b);
        if (!b) {
            cudaFree(p);
            return mt_error(MT_ERR_NOMEM, "cuda allocator: out of host memory");
        }
        b->ptr = p;
        b->size = rs;
        b->all = pl->all;
        pl->all = b;
        if (!table_put(pl, b)) return mt_error(MT_ERR_NOMEM, "cuda allocator: out of host memory");
        pl->st.n_malloc++;
        pl->st.bytes_reserved += rs;
    }
    b->state = BLK_USED;
    b->next = NULL;
    pl->st.bytes_in_use += b->size;
    *ptr = b->ptr;
    return MT_OK;
}

extern "C" mt_status mt_cuda_malloc(int device, void **ptr, size_t bytes) {
    if (!ptr) return mt_error(MT_ERR_INVALID_ARG, "cuda alloc: ptr is NULL");
    if (device < 0 || device >= MT_MAX_DEVICES)
        return mt_error(MT_ERR_NO_DEVICE, "cuda:%d: not a CUDA device index", device);
    int prev = -1;
    MT_TRY(mt_cuda_set_device(device, &prev));
    pthread_mutex_lock(&g_lock);
    pool *pl = &g_pools[device];
    pl->init = 1;
    mt_status st = pool_alloc(device, pl, ptr, bytes);
    pthread_mutex_unlock(&g_lock);
    if (prev >= 0 && prev != device) (void)cudaSetDevice(prev);
    return st;
}

extern "C" void mt_cuda_free(int device, void *ptr) {
    if (!ptr || device < 0 || device >= MT_MAX_DEVICES) return;
    cudaStream_t streams[MAX_FREE_EVENTS + 1];
    int ns = mt_cuda_live_streams(device, streams, MAX_FREE_EVENTS + 1);
    int prev = -1;
    int switched = mt_cuda_set_device(device, &prev) == MT_OK;
    pthread_mutex_lock(&g_lock);
    pool *pl = &g_pools[device];
    blk *b = table_get(pl, ptr);
    if (!b || b->state != BLK_USED) {
        pthread_mutex_unlock(&g_lock);
        mt_log(MT_LOG_ERROR, "cuda:%d: free of %p: %s (ignored)", device, ptr,
               b ? "already freed" : "not allocated by the caching allocator");
        if (switched && prev >= 0 && prev != device) (void)cudaSetDevice(prev);
        return;
    }
    pl->st.bytes_in_use -= b->size;
    b->state = BLK_PENDING;
    b->n_ev = 0;
    for (int i = 0; i < ns && b->n_ev >= 0; i++) {
        cudaEvent_t e = NULL;
        if (ns > MAX_FREE_EVENTS || !switched ||
            (pl->ev_n ? (e = pl->ev_free[--pl->ev_n], false)
                      : cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) ||
            cudaEventRecord(e, streams[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            if (e) event_put(pl, e);
            for (int j = 0; j < b->n_ev; j++) event_put(pl, b->ev[j]);
            b->n_ev = -1; /* reusable after a device synchronisation only */
            break;
        }
        b->ev[b->n_ev++] = e;
    }
    b->next = pl->pending;
    pl->pending = b;
    pthread_mutex_unlock(&g_lock);
    if (switched && prev >= 0 && prev != device) (void)cudaSetDevice(prev);
}

extern "C" mt_status mt_cuda_release_cache(int device) {
    if (device < 0 || device >= MT_MAX_DEVICES) return mt_error(MT_ERR_NO_DEVICE, "cuda:%d: no such device", device);
    int prev = -1;
    MT_TRY(mt_cuda_set_device(device, &prev));
    pthread_mutex_lock(&g_lock);
    mt_status st = g_pools[device].init ? release_free(&g_pools[device]) : MT_OK;
    pthread_mutex_unlock(&g_lock);
    if (prev >= 0 && prev != device) (void)cudaSetDevice(prev);
    return st;
}

extern "C" mt_status mt_cuda_alloc_stats_get(int device, mt_cuda_alloc_stats *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "cuda alloc stats: out is NULL");
    if (device < 0 || device >= MT_MAX_DEVICES || device >= mt_cuda_device_count())
        return mt_error(MT_ERR_NO_DEVICE, "cuda:%d: no such device", device);
    pthread_mutex_lock(&g_lock);
    *out = g_pools[device].st;
    pthread_mutex_unlock(&g_lock);
    return MT_OK;
}

extern "C" int64_t mt_cuda_alloc_extent(int device, const void *p) {
    if (!p || device < 0 || device >= MT_MAX_DEVICES) return -1;
    int64_t ext = -1;
    uintptr_t a = (uintptr_t)p;
    pthread_mutex_lock(&g_lock);
    pool *pl = &g_pools[device];
    blk *b = table_get(pl, p); /* the common case: p starts its allocation */
    if (b && b->state == BLK_USED) {
        ext = (int64_t)b->size;
    } else {
        for (b = pl->all; b; b = b->all) {
            uintptr_t s = (uintptr_t)b->ptr;
            if (b->state == BLK_USED && a >= s && a < s + b->size) {
                ext = (int64_t)(s + b->size - a);
                break;
            }
        }
    }
    pthread_mutex_unlock(&g_lock);
    return ext;
}

/* Pinned host memory (staging buffers): page-locked so copies from it are asynchronous DMA. */
extern "C" mt_status mt_cuda_host_alloc(void **ptr, size_t bytes) {
    MT_CK(cudaHostAlloc(ptr, bytes ? bytes : 1, cudaHostAllocPortable));
    mt_sys_alloc_count_add(1);
    return MT_OK;
}

extern "C" void mt_cuda_host_free(void *ptr) {
    if (!ptr) return;
    if (cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
}
