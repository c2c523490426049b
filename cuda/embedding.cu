/*
 * embedding.cu — row gather (embedding lookup, optionally scaled, and the beam reordering of
 * mt_index_rows) and its backward, a scatter-add (ids repeat: a token used twice in a batch gets both
 * gradients).
 *
 * The backward is deterministic (no float atomics, so two runs give the same bits): the positions are
 * sorted by (id, position) — a bitonic sort of 1024-key tiles in shared memory, then merge passes
 * that place every key by its rank in the partner run — and the first position of each id sums its
 * run's rows in position order and adds the sum to the id's gradient row.
 *
 * Ids come from device memory the host has not checked, so the kernels guard them: an id outside
 * [0, V) reads nothing (its output row is zeros) and receives no gradient (see table_rows for V). The
 * op layer checks ids of CPU tensors on the host.
 */
#include "common.cuh"

/* Rows are copied as raw 32-bit words at scale 1 (index_rows gathers I32 and other 4-byte tensors too),
 * else as f32 times scale. */
__global__ void embedding_fwd_kernel(uint32_t *out, const uint32_t *table, const int32_t *ids, int64_t N, int64_t C,
                                     int64_t V, float scale) {
    int64_t n = blockIdx.x;
    int32_t id = ids[n];
    bool ok = id >= 0 && (int64_t)id < V;
    const uint32_t *src = table + (int64_t)(ok ? id : 0) * C;
    uint32_t *dst = out + n * C;
    if (scale == 1.0f) {
        for (int64_t j = threadIdx.x; j < C; j += blockDim.x) dst[j] = ok ? src[j] : 0u;
    } else {
        for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
            dst[j] = ok ? __float_as_uint(__uint_as_float(src[j]) * scale) : 0u;
    }
}

#define EMB_TILE 1024
#define EMB_BAD 0xffffffffu /* the id half of the key of a guarded (out of range) id: sorts last */

/* keys (N): (id << 32 | position), sorted within each tile of EMB_TILE. */
__global__ void embedding_sort_tile_kernel(uint64_t *keys, const int32_t *ids, int64_t N, int64_t V) {
    __shared__ uint64_t s[EMB_TILE];
    int64_t base = (int64_t)blockIdx.x * EMB_TILE;
    for (int t = threadIdx.x; t < EMB_TILE; t += blockDim.x) {
        int64_t n = base + t;
        uint64_t k = ~(uint64_t)0;
        if (n < N) {
            int32_t id = ids[n];
            uint32_t hi = id >= 0 && (int64_t)id < V ? (uint32_t)id : EMB_BAD;
            k = (uint64_t)hi << 32 | (uint32_t)n;
        }
        s[t] = k;
    }
    __syncthreads();
    for (int size = 2; size <= EMB_TILE; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < EMB_TILE / 2; t += blockDim.x) {
                int lo = 2 * t - (t & (stride - 1)), hi = lo + stride;
                bool up = (lo & size) == 0;
                uint64_t a = s[lo], b = s[hi];
                if ((a > b) == up) {
                    s[lo] = b;
                    s[hi] = a;
                }
            }
            __syncthreads();
        }
    for (int t = threadIdx.x; t < EMB_TILE; t += blockDim.x)
        if (base + t < N) keys[base + t] = s[t];
}

/* One merge pass: runs of w sorted keys are merged in pairs. A key goes to its index in its run plus
 * the number of keys of the partner run below it (keys are unique: the position is in them). */
__global__ void embedding_merge_kernel(uint64_t *out, const uint64_t *in, int64_t N, int64_t w) {
    MT_GRID_STRIDE(i, N) {
        int64_t r = i / w, base = (r >> 1) * 2 * w, lo, hi, j;
        if ((r & 1) == 0) {
            lo = base + w;
            hi = base + 2 * w < N ? base + 2 * w : N;
            j = i - base;
        } else {
            lo = base;
            hi = base + w;
            j = i - base - w;
        }
        if (hi < lo) hi = lo;
        uint64_t k = in[i];
        int64_t a = lo, b = hi;
        while (a < b) {
            int64_t m = (a + b) >> 1;
            if (in[m] < k) a = m + 1;
            else b = m;
        }
        out[base + j + (a - lo)] = k;
    }
}

/* Block s: if sorted position s starts the run of its id, dtable[id] += scale * the run's rows, in position
 * order. */
__global__ void embedding_bwd_kernel(float *dtable, const float *dout, const uint64_t *keys, int64_t N, int64_t C,
                                     float scale) {
    int64_t s = blockIdx.x;
    uint32_t id = (uint32_t)(keys[s] >> 32);
    if (id == EMB_BAD || (s > 0 && (uint32_t)(keys[s - 1] >> 32) == id)) return;
    int64_t e = s + 1;
    while (e < N && (uint32_t)(keys[e] >> 32) == id) e++;
    float *dst = dtable + (int64_t)id * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
        float acc = 0.0f;
        for (int64_t k = s; k < e; k++) acc += dout[(int64_t)(uint32_t)keys[k] * C + j] * scale;
        dst[j] += acc;
    }
}

static int threads_for(int64_t C) {
    int t = (int)((C + 31) / 32 * 32);
    return t > 256 ? 256 : t;
}

/* Rows of a table: the backend table's signature has no V, so the guard uses the rows that fit in
 * the device allocation holding the table (the caching allocator knows its extent). A parameter table
 * is its own allocation, so that is V rounded up to the allocator's size class: an id past V reads or
 * writes padding of the same allocation, never other memory. Memory the allocator did not hand out
 * (unknown extent) is guarded against negative ids only. */
static int64_t table_rows(const mt_cuda_exec *cx, const void *table, int64_t C) {
    int64_t ext = mt_cuda_alloc_extent(cx->device, table);
    return ext < 0 ? (int64_t)INT32_MAX : ext / (C * (int64_t)sizeof(float));
}

extern "C" mt_status mt_cuda_embedding_fwd(mt_exec *ex, float *out, const float *table, const int32_t *ids,
                                           int64_t N, int64_t C, float scale) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    int64_t V = table_rows(cx, table, C);
    embedding_fwd_kernel<<<mt_grid_rows(N, 1), threads_for(C), 0, cx->stream>>>(
        (uint32_t *)out, (const uint32_t *)table, ids, N, C, V, scale);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_embedding_bwd(mt_exec *ex, float *dtable, const float *dout, const int32_t *ids,
                                           int64_t N, int64_t C, float scale) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    if (N > 0x7fffffffLL) return mt_error(MT_ERR_UNSUPPORTED, "cuda embedding backward: %lld positions (> 2^31)",
                                          (long long)N);
    int64_t V = table_rows(cx, dtable, C);
    void *scr = NULL;
    MT_TRY(mt_cuda_scratch(cx, (size_t)N * 2 * sizeof(uint64_t), &scr));
    uint64_t *a = (uint64_t *)scr, *b = a + N;
    embedding_sort_tile_kernel<<<(unsigned)((N + EMB_TILE - 1) / EMB_TILE), 512, 0, cx->stream>>>(a, ids, N, V);
    MT_LAUNCHED();
    for (int64_t w = EMB_TILE; w < N; w *= 2) {
        embedding_merge_kernel<<<mt_blocks(N, MT_THREADS), MT_THREADS, 0, cx->stream>>>(b, a, N, w);
        MT_LAUNCHED();
        uint64_t *t = a;
        a = b;
        b = t;
    }
    embedding_bwd_kernel<<<mt_grid_rows(N, 1), threads_for(C), 0, cx->stream>>>(dtable, dout, a, N, C, scale);
    MT_LAUNCHED();
    return MT_OK;
}
