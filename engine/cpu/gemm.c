/*
 * gemm.c — CPU matrix products through OpenBLAS cblas_sgemm (row-major).
 *
 * Threads: one pool only. OpenBLAS is set to one thread and a product is split across the context's
 * OpenMP threads (over batch items, else over rows or columns of C, in slices of whole kernel tiles),
 * each slice one single-threaded sgemm. Letting OpenBLAS run its own pthreads beside our OpenMP team
 * oversubscribes the cores: the idle OpenMP worker spin-waits through every GEMM while OpenBLAS's
 * workers want the same cores (on 2 cores a training step ran 4-5x slower that way). The split is a
 * function of the shapes and the thread count, so results are deterministic for a thread count.
 */
#include <cblas.h>
#include <pthread.h>

#include "cpu/cpu.h"

/* Below this many multiply-adds a product runs on one thread. */
#define GEMM_PAR_MIN (1 << 18)
/* Row / column slices are multiples of this (the sgemm kernels' tile sizes divide it). */
#define GEMM_ALIGN 32

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_thread(void) { openblas_set_num_threads(1); }

static inline void sgemm1(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                          const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N,
                (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

mt_status mt_cpu_gemm(mt_exec *ex, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b, float beta,
                      float *C, int64_t ldc, int64_t stride_c, int64_t batch) {
    pthread_once(&blas_once, blas_single_thread);
    int nt = mt_cpu_threads(ex);
    if (nt > 1 && batch * M * N * K < GEMM_PAR_MIN) nt = 1;
    if (nt > 1 && batch >= nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < batch; i++)
            sgemm1(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta, C + i * stride_c, ldc);
        return MT_OK;
    }
    /* Split the larger of M and N into nt slices of whole tiles (when there are enough of them). */
    int by_rows = M >= N;
    int64_t dim = by_rows ? M : N;
    int64_t tiles = (dim + GEMM_ALIGN - 1) / GEMM_ALIGN;
    if (tiles < nt) nt = tiles > 1 ? (int)tiles : 1;
    for (int64_t i = 0; i < batch; i++) {
        const float *Ai = A + i * stride_a, *Bi = B + i * stride_b;
        float *Ci = C + i * stride_c;
        if (nt <= 1) {
            sgemm1(ta, tb, M, N, K, alpha, Ai, lda, Bi, ldb, beta, Ci, ldc);
            continue;
        }
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            int64_t t0 = tiles * t / n, t1 = tiles * (t + 1) / n;
            int64_t s0 = t0 * GEMM_ALIGN, s1 = t1 * GEMM_ALIGN > dim ? dim : t1 * GEMM_ALIGN;
            if (s1 > s0) {
                if (by_rows) /* rows s0..s1 of op(A) and of C */
                    sgemm1(ta, tb, s1 - s0, N, K, alpha, ta ? Ai + s0 : Ai + s0 * lda, lda, Bi, ldb, beta,
                           Ci + s0 * ldc, ldc);
                else         /* columns s0..s1 of op(B) and of C */
                    sgemm1(ta, tb, M, s1 - s0, K, alpha, Ai, lda, tb ? Bi + s0 * ldb : Bi + s0, ldb, beta, Ci + s0,
                           ldc);
            }
        }
    }
    return MT_OK;
}
