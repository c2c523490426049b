/*
 * embedding.cu — row gather (embedding lookup, and the beam reordering of mt_index_rows) and its
 * backward, an atomic scatter-add (ids repeat: a token used twice in a batch gets both gradients).
 *
 * Ids come from device memory the host has not checked, so the kernels guard them: an id outside
 * [0, V) reads nothing (its output row is zeros) and receives no gradient (see table_rows for V). The
 * op layer checks ids of CPU tensors on the host.
 */
#include "common.cuh"

/* Rows are copied as raw 32-bit words: index_rows gathers I32 and other 4-byte tensors too. */
__global__ void embedding_fwd_kernel(uint32_t *out, const uint32_t *table, const int32_t *ids, int64_t N, int64_t C,
                                     int64_t V) {
    int64_t n = blockIdx.x;
    int32_t id = ids[n];
    bool ok = id >= 0 && (int64_t)id < V;
    const uint32_t *src = table + (int64_t)(ok ? id : 0) * C;
    uint32_t *dst = out + n * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) dst[j] = ok ? src[j] : 0u;
}

__global__ void embedding_bwd_kernel(float *dtable, const float *dout, const int32_t *ids, int64_t N, int64_t C,
                                     int64_t V) {
    int64_t n = blockIdx.x;
    int32_t id = ids[n];
    if (id < 0 || (int64_t)id >= V) return;
    float *dst = dtable + (int64_t)id * C;
    const float *g = dout + n * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) atomicAdd(dst + j, g[j]);
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
                                           int64_t N, int64_t C) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    int64_t V = table_rows(cx, table, C);
    embedding_fwd_kernel<<<mt_grid_rows(N, 1), threads_for(C), 0, cx->stream>>>(
        (uint32_t *)out, (const uint32_t *)table, ids, N, C, V);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_embedding_bwd(mt_exec *ex, float *dtable, const float *dout, const int32_t *ids,
                                           int64_t N, int64_t C) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    int64_t V = table_rows(cx, dtable, C);
    embedding_bwd_kernel<<<mt_grid_rows(N, 1), threads_for(C), 0, cx->stream>>>(dtable, dout, ids, N, C, V);
    MT_LAUNCHED();
    return MT_OK;
}
