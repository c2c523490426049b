/*
 * ops_internal.h — helpers shared by the op layer's files: operand checks, broadcasting, strides,
 * and running a kernel with its failure recorded on the context.
 */
#ifndef MT_OPS_INTERNAL_H
#define MT_OPS_INTERNAL_H

#include <string.h>

#include "ops/ops.h"

#define MT_BE(ctx) ((ctx)->ex.backend)

/* Runs a kernel call; on failure records it and makes the enclosing op return NULL. */
#define MT_KERNEL(ctx, call)                                       \
    do {                                                           \
        mt_status mt_k_s_ = (call);                                \
        if (mt_k_s_ != MT_OK) return mt_fail_status((ctx), mt_k_s_); \
    } while (0)

/* Inputs: not NULL, on the context's device, current, and F32. */
int mt_check_f32(mt_context *ctx, const char *op, const mt_tensor *t);
/* Row-major strides of a contiguous shape. */
void mt_contig_strides(const int64_t *shape, int ndim, int64_t *strides);
/* NumPy broadcasting of a and b: the output shape (out_ndim, out_shape) and the collapsed mt_bcast.
 * 0 + failure recorded when the shapes do not broadcast. */
int mt_make_bcast(mt_context *ctx, const char *op, const mt_tensor *a, const mt_tensor *b, mt_bcast *bc,
                  int *out_ndim, int64_t *out_shape);
/* A copy of a descriptor into the host arena, for a tape node to keep. */
void *mt_ctx_keep(mt_context *ctx, const void *desc, size_t bytes);
/* The backward of a unary op's node (in[0] = x, i[0] = the op): x's gradient += dy * f'(x). */
struct mt_node;
mt_status mt_unary_backward(mt_context *ctx, struct mt_node *n);
/* dst += src over n floats (both on ctx's device). */
mt_status mt_accumulate(mt_context *ctx, float *dst, const float *src, int64_t n);

/* ---- GEMM precision (precision.c) ---- */
/* A matmul/linear operand: f32, or bf16/f16 when the backend has gemm_lowp. 0 + failure recorded. */
int mt_check_gemm_operand(mt_context *ctx, const char *op, const mt_tensor *t);
/* The dtype a product of a and b is computed in: F32, or BF16/F16 (f32 accumulation) from a
 * low-precision operand or the context's mixed precision. 0 + failure recorded on mixed lowp dtypes. */
int mt_gemm_dtype(mt_context *ctx, const char *op, const mt_tensor *a, const mt_tensor *b, mt_dtype *dt);
/* The dtype a product's backward runs its two GEMMs in, given the forward's dtype dt: F32 when both
 * operands are f32 tensors (the backend's f32 GEMM rounds them itself in a bf16/f16 context, see
 * backend.h, so neither the output gradient nor the operands need a cast launch); else dt. */
mt_dtype mt_backward_dtype(const mt_context *ctx, mt_dtype dt, const mt_tensor *a, const mt_tensor *b);
/* t itself when it has dtype dt, else its cast into the step arena. NULL + failure recorded. */
mt_tensor *mt_gemm_operand(mt_context *ctx, mt_tensor *t, mt_dtype dt);
/* As mt_gemm_operand for a forward's input: an op result's cast is kept on it for this step, so
 * another product reading the same tensor reuses it. */
mt_tensor *mt_gemm_input(mt_context *ctx, mt_tensor *t, mt_dtype dt);
/* In bf16 mixed precision, the memory for y's bf16 copy, attached to y as its GEMM operand (y->lowp) for
 * the kernel that makes y to fill in the same pass (the norms: their outputs feed GEMMs); NULL in
 * any other precision (nothing attached) or when out of memory (y is cast at its use instead). */
uint16_t *mt_lowp_side_output(mt_context *ctx, mt_tensor *y);
/* be->gemm (dt F32) or be->gemm_lowp (dt BF16/F16) on A and B of dtype dt; C is f32. */
mt_status mt_gemm_run(mt_context *ctx, mt_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const void *A, int64_t lda, int64_t stride_a, const void *B, int64_t ldb, int64_t stride_b,
                      float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);
/* Element off of data of dtype dt. */
static inline const void *mt_elem(const void *data, mt_dtype dt, int64_t off) {
    return (const char *)data + (size_t)off * mt_dtype_size(dt);
}

#endif
