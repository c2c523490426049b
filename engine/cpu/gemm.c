/*
 * gemm.c — CPU matrix products through oneDNN's dnnl_sgemm (row-major).
 *
 * Why oneDNN: its GEMM is JIT-compiled for the instruction set the CPU reports (SSE4.1, AVX2,
 * AVX-512, AMX), so it is fast on any x86-64 processor without being told the model. OpenBLAS picks
 * its kernels from a table of known CPU models: Debian's 0.3.21 falls back to SSE3 on an Intel Xeon
 * it does not know (family 6, model 207), at a fifth of the speed. The figures that decided it, per
 * shape against OpenBLAS and BLIS, are in engine/cpu/README.md (`mt-bench ops` prints them).
 *
 * Threads: one pool only, the context's OpenMP team. A product is split across the team (over batch
 * items, else over rows or columns of C, in slices of whole kernel tiles), each slice one
 * single-threaded dnnl_sgemm: called inside an active OpenMP region, oneDNN runs on the calling
 * thread. Outside one, it would use omp_get_max_threads() threads, so a one-thread product pins that
 * to one. The split is a function of the shapes and the thread count, and never splits K, so results
 * are deterministic for a thread count.
 */
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "core/error.h"
#include "cpu/cpu.h"

/* Below this many multiply-adds (about 20 us on one core) a product runs on one thread: waking a
 * second OpenMP thread costs 1-2 us while the team's workers still spin (libgomp's default between
 * the regions of a decoding step), which a smaller product does not win back. On a quiet 2-core Zen 4
 * 32 x 256 x 256 took 48 us on one thread and 30 us on two, and at 1M instead of 4M multiply-adds
 * `mt-bench decode --ct2` went from 1.24x to 1.53x CTranslate2 (greedy) and from 1.03x to 1.23x (beam
 * 4) at batch 32 in f32. A loaded machine (load ~12, passive waiting) would rather have 4M: there 32 x
 * 256 x 256 took 38 us on one thread and 46 us on two; the default serves the machine a user
 * benchmarks on. */
#define GEMM_PAR_MIN (1 << 20)
/* Row / column slices are multiples of this (the sgemm kernels' tile sizes divide it). */
#define GEMM_ALIGN 32

static inline dnnl_status_t sgemm1(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    return dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* One product on the calling thread alone. */
static dnnl_status_t sgemm_serial(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (omp_in_parallel()) return sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    dnnl_status_t s = sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    omp_set_num_threads(saved);
    return s;
}

static mt_status gemm_error(dnnl_status_t s, int ta, int tb, int64_t M, int64_t N, int64_t K) {
    return mt_error(s == dnnl_out_of_memory ? MT_ERR_NOMEM : MT_ERR_INTERNAL,
                    "gemm: dnnl_sgemm(%c%c, M=%lld, N=%lld, K=%lld) failed with oneDNN status %d", ta ? 'T' : 'N',
                    tb ? 'T' : 'N', (long long)M, (long long)N, (long long)K, (int)s);
}

mt_status mt_cpu_gemm(mt_exec *ex, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b, float beta,
                      float *C, int64_t ldc, int64_t stride_c, int64_t batch) {
    if (!ta && tb && batch == 1 && M >= 1 && M <= MT_GEMM_SMALL_M) /* decoding's few rows: gemv.c */
        return mt_cpu_gemv(ex, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    int nt = mt_cpu_threads(ex);
    if (nt > 1 && batch * M * N * K < GEMM_PAR_MIN) nt = 1;
    dnnl_status_t err = dnnl_success; /* the last failure of any slice */
    if (nt > 1 && batch >= nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < batch; i++) {
            dnnl_status_t s = sgemm1(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
                                     C + i * stride_c, ldc);
            if (s != dnnl_success) {
#pragma omp atomic write
                err = s;
            }
        }
        return err == dnnl_success ? MT_OK : gemm_error(err, ta, tb, M, N, K);
    }
    /* Split the larger of M and N into nt slices of whole tiles (when there are enough of them). */
    int by_rows = M >= N;
    int64_t dim = by_rows ? M : N;
    int64_t tiles = (dim + GEMM_ALIGN - 1) / GEMM_ALIGN;
    if (tiles < nt) nt = tiles > 1 ? (int)tiles : 1;
    for (int64_t i = 0; i < batch && err == dnnl_success; i++) {
        const float *Ai = A + i * stride_a, *Bi = B + i * stride_b;
        float *Ci = C + i * stride_c;
        if (nt <= 1) {
            err = sgemm_serial(ta, tb, M, N, K, alpha, Ai, lda, Bi, ldb, beta, Ci, ldc);
            continue;
        }
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            int64_t t0 = tiles * t / n, t1 = tiles * (t + 1) / n;
            int64_t s0 = t0 * GEMM_ALIGN, s1 = t1 * GEMM_ALIGN > dim ? dim : t1 * GEMM_ALIGN;
            dnnl_status_t s = dnnl_success;
            if (s1 > s0) {
                if (by_rows) /* rows s0..s1 of op(A) and of C */
                    s = sgemm1(ta, tb, s1 - s0, N, K, alpha, ta ? Ai + s0 : Ai + s0 * lda, lda, Bi, ldb, beta,
                               Ci + s0 * ldc, ldc);
                else         /* columns s0..s1 of op(B) and of C */
                    s = sgemm1(ta, tb, M, s1 - s0, K, alpha, Ai, lda, tb ? Bi + s0 * ldb : Bi + s0, ldb, beta,
                               Ci + s0, ldc);
            }
            if (s != dnnl_success) {
#pragma omp atomic write
                err = s;
            }
        }
    }
    return err == dnnl_success ? MT_OK : gemm_error(err, ta, tb, M, N, K);
}
