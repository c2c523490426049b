/*
 * gemm.c — CPU matrix products through OpenBLAS cblas_sgemm (row-major), one call per batch item.
 * OpenBLAS threads each call itself; its thread count follows mt_set_num_threads.
 */
#include <cblas.h>

#include "cpu/cpu.h"

mt_status mt_cpu_gemm(mt_exec *ex, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b, float beta,
                      float *C, int64_t ldc, int64_t stride_c, int64_t batch) {
    (void)ex;
    for (int64_t i = 0; i < batch; i++) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                    (blasint)N, (blasint)K, alpha, A + i * stride_a, (blasint)lda, B + i * stride_b, (blasint)ldb, beta,
                    C + i * stride_c, (blasint)ldc);
    }
    return MT_OK;
}
