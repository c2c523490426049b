/*
 * softmax.cu — softmax / log_softmax over the last axis of x (N, C) and their backward.
 *
 * The forward reads a row twice: once for the running max and sum (online softmax: the sum is
 * rescaled when the max grows), once to write. A fully masked row (every element -inf) behaves as on
 * the CPU: sum 0, so softmax gives NaN (0 * inf) and log_softmax NaN (-inf + inf), as PyTorch does.
 */
#include "common.cuh"

template <bool BLOCK>
__global__ void softmax_fwd_kernel(float *out, const float *x, int64_t N, int64_t C, int log) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    if (row >= N) return;
    const float *xr = x + row * C;
    float *o = out + row * C;
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = t; j < C; j += nt) {
        float v = xr[j];
        if (v == -INFINITY) continue; /* contributes 0; keeps -inf - -inf out of the sum */
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    float M = grp_max<BLOCK>(m, sh);
    float S = grp_sum<BLOCK>(m == -INFINITY ? 0.0f : s * expf(m - M), sh);
    if (M == -INFINITY) M = 0.0f;
    if (log) {
        float ls = logf(S) + M;
        for (int64_t j = t; j < C; j += nt) o[j] = xr[j] - ls;
    } else {
        float inv = 1.0f / S;
        for (int64_t j = t; j < C; j += nt) o[j] = expf(xr[j] - M) * inv;
    }
}

template <bool BLOCK>
__global__ void softmax_bwd_kernel(float *dx, const float *dy, const float *y, int64_t N, int64_t C, int log) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    if (row >= N) return;
    const float *g = dy + row * C, *yr = y + row * C;
    float *d = dx + row * C;
    float acc = 0.0f;
    if (log) {
        for (int64_t j = t; j < C; j += nt) acc += g[j];
    } else {
        for (int64_t j = t; j < C; j += nt) acc += g[j] * yr[j];
    }
    float s = grp_sum<BLOCK>(acc, sh);
    if (log) { /* dx = dy - softmax * sum(dy) */
        for (int64_t j = t; j < C; j += nt) d[j] += g[j] - expf(yr[j]) * s;
    } else { /* dx = y * (dy - sum(dy * y)) */
        for (int64_t j = t; j < C; j += nt) d[j] += yr[j] * (g[j] - s);
    }
}

extern "C" mt_status mt_cuda_softmax_fwd(mt_exec *ex, float *out, const float *x, int64_t N, int64_t C, int log) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    if (C <= MT_WARP_ROW_MAX)
        softmax_fwd_kernel<false><<<mt_grid_rows(N, 8), 256, 0, cx->stream>>>(out, x, N, C, log);
    else
        softmax_fwd_kernel<true><<<mt_grid_rows(N, 1), 512, 0, cx->stream>>>(out, x, N, C, log);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_softmax_bwd(mt_exec *ex, float *dx, const float *dy, const float *y, int64_t N,
                                         int64_t C, int log) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    if (C <= MT_WARP_ROW_MAX)
        softmax_bwd_kernel<false><<<mt_grid_rows(N, 8), 256, 0, cx->stream>>>(dx, dy, y, N, C, log);
    else
        softmax_bwd_kernel<true><<<mt_grid_rows(N, 1), 512, 0, cx->stream>>>(dx, dy, y, N, C, log);
    MT_LAUNCHED();
    return MT_OK;
}
