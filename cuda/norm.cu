/*
 * norm.cu — fused layer norm and RMS norm over the last axis (x (N, C), w (C), b (C)), forward and
 * backward, with the CPU backend's formulas (engine/cpu/nn.c): the mean and the variance in two
 * passes, rstd = 1 / sqrt(var / C + eps). The forward can also write its output rounded to bf16 (the
 * next GEMM's operand in mixed precision: no separate cast launch).
 *
 * Backward: each row's dx needs two row sums; dw and db are sums over all rows. Rows are dealt to a
 * fixed number of groups (warps, or blocks for long rows); each group adds its rows' dw/db terms into
 * its own slice of scratch (a thread owns a column, so nothing is shared), and a second kernel adds
 * the slices column by column into dw/db. No float atomics: the result does not depend on scheduling.
 */
#include "common.cuh"

template <bool BLOCK>
__global__ void layernorm_fwd_kernel(float *out, float *mean, float *rstd, const float *x, const float *w,
                                     const float *b, int64_t N, int64_t C, float eps, uint16_t *out_bf16) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    if (row >= N) return;
    const float *xr = x + row * C;
    float *o = out + row * C;
    float acc = 0.0f;
    for (int64_t j = t; j < C; j += nt) acc += xr[j];
    float m = grp_sum<BLOCK>(acc, sh) / (float)C;
    acc = 0.0f;
    for (int64_t j = t; j < C; j += nt) {
        float d = xr[j] - m;
        acc += d * d;
    }
    float v = grp_sum<BLOCK>(acc, sh);
    float rs = 1.0f / sqrtf(v / (float)C + eps);
    for (int64_t j = t; j < C; j += nt) {
        float y = (xr[j] - m) * rs * w[j];
        if (b) y = y + b[j];
        o[j] = y;
        if (out_bf16) out_bf16[row * C + j] = mt_f32_to_bf16(y);
    }
    if (t == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = rs;
    }
}

/* Groups: warps (BLOCK false) or blocks; group gid handles rows gid, gid + G, ... part (G, 2, C) holds
 * its dw (row 0) and db (row 1) sums, or is NULL when neither is wanted. */
template <bool BLOCK>
__global__ void layernorm_bwd_kernel(float *dx, float *part, const float *dout, const float *x, const float *w,
                                     const float *mean, const float *rstd, int64_t N, int64_t C, int64_t G) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    const int64_t gid = row; /* the group's index */
    if (gid >= G) return;
    float *pw = part ? part + gid * 2 * C : NULL, *pb = part ? pw + C : NULL;
    if (part)
        for (int64_t j = t; j < C; j += nt) pw[j] = pb[j] = 0.0f;
    for (int64_t n = gid; n < N; n += G) {
        const float *xr = x + n * C, *g = dout + n * C;
        float m = mean[n], rs = rstd[n];
        float sg = 0.0f, sgx = 0.0f;
        for (int64_t j = t; j < C; j += nt) {
            float xh = (xr[j] - m) * rs, gw = g[j] * w[j];
            sg += gw;
            sgx += gw * xh;
            if (part) {
                pw[j] += g[j] * xh;
                pb[j] += g[j];
            }
        }
        if (dx) {
            sg = grp_sum<BLOCK>(sg, sh);
            sgx = grp_sum<BLOCK>(sgx, sh);
            float a = sg / (float)C, c = sgx / (float)C;
            float *d = dx + n * C;
            for (int64_t j = t; j < C; j += nt) {
                float xh = (xr[j] - m) * rs;
                d[j] += (g[j] * w[j] - a - xh * c) * rs;
            }
        }
    }
}

template <bool BLOCK>
__global__ void rmsnorm_fwd_kernel(float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C,
                                   float eps, uint16_t *out_bf16) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    if (row >= N) return;
    const float *xr = x + row * C;
    float *o = out + row * C;
    float acc = 0.0f;
    for (int64_t j = t; j < C; j += nt) acc += xr[j] * xr[j];
    float rs = 1.0f / sqrtf(grp_sum<BLOCK>(acc, sh) / (float)C + eps);
    for (int64_t j = t; j < C; j += nt) {
        float y = xr[j] * rs * w[j];
        o[j] = y;
        if (out_bf16) out_bf16[row * C + j] = mt_f32_to_bf16(y);
    }
    if (t == 0 && rstd) rstd[row] = rs;
}

/* part (G, C): dw sums of each group, or NULL. */
template <bool BLOCK>
__global__ void rmsnorm_bwd_kernel(float *dx, float *part, const float *dout, const float *x, const float *w,
                                   const float *rstd, int64_t N, int64_t C, int64_t G) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    const int64_t gid = row;
    if (gid >= G) return;
    float *pw = part ? part + gid * C : NULL;
    if (pw)
        for (int64_t j = t; j < C; j += nt) pw[j] = 0.0f;
    for (int64_t n = gid; n < N; n += G) {
        const float *xr = x + n * C, *g = dout + n * C;
        float rs = rstd[n];
        float s = 0.0f;
        for (int64_t j = t; j < C; j += nt) {
            s += g[j] * w[j] * xr[j];
            if (pw) pw[j] += g[j] * xr[j] * rs;
        }
        if (dx) {
            s = grp_sum<BLOCK>(s, sh);
            float c = s * rs * rs * rs / (float)C;
            float *d = dx + n * C;
            for (int64_t j = t; j < C; j += nt) d[j] += g[j] * w[j] * rs - xr[j] * c;
        }
    }
}

/* dst[k][j] += sum over groups of part[g][k][j] for k < K (K = 2: dw, db; K = 1: dw); dst[k] NULL is
 * skipped. */
__global__ void column_sum_kernel(float *dst0, float *dst1, const float *part, int64_t G, int64_t C, int K) {
    MT_GRID_STRIDE(e, (int64_t)K * C) {
        int k = (int)(e / C);
        int64_t j = e % C;
        float *dst = k == 0 ? dst0 : dst1;
        if (!dst) continue;
        float acc = 0.0f;
        for (int64_t g = 0; g < G; g++) acc += part[(g * K + k) * C + j];
        dst[j] += acc;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------------------- */

extern "C" mt_status mt_cuda_layernorm_fwd(mt_exec *ex, float *out, float *mean, float *rstd, const float *x,
                                           const float *w, const float *b, int64_t N, int64_t C, float eps,
                                           uint16_t *out_bf16) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    if (C <= MT_WARP_ROW_MAX)
        layernorm_fwd_kernel<false><<<mt_grid_rows(N, 8), 256, 0, cx->stream>>>(out, mean, rstd, x, w, b, N, C, eps,
                                                                                    out_bf16);
    else
        layernorm_fwd_kernel<true><<<mt_grid_rows(N, 1), 512, 0, cx->stream>>>(out, mean, rstd, x, w, b, N, C, eps,
                                                                                    out_bf16);
    MT_LAUNCHED();
    return MT_OK;
}

/* Groups for a backward over N rows: about 8 warps per SM (or 2 blocks per SM for long rows). */
static int64_t bwd_groups(const mt_cuda_exec *cx, int64_t N, int block) {
    int64_t g = block ? 2 * (int64_t)cx->n_sm : 8 * (int64_t)cx->n_sm;
    return N < g ? N : g;
}

extern "C" mt_status mt_cuda_layernorm_bwd(mt_exec *ex, float *dx, float *dw, float *db, const float *dout,
                                           const float *x, const float *w, const float *mean, const float *rstd,
                                           int64_t N, int64_t C) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0 || (!dx && !dw && !db)) return MT_OK;
    int block = C > MT_WARP_ROW_MAX;
    int64_t G = bwd_groups(cx, N, block);
    float *part = NULL;
    if (dw || db) MT_TRY(mt_cuda_scratch(cx, (size_t)(G * 2 * C) * sizeof(float), (void **)&part));
    if (block)
        layernorm_bwd_kernel<true><<<mt_grid_rows(G, 1), 512, 0, cx->stream>>>(dx, part, dout, x, w, mean, rstd, N, C,
                                                                                G);
    else
        layernorm_bwd_kernel<false><<<mt_grid_rows(G, 8), 256, 0, cx->stream>>>(dx, part, dout, x, w, mean, rstd, N,
                                                                                 C, G);
    MT_LAUNCHED();
    if (part) {
        column_sum_kernel<<<mt_blocks(2 * C, MT_THREADS), MT_THREADS, 0, cx->stream>>>(dw, db, part, G, C, 2);
        MT_LAUNCHED();
    }
    return MT_OK;
}

extern "C" mt_status mt_cuda_rmsnorm_fwd(mt_exec *ex, float *out, float *rstd, const float *x, const float *w,
                                         int64_t N, int64_t C, float eps, uint16_t *out_bf16) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    if (C <= MT_WARP_ROW_MAX)
        rmsnorm_fwd_kernel<false><<<mt_grid_rows(N, 8), 256, 0, cx->stream>>>(out, rstd, x, w, N, C, eps, out_bf16);
    else
        rmsnorm_fwd_kernel<true><<<mt_grid_rows(N, 1), 512, 0, cx->stream>>>(out, rstd, x, w, N, C, eps, out_bf16);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_rmsnorm_bwd(mt_exec *ex, float *dx, float *dw, const float *dout, const float *x,
                                         const float *w, const float *rstd, int64_t N, int64_t C) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0 || (!dx && !dw)) return MT_OK;
    int block = C > MT_WARP_ROW_MAX;
    int64_t G = bwd_groups(cx, N, block);
    float *part = NULL;
    if (dw) MT_TRY(mt_cuda_scratch(cx, (size_t)(G * C) * sizeof(float), (void **)&part));
    if (block)
        rmsnorm_bwd_kernel<true><<<mt_grid_rows(G, 1), 512, 0, cx->stream>>>(dx, part, dout, x, w, rstd, N, C, G);
    else
        rmsnorm_bwd_kernel<false><<<mt_grid_rows(G, 8), 256, 0, cx->stream>>>(dx, part, dout, x, w, rstd, N, C, G);
    MT_LAUNCHED();
    if (part) {
        column_sum_kernel<<<mt_blocks(C, MT_THREADS), MT_THREADS, 0, cx->stream>>>(dw, NULL, part, G, C, 1);
        MT_LAUNCHED();
    }
    return MT_OK;
}
