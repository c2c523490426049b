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
 * large enough (GEMV_PAR_MIN) that a second core's share of the cache bandwidth pays for waking it.
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

/* The accumulators are named variables, one per (row, column) pair, not an array: gcc keeps an array
 * that the epilogue reads in memory and stores every accumulator after each multiply-add. MR (the
 * rows, 1 to 4) is a constant where these are inlined, so the rows beyond it compile to nothing. */
#define GEMV_ROWS(X) X(0) X(1) X(2) X(3)

/* ---- AVX-512: MR rows x 4 columns, or x 1 column, of C; K in 16-lane steps with a masked tail ---- */

__attribute__((target("avx512f"), always_inline)) static inline __mmask16 tail16(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* The sums of a, b, c, d in one pass of shuffles (not four reductions: at four rows those cost as much as
 * the multiply-adds). The same tree for every output, whichever block computes it. */
__attribute__((target("avx512f"), always_inline)) static inline __m128 hsum4_avx512(__m512 a, __m512 b, __m512 c,
                                                                                    __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 s = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

__attribute__((target("avx512f"), always_inline)) static inline void
block4_avx512(const int MR, int64_t n, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
              int64_t ldb, float beta, float *C, int64_t ldc) {
#define DECL(m) __m512 a##m##0 = _mm512_setzero_ps(), a##m##1 = a##m##0, a##m##2 = a##m##0, a##m##3 = a##m##0;
    GEMV_ROWS(DECL)
#undef DECL
    const float *b = B + n * ldb;
    /* One step of 16 k: LOAD(p) reads 16 floats at p (all of them, or the tail's under the mask). */
#define FMA(m)                                                                                                   \
    if (m < MR) {                                                                                                \
        __m512 x = LOAD(A + m * lda + k);                                                                        \
        a##m##0 = _mm512_fmadd_ps(x, w0, a##m##0);                                                               \
        a##m##1 = _mm512_fmadd_ps(x, w1, a##m##1);                                                               \
        a##m##2 = _mm512_fmadd_ps(x, w2, a##m##2);                                                               \
        a##m##3 = _mm512_fmadd_ps(x, w3, a##m##3);                                                               \
    }
#define STEP                                                                                                     \
    {                                                                                                            \
        __m512 w0 = LOAD(b + k), w1 = LOAD(b + ldb + k), w2 = LOAD(b + 2 * ldb + k), w3 = LOAD(b + 3 * ldb + k); \
        GEMV_ROWS(FMA)                                                                                           \
    }
    int64_t k = 0;
#define LOAD(p) _mm512_loadu_ps(p)
    for (; k + 16 <= K; k += 16) STEP
#undef LOAD
    if (k < K) {
        __mmask16 mask = tail16(K - k);
#define LOAD(p) _mm512_maskz_loadu_ps(mask, p)
        STEP
#undef LOAD
    }
#undef STEP
#undef FMA
#define OUT(m)                                                                                                   \
    if (m < MR) {                                                                                                \
        float *c = C + m * ldc + n, sum[4];                                                                      \
        _mm_storeu_ps(sum, hsum4_avx512(a##m##0, a##m##1, a##m##2, a##m##3));                                    \
        for (int j = 0; j < 4; j++) c[j] = gemv_out(sum[j], alpha, beta, c + j);                                 \
    }
    GEMV_ROWS(OUT)
#undef OUT
}

__attribute__((target("avx512f"), always_inline)) static inline void
block1_avx512(const int MR, int64_t n, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
              int64_t ldb, float beta, float *C, int64_t ldc) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *b = B + n * ldb;
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 mask = tail16(K - k);
        __m512 w = _mm512_maskz_loadu_ps(mask, b + k);
#define FMA(m) \
    if (m < MR) a##m = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, A + m * lda + k), w, a##m);
        GEMV_ROWS(FMA)
#undef FMA
    }
    const __m512 z = _mm512_setzero_ps();
#define OUT(m) \
    if (m < MR) C[m * ldc + n] = gemv_out(_mm_cvtss_f32(hsum4_avx512(a##m, z, z, z)), alpha, beta, C + m * ldc + n);
    GEMV_ROWS(OUT)
#undef OUT
}

__attribute__((target("avx512f"), always_inline)) static inline void
rows_avx512(const int MR, int64_t n0, int64_t n1, int64_t K, float alpha, const float *A, int64_t lda,
            const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) block4_avx512(MR, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (; n < n1; n++) block1_avx512(MR, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
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

/* ---- AVX2 + FMA: MR rows x 2 columns, or x 1 column (16 registers hold at most 8 accumulators and
 * the operands); K in 8-lane steps with a masked tail ---- */

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Lanes [0, left) of 8 (left in 1..8). */
static inline __m256i tail8(int64_t left) {
    static const int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(lanes + 8 - (left < 8 ? left : 8)));
}

__attribute__((always_inline)) static inline void block2_avx2(const int MR, int64_t n, int64_t K, float alpha,
                                                               const float *A, int64_t lda, const float *B,
                                                               int64_t ldb, float beta, float *C, int64_t ldc) {
#define DECL(m) __m256 a##m##0 = _mm256_setzero_ps(), a##m##1 = a##m##0;
    GEMV_ROWS(DECL)
#undef DECL
    const float *b = B + n * ldb;
#define FMA(m, LOAD)                                                                                             \
    if (m < MR) {                                                                                                \
        __m256 x = LOAD(A + m * lda + k);                                                                        \
        a##m##0 = _mm256_fmadd_ps(x, w0, a##m##0);                                                               \
        a##m##1 = _mm256_fmadd_ps(x, w1, a##m##1);                                                               \
    }
#define FULL(p) _mm256_loadu_ps(p)
#define MASKED(p) _mm256_maskload_ps(p, mask)
#define FMA_FULL(m) FMA(m, FULL)
#define FMA_MASKED(m) FMA(m, MASKED)
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 w0 = _mm256_loadu_ps(b + k), w1 = _mm256_loadu_ps(b + ldb + k);
        GEMV_ROWS(FMA_FULL)
    }
    if (k < K) {
        __m256i mask = tail8(K - k);
        __m256 w0 = _mm256_maskload_ps(b + k, mask), w1 = _mm256_maskload_ps(b + ldb + k, mask);
        GEMV_ROWS(FMA_MASKED)
    }
#undef FMA_MASKED
#undef FMA_FULL
#undef MASKED
#undef FULL
#undef FMA
#define OUT(m)                                                                                                   \
    if (m < MR) {                                                                                                \
        float *c = C + m * ldc + n;                                                                              \
        c[0] = gemv_out(hsum256(a##m##0), alpha, beta, c);                                                       \
        c[1] = gemv_out(hsum256(a##m##1), alpha, beta, c + 1);                                                   \
    }
    GEMV_ROWS(OUT)
#undef OUT
}

__attribute__((always_inline)) static inline void block1_avx2(const int MR, int64_t n, int64_t K, float alpha,
                                                               const float *A, int64_t lda, const float *B,
                                                               int64_t ldb, float beta, float *C, int64_t ldc) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *b = B + n * ldb;
    for (int64_t k = 0; k < K; k += 8) {
        __m256i mask = tail8(K - k);
        __m256 w = _mm256_maskload_ps(b + k, mask);
#define FMA(m) \
    if (m < MR) a##m = _mm256_fmadd_ps(_mm256_maskload_ps(A + m * lda + k, mask), w, a##m);
        GEMV_ROWS(FMA)
#undef FMA
    }
#define OUT(m) \
    if (m < MR) C[m * ldc + n] = gemv_out(hsum256(a##m), alpha, beta, C + m * ldc + n);
    GEMV_ROWS(OUT)
#undef OUT
}

__attribute__((always_inline)) static inline void rows_avx2(const int MR, int64_t n0, int64_t n1, int64_t K,
                                                             float alpha, const float *A, int64_t lda, const float *B,
                                                             int64_t ldb, float beta, float *C, int64_t ldc) {
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) block2_avx2(MR, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (; n < n1; n++) block1_avx2(MR, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
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

int mt_cpu_gemv_avx512 = 1; /* where the CPU has AVX-512; tests set 0 to run the AVX2 path */

mt_status mt_cpu_gemv(mt_exec *ex, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M < 1 || M > MT_GEMM_SMALL_M)
        return mt_error(MT_ERR_INTERNAL, "gemv: %lld rows (1 to %d)", (long long)M, MT_GEMM_SMALL_M);
    void (*rows)(int64_t, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t, float,
                 float *, int64_t) = mt_cpu_gemv_avx512 && __builtin_cpu_supports("avx512f") ? gemv_avx512 : gemv_avx2;
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
