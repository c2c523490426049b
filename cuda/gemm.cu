/*
 * gemm.cu — matrix products through cuBLAS (cublasGemmEx / cublasGemmStridedBatchedEx).
 *
 * The engine is row-major, cuBLAS column-major: row-major C = op(A) op(B) is column-major
 * C^T = op(B)^T op(A)^T, so B is passed first and M/N swap; no data moves.
 *
 * f32 entry: the compute type follows the context's precision: exact f32, TF32 tensor cores
 * (MT_PRECISION_TF32), or, when mixed precision is on and a caller still hands f32 operands,
 * CUBLAS_COMPUTE_32F_FAST_16BF / _16F (cuBLAS rounds the operands to bf16/f16 inside its kernels).
 * Low-precision entry (gemm_lowp): A and B already bf16 or f16, C f32, f32 accumulation: the
 * tensor-core path mixed-precision training and bf16/f16 inference take.
 */
#include <limits.h>

#include "common.cuh"

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

static mt_status gemm_any(mt_cuda_exec *cx, cudaDataType_t ab_type, cublasComputeType_t compute, int ta, int tb,
                          int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda, int64_t stride_a,
                          const void *B, int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                          int64_t stride_c, int64_t batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return MT_OK;
    if (!fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) || !fits_int(ldb) || !fits_int(ldc) ||
        !fits_int(batch))
        return mt_error(MT_ERR_UNSUPPORTED, "cuda gemm: M=%lld N=%lld K=%lld batch=%lld: sizes beyond 2^31",
                        (long long)M, (long long)N, (long long)K, (long long)batch);
    if (K <= 0) return mt_error(MT_ERR_INTERNAL, "cuda gemm: K = %lld", (long long)K);
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    mt_cuda_count_launches(1);
    if (batch == 1) {
        MT_CK(cublasGemmEx(cx->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, ab_type, (int)ldb, A, ab_type,
                           (int)lda, &beta, C, CUDA_R_32F, (int)ldc, compute, CUBLAS_GEMM_DEFAULT));
    } else {
        MT_CK(cublasGemmStridedBatchedEx(cx->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, ab_type, (int)ldb,
                                         (long long)stride_b, A, ab_type, (int)lda, (long long)stride_a, &beta, C,
                                         CUDA_R_32F, (int)ldc, (long long)stride_c, (int)batch, compute,
                                         CUBLAS_GEMM_DEFAULT));
    }
    return MT_OK;
}

extern "C" mt_status mt_cuda_gemm(mt_exec *ex, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                                  const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb,
                                  int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c,
                                  int64_t batch) {
    MT_CUDA_ENTER(ex, cx);
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    switch (ex->precision) {
    case MT_PRECISION_TF32: compute = CUBLAS_COMPUTE_32F_FAST_TF32; break;
    case MT_PRECISION_BF16: compute = CUBLAS_COMPUTE_32F_FAST_16BF; break;
    case MT_PRECISION_F16: compute = CUBLAS_COMPUTE_32F_FAST_16F; break;
    default: break;
    }
    return gemm_any(cx, CUDA_R_32F, compute, ta, tb, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc,
                    stride_c, batch);
}

extern "C" mt_status mt_cuda_gemm_lowp(mt_exec *ex, mt_dtype ab, int ta, int tb, int64_t M, int64_t N, int64_t K,
                                       float alpha, const void *A, int64_t lda, int64_t stride_a, const void *B,
                                       int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                                       int64_t stride_c, int64_t batch) {
    MT_CUDA_ENTER(ex, cx);
    cudaDataType_t t;
    if (ab == MT_DTYPE_BF16) t = CUDA_R_16BF;
    else if (ab == MT_DTYPE_F16) t = CUDA_R_16F;
    else return mt_error(MT_ERR_DTYPE, "cuda gemm_lowp: operands must be bf16 or f16 (got dtype %d)", (int)ab);
    return gemm_any(cx, t, CUBLAS_COMPUTE_32F, ta, tb, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C,
                    ldc, stride_c, batch);
}
