/*
 * precision.c — the precision of a context's matrix products, and the GEMM dispatch that applies it.
 *
 * Mixed precision (MT_PRECISION_BF16 / F16) changes only what matmul and linear multiply: their f32
 * operands are rounded to bf16/f16 in the step arena and multiplied by the backend's gemm_lowp with
 * f32 accumulation into an f32 result. Everything else stays f32: master weights, gradients, optimizer
 * state, norms, softmax, attention's tensors, losses (in the bf16 mode the CUDA backend's attention rounds
 * q, k, v and the probabilities to bf16 inside its tensor-core kernels, cuda/flash_attention.cu). As with PyTorch autocast, each operand is cast once per use
 * site and the casts are kept on the tape. The backward of a product of two f32 tensors hands the f32
 * operands and output gradient to the backend's f32 GEMM, which in a bf16/f16 context rounds them
 * itself (cuBLAS's _FAST_16BF / _16F compute types): the same products as casting them first, without
 * the cast launches (mt_backward_dtype).
 *
 * A bf16/f16 tensor (a weight converted for inference) may be an operand in any precision when the
 * backend has gemm_lowp: the other operand is cast to its dtype.
 *
 * The weights can be cast once per step instead of once per use: mt_cast_weights (the training step
 * calls it after each reset) rounds every 2-D weight in one launch (the backend's cast_multi) into
 * the step arena and hangs the copy on the weight (t->lowp, valid for that context's current epoch
 * only: a reset, or any write to the weight through the op layer or the optimizer, drops it). The
 * forward's activations keep their cast the same way (mt_gemm_input): an input read by several
 * products is cast once.
 *
 * Backends without gemm_lowp (the CPU) run every product in f32; asking such a context for BF16/F16
 * is MT_ERR_UNSUPPORTED, and TF32 is accepted (f32 is a valid way to honour it).
 */
#include "ops/ops_internal.h"

mt_status mt_context_set_precision(mt_context *ctx, mt_precision p) {
    if (!ctx) return mt_error(MT_ERR_INVALID_ARG, "set_precision: ctx is NULL");
    switch (p) {
    case MT_PRECISION_F32:
    case MT_PRECISION_TF32: break;
    case MT_PRECISION_BF16:
    case MT_PRECISION_F16:
        if (!MT_BE(ctx)->gemm_lowp)
            return mt_error(MT_ERR_UNSUPPORTED, "set_precision: the %s backend has no %s GEMM (mixed precision needs a "
                            "CUDA context)", MT_BE(ctx)->name, p == MT_PRECISION_BF16 ? "bf16" : "f16");
        break;
    default: return mt_error(MT_ERR_INVALID_ARG, "set_precision: unknown precision %d", (int)p);
    }
    ctx->ex.precision = p;
    return MT_OK;
}

mt_precision mt_context_precision(const mt_context *ctx) { return ctx->ex.precision; }

static int is_lowp(mt_dtype dt) { return dt == MT_DTYPE_BF16 || dt == MT_DTYPE_F16; }

int mt_check_gemm_operand(mt_context *ctx, const char *op, const mt_tensor *t) {
    if (!mt_check_input(ctx, op, t)) return 0;
    if (t->dtype == MT_DTYPE_F32 || (is_lowp(t->dtype) && MT_BE(ctx)->gemm_lowp)) return 1;
    char d[MT_SHAPE_STR + 8];
    mt_fail(ctx, MT_ERR_DTYPE, "%s: operand %s must be f32%s", op, mt_tensor_desc(d, t),
            MT_BE(ctx)->gemm_lowp ? ", bf16 or f16" : " on this backend");
    return 0;
}

int mt_gemm_dtype(mt_context *ctx, const char *op, const mt_tensor *a, const mt_tensor *b, mt_dtype *dt) {
    if (is_lowp(a->dtype) && is_lowp(b->dtype) && a->dtype != b->dtype) {
        char x[MT_SHAPE_STR + 8], y[MT_SHAPE_STR + 8];
        mt_fail(ctx, MT_ERR_DTYPE, "%s: operands %s and %s: low-precision dtypes differ", op, mt_tensor_desc(x, a),
                mt_tensor_desc(y, b));
        return 0;
    }
    if (is_lowp(a->dtype)) *dt = a->dtype;
    else if (is_lowp(b->dtype)) *dt = b->dtype;
    else if (ctx->ex.precision == MT_PRECISION_BF16 && MT_BE(ctx)->gemm_lowp) *dt = MT_DTYPE_BF16;
    else if (ctx->ex.precision == MT_PRECISION_F16 && MT_BE(ctx)->gemm_lowp) *dt = MT_DTYPE_F16;
    else *dt = MT_DTYPE_F32;
    return 1;
}

mt_dtype mt_backward_dtype(const mt_context *ctx, mt_dtype dt, const mt_tensor *a, const mt_tensor *b) {
    (void)ctx;
    return a->dtype == MT_DTYPE_F32 && b->dtype == MT_DTYPE_F32 ? MT_DTYPE_F32 : dt;
}

mt_tensor *mt_gemm_operand(mt_context *ctx, mt_tensor *t, mt_dtype dt) {
    if (!t || t->dtype == dt) return t;
    mt_tensor *l = mt_weight_lowp(ctx, t);
    if (l && l->dtype == dt) return l;
    return mt_cast(ctx, t, dt);
}

mt_tensor *mt_gemm_input(mt_context *ctx, mt_tensor *t, mt_dtype dt) {
    mt_tensor *l = mt_gemm_operand(ctx, t, dt);
    /* An op result on the tape never changes: its cast serves every product that reads it this step
     * (the input shared by several projections: h, the query and key latents, the encoder output). */
    if (l && l != t && t->node >= 0 && t->ctx == ctx && t->epoch == ctx->epoch && !mt_weight_lowp(ctx, t)) {
        t->lowp = l;
        __atomic_store_n(&t->lowp_epoch, ctx->epoch, __ATOMIC_RELEASE);
    }
    return l;
}

uint16_t *mt_lowp_side_output(mt_context *ctx, mt_tensor *y) {
    if (!y || y->dtype != MT_DTYPE_F32 || ctx->ex.precision != MT_PRECISION_BF16 || !MT_BE(ctx)->gemm_lowp) return NULL;
    mt_tensor *l = mt_new(ctx, MT_DTYPE_BF16, y->ndim, y->shape);
    if (!l) return NULL;
    y->lowp = l;
    __atomic_store_n(&y->lowp_epoch, ctx->epoch, __ATOMIC_RELEASE);
    return (uint16_t *)l->data;
}

mt_tensor *mt_weight_lowp(const mt_context *ctx, const mt_tensor *t) {
    /* The epoch first (acquire): lowp was stored before it, by the context that owns that epoch. */
    uint64_t e = __atomic_load_n(&t->lowp_epoch, __ATOMIC_ACQUIRE);
    return e != 0 && e == ctx->epoch ? t->lowp : NULL;
}

void mt_weight_lowp_drop(mt_tensor *t) { __atomic_store_n(&t->lowp_epoch, 0, __ATOMIC_RELEASE); }

mt_status mt_cast_weights(mt_context *ctx, mt_tensor *const *ts, int n) {
    mt_dtype dt = ctx->ex.precision == MT_PRECISION_BF16 ? MT_DTYPE_BF16
                  : ctx->ex.precision == MT_PRECISION_F16 ? MT_DTYPE_F16 : MT_DTYPE_F32;
    const mt_backend *be = MT_BE(ctx);
    if (dt == MT_DTYPE_F32 || !be->cast_multi || !be->gemm_lowp || n <= 0) return MT_OK;
    mt_cast_slot *slots = mt_arena_alloc(&ctx->host, sizeof *slots * (size_t)n, 16);
    mt_tensor **lows = mt_arena_alloc(&ctx->host, sizeof *lows * (size_t)n, 16);
    if (!slots || !lows) return mt_error(MT_ERR_NOMEM, "cast_weights: out of host memory for %d slots", n);
    int k = 0;
    for (int i = 0; i < n; i++) {
        mt_tensor *t = ts[i];
        if (!t || t->ndim != 2 || t->dtype != MT_DTYPE_F32 || t->device != ctx->device) continue;
        mt_tensor *l = mt_new(ctx, dt, t->ndim, t->shape);
        if (!l) return ctx->status;
        slots[k] = (mt_cast_slot){.src = mt_f32(t), .dst = l->data, .n = t->numel};
        lows[k++] = l;
    }
    MT_TRY(be->cast_multi(&ctx->ex, slots, k, dt));
    for (int i = 0, j = 0; i < n; i++) {
        mt_tensor *t = ts[i];
        if (!t || t->ndim != 2 || t->dtype != MT_DTYPE_F32 || t->device != ctx->device) continue;
        t->lowp = lows[j++];
        __atomic_store_n(&t->lowp_epoch, ctx->epoch, __ATOMIC_RELEASE);
    }
    return MT_OK;
}

mt_status mt_gemm_run(mt_context *ctx, mt_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const void *A, int64_t lda, int64_t stride_a, const void *B, int64_t ldb, int64_t stride_b,
                      float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch) {
    const mt_backend *be = MT_BE(ctx);
    ctx->ex.flops += 2 * (uint64_t)M * (uint64_t)N * (uint64_t)K * (uint64_t)batch;
    if (dt == MT_DTYPE_F32)
        return be->gemm(&ctx->ex, ta, tb, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c,
                        batch);
    if (!be->gemm_lowp) return mt_error(MT_ERR_UNSUPPORTED, "gemm: the %s backend has no low-precision GEMM", be->name);
    return be->gemm_lowp(&ctx->ex, dt, ta, tb, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc,
                         stride_c, batch);
}
