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
 * With a bias (gemm_lowp_bias): the same product through cuBLASLt with CUBLASLT_EPILOGUE_BIAS, the
 * bias added to every row of C (a column of the column-major C^T, whose m is the engine's N) in the
 * epilogue: a linear layer's bias costs no launch of its own; with relu, CUBLASLT_EPILOGUE_RELU_BIAS
 * applies the ReLU there too (a feed-forward layer's activation). No algorithm is picked (NULL:
 * cuBLASLt's own heuristic); the workspace is the cuBLAS handle's (both run in stream order).
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

extern "C" mt_status mt_cuda_gemm_lowp_bias(mt_exec *ex, mt_dtype ab, int ta, int tb, int64_t M, int64_t N, int64_t K,
                                            const void *A, int64_t lda, const void *B, int64_t ldb, const float *bias,
                                            float *C, int64_t ldc, int relu) {
    MT_CUDA_ENTER(ex, cx);
    cudaDataType_t t;
    if (ab == MT_DTYPE_BF16) t = CUDA_R_16BF;
    else if (ab == MT_DTYPE_F16) t = CUDA_R_16F;
    else return mt_error(MT_ERR_DTYPE, "cuda gemm_lowp_bias: operands must be bf16 or f16 (got dtype %d)", (int)ab);
    if (M <= 0 || N <= 0) return MT_OK;
    if (!fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) || !fits_int(ldb) || !fits_int(ldc) || K <= 0)
        return mt_error(MT_ERR_UNSUPPORTED, "cuda gemm_lowp_bias: M=%lld N=%lld K=%lld: sizes beyond 2^31 or K <= 0",
                        (long long)M, (long long)N, (long long)K);
    /* Column-major C^T (N x M) = op(B)^T (N x K) op(A)^T (K x M), as gemm_any. */
    cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bias_type = CUDA_R_32F;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    float alpha = 1.0f, beta = 0.0f;
    mt_status st = MT_OK;
    /* Each call after a failure is skipped; the descriptors made so far are destroyed below. */
#define LT(call)                                                                                           \
    do {                                                                                                   \
        if (st == MT_OK) {                                                                                 \
            cublasStatus_t lt_s_ = (call);                                                                 \
            if (!mt_cuda_ok(lt_s_)) st = mt_cuda_fail(lt_s_, #call, __FILE__, __LINE__);                  \
        }                                                                                                  \
    } while (0)
    LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opb, sizeof opb));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opa, sizeof opa));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
    /* Stored shapes (before the op): B is (K x N) or, transposed, (N x K) column-major; A likewise. */
    LT(cublasLtMatrixLayoutCreate(&la, t, tb ? (uint64_t)K : (uint64_t)N, tb ? (uint64_t)N : (uint64_t)K, ldb));
    LT(cublasLtMatrixLayoutCreate(&lb, t, ta ? (uint64_t)M : (uint64_t)K, ta ? (uint64_t)K : (uint64_t)M, lda));
    LT(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, (uint64_t)N, (uint64_t)M, ldc));
    if (st == MT_OK) mt_cuda_count_launches(1);
    LT(cublasLtMatmul(cx->blaslt, desc, &alpha, B, la, A, lb, &beta, C, lc, C, lc, NULL, cx->blas_ws,
                      cx->blas_ws_bytes, cx->stream));
#undef LT
    if (lc) (void)cublasLtMatrixLayoutDestroy(lc);
    if (lb) (void)cublasLtMatrixLayoutDestroy(lb);
    if (la) (void)cublasLtMatrixLayoutDestroy(la);
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
    return st;
}
