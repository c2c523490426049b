/*
 * flash_attention.cu — scaled-dot-product attention on the tensor cores: bf16 operands, f32
 * accumulation (mma.sync m16n8k16, cuda/mma.cuh), FlashAttention-2 style, forward and backward.
 * attention.cu calls it in the bf16 precision mode on devices of compute capability 8.0 or more
 * (mt_cuda_flash_attention_supported says when); its f32 kernels stay the reference and the path for
 * every other case.
 *
 * The contract is attention.cu's (core/backend.h mt_attn_desc): q (B,H,Tq,D), k (B,Hk,Tk,D),
 * v (B,Hk,Tk,Dv), out (B,H,Tq,Dv), lse (B,H,Tq), all f32 in device memory; query head h reads key/value
 * head h / (H/Hk); causal masking aligned bottom-right; the additive mask read through its strides; a
 * query row whose keys are all masked gives zeros and lse = -inf; dq, dk, dv accumulate (+=).
 * q, k, v, dout are rounded to bf16 as their tiles are staged in shared memory (no cast launch, no
 * bf16 copy in device memory); softmax, lse, every accumulator and every output stay f32.
 *
 * Tiles. The H/Hk query heads that share a key/value head form one group of Rg = (H/Hk)·Tq rows
 * (attention.cu's layout, so a decoding step with Tq = 1 over MLA's shared latent still fills a tile).
 * A block is 4 warps; a warp owns 16 rows of a 64-row tile, the key/value tiles are 64 rows. Head
 * dims are padded with zeros to DP = 64 or 128 in shared memory (zero columns change no product; the
 * padded output columns are not written), so any D, Dv <= 128 runs here.
 *   forward   grid (B·Hk, ceil(Rg/64)): Q tile staged once; per key tile S = Q Kᵀ (mma), scale, masks,
 *             online softmax in f32 (row max/sum over the 4 lanes that share a row), P rounded to bf16
 *             straight from the S accumulators into the A fragments of O += P V (the m16n8 accumulator
 *             layout of two adjacent n-tiles is the m16k16 A layout), lse = m + log l saved.
 *   dk, dv    grid (B·Hk, ceil(Tk/64)): the block's K/V tile stays in shared memory, the group's query
 *             tiles are the inner loop (FA2 order); per query tile Sᵀ = K Qᵀ, dPᵀ = V dOᵀ,
 *             Pᵀ = exp(scale·Sᵀ + mask - lse) recomputed from the saved lse, dSᵀ = Pᵀ∘(dPᵀ - D)·scale,
 *             dV += Pᵀ dO, dK += dSᵀ Q.
 *   dq        grid (B·Hk, ceil(Rg/64)): the forward's layout; per key tile S, dP = dO Vᵀ, dS as above,
 *             dQ += dS K. FlashAttention-2 adds dQ with float atomics from the dk/dv kernel; the engine
 *             uses none (two runs give the same bits), so dq has its own pass, which recomputes S and
 *             dP: 7 tile products per (query, key) tile pair instead of 5.
 *   D_i = dout_i · out_i is precomputed by attention.cu's prep kernel (one copy of that logic).
 * Causally masked tiles are skipped entirely, in all three kernels: no load, no product. A tile is
 * visited only if some row of it sees some key of the other tile (for a group tile, its largest
 * query position decides). Masks read from memory (padding) are applied per element, not skipped.
 *
 * Shared-memory tiles are bf16 with rows padded by 8 elements (16 bytes), so the 8 rows a fragment
 * load touches fall in different banks. Operands the mma reads "down a column" (V in P·V, dO in
 * Pᵀ·dO, Q in dSᵀ·Q, K in dS·K) are staged a second time transposed, so every fragment register is
 * one aligned 32-bit shared-memory load. Deliberately simple first version: no cp.async pipelining,
 * no ldmatrix, no register-resident operands; performance is for mt-bench-gpu on a device.
 */
#include <math.h>
#include <string.h>

#include "common.cuh"
#include "flash_attention.cuh"
#include "mma.cuh"

#define FA_ROWS 64   /* query rows per tile (4 warps x 16) and keys per tile */
#define FA_WARPS 4
#define FA_TS (FA_ROWS + 8) /* row stride of a transposed tile (DP rows of 64 + 8) */
#define FA_MAXD 128         /* largest head dim (D and Dv) these kernels take */
#define FA_FULL 0xffffffffu

template <int DP>
struct fa_dims {
    static const int SP = DP + 8;              /* row stride of a row-major tile (64 rows of DP + 8) */
    static const int RM = FA_ROWS * SP;        /* elements of a row-major tile */
    static const int TR = DP * FA_TS;          /* elements of a transposed tile */
};

typedef struct fa_args {
    int64_t B, H, Hk, Tq, Tk, hpg, Rg;
    int D, Dv;
    float scale;
    int causal;
    const float *mask;
    int64_t msb, msh, msi;
} fa_args;

/* Keys [0, end) are visible to query position i. */
__device__ __forceinline__ int64_t fa_causal_end(const fa_args &a, int64_t i) {
    if (!a.causal) return a.Tk;
    int64_t e = i + (a.Tk - a.Tq) + 1;
    return e < 0 ? 0 : (e > a.Tk ? a.Tk : e);
}

/* The largest causal end over group rows [g0, min(g0 + 64, Rg)): the keys the tile can see at all. */
__device__ __forceinline__ int64_t fa_tile_end(const fa_args &a, int64_t g0) {
    if (!a.causal) return a.Tk;
    int64_t g1 = g0 + FA_ROWS < a.Rg ? g0 + FA_ROWS : a.Rg;
    int64_t imax = (g0 / a.Tq != (g1 - 1) / a.Tq) ? a.Tq - 1 : (g1 - 1) % a.Tq;
    return fa_causal_end(a, imax);
}

/* Group row g of (b, hk): query head h, position i, and its row of q/out/lse. */
__device__ __forceinline__ int64_t fa_qrow(const fa_args &a, int64_t b, int64_t hk, int64_t g, int64_t &h, int64_t &i) {
    h = hk * a.hpg + g / a.Tq;
    i = g % a.Tq;
    return (b * a.H + h) * a.Tq + i;
}

/* Row r of a tile, by one warp: src[0, w) as bf16 (zeros past w, a zero row when src is NULL), into the
 * row-major tile rm and/or the transposed tile tr. */
template <int DP>
__device__ __forceinline__ void fa_put_row(uint16_t *rm, uint16_t *tr, int r, const float *src, int w) {
    int lane = threadIdx.x & 31;
    for (int c = lane; c < DP; c += 32) {
        uint16_t x = mt_f32_to_bf16(src && c < w ? src[c] : 0.0f);
        if (rm) rm[r * fa_dims<DP>::SP + c] = x;
        if (tr) tr[c * FA_TS + r] = x;
    }
}

/* acc[n] (16 x 8 per n, n < NT) += A (16 rows of a row-major tile from row r0, columns [0, 16 KS))
 * times Bᵀ where B's row n*8 + j is row-major tile row n*8 + j: C = A Bᵀ over KS k-steps of 16. */
template <int KS, int NT, int SA, int SB>
__device__ __forceinline__ void fa_mma_abt(float (*acc)[4], const uint16_t *A, int r0, const uint16_t *Bt) {
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        const uint16_t *pa = A + (r0 + g) * SA + kk * 16 + 2 * t;
        uint32_t af[4] = {mt_ld_pair(pa), mt_ld_pair(pa + 8 * SA), mt_ld_pair(pa + 8), mt_ld_pair(pa + 8 * SA + 8)};
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const uint16_t *pb = Bt + (n * 8 + g) * SB + kk * 16 + 2 * t;
            uint32_t bf[2] = {mt_ld_pair(pb), mt_ld_pair(pb + 8)};
            mt_mma_bf16_16816(acc[n], af, bf);
        }
    }
}

/* acc[n] (16 x 8, n < NT) += P (16 x 64, this warp's accumulators p[8][4], rounded to bf16) times B,
 * where B (64 x 8 NT) is given transposed: Bt row n*8 + j holds column n*8 + j (stride FA_TS). */
template <int NT>
__device__ __forceinline__ void fa_mma_pb(float (*acc)[4], const float (*p)[4], const uint16_t *Bt) {
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int kk = 0; kk < FA_ROWS / 16; kk++) {
        uint32_t af[4] = {mt_pack_bf16(p[2 * kk][0], p[2 * kk][1]), mt_pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                          mt_pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                          mt_pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const uint16_t *pb = Bt + (n * 8 + g) * FA_TS + kk * 16 + 2 * t;
            uint32_t bf[2] = {mt_ld_pair(pb), mt_ld_pair(pb + 8)};
            mt_mma_bf16_16816(acc[n], af, bf);
        }
    }
}

/* Max / sum over the 4 lanes that hold one accumulator row. */
__device__ __forceinline__ float fa_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(FA_FULL, x, 1));
    return fmaxf(x, __shfl_xor_sync(FA_FULL, x, 2));
}
__device__ __forceinline__ float fa_quad_sum(float x) {
    x += __shfl_xor_sync(FA_FULL, x, 1);
    return x + __shfl_xor_sync(FA_FULL, x, 2);
}

/* ---------------------------------------------------------------------------------------------
 * Forward. Shared: Qs (64 x SP), Ks (64 x SP), Vt (DP x TS).
 * ------------------------------------------------------------------------------------------- */

template <int DP>
__global__ void __launch_bounds__(FA_WARPS * 32)
    fa_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v, fa_args a) {
    extern __shared__ float smem[];
    typedef fa_dims<DP> L;
    uint16_t *Qs = (uint16_t *)smem, *Ks = Qs + L::RM, *Vt = Ks + L::RM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int64_t bhk = blockIdx.x, b = bhk / a.Hk, hk = bhk % a.Hk;
    int64_t g0 = (int64_t)blockIdx.y * FA_ROWS;
    for (int r = warp; r < FA_ROWS; r += FA_WARPS) {
        int64_t h, i, row = g0 + r < a.Rg ? fa_qrow(a, b, hk, g0 + r, h, i) : -1;
        fa_put_row<DP>(Qs, NULL, r, row >= 0 ? q + row * a.D : NULL, a.D);
    }
    /* this lane's two rows: tile rows warp*16 + gq (accumulator elements 0, 1) and + 8 (2, 3) */
    bool valid[2];
    int64_t jend[2], orow[2];
    const float *mrow[2];
    float m[2], l[2], o[DP / 8][4];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        int64_t g = g0 + warp * 16 + gq + 8 * rr, h = 0, i = 0;
        valid[rr] = g < a.Rg;
        orow[rr] = valid[rr] ? fa_qrow(a, b, hk, g, h, i) : 0;
        jend[rr] = valid[rr] ? fa_causal_end(a, i) : 0;
        mrow[rr] = a.mask && valid[rr] ? a.mask + b * a.msb + h * a.msh + i * a.msi : NULL;
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
    }
#pragma unroll
    for (int n = 0; n < DP / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    const float *kb = k + bhk * a.Tk * a.D, *vb = v + bhk * a.Tk * a.Dv;
    int64_t jmax = fa_tile_end(a, g0); /* key tiles past it are causally masked for every row: skipped */
    for (int64_t j0 = 0; j0 < jmax; j0 += FA_ROWS) {
        __syncthreads(); /* the previous tile is consumed (and the Q tile written) */
        for (int r = warp; r < FA_ROWS; r += FA_WARPS) {
            bool in = j0 + r < a.Tk;
            fa_put_row<DP>(Ks, NULL, r, in ? kb + (j0 + r) * a.D : NULL, a.D);
            fa_put_row<DP>(NULL, Vt, r, in ? vb + (j0 + r) * a.Dv : NULL, a.Dv);
        }
        __syncthreads();
        float s[FA_ROWS / 8][4];
#pragma unroll
        for (int n = 0; n < FA_ROWS / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
        fa_mma_abt<DP / 16, FA_ROWS / 8, L::SP, L::SP>(s, Qs, warp * 16, Ks);
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            float mx = -INFINITY;
#pragma unroll
            for (int n = 0; n < FA_ROWS / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int64_t j = j0 + n * 8 + 2 * tq + e;
                    float x = s[n][2 * rr + e];
                    x = valid[rr] && j < jend[rr] ? x * a.scale + (mrow[rr] ? mrow[rr][j] : 0.0f) : -INFINITY;
                    s[n][2 * rr + e] = x;
                    mx = fmaxf(mx, x);
                }
            mx = fa_quad_max(mx);
            float mnew = fmaxf(m[rr], mx);
            /* nothing visible yet (mnew = -inf): p = 0, the (zero) accumulators stay */
            float alpha = mnew == -INFINITY ? 1.0f : expf(m[rr] - mnew), sum = 0.0f;
#pragma unroll
            for (int n = 0; n < FA_ROWS / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = mnew == -INFINITY ? 0.0f : expf(s[n][2 * rr + e] - mnew);
                    s[n][2 * rr + e] = p;
                    sum += p;
                }
            sum = fa_quad_sum(sum);
            l[rr] = l[rr] * alpha + sum;
            m[rr] = mnew;
#pragma unroll
            for (int n = 0; n < DP / 8; n++) {
                o[n][2 * rr] *= alpha;
                o[n][2 * rr + 1] *= alpha;
            }
        }
        fa_mma_pb<DP / 8>(o, s, Vt);
    }
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        if (!valid[rr]) continue;
        bool none = m[rr] == -INFINITY;
        float inv = none ? 0.0f : 1.0f / l[rr];
        float *orow_p = out + orow[rr] * a.Dv;
#pragma unroll
        for (int n = 0; n < DP / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int c = n * 8 + 2 * tq + e;
                if (c < a.Dv) orow_p[c] = none ? 0.0f : o[n][2 * rr + e] * inv;
            }
        if (tq == 0) lse[orow[rr]] = none ? -INFINITY : m[rr] + logf(l[rr]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Backward: dk, dv. A block owns 64 keys of (b, hk) and walks the group's query tiles.
 * Shared: Ks, Vs, Qs, Gs (64 x SP each), Qt, Gt (DP x TS each), then per query of the tile
 * lse, D (f32), causal end (int), mask offset (int64).
 * ------------------------------------------------------------------------------------------- */

template <int DP>
__global__ void __launch_bounds__(FA_WARPS * 32)
    fa_bwd_dkdv_kernel(float *dk, float *dv, const float *dout, const float *Dd, const float *lse, const float *q,
                       const float *k, const float *v, fa_args a) {
    extern __shared__ float smem[];
    typedef fa_dims<DP> L;
    uint16_t *Ks = (uint16_t *)smem, *Vs = Ks + L::RM, *Qs = Vs + L::RM, *Gs = Qs + L::RM, *Qt = Gs + L::RM,
             *Gt = Qt + L::TR;
    float *lse_t = (float *)(Gt + L::TR), *D_t = lse_t + FA_ROWS;
    int *jend_t = (int *)(D_t + FA_ROWS);
    int64_t *moff_t = (int64_t *)(jend_t + FA_ROWS);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int64_t bhk = blockIdx.x, b = bhk / a.Hk, hk = bhk % a.Hk;
    int64_t jb0 = (int64_t)blockIdx.y * FA_ROWS;
    const float *kb = k + bhk * a.Tk * a.D, *vb = v + bhk * a.Tk * a.Dv;
    for (int r = warp; r < FA_ROWS; r += FA_WARPS) {
        bool in = jb0 + r < a.Tk;
        fa_put_row<DP>(Ks, NULL, r, in ? kb + (jb0 + r) * a.D : NULL, a.D);
        fa_put_row<DP>(Vs, NULL, r, in ? vb + (jb0 + r) * a.Dv : NULL, a.Dv);
    }
    float dK[DP / 8][4], dV[DP / 8][4];
#pragma unroll
    for (int n = 0; n < DP / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dK[n][e] = dV[n][e] = 0.0f;
    int64_t jk[2] = {jb0 + warp * 16 + gq, jb0 + warp * 16 + gq + 8}; /* this lane's two keys */
    for (int64_t g0 = 0; g0 < a.Rg; g0 += FA_ROWS) {
        if (fa_tile_end(a, g0) <= jb0) continue; /* no row of the query tile sees these keys: skipped */
        __syncthreads(); /* the previous query tile is consumed (and the K/V tile written) */
        for (int r = warp; r < FA_ROWS; r += FA_WARPS) {
            int64_t h = 0, i = 0, row = g0 + r < a.Rg ? fa_qrow(a, b, hk, g0 + r, h, i) : -1;
            fa_put_row<DP>(Qs, Qt, r, row >= 0 ? q + row * a.D : NULL, a.D);
            fa_put_row<DP>(Gs, Gt, r, row >= 0 ? dout + row * a.Dv : NULL, a.Dv);
            if (lane == 0) {
                lse_t[r] = row >= 0 ? lse[row] : -INFINITY;
                D_t[r] = row >= 0 ? Dd[row] : 0.0f;
                jend_t[r] = row >= 0 ? (int)fa_causal_end(a, i) : 0;
                moff_t[r] = row >= 0 ? b * a.msb + h * a.msh + i * a.msi : 0;
            }
        }
        __syncthreads();
        float st[FA_ROWS / 8][4], dpt[FA_ROWS / 8][4];
#pragma unroll
        for (int n = 0; n < FA_ROWS / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[n][e] = dpt[n][e] = 0.0f;
        fa_mma_abt<DP / 16, FA_ROWS / 8, L::SP, L::SP>(st, Ks, warp * 16, Qs);  /* Sᵀ = K Qᵀ */
        fa_mma_abt<DP / 16, FA_ROWS / 8, L::SP, L::SP>(dpt, Vs, warp * 16, Gs); /* dPᵀ = V dOᵀ */
#pragma unroll
        for (int n = 0; n < FA_ROWS / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int qi = n * 8 + 2 * tq + (e & 1);
                int64_t j = jk[e >> 1];
                float lq = lse_t[qi];
                bool ok = j < a.Tk && lq != -INFINITY && j < jend_t[qi];
                float p = ok ? expf(st[n][e] * a.scale + (a.mask ? a.mask[moff_t[qi] + j] : 0.0f) - lq) : 0.0f;
                st[n][e] = p;
                dpt[n][e] = p * (dpt[n][e] - D_t[qi]) * a.scale;
            }
        fa_mma_pb<DP / 8>(dV, st, Gt);  /* dV += Pᵀ dO */
        fa_mma_pb<DP / 8>(dK, dpt, Qt); /* dK += dSᵀ Q */
    }
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        if (jk[rr] >= a.Tk) continue;
        int64_t row = bhk * a.Tk + jk[rr];
#pragma unroll
        for (int n = 0; n < DP / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int c = n * 8 + 2 * tq + e;
                if (dk && c < a.D) dk[row * a.D + c] += dK[n][2 * rr + e];
                if (dv && c < a.Dv) dv[row * a.Dv + c] += dV[n][2 * rr + e];
            }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Backward: dq, the forward's layout. Shared: Qs, Gs, Ks, Vs (64 x SP each), Kt (DP x TS).
 * ------------------------------------------------------------------------------------------- */

template <int DP>
__global__ void __launch_bounds__(FA_WARPS * 32)
    fa_bwd_dq_kernel(float *dq, const float *dout, const float *Dd, const float *lse, const float *q, const float *k,
                     const float *v, fa_args a) {
    extern __shared__ float smem[];
    typedef fa_dims<DP> L;
    uint16_t *Qs = (uint16_t *)smem, *Gs = Qs + L::RM, *Ks = Gs + L::RM, *Vs = Ks + L::RM, *Kt = Vs + L::RM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    int64_t bhk = blockIdx.x, b = bhk / a.Hk, hk = bhk % a.Hk;
    int64_t g0 = (int64_t)blockIdx.y * FA_ROWS;
    for (int r = warp; r < FA_ROWS; r += FA_WARPS) {
        int64_t h, i, row = g0 + r < a.Rg ? fa_qrow(a, b, hk, g0 + r, h, i) : -1;
        fa_put_row<DP>(Qs, NULL, r, row >= 0 ? q + row * a.D : NULL, a.D);
        fa_put_row<DP>(Gs, NULL, r, row >= 0 ? dout + row * a.Dv : NULL, a.Dv);
    }
    /* rows whose keys are all masked (lse = -inf) get no gradient, as on the CPU */
    bool act[2];
    int64_t jend[2], qrow[2];
    const float *mrow[2];
    float lq[2], Dq[2], acc[DP / 8][4];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        int64_t g = g0 + warp * 16 + gq + 8 * rr, h = 0, i = 0;
        bool valid = g < a.Rg;
        qrow[rr] = valid ? fa_qrow(a, b, hk, g, h, i) : 0;
        lq[rr] = valid ? lse[qrow[rr]] : -INFINITY;
        Dq[rr] = valid ? Dd[qrow[rr]] : 0.0f;
        act[rr] = valid && lq[rr] != -INFINITY;
        jend[rr] = act[rr] ? fa_causal_end(a, i) : 0;
        mrow[rr] = a.mask && act[rr] ? a.mask + b * a.msb + h * a.msh + i * a.msi : NULL;
    }
#pragma unroll
    for (int n = 0; n < DP / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const float *kb = k + bhk * a.Tk * a.D, *vb = v + bhk * a.Tk * a.Dv;
    int64_t jmax = fa_tile_end(a, g0);
    for (int64_t j0 = 0; j0 < jmax; j0 += FA_ROWS) {
        __syncthreads();
        for (int r = warp; r < FA_ROWS; r += FA_WARPS) {
            bool in = j0 + r < a.Tk;
            fa_put_row<DP>(Ks, Kt, r, in ? kb + (j0 + r) * a.D : NULL, a.D);
            fa_put_row<DP>(Vs, NULL, r, in ? vb + (j0 + r) * a.Dv : NULL, a.Dv);
        }
        __syncthreads();
        float s[FA_ROWS / 8][4], dp[FA_ROWS / 8][4];
#pragma unroll
        for (int n = 0; n < FA_ROWS / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.0f;
        fa_mma_abt<DP / 16, FA_ROWS / 8, L::SP, L::SP>(s, Qs, warp * 16, Ks);  /* S = Q Kᵀ */
        fa_mma_abt<DP / 16, FA_ROWS / 8, L::SP, L::SP>(dp, Gs, warp * 16, Vs); /* dP = dO Vᵀ */
#pragma unroll
        for (int n = 0; n < FA_ROWS / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int rr = e >> 1;
                int64_t j = j0 + n * 8 + 2 * tq + (e & 1);
                bool ok = act[rr] && j < jend[rr];
                float p = ok ? expf(s[n][e] * a.scale + (mrow[rr] ? mrow[rr][j] : 0.0f) - lq[rr]) : 0.0f;
                dp[n][e] = p * (dp[n][e] - Dq[rr]) * a.scale;
            }
        fa_mma_pb<DP / 8>(acc, dp, Kt); /* dQ += dS K */
    }
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        if (!act[rr]) continue;
        float *d = dq + qrow[rr] * a.D;
#pragma unroll
        for (int n = 0; n < DP / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int c = n * 8 + 2 * tq + e;
                if (c < a.D) d[c] += acc[n][2 * rr + e];
            }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------------------- */

enum { FA_FWD = 0, FA_DKDV = 1, FA_DQ = 2 };

/* Dynamic shared memory of kernel `which` at padded head dim DP. */
static size_t fa_smem(int which, int DP) {
    size_t rm = (size_t)FA_ROWS * (DP + 8) * 2, tr = (size_t)DP * FA_TS * 2;
    switch (which) {
    case FA_FWD: return 2 * rm + tr;
    case FA_DKDV: return 4 * rm + 2 * tr + FA_ROWS * (2 * sizeof(float) + sizeof(int) + sizeof(int64_t));
    default: return 4 * rm + tr;
    }
}

static int fa_dp(int64_t D, int64_t Dv) { return D <= 64 && Dv <= 64 ? 64 : 128; }

/* The one eligibility rule (dispatch and tests): 1 when these kernels take the call, else 0 with the
 * reason in why. */
static int fa_eligible(int precision, int cc_major, size_t smem_optin, int64_t D, int64_t Dv, int backward,
                       char *why, size_t cap) {
    if (precision != MT_PRECISION_BF16) {
        if (why) snprintf(why, cap, "precision %d is not bf16: the f32 kernel", precision);
        return 0;
    }
    if (cc_major < 8) {
        if (why) snprintf(why, cap, "compute capability %d.x has no bf16 mma (needs 8.0): the f32 kernel", cc_major);
        return 0;
    }
    if (D < 1 || Dv < 1 || D > FA_MAXD || Dv > FA_MAXD) {
        if (why)
            snprintf(why, cap, "head dims D = %lld, Dv = %lld: the tensor-core kernels take 1..%d: the f32 kernel",
                     (long long)D, (long long)Dv, FA_MAXD);
        return 0;
    }
    int dp = fa_dp(D, Dv);
    size_t need = fa_smem(FA_FWD, dp);
    if (backward) {
        size_t b1 = fa_smem(FA_DKDV, dp), b2 = fa_smem(FA_DQ, dp);
        need = b1 > b2 ? b1 : b2;
    }
    if (need > smem_optin) {
        if (why)
            snprintf(why, cap, "D = %lld, Dv = %lld need %zu bytes of shared memory per block (device: %zu): the f32 "
                     "kernel", (long long)D, (long long)Dv, need, smem_optin);
        return 0;
    }
    if (why) snprintf(why, cap, "bf16 tensor-core kernels (head dims padded to %d)", dp);
    return 1;
}

extern "C" int mt_cuda_flash_attention_supported(int device, int precision, int64_t D, int64_t Dv, int backward,
                                                 char *why, size_t cap) {
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
        if (why) snprintf(why, cap, "cuda:%d: %s", device, cudaGetErrorName(e));
        return 0;
    }
    return fa_eligible(precision, prop.major, prop.sharedMemPerBlockOptin, D, Dv, backward, why, cap);
}

int mt_cuda_flash_eligible(const mt_cuda_exec *cx, int precision, int64_t D, int64_t Dv, int backward) {
    return fa_eligible(precision, cx->cc_major, cx->smem_optin, D, Dv, backward, NULL, 0);
}

static mt_status fa_make_args(const mt_attn_desc *ad, fa_args *a) {
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
    a->scale = ad->scale;
    a->causal = ad->causal;
    a->mask = ad->mask;
    a->msb = ad->mask_sb;
    a->msh = ad->mask_sh;
    a->msi = ad->mask_si;
    return MT_OK;
}

/* Grid (B·Hk, ceil(n / 64)), with the limits of a launch checked. */
static mt_status fa_grid(const fa_args &a, int64_t n, const char *what, dim3 *grid) {
    int64_t gy = (n + FA_ROWS - 1) / FA_ROWS;
    if (gy > 65535 || a.B * a.Hk > 0x7fffffffLL)
        return mt_error(MT_ERR_UNSUPPORTED, "cuda %s: B * Hk = %lld and %lld rows give a grid past the launch limits",
                        what, (long long)(a.B * a.Hk), (long long)n);
    *grid = dim3((unsigned)(a.B * a.Hk), (unsigned)gy);
    return MT_OK;
}

static mt_status fa_opt_in(const mt_cuda_exec *cx, const void *kernel, size_t bytes, const char *what) {
    if (bytes > cx->smem_optin)
        return mt_error(MT_ERR_UNSUPPORTED, "cuda %s: %zu bytes of shared memory per block (device: %zu)", what, bytes,
                        cx->smem_optin);
    if (bytes > 48 * 1024)
        MT_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return MT_OK;
}

template <int DP>
static mt_status fa_fwd_launch(mt_cuda_exec *cx, float *out, float *lse, const float *q, const float *k,
                               const float *v, const fa_args &a) {
    dim3 grid;
    MT_TRY(fa_grid(a, a.Rg, "flash attention", &grid));
    size_t bytes = fa_smem(FA_FWD, DP);
    MT_TRY(fa_opt_in(cx, (const void *)fa_fwd_kernel<DP>, bytes, "flash attention"));
    fa_fwd_kernel<DP><<<grid, FA_WARPS * 32, bytes, cx->stream>>>(out, lse, q, k, v, a);
    MT_LAUNCHED();
    return MT_OK;
}

template <int DP>
static mt_status fa_bwd_launch(mt_cuda_exec *cx, float *dq, float *dk, float *dv, const float *dout, const float *Dd,
                               const float *lse, const float *q, const float *k, const float *v, const fa_args &a) {
    if (dk || dv) {
        dim3 grid;
        MT_TRY(fa_grid(a, a.Tk, "flash attention backward", &grid));
        size_t bytes = fa_smem(FA_DKDV, DP);
        MT_TRY(fa_opt_in(cx, (const void *)fa_bwd_dkdv_kernel<DP>, bytes, "flash attention backward"));
        fa_bwd_dkdv_kernel<DP><<<grid, FA_WARPS * 32, bytes, cx->stream>>>(dk, dv, dout, Dd, lse, q, k, v, a);
        MT_LAUNCHED();
    }
    if (dq) {
        dim3 grid;
        MT_TRY(fa_grid(a, a.Rg, "flash attention backward", &grid));
        size_t bytes = fa_smem(FA_DQ, DP);
        MT_TRY(fa_opt_in(cx, (const void *)fa_bwd_dq_kernel<DP>, bytes, "flash attention backward"));
        fa_bwd_dq_kernel<DP><<<grid, FA_WARPS * 32, bytes, cx->stream>>>(dq, dout, Dd, lse, q, k, v, a);
        MT_LAUNCHED();
    }
    return MT_OK;
}

mt_status mt_cuda_flash_fwd(mt_cuda_exec *cx, float *out, float *lse, const float *q, const float *k, const float *v,
                            const mt_attn_desc *ad) {
    char why[200];
    if (!fa_eligible(MT_PRECISION_BF16, cx->cc_major, cx->smem_optin, ad->D, ad->Dv, 0, why, sizeof why))
        return mt_error(MT_ERR_UNSUPPORTED, "cuda flash attention: %s", why);
    fa_args a;
    MT_TRY(fa_make_args(ad, &a));
    return fa_dp(ad->D, ad->Dv) == 64 ? fa_fwd_launch<64>(cx, out, lse, q, k, v, a)
                                      : fa_fwd_launch<128>(cx, out, lse, q, k, v, a);
}

mt_status mt_cuda_flash_bwd(mt_cuda_exec *cx, float *dq, float *dk, float *dv, const float *dout, const float *Dd,
                            const float *lse, const float *q, const float *k, const float *v, const mt_attn_desc *ad) {
    char why[200];
    if (!fa_eligible(MT_PRECISION_BF16, cx->cc_major, cx->smem_optin, ad->D, ad->Dv, 1, why, sizeof why))
        return mt_error(MT_ERR_UNSUPPORTED, "cuda flash attention backward: %s", why);
    fa_args a;
    MT_TRY(fa_make_args(ad, &a));
    return fa_dp(ad->D, ad->Dv) == 64 ? fa_bwd_launch<64>(cx, dq, dk, dv, dout, Dd, lse, q, k, v, a)
                                      : fa_bwd_launch<128>(cx, dq, dk, dv, dout, Dd, lse, q, k, v, a);
}
