/*
 * softmax.cu — softmax / log_softmax over the last axis of x (N, C) and their backward.
 *
 * The forward reads a row twice: once for the running max and sum (online softmax: the sum is
 * rescaled when the max grows), once to write. A fully masked row (every element -inf) behaves as on
 * the CPU: sum 0, so softmax gives NaN (0 * inf) and log_softmax NaN (-inf + inf), as PyTorch does.
 */
#include "common.cuh"
#include "vec.cuh"

/* W (vec.cuh): a thread takes W consecutive columns per step, float4 accesses when W is 4. */
template <bool BLOCK, int W>
__global__ void softmax_fwd_kernel(float *out, const float *x, int64_t N, int64_t C, int log) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    if (row >= N) return;
    const float *xr = x + row * C;
    float *o = out + row * C;
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        float xv[W];
        mt_vld<W>(xr, j, C, xv);
#pragma unroll
        for (int k = 0; k < W; k++) {
            float v = j + k < C ? xv[k] : -INFINITY;
            if (v == -INFINITY) continue; /* contributes 0; keeps -inf - -inf out of the sum */
            if (v > m) {
                s = s * expf(m - v) + 1.0f;
                m = v;
            } else {
                s += expf(v - m);
            }
        }
    }
    float M = grp_max<BLOCK>(m, sh);
    float S = grp_sum<BLOCK>(m == -INFINITY ? 0.0f : s * expf(m - M), sh);
    if (M == -INFINITY) M = 0.0f;
    float ls = logf(S) + M, inv = 1.0f / S;
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        float xv[W];
        mt_vld<W>(xr, j, C, xv);
#pragma unroll
        for (int k = 0; k < W; k++) xv[k] = log ? xv[k] - ls : expf(xv[k] - M) * inv;
        mt_vst<W>(o, j, C, xv);
    }
}

template <bool BLOCK, int W>
__global__ void softmax_bwd_kernel(float *dx, const float *dy, const float *y, int64_t N, int64_t C, int log) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    if (row >= N) return;
    const float *g = dy + row * C, *yr = y + row * C;
    float *d = dx + row * C;
    float acc = 0.0f;
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        float gv[W], yv[W];
        mt_vld<W>(g, j, C, gv);
        if (!log) mt_vld<W>(yr, j, C, yv);
#pragma unroll
        for (int k = 0; k < W; k++) acc += log ? gv[k] : gv[k] * yv[k];
    }
    float s = grp_sum<BLOCK>(acc, sh);
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        float gv[W], yv[W], dv[W];
        mt_vld<W>(g, j, C, gv);
        mt_vld<W>(yr, j, C, yv);
        mt_vld<W>(d, j, C, dv);
#pragma unroll
        for (int k = 0; k < W; k++) /* log: dx = dy - softmax * sum(dy); else dx = y * (dy - sum(dy * y)) */
            dv[k] += log ? gv[k] - expf(yv[k]) * s : yv[k] * (gv[k] - s);
        mt_vst<W>(d, j, C, dv);
    }
}

/* KERNEL<BLOCK, W> for rows of C: a warp per row up to MT_WARP_ROW_MAX, else a block; W = MT_VEC when
 * C is a multiple of it and the pointers are 16-byte aligned. */
#define SOFTMAX_LAUNCH(KERNEL, vec, stream, ...)                                                   \
    do {                                                                                          \
        if (C <= MT_WARP_ROW_MAX) {                                                               \
            if (vec) KERNEL<false, MT_VEC><<<mt_grid_rows(N, 8), 256, 0, stream>>>(__VA_ARGS__);  \
            else KERNEL<false, 1><<<mt_grid_rows(N, 8), 256, 0, stream>>>(__VA_ARGS__);           \
        } else {                                                                                  \
            if (vec) KERNEL<true, MT_VEC><<<mt_grid_rows(N, 1), 512, 0, stream>>>(__VA_ARGS__);   \
            else KERNEL<true, 1><<<mt_grid_rows(N, 1), 512, 0, stream>>>(__VA_ARGS__);            \
        }                                                                                         \
        if (vec) mt_cuda_count_vector_launches(1);                                                \
    } while (0)

extern "C" mt_status mt_cuda_softmax_fwd(mt_exec *ex, float *out, const float *x, int64_t N, int64_t C, int log) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    bool vec = C % MT_VEC == 0 && mt_vec_ok(out, x);
    SOFTMAX_LAUNCH(softmax_fwd_kernel, vec, cx->stream, out, x, N, C, log);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_softmax_bwd(mt_exec *ex, float *dx, const float *dy, const float *y, int64_t N,
                                         int64_t C, int log) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    bool vec = C % MT_VEC == 0 && mt_vec_ok(dx, dy, y);
    SOFTMAX_LAUNCH(softmax_bwd_kernel, vec, cx->stream, dx, dy, y, N, C, log);
    MT_LAUNCHED();
    return MT_OK;
}
