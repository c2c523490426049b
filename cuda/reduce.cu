/*
 * reduce.cu — sum / max over any set of axes and their backward, argmax, sum of squares.
 *
 * A reduction is planned as on the CPU (core/reduce_plan.h): size-1 axes dropped, neighbouring
 * axes of the same kind merged. With one reduced group it is (outer, R, inner):
 *   inner == 1  rows of R contiguous floats: one block per row (per split of the row), or one thread
 *               per row when rows are short;
 *   inner  > 1  a block covers 32 adjacent columns (coalesced) and 8 slices of R.
 * When there are too few outputs to fill the GPU, R is split across blocks: each writes a partial to
 * scratch and a second kernel combines them in a fixed order, so results are deterministic (no float
 * atomics). Several reduced groups (rare) take a plain per-output loop.
 * Max keeps the first maximum (lowest flat index of x) on ties, like the CPU scans.
 */
#include <string.h>

#include "common.cuh"
extern "C" {
#include "core/reduce_plan.h"
}

/* (value, flat index) of a max scan; the better of two keeps the larger value, then the lower index. */
__device__ __forceinline__ void max_pick(float &v, int32_t &i, float v2, int32_t i2) {
    if (i2 < 0) return; /* an empty candidate (a thread that saw no element) */
    if (i < 0 || v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

__device__ __forceinline__ void warp_max_pick(float &v, int32_t &i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int32_t i2 = __shfl_xor_sync(0xffffffffu, i, o);
        max_pick(v, i, v2, i2);
    }
}

/* Block-wide (value, index) max, result in thread 0. */
__device__ __forceinline__ void block_max_pick(float &v, int32_t &i) {
    __shared__ float sv[32];
    __shared__ int32_t si[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    warp_max_pick(v, i);
    __syncthreads();
    if (lane == 0) {
        sv[w] = v;
        si[w] = i;
    }
    __syncthreads();
    if (w == 0) {
        v = lane < nw ? sv[lane] : -INFINITY;
        i = lane < nw ? si[lane] : -1;
        warp_max_pick(v, i);
    }
}

/* Rows: x (outer, R) -> out (outer) or partials (S, outer). grid (outer, S). */
template <bool MAX>
__global__ void reduce_rows_kernel(float *out, int32_t *arg, const float *x, int64_t outer, int64_t R, int64_t chunk,
                                   int accumulate, int partial) {
    __shared__ float sh[32];
    int64_t o = blockIdx.x, s = blockIdx.y;
    int64_t r0 = s * chunk, r1 = r0 + chunk < R ? r0 + chunk : R;
    const float *row = x + o * R;
    if (MAX) {
        float v = -INFINITY;
        int32_t vi = -1;
        for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) max_pick(v, vi, row[r], (int32_t)(o * R + r));
        block_max_pick(v, vi);
        if (threadIdx.x == 0) {
            int64_t k = partial ? s * outer + o : o;
            out[k] = (accumulate && !partial) ? out[k] + v : v;
            if (arg) arg[k] = vi;
        }
    } else {
        float acc = 0.0f;
        for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) acc += row[r];
        acc = mt_block_sum(acc, sh);
        if (threadIdx.x == 0) {
            int64_t k = partial ? s * outer + o : o;
            out[k] = (accumulate && !partial) ? out[k] + acc : acc;
        }
    }
}

/* Short rows (R <= 32): one thread per row. */
template <bool MAX>
__global__ void reduce_short_rows_kernel(float *out, int32_t *arg, const float *x, int64_t outer, int64_t R,
                                         int accumulate) {
    MT_GRID_STRIDE(o, outer) {
        const float *row = x + o * R;
        float v = MAX ? -INFINITY : 0.0f;
        int32_t vi = -1;
        for (int64_t r = 0; r < R; r++) {
            if (MAX) max_pick(v, vi, row[r], (int32_t)(o * R + r));
            else v += row[r];
        }
        out[o] = accumulate ? out[o] + v : v;
        if (MAX && arg) arg[o] = vi;
    }
}

/* Columns: x (outer, R, inner), block (32, 8) over 32 columns of one outer index and a chunk of R.
 * grid (outer * ceil(inner/32), S). */
template <bool MAX>
__global__ void reduce_cols_kernel(float *out, int32_t *arg, const float *x, int64_t outer, int64_t R, int64_t inner,
                                   int64_t chunk, int accumulate, int partial) {
    __shared__ float sv[8][33];
    __shared__ int32_t si[8][33];
    int64_t tiles = (inner + 31) / 32;
    int64_t o = blockIdx.x / tiles, i = (blockIdx.x % tiles) * 32 + threadIdx.x;
    int64_t s = blockIdx.y;
    int64_t r0 = s * chunk, r1 = r0 + chunk < R ? r0 + chunk : R;
    float v = MAX ? -INFINITY : 0.0f;
    int32_t vi = -1;
    if (i < inner) {
        const float *base = x + o * R * inner + i;
        for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
            float e = base[r * inner];
            if (MAX) max_pick(v, vi, e, (int32_t)((o * R + r) * inner + i));
            else v += e;
        }
    }
    sv[threadIdx.y][threadIdx.x] = v;
    si[threadIdx.y][threadIdx.x] = vi;
    __syncthreads();
    if (threadIdx.y == 0 && i < inner) {
        for (int y = 1; y < (int)blockDim.y; y++) {
            if (MAX) max_pick(v, vi, sv[y][threadIdx.x], si[y][threadIdx.x]);
            else v += sv[y][threadIdx.x];
        }
        int64_t k = partial ? s * outer * inner + o * inner + i : o * inner + i;
        out[k] = (accumulate && !partial) ? out[k] + v : v;
        if (MAX && arg) arg[k] = vi;
    }
}

/* Combines S partials (S, n) in split order into out (n). */
template <bool MAX>
__global__ void combine_kernel(float *out, int32_t *arg, const float *part, const int32_t *part_arg, int64_t n, int S,
                               int accumulate) {
    MT_GRID_STRIDE(k, n) {
        float v = part[k];
        int32_t vi = MAX ? part_arg[k] : -1;
        for (int s = 1; s < S; s++) {
            if (MAX) max_pick(v, vi, part[(int64_t)s * n + k], part_arg[(int64_t)s * n + k]);
            else v += part[(int64_t)s * n + k];
        }
        out[k] = accumulate ? out[k] + v : v;
        if (MAX && arg) arg[k] = vi;
    }
}

struct gen_args {
    int ndim;
    int64_t shape[MT_MAX_DIMS], stride[MT_MAX_DIMS];
    int red[MT_MAX_DIMS];
};

static gen_args make_gen(const mt_reduce_plan *c) {
    gen_args g;
    memset(&g, 0, sizeof g);
    g.ndim = c->ndim;
    int64_t s = 1;
    for (int d = c->ndim - 1; d >= 0; d--) {
        g.shape[d] = c->shape[d];
        g.stride[d] = s;
        g.red[d] = c->red[d];
        s *= c->shape[d];
    }
    return g;
}

/* Offset in x of output o (kept dims) and of reduced index r (reduced dims). */
__device__ __forceinline__ int64_t gen_offset(const gen_args &g, int64_t o, int64_t r) {
    int64_t off = 0;
    for (int d = g.ndim - 1; d >= 0; d--) {
        int64_t idx;
        if (g.red[d]) {
            idx = r % g.shape[d];
            r /= g.shape[d];
        } else {
            idx = o % g.shape[d];
            o /= g.shape[d];
        }
        off += idx * g.stride[d];
    }
    return off;
}

template <bool MAX>
__global__ void reduce_general_kernel(float *out, int32_t *arg, const float *x, gen_args g, int64_t n_out,
                                      int64_t n_red, int accumulate) {
    MT_GRID_STRIDE(o, n_out) {
        float v = MAX ? -INFINITY : 0.0f;
        int32_t vi = -1;
        for (int64_t r = 0; r < n_red; r++) {
            int64_t off = gen_offset(g, o, r);
            if (MAX) max_pick(v, vi, x[off], (int32_t)off);
            else v += x[off];
        }
        out[o] = accumulate ? out[o] + v : v;
        if (MAX && arg) arg[o] = vi;
    }
}

__global__ void reduce_bwd_simple_kernel(float *dx, const float *dy, int64_t n, int64_t R, int64_t inner,
                                         float scale) {
    MT_GRID_STRIDE(e, n) {
        int64_t i = e % inner, o = e / (R * inner);
        dx[e] += dy[o * inner + i] * scale;
    }
}

/* dx element e -> its output index: the kept coordinates of e. */
__global__ void reduce_bwd_general_kernel(float *dx, const float *dy, gen_args g, int64_t n, float scale) {
    MT_GRID_STRIDE(e, n) {
        int64_t rem = e, o = 0, mult = 1;
        for (int d = g.ndim - 1; d >= 0; d--) {
            int64_t idx = rem % g.shape[d];
            rem /= g.shape[d];
            if (!g.red[d]) {
                o += idx * mult;
                mult *= g.shape[d];
            }
        }
        dx[e] += dy[o] * scale;
    }
}

__global__ void reduce_bwd_max_kernel(float *dx, const float *dy, const int32_t *arg, int64_t n_out, float scale) {
    MT_GRID_STRIDE(o, n_out) {
        int32_t k = arg[o];
        if (k >= 0) dx[k] += dy[o] * scale;
    }
}

/* First maximum over n of rows (outer, n) with inner == 1: a block per row. */
__global__ void argmax_rows_kernel(int32_t *out, const float *x, int64_t n) {
    int64_t o = blockIdx.x;
    const float *row = x + o * n;
    float v = -INFINITY;
    int32_t vi = -1;
    for (int64_t r = threadIdx.x; r < n; r += blockDim.x) max_pick(v, vi, row[r], (int32_t)r);
    block_max_pick(v, vi);
    if (threadIdx.x == 0) out[o] = vi < 0 ? 0 : vi;
}

__global__ void argmax_cols_kernel(int32_t *out, const float *x, int64_t outer, int64_t n, int64_t inner) {
    MT_GRID_STRIDE(k, outer * inner) {
        int64_t o = k / inner, i = k % inner;
        const float *p = x + o * n * inner + i;
        int64_t best = 0;
        for (int64_t r = 1; r < n; r++)
            if (p[r * inner] > p[best * inner]) best = r;
        out[k] = (int32_t)best;
    }
}

/* Sum of squares in double: partial per block, then one block adds the partials. */
__global__ void sumsq_partial_kernel(double *part, const float *x, int64_t n) {
    __shared__ double sh[32];
    double acc = 0.0;
    MT_GRID_STRIDE(i, n) acc += (double)x[i] * (double)x[i];
    acc = mt_block_sum_d(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void sumsq_final_kernel(float *out, const double *part, int n, int accumulate) {
    __shared__ double sh[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += part[i];
    acc = mt_block_sum_d(acc, sh);
    if (threadIdx.x == 0) out[0] = accumulate ? out[0] + (float)acc : (float)acc;
}

/* ---------------------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------------------- */

/* Splits of R: enough blocks to fill the GPU, at least 2048 elements of R per split. */
static int splits_for(const mt_cuda_exec *cx, const mt_reduce_plan *c) {
    if (c->inner == 1 && c->R <= 32) return 1;
    int64_t blocks = c->inner == 1 ? c->outer : c->outer * ((c->inner + 31) / 32);
    int64_t want = 2 * (int64_t)cx->n_sm;
    if (blocks >= want || c->R < 4096) return 1;
    int64_t s = (want + blocks - 1) / blocks;
    int64_t by_len = c->R / 2048;
    if (s > by_len) s = by_len;
    if (s > 256) s = 256;
    return s < 1 ? 1 : (int)s;
}

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

size_t mt_cuda_reduce_scratch_bytes(const mt_cuda_exec *cx, mt_reduce_op op, const mt_reduce_desc *rd) {
    mt_reduce_plan c = mt_reduce_plan_make(rd);
    if (!c.simple) return 0;
    int S = splits_for(cx, &c);
    if (S == 1) return 0;
    size_t n = (size_t)S * (size_t)(c.outer * c.inner);
    return align256(n * sizeof(float)) + (op == MT_REDUCE_MAX ? align256(n * sizeof(int32_t)) : 0);
}

mt_status mt_cuda_reduce_run(mt_cuda_exec *cx, mt_reduce_op op, float *out, int32_t *argidx, const float *x,
                             const mt_reduce_desc *rd, int accumulate, void *scratch) {
    int is_max = op == MT_REDUCE_MAX;
    mt_reduce_plan c = mt_reduce_plan_make(rd);
    cudaStream_t st = cx->stream;
    if (rd->n_out <= 0) return MT_OK;
    if (!c.simple) {
        gen_args g = make_gen(&c);
        unsigned b = mt_blocks(rd->n_out, 128);
        if (is_max)
            reduce_general_kernel<true><<<b, 128, 0, st>>>(out, argidx, x, g, rd->n_out, rd->n_red, accumulate);
        else
            reduce_general_kernel<false><<<b, 128, 0, st>>>(out, argidx, x, g, rd->n_out, rd->n_red, accumulate);
        MT_LAUNCHED();
        return MT_OK;
    }
    if (c.outer * c.R * c.inner > INT32_MAX && is_max && argidx)
        return mt_error(MT_ERR_UNSUPPORTED, "cuda max: %lld elements: argmax indices need fewer than 2^31",
                        (long long)(c.outer * c.R * c.inner));
    int S = splits_for(cx, &c);
    int64_t n_out = c.outer * c.inner;
    float *dst = out;
    int32_t *dst_arg = argidx;
    if (S > 1) {
        if (!scratch) return mt_error(MT_ERR_INTERNAL, "cuda reduce: split reduction without scratch");
        dst = (float *)scratch;
        dst_arg = is_max ? (int32_t *)((char *)scratch + align256((size_t)S * (size_t)n_out * sizeof(float))) : NULL;
    }
    int64_t chunk = (c.R + S - 1) / S;
    int partial = S > 1;
    if (c.inner == 1 && c.R <= 32) {
        unsigned b = mt_blocks(c.outer, MT_THREADS);
        if (is_max)
            reduce_short_rows_kernel<true><<<b, MT_THREADS, 0, st>>>(out, argidx, x, c.outer, c.R, accumulate);
        else
            reduce_short_rows_kernel<false><<<b, MT_THREADS, 0, st>>>(out, argidx, x, c.outer, c.R, accumulate);
    } else if (c.inner == 1) {
        dim3 grid((unsigned)c.outer, (unsigned)S);
        if (c.outer > INT32_MAX) return mt_error(MT_ERR_UNSUPPORTED, "cuda reduce: too many rows");
        if (is_max)
            reduce_rows_kernel<true><<<grid, 256, 0, st>>>(dst, dst_arg, x, c.outer, c.R, chunk, accumulate, partial);
        else
            reduce_rows_kernel<false><<<grid, 256, 0, st>>>(dst, dst_arg, x, c.outer, c.R, chunk, accumulate, partial);
    } else {
        int64_t tiles = c.outer * ((c.inner + 31) / 32);
        if (tiles > INT32_MAX) return mt_error(MT_ERR_UNSUPPORTED, "cuda reduce: too many columns");
        dim3 grid((unsigned)tiles, (unsigned)S), block(32, 8);
        if (is_max)
            reduce_cols_kernel<true><<<grid, block, 0, st>>>(dst, dst_arg, x, c.outer, c.R, c.inner, chunk, accumulate,
                                                             partial);
        else
            reduce_cols_kernel<false><<<grid, block, 0, st>>>(dst, dst_arg, x, c.outer, c.R, c.inner, chunk,
                                                              accumulate, partial);
    }
    MT_LAUNCHED();
    if (S > 1) {
        unsigned b = mt_blocks(n_out, MT_THREADS);
        if (is_max)
            combine_kernel<true><<<b, MT_THREADS, 0, st>>>(out, argidx, dst, dst_arg, n_out, S, accumulate);
        else
            combine_kernel<false><<<b, MT_THREADS, 0, st>>>(out, argidx, dst, NULL, n_out, S, accumulate);
        MT_LAUNCHED();
    }
    return MT_OK;
}

extern "C" mt_status mt_cuda_reduce_fwd(mt_exec *ex, mt_reduce_op op, float *out, int32_t *argidx, const float *x,
                                        const mt_reduce_desc *rd, int accumulate) {
    MT_CUDA_ENTER(ex, cx);
    if (op != MT_REDUCE_SUM && op != MT_REDUCE_MAX)
        return mt_error(MT_ERR_INTERNAL, "cuda reduce: op %d (mean is a sum the op layer scales)", (int)op);
    size_t bytes = mt_cuda_reduce_scratch_bytes(cx, op, rd);
    void *scr = NULL;
    if (bytes) MT_TRY(mt_cuda_scratch(cx, bytes, &scr));
    return mt_cuda_reduce_run(cx, op, out, argidx, x, rd, accumulate, scr);
}

extern "C" mt_status mt_cuda_reduce_bwd(mt_exec *ex, mt_reduce_op op, float *dx, const float *dy,
                                        const int32_t *argidx, const mt_reduce_desc *rd, float scale) {
    MT_CUDA_ENTER(ex, cx);
    cudaStream_t st = cx->stream;
    if (op == MT_REDUCE_MAX) {
        if (!argidx) return mt_error(MT_ERR_INTERNAL, "cuda max backward: no saved indices");
        reduce_bwd_max_kernel<<<mt_blocks(rd->n_out, MT_THREADS), MT_THREADS, 0, st>>>(dx, dy, argidx, rd->n_out,
                                                                                        scale);
        MT_LAUNCHED();
        return MT_OK;
    }
    mt_reduce_plan c = mt_reduce_plan_make(rd);
    int64_t n = rd->n_out * rd->n_red;
    if (n <= 0) return MT_OK;
    if (c.simple)
        reduce_bwd_simple_kernel<<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, st>>>(dx, dy, n, c.R, c.inner, scale);
    else
        reduce_bwd_general_kernel<<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, st>>>(dx, dy, make_gen(&c), n, scale);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_argmax(mt_exec *ex, int32_t *out, const float *x, int64_t outer, int64_t n,
                                    int64_t inner) {
    MT_CUDA_ENTER(ex, cx);
    if (outer <= 0 || n <= 0 || inner <= 0) return MT_OK;
    if (inner == 1) {
        if (outer > INT32_MAX) return mt_error(MT_ERR_UNSUPPORTED, "cuda argmax: too many rows");
        argmax_rows_kernel<<<(unsigned)outer, 256, 0, cx->stream>>>(out, x, n);
    } else {
        argmax_cols_kernel<<<mt_blocks(outer * inner, MT_THREADS), MT_THREADS, 0, cx->stream>>>(out, x, outer, n,
                                                                                                 inner);
    }
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_sumsq(mt_exec *ex, float *out, const float *x, int64_t n, int accumulate) {
    MT_CUDA_ENTER(ex, cx);
    int blocks = (int)mt_blocks(n, MT_THREADS);
    if (blocks > 1024) blocks = 1024;
    void *scr = NULL;
    MT_TRY(mt_cuda_scratch(cx, (size_t)blocks * sizeof(double), &scr));
    if (n > 0) {
        sumsq_partial_kernel<<<blocks, MT_THREADS, 0, cx->stream>>>((double *)scr, x, n);
        MT_LAUNCHED();
    } else {
        blocks = 0;
    }
    return mt_cuda_sum_partials(cx, out, (const double *)scr, blocks, accumulate);
}

mt_status mt_cuda_sum_partials(mt_cuda_exec *cx, float *out, const double *part, int n, int accumulate) {
    sumsq_final_kernel<<<1, MT_THREADS, 0, cx->stream>>>(out, part, n, accumulate);
    MT_LAUNCHED();
    return MT_OK;
}
