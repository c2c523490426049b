/*
 * cpu.h — the CPU backend's kernels (declared for backend_cpu.c's table) and the vectorizable math
 * they share.
 *
 * Loops are written so gcc vectorizes them with AVX2+FMA (no calls in the inner loops: exp and erf
 * are polynomial approximations below, accurate to a few ulp) and split across threads with OpenMP
 * when the work is large enough to pay for it.
 */
#ifndef MT_CPU_CPU_H
#define MT_CPU_CPU_H

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "core/backend.h"

/* Below this many elements a loop runs on one thread: forking costs more than it saves. */
#define MT_CPU_PAR_MIN 32768

/* Compute-bound loops (polynomial exp/erf per element) are compiled twice, for the AVX2+FMA baseline
 * and for AVX-512 (x86-64-v4), and the loader picks the one the CPU runs (an ifunc, resolved once).
 * Put on the functions that hold the loops, never on the OpenMP-parallel ones: the parallel region's
 * outlined body would not inherit the attribute. Elementwise results are bit-identical either way
 * (same operations, same FMA contraction; only the vector width differs); a row sum (softmax)
 * associates over 16 lanes instead of 8, so it may differ in the last bit between the two. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define MT_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define MT_CPU_CLONES
#endif

/* Outputs of at least this many bytes are written with non-temporal (streaming) stores: they do not
 * fit the cache anyway, and a normal store first reads every output line from memory (read for
 * ownership), a third more traffic for a = b + c. Smaller outputs keep normal stores, so the next op
 * finds them in cache. Kernels compute MT_CPU_CHUNK floats into a buffer in L1, then stream it out;
 * the values are the same either way. */
extern int64_t mt_cpu_stream_min; /* bytes; 16 MB (tests lower it to reach the streaming paths) */
#define MT_CPU_STREAM_MIN mt_cpu_stream_min
#define MT_CPU_CHUNK 2048

/* dst[0..n) = src[0..n) * a + b with streaming stores where the CPU has them (x86 AVX). The caller
 * ends its parallel region with mt_stream_fence() so the data is visible to other threads. */
static inline void mt_stream_axpb(float *dst, const float *src, float a, float b, int64_t n) {
    int64_t j = 0;
#if defined(__AVX__)
    for (; j < n && ((uintptr_t)(dst + j) & 31u); j++) dst[j] = src[j] * a + b;
    __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    for (; j + 8 <= n; j += 8)
        _mm256_stream_ps(dst + j, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(src + j), va), vb));
#endif
    for (; j < n; j++) dst[j] = src[j] * a + b;
}

static inline void mt_stream_copy(float *dst, const float *src, int64_t n) {
    int64_t j = 0;
#if defined(__AVX__)
    for (; j < n && ((uintptr_t)(dst + j) & 31u); j++) dst[j] = src[j];
    for (; j + 8 <= n; j += 8) _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
#endif
    for (; j < n; j++) dst[j] = src[j];
}

static inline void mt_stream_fence(void) {
#if defined(__AVX__)
    _mm_sfence();
#endif
}

static inline int mt_cpu_threads(const mt_exec *ex) {
    return ex->n_threads > 0 ? ex->n_threads : omp_get_max_threads();
}

/* exp(x) for x in float range: Cody-Waite reduction + degree-6 polynomial (Cephes expf), about 1 ulp.
 * Exactly 0 below -87.3 (so masked scores give exact zeros); +inf from about 88.4 (the true value is
 * within 40% of FLT_MAX there); NaN stays NaN. Written for the vectoriser: clamps shaped like
 * maxps/minps (which map NaN to the bound, so the polynomial only ever sees finite values and the
 * float-to-int conversion is defined), NaN restored by one select at the end, rounding by the
 * 1.5 * 2^23 trick instead of floorf (exact for |t| < 2^22; here |t| <= 128), the exponent built in
 * an integer lane. */
static inline float mt_expf(float x) {
    float xc = x > -87.3f ? x : -87.3f;
    xc = xc < 88.7f ? xc : 88.7f;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } s;
    s.i = ((int32_t)n + 127) << 23;
    float y = p * s.f;
    y = x < -87.3f ? 0.0f : y;
    return x == x ? y : x;
}

/* erf(x), Abramowitz & Stegun 7.1.26 refined (max abs error 1.5e-7). */
static inline float mt_erff(float x) {
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t +
                      0.254829592f) * t * mt_expf(-ax * ax);
    return x < 0 ? -y : y;
}

/* The standard normal CDF Phi(x) = (1 + erf(x/sqrt 2)) / 2 (GELU is x Phi(x)) and, through *pdf, its
 * density phi(x) = exp(-x^2/2) / sqrt(2 pi), from the one exponential erf needs anyway: GELU's
 * backward x phi(x) + Phi(x) costs one exp instead of two. */
static inline float mt_normal_cdf_pdf(float x, float *pdf) {
    float az = fabsf(x * 0.70710678118654752f);
    float t = 1.0f / (1.0f + 0.3275911f * az);
    float e = mt_expf(-az * az);
    float y = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t +
                      0.254829592f) * t * e;
    *pdf = 0.39894228040143268f * e;
    return 0.5f * (1.0f + (x < 0 ? -y : y));
}

/* The max over a row. A max reduction vectorises in neither gcc (plain loop) nor clang (omp simd), so
 * AVX's maxps does it: maxps(x, m) = x > m ? x : m, the same NaN-skipping select as the scalar tail. */
static inline float mt_cpu_row_max(const float *x, int64_t n) {
    float m = -INFINITY;
    int64_t j = 0;
#if defined(__AVX__)
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= n; j += 8) vm = _mm256_max_ps(_mm256_loadu_ps(x + j), vm);
    float lanes[8];
    _mm256_storeu_ps(lanes, vm);
    for (int k = 0; k < 8; k++) m = lanes[k] > m ? lanes[k] : m;
#endif
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* The index of a row's first maximum, as the scalar walk `if (x[r] > x[best]) best = r` finds it
 * (NaNs never win; a NaN at 0 stays; -0 and +0 tie), in two vector passes: the maximum of the values
 * after x[0] that are not NaN, then the first position holding it. */
static inline int64_t mt_cpu_row_argmax(const float *x, int64_t n) {
    if (n <= 1 || x[0] != x[0]) return 0;
    float m = mt_cpu_row_max(x, n);
    int64_t j = 0;
#if defined(__AVX__)
    __m256 mv = _mm256_set1_ps(m);
    for (; j + 8 <= n; j += 8) {
        int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), mv, _CMP_EQ_OQ));
        if (hit) return j + __builtin_ctz((unsigned)hit);
    }
#endif
    for (; j < n; j++)
        if (x[j] == m) return j;
    return 0;
}

/* The sum of x[i]^2 over [i0, i1) in double: an `omp simd` reduction (lanes of partial sums, a fixed
 * order for a build), the one loop of sumsq and sumsq_multi so the two give the same sums. */
static inline double mt_sumsq_range(const float *x, int64_t i0, int64_t i1) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = i0; k < i1; k++) acc += (double)x[k] * (double)x[k];
    return acc;
}

/* Kernels, grouped by file. */
/* elementwise.c */
mt_status mt_cpu_unary_fwd(mt_exec *ex, mt_unary_op op, float *out, const float *x, int64_t n);
mt_status mt_cpu_unary_bwd(mt_exec *ex, mt_unary_op op, float *dx, const float *dy, const float *x, const float *y,
                           int64_t n);
mt_status mt_cpu_scalar_fwd(mt_exec *ex, mt_scalar_op op, float *out, const float *x, float s, int64_t n);
mt_status mt_cpu_scalar_bwd(mt_exec *ex, mt_scalar_op op, float *dx, const float *dy, const float *x, float s,
                            int64_t n);
mt_status mt_cpu_binary_fwd(mt_exec *ex, mt_binary_op op, float *out, const float *a, const float *b,
                            const mt_bcast *bc);
mt_status mt_cpu_binary_bwd(mt_exec *ex, mt_binary_op op, float *da, float *db, const float *dy, const float *a,
                            const float *b, const mt_bcast *bc);
mt_status mt_cpu_masked_fill_fwd(mt_exec *ex, float *out, const float *x, const float *mask, float value,
                                 const mt_bcast *bc);
mt_status mt_cpu_masked_fill_bwd(mt_exec *ex, float *dx, const float *dy, const float *mask, const mt_bcast *bc);
mt_status mt_cpu_dropout_fwd(mt_exec *ex, float *out, const float *x, int64_t n, float p, uint64_t seed,
                             uint64_t offset, const float *residual);
mt_status mt_cpu_dropout_bwd(mt_exec *ex, float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                             uint64_t offset);
/* reduce.c */
mt_status mt_cpu_reduce_fwd(mt_exec *ex, mt_reduce_op op, float *out, int32_t *argidx, const float *x,
                            const mt_reduce_desc *rd, int accumulate);
mt_status mt_cpu_reduce_bwd(mt_exec *ex, mt_reduce_op op, float *dx, const float *dy, const int32_t *argidx,
                            const mt_reduce_desc *rd, float scale);
mt_status mt_cpu_argmax(mt_exec *ex, int32_t *out, const float *x, int64_t outer, int64_t n, int64_t inner);
mt_status mt_cpu_sumsq(mt_exec *ex, float *out, const float *x, int64_t n, int accumulate);
/* gemm.c */
mt_status mt_cpu_gemm(mt_exec *ex, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b, float beta,
                      float *C, int64_t ldc, int64_t stride_c, int64_t batch);
/* gemv.c: C (M x N) = alpha A B^T + beta C for M <= MT_GEMM_SMALL_M, B stored (N, K); mt_cpu_gemm
 * sends such products here. */
mt_status mt_cpu_gemv(mt_exec *ex, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* 1 (default): AVX-512 where the CPU has it, else AVX2; tests set 0 to run the AVX2 kernels. */
extern int mt_cpu_gemv_avx512;
extern int mt_cpu_philox_avx512; /* elementwise.c: 0 runs dropout's random words on AVX2 (tests) */
/* qgemm.c */
mt_status mt_cpu_qlinear(mt_exec *ex, int64_t R, const float *x, const struct mt_qweight *w, const float *bias,
                         float *y, void *work);
/* The activations' qmax on this CPU (127 with VNNI, else 63; see qgemm.c). */
int mt_cpu_qlinear_act_qmax(void);
/* Nonzero: qlinear takes the portable path (scalar row quantization, dnnl_gemm_u8s8s32) even on an
 * AVX-512 VNNI CPU; tests set it to compare the two, which give the same bits. */
/* 0: products qlinear would give the AMX tile unit run on the VNNI kernel (tests compare the two). */
extern int mt_cpu_qlinear_amx;
extern int mt_cpu_qlinear_portable;
/* nn.c */
mt_status mt_cpu_softmax_fwd(mt_exec *ex, float *out, const float *x, int64_t N, int64_t C, int log);
mt_status mt_cpu_softmax_bwd(mt_exec *ex, float *dx, const float *dy, const float *y, int64_t N, int64_t C, int log);
mt_status mt_cpu_layernorm_fwd(mt_exec *ex, float *out, float *mean, float *rstd, const float *x, const float *w,
                               const float *b, int64_t N, int64_t C, float eps,
    uint16_t *out_bf16);
mt_status mt_cpu_layernorm_bwd(mt_exec *ex, float *dx, float *dw, float *db, const float *dout, const float *x,
                               const float *w, const float *mean, const float *rstd, int64_t N, int64_t C);
mt_status mt_cpu_rmsnorm_fwd(mt_exec *ex, float *out, float *rstd, const float *x, const float *w, int64_t N,
                             int64_t C, float eps,
    uint16_t *out_bf16);
mt_status mt_cpu_rmsnorm_bwd(mt_exec *ex, float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, int64_t N, int64_t C);
mt_status mt_cpu_embedding_fwd(mt_exec *ex, float *out, const float *table, const int32_t *ids, int64_t N, int64_t C,
                               float scale);
mt_status mt_cpu_embedding_bwd(mt_exec *ex, float *dtable, const float *dout, const int32_t *ids, int64_t N,
                               int64_t C, float scale);
mt_status mt_cpu_cross_entropy_fwd(mt_exec *ex, float *loss, float *count, float *lse, const float *logits,
                                   const int32_t *targets, int64_t N, int64_t V, float eps, int ignore_index);
mt_status mt_cpu_cross_entropy_bwd(mt_exec *ex, float *dlogits, const float *dloss, const float *count,
                                   const float *lse, const float *logits, const int32_t *targets, int64_t N,
                                   int64_t V, float eps, int ignore_index);
mt_status mt_cpu_cross_entropy_fused(mt_exec *ex, float *loss, float *count, float *logits, const int32_t *targets,
                                     const float *dloss, int64_t N, int64_t V, float eps, int ignore_index);
mt_status mt_cpu_rope(mt_exec *ex, float *out, const float *x, int64_t R, int64_t T, int64_t D, int64_t pos0,
                      float base, float sign, int accumulate);
mt_status mt_cpu_adamw(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                       float b2, float eps, float wd, float bc1, float bc2, float grad_scale);
mt_status mt_cpu_adamw_clip(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                            float b2, float eps, float wd, float bc1, float bc2, const float *ss, double clip_norm);
mt_status mt_cpu_sumsq_multi(mt_exec *ex, float *out, const mt_adamw_slot *slots, int n_slots, int accumulate);
mt_status mt_cpu_adamw_multi(mt_exec *ex, const mt_adamw_slot *slots, int n_slots, float lr, float b1, float b2,
                             float eps, float bc1, float bc2, const float *ss, double clip_norm, int zero_grad);
/* attention.c */
mt_status mt_cpu_attention_fwd(mt_exec *ex, float *out, float *lse, const float *q, const float *k, const float *v,
                               const mt_attn_desc *ad);
mt_status mt_cpu_attention_bwd(mt_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                               const float *lse, const float *q, const float *k, const float *v,
                               const mt_attn_desc *ad);

#endif
