/*
 * elementwise.cu — creation (fill, arange, random), dtype conversion, unary / scalar / broadcast binary
 * ops, masked_fill, dropout, and the strided copy behind every layout op; kernels first, launchers
 * after. Semantics follow engine/cpu/elementwise.c and backend_cpu.c exactly: backward kernels
 * accumulate, a broadcast operand's gradient is a full-size temporary summed over its broadcast axes,
 * dropout draws from the same Philox stream (so the CPU and GPU drop the same elements).
 *
 * Broadcast index math runs in 32 bits when the tensor allows it (the common case), 64 otherwise.
 * The flat kernels (fill, casts, unary, scalar, contiguous binary, dropout) are templates over the
 * access width W (vec.cuh): float4 accesses when every pointer is 16-byte aligned, the scalar loop
 * otherwise; any length, the partial last group element by element.
 */
#include <string.h>

#include "common.cuh"
#include "core/reduce_plan.h"
#include "vec.cuh"

/* The collapsed broadcast of core/backend.h, passed by value to kernels. */
struct bc_args {
    int ndim;
    int64_t shape[MT_MAX_DIMS], sa[MT_MAX_DIMS], sb[MT_MAX_DIMS];
};

static bc_args make_bc(const mt_bcast *bc) {
    bc_args a;
    a.ndim = bc->ndim;
    for (int d = 0; d < MT_MAX_DIMS; d++) {
        a.shape[d] = d < bc->ndim ? bc->shape[d] : 1;
        a.sa[d] = d < bc->ndim ? bc->sa[d] : 0;
        a.sb[d] = d < bc->ndim ? bc->sb[d] : 0;
    }
    return a;
}

template <typename I>
__device__ __forceinline__ void bc_offsets(const bc_args &bc, I i, I &ia, I &ib) {
    I oa = 0, ob = 0;
    for (int d = bc.ndim - 1; d >= 0; d--) {
        I s = (I)bc.shape[d];
        I idx = i % s;
        i /= s;
        oa += idx * (I)bc.sa[d];
        ob += idx * (I)bc.sb[d];
    }
    ia = oa;
    ib = ob;
}

/* 32-bit index math when every index and offset stays below 2^30: a grid-stride loop adds at most
 * 2^28 (2^20 blocks of 256) to an index below 2^30, so nothing overflows. */
#define MT_IDX32_LIMIT (1LL << 30)
static bool bc_fits32(const mt_bcast *bc) {
    return bc->numel < MT_IDX32_LIMIT && bc->na < MT_IDX32_LIMIT && bc->nb < MT_IDX32_LIMIT;
}

/* ---------------------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------------------- */

template <int W>
__global__ void fill_kernel(float *out, int64_t n, float v) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float r[W];
#pragma unroll
        for (int k = 0; k < W; k++) r[k] = v;
        mt_vst<W>(out, i, n, r);
    }
}

__global__ void arange_kernel(float *out, int64_t n, double start, double step) {
    MT_GRID_STRIDE(i, n) out[i] = (float)(start + step * (double)i);
}

__global__ void random_kernel(float *out, int64_t n, int normal, float a, float b, uint64_t seed, uint64_t offset) {
    MT_GRID_STRIDE(i, n) {
        out[i] = normal ? a + b * mt_rng_normal(seed, offset + (uint64_t)i)
                        : a + (b - a) * mt_rng_uniform(seed, offset + (uint64_t)i);
    }
}

__global__ void cast_kernel(void *out, mt_dtype to, const void *in, mt_dtype from, int64_t n) {
    MT_GRID_STRIDE(i, n) {
        float f = mt_load_as_f32(in, from, i);
        switch (to) {
        case MT_DTYPE_F32: ((float *)out)[i] = f; break;
        case MT_DTYPE_BF16: ((uint16_t *)out)[i] = mt_f32_to_bf16(f); break;
        case MT_DTYPE_F16: ((uint16_t *)out)[i] = mt_f32_to_f16(f); break;
        case MT_DTYPE_I32: ((int32_t *)out)[i] = __float2int_rn(f); break;
        case MT_DTYPE_I8: ((int8_t *)out)[i] = (int8_t)fmaxf(-128.0f, fminf(127.0f, rintf(f))); break;
        }
    }
}

/* F32 -> BF16 without the per-element dtype switches: the cast mixed precision makes before a GEMM.
 * W = 8: two float4 loads, one 16-byte store of eight bf16. */
template <int W>
__global__ void cast_f32_bf16_kernel(uint16_t *out, const float *in, int64_t n) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float r[W];
        mt_vld<W>(in, i, n, r);
        mt_vst_bf16<W>(out, i, n, r);
    }
}

/* BF16 -> F32 (a bf16 tensor read back or widened): one 16-byte load, two float4 stores. */
template <int W>
__global__ void cast_bf16_f32_kernel(float *out, const uint16_t *in, int64_t n) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float r[W];
        mt_vld_bf16<W>(in, i, n, r);
        mt_vst<W>(out, i, n, r);
    }
}

template <int OP>
__device__ __forceinline__ float unary_f(float x) {
    switch (OP) {
    case MT_UNARY_NEG: return -x;
    case MT_UNARY_EXP: return expf(x);
    case MT_UNARY_LOG: return logf(x);
    case MT_UNARY_SQRT: return sqrtf(x);
    case MT_UNARY_TANH: return tanhf(x);
    case MT_UNARY_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case MT_UNARY_RELU: return x > 0.0f ? x : 0.0f;
    case MT_UNARY_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    default: return x / (1.0f + expf(-x)); /* SILU */
    }
}

/* dy * f'(x), with y = f(x) where that is cheaper. */
template <int OP>
__device__ __forceinline__ float unary_g(float dy, float x, float y) {
    switch (OP) {
    case MT_UNARY_NEG: return -dy;
    case MT_UNARY_EXP: return dy * y;
    case MT_UNARY_LOG: return dy / x;
    case MT_UNARY_SQRT: return dy * 0.5f / y;
    case MT_UNARY_TANH: return dy * (1.0f - y * y);
    case MT_UNARY_SIGMOID: return dy * y * (1.0f - y);
    case MT_UNARY_RELU: return x > 0.0f ? dy : 0.0f;
    case MT_UNARY_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return dy * (cdf + x * pdf);
    }
    default: {
        float s = 1.0f / (1.0f + expf(-x));
        return dy * (s + x * s * (1.0f - s));
    }
    }
}

template <int OP, int W>
__global__ void unary_fwd_kernel(float *out, const float *x, int64_t n) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float r[W];
        mt_vld<W>(x, i, n, r);
#pragma unroll
        for (int k = 0; k < W; k++) r[k] = unary_f<OP>(r[k]);
        mt_vst<W>(out, i, n, r);
    }
}

/* x or y may be NULL when the op does not read it. */
template <int OP, int W>
__global__ void unary_bwd_kernel(float *dx, const float *dy, const float *x, const float *y, int64_t n) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float d[W], g[W], xv[W] = {}, yv[W] = {};
        mt_vld<W>(dx, i, n, d);
        mt_vld<W>(dy, i, n, g);
        if (x) mt_vld<W>(x, i, n, xv);
        if (y) mt_vld<W>(y, i, n, yv);
#pragma unroll
        for (int k = 0; k < W; k++) d[k] += unary_g<OP>(g[k], xv[k], yv[k]);
        mt_vst<W>(dx, i, n, d);
    }
}

__device__ __forceinline__ float scalar_f(mt_scalar_op op, float v, float s) {
    switch (op) {
    case MT_SCALAR_ADD: return v + s;
    case MT_SCALAR_SUB: return v - s;
    case MT_SCALAR_MUL: return v * s;
    case MT_SCALAR_DIV: return v / s;
    case MT_SCALAR_RSUB: return s - v;
    case MT_SCALAR_RDIV: return s / v;
    default: return powf(v, s);
    }
}

template <int W>
__global__ void scalar_fwd_kernel(mt_scalar_op op, float *out, const float *x, float s, int64_t n) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float r[W];
        mt_vld<W>(x, i, n, r);
#pragma unroll
        for (int k = 0; k < W; k++) r[k] = scalar_f(op, r[k], s);
        mt_vst<W>(out, i, n, r);
    }
}

__device__ __forceinline__ float scalar_g(mt_scalar_op op, float dy, float x, float s) {
    switch (op) {
    case MT_SCALAR_ADD:
    case MT_SCALAR_SUB: return dy;
    case MT_SCALAR_MUL: return dy * s;
    case MT_SCALAR_DIV: return dy / s;
    case MT_SCALAR_RSUB: return -dy;
    case MT_SCALAR_RDIV: return -dy * s / (x * x);
    default: return s == 0.0f ? 0.0f : dy * s * powf(x, s - 1.0f);
    }
}

/* x may be NULL when op does not read it (add, sub, mul, div, rsub). */
template <int W>
__global__ void scalar_bwd_kernel(mt_scalar_op op, float *dx, const float *dy, const float *x, float s, int64_t n) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float d[W], g[W], xv[W] = {};
        mt_vld<W>(dx, i, n, d);
        mt_vld<W>(dy, i, n, g);
        if (x) mt_vld<W>(x, i, n, xv);
#pragma unroll
        for (int k = 0; k < W; k++) d[k] += scalar_g(op, g[k], xv[k], s);
        mt_vst<W>(dx, i, n, d);
    }
}

template <int OP>
__device__ __forceinline__ float binop(float a, float b) {
    switch (OP) {
    case MT_BINARY_ADD: return a + b;
    case MT_BINARY_SUB: return a - b;
    case MT_BINARY_MUL: return a * b;
    default: return a / b;
    }
}

/* out may alias a (mt_accumulate: dst = dst + src): each element is read then written by one thread. */
template <int OP, int W>
__global__ void binary_contig_kernel(float *out, const float *a, const float *b, int64_t n) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float x[W], y[W];
        mt_vld<W>(a, i, n, x);
        mt_vld<W>(b, i, n, y);
#pragma unroll
        for (int k = 0; k < W; k++) x[k] = binop<OP>(x[k], y[k]);
        mt_vst<W>(out, i, n, x);
    }
}

template <int OP, typename I>
__global__ void binary_bcast_kernel(float *out, const float *a, const float *b, bc_args bc, I n) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I ia, ib;
        bc_offsets<I>(bc, i, ia, ib);
        out[i] = binop<OP>(a[ia], b[ib]);
    }
}

__device__ __forceinline__ float binop_grad(mt_binary_op op, int side, float dy, float a, float b) {
    switch (op) {
    case MT_BINARY_ADD: return dy;
    case MT_BINARY_SUB: return side == 0 ? dy : -dy;
    case MT_BINARY_MUL: return side == 0 ? dy * b : dy * a;
    default: return side == 0 ? dy / b : -dy * a / (b * b);
    }
}

/* Gradient of one side at every output element: accumulated into d (this side not broadcast: laid
 * out like the output) or written into the full-size temporary g (broadcast side, reduced after). */
template <typename I>
__global__ void binary_grad_kernel(mt_binary_op op, int side, float *d, int accumulate, const float *dy,
                                   const float *a, const float *b, bc_args bc, I n) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I ia, ib;
        bc_offsets<I>(bc, i, ia, ib);
        float g = binop_grad(op, side, dy[i], a[ia], b[ib]);
        if (accumulate) d[i] += g;
        else d[i] = g;
    }
}

template <int W>
__global__ void neg_copy_kernel(float *g, const float *dy, int64_t n) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float r[W];
        mt_vld<W>(dy, i, n, r);
#pragma unroll
        for (int k = 0; k < W; k++) r[k] = -r[k];
        mt_vst<W>(g, i, n, r);
    }
}

template <typename I>
__global__ void masked_fill_fwd_kernel(float *out, const float *x, const float *mask, float value, bc_args bc, I n) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I ia, ib;
        bc_offsets<I>(bc, i, ia, ib);
        out[i] = mask[ib] != 0.0f ? value : x[ia];
    }
}

template <typename I>
__global__ void masked_fill_bwd_kernel(float *dx, const float *dy, const float *mask, bc_args bc, I n) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I ia, ib;
        bc_offsets<I>(bc, i, ia, ib);
        if (mask[ib] == 0.0f) dx[i] += dy[i];
    }
}

template <int W>
__global__ void dropout_fwd_kernel(float *out, const float *x, int64_t n, float p, float scale, uint64_t seed,
                                   uint64_t offset, const float *residual) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float r[W], res[W];
        mt_vld<W>(x, i, n, r);
        if (residual) mt_vld<W>(residual, i, n, res);
#pragma unroll
        for (int k = 0; k < W; k++) {
            float d = mt_rng_uniform(seed, offset + (uint64_t)(i + k)) >= p ? r[k] * scale : 0.0f;
            r[k] = residual ? res[k] + d : d;
        }
        mt_vst<W>(out, i, n, r);
    }
}

template <int W>
__global__ void dropout_bwd_kernel(float *dx, const float *dy, int64_t n, float p, float scale, uint64_t seed,
                                   uint64_t offset) {
    MT_GRID_STRIDE_VEC(i, n, W) {
        float d[W], g[W];
        mt_vld<W>(dx, i, n, d);
        mt_vld<W>(dy, i, n, g);
#pragma unroll
        for (int k = 0; k < W; k++)
            if (mt_rng_uniform(seed, offset + (uint64_t)(i + k)) >= p) d[k] += g[k] * scale;
        mt_vst<W>(dx, i, n, d);
    }
}

struct strided_args {
    int ndim;
    int64_t shape[MT_MAX_DIMS], ostr[MT_MAX_DIMS], istr[MT_MAX_DIMS];
};

/* mode: 0 copy, 1 accumulate (F32). (Accumulation where output elements coincide is
 * copy_strided_sum_kernel's.) */
template <typename T, typename I>
__global__ void copy_strided_kernel(T *out, const T *in, strided_args s, I n, int mode) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I r = i, oo = 0, io = 0;
        for (int d = s.ndim - 1; d >= 0; d--) {
            I sh = (I)s.shape[d];
            I idx = r % sh;
            r /= sh;
            oo += idx * (I)s.ostr[d];
            io += idx * (I)s.istr[d];
        }
        if (mode == 0) out[oo] = in[io];
        else ((float *)out)[oo] += ((const float *)in)[io];
    }
}

/* Accumulation over the axes whose output stride is 0 (the backward of a broadcast): a thread per
 * output element sums its inputs in index order and adds the sum once. No atomics, so the result
 * does not depend on scheduling. kept: the axes with an output stride; red: the others. */
__global__ void copy_strided_sum_kernel(float *out, const float *in, strided_args kept, strided_args red,
                                        int64_t n_kept, int64_t n_red) {
    MT_GRID_STRIDE(i, n_kept) {
        int64_t r = i, oo = 0, io = 0;
        for (int d = kept.ndim - 1; d >= 0; d--) {
            int64_t idx = r % kept.shape[d];
            r /= kept.shape[d];
            oo += idx * kept.ostr[d];
            io += idx * kept.istr[d];
        }
        float acc = 0.0f;
        for (int64_t q = 0; q < n_red; q++) {
            int64_t rr = q, ii = io;
            for (int d = red.ndim - 1; d >= 0; d--) {
                ii += (rr % red.shape[d]) * red.istr[d];
                rr /= red.shape[d];
            }
            acc += in[ii];
        }
        out[oo] += acc;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------------------- */

extern "C" mt_status mt_cuda_fill(mt_exec *ex, float *out, int64_t n, float value) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    if (mt_vec_ok(out)) {
        fill_kernel<MT_VEC><<<mt_blocks((n + MT_VEC - 1) / MT_VEC, MT_THREADS), MT_THREADS, 0, cx->stream>>>(out, n,
                                                                                                          value);
        mt_cuda_count_vector_launches(1);
    } else {
        fill_kernel<1><<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, cx->stream>>>(out, n, value);
    }
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_arange(mt_exec *ex, float *out, int64_t n, double start, double step) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    arange_kernel<<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, cx->stream>>>(out, n, start, step);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_random(mt_exec *ex, float *out, int64_t n, mt_random_dist dist, float a, float b,
                                    uint64_t seed, uint64_t offset) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    random_kernel<<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, cx->stream>>>(out, n, dist == MT_RANDOM_NORMAL, a, b,
                                                                           seed, offset);
    MT_LAUNCHED();
    return MT_OK;
}

static bool dtype_ok(mt_dtype d) {
    return d == MT_DTYPE_F32 || d == MT_DTYPE_BF16 || d == MT_DTYPE_F16 || d == MT_DTYPE_I32 || d == MT_DTYPE_I8;
}

extern "C" mt_status mt_cuda_cast(mt_exec *ex, void *out, mt_dtype to, const void *in, mt_dtype from, int64_t n) {
    MT_CUDA_ENTER(ex, cx);
    if (!dtype_ok(to) || !dtype_ok(from))
        return mt_error(MT_ERR_DTYPE, "cuda cast: unknown dtype (%d -> %d)", (int)from, (int)to);
    if (n <= 0) return MT_OK;
    if (from == to) {
        size_t es = to == MT_DTYPE_I8 ? 1 : (to == MT_DTYPE_BF16 || to == MT_DTYPE_F16) ? 2 : 4;
        if (out != in) {
            MT_CK(cudaMemcpyAsync(out, in, (size_t)n * es, cudaMemcpyDeviceToDevice, cx->stream));
            mt_cuda_count_launches(1);
        }
        return MT_OK;
    }
    bool vec = mt_vec_ok(out, in);
    unsigned g8 = mt_blocks((n + 7) / 8, MT_THREADS), g1 = mt_blocks(n, MT_THREADS);
    if (from == MT_DTYPE_F32 && to == MT_DTYPE_BF16) { /* the mixed-precision hot path */
        if (vec) cast_f32_bf16_kernel<8><<<g8, MT_THREADS, 0, cx->stream>>>((uint16_t *)out, (const float *)in, n);
        else cast_f32_bf16_kernel<1><<<g1, MT_THREADS, 0, cx->stream>>>((uint16_t *)out, (const float *)in, n);
    } else if (from == MT_DTYPE_BF16 && to == MT_DTYPE_F32) {
        if (vec) cast_bf16_f32_kernel<8><<<g8, MT_THREADS, 0, cx->stream>>>((float *)out, (const uint16_t *)in, n);
        else cast_bf16_f32_kernel<1><<<g1, MT_THREADS, 0, cx->stream>>>((float *)out, (const uint16_t *)in, n);
    } else {
        vec = false;
        cast_kernel<<<g1, MT_THREADS, 0, cx->stream>>>(out, to, in, from, n);
    }
    if (vec) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}

/* A flat launch at width MT_VEC when vec, else 1: the grid for n elements at that width. */
static inline unsigned vec_blocks(int64_t n, bool vec) {
    return mt_blocks(vec ? (n + MT_VEC - 1) / MT_VEC : n, MT_THREADS);
}

template <int OP>
static void unary_fwd_launch(cudaStream_t s, float *out, const float *x, int64_t n, bool vec) {
    if (vec) unary_fwd_kernel<OP, MT_VEC><<<vec_blocks(n, true), MT_THREADS, 0, s>>>(out, x, n);
    else unary_fwd_kernel<OP, 1><<<vec_blocks(n, false), MT_THREADS, 0, s>>>(out, x, n);
}

template <int OP>
static void unary_bwd_launch(cudaStream_t s, float *dx, const float *dy, const float *x, const float *y, int64_t n,
                             bool vec) {
    if (vec) unary_bwd_kernel<OP, MT_VEC><<<vec_blocks(n, true), MT_THREADS, 0, s>>>(dx, dy, x, y, n);
    else unary_bwd_kernel<OP, 1><<<vec_blocks(n, false), MT_THREADS, 0, s>>>(dx, dy, x, y, n);
}

extern "C" mt_status mt_cuda_unary_fwd(mt_exec *ex, mt_unary_op op, float *out, const float *x, int64_t n) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    cudaStream_t s = cx->stream;
    bool v = mt_vec_ok(out, x);
    switch (op) {
    case MT_UNARY_NEG: unary_fwd_launch<MT_UNARY_NEG>(s, out, x, n, v); break;
    case MT_UNARY_EXP: unary_fwd_launch<MT_UNARY_EXP>(s, out, x, n, v); break;
    case MT_UNARY_LOG: unary_fwd_launch<MT_UNARY_LOG>(s, out, x, n, v); break;
    case MT_UNARY_SQRT: unary_fwd_launch<MT_UNARY_SQRT>(s, out, x, n, v); break;
    case MT_UNARY_TANH: unary_fwd_launch<MT_UNARY_TANH>(s, out, x, n, v); break;
    case MT_UNARY_SIGMOID: unary_fwd_launch<MT_UNARY_SIGMOID>(s, out, x, n, v); break;
    case MT_UNARY_RELU: unary_fwd_launch<MT_UNARY_RELU>(s, out, x, n, v); break;
    case MT_UNARY_GELU: unary_fwd_launch<MT_UNARY_GELU>(s, out, x, n, v); break;
    case MT_UNARY_SILU: unary_fwd_launch<MT_UNARY_SILU>(s, out, x, n, v); break;
    default: return mt_error(MT_ERR_INTERNAL, "cuda unary: unknown op %d", (int)op);
    }
    if (v) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_unary_bwd(mt_exec *ex, mt_unary_op op, float *dx, const float *dy, const float *x,
                                       const float *y, int64_t n) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    cudaStream_t s = cx->stream;
    bool v = mt_vec_ok(dx, dy, x, y);
    switch (op) {
    case MT_UNARY_NEG: unary_bwd_launch<MT_UNARY_NEG>(s, dx, dy, x, y, n, v); break;
    case MT_UNARY_EXP: unary_bwd_launch<MT_UNARY_EXP>(s, dx, dy, x, y, n, v); break;
    case MT_UNARY_LOG: unary_bwd_launch<MT_UNARY_LOG>(s, dx, dy, x, y, n, v); break;
    case MT_UNARY_SQRT: unary_bwd_launch<MT_UNARY_SQRT>(s, dx, dy, x, y, n, v); break;
    case MT_UNARY_TANH: unary_bwd_launch<MT_UNARY_TANH>(s, dx, dy, x, y, n, v); break;
    case MT_UNARY_SIGMOID: unary_bwd_launch<MT_UNARY_SIGMOID>(s, dx, dy, x, y, n, v); break;
    case MT_UNARY_RELU: unary_bwd_launch<MT_UNARY_RELU>(s, dx, dy, x, y, n, v); break;
    case MT_UNARY_GELU: unary_bwd_launch<MT_UNARY_GELU>(s, dx, dy, x, y, n, v); break;
    case MT_UNARY_SILU: unary_bwd_launch<MT_UNARY_SILU>(s, dx, dy, x, y, n, v); break;
    default: return mt_error(MT_ERR_INTERNAL, "cuda unary backward: unknown op %d", (int)op);
    }
    if (v) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_scalar_fwd(mt_exec *ex, mt_scalar_op op, float *out, const float *x, float s,
                                        int64_t n) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    bool v = mt_vec_ok(out, x);
    if (v) scalar_fwd_kernel<MT_VEC><<<vec_blocks(n, true), MT_THREADS, 0, cx->stream>>>(op, out, x, s, n);
    else scalar_fwd_kernel<1><<<vec_blocks(n, false), MT_THREADS, 0, cx->stream>>>(op, out, x, s, n);
    if (v) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_scalar_bwd(mt_exec *ex, mt_scalar_op op, float *dx, const float *dy, const float *x,
                                        float s, int64_t n) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    bool v = mt_vec_ok(dx, dy, x);
    if (v) scalar_bwd_kernel<MT_VEC><<<vec_blocks(n, true), MT_THREADS, 0, cx->stream>>>(op, dx, dy, x, s, n);
    else scalar_bwd_kernel<1><<<vec_blocks(n, false), MT_THREADS, 0, cx->stream>>>(op, dx, dy, x, s, n);
    if (v) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}

template <int OP>
static void launch_binary(cudaStream_t s, float *out, const float *a, const float *b, const mt_bcast *bc) {
    int64_t n = bc->numel;
    unsigned g = mt_blocks(n, MT_THREADS);
    if (bc->ndim == 1 && bc->sa[0] == 1 && bc->sb[0] == 1) {
        if (mt_vec_ok(out, a, b)) {
            binary_contig_kernel<OP, MT_VEC><<<vec_blocks(n, true), MT_THREADS, 0, s>>>(out, a, b, n);
            mt_cuda_count_vector_launches(1);
        } else {
            binary_contig_kernel<OP, 1><<<g, MT_THREADS, 0, s>>>(out, a, b, n);
        }
    } else if (bc_fits32(bc)) {
        binary_bcast_kernel<OP, int32_t><<<g, MT_THREADS, 0, s>>>(out, a, b, make_bc(bc), (int32_t)n);
    } else {
        binary_bcast_kernel<OP, int64_t><<<g, MT_THREADS, 0, s>>>(out, a, b, make_bc(bc), n);
    }
}

extern "C" mt_status mt_cuda_binary_fwd(mt_exec *ex, mt_binary_op op, float *out, const float *a, const float *b,
                                        const mt_bcast *bc) {
    MT_CUDA_ENTER(ex, cx);
    if (bc->numel <= 0) return MT_OK;
    switch (op) {
    case MT_BINARY_ADD: launch_binary<MT_BINARY_ADD>(cx->stream, out, a, b, bc); break;
    case MT_BINARY_SUB: launch_binary<MT_BINARY_SUB>(cx->stream, out, a, b, bc); break;
    case MT_BINARY_MUL: launch_binary<MT_BINARY_MUL>(cx->stream, out, a, b, bc); break;
    case MT_BINARY_DIV: launch_binary<MT_BINARY_DIV>(cx->stream, out, a, b, bc); break;
    default: return mt_error(MT_ERR_INTERNAL, "cuda binary: unknown op %d", (int)op);
    }
    MT_LAUNCHED();
    return MT_OK;
}

static mt_status grad_launch(cudaStream_t s, mt_binary_op op, int side, float *d, int accumulate, const float *dy,
                             const float *a, const float *b, const mt_bcast *bc) {
    int64_t n = bc->numel;
    unsigned g = mt_blocks(n, MT_THREADS);
    if (bc_fits32(bc))
        binary_grad_kernel<int32_t><<<g, MT_THREADS, 0, s>>>(op, side, d, accumulate, dy, a, b, make_bc(bc),
                                                             (int32_t)n);
    else
        binary_grad_kernel<int64_t><<<g, MT_THREADS, 0, s>>>(op, side, d, accumulate, dy, a, b, make_bc(bc), n);
    MT_LAUNCHED();
    return MT_OK;
}

static mt_status binary_bwd_side(mt_cuda_exec *cx, mt_binary_op op, int side, float *d, const float *dy,
                                 const float *a, const float *b, const mt_bcast *bc) {
    int64_t n_side = side == 0 ? bc->na : bc->nb;
    if (n_side == bc->numel) return grad_launch(cx->stream, op, side, d, 1, dy, a, b, bc);
    mt_reduce_desc rd = mt_bcast_reduce_desc(bc, side == 0 ? bc->sa : bc->sb);
    size_t red_bytes = mt_cuda_reduce_scratch_bytes(cx, MT_REDUCE_SUM, &rd);
    if (op == MT_BINARY_ADD || (op == MT_BINARY_SUB && side == 0)) {
        void *scr = NULL;
        if (red_bytes) MT_TRY(mt_cuda_scratch(cx, red_bytes, &scr));
        return mt_cuda_reduce_run(cx, MT_REDUCE_SUM, d, NULL, dy, &rd, 1, scr);
    }
    /* The full-size temporary first, the reduction's own scratch after it. */
    size_t g_bytes = ((size_t)bc->numel * sizeof(float) + 255) & ~(size_t)255;
    void *scr = NULL;
    MT_TRY(mt_cuda_scratch(cx, g_bytes + red_bytes, &scr));
    float *g = (float *)scr;
    if (op == MT_BINARY_SUB) {
        bool v = mt_vec_ok(g, dy);
        if (v) neg_copy_kernel<MT_VEC><<<vec_blocks(bc->numel, true), MT_THREADS, 0, cx->stream>>>(g, dy, bc->numel);
        else neg_copy_kernel<1><<<vec_blocks(bc->numel, false), MT_THREADS, 0, cx->stream>>>(g, dy, bc->numel);
        if (v) mt_cuda_count_vector_launches(1);
        MT_LAUNCHED();
    } else {
        MT_TRY(grad_launch(cx->stream, op, side, g, 0, dy, a, b, bc));
    }
    return mt_cuda_reduce_run(cx, MT_REDUCE_SUM, d, NULL, g, &rd, 1, red_bytes ? (char *)scr + g_bytes : NULL);
}

extern "C" mt_status mt_cuda_binary_bwd(mt_exec *ex, mt_binary_op op, float *da, float *db, const float *dy,
                                        const float *a, const float *b, const mt_bcast *bc) {
    MT_CUDA_ENTER(ex, cx);
    if (bc->numel <= 0) return MT_OK;
    if ((unsigned)op > MT_BINARY_DIV) return mt_error(MT_ERR_INTERNAL, "cuda binary backward: unknown op %d", (int)op);
    if (da) MT_TRY(binary_bwd_side(cx, op, 0, da, dy, a, b, bc));
    if (db) MT_TRY(binary_bwd_side(cx, op, 1, db, dy, a, b, bc));
    return MT_OK;
}

extern "C" mt_status mt_cuda_masked_fill_fwd(mt_exec *ex, float *out, const float *x, const float *mask, float value,
                                             const mt_bcast *bc) {
    MT_CUDA_ENTER(ex, cx);
    int64_t n = bc->numel;
    if (n <= 0) return MT_OK;
    unsigned g = mt_blocks(n, MT_THREADS);
    if (bc_fits32(bc))
        masked_fill_fwd_kernel<int32_t><<<g, MT_THREADS, 0, cx->stream>>>(out, x, mask, value, make_bc(bc), (int32_t)n);
    else
        masked_fill_fwd_kernel<int64_t><<<g, MT_THREADS, 0, cx->stream>>>(out, x, mask, value, make_bc(bc), n);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_masked_fill_bwd(mt_exec *ex, float *dx, const float *dy, const float *mask,
                                             const mt_bcast *bc) {
    MT_CUDA_ENTER(ex, cx);
    int64_t n = bc->numel;
    if (n <= 0) return MT_OK;
    unsigned g = mt_blocks(n, MT_THREADS);
    if (bc_fits32(bc))
        masked_fill_bwd_kernel<int32_t><<<g, MT_THREADS, 0, cx->stream>>>(dx, dy, mask, make_bc(bc), (int32_t)n);
    else
        masked_fill_bwd_kernel<int64_t><<<g, MT_THREADS, 0, cx->stream>>>(dx, dy, mask, make_bc(bc), n);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_dropout_fwd(mt_exec *ex, float *out, const float *x, int64_t n, float p, uint64_t seed,
                                         uint64_t offset, const float *residual) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    bool v = mt_vec_ok(out, x, residual);
    float scale = 1.0f / (1.0f - p);
    unsigned g = vec_blocks(n, v);
    if (v) dropout_fwd_kernel<MT_VEC><<<g, MT_THREADS, 0, cx->stream>>>(out, x, n, p, scale, seed, offset, residual);
    else dropout_fwd_kernel<1><<<g, MT_THREADS, 0, cx->stream>>>(out, x, n, p, scale, seed, offset, residual);
    if (v) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_dropout_bwd(mt_exec *ex, float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                                         uint64_t offset) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    bool v = mt_vec_ok(dx, dy);
    float scale = 1.0f / (1.0f - p);
    unsigned g = vec_blocks(n, v);
    if (v) dropout_bwd_kernel<MT_VEC><<<g, MT_THREADS, 0, cx->stream>>>(dx, dy, n, p, scale, seed, offset);
    else dropout_bwd_kernel<1><<<g, MT_THREADS, 0, cx->stream>>>(dx, dy, n, p, scale, seed, offset);
    if (v) mt_cuda_count_vector_launches(1);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_copy_strided(mt_exec *ex, void *out, const int64_t *ostride, const void *in,
                                          const int64_t *istride, const int64_t *shape, int ndim, size_t elem_size,
                                          int accumulate) {
    MT_CUDA_ENTER(ex, cx);
    if (ndim < 0 || ndim > MT_MAX_DIMS || (elem_size != 2 && elem_size != 4) || (accumulate && elem_size != 4))
        return mt_error(MT_ERR_INTERNAL, "cuda copy_strided: ndim %d, elem_size %zu, accumulate %d", ndim, elem_size,
                        accumulate);
    strided_args s;
    memset(&s, 0, sizeof s);
    int64_t n = 1, max_o = 0, max_i = 0;
    int collide = 0, contig = 1;
    int64_t expect = 1;
    /* Drop size-1 dims; note whether both sides are plainly contiguous (one memcpy) and whether two
     * index tuples can land on one output element (a stride-0 output axis: needs atomics). */
    for (int d = ndim - 1; d >= 0; d--) {
        if (shape[d] == 1) continue;
        n *= shape[d];
        max_o += (shape[d] - 1) * (ostride[d] < 0 ? -ostride[d] : ostride[d]);
        max_i += (shape[d] - 1) * (istride[d] < 0 ? -istride[d] : istride[d]);
        if (ostride[d] == 0) collide = 1;
        if (ostride[d] != expect || istride[d] != expect) contig = 0;
        expect *= shape[d];
    }
    int k = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        s.shape[k] = shape[d];
        s.ostr[k] = ostride[d];
        s.istr[k] = istride[d];
        k++;
    }
    s.ndim = k;
    if (n <= 0) return MT_OK;
    if (contig && !accumulate) {
        MT_CK(cudaMemcpyAsync(out, in, (size_t)n * elem_size, cudaMemcpyDeviceToDevice, cx->stream));
        mt_cuda_count_launches(1);
        return MT_OK;
    }
    if (accumulate && collide) {
        strided_args kept, red;
        memset(&kept, 0, sizeof kept);
        memset(&red, 0, sizeof red);
        int64_t n_kept = 1, n_red = 1;
        for (int d = 0; d < s.ndim; d++) {
            strided_args *t = s.ostr[d] == 0 ? &red : &kept;
            t->shape[t->ndim] = s.shape[d];
            t->ostr[t->ndim] = s.ostr[d];
            t->istr[t->ndim] = s.istr[d];
            t->ndim++;
            if (s.ostr[d] == 0) n_red *= s.shape[d];
            else n_kept *= s.shape[d];
        }
        copy_strided_sum_kernel<<<mt_blocks(n_kept, MT_THREADS), MT_THREADS, 0, cx->stream>>>(
            (float *)out, (const float *)in, kept, red, n_kept, n_red);
        MT_LAUNCHED();
        return MT_OK;
    }
    int mode = accumulate ? 1 : 0;
    unsigned g = mt_blocks(n, MT_THREADS);
    bool small = n < MT_IDX32_LIMIT && max_o < MT_IDX32_LIMIT && max_i < MT_IDX32_LIMIT;
    if (elem_size == 4) {
        if (small)
            copy_strided_kernel<uint32_t, int32_t><<<g, MT_THREADS, 0, cx->stream>>>(
                (uint32_t *)out, (const uint32_t *)in, s, (int32_t)n, mode);
        else
            copy_strided_kernel<uint32_t, int64_t><<<g, MT_THREADS, 0, cx->stream>>>((uint32_t *)out,
                                                                                      (const uint32_t *)in, s, n, mode);
    } else {
        if (small)
            copy_strided_kernel<uint16_t, int32_t><<<g, MT_THREADS, 0, cx->stream>>>(
                (uint16_t *)out, (const uint16_t *)in, s, (int32_t)n, mode);
        else
            copy_strided_kernel<uint16_t, int64_t><<<g, MT_THREADS, 0, cx->stream>>>((uint16_t *)out,
                                                                                      (const uint16_t *)in, s, n, mode);
    }
    MT_LAUNCHED();
    return MT_OK;
}
