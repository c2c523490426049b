/*
 * adamw.cu — the fused AdamW update of one parameter: one pass reads p, g, m, v and writes p, m, v,
 * with the element formula the CPU backend uses (mt_adamw_elem, core/numeric.h: PyTorch's order of float
 * operations).
 * The master weights, moments and gradients are f32 in every precision mode. adamw_clip reads the
 * clipping scale's input (the squared global norm) from device memory, so the host never waits for it.
 *
 * Multi-tensor step (sumsq_multi, adamw_multi) and the step's bf16/f16 copy of the weights
 * (cast_multi): every parameter together, in chunks of MT_CHUNK elements; a block takes one chunk. The table of slots and chunks is built on the host, copied once
 * per call through the staging ring (one async copy), and read by the kernels; the norm is summed per
 * chunk in double and the chunk sums added in chunk order (no atomics: the same bits every run).
 *
 * Every kernel reads and writes float4 groups (vec.cuh) where the pointers allow it: the per-tensor
 * kernels by the launcher's check, the multi-tensor ones per slot on the device (a chunk starts at a
 * multiple of MT_CHUNK, so an aligned tensor gives aligned chunks).
 */
#include <string.h>

#include "common.cuh"
#include "vec.cuh"

#define MT_CHUNK 32768

typedef struct mt_chunk {
    int32_t slot, pad;
    int64_t start;
} mt_chunk;

/* AdamW over the group of W elements at i of [0, end) (mt_adamw_elem, element by element); with
 * zero_grad the group's gradients become 0. */
template <int W>
__device__ __forceinline__ void adamw_group(float *p, float *g, float *m, float *v, int64_t i, int64_t end,
                                            bool update, int zero_grad, float lr, float b1, float b2, float eps,
                                            float wd, float step_size, float sqrt_bc2, float scale) {
    float pv[W], gv[W], mv[W], vv[W];
    if (update) {
        mt_vld<W>(p, i, end, pv);
        mt_vld<W>(g, i, end, gv);
        mt_vld<W>(m, i, end, mv);
        mt_vld<W>(v, i, end, vv);
#pragma unroll
        for (int k = 0; k < W; k++)
            mt_adamw_elem(&pv[k], gv[k], &mv[k], &vv[k], lr, b1, b2, eps, wd, step_size, sqrt_bc2, scale);
        mt_vst<W>(p, i, end, pv);
        mt_vst<W>(m, i, end, mv);
        mt_vst<W>(v, i, end, vv);
    }
    if (zero_grad) {
        float z[W] = {};
        mt_vst<W>(g, i, end, z);
    }
}

template <int W>
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                             float eps, float wd, float step_size, float sqrt_bc2, float grad_scale) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        adamw_group<W>(p, (float *)g, m, v, i, n, true, 0, lr, b1, b2, eps, wd, step_size, sqrt_bc2, grad_scale);
    }
}

extern "C" mt_status mt_cuda_adamw(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                                   float b1, float b2, float eps, float wd, float bc1, float bc2, float grad_scale) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    if (mt_vec_ok(p, g, m, v)) {
        adamw_kernel<MT_VEC><<<mt_blocks((n + MT_VEC - 1) / MT_VEC, MT_THREADS), MT_THREADS, 0, cx->stream>>>(
            p, g, m, v, n, lr, b1, b2, eps, wd, lr / bc1, sqrtf(bc2), grad_scale);
        mt_cuda_count_vector_launches(1);
    } else {
        adamw_kernel<1><<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, cx->stream>>>(p, g, m, v, n, lr, b1, b2, eps, wd,
                                                                                 lr / bc1, sqrtf(bc2), grad_scale);
    }
    MT_LAUNCHED();
    return MT_OK;
}

template <int W>
__global__ void adamw_clip_kernel(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                                  float b2, float eps, float wd, float step_size, float sqrt_bc2, const float *ss,
                                  double clip) {
    float scale = mt_clip_scale(*ss, clip);
    if (isnan(scale)) return; /* non-finite norm: no update */
    MT_GRID_STRIDE_VEC(i, n, W) {
        adamw_group<W>(p, (float *)g, m, v, i, n, true, 0, lr, b1, b2, eps, wd, step_size, sqrt_bc2, scale);
    }
}

extern "C" mt_status mt_cuda_adamw_clip(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                                        float lr, float b1, float b2, float eps, float wd, float bc1, float bc2,
                                        const float *ss, double clip_norm) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    if (mt_vec_ok(p, g, m, v)) {
        adamw_clip_kernel<MT_VEC><<<mt_blocks((n + MT_VEC - 1) / MT_VEC, MT_THREADS), MT_THREADS, 0, cx->stream>>>(
            p, g, m, v, n, lr, b1, b2, eps, wd, lr / bc1, sqrtf(bc2), ss, clip_norm);
        mt_cuda_count_vector_launches(1);
    } else {
        adamw_clip_kernel<1><<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, cx->stream>>>(
            p, g, m, v, n, lr, b1, b2, eps, wd, lr / bc1, sqrtf(bc2), ss, clip_norm);
    }
    MT_LAUNCHED();
    return MT_OK;
}

__global__ void sumsq_chunks_kernel(double *partial, const mt_adamw_slot *slots, const mt_chunk *chunks) {
    __shared__ double sh[32];
    mt_chunk c = chunks[blockIdx.x];
    const mt_adamw_slot s = slots[c.slot];
    int64_t end = c.start + MT_CHUNK < s.n ? c.start + MT_CHUNK : s.n;
    double acc = 0.0;
    if (mt_vec_ok(s.g)) {
        for (int64_t i = c.start + (int64_t)threadIdx.x * MT_VEC; i < end; i += (int64_t)blockDim.x * MT_VEC) {
            float gv[MT_VEC];
            mt_vld<MT_VEC>(s.g, i, end, gv);
#pragma unroll
            for (int k = 0; k < MT_VEC; k++) acc += (double)gv[k] * (double)gv[k];
        }
    } else {
        for (int64_t i = c.start + threadIdx.x; i < end; i += blockDim.x) acc += (double)s.g[i] * (double)s.g[i];
    }
    acc = mt_block_sum_d(acc, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void adamw_multi_kernel(const mt_adamw_slot *slots, const mt_chunk *chunks, float lr, float b1, float b2,
                                   float eps, float step_size, float sqrt_bc2, const float *ss, double clip,
                                   int zero_grad) {
    float scale = mt_clip_scale(*ss, clip);
    bool update = !isnan(scale); /* a non-finite norm: no update */
    mt_chunk c = chunks[blockIdx.x];
    const mt_adamw_slot s = slots[c.slot];
    int64_t end = c.start + MT_CHUNK < s.n ? c.start + MT_CHUNK : s.n;
    if (mt_vec_ok(s.p, s.g, s.m, s.v)) {
        for (int64_t i = c.start + (int64_t)threadIdx.x * MT_VEC; i < end; i += (int64_t)blockDim.x * MT_VEC)
            adamw_group<MT_VEC>(s.p, s.g, s.m, s.v, i, end, update, zero_grad, lr, b1, b2, eps, s.wd, step_size,
                                sqrt_bc2, scale);
    } else {
        for (int64_t i = c.start + threadIdx.x; i < end; i += blockDim.x)
            adamw_group<1>(s.p, s.g, s.m, s.v, i, end, update, zero_grad, lr, b1, b2, eps, s.wd, step_size, sqrt_bc2,
                           scale);
    }
}

/* Whether some slot takes the kernels' float4 path (for the vector launch counter). */
static bool any_vec(const mt_adamw_slot *s, int n, bool grad_only) {
    for (int i = 0; i < n; i++)
        if (grad_only ? mt_vec_ok(s[i].g) : mt_vec_ok(s[i].p, s[i].g, s[i].m, s[i].v)) return true;
    return false;
}

/* The elements of slot i of a table of slot_bytes-sized slots (mt_adamw_slot or mt_cast_slot). */
template <typename S>
static int64_t slot_n(const void *slots, int i) {
    return ((const S *)slots)[i].n;
}

/* The slot and chunk table in device scratch (extra bytes after it for the caller), copied from a host
 * table built in the context's host scratch. *n_chunks 0: nothing to do. */
template <typename S>
static mt_status upload_table(mt_exec *ex, mt_cuda_exec *cx, const S *slots, int n_slots, size_t extra_per_chunk,
                              S **dslots, mt_chunk **dchunks, void **dextra, int64_t *n_chunks) {
    int64_t nc = 0;
    for (int i = 0; i < n_slots; i++) nc += (slot_n<S>(slots, i) + MT_CHUNK - 1) / MT_CHUNK;
    *n_chunks = nc;
    if (nc == 0) return MT_OK;
    if (nc > 0x7fffffffLL) return mt_error(MT_ERR_UNSUPPORTED, "cuda multi-tensor step: %lld chunks", (long long)nc);
    size_t sb = ((size_t)n_slots * sizeof(S) + 15) & ~(size_t)15, cb = (size_t)nc * sizeof(mt_chunk);
    unsigned char *host = (unsigned char *)mt_exec_scratch(ex, sb + cb);
    if (!host) return mt_error(MT_ERR_NOMEM, "cuda multi-tensor step: out of host memory for %d slots", n_slots);
    memcpy(host, slots, (size_t)n_slots * sizeof(S));
    mt_chunk *hc = (mt_chunk *)(host + sb);
    int64_t k = 0;
    for (int i = 0; i < n_slots; i++)
        for (int64_t st = 0; st < slot_n<S>(slots, i); st += MT_CHUNK) {
            hc[k].slot = i;
            hc[k].pad = 0;
            hc[k].start = st;
            k++;
        }
    void *dev = NULL;
    MT_TRY(mt_cuda_scratch(cx, sb + cb + (size_t)nc * extra_per_chunk, &dev));
    MT_TRY(ex->backend->to_device(ex, dev, host, sb + cb));
    *dslots = (S *)dev;
    *dchunks = (mt_chunk *)((unsigned char *)dev + sb);
    *dextra = (unsigned char *)dev + sb + cb;
    return MT_OK;
}

extern "C" mt_status mt_cuda_sumsq_multi(mt_exec *ex, float *out, const mt_adamw_slot *slots, int n_slots,
                                         int accumulate) {
    MT_CUDA_ENTER(ex, cx);
    mt_adamw_slot *ds = NULL;
    mt_chunk *dc = NULL;
    void *partial = NULL;
    int64_t nc = 0;
    MT_TRY(upload_table(ex, cx, slots, n_slots, sizeof(double), &ds, &dc, &partial, &nc));
    if (nc > 0) {
        sumsq_chunks_kernel<<<(unsigned)nc, MT_THREADS, 0, cx->stream>>>((double *)partial, ds, dc);
        if (any_vec(slots, n_slots, true)) mt_cuda_count_vector_launches(1);
        MT_LAUNCHED();
    }
    MT_TRY(mt_cuda_sum_partials(cx, out, (const double *)partial, (int)nc, accumulate));
    return MT_OK;
}

extern "C" mt_status mt_cuda_adamw_multi(mt_exec *ex, const mt_adamw_slot *slots, int n_slots, float lr, float b1,
                                         float b2, float eps, float bc1, float bc2, const float *ss, double clip_norm,
                                         int zero_grad) {
    MT_CUDA_ENTER(ex, cx);
    mt_adamw_slot *ds = NULL;
    mt_chunk *dc = NULL;
    void *unused = NULL;
    int64_t nc = 0;
    MT_TRY(upload_table(ex, cx, slots, n_slots, 0, &ds, &dc, &unused, &nc));
    if (nc == 0) return MT_OK;
    adamw_multi_kernel<<<(unsigned)nc, MT_THREADS, 0, cx->stream>>>(ds, dc, lr, b1, b2, eps, lr / bc1, sqrtf(bc2), ss,
                                                                    clip_norm, zero_grad);
    if (any_vec(slots, n_slots, false)) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}

__global__ void cast_multi_kernel(const mt_cast_slot *slots, const mt_chunk *chunks, mt_dtype to) {
    mt_chunk c = chunks[blockIdx.x];
    const mt_cast_slot s = slots[c.slot];
    int64_t end = c.start + MT_CHUNK < s.n ? c.start + MT_CHUNK : s.n;
    uint16_t *out = (uint16_t *)s.dst;
    if (to == MT_DTYPE_BF16 && mt_vec_ok(s.src, s.dst)) { /* eight per step: a 16-byte store */
        for (int64_t i = c.start + (int64_t)threadIdx.x * 8; i < end; i += (int64_t)blockDim.x * 8) {
            float r[8];
            mt_vld<8>(s.src, i, end, r);
            mt_vst_bf16<8>(out, i, end, r);
        }
        return;
    }
    for (int64_t i = c.start + threadIdx.x; i < end; i += blockDim.x)
        out[i] = to == MT_DTYPE_BF16 ? mt_f32_to_bf16(s.src[i]) : mt_f32_to_f16(s.src[i]);
}

extern "C" mt_status mt_cuda_cast_multi(mt_exec *ex, const mt_cast_slot *slots, int n_slots, mt_dtype to) {
    MT_CUDA_ENTER(ex, cx);
    if (to != MT_DTYPE_BF16 && to != MT_DTYPE_F16)
        return mt_error(MT_ERR_DTYPE, "cuda cast_multi: the target dtype must be bf16 or f16 (got %d)", (int)to);
    mt_cast_slot *ds = NULL;
    mt_chunk *dc = NULL;
    void *unused = NULL;
    int64_t nc = 0;
    MT_TRY(upload_table(ex, cx, slots, n_slots, 0, &ds, &dc, &unused, &nc));
    if (nc == 0) return MT_OK;
    cast_multi_kernel<<<(unsigned)nc, MT_THREADS, 0, cx->stream>>>(ds, dc, to);
    bool vec = false;
    for (int i = 0; i < n_slots && to == MT_DTYPE_BF16; i++) vec = vec || mt_vec_ok(slots[i].src, slots[i].dst);
    if (vec) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}
