/*
 * backend_cpu.c — the CPU backend's table: memory (plain host memory), creation and conversion
 * kernels, the strided copy behind every layout op, and pointers to the compute kernels of the
 * other files in this folder.
 */
#include <stdlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/numeric.h"
#include "core/rng.h"
#include "cpu/cpu.h"

int64_t mt_cpu_stream_min = (int64_t)16 << 20;

static mt_status cpu_exec_init(mt_exec *ex, int device) {
    (void)device;
    if (ex->n_threads <= 0) ex->n_threads = mt_threads_default() > 0 ? mt_threads_default() : omp_get_max_threads();
    return MT_OK;
}

static void cpu_exec_free(mt_exec *ex) { (void)ex; }

static mt_status cpu_alloc(int device, void **ptr, size_t bytes) {
    (void)device;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0)
        return mt_error(MT_ERR_NOMEM, "cpu: out of memory allocating %zu bytes", bytes);
    mt_sys_alloc_count_add(1);
    *ptr = p;
    return MT_OK;
}

static void cpu_free(int device, void *ptr) {
    (void)device;
    free(ptr);
}

static mt_status cpu_memcpy(mt_exec *ex, void *dst, const void *src, size_t bytes) {
    (void)ex;
    if (dst != src && bytes) memcpy(dst, src, bytes);
    return MT_OK;
}

/* Gradients are zeroed on first use (core/autograd.c), up to the logits' tens of MB a step: large
 * ones are cut into one piece per thread (cache-line aligned) rather than leave the team idle. */
static mt_status cpu_zero(mt_exec *ex, void *dst, size_t bytes) {
    int nt = mt_cpu_threads(ex);
    if (nt <= 1 || bytes < (size_t)MT_CPU_PAR_MIN * sizeof(float) * 4) {
        memset(dst, 0, bytes);
        return MT_OK;
    }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        size_t lo = (bytes * (size_t)t / (size_t)T) & ~(size_t)63;
        size_t hi = t == T - 1 ? bytes : (bytes * (size_t)(t + 1) / (size_t)T) & ~(size_t)63;
        if (hi > lo) memset((char *)dst + lo, 0, hi - lo);
    }
    return MT_OK;
}

static mt_status cpu_sync(mt_exec *ex) {
    (void)ex;
    return MT_OK;
}

static mt_status cpu_fill(mt_exec *ex, float *out, int64_t n, float value) {
    int nt = mt_cpu_threads(ex);
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = value;
    return MT_OK;
}

static mt_status cpu_arange(mt_exec *ex, float *out, int64_t n, double start, double step) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) out[i] = (float)(start + step * (double)i);
    return MT_OK;
}

static mt_status cpu_random(mt_exec *ex, float *out, int64_t n, mt_random_dist dist, float a, float b,
                            uint64_t seed, uint64_t offset) {
    int nt = mt_cpu_threads(ex);
    if (dist == MT_RANDOM_UNIFORM) {
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = a + (b - a) * mt_rng_uniform(seed, offset + (uint64_t)i);
    } else {
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = a + b * mt_rng_normal(seed, offset + (uint64_t)i);
    }
    return MT_OK;
}

static mt_status cpu_cast(mt_exec *ex, void *out, mt_dtype to, const void *in, mt_dtype from, int64_t n) {
    int nt = mt_cpu_threads(ex);
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float f = mt_load_as_f32(in, from, i);
        switch (to) {
        case MT_DTYPE_F32: ((float *)out)[i] = f; break;
        case MT_DTYPE_BF16: ((uint16_t *)out)[i] = mt_f32_to_bf16(f); break;
        case MT_DTYPE_F16: ((uint16_t *)out)[i] = mt_f32_to_f16(f); break;
        case MT_DTYPE_I32: ((int32_t *)out)[i] = (int32_t)lrintf(f); break;
        case MT_DTYPE_I8: ((int8_t *)out)[i] = (int8_t)fmaxf(-128.0f, fminf(127.0f, rintf(f))); break;
        }
    }
    return MT_OK;
}

/* The innermost dim is copied as a run when both strides are 1 (memcpy or a vector add). Each thread
 * takes a range of outer rows and walks their multi-index by incrementing it (a division per dim
 * once per thread, not per row: a permuted (B, T, H, D) tensor has rows of only D floats). */
static mt_status cpu_copy_strided(mt_exec *ex, void *out, const int64_t *ostride, const void *in,
                                  const int64_t *istride, const int64_t *shape, int ndim, size_t elem_size,
                                  int accumulate) {
    if (ndim == 0) {
        if (accumulate) *(float *)out += *(const float *)in;
        else memcpy(out, in, elem_size);
        return MT_OK;
    }
    int64_t inner = shape[ndim - 1];
    int64_t outer = 1;
    for (int d = 0; d < ndim - 1; d++) outer *= shape[d];
    int contig = ostride[ndim - 1] == 1 && istride[ndim - 1] == 1;
    int64_t os_in = ostride[ndim - 1], is_in = istride[ndim - 1];
    /* Accumulation where several index tuples land on one output element (a stride-0 output axis: the
     * backward of a broadcast) runs in one thread, in index order: no race, and a fixed sum order. */
    int collide = 0;
    for (int d = 0; d < ndim - 1; d++) collide |= accumulate && ostride[d] == 0 && shape[d] > 1;
    int nt = mt_cpu_threads(ex);
    if (collide || outer * inner <= MT_CPU_PAR_MIN || outer < 2) nt = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t o0 = outer * t / T, o1 = outer * (t + 1) / T;
        int64_t idx[MT_MAX_DIMS] = {0}, oo = 0, io = 0, rem = o0;
        for (int d = ndim - 2; d >= 0; d--) {
            idx[d] = rem % shape[d];
            rem /= shape[d];
            oo += idx[d] * ostride[d];
            io += idx[d] * istride[d];
        }
        for (int64_t o = o0; o < o1; o++) {
            if (accumulate) {
                float *dst = (float *)out + oo;
                const float *src = (const float *)in + io;
                if (contig) {
                    for (int64_t j = 0; j < inner; j++) dst[j] += src[j];
                } else {
                    for (int64_t j = 0; j < inner; j++) dst[j * os_in] += src[j * is_in];
                }
            } else if (contig) {
                memcpy((char *)out + (size_t)oo * elem_size, (const char *)in + (size_t)io * elem_size,
                       (size_t)inner * elem_size);
            } else if (elem_size == 4) {
                uint32_t *dst = (uint32_t *)out + oo;
                const uint32_t *src = (const uint32_t *)in + io;
                for (int64_t j = 0; j < inner; j++) dst[j * os_in] = src[j * is_in];
            } else {
                uint16_t *dst = (uint16_t *)out + oo;
                const uint16_t *src = (const uint16_t *)in + io;
                for (int64_t j = 0; j < inner; j++) dst[j * os_in] = src[j * is_in];
            }
            for (int d = ndim - 2; d >= 0; d--) { /* the next row's multi-index */
                oo += ostride[d];
                io += istride[d];
                if (++idx[d] < shape[d]) break;
                oo -= shape[d] * ostride[d];
                io -= shape[d] * istride[d];
                idx[d] = 0;
            }
        }
    }
    return MT_OK;
}

const mt_backend mt_cpu_backend = {
    .name = "cpu",
    .exec_init = cpu_exec_init,
    .exec_free = cpu_exec_free,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_host = cpu_memcpy,
    .to_device = cpu_memcpy,
    .copy = cpu_memcpy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .fill = cpu_fill,
    .arange = cpu_arange,
    .random = cpu_random,
    .cast = cpu_cast,
    .unary_fwd = mt_cpu_unary_fwd,
    .unary_bwd = mt_cpu_unary_bwd,
    .scalar_fwd = mt_cpu_scalar_fwd,
    .scalar_bwd = mt_cpu_scalar_bwd,
    .binary_fwd = mt_cpu_binary_fwd,
    .binary_bwd = mt_cpu_binary_bwd,
    .masked_fill_fwd = mt_cpu_masked_fill_fwd,
    .masked_fill_bwd = mt_cpu_masked_fill_bwd,
    .dropout_fwd = mt_cpu_dropout_fwd,
    .dropout_bwd = mt_cpu_dropout_bwd,
    .reduce_fwd = mt_cpu_reduce_fwd,
    .reduce_bwd = mt_cpu_reduce_bwd,
    .argmax = mt_cpu_argmax,
    .sumsq = mt_cpu_sumsq,
    .copy_strided = cpu_copy_strided,
    .gemm = mt_cpu_gemm,
    .softmax_fwd = mt_cpu_softmax_fwd,
    .softmax_bwd = mt_cpu_softmax_bwd,
    .layernorm_fwd = mt_cpu_layernorm_fwd,
    .layernorm_bwd = mt_cpu_layernorm_bwd,
    .rmsnorm_fwd = mt_cpu_rmsnorm_fwd,
    .rmsnorm_bwd = mt_cpu_rmsnorm_bwd,
    .embedding_fwd = mt_cpu_embedding_fwd,
    .embedding_bwd = mt_cpu_embedding_bwd,
    .cross_entropy_fwd = mt_cpu_cross_entropy_fwd,
    .cross_entropy_bwd = mt_cpu_cross_entropy_bwd,
    .cross_entropy_fused = mt_cpu_cross_entropy_fused,
    .attention_fwd = mt_cpu_attention_fwd,
    .attention_bwd = mt_cpu_attention_bwd,
    .rope = mt_cpu_rope,
    .adamw = mt_cpu_adamw,
    .adamw_clip = mt_cpu_adamw_clip,
    .sumsq_multi = mt_cpu_sumsq_multi,
    .adamw_multi = mt_cpu_adamw_multi,
    .qlinear = mt_cpu_qlinear,
};
