/*
 * gemv.c — products of at most MT_GEMM_SMALL_M rows against a weight stored (N, K): C = alpha A B^T +
 * beta C, the step of greedy decoding at batch 1 (one row) and of a beam of 4 (four rows).
 *
 * Such a product reads the whole weight (the output projection: 8 MB) for a few multiply-adds per
 * element, so its speed is the speed the weight streams in from the cache. dnnl_sgemm is slow at it:
 * it packs a weight stored (N, K) on every call, and reads a (K, N) copy once per row (4 rows took
 * 1.9x one row at 4 x 8000 x 256). Here every output is the dot product of a row of A with a row of
 * B, both contiguous: four rows of B stream through at once, each read once for all rows of A, into
 * rows x 4 vector accumulators. The columns are split over the context's team when the weight is
 * large enough (MT_GEMV_PAR_MIN) that a second core's share of the cache bandwidth pays for waking it.
 * The split never cuts K, and each output's sum has the same order whatever the rows, columns or
 * threads, so results depend only on the instruction set: AVX-512 where the CPU has it (16 lanes),
 * else AVX2 with FMA (8 lanes, the baseline the engine is built for).
 */
#include <immintrin.h>
#include <omp.h>

#include "core/error.h"
#include "cpu/cpu.h"

/* A weight of at least this many floats (512 KB) is split over the team's threads. */
#define GEMV_PAR_MIN (128 * 1024)

static inline float gemv_out(float acc, float alpha, float beta, const float *c) {
    return beta != 0.0f ? alpha * acc + beta * *c : alpha * acc;
}

/* ---- AVX-512: MR rows x NC columns (NC 4 or 1) of C, K in 16-lane steps with a masked tail ---- */

__attribute__((target("avx512f"), always_inline)) static inline void
block_avx512(const int MR, const int NC, int64_t n, int64_t K, float alpha, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    __m512 acc[4][4];
    for (int m = 0; m < MR; m++)
        for (int j = 0; j < NC; j++) acc[m][j] = _mm512_setzero_ps();
    const float *b = B + n * ldb;
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 mask = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
        __m512 w[4];
        for (int j = 0; j < NC; j++) w[j] = _mm512_maskz_loadu_ps(mask, b + j * ldb + k);
        for (int m = 0; m < MR; m++) {
            __m512 x = _mm512_maskz_loadu_ps(mask, A + m * lda + k);
            for (int j = 0; j < NC; j++) acc[m][j] = _mm512_fmadd_ps(x, w[j], acc[m][j]);
        }
    }
    for (int m = 0; m < MR; m++)
        for (int j = 0; j < NC; j++) {
            float *c = C + m * ldc + n + j;
            *c = gemv_out(_mm512_reduce_add_ps(acc[m][j]), alpha, beta, c);
        }
}

__attribute__((target("avx512f"), always_inline)) static inline void
rows_avx512(const int MR, int64_t n0, int64_t n1, int64_t K, float alpha, const float *A, int64_t lda,
            const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) block_avx512(MR, 4, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (; n < n1; n++) block_avx512(MR, 1, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

__attribute__((target("avx512f"))) static void gemv_avx512(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha,
                                                           const float *A, int64_t lda, const float *B, int64_t ldb,
                                                           float beta, float *C, int64_t ldc) {
    switch (M) {
    case 1: rows_avx512(1, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    case 2: rows_avx512(2, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    case 3: rows_avx512(3, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    default: rows_avx512(4, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    }
}

/* ---- AVX2 + FMA: MR rows x NC columns (NC 2 or 1: 16 registers hold at most 8 accumulators and
 * the operands), K in 8-lane steps with a masked tail ---- */

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((always_inline)) static inline void block_avx2(const int MR, const int NC, int64_t n, int64_t K,
                                                              float alpha, const float *A, int64_t lda, const float *B,
                                                              int64_t ldb, float beta, float *C, int64_t ldc) {
    __m256 acc[4][2];
    for (int m = 0; m < MR; m++)
        for (int j = 0; j < NC; j++) acc[m][j] = _mm256_setzero_ps();
    const float *b = B + n * ldb;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 w[2];
        for (int j = 0; j < NC; j++) w[j] = _mm256_loadu_ps(b + j * ldb + k);
        for (int m = 0; m < MR; m++) {
            __m256 x = _mm256_loadu_ps(A + m * lda + k);
            for (int j = 0; j < NC; j++) acc[m][j] = _mm256_fmadd_ps(x, w[j], acc[m][j]);
        }
    }
    if (k < K) {
        static const int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
        __m256i mask = _mm256_loadu_si256((const __m256i *)(lanes + 8 - (K - k)));
        __m256 w[2];
        for (int j = 0; j < NC; j++) w[j] = _mm256_maskload_ps(b + j * ldb + k, mask);
        for (int m = 0; m < MR; m++) {
            __m256 x = _mm256_maskload_ps(A + m * lda + k, mask);
            for (int j = 0; j < NC; j++) acc[m][j] = _mm256_fmadd_ps(x, w[j], acc[m][j]);
        }
    }
    for (int m = 0; m < MR; m++)
        for (int j = 0; j < NC; j++) {
            float *c = C + m * ldc + n + j;
            *c = gemv_out(hsum256(acc[m][j]), alpha, beta, c);
        }
}

__attribute__((always_inline)) static inline void rows_avx2(const int MR, int64_t n0, int64_t n1, int64_t K,
                                                             float alpha, const float *A, int64_t lda, const float *B,
                                                             int64_t ldb, float beta, float *C, int64_t ldc) {
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) block_avx2(MR, 2, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (; n < n1; n++) block_avx2(MR, 1, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void gemv_avx2(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    switch (M) {
    case 1: rows_avx2(1, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    case 2: rows_avx2(2, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    case 3: rows_avx2(3, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    default: rows_avx2(4, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    }
}

int mt_cpu_gemv_avx512 = -1; /* -1: ask the CPU (once); tests set 0 to run the AVX2 path */

mt_status mt_cpu_gemv(mt_exec *ex, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M < 1 || M > MT_GEMM_SMALL_M)
        return mt_error(MT_ERR_INTERNAL, "gemv: %lld rows (1 to %d)", (long long)M, MT_GEMM_SMALL_M);
    if (mt_cpu_gemv_avx512 < 0) mt_cpu_gemv_avx512 = __builtin_cpu_supports("avx512f") ? 1 : 0;
    void (*rows)(int64_t, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t, float,
                 float *, int64_t) = mt_cpu_gemv_avx512 ? gemv_avx512 : gemv_avx2;
    int nt = mt_cpu_threads(ex);
    if (N * K < GEMV_PAR_MIN || N < 64) nt = 1;
    if (nt == 1) {
        rows(M, 0, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return MT_OK;
    }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t n0 = (N * t / T) & ~(int64_t)15, n1 = t == T - 1 ? N : (N * (t + 1) / T) & ~(int64_t)15;
        if (n1 > n0) rows(M, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
    return MT_OK;
}
