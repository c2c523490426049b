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
 * Rows are read and written with float4 accesses when they allow it (vec.cuh).
 */
#include "common.cuh"
#include "vec.cuh"

/* Every row kernel is a template over W (vec.cuh): a thread takes W consecutive columns per step, with
 * float4 accesses when W is 4 (the launcher's choice: C a multiple of 4 and every pointer 16-byte
 * aligned, so every row starts aligned), scalar ones when W is 1. */

template <bool BLOCK, int W>
__global__ void layernorm_fwd_kernel(float *out, float *mean, float *rstd, const float *x, const float *w,
                                     const float *b, int64_t N, int64_t C, float eps, uint16_t *out_bf16) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    if (row >= N) return;
    const float *xr = x + row * C;
    float *o = out + row * C;
    float acc = 0.0f, xv[W];
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        mt_vld<W>(xr, j, C, xv);
#pragma unroll
        for (int k = 0; k < W; k++) acc += xv[k];
    }
    float m = grp_sum<BLOCK>(acc, sh) / (float)C;
    acc = 0.0f;
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        mt_vld<W>(xr, j, C, xv);
#pragma unroll
        for (int k = 0; k < W; k++) {
            float d = j + k < C ? xv[k] - m : 0.0f;
            acc += d * d;
        }
    }
    float v = grp_sum<BLOCK>(acc, sh);
    float rs = 1.0f / sqrtf(v / (float)C + eps);
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        float wv[W], bv[W], y[W];
        mt_vld<W>(xr, j, C, xv);
        mt_vld<W>(w, j, C, wv);
        if (b) mt_vld<W>(b, j, C, bv);
#pragma unroll
        for (int k = 0; k < W; k++) {
            y[k] = (xv[k] - m) * rs * wv[k];
            if (b) y[k] = y[k] + bv[k];
        }
        mt_vst<W>(o, j, C, y);
        if (out_bf16) mt_vst_bf16<W>(out_bf16 + row * C, j, C, y);
    }
    if (t == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = rs;
    }
}

/* Groups: warps (BLOCK false) or blocks; group gid handles rows gid, gid + G, ... part (G, 2, C) holds
 * its dw (row 0) and db (row 1) sums, or is NULL when neither is wanted. */
template <bool BLOCK, int W>
__global__ void layernorm_bwd_kernel(float *dx, float *part, const float *dout, const float *x, const float *w,
                                     const float *mean, const float *rstd, int64_t N, int64_t C, int64_t G) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    const int64_t gid = row; /* the group's index */
    if (gid >= G) return;
    float *pw = part ? part + gid * 2 * C : NULL, *pb = part ? pw + C : NULL;
    if (part) /* zeroed with the mapping of the loop below: each thread touches only its own columns */
        for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
            float z[W] = {};
            mt_vst<W>(pw, j, C, z);
            mt_vst<W>(pb, j, C, z);
        }
    for (int64_t n = gid; n < N; n += G) {
        const float *xr = x + n * C, *g = dout + n * C;
        float m = mean[n], rs = rstd[n];
        float sg = 0.0f, sgx = 0.0f;
        for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
            float xv[W], gv[W], wv[W];
            mt_vld<W>(xr, j, C, xv);
            mt_vld<W>(g, j, C, gv);
            mt_vld<W>(w, j, C, wv);
            float aw[W], ab[W];
            if (part) {
                mt_vld<W>(pw, j, C, aw);
                mt_vld<W>(pb, j, C, ab);
            }
#pragma unroll
            for (int k = 0; k < W; k++) {
                float xh = (xv[k] - m) * rs, gw = gv[k] * wv[k];
                sg += gw;
                sgx += gw * xh;
                if (part) {
                    aw[k] += gv[k] * xh;
                    ab[k] += gv[k];
                }
            }
            if (part) {
                mt_vst<W>(pw, j, C, aw);
                mt_vst<W>(pb, j, C, ab);
            }
        }
        if (dx) {
            sg = grp_sum<BLOCK>(sg, sh);
            sgx = grp_sum<BLOCK>(sgx, sh);
            float a = sg / (float)C, c = sgx / (float)C;
            float *d = dx + n * C;
            for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
                float xv[W], gv[W], wv[W], dv[W];
                mt_vld<W>(xr, j, C, xv);
                mt_vld<W>(g, j, C, gv);
                mt_vld<W>(w, j, C, wv);
                mt_vld<W>(d, j, C, dv);
#pragma unroll
                for (int k = 0; k < W; k++) {
                    float xh = (xv[k] - m) * rs;
                    dv[k] += (gv[k] * wv[k] - a - xh * c) * rs;
                }
                mt_vst<W>(d, j, C, dv);
            }
        }
    }
}

template <bool BLOCK, int W>
__global__ void rmsnorm_fwd_kernel(float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C,
                                   float eps, uint16_t *out_bf16) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    if (row >= N) return;
    const float *xr = x + row * C;
    float *o = out + row * C;
    float acc = 0.0f, xv[W];
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        mt_vld<W>(xr, j, C, xv);
#pragma unroll
        for (int k = 0; k < W; k++) acc += xv[k] * xv[k];
    }
    float rs = 1.0f / sqrtf(grp_sum<BLOCK>(acc, sh) / (float)C + eps);
    for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
        float wv[W], y[W];
        mt_vld<W>(xr, j, C, xv);
        mt_vld<W>(w, j, C, wv);
#pragma unroll
        for (int k = 0; k < W; k++) y[k] = xv[k] * rs * wv[k];
        mt_vst<W>(o, j, C, y);
        if (out_bf16) mt_vst_bf16<W>(out_bf16 + row * C, j, C, y);
    }
    if (t == 0 && rstd) rstd[row] = rs;
}

/* part (G, C): dw sums of each group, or NULL. */
template <bool BLOCK, int W>
__global__ void rmsnorm_bwd_kernel(float *dx, float *part, const float *dout, const float *x, const float *w,
                                   const float *rstd, int64_t N, int64_t C, int64_t G) {
    __shared__ float sh[32];
    ROW_GROUP(BLOCK);
    const int64_t gid = row;
    if (gid >= G) return;
    float *pw = part ? part + gid * C : NULL;
    if (pw) /* zeroed with the mapping of the loop below: each thread touches only its own columns */
        for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
            float z[W] = {};
            mt_vst<W>(pw, j, C, z);
        }
    for (int64_t n = gid; n < N; n += G) {
        const float *xr = x + n * C, *g = dout + n * C;
        float rs = rstd[n];
        float s = 0.0f;
        for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
            float xv[W], gv[W], wv[W], aw[W];
            mt_vld<W>(xr, j, C, xv);
            mt_vld<W>(g, j, C, gv);
            mt_vld<W>(w, j, C, wv);
            if (pw) mt_vld<W>(pw, j, C, aw);
#pragma unroll
            for (int k = 0; k < W; k++) {
                s += gv[k] * wv[k] * xv[k];
                if (pw) aw[k] += gv[k] * xv[k] * rs;
            }
            if (pw) mt_vst<W>(pw, j, C, aw);
        }
        if (dx) {
            s = grp_sum<BLOCK>(s, sh);
            float c = s * rs * rs * rs / (float)C;
            float *d = dx + n * C;
            for (int64_t j = (int64_t)t * W; j < C; j += (int64_t)nt * W) {
                float xv[W], gv[W], wv[W], dv[W];
                mt_vld<W>(xr, j, C, xv);
                mt_vld<W>(g, j, C, gv);
                mt_vld<W>(w, j, C, wv);
                mt_vld<W>(d, j, C, dv);
#pragma unroll
                for (int k = 0; k < W; k++) dv[k] += gv[k] * wv[k] * rs - xv[k] * c;
                mt_vst<W>(d, j, C, dv);
            }
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

/* The row kernels' width: MT_VEC when C is a multiple of it and every pointer is 16-byte aligned. */
template <typename... P>
static bool rows_vec(int64_t C, P... p) {
    return C % MT_VEC == 0 && mt_vec_ok(p...);
}

/* Launches KERNEL<BLOCK, W> for the row length C (a warp per row up to MT_WARP_ROW_MAX, else a block)
 * over `rows` row groups with the width vec chooses. */
#define NORM_LAUNCH(KERNEL, C, rows, vec, stream, ...)                                                 \
    do {                                                                                              \
        if ((C) <= MT_WARP_ROW_MAX) {                                                                 \
            if (vec) KERNEL<false, MT_VEC><<<mt_grid_rows(rows, 8), 256, 0, stream>>>(__VA_ARGS__);   \
            else KERNEL<false, 1><<<mt_grid_rows(rows, 8), 256, 0, stream>>>(__VA_ARGS__);            \
        } else {                                                                                      \
            if (vec) KERNEL<true, MT_VEC><<<mt_grid_rows(rows, 1), 512, 0, stream>>>(__VA_ARGS__);    \
            else KERNEL<true, 1><<<mt_grid_rows(rows, 1), 512, 0, stream>>>(__VA_ARGS__);             \
        }                                                                                             \
        if (vec) mt_cuda_count_vector_launches(1);                                                    \
    } while (0)

extern "C" mt_status mt_cuda_layernorm_fwd(mt_exec *ex, float *out, float *mean, float *rstd, const float *x,
                                           const float *w, const float *b, int64_t N, int64_t C, float eps,
                                           uint16_t *out_bf16) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || C <= 0) return MT_OK;
    bool vec = rows_vec(C, out, x, w, b, out_bf16);
    NORM_LAUNCH(layernorm_fwd_kernel, C, N, vec, cx->stream, out, mean, rstd, x, w, b, N, C, eps, out_bf16);
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
    bool vec = rows_vec(C, dx, part, dout, x, w);
    NORM_LAUNCH(layernorm_bwd_kernel, C, G, vec, cx->stream, dx, part, dout, x, w, mean, rstd, N, C, G);
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
    bool vec = rows_vec(C, out, x, w, out_bf16);
    NORM_LAUNCH(rmsnorm_fwd_kernel, C, N, vec, cx->stream, out, rstd, x, w, N, C, eps, out_bf16);
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
    bool vec = rows_vec(C, dx, part, dout, x, w);
    NORM_LAUNCH(rmsnorm_bwd_kernel, C, G, vec, cx->stream, dx, part, dout, x, w, rstd, N, C, G);
    MT_LAUNCHED();
    if (part) {
        column_sum_kernel<<<mt_blocks(C, MT_THREADS), MT_THREADS, 0, cx->stream>>>(dw, NULL, part, G, C, 1);
        MT_LAUNCHED();
    }
    return MT_OK;
}
