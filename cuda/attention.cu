/*
 * attention.cu — fused scaled-dot-product attention, forward and backward, flash-style: scores and
 * probabilities live in registers and shared memory only, never in device memory.
 *
 * Shapes (core/backend.h mt_attn_desc): q (B,H,Tq,D), k (B,Hk,Tk,D), v (B,Hk,Tk,Dv), out (B,H,Tq,Dv),
 * lse (B,H,Tq). Query head h reads key/value head h / (H/Hk). D != Dv is allowed (MLA: the rotary
 * part widens q and k), Hk may be 1 (MLA's shared latent), the additive mask is read through its
 * strides, causal masking is aligned bottom-right (key j is masked for query i when j > i + Tk - Tq),
 * and a query row whose keys are all masked gives zeros and lse = -inf, as on the CPU.
 *
 * Work split. The H/Hk query heads that share a key/value head form one group of Rg = (H/Hk) * Tq
 * query rows, all reading the same K and V: a block takes ROWS consecutive rows of one group (so a
 * decoding step with Tq = 1 still fills a block with the heads of a shared latent), walks the keys in
 * tiles of 32 held in shared memory, and each of its 4 warps owns RPW rows:
 *   scores   lane l computes the score of key l of the tile (the q row is read from shared memory as
 *            a broadcast, the key row through an odd stride so the 32 lanes hit 32 banks);
 *   softmax  online: the row max / sum are warp reductions once per tile, the accumulator is rescaled
 *            when the max grows;
 *   P @ V    lane l owns output columns l, l+32, ...; the probability of key jj is broadcast by a
 *            shuffle and the value row read conflict-free.
 * The backward (FlashAttention-2 style, deterministic: no atomics) recomputes the probabilities from
 * the saved lse: one kernel computes dq with the forward's layout; another gives each block 4*RPW key
 * rows of a group and walks the group's query rows in tiles of 32 (lane = query row) for dk and dv; a
 * small kernel first computes D_i = dout_i . out_i.
 *
 * Per-lane accumulators are register arrays of NC chunks of 32 columns (templated: NC in 1,2,4,8,16,
 * so D and Dv up to 512), with RPW rows per warp chosen to keep the registers in budget.
 * Compute is f32 on the CUDA cores (SIMT): exact enough to match the CPU reference at f32 tolerance.
 */
#include <string.h>

#include "common.cuh"
#include "flash_attention.cuh"

#define BK 32    /* keys (or queries, in the dk/dv kernel) per shared tile: one per lane */
#define NWARP 4  /* warps per block */
#define FULL 0xffffffffu

typedef struct attn_args {
    int64_t B, H, Hk, Tq, Tk, hpg, Rg;
    int D, Dv;
    int KS, VS; /* odd row strides of the lane-indexed shared tiles */
    float scale;
    int causal;
    const float *mask;
    int64_t msb, msh, msi;
    const int32_t *kv_rows; /* paged keys (core/backend.h mt_attn_desc; forward only), else NULL */
    int64_t kv_cap;
} attn_args;

/* Row of key/value j of (b, hk) in k (rows of D) or v (rows of Dv): mt_attn_kv_row on the device. */
__device__ __forceinline__ int64_t kv_row(const attn_args &a, int64_t b, int64_t hk, int64_t j) {
    if (!a.kv_rows) return (b * a.Hk + hk) * a.Tk + j;
    return ((int64_t)a.kv_rows[b * a.Tk + j] * a.Hk + hk) * a.kv_cap + j;
}

__device__ __forceinline__ int64_t causal_end(const attn_args &a, int64_t i) {
    if (!a.causal) return a.Tk;
    int64_t e = i + (a.Tk - a.Tq) + 1;
    return e < 0 ? 0 : (e > a.Tk ? a.Tk : e);
}

/* Group row g of (b, hk) -> query head h and position i. */
__device__ __forceinline__ void group_row(const attn_args &a, int64_t hk, int64_t g, int64_t &h, int64_t &i) {
    h = hk * a.hpg + g / a.Tq;
    i = g % a.Tq;
}

/* Copies key/value tile rows [j0, j0 + 32) of (b, hk) into shared rows of stride ks / vs (zeros past
 * Tk). */
__device__ __forceinline__ void load_kv_tile(float *Ks, int ks, float *Vs, int vs, const float *k, const float *v,
                                             const attn_args &a, int64_t b, int64_t hk, int64_t j0, int nk, int D,
                                             int Dv) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int jj = warp; jj < BK; jj += NWARP) {
        float *kd = Ks + jj * ks, *vd = Vs + jj * vs;
        if (jj < nk) {
            int64_t row = kv_row(a, b, hk, j0 + jj);
            const float *ksrc = k + row * D, *vsrc = v + row * Dv;
            for (int d = lane; d < D; d += 32) kd[d] = ksrc[d];
            for (int d = lane; d < Dv; d += 32) vd[d] = vsrc[d];
        } else {
            for (int d = lane; d < D; d += 32) kd[d] = 0.0f;
            for (int d = lane; d < Dv; d += 32) vd[d] = 0.0f;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Forward
 * ------------------------------------------------------------------------------------------- */

/* grid (B*Hk, ceil(Rg / ROWS)); shared: Ks (32, KS), Vs (32, Dv), Qs (ROWS, D). */
template <int NC, int RPW>
__global__ void __launch_bounds__(NWARP * 32)
    attn_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v, attn_args a) {
    extern __shared__ float smem[];
    const int ROWS = NWARP * RPW;
    const int D = a.D, Dv = a.Dv;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t bhk = blockIdx.x, b = bhk / a.Hk, hk = bhk % a.Hk;
    int64_t g0 = (int64_t)blockIdx.y * ROWS;
    float *Ks = smem, *Vs = Ks + BK * a.KS, *Qs = Vs + BK * Dv;

    for (int rr = warp; rr < ROWS; rr += NWARP) {
        int64_t g = g0 + rr;
        float *dst = Qs + rr * D;
        if (g < a.Rg) {
            int64_t h, i;
            group_row(a, hk, g, h, i);
            const float *src = q + ((b * a.H + h) * a.Tq + i) * D;
            for (int d = lane; d < D; d += 32) dst[d] = src[d];
        } else {
            for (int d = lane; d < D; d += 32) dst[d] = 0.0f;
        }
    }
    int64_t jmax = 0;
    for (int rr = 0; rr < ROWS; rr++) {
        int64_t g = g0 + rr;
        if (g < a.Rg) {
            int64_t e = causal_end(a, g % a.Tq);
            jmax = e > jmax ? e : jmax;
        }
    }
    bool valid[RPW];
    int64_t jend[RPW];
    const float *mrow[RPW];
    float m[RPW], l[RPW], o[RPW][NC];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        int64_t g = g0 + warp * RPW + r, h = 0, i = 0;
        valid[r] = g < a.Rg;
        if (valid[r]) group_row(a, hk, g, h, i);
        jend[r] = valid[r] ? causal_end(a, i) : 0;
        mrow[r] = a.mask ? a.mask + b * a.msb + h * a.msh + i * a.msi : NULL;
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < NC; c++) o[r][c] = 0.0f;
    }
    const float *qw = Qs + warp * RPW * D;
    for (int64_t j0 = 0; j0 < jmax; j0 += BK) {
        int nk = (int)(a.Tk - j0 < BK ? a.Tk - j0 : BK);
        __syncthreads(); /* the previous tile is consumed (and the q rows are written) */
        load_kv_tile(Ks, a.KS, Vs, Dv, k, v, a, b, hk, j0, nk, D, Dv);
        __syncthreads();
        int64_t j = j0 + lane;
        float s[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) s[r] = 0.0f;
        const float *kr = Ks + lane * a.KS;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            float kd = kr[d];
#pragma unroll
            for (int r = 0; r < RPW; r++) s[r] += qw[r * D + d] * kd;
        }
        float p[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            bool ok = valid[r] && j < jend[r];
            float sc = ok ? s[r] * a.scale + (mrow[r] ? mrow[r][j] : 0.0f) : -INFINITY;
            float mt = mt_warp_max(sc);
            float mnew = mt > m[r] ? mt : m[r];
            p[r] = 0.0f;
            if (mnew == -INFINITY) continue; /* nothing unmasked yet: warp-uniform */
            float alpha = expf(m[r] - mnew);  /* 0 when m was -inf */
            p[r] = expf(sc - mnew);
            l[r] = l[r] * alpha + mt_warp_sum(p[r]);
#pragma unroll
            for (int c = 0; c < NC; c++) o[r][c] *= alpha;
            m[r] = mnew;
        }
        for (int jj = 0; jj < nk; jj++) {
            float vv[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                vv[c] = d < Dv ? Vs[jj * Dv + d] : 0.0f;
            }
#pragma unroll
            for (int r = 0; r < RPW; r++) {
                float pj = __shfl_sync(FULL, p[r], jj);
#pragma unroll
                for (int c = 0; c < NC; c++) o[r][c] += pj * vv[c];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        if (!valid[r]) continue;
        int64_t g = g0 + warp * RPW + r, h, i;
        group_row(a, hk, g, h, i);
        int64_t row = (b * a.H + h) * a.Tq + i;
        bool none = m[r] == -INFINITY;
        float inv = none ? 0.0f : 1.0f / l[r];
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (d < Dv) out[row * Dv + d] = none ? 0.0f : o[r][c] * inv;
        }
        if (lane == 0) lse[row] = none ? -INFINITY : m[r] + logf(l[r]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Backward
 * ------------------------------------------------------------------------------------------- */

/* Dd[row] = dout[row] . out[row], one warp per query row. */
__global__ void attn_bwd_prep_kernel(float *Dd, const float *dout, const float *out, int64_t rows, int Dv) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *g = dout + row * Dv, *o = out + row * Dv;
    float acc = 0.0f;
    for (int d = lane; d < Dv; d += 32) acc += g[d] * o[d];
    acc = mt_warp_sum(acc);
    if (lane == 0) Dd[row] = acc;
}

/* dq: the forward's layout. grid (B*Hk, ceil(Rg / ROWS)); shared: Ks (32, KS), Vs (32, VS),
 * Qs (ROWS, D), Gs (ROWS, Dv). */
template <int NC, int RPW>
__global__ void __launch_bounds__(NWARP * 32)
    attn_bwd_dq_kernel(float *dq, const float *dout, const float *Dd, const float *lse, const float *q,
                       const float *k, const float *v, attn_args a) {
    extern __shared__ float smem[];
    const int ROWS = NWARP * RPW;
    const int D = a.D, Dv = a.Dv;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t bhk = blockIdx.x, b = bhk / a.Hk, hk = bhk % a.Hk;
    int64_t g0 = (int64_t)blockIdx.y * ROWS;
    float *Ks = smem, *Vs = Ks + BK * a.KS, *Qs = Vs + BK * a.VS, *Gs = Qs + ROWS * D;

    for (int rr = warp; rr < ROWS; rr += NWARP) {
        int64_t g = g0 + rr;
        float *qd = Qs + rr * D, *gd = Gs + rr * Dv;
        if (g < a.Rg) {
            int64_t h, i;
            group_row(a, hk, g, h, i);
            int64_t row = (b * a.H + h) * a.Tq + i;
            for (int d = lane; d < D; d += 32) qd[d] = q[row * D + d];
            for (int d = lane; d < Dv; d += 32) gd[d] = dout[row * Dv + d];
        } else {
            for (int d = lane; d < D; d += 32) qd[d] = 0.0f;
            for (int d = lane; d < Dv; d += 32) gd[d] = 0.0f;
        }
    }
    /* Rows whose keys are all masked (lse = -inf) get no gradient, as on the CPU. */
    int64_t jmax = 0;
    for (int rr = 0; rr < ROWS; rr++) {
        int64_t g = g0 + rr;
        if (g < a.Rg) {
            int64_t h, i;
            group_row(a, hk, g, h, i);
            if (lse[(b * a.H + h) * a.Tq + i] == -INFINITY) continue;
            int64_t e = causal_end(a, i);
            jmax = e > jmax ? e : jmax;
        }
    }
    bool act[RPW];
    int64_t jend[RPW];
    const float *mrow[RPW];
    float lr_[RPW], Di[RPW], acc[RPW][NC];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        int64_t g = g0 + warp * RPW + r, h = 0, i = 0, row = 0;
        bool valid = g < a.Rg;
        if (valid) {
            group_row(a, hk, g, h, i);
            row = (b * a.H + h) * a.Tq + i;
        }
        lr_[r] = valid ? lse[row] : -INFINITY;
        Di[r] = valid ? Dd[row] : 0.0f;
        act[r] = valid && lr_[r] != -INFINITY;
        jend[r] = act[r] ? causal_end(a, i) : 0;
        mrow[r] = a.mask ? a.mask + b * a.msb + h * a.msh + i * a.msi : NULL;
#pragma unroll
        for (int c = 0; c < NC; c++) acc[r][c] = 0.0f;
    }
    const float *qw = Qs + warp * RPW * D, *gw = Gs + warp * RPW * Dv;
    for (int64_t j0 = 0; j0 < jmax; j0 += BK) {
        int nk = (int)(a.Tk - j0 < BK ? a.Tk - j0 : BK);
        __syncthreads();
        load_kv_tile(Ks, a.KS, Vs, a.VS, k, v, a, b, hk, j0, nk, D, Dv);
        __syncthreads();
        int64_t j = j0 + lane;
        float s[RPW], dp[RPW], ds[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) s[r] = dp[r] = 0.0f;
        const float *kr = Ks + lane * a.KS, *vr = Vs + lane * a.VS;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            float kd = kr[d];
#pragma unroll
            for (int r = 0; r < RPW; r++) s[r] += qw[r * D + d] * kd;
        }
#pragma unroll 4
        for (int d = 0; d < Dv; d++) {
            float vd = vr[d];
#pragma unroll
            for (int r = 0; r < RPW; r++) dp[r] += gw[r * Dv + d] * vd;
        }
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            bool ok = act[r] && j < jend[r];
            float p = ok ? expf(s[r] * a.scale + (mrow[r] ? mrow[r][j] : 0.0f) - lr_[r]) : 0.0f;
            ds[r] = p * (dp[r] - Di[r]) * a.scale;
        }
        for (int jj = 0; jj < nk; jj++) {
            float kk[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                kk[c] = d < D ? Ks[jj * a.KS + d] : 0.0f;
            }
#pragma unroll
            for (int r = 0; r < RPW; r++) {
                float dsj = __shfl_sync(FULL, ds[r], jj);
#pragma unroll
                for (int c = 0; c < NC; c++) acc[r][c] += dsj * kk[c];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        if (!act[r]) continue;
        int64_t g = g0 + warp * RPW + r, h, i;
        group_row(a, hk, g, h, i);
        int64_t row = (b * a.H + h) * a.Tq + i;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (d < D) dq[row * D + d] += acc[r][c];
        }
    }
}

/* dk, dv: a block owns ROWS key rows of (b, hk) and walks the group's query rows in tiles of 32.
 * grid (B*Hk, ceil(Tk / ROWS)); shared: moff (32 int64), jend (32 int), lse (32), Dd (32),
 * Qt (32, KS), Gt (32, VS), Kw (ROWS, D), Vw (ROWS, Dv). */
template <int NC, int RPW>
__global__ void __launch_bounds__(NWARP * 32)
    attn_bwd_dkdv_kernel(float *dk, float *dv, const float *dout, const float *Dd, const float *lse, const float *q,
                         const float *k, const float *v, attn_args a) {
    extern __shared__ float smem[];
    const int ROWS = NWARP * RPW;
    const int D = a.D, Dv = a.Dv;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t bhk = blockIdx.x, b = bhk / a.Hk, hk = bhk % a.Hk;
    int64_t jb0 = (int64_t)blockIdx.y * ROWS;
    int64_t *moff = (int64_t *)smem;
    int *jend_t = (int *)(moff + BK);
    float *lse_t = (float *)(jend_t + BK), *D_t = lse_t + BK;
    float *Qt = D_t + BK, *Gt = Qt + BK * a.KS, *Kw = Gt + BK * a.VS, *Vw = Kw + ROWS * D;

    const float *kb = k + bhk * a.Tk * D, *vb = v + bhk * a.Tk * Dv;
    for (int rr = warp; rr < ROWS; rr += NWARP) {
        int64_t j = jb0 + rr;
        float *kd = Kw + rr * D, *vd = Vw + rr * Dv;
        if (j < a.Tk) {
            for (int d = lane; d < D; d += 32) kd[d] = kb[j * D + d];
            for (int d = lane; d < Dv; d += 32) vd[d] = vb[j * Dv + d];
        } else {
            for (int d = lane; d < D; d += 32) kd[d] = 0.0f;
            for (int d = lane; d < Dv; d += 32) vd[d] = 0.0f;
        }
    }
    int64_t jr[RPW];
    float accK[RPW][NC], accV[RPW][NC];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        jr[r] = jb0 + warp * RPW + r;
#pragma unroll
        for (int c = 0; c < NC; c++) accK[r][c] = accV[r][c] = 0.0f;
    }
    const float *kw = Kw + warp * RPW * D, *vw = Vw + warp * RPW * Dv;
    for (int64_t g0 = 0; g0 < a.Rg; g0 += BK) {
        int nq = (int)(a.Rg - g0 < BK ? a.Rg - g0 : BK);
        __syncthreads(); /* the previous query tile is consumed (and the key rows are written) */
        for (int rr = warp; rr < BK; rr += NWARP) {
            float *qd = Qt + rr * a.KS, *gd = Gt + rr * a.VS;
            if (rr < nq) {
                int64_t h, i;
                group_row(a, hk, g0 + rr, h, i);
                int64_t row = (b * a.H + h) * a.Tq + i;
                for (int d = lane; d < D; d += 32) qd[d] = q[row * D + d];
                for (int d = lane; d < Dv; d += 32) gd[d] = dout[row * Dv + d];
                if (lane == 0) {
                    lse_t[rr] = lse[row];
                    D_t[rr] = Dd[row];
                    jend_t[rr] = (int)causal_end(a, i);
                    moff[rr] = b * a.msb + h * a.msh + i * a.msi;
                }
            } else {
                for (int d = lane; d < D; d += 32) qd[d] = 0.0f;
                for (int d = lane; d < Dv; d += 32) gd[d] = 0.0f;
                if (lane == 0) {
                    lse_t[rr] = -INFINITY;
                    D_t[rr] = 0.0f;
                    jend_t[rr] = 0;
                    moff[rr] = 0;
                }
            }
        }
        __syncthreads();
        /* lane = query row of the tile */
        float lq = lse_t[lane], Dq = D_t[lane];
        int64_t je = jend_t[lane];
        bool qact = lq != -INFINITY;
        bool ok[RPW];
        bool any = false;
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            ok[r] = qact && jr[r] < a.Tk && jr[r] < je;
            any = any || ok[r];
        }
        if (!__any_sync(FULL, any)) continue; /* every pair of this warp masked (causal) */
        float s[RPW], dp[RPW], p[RPW], ds[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) s[r] = dp[r] = 0.0f;
        const float *qr = Qt + lane * a.KS, *gr = Gt + lane * a.VS;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            float qd = qr[d];
#pragma unroll
            for (int r = 0; r < RPW; r++) s[r] += qd * kw[r * D + d];
        }
#pragma unroll 4
        for (int d = 0; d < Dv; d++) {
            float gd = gr[d];
#pragma unroll
            for (int r = 0; r < RPW; r++) dp[r] += gd * vw[r * Dv + d];
        }
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            float mk = (ok[r] && a.mask) ? a.mask[moff[lane] + jr[r]] : 0.0f;
            p[r] = ok[r] ? expf(s[r] * a.scale + mk - lq) : 0.0f;
            ds[r] = p[r] * (dp[r] - Dq) * a.scale;
        }
        for (int gg = 0; gg < nq; gg++) {
            float qv[NC], gv[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                qv[c] = d < D ? Qt[gg * a.KS + d] : 0.0f;
                gv[c] = d < Dv ? Gt[gg * a.VS + d] : 0.0f;
            }
#pragma unroll
            for (int r = 0; r < RPW; r++) {
                float pg = __shfl_sync(FULL, p[r], gg), dsg = __shfl_sync(FULL, ds[r], gg);
#pragma unroll
                for (int c = 0; c < NC; c++) {
                    accV[r][c] += pg * gv[c];
                    accK[r][c] += dsg * qv[c];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        if (jr[r] >= a.Tk) continue;
        int64_t row = bhk * a.Tk + jr[r];
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (dk && d < D) dk[row * D + d] += accK[r][c];
            if (dv && d < Dv) dv[row * Dv + d] += accV[r][c];
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------------------- */

static int chunks_for(int64_t d) {
    int64_t c = (d + 31) / 32;
    return c <= 1 ? 1 : c <= 2 ? 2 : c <= 4 ? 4 : c <= 8 ? 8 : 16;
}


static mt_status make_args(const mt_attn_desc *ad, attn_args *a, const char *what) {
    if (ad->B <= 0 || ad->H <= 0 || ad->Hk <= 0 || ad->Tq <= 0 || ad->Tk <= 0 || ad->D <= 0 || ad->Dv <= 0 ||
        ad->H % ad->Hk != 0)
        return mt_error(MT_ERR_INTERNAL, "cuda %s: bad sizes (B %lld, H %lld, Hk %lld, Tq %lld, Tk %lld)", what,
                        (long long)ad->B, (long long)ad->H, (long long)ad->Hk, (long long)ad->Tq, (long long)ad->Tk);
    if (ad->D > 512 || ad->Dv > 512)
        return mt_error(MT_ERR_UNSUPPORTED, "cuda %s: head dims D = %lld, Dv = %lld: at most 512 on the GPU", what,
                        (long long)ad->D, (long long)ad->Dv);
    memset(a, 0, sizeof *a);
    a->B = ad->B;
    a->H = ad->H;
    a->Hk = ad->Hk;
    a->Tq = ad->Tq;
    a->Tk = ad->Tk;
    a->hpg = ad->H / ad->Hk;
    a->Rg = a->hpg * ad->Tq;
    a->D = (int)ad->D;
    a->Dv = (int)ad->Dv;
    a->KS = a->D | 1;
    a->VS = a->Dv | 1;
    a->scale = ad->scale;
    a->causal = ad->causal;
    a->mask = ad->mask;
    a->msb = ad->mask_sb;
    a->msh = ad->mask_sh;
    a->msi = ad->mask_si;
    a->kv_rows = ad->kv_rows;
    a->kv_cap = ad->kv_cap;
    if (a->B * a->Hk > 0x7fffffffLL)
        return mt_error(MT_ERR_UNSUPPORTED, "cuda %s: B * Hk = %lld is too large", what, (long long)(a->B * a->Hk));
    return MT_OK;
}

/* Opts a kernel in to more than 48 KiB of dynamic shared memory when it needs it. */
static mt_status smem_fit(const mt_cuda_exec *cx, const void *kernel, size_t bytes, const char *what,
                          const attn_args *a) {
    if (bytes > cx->smem_optin)
        return mt_error(MT_ERR_UNSUPPORTED,
                        "cuda %s: D = %d, Dv = %d need %zu bytes of shared memory per block (device: %zu)", what, a->D,
                        a->Dv, bytes, cx->smem_optin);
    if (bytes > 48 * 1024)
        MT_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return MT_OK;
}

template <int NC, int RPW>
static mt_status launch_fwd(mt_cuda_exec *cx, float *out, float *lse, const float *q, const float *k, const float *v,
                            const attn_args &a) {
    const int ROWS = NWARP * RPW;
    int64_t gy = (a.Rg + ROWS - 1) / ROWS;
    if (gy > 65535) return mt_error(MT_ERR_UNSUPPORTED, "cuda attention: %lld query rows per head group", (long long)a.Rg);
    size_t bytes = sizeof(float) * ((size_t)BK * a.KS + (size_t)BK * a.Dv + (size_t)ROWS * a.D);
    MT_TRY(smem_fit(cx, (const void *)attn_fwd_kernel<NC, RPW>, bytes, "attention", &a));
    dim3 grid((unsigned)(a.B * a.Hk), (unsigned)gy);
    attn_fwd_kernel<NC, RPW><<<grid, NWARP * 32, bytes, cx->stream>>>(out, lse, q, k, v, a);
    MT_LAUNCHED();
    return MT_OK;
}

template <int NC, int RPW>
static mt_status launch_dq(mt_cuda_exec *cx, float *dq, const float *dout, const float *Dd, const float *lse,
                           const float *q, const float *k, const float *v, const attn_args &a) {
    const int ROWS = NWARP * RPW;
    int64_t gy = (a.Rg + ROWS - 1) / ROWS;
    if (gy > 65535)
        return mt_error(MT_ERR_UNSUPPORTED, "cuda attention backward: %lld query rows per head group", (long long)a.Rg);
    size_t bytes =
        sizeof(float) * ((size_t)BK * a.KS + (size_t)BK * a.VS + (size_t)ROWS * a.D + (size_t)ROWS * a.Dv);
    MT_TRY(smem_fit(cx, (const void *)attn_bwd_dq_kernel<NC, RPW>, bytes, "attention backward", &a));
    dim3 grid((unsigned)(a.B * a.Hk), (unsigned)gy);
    attn_bwd_dq_kernel<NC, RPW><<<grid, NWARP * 32, bytes, cx->stream>>>(dq, dout, Dd, lse, q, k, v, a);
    MT_LAUNCHED();
    return MT_OK;
}

template <int NC, int RPW>
static mt_status launch_dkdv(mt_cuda_exec *cx, float *dk, float *dv, const float *dout, const float *Dd,
                             const float *lse, const float *q, const float *k, const float *v, const attn_args &a) {
    const int ROWS = NWARP * RPW;
    int64_t gy = (a.Tk + ROWS - 1) / ROWS;
    if (gy > 65535) return mt_error(MT_ERR_UNSUPPORTED, "cuda attention backward: %lld keys", (long long)a.Tk);
    size_t bytes = BK * (sizeof(int64_t) + sizeof(int) + 2 * sizeof(float)) +
                   sizeof(float) * ((size_t)BK * a.KS + (size_t)BK * a.VS + (size_t)ROWS * a.D + (size_t)ROWS * a.Dv);
    MT_TRY(smem_fit(cx, (const void *)attn_bwd_dkdv_kernel<NC, RPW>, bytes, "attention backward", &a));
    dim3 grid((unsigned)(a.B * a.Hk), (unsigned)gy);
    attn_bwd_dkdv_kernel<NC, RPW><<<grid, NWARP * 32, bytes, cx->stream>>>(dk, dv, dout, Dd, lse, q, k, v, a);
    MT_LAUNCHED();
    return MT_OK;
}

/* Instantiations: NC chunks with the rows per warp that keep registers in budget. */
#define ATTN_DISPATCH(nc, CALL)     \
    switch (nc) {                   \
    case 1: return CALL(1, 4);      \
    case 2: return CALL(2, 4);      \
    case 4: return CALL(4, 4);      \
    case 8: return CALL(8, 2);      \
    default: return CALL(16, 1);    \
    }

static mt_status dispatch_fwd(mt_cuda_exec *cx, float *out, float *lse, const float *q, const float *k,
                              const float *v, const attn_args &a) {
#define CALL_FWD(NC, RPW) launch_fwd<NC, RPW>(cx, out, lse, q, k, v, a)
    ATTN_DISPATCH(chunks_for(a.Dv), CALL_FWD)
#undef CALL_FWD
}

static mt_status dispatch_dq(mt_cuda_exec *cx, float *dq, const float *dout, const float *Dd, const float *lse,
                             const float *q, const float *k, const float *v, const attn_args &a) {
#define CALL_DQ(NC, RPW) launch_dq<NC, RPW>(cx, dq, dout, Dd, lse, q, k, v, a)
    ATTN_DISPATCH(chunks_for(a.D), CALL_DQ)
#undef CALL_DQ
}

static mt_status dispatch_dkdv(mt_cuda_exec *cx, float *dk, float *dv, const float *dout, const float *Dd,
                               const float *lse, const float *q, const float *k, const float *v, const attn_args &a) {
#define CALL_DKDV(NC, RPW) launch_dkdv<NC, RPW>(cx, dk, dv, dout, Dd, lse, q, k, v, a)
    ATTN_DISPATCH(chunks_for(a.D > a.Dv ? a.D : a.Dv), CALL_DKDV)
#undef CALL_DKDV
}

extern "C" mt_status mt_cuda_attention_fwd(mt_exec *ex, float *out, float *lse, const float *q, const float *k,
                                           const float *v, const mt_attn_desc *ad) {
    MT_CUDA_ENTER(ex, cx);
    attn_args a;
    MT_TRY(make_args(ad, &a, "attention"));
    /* bf16 precision on sm_80+, head dims <= 128: the tensor-core kernels (flash_attention.cu); they read
     * keys and values in place, so a paged decoding cache (kv_rows) stays on the f32 kernel */
    if (!a.kv_rows && mt_cuda_flash_eligible(cx, ex->precision, ad->D, ad->Dv, 0))
        return mt_cuda_flash_fwd(cx, out, lse, q, k, v, ad);
    return dispatch_fwd(cx, out, lse, q, k, v, a);
}

extern "C" mt_status mt_cuda_attention_bwd(mt_exec *ex, float *dq, float *dk, float *dv, const float *dout,
                                           const float *out, const float *lse, const float *q, const float *k,
                                           const float *v, const mt_attn_desc *ad) {
    MT_CUDA_ENTER(ex, cx);
    attn_args a;
    MT_TRY(make_args(ad, &a, "attention backward"));
    if (a.kv_rows) return mt_error(MT_ERR_UNSUPPORTED, "cuda attention backward: paged keys (a decoding cache)");
    if (!dq && !dk && !dv) return MT_OK;
    int64_t rows = a.B * a.H * a.Tq;
    void *scr = NULL;
    MT_TRY(mt_cuda_scratch(cx, (size_t)rows * sizeof(float), &scr));
    float *Dd = (float *)scr;
    attn_bwd_prep_kernel<<<mt_grid_rows(rows, 8), 256, 0, cx->stream>>>(Dd, dout, out, rows, a.Dv);
    MT_LAUNCHED();
    if (mt_cuda_flash_eligible(cx, ex->precision, ad->D, ad->Dv, 1))
        return mt_cuda_flash_bwd(cx, dq, dk, dv, dout, Dd, lse, q, k, v, ad);
    if (dq) MT_TRY(dispatch_dq(cx, dq, dout, Dd, lse, q, k, v, a));
    if (dk || dv) MT_TRY(dispatch_dkdv(cx, dk, dv, dout, Dd, lse, q, k, v, a));
    return MT_OK;
}
