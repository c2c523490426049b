/*
 * vec.cuh — 128-bit vectorised loads and stores for the memory-bound kernels (elementwise, casts,
 * softmax, norms, AdamW). A kernel is written once over groups of W consecutive elements and
 * instantiated twice: W = 4 (a float4 per access: one 16-byte load or store, four times fewer memory
 * instructions) and W = 1 (the scalar loop). The launcher picks W = 4 only when every pointer the
 * kernel touches is 16-byte aligned (mt_vec_ok) and, for row kernels, the row length is a multiple of
 * 4 (so every row starts aligned); otherwise W = 1. In a flat kernel the last group of a length that is
 * not a multiple of W is partial: mt_vld / mt_vst load and store it element by element (the scalar
 * tail), so any length is handled by either instantiation.
 *
 * bf16 has its own widths: eight bf16 (16 bytes) per access for the casts, four (8 bytes) where a
 * kernel writes a bf16 copy of a float4 group (the norms).
 *
 * Every launch that takes a vector path is counted (mt_cuda_count_vector_launches), so a test can
 * show which path ran.
 */
#ifndef MT_CUDA_VEC_CUH
#define MT_CUDA_VEC_CUH

#include "common.cuh"

/* Floats per 128-bit access. */
#define MT_VEC 4

/* True when every pointer is 16-byte aligned (a NULL, absent operand counts as aligned). */
template <typename... P>
__host__ __device__ __forceinline__ bool mt_vec_ok(P... p) {
    return (((((uintptr_t)(const void *)p) & 15u) == 0) && ...);
}

/* A grid-stride loop over the groups of W consecutive elements of [0, n): i is the group's first
 * element. Launch it with mt_blocks((n + W - 1) / W, threads). */
#define MT_GRID_STRIDE_VEC(i, n, W)                                                          \
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * (W); i < (n);        \
         i += (int64_t)gridDim.x * blockDim.x * (W))

/* r[k] = p[i + k] for k < W (elements at or past n read as 0): 128-bit loads when the group is whole
 * and W is a multiple of 4 (p + i 16-byte aligned: the launcher's check). */
template <int W>
__device__ __forceinline__ void mt_vld(const float *p, int64_t i, int64_t n, float (&r)[W]) {
    if constexpr (W % 4 == 0) {
        if (i + W <= n) {
#pragma unroll
            for (int q = 0; q < W / 4; q++) {
                float4 v = *reinterpret_cast<const float4 *>(p + i + 4 * q);
                r[4 * q] = v.x, r[4 * q + 1] = v.y, r[4 * q + 2] = v.z, r[4 * q + 3] = v.w;
            }
            return;
        }
    }
#pragma unroll
    for (int k = 0; k < W; k++) r[k] = i + k < n ? p[i + k] : 0.0f;
}

/* p[i + k] = r[k] for k < W and i + k < n. */
template <int W>
__device__ __forceinline__ void mt_vst(float *p, int64_t i, int64_t n, const float (&r)[W]) {
    if constexpr (W % 4 == 0) {
        if (i + W <= n) {
#pragma unroll
            for (int q = 0; q < W / 4; q++) {
                float4 v;
                v.x = r[4 * q], v.y = r[4 * q + 1], v.z = r[4 * q + 2], v.w = r[4 * q + 3];
                *reinterpret_cast<float4 *>(p + i + 4 * q) = v;
            }
            return;
        }
    }
#pragma unroll
    for (int k = 0; k < W; k++)
        if (i + k < n) p[i + k] = r[k];
}

/* The same for bf16 data (W of 4: 8-byte accesses, 8: 16-byte accesses), converted to/from f32 with the
 * CPU's rounding (core/numeric.h). */
template <int W>
__device__ __forceinline__ void mt_vld_bf16(const uint16_t *p, int64_t i, int64_t n, float (&r)[W]) {
    if constexpr (W == 4 || W == 8) {
        if (i + W <= n) {
            uint32_t u[W / 2];
            if constexpr (W == 8) {
                uint4 v = *reinterpret_cast<const uint4 *>(p + i);
                u[0] = v.x, u[1] = v.y, u[2] = v.z, u[3] = v.w;
            } else {
                uint2 v = *reinterpret_cast<const uint2 *>(p + i);
                u[0] = v.x, u[1] = v.y;
            }
#pragma unroll
            for (int k = 0; k < W / 2; k++) {
                r[2 * k] = mt_bf16_to_f32((uint16_t)(u[k] & 0xffffu));
                r[2 * k + 1] = mt_bf16_to_f32((uint16_t)(u[k] >> 16));
            }
            return;
        }
    }
#pragma unroll
    for (int k = 0; k < W; k++) r[k] = i + k < n ? mt_bf16_to_f32(p[i + k]) : 0.0f;
}

template <int W>
__device__ __forceinline__ void mt_vst_bf16(uint16_t *p, int64_t i, int64_t n, const float (&r)[W]) {
    if constexpr (W == 4 || W == 8) {
        if (i + W <= n) {
            uint32_t u[W / 2];
#pragma unroll
            for (int k = 0; k < W / 2; k++)
                u[k] = (uint32_t)mt_f32_to_bf16(r[2 * k]) | ((uint32_t)mt_f32_to_bf16(r[2 * k + 1]) << 16);
            if constexpr (W == 8) {
                uint4 v;
                v.x = u[0], v.y = u[1], v.z = u[2], v.w = u[3];
                *reinterpret_cast<uint4 *>(p + i) = v;
            } else {
                uint2 v;
                v.x = u[0], v.y = u[1];
                *reinterpret_cast<uint2 *>(p + i) = v;
            }
            return;
        }
    }
#pragma unroll
    for (int k = 0; k < W; k++)
        if (i + k < n) p[i + k] = mt_f32_to_bf16(r[k]);
}

/* Counts a launch that took a vector path (mt_cuda_counters.vector_launches). */
void mt_cuda_count_vector_launches(uint64_t n);

#endif
